/* Single-precision GEMM: C = alpha*op(A)*op(B) + beta*C [+ bias] [relu].
 *
 * Design (BLIS-style, see Goto & van de Geijn, "Anatomy of high-performance
 * matrix multiplication"):
 *   for each NC-wide column block of C            (jc)
 *     for each KC-deep slice of k                 (pc)  fixed order => fixed sums
 *       pack op(B)[pc, jc] into NR-wide panels    shared, packed by all threads
 *       for each work item = (MC row block, group of NR panels), dynamic schedule
 *         pack op(A)[ic, pc] into MR-tall panels  per thread, reused across items
 *         MR x NR micro-kernel over the group, epilogue applied from registers
 *
 * Determinism: every block size and the item grid are functions of (m, n, k)
 * only, and each C element is accumulated by one thread over p = 0..k-1 in
 * order (one FMA chain per KC slice, slices added in order), so the result is
 * bitwise the same for any thread count. Threads only pick which items they run.
 *
 * Micro-kernel: 6x16 on AVX2+FMA (12 ymm accumulators + 2 for B + 1 broadcast
 * = 15 of the 16 ymm registers, 12 FMAs per 8 loads). Selected at run time;
 * the environment variable MINIGRAD_GEMM_KERNEL=portable (read once) forces
 * the portable C kernel, which exists for non-AVX2 CPUs and for testing it.
 *
 * When n is much narrower than NR (e.g. a 10-class output layer) the problem
 * is computed as C^T = op(B)^T op(A)^T so the 16-wide direction runs along m
 * and less of each tile is padding; the product is the same, only the store
 * is transposed.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "minigrad.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define MG_HAVE_PTHREAD 1
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define MG_X86_AVX2 1
#endif

#define MR 6
#define NR 16
#define KC_MAX 256   /* B micro-panel (KC*NR floats = 16 KiB) stays in L1 */
#define MC_MAX 144   /* A block (MC*KC floats = 144 KiB) stays in L2 */
#define NC_MAX 4096  /* B block (KC*NC floats = 4 MiB) lives in L3 */
#define ITEMS_MIN 16 /* split columns until there are this many work items */
#define PAR_MIN_FLOPS 400000.0 /* below this, waking threads costs more than it saves */

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ------------------------------------------------------------------ workspace */

/* One packing buffer per thread that only grows, so steady-state calls never
 * allocate. On POSIX a key destructor frees it when its thread exits, so a
 * thread that dies (a shrinking OpenMP pool, a short-lived Python thread)
 * does not leave its buffer behind. */
struct workspace { void *raw; float *p; size_t cap; };
static _Thread_local struct workspace tls_ws;

#ifdef MG_HAVE_PTHREAD
static pthread_key_t ws_key;
static pthread_once_t ws_once = PTHREAD_ONCE_INIT;
static int ws_key_ok;
static void ws_free(void *raw) { free(raw); }
static void ws_key_init(void) { ws_key_ok = pthread_key_create(&ws_key, ws_free) == 0; }
#endif

