/* Single-precision GEMM: C = alpha*op(A)*op(B) + beta*C [+ bias] [relu].
 *
 * Design (BLIS-style, see Goto & van de Geijn, "Anatomy of high-performance
 * matrix multiplication"), with op(A) cut into MR-row and op(B) into NR-column
 * panels packed contiguously, and an MR x NR register-blocked micro-kernel
 * that applies alpha/beta/bias/relu while the tile is still in registers.
 * k is cut into KC slices; a C tile is finished slice after slice.
 *
 * Two ways to share the work between threads, picked from the shape only:
 *  - m > MC_MAX (several MC row blocks): per KC slice the team packs the slice
 *    of B once into a shared buffer (barrier), then splits work items = (row
 *    block, group of NR panels) statically; each thread packs the A block of
 *    its items into its own buffer (L2-sized) and reuses it across items.
 *  - m <= MC_MAX (one row block, e.g. a 128-row batch): each thread takes a
 *    fixed range of COL_GROUP-panel column groups, packs all of A and its own
 *    B panels privately and never waits for the others. Splitting columns is
 *    what lets small-m products use every core.
 * Narrow outputs (n <= 10, e.g. 10 classes) have kernels of their own
 * (gemm_narrow.c); for other n <= NR A is read in place.
 *
 * Determinism: block sizes, slices and the item grid depend on (m, n, k)
 * only, and each C element is produced by one thread as one fixed sequence of
 * operations (an FMA chain over each slice, slices added in order), so the
 * result is bitwise the same for any thread count; threads only pick tiles.
 *
 * Micro-kernel: 6x16 on AVX2+FMA (12 ymm accumulators + 2 for B + 1 broadcast
 * = 15 of the 16 ymm registers, 12 FMAs per 8 loads), chosen at run time.
 * The environment variable MINIGRAD_GEMM_KERNEL=portable (read once, at the
 * first call) forces the portable C kernel, which non-AVX2 CPUs get anyway;
 * it exists so that path can be tested on any machine. The two kernels round
 * differently (FMA vs multiply+add), so results differ between them, but each
 * is thread-invariant.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "minigrad.h"
#include "internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define MG_HAVE_PTHREAD 1
#endif


#define MR 6
#define NR 16
#define KC_MAX 256   /* B micro-panel (KC*NR floats = 16 KiB) stays in L1 */
#define MC_MAX 144   /* A block (MC*KC floats = 144 KiB) stays in L2 */
#define NC_MAX 4096  /* B block (KC*NC floats = 4 MiB) lives in L3 */
#define ITEMS_MIN 16 /* split columns until there are this many work items */
#define COL_GROUP 4  /* NR panels per work item in the small-m mode */
#define PREFETCH_C_MIN_KC 32 /* see avx2_core */


/* ------------------------------------------------------------------ workspace */

/* One buffer per calling thread that only grows, so steady-state calls never
 * allocate; it holds the packing space of the caller's whole OpenMP team, so
 * worker threads allocate nothing. Its size is bounded by the block sizes
 * (about KC_MAX*NC_MAX + threads*KC_MAX*MC_MAX floats, or MG_NARROW_MAX_BT).
 * Thread-local rather than global so concurrent callers (cffi releases the
 * GIL) never share it. On POSIX a key destructor frees it when its thread
 * exits, so short-lived caller threads do not leave buffers behind. */
struct workspace { void *raw; float *p; size_t cap; };
static _Thread_local struct workspace tls_ws;

#ifdef MG_HAVE_PTHREAD
static pthread_key_t ws_key;
static pthread_once_t ws_once = PTHREAD_ONCE_INIT;
static int ws_key_ok;
static void ws_free(void *raw) { free(raw); }
static void ws_key_init(void) { ws_key_ok = pthread_key_create(&ws_key, ws_free) == 0; }
#endif

/* How many times any thread's packing workspace was (re)allocated: flat once
 * a training loop is warm (see mg_gemm_workspace_allocations). */
static atomic_llong ws_allocations;

long long mg_gemm_workspace_allocations(void)
{
    return atomic_load(&ws_allocations);
}

float *mg_gemm_ws_get(size_t nfloats)
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
    atomic_fetch_add(&ws_allocations, 1);
#ifdef MG_HAVE_PTHREAD
    pthread_once(&ws_once, ws_key_init);
    if (ws_key_ok) pthread_setspecific(ws_key, raw);
