/* Thread count shared by every kernel's parallel regions.
 * A global (not omp_set_num_threads) so that the setting made from one Python
 * thread applies to kernels launched from any other. */
#include <stdlib.h>
#include <pthread.h>
#include "minigrad.h"
#include "internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static int g_num_threads = 0; /* 0: not chosen yet, use the default */

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
    g_num_threads = n > 0 ? n : 1;
}

int mg_get_num_threads(void)
{
    if (g_serial_child)
        return 1;
    if (g_num_threads <= 0)
        g_num_threads = mg_default_num_threads();
    if (g_num_threads > 1)
        g_team_used = 1; /* the caller may now start a team of this size */
    return g_num_threads;
}

int mg_is_serial_child(void)
{
    return g_serial_child;
}