static float *ws_get(size_t nfloats)
{
    if (nfloats > (SIZE_MAX - 128) / sizeof(float)) return NULL;
    size_t bytes = (nfloats * sizeof(float) + 63) & ~(size_t)63;
    if (tls_ws.p && tls_ws.cap >= bytes) return tls_ws.p;
    /* malloc + manual alignment: aligned_alloc is missing on some targets and
     * realloc would not keep the alignment (the old contents are not needed). */
    void *raw = malloc(bytes + 64);
    if (!raw) return NULL;
    free(tls_ws.raw);
    tls_ws.raw = raw;
    tls_ws.p = (float *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    tls_ws.cap = bytes;
#ifdef MG_HAVE_PTHREAD
    pthread_once(&ws_once, ws_key_init);
    if (ws_key_ok) pthread_setspecific(ws_key, raw);
#endif
    return tls_ws.p;
}

/* ------------------------------------------------------------------ plan */

struct plan {
    int ta, tb;                 /* op(A) = A^T when ta (after a possible swap) */
    int64_t m, n, k;
    const float *a, *b;
    int64_t lda, ldb;
    float *c;
    int64_t rs, cs;             /* C(i, j) is c[i*rs + j*cs] */
    float alpha, beta;
    const float *bias;
    int64_t bias_rs, bias_cs;   /* bias term for C(i, j) is bias[i*bias_rs + j*bias_cs] */
    int relu;
    int a_direct;               /* kernels read op(A) in place instead of packing it */
    int64_t kc, nkb;            /* KC slice depth, number of slices */
    int64_t mc, nmb;            /* MC row block, number of row blocks */
    int64_t nc, nnb;            /* NC column block, number of column blocks */
};

/* What the epilogue does with C before adding alpha*AB for one KC slice. */
enum { PREV_ZERO, PREV_C, PREV_BETA_C };

struct epi {
    float alpha, beta;
    int prev;                   /* PREV_* */
    int last;                   /* last slice: add bias and apply relu */
    int relu;
};

/* A micro-kernel multiplies an MR x kc sliver of op(A) by a packed kc x NR
 * panel of B. The A sliver is read at pa[r*rsa + p*csa]: packed panels have
 * rsa = 1, csa = MR; when A is read in place (see gemm_body) the strides are
 * A's own, and rows r >= mr alias row mr-1 so nothing past A is touched (their
 * results are discarded). c != NULL: a full row-major tile of C, stored with
 * the epilogue. c == NULL: raw sums go to tmp (MR x NR, 64-byte aligned). */
typedef void (*kernel_fn)(int64_t kc, const float *pa, int64_t rsa, int64_t csa, int64_t mr,
                          const float *pb, float *c, int64_t ldc, const float *bias,
                          const struct epi *ep, float *tmp);

/* Scalar epilogue for tiles the vector path cannot store directly (edges, or
 * transposed C): t is an MR x NR tile of raw dot products. */
static void epilogue_scalar(const float *t, int64_t mr, int64_t nr, float *c, int64_t rs,
                            int64_t cs, const float *bias, int64_t brs, int64_t bcs,
                            const struct epi *ep)
{
    for (int64_t r = 0; r < mr; ++r) {
        for (int64_t q = 0; q < nr; ++q) {
            float *dst = c + r * rs + q * cs;
            float v = ep->alpha * t[r * NR + q];
            if (ep->prev == PREV_C) v += *dst;
            else if (ep->prev == PREV_BETA_C) v += ep->beta * *dst;
            if (ep->last) {
                if (bias) v += bias[r * brs + q * bcs];
                if (ep->relu) v = 0.0f > v ? 0.0f : v; /* keeps NaN, like maxps(0, v) */
            }
            *dst = v;
        }
    }
}

/* ------------------------------------------------------------------ packing */

/* op(A) rows [i0, i0+mc), k [p0, p0+kc) -> MR-row panels, each kc x MR
 * (element (r, p) at p*MR + r), rows past m zero-filled so the kernel needs
 * no edge cases. */
static void pack_a(const struct plan *P, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                   float *restrict dst)
{
    for (int64_t ir = 0; ir < mc; ir += MR, dst += MR * kc) {
        int64_t mr = min64(MR, mc - ir);
        if (P->ta) { /* op(A)(i, p) = a[p*lda + i]: rows of A are contiguous in i */
            const float *src = P->a + p0 * P->lda + (i0 + ir);
            for (int64_t p = 0; p < kc; ++p) {
                int64_t r = 0;
                for (; r < mr; ++r) dst[p * MR + r] = src[p * P->lda + r];
                for (; r < MR; ++r) dst[p * MR + r] = 0.0f;
            }
        } else {     /* op(A)(i, p) = a[i*lda + p] */
            const float *src = P->a + (i0 + ir) * P->lda + p0;
            if (mr == MR) {
                const float *s0 = src, *s1 = s0 + P->lda, *s2 = s1 + P->lda;
                const float *s3 = s2 + P->lda, *s4 = s3 + P->lda, *s5 = s4 + P->lda;
                for (int64_t p = 0; p < kc; ++p) {
                    float *d = dst + p * MR;
                    d[0] = s0[p]; d[1] = s1[p]; d[2] = s2[p];
                    d[3] = s3[p]; d[4] = s4[p]; d[5] = s5[p];
                }
            } else {
                for (int64_t p = 0; p < kc; ++p) {
                    int64_t r = 0;
                    for (; r < mr; ++r) dst[p * MR + r] = src[r * P->lda + p];
                    for (; r < MR; ++r) dst[p * MR + r] = 0.0f;
                }
            }
        }
    }
}

/* One NR-column panel of op(B): k [p0, p0+kc), columns [j0, j0+nr) -> kc x NR
 * (element (p, q) at p*NR + q), columns past n zero-filled. */
static void pack_b_panel(const struct plan *P, int64_t p0, int64_t kc, int64_t j0, int64_t nr,
                         float *restrict dst)
{
    if (!P->tb) { /* op(B)(p, j) = b[p*ldb + j]: each k row is contiguous */
        const float *src = P->b + p0 * P->ldb + j0;
        for (int64_t p = 0; p < kc; ++p) {
            const float *s = src + p * P->ldb;
            float *d = dst + p * NR;
            int64_t q = 0;
            for (; q < nr; ++q) d[q] = s[q];
            for (; q < NR; ++q) d[q] = 0.0f;
        }
    } else {      /* op(B)(p, j) = b[j*ldb + p]: walk NR rows of B in parallel */
        const float *src = P->b + j0 * P->ldb + p0;
        int64_t q = 0;
        for (; q < nr; ++q) {
            const float *s = src + q * P->ldb;
            for (int64_t p = 0; p < kc; ++p) dst[p * NR + q] = s[p];
        }
        for (; q < NR; ++q)
            for (int64_t p = 0; p < kc; ++p) dst[p * NR + q] = 0.0f;
    }
}

/* ------------------------------------------------------------------ kernels */

/* Portable reference micro-kernel: plain C the compiler can vectorise for any
 * target. The two 8-column halves run as separate passes so the accumulators
 * fit in 16 SSE/NEON registers; each element is still one chain over p. */
static void kernel_portable(int64_t kc, const float *pa, int64_t rsa, int64_t csa, int64_t mr,
                            const float *restrict pb, float *c, int64_t ldc, const float *bias,
                            const struct epi *ep, float *restrict tmp)
{
    int64_t off[MR];
    for (int r = 0; r < MR; ++r) off[r] = min64(r, mr - 1) * rsa;
    float t[MR * NR];
    for (int h = 0; h < NR; h += 8) {
        float acc[MR][8] = {{0}};
        for (int64_t p = 0; p < kc; ++p) {
            const float *b = pb + p * NR + h;
            for (int r = 0; r < MR; ++r) {
                const float a = pa[p * csa + off[r]];
                for (int q = 0; q < 8; ++q) acc[r][q] += a * b[q];
            }
        }
        for (int r = 0; r < MR; ++r)
            for (int q = 0; q < 8; ++q) t[r * NR + h + q] = acc[r][q];
    }
    if (c) epilogue_scalar(t, MR, NR, c, ldc, 1, bias, 0, 1, ep);
    else memcpy(tmp, t, sizeof t);
}

#ifdef MG_X86_AVX2
/* 6x16 AVX2+FMA micro-kernel body, inlined into a packed-A instance (strides
 * are compile-time constants) and an in-place-A instance. */
__attribute__((target("avx2,fma"), always_inline))
static inline void avx2_core(int64_t kc, const float *pa, int64_t rsa, int64_t csa, int64_t mr,
                             const float *restrict pb, float *c, int64_t ldc, const float *bias,
                             const struct epi *ep, float *restrict tmp)
{
    const int64_t o1 = min64(1, mr - 1) * rsa, o2 = min64(2, mr - 1) * rsa;
    const int64_t o3 = min64(3, mr - 1) * rsa, o4 = min64(4, mr - 1) * rsa;
    const int64_t o5 = min64(5, mr - 1) * rsa;
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    if (c) /* C is needed only after the loop: start fetching it now */
        for (int r = 0; r < MR; ++r) {
            _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + r * ldc + NR - 1), _MM_HINT_T0);
        }
