/* Thread count shared by every kernel's parallel regions, and its adaptation
 * to what other processes leave free.
 *
 * The configured count is a global (not omp_set_num_threads) so that the
 * setting made from one Python thread applies to kernels launched from any
 * other. It is an upper bound: a parallel region uses mg_team_threads()
 * threads, which is smaller while other processes keep CPUs busy. An OpenMP
 * team waits at its closing barrier for its slowest thread, and a thread the
 * OS has preempted in favour of another process is slow by a whole scheduler
 * time slice, so a team larger than the free CPUs can make a region many
 * times slower than running it on the calling thread alone. No result depends
 * on the team size (every reduction has a fixed order that does not follow
 * the thread split), so changing it at run time changes speed only.
 *
 * How contention is measured: at most every MG_ADAPT_PERIOD_NS, the thread
 * that enters a region first reads the busy time of the CPUs this process may
 * use (/proc/stat) and this process' own CPU time (/proc/self/stat); their
 * difference over the window is the CPU time other processes took. The free
 * CPUs are the usable ones minus that, and the team follows them with
 * hysteresis. Between samples a region costs one coarse clock read. Where
 * /proc is missing (not Linux) the team is the configured count. */
#define _GNU_SOURCE /* sched_getaffinity, CLOCK_MONOTONIC_COARSE */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "minigrad.h"
#include "internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static _Atomic int g_num_threads = 0; /* 0: not chosen yet, use the default */
static _Atomic int g_adaptive = 1;
static _Atomic int g_team = 0;        /* 0: no decision yet, use the configured count */
static _Atomic long long g_next_ns = 0;
/* The pid of the process whose thread is sampling (0: none): one thread samples
 * at a time, others skip. A pid, not a flag, so that a child forked while a
 * parent's thread held it can take it over instead of never sampling again. */
static _Atomic int g_sampler = 0;
static _Atomic int g_others_milli = -1; /* last estimate of other processes' CPUs x 1000 */

/* Sampling period: long enough that /proc/stat's 10 ms ticks give a usable
 * average, short enough to follow a load that starts or stops. */
#define MG_ADAPT_PERIOD_NS 100000000LL
/* A window longer than this says little about now: start a new one instead. */
#define MG_ADAPT_STALE_NS 2000000000LL
/* Hysteresis, in thousandths of a CPU: grow to t threads when t - 0.2 CPUs
 * are free, shrink to t only when fewer than t + 0.6 are. Growing asks for
 * nearly a whole free CPU per thread because a thread that shares its CPU
 * stalls the whole team at every barrier. */
#define MG_GROW_SLACK 200
#define MG_SHRINK_SLACK 600

/* libgomp is not fork-safe: a child forked after a parallel region ran on more
 * than one thread inherits a thread pool whose threads do not exist in it, and
 * its first parallel region waits for them forever. So once a kernel may have
 * started a team (g_team_used), a forked child runs every kernel on its calling
 * thread (g_serial_child). Results do not depend on the thread count, so the
 * child computes the parent's numbers. A child of a process that never used a
 * team keeps its threads. */
static volatile int g_team_used = 0;
static volatile int g_serial_child = 0;

static void after_fork_in_child(void)
{
    if (g_team_used)
        g_serial_child = 1;
}

__attribute__((constructor)) static void register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, after_fork_in_child);
}

int mg_is_serial_child(void)
{
    return g_serial_child;
}

int mg_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int mg_default_num_threads(void)
{
#ifdef _OPENMP
    /* omp_get_max_threads honours OMP_NUM_THREADS and the CPU affinity mask. */
    int n = omp_get_max_threads();
    return n > 0 ? n : 1;
#else
    return 1;
#endif
}

void mg_set_num_threads(int n)
{
    atomic_store(&g_num_threads, n > 0 ? n : 1);
}

int mg_get_num_threads(void)
{
    if (g_serial_child)
        return 1;
    int n = atomic_load_explicit(&g_num_threads, memory_order_relaxed);
    if (n <= 0) {
        n = mg_default_num_threads();
        atomic_store(&g_num_threads, n);
    }
    if (n > 1)
        g_team_used = 1; /* the caller may now start a team of this size */
    return n;
}

void mg_set_adaptive_threads(int on)
{
    atomic_store(&g_adaptive, on != 0);
    /* Start again from the configured count with a fresh window when turned on. */
    atomic_store(&g_team, 0);
    atomic_store(&g_next_ns, 0);
    atomic_store(&g_others_milli, -1);
}

int mg_get_adaptive_threads(void)
{
    return atomic_load(&g_adaptive);
}

int mg_adaptive_others_milli(void)
{
    return atomic_load(&g_others_milli);
}

/* The team size for `free_milli` free CPUs (thousandths), from the current one. */
int mg_adaptive_next_team(int team, int configured, long long free_milli)
{
    if (free_milli < (long long)team * 1000 - 1000 + MG_SHRINK_SLACK) {
        /* the largest t that would not shrink again: free >= t - 0.4 */
        long long t = (free_milli + 1000 - MG_SHRINK_SLACK) / 1000;
        team = t < 1 ? 1 : (int)t;
    } else {
        long long t = (free_milli + MG_GROW_SLACK) / 1000; /* free >= t - 0.2 */
        if (t > team) team = (int)t;
    }
    return team < 1 ? 1 : team > configured ? configured : team;
}