#endif
    return tls_ws.p;
}

/* ------------------------------------------------------------------ plan */

struct plan {
    int ta, tb;                 /* op(A) = A^T when ta */
    int64_t m, n, k;
    const float *a, *b;
    int64_t lda, ldb;
    float *c;
    int64_t ldc;
    float alpha, beta;
    const float *bias;
    int relu;
    int a_direct;               /* kernels read op(A) in place instead of packing it */
    int avx2;                   /* AVX2 packing helpers may be used */
    int64_t kc, nkb;            /* KC slice depth, number of slices */
    int64_t mc, nmb;            /* MC row block, number of row blocks */
    int64_t nc, nnb;            /* NC column block, number of column blocks */
};

struct epi {
    float alpha, beta;
    int prev;                   /* MG_PREV_* */
    int last;                   /* last slice: add bias and apply relu */
    int relu;
};

/* A micro-kernel multiplies an MR x kc sliver of op(A) by a packed kc x NR
 * panel of B and applies the epilogue to the top-left mr x nr corner of the
 * tile at c. The A sliver is read at pa[r*rsa + p*csa]: packed panels have
 * rsa = 1, csa = MR; when A is read in place the strides are A's own, and rows
 * r >= mr alias row mr-1 so nothing past A is touched (those sums are dropped). */
typedef void (*kernel_fn)(int64_t kc, const float *pa, int64_t rsa, int64_t csa,
                          const float *pb, int64_t mr, int64_t nr, float *c, int64_t ldc,
                          const float *bias, const struct epi *ep);

/* ------------------------------------------------------------------ packing */

#ifdef MG_X86_AVX2
/* Packs one full MR-row panel of a row-major A (rows contiguous in k): an
 * 8x8 transpose per 8 values of k (rows 6 and 7 are don't-cares), about 3x
 * faster than the scalar gather, which matters when k is large and m small. */
__attribute__((target("avx2,fma")))
static void pack_a_panel_avx2(const float *src, int64_t lda, int64_t kc, float *restrict dst)
{
    const float *s0 = src, *s1 = s0 + lda, *s2 = s1 + lda;
    const float *s3 = s2 + lda, *s4 = s3 + lda, *s5 = s4 + lda;
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8, dst += 8 * MR) {
        __m256 r0 = _mm256_loadu_ps(s0 + p), r1 = _mm256_loadu_ps(s1 + p);
        __m256 r2 = _mm256_loadu_ps(s2 + p), r3 = _mm256_loadu_ps(s3 + p);
        __m256 r4 = _mm256_loadu_ps(s4 + p), r5 = _mm256_loadu_ps(s5 + p);
        __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
        __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
        __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
        /* u_j holds rows 0-3 of column j (low 128: j, high 128: j+4). */
        __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        /* t4/t5 hold rows 4-5: (r4_j, r5_j) pairs for j = 0,1 | 4,5 and 2,3 | 6,7. */
        __m128 lo4 = _mm256_castps256_ps128(t4), hi4 = _mm256_extractf128_ps(t4, 1);
        __m128 lo5 = _mm256_castps256_ps128(t5), hi5 = _mm256_extractf128_ps(t5, 1);
#define MG_PUT(j, u4, pair, sel)                                                      \
    do {                                                                              \
        _mm_storeu_ps(dst + (j) * MR, u4);                                            \
        _mm_storel_pi((__m64 *)(dst + (j) * MR + 4),                                  \
                      sel ? _mm_movehl_ps(pair, pair) : pair);                        \
    } while (0)
        MG_PUT(0, _mm256_castps256_ps128(u0), lo4, 0);
        MG_PUT(1, _mm256_castps256_ps128(u1), lo4, 1);
        MG_PUT(2, _mm256_castps256_ps128(u2), lo5, 0);
        MG_PUT(3, _mm256_castps256_ps128(u3), lo5, 1);
        MG_PUT(4, _mm256_extractf128_ps(u0, 1), hi4, 0);
        MG_PUT(5, _mm256_extractf128_ps(u1, 1), hi4, 1);
        MG_PUT(6, _mm256_extractf128_ps(u2, 1), hi5, 0);
        MG_PUT(7, _mm256_extractf128_ps(u3, 1), hi5, 1);
#undef MG_PUT
    }
    for (; p < kc; ++p, dst += MR) {
        dst[0] = s0[p]; dst[1] = s1[p]; dst[2] = s2[p];
        dst[3] = s3[p]; dst[4] = s4[p]; dst[5] = s5[p];
    }
}
#endif