#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; ++p) {
        __m256 b0 = _mm256_load_ps(pb), b1 = _mm256_load_ps(pb + 8), a;
        a = _mm256_broadcast_ss(pa);
        c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(pa + o1);
        c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(pa + o2);
        c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(pa + o3);
        c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(pa + o4);
        c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(pa + o5);
        c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
        pa += csa;
        pb += NR;
    }
    if (!c) {
        _mm256_store_ps(tmp + 0, c00);   _mm256_store_ps(tmp + 8, c01);
        _mm256_store_ps(tmp + 16, c10);  _mm256_store_ps(tmp + 24, c11);
        _mm256_store_ps(tmp + 32, c20);  _mm256_store_ps(tmp + 40, c21);
        _mm256_store_ps(tmp + 48, c30);  _mm256_store_ps(tmp + 56, c31);
        _mm256_store_ps(tmp + 64, c40);  _mm256_store_ps(tmp + 72, c41);
        _mm256_store_ps(tmp + 80, c50);  _mm256_store_ps(tmp + 88, c51);
        return;
    }
    /* Same arithmetic as epilogue_scalar, element for element. */
    const __m256 alpha = _mm256_set1_ps(ep->alpha), beta = _mm256_set1_ps(ep->beta);
    const __m256 zero = _mm256_setzero_ps();
    const int prev = ep->prev, last = ep->last, relu = ep->relu;
    const int scale = ep->alpha != 1.0f;
    __m256 bias0 = zero, bias1 = zero;
    if (last && bias) { bias0 = _mm256_loadu_ps(bias); bias1 = _mm256_loadu_ps(bias + 8); }