/* ------------------------------------------------------------ sampling (Linux) */

#if defined(__linux__)
struct sample {
    long long now_ns;
    long long busy, total; /* ticks of the usable CPUs, all processes */
    long long self;        /* ticks of this process, all its threads */
    int cpus;              /* usable CPUs that /proc/stat listed */
    pid_t pid;
};

static struct sample g_prev; /* guarded by g_sampler */

static long long now_coarse_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0) return 0;
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Busy and total ticks summed over the "cpuN" lines of the CPUs in `mask`. */
static int read_proc_stat(const cpu_set_t *mask, struct sample *s)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    char line[512];
    s->busy = s->total = 0;
    s->cpus = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "cpu", 3) != 0) break; /* the cpu lines come first */
        if (line[3] < '0' || line[3] > '9') continue; /* the all-CPU summary */
        int cpu;
        unsigned long long v[8] = {0};
        /* user nice system idle iowait irq softirq steal (guest is inside user) */
        if (sscanf(line + 3, "%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1],
                   &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) < 5)
            continue;
        if (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, mask)) continue;
        const long long idle = (long long)(v[3] + v[4]);
        const long long all = (long long)(v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7]);
        s->busy += all - idle;
        s->total += all;
        s->cpus++;
    }
    fclose(f);
    return s->cpus > 0 ? 0 : -1;
}

/* utime + stime of this process (fields 14 and 15 of /proc/self/stat). */
static int read_self_ticks(long long *ticks)
{
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f) return -1;
    char buf[1024];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    /* The command name (field 2) may hold spaces and parentheses: skip to its last ')'. */
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long long utime, stime;
    /* after ')': state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
               &utime, &stime) != 2)
        return -1;
    *ticks = (long long)(utime + stime);
    return 0;
}

static int take_sample(struct sample *s, long long now)
{
    cpu_set_t mask;
    CPU_ZERO(&mask);
    if (sched_getaffinity(0, sizeof mask, &mask) != 0) return -1;
    if (read_proc_stat(&mask, s) != 0 || read_self_ticks(&s->self) != 0) return -1;
    s->now_ns = now;
    s->pid = getpid();
    return 0;
}

static void resample(long long now, int configured)
{
    struct sample s;
    if (take_sample(&s, now) != 0) {
        atomic_store(&g_next_ns, now + 100 * MG_ADAPT_PERIOD_NS); /* /proc unusable: rarely retry */
        return;
    }
    const struct sample p = g_prev;
    g_prev = s;
    /* No previous window, a forked child (its own ticks restart), or a stale window. */
    if (p.now_ns == 0 || p.pid != s.pid || now - p.now_ns > MG_ADAPT_STALE_NS ||
        s.cpus != p.cpus || s.total <= p.total)
        return;
    const long long d_total = s.total - p.total, d_busy = s.busy - p.busy;
    long long d_others = d_busy - (s.self - p.self);
    if (d_others < 0) d_others = 0; /* own ticks may straddle the window's edges */
    /* Ticks per CPU over the window: d_total / cpus. */
    const long long others_milli = d_others * 1000 * s.cpus / d_total;
    const long long free_milli = (long long)s.cpus * 1000 - others_milli;
    atomic_store(&g_others_milli, (int)others_milli);
    int team = atomic_load(&g_team);
    if (team <= 0 || team > configured) team = configured;
    atomic_store(&g_team, mg_adaptive_next_team(team, configured, free_milli));
}
#endif

/* Threads for one parallel region: the configured count, or fewer while other
 * processes keep the usable CPUs busy (when adaptation is on). */
int mg_team_threads(void)
{
    const int configured = mg_get_num_threads();
    if (configured <= 1 || !atomic_load_explicit(&g_adaptive, memory_order_relaxed))
        return configured;
#if defined(__linux__) && defined(_OPENMP) /* a serial build has no team to size */
    const long long now = now_coarse_ns();
    if (now >= atomic_load_explicit(&g_next_ns, memory_order_relaxed)) {
        const int me = (int)getpid();
        int holder = atomic_load(&g_sampler);
        if (holder != me && atomic_compare_exchange_strong(&g_sampler, &holder, me)) {
            atomic_store(&g_next_ns, now + MG_ADAPT_PERIOD_NS);
            resample(now, configured);
            atomic_store_explicit(&g_sampler, 0, memory_order_release);
        }
    }
    const int team = atomic_load_explicit(&g_team, memory_order_relaxed);
    return team <= 0 || team > configured ? configured : team;
#else
    return configured;
#endif
}

int mg_effective_num_threads(void)
{
    const int configured = mg_get_num_threads();
    if (!atomic_load(&g_adaptive)) return configured;
    const int team = atomic_load(&g_team);
    return team <= 0 || team > configured ? configured : team;
}