/* op(A) rows [i0, i0+mc), k [p0, p0+kc) -> MR-row panels, each kc x MR
 * (element (r, p) at p*MR + r), rows past m zero-filled so the kernel needs
 * no edge cases. */
static void pack_a(const struct plan *P, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                   float *restrict dst)
{
    for (int64_t ir = 0; ir < mc; ir += MR, dst += MR * kc) {
        int64_t mr = mg_min64(MR, mc - ir);
        if (P->ta) { /* op(A)(i, p) = a[p*lda + i]: rows of A are contiguous in i */
            const float *src = P->a + p0 * P->lda + (i0 + ir);
            if (mr == MR) { /* a fixed-size copy per p, which the compiler unrolls */
                for (int64_t p = 0; p < kc; ++p)
                    memcpy(dst + p * MR, src + p * P->lda, MR * sizeof(float));
                continue;
            }
            for (int64_t p = 0; p < kc; ++p) {
                int64_t r = 0;
                for (; r < mr; ++r) dst[p * MR + r] = src[p * P->lda + r];
                for (; r < MR; ++r) dst[p * MR + r] = 0.0f;
            }
        } else {     /* op(A)(i, p) = a[i*lda + p] */
            const float *src = P->a + (i0 + ir) * P->lda + p0;
#ifdef MG_X86_AVX2
            if (mr == MR && P->avx2) {
                pack_a_panel_avx2(src, P->lda, kc, dst);
                continue;
            }
#endif
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

#ifdef MG_X86_AVX2
/* Full panel of a transposed B (NR rows of the stored n x k matrix, each
 * contiguous in k): two 8x8 transposes per 8 values of k instead of a
 * 16-stream scalar gather. */
__attribute__((target("avx2,fma")))
static void pack_bt_panel_avx2(const float *src, int64_t ldb, int64_t kc, float *restrict dst)
{
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
        for (int h = 0; h < NR; h += 8) {
            const float *s = src + h * ldb + p;
            __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + ldb);
            __m256 r2 = _mm256_loadu_ps(s + 2 * ldb), r3 = _mm256_loadu_ps(s + 3 * ldb);
            __m256 r4 = _mm256_loadu_ps(s + 4 * ldb), r5 = _mm256_loadu_ps(s + 5 * ldb);
            __m256 r6 = _mm256_loadu_ps(s + 6 * ldb), r7 = _mm256_loadu_ps(s + 7 * ldb);
            __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
            __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
            __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
            __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            float *d = dst + p * NR + h;
            _mm256_store_ps(d + 0 * NR, _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_store_ps(d + 1 * NR, _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_store_ps(d + 2 * NR, _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_store_ps(d + 3 * NR, _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_store_ps(d + 4 * NR, _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_store_ps(d + 5 * NR, _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_store_ps(d + 6 * NR, _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_store_ps(d + 7 * NR, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
    }
    for (; p < kc; ++p)
        for (int q = 0; q < NR; ++q) dst[p * NR + q] = src[q * ldb + p];
}
#endif

/* Rows [p0+r0, p0+r0+nrows) of a non-transposed B slice (op(B)(p, j) =
 * b[p*ldb + j]), columns [j0, j0+nc), scattered into the slice's NR-column
 * panels, each kc x NR (element (p, q) at p*NR + q), columns past n zeroed.
 * Walking B by rows keeps the reads contiguous. */
static void pack_b_rows(const struct plan *P, int64_t p0, int64_t kc, int64_t r0, int64_t nrows,
                        int64_t j0, int64_t nc, float *restrict bbuf)
{
    for (int64_t p = r0; p < r0 + nrows; ++p) {
        const float *s = P->b + (p0 + p) * P->ldb + j0;
        float *d = bbuf + p * NR;
        int64_t j = 0;
        for (; j + NR <= nc; j += NR, d += NR * kc) /* constant trip count: vector moves */
            for (int q = 0; q < NR; ++q) d[q] = s[j + q];
        if (j < nc) {
            int64_t q = 0;
            for (; q < nc - j; ++q) d[q] = s[j + q];
            for (; q < NR; ++q) d[q] = 0.0f;
        }
    }
}

/* One NR-column panel of a transposed B (op(B)(p, j) = b[j*ldb + p]):
 * k [p0, p0+kc), columns [j0, j0+nr) -> kc x NR (element (p, q) at p*NR + q),
 * columns past n zero-filled. */
static void pack_bt_panel(const struct plan *P, int64_t p0, int64_t kc, int64_t j0, int64_t nr,
                          float *restrict dst)
{
    const float *src = P->b + j0 * P->ldb + p0;
#ifdef MG_X86_AVX2
    if (nr == NR && P->avx2) {
        pack_bt_panel_avx2(src, P->ldb, kc, dst);
        return;
    }
#endif
    int64_t q = 0;
    for (; q < nr; ++q) {
        const float *s = src + q * P->ldb;
        for (int64_t p = 0; p < kc; ++p) dst[p * NR + q] = s[p];
    }
    for (; q < NR; ++q)
        for (int64_t p = 0; p < kc; ++p) dst[p * NR + q] = 0.0f;
}

/* ------------------------------------------------------------------ kernels */

/* Portable reference micro-kernel: plain C the compiler can vectorise for any
 * target. The two 8-column halves run as separate passes so the accumulators
 * fit in 16 SSE/NEON registers; each element is still one chain over p. */
static void kernel_portable(int64_t kc, const float *pa, int64_t rsa, int64_t csa,
                            const float *restrict pb, int64_t mr, int64_t nr, float *c,
                            int64_t ldc, const float *bias, const struct epi *ep)
{
    int64_t off[MR];
    for (int r = 0; r < MR; ++r) off[r] = mg_min64(r, mr - 1) * rsa;
    float t[MR][NR];
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
            for (int q = 0; q < 8; ++q) t[r][h + q] = acc[r][q];
    }
    /* The AVX2 epilogue does exactly these operations, lane by lane. */
    for (int64_t r = 0; r < mr; ++r) {
        for (int64_t q = 0; q < nr; ++q) {
            float *dst = c + r * ldc + q;
            float v = t[r][q];
            if (ep->alpha != 1.0f) v = ep->alpha * v;
            if (ep->prev == MG_PREV_C) v += *dst;
            else if (ep->prev == MG_PREV_BETA_C) v += ep->beta * *dst;
            if (ep->last) {
                if (bias) v += bias[q];
                if (ep->relu) v = 0.0f > v ? 0.0f : v; /* keeps NaN, like maxps(0, v) */
            }
            *dst = v;
        }
    }
}

#ifdef MG_X86_AVX2
/* 6x16 AVX2+FMA micro-kernel body, inlined into a packed-A instance (strides
 * are compile-time constants) and an in-place-A instance. */
__attribute__((target("avx2,fma"), always_inline))
static inline void avx2_core(int64_t kc, const float *pa, int64_t rsa, int64_t csa,
                             const float *restrict pb, int64_t mr, int64_t nr, float *c,
                             int64_t ldc, const float *bias, const struct epi *ep)
{
    const int64_t o1 = mg_min64(1, mr - 1) * rsa, o2 = mg_min64(2, mr - 1) * rsa;
    const int64_t o3 = mg_min64(3, mr - 1) * rsa, o4 = mg_min64(4, mr - 1) * rsa;
    const int64_t o5 = mg_min64(5, mr - 1) * rsa;
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    /* C is needed only after the loop: start fetching it now, if the loop is
     * long enough to hide the misses. Before a short one (k = 10 in dz @ W2^T)
     * the prefetches only stall (perf: 11% of that product's time). */
    if (kc >= PREFETCH_C_MIN_KC) {
        for (int64_t r = 0; r < mr; ++r) {
            _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + r * ldc + nr - 1), _MM_HINT_T0);
        }
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
    /* A whole tile whose result is the chain itself (alpha 1, C not read, no
     * bias or relu): plain stores, without the per-row tests below, which
     * cost as much as the loop when k is small. */
    if (mr == MR && nr == NR && ep->alpha == 1.0f && ep->prev == MG_PREV_ZERO &&
        !(ep->last && (bias || ep->relu))) {
        _mm256_storeu_ps(c, c00); _mm256_storeu_ps(c + 8, c01);
        c += ldc; _mm256_storeu_ps(c, c10); _mm256_storeu_ps(c + 8, c11);
        c += ldc; _mm256_storeu_ps(c, c20); _mm256_storeu_ps(c + 8, c21);
        c += ldc; _mm256_storeu_ps(c, c30); _mm256_storeu_ps(c + 8, c31);
        c += ldc; _mm256_storeu_ps(c, c40); _mm256_storeu_ps(c + 8, c41);
        c += ldc; _mm256_storeu_ps(c, c50); _mm256_storeu_ps(c + 8, c51);
        return;
    }
    /* Epilogue: the same operations as kernel_portable's, lane by lane.
     * Edge columns use masked loads/stores so C outside the tile is never
     * touched; the upper half is skipped entirely when nr <= 8. */
    const struct mg_epi8 e8 = {
        .alpha = _mm256_set1_ps(ep->alpha), .beta = _mm256_set1_ps(ep->beta),
        .scale = ep->alpha != 1.0f, .prev = ep->prev, .last = ep->last, .relu = ep->relu,
    };
    const int full = nr == NR, hi = nr > 8;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nr), lane);
    const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nr - 8), lane);
    __m256 bias0 = _mm256_setzero_ps(), bias1 = bias0;
    const int with_bias = ep->last && bias;
    if (with_bias) {
        bias0 = full ? _mm256_loadu_ps(bias) : _mm256_maskload_ps(bias, m0);
        if (hi) bias1 = full ? _mm256_loadu_ps(bias + 8) : _mm256_maskload_ps(bias + 8, m1);
    }
#define MG_ROW(r, x0, x1)                                                             \
    do {                                                                              \
        float *cr = c + (r) * ldc;                                                    \
        mg_epilogue8(cr, x0, m0, full, with_bias ? &bias0 : NULL, &e8);               \
        if (hi) mg_epilogue8(cr + 8, x1, m1, full, with_bias ? &bias1 : NULL, &e8);   \
    } while (0)
    MG_ROW(0, c00, c01);
    if (mr > 1) MG_ROW(1, c10, c11);
    if (mr > 2) MG_ROW(2, c20, c21);
    if (mr > 3) MG_ROW(3, c30, c31);
    if (mr > 4) MG_ROW(4, c40, c41);
    if (mr > 5) MG_ROW(5, c50, c51);
#undef MG_ROW
}

__attribute__((target("avx2,fma")))
static void kernel_avx2_packed(int64_t kc, const float *pa, int64_t rsa, int64_t csa,
                               const float *pb, int64_t mr, int64_t nr, float *c, int64_t ldc,
                               const float *bias, const struct epi *ep)
{
    (void)rsa; (void)csa;
    avx2_core(kc, pa, 1, MR, pb, mr, nr, c, ldc, bias, ep);
}

__attribute__((target("avx2,fma")))
static void kernel_avx2_direct(int64_t kc, const float *pa, int64_t rsa, int64_t csa,
                               const float *pb, int64_t mr, int64_t nr, float *c, int64_t ldc,
                               const float *bias, const struct epi *ep)
{
    avx2_core(kc, pa, rsa, csa, pb, mr, nr, c, ldc, bias, ep);
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
 * shared packed-B block, abuf this thread's packed-A block. */
struct kernels { kernel_fn packed, direct; };

static struct epi epi_for_slice(const struct plan *P, int64_t pb)
{
    return (struct epi){
        .alpha = P->alpha, .beta = P->beta, .relu = P->relu,
        .last = pb == P->nkb - 1,
        .prev = mg_prev_for_slice(pb, P->beta),
    };
}

/* All micro-tiles of rows [i0, i0+mc) x npanels NR-column panels starting at
 * column j_first, for one KC slice. abuf: packed A block (unless a_direct),
 * bpan: the first of the packed B panels. */
static void run_tiles(const struct plan *P, const struct kernels *K, const struct epi *ep,
                      int64_t p0, int64_t kc, int64_t i0, int64_t mc, const float *abuf,
                      int64_t j_first, int64_t npanels, const float *bpan)
{
    for (int64_t t = 0; t < npanels; ++t) {
        const int64_t j = j_first + t * NR, nr = mg_min64(NR, P->n - j);
        const float *pbp = bpan + t * NR * kc;
        for (int64_t ir = 0; ir < mc; ir += MR) {
            const int64_t i = i0 + ir, mr = mg_min64(MR, P->m - i);
            const float *pap = abuf + ir * kc;
            int64_t rsa = 1, csa = MR;
            kernel_fn kern = K->packed;
            if (P->a_direct) {
                rsa = P->ta ? 1 : P->lda;
                csa = P->ta ? P->lda : 1;
                pap = P->a + i * rsa + p0 * csa;
                kern = K->direct;
            }
            kern(kc, pap, rsa, csa, pbp, mr, nr, P->c + i * P->ldc + j, P->ldc,
                 P->bias ? P->bias + j : NULL, ep);
        }
    }
}


static void gemm_body(const struct plan *P, const struct kernels *K, float *bbuf, float *abuf)
{
    int64_t cached_ib = -1, cached_pb = -1; /* which A block abuf holds */
    for (int64_t jb = 0; jb < P->nnb; ++jb) {
        const int64_t j0 = jb * P->nc, nc = mg_min64(P->nc, P->n - j0);
        const int64_t npan = mg_ceil_div(nc, NR);
        /* Column groups per row block: enough items to balance a few threads,
         * computed from the shape only. Static scheduling hands each thread a
         * contiguous run of items, so it packs few distinct A blocks. */
        const int64_t njg = mg_min64(npan, mg_ceil_div(ITEMS_MIN, P->nmb));
        const int64_t gw = mg_ceil_div(npan, njg);
        const int64_t nitems = P->nmb * mg_ceil_div(npan, gw);
        for (int64_t pb = 0; pb < P->nkb; ++pb) {
            const int64_t p0 = pb * P->kc, kc = mg_min64(P->kc, P->k - p0);
            const struct epi ep = epi_for_slice(P, pb);
            if (!P->tb) {
                /* Row-major B: split the slice by rows of B so each thread
                 * streams through contiguous memory (panel by panel would
                 * read a 64-byte strip per row, which prefetches poorly). */
                const int64_t nrows = mg_ceil_div(kc, 8);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
                for (int64_t rb = 0; rb < nrows; ++rb)
                    pack_b_rows(P, p0, kc, rb * 8, mg_min64(8, kc - rb * 8), j0, nc, bbuf);
            } else {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
                for (int64_t jp = 0; jp < npan; ++jp)
                    pack_bt_panel(P, p0, kc, j0 + jp * NR, mg_min64(NR, nc - jp * NR),
                                 bbuf + jp * NR * kc);
            }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (int64_t it = 0; it < nitems; ++it) {
                const int64_t ib = it / mg_ceil_div(npan, gw), g = it % mg_ceil_div(npan, gw);
                const int64_t i0 = ib * P->mc, mc = mg_min64(P->mc, P->m - i0);
                if (!P->a_direct && (ib != cached_ib || pb != cached_pb)) {
                    pack_a(P, i0, mc, p0, kc, abuf);
                    cached_ib = ib;
                    cached_pb = pb;
                }
                const int64_t jp0 = g * gw, jp1 = mg_min64(npan, jp0 + gw);
                run_tiles(P, K, &ep, p0, kc, i0, mc, abuf, j0 + jp0 * NR, jp1 - jp0,
                          bbuf + jp0 * NR * kc);
            }
        }
    }
}

/* Small-m mode (a single row block): each thread owns a fixed, contiguous
 * range of column groups and packs A and its own B panels privately, so the
 * threads never wait for each other and no packed data moves between cores.
 * A is packed once per slice by every thread, which is cheap when m is small. */
static void gemm_body_cols(const struct plan *P, const struct kernels *K, float *abuf,
                           float *bbuf, int tid, int nth)
{
    const int64_t npan = mg_ceil_div(P->n, NR), ng = mg_ceil_div(npan, COL_GROUP);
    const int64_t g0 = ng * tid / nth, g1 = ng * (tid + 1) / nth;
    if (g0 == g1) return;
    for (int64_t pb = 0; pb < P->nkb; ++pb) {
        const int64_t p0 = pb * P->kc, kc = mg_min64(P->kc, P->k - p0);
        const struct epi ep = epi_for_slice(P, pb);
        if (!P->a_direct) pack_a(P, 0, P->m, p0, kc, abuf);
        for (int64_t g = g0; g < g1; ++g) {
            const int64_t jp0 = g * COL_GROUP, jp1 = mg_min64(npan, jp0 + COL_GROUP);
            const int64_t j0 = jp0 * NR, ncg = mg_min64(P->n - j0, (jp1 - jp0) * NR);
            if (!P->tb) {
                pack_b_rows(P, p0, kc, 0, kc, j0, ncg, bbuf);
            } else {
                for (int64_t jp = jp0; jp < jp1; ++jp)
                    pack_bt_panel(P, p0, kc, jp * NR, mg_min64(NR, P->n - jp * NR),
                                 bbuf + (jp - jp0) * NR * kc);
            }
            run_tiles(P, K, &ep, p0, kc, 0, P->m, abuf, j0, jp1 - jp0, bbuf);
        }
    }
}

/* k == 0 or alpha == 0: A and B are not read (BLAS convention), C = beta*C. */
static void scale_only(int64_t m, int64_t n, float beta, float *c, int64_t ldc,
                       const float *bias, int relu)
{
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(mg_team_threads()) \
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
    int64_t nb = mg_ceil_div(total, max);
    int64_t s = mg_ceil_div(mg_ceil_div(total, nb), unit) * unit;
    *size = s;
    *count = mg_ceil_div(total, s);
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
    int64_t kc, nkb;
    split(k, KC_MAX, 1, &kc, &nkb);
#ifdef MG_X86_AVX2
    if (kernel_kind()) {
        const struct mg_gemm_args g = {
            .trans_a = trans_a, .trans_b = trans_b, .m = m, .n = n, .k = k,
            .alpha = alpha, .beta = beta, .a = a, .b = b, .lda = lda, .ldb = ldb,
            .c = c, .ldc = ldc, .bias = bias, .relu = relu,
        };
        int status = mg_gemm_narrow(&g); /* n <= 10: a 10-class output layer */
        if (status != MG_GEMM_DECLINED) return status;
        status = mg_gemm_sparse(&g, kc);
        if (status != MG_GEMM_DECLINED) return status;
    }
#endif

    struct plan P = {
        .ta = trans_a, .tb = trans_b, .m = m, .n = n, .k = k,
        .a = a, .b = b, .lda = lda, .ldb = ldb, .c = c, .ldc = ldc,
        .alpha = alpha, .beta = beta, .bias = bias, .relu = relu,
    };
    /* With a single column panel each A element is used once per slice:
     * packing it would cost as much as the multiply saves. */
    P.a_direct = P.n <= NR;
    P.kc = kc;
    P.nkb = nkb;
    split(P.m, MC_MAX, MR, &P.mc, &P.nmb);
    split(P.n, NC_MAX, NR, &P.nc, &P.nnb);

    struct kernels K = { kernel_portable, kernel_portable };
#ifdef MG_X86_AVX2
    if (kernel_kind()) {
        K = (struct kernels){ kernel_avx2_packed, kernel_avx2_direct };
        P.avx2 = 1;
    }
#endif
    /* The calling thread's workspace holds every thread's packing buffers, so
     * nothing is allocated inside the parallel region (no failure for the
     * team to agree on, no extra barrier). */
    int nthreads = 1;
#ifdef _OPENMP
    nthreads = mg_gemm_threads(m, n, k);
    if (nthreads < 1) nthreads = 1;
#endif
    /* Small m: private A and B per thread (see gemm_body_cols). Otherwise a
     * shared B block plus one A block per thread. Blocks are rounded to 16
     * floats to keep them all 64-byte aligned. */
    const int cols_mode = P.nmb == 1;
    const size_t bsize = cols_mode ? 0 : (size_t)P.kc * (size_t)P.nc;
    const size_t asize = (((size_t)P.kc * (size_t)P.mc + 15) & ~(size_t)15) +
                         (cols_mode ? (size_t)P.kc * COL_GROUP * NR : 0);
    if ((SIZE_MAX - bsize) / asize < (size_t)nthreads) return MG_ENOMEM;
    float *w0 = mg_gemm_ws_get(bsize + asize * (size_t)nthreads);
    if (!w0) return MG_ENOMEM;
    const size_t bofs = asize - (cols_mode ? (size_t)P.kc * COL_GROUP * NR : 0);
    /* MG_FTZ: see internal.h; subnormals would slow the FMAs many times */
    MG_PARALLEL(nthreads, , {
        MG_FTZ_BEGIN;
        const int tid = mg_thread_num();
        float *wa = w0 + bsize + asize * (size_t)tid;
        if (cols_mode) gemm_body_cols(&P, &K, wa, wa + bofs, tid, mg_team_size());
        else gemm_body(&P, &K, w0, wa);
        MG_FTZ_END;
    });
    return MG_OK;
}