#define MG_ROW(r, x0, x1)                                                             \
    do {                                                                              \
        float *cr = c + (r) * ldc;                                                    \
        __m256 v0 = x0, v1 = x1;                                                      \
        if (scale) { v0 = _mm256_mul_ps(alpha, v0); v1 = _mm256_mul_ps(alpha, v1); } \
        if (prev == PREV_C) {                                                         \
            v0 = _mm256_add_ps(v0, _mm256_loadu_ps(cr));                              \
            v1 = _mm256_add_ps(v1, _mm256_loadu_ps(cr + 8));                          \
        } else if (prev == PREV_BETA_C) {                                             \
            v0 = _mm256_add_ps(v0, _mm256_mul_ps(beta, _mm256_loadu_ps(cr)));         \
            v1 = _mm256_add_ps(v1, _mm256_mul_ps(beta, _mm256_loadu_ps(cr + 8)));     \
        }                                                                             \
        if (last) {                                                                   \
            if (bias) { v0 = _mm256_add_ps(v0, bias0); v1 = _mm256_add_ps(v1, bias1); } \
            if (relu) { v0 = _mm256_max_ps(zero, v0); v1 = _mm256_max_ps(zero, v1); } \
        }                                                                             \
        _mm256_storeu_ps(cr, v0);                                                     \
        _mm256_storeu_ps(cr + 8, v1);                                                 \
    } while (0)
    MG_ROW(0, c00, c01); MG_ROW(1, c10, c11); MG_ROW(2, c20, c21);
    MG_ROW(3, c30, c31); MG_ROW(4, c40, c41); MG_ROW(5, c50, c51);
#undef MG_ROW
}

__attribute__((target("avx2,fma")))
static void kernel_avx2_packed(int64_t kc, const float *pa, int64_t rsa, int64_t csa, int64_t mr,
                               const float *pb, float *c, int64_t ldc, const float *bias,
                               const struct epi *ep, float *tmp)
{
    (void)rsa; (void)csa; (void)mr;
    avx2_core(kc, pa, 1, MR, MR, pb, c, ldc, bias, ep, tmp);
}

__attribute__((target("avx2,fma")))
static void kernel_avx2_direct(int64_t kc, const float *pa, int64_t rsa, int64_t csa, int64_t mr,
                               const float *pb, float *c, int64_t ldc, const float *bias,
                               const struct epi *ep, float *tmp)
{
    avx2_core(kc, pa, rsa, csa, mr, pb, c, ldc, bias, ep, tmp);
}
#endif

/* Chosen once: -1 unknown, 0 portable, 1 avx2-fma. A race between first
 * callers is harmless because they all compute the same value. */
static atomic_int g_kernel = -1;

static int kernel_kind(void)
{
    int kind = atomic_load_explicit(&g_kernel, memory_order_relaxed);
    if (kind >= 0) return kind;
    kind = 0;
#ifdef MG_X86_AVX2
    const char *force = getenv("MINIGRAD_GEMM_KERNEL");
    if (!(force && strcmp(force, "portable") == 0)) {
        __builtin_cpu_init();
        kind = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
#endif
    atomic_store_explicit(&g_kernel, kind, memory_order_relaxed);
    return kind;
}

const char *mg_gemm_kernel_name(void)
{
    return kernel_kind() ? "avx2-fma" : "portable";
}

/* ------------------------------------------------------------------ driver */

/* Runs on every thread of the team (or alone without OpenMP). bbuf is the
 * shared packed-B block, abuf this thread's packed-A block, tmp its edge tile. */
struct kernels { kernel_fn packed, direct; };

static void gemm_body(const struct plan *P, const struct kernels *K, float *bbuf, float *abuf,
                      float *tmp)
{
    int64_t cached_ib = -1, cached_pb = -1; /* which A block abuf holds */
    for (int64_t jb = 0; jb < P->nnb; ++jb) {
        const int64_t j0 = jb * P->nc, nc = min64(P->nc, P->n - j0);
        const int64_t npan = ceil_div(nc, NR);
        /* Column groups per row block: enough items to balance threads and
         * absorb a busy core, but computed from the shape only. */
        const int64_t njg = min64(npan, ceil_div(ITEMS_MIN, P->nmb));
        const int64_t gw = ceil_div(npan, njg);
        const int64_t nitems = P->nmb * ceil_div(npan, gw);
        for (int64_t pb = 0; pb < P->nkb; ++pb) {
            const int64_t p0 = pb * P->kc, kc = min64(P->kc, P->k - p0);
            const struct epi ep = {
                .alpha = P->alpha, .beta = P->beta, .relu = P->relu,
                .last = pb == P->nkb - 1,
                .prev = pb > 0 ? PREV_C : P->beta == 0.0f ? PREV_ZERO
                        : P->beta == 1.0f ? PREV_C : PREV_BETA_C,
            };
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (int64_t jp = 0; jp < npan; ++jp)
                pack_b_panel(P, p0, kc, j0 + jp * NR, min64(NR, nc - jp * NR),
                             bbuf + jp * NR * kc);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
            for (int64_t it = 0; it < nitems; ++it) {
                const int64_t ib = it / ceil_div(npan, gw), g = it % ceil_div(npan, gw);
                const int64_t i0 = ib * P->mc, mc = min64(P->mc, P->m - i0);
                if (!P->a_direct && (ib != cached_ib || pb != cached_pb)) {
                    pack_a(P, i0, mc, p0, kc, abuf);
                    cached_ib = ib;
                    cached_pb = pb;
                }
                const int64_t jp_end = min64(npan, (g + 1) * gw);
                for (int64_t jp = g * gw; jp < jp_end; ++jp) {
                    const int64_t j = j0 + jp * NR, nr = min64(NR, P->n - j);
                    const float *pbp = bbuf + jp * NR * kc;
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        const int64_t i = i0 + ir, mr = min64(MR, P->m - i);
                        float *cij = P->c + i * P->rs + j * P->cs;
                        const float *pap;
                        int64_t rsa = 1, csa = MR;
                        kernel_fn kern = K->packed;
                        if (P->a_direct) {
                            rsa = P->ta ? 1 : P->lda;
                            csa = P->ta ? P->lda : 1;
                            pap = P->a + i * rsa + p0 * csa;
                            kern = K->direct;
                        } else {
                            pap = abuf + ir * kc;
                        }
                        if (mr == MR && nr == NR && P->cs == 1) {
                            kern(kc, pap, rsa, csa, mr, pbp, cij, P->rs,
                                 P->bias ? P->bias + j : NULL, &ep, tmp);
                        } else {
                            kern(kc, pap, rsa, csa, mr, pbp, NULL, 0, NULL, &ep, tmp);
                            epilogue_scalar(tmp, mr, nr, cij, P->rs, P->cs,
                                            P->bias ? P->bias + i * P->bias_rs + j * P->bias_cs : NULL,
                                            P->bias_rs, P->bias_cs, &ep);
                        }
                    }
                }
            }
        }
    }
}

/* k == 0 or alpha == 0: A and B are not read (BLAS convention), C = beta*C. */
static void scale_only(int64_t m, int64_t n, float beta, float *c, int64_t ldc,
                       const float *bias, int relu)
{
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(mg_get_num_threads()) \
    if ((double)m * (double)n >= 32768.0)
#endif
    for (int64_t i = 0; i < m; ++i) {
        float *row = c + i * ldc;
        for (int64_t j = 0; j < n; ++j) {
            float v = beta == 0.0f ? 0.0f : beta * row[j];
            if (bias) v += bias[j];
            if (relu) v = 0.0f > v ? 0.0f : v;
            row[j] = v;
        }
    }
}

/* Split `total` into the fewest blocks of at most `max`, of near-equal size
 * rounded up to a multiple of `unit`. */
static void split(int64_t total, int64_t max, int64_t unit, int64_t *size, int64_t *count)
{
    int64_t nb = ceil_div(total, max);
    int64_t s = ceil_div(ceil_div(total, nb), unit) * unit;
    *size = s;
    *count = ceil_div(total, s);
}

int mg_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
            float alpha, const float *a, int64_t lda,
            const float *b, int64_t ldb,
            float beta, float *c, int64_t ldc,
            const float *bias, int relu)
{
    if (m < 0 || n < 0 || k < 0) return MG_EINVAL;
    if (lda < (trans_a ? m : k) || ldb < (trans_b ? k : n) || ldc < n) return MG_EINVAL;
    if (m == 0 || n == 0) return MG_OK;
    if (!c) return MG_EINVAL;
    if (k == 0 || alpha == 0.0f) {
        scale_only(m, n, beta, c, ldc, bias, relu);
        return MG_OK;
    }
    if (!a || !b) return MG_EINVAL;

    struct plan P = {
        .ta = trans_a, .tb = trans_b, .m = m, .n = n, .k = k,
        .a = a, .b = b, .lda = lda, .ldb = ldb, .c = c, .rs = ldc, .cs = 1,
        .alpha = alpha, .beta = beta, .bias = bias, .bias_rs = 0, .bias_cs = 1, .relu = relu,
    };
    /* Padded tile area both ways round; transpose only for a clear gain since
     * the transposed store goes through the scalar epilogue. */
    double area = (double)(ceil_div(m, MR) * MR) * (double)(ceil_div(n, NR) * NR);
    double area_t = (double)(ceil_div(n, MR) * MR) * (double)(ceil_div(m, NR) * NR);
    if (getenv("NOSWAP") == NULL && area_t < 0.85 * area) {
        P.ta = !trans_b; P.tb = !trans_a;
        P.m = n; P.n = m;
        P.a = b; P.lda = ldb; P.b = a; P.ldb = lda;
        P.rs = 1; P.cs = ldc;
        P.bias_rs = 1; P.bias_cs = 0;
    }
    /* With a single column panel each A element is used once per slice:
     * packing it would cost as much as the multiply saves. */
    P.a_direct = getenv("NODIRECT") == NULL && P.n <= NR;
    split(P.k, KC_MAX, 1, &P.kc, &P.nkb);
    split(P.m, MC_MAX, MR, &P.mc, &P.nmb);
    split(P.n, NC_MAX, NR, &P.nc, &P.nnb);

    struct kernels K = { kernel_portable, kernel_portable };
#ifdef MG_X86_AVX2
    if (kernel_kind()) K = (struct kernels){ kernel_avx2_packed, kernel_avx2_direct };
#endif
    const size_t bsize = (size_t)P.kc * (size_t)P.nc;     /* nc is a multiple of NR */
    /* Per-thread part: the 64-byte aligned edge tile, then the A block. */
    const size_t asize = MR * NR + (size_t)P.kc * (size_t)P.mc;
    float *w0 = ws_get(bsize + asize);
    if (!w0) return MG_ENOMEM;

#ifdef _OPENMP
    int err = 0;
    const double flops = 2.0 * (double)m * (double)n * (double)k;
#pragma omp parallel num_threads(mg_get_num_threads()) if (flops >= PAR_MIN_FLOPS)
    {
        /* The calling thread is thread 0 and already holds B + its A block. */
        float *wa = omp_get_thread_num() == 0 ? w0 + bsize : ws_get(asize);
        if (!wa) {
#pragma omp atomic write
            err = 1;
        }
#pragma omp barrier
        int failed;
#pragma omp atomic read
        failed = err;
        if (!failed) gemm_body(&P, &K, w0, wa + MR * NR, wa);
    }
    return err ? MG_ENOMEM : MG_OK;
#else
    gemm_body(&P, &K, w0, w0 + bsize + MR * NR, w0 + bsize);
    return MG_OK;
#endif
}
