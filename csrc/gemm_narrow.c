/* GEMM with a narrow output, n <= 10 columns: the 10-class layer of an MLP.
 *
 * A 16-wide register tile (gemm.c) would be mostly padding there, so these two
 * kernels put the vector lanes elsewhere:
 *  - op(A) = A (h @ W2, dz @ ...): each C element is a dot product vectorised
 *    along k, because A's rows are contiguous along k (narrow_dot_tile);
 *  - op(A) = A^T (h.T @ dz2, the last layer's weight gradient): the lanes are
 *    consecutive rows of C, because row p of the stored A holds op(A)[i..i+15][p]
 *    contiguously; each lane runs an FMA chain over p in order
 *    (narrow_outer_tile).
 * In both, op(B) (at most 10 columns) is packed once per call, and each C
 * element is produced by one thread in one fixed order, so results do not
 * depend on the number of threads. */
#include "minigrad.h"
#include "internal.h"

#ifndef MG_X86_AVX2
int mg_gemm_narrow(const struct mg_gemm_args *g)
{
    (void)g;
    return MG_GEMM_DECLINED;
}
#else

#define NARROW_MAX_N 10 /* wider than this, the 6x16 path wins */

/* The scalar epilogue of one C element, as the blocked kernels define it:
 * alpha*AB, plus C or beta*C, plus bias, then relu (which keeps NaN). */
static inline void finish(float *dst, float v, float alpha, float beta, const float *bias,
                          int64_t j, int relu)
{
    if (alpha != 1.0f) v = alpha * v;
    if (beta == 1.0f) v += *dst;
    else if (beta != 0.0f) v += beta * *dst;
    if (bias) v += bias[j];
    if (relu) v = 0.0f > v ? 0.0f : v;
    *dst = v;
}

/* Writes a rows x cols block of results to C at (i, j); s[r * rs + q * cs] is
 * element (r, q). C = A op(B) alone (the usual weight gradient) is a plain store:
 * finish would leave every value as it is. */
static inline void store_block(const struct mg_gemm_args *g, int plain, int64_t i, int64_t j,
                        int64_t rows, int64_t cols, const float *s, int64_t rs, int64_t cs)
{
    for (int64_t r = 0; r < rows; ++r) {
        float *dst = g->c + (i + r) * g->ldc + j;
        const float *src = s + r * rs;
        if (plain)
            for (int64_t q = 0; q < cols; ++q) dst[q] = src[q * cs];
        else
            for (int64_t q = 0; q < cols; ++q)
                finish(dst + q, src[q * cs], g->alpha, g->beta, g->bias, j + q, g->relu);
    }
}

static int plain_product(const struct mg_gemm_args *g)
{
    return g->alpha == 1.0f && g->beta == 0.0f && !g->bias && !g->relu;
}

/* ---------------------------------------------------------------- op(A) = A
 *
 * Lane l of a dot product sums p = l, l+8, ... in order, then the 8 lanes are
 * added in a fixed tree ((0+1)+(2+3))+((4+5)+(6+7)). A tile is DR rows x DC
 * columns (10 accumulators, 7 loads per 10 FMAs); A rows are read in place and
 * op(B) is packed transposed (n x k, zero-padded). */
#define DR 2
#define DC 5

__attribute__((target("avx2,fma")))
static void narrow_dot_tile(int64_t k, const float *a0, const float *a1, const float *bt,
                            int64_t ldbt, float out[DR][DC])
{
    __m256 s00 = _mm256_setzero_ps(), s01 = _mm256_setzero_ps(), s02 = _mm256_setzero_ps();
    __m256 s03 = _mm256_setzero_ps(), s04 = _mm256_setzero_ps(), s10 = _mm256_setzero_ps();
    __m256 s11 = _mm256_setzero_ps(), s12 = _mm256_setzero_ps(), s13 = _mm256_setzero_ps();
    __m256 s14 = _mm256_setzero_ps();
    const float *b0 = bt, *b1 = b0 + ldbt, *b2 = b1 + ldbt, *b3 = b2 + ldbt, *b4 = b3 + ldbt;
    const int64_t k8 = k & ~(int64_t)7;
#define MG_STEP(x0, x1, p)                                                            \
    do {                                                                              \
        __m256 w;                                                                     \
        w = _mm256_load_ps(b0 + p); s00 = _mm256_fmadd_ps(x0, w, s00); s10 = _mm256_fmadd_ps(x1, w, s10); \
        w = _mm256_load_ps(b1 + p); s01 = _mm256_fmadd_ps(x0, w, s01); s11 = _mm256_fmadd_ps(x1, w, s11); \
        w = _mm256_load_ps(b2 + p); s02 = _mm256_fmadd_ps(x0, w, s02); s12 = _mm256_fmadd_ps(x1, w, s12); \
        w = _mm256_load_ps(b3 + p); s03 = _mm256_fmadd_ps(x0, w, s03); s13 = _mm256_fmadd_ps(x1, w, s13); \
        w = _mm256_load_ps(b4 + p); s04 = _mm256_fmadd_ps(x0, w, s04); s14 = _mm256_fmadd_ps(x1, w, s14); \
    } while (0)
#pragma GCC unroll 2
    for (int64_t p = 0; p < k8; p += 8)
        MG_STEP(_mm256_loadu_ps(a0 + p), _mm256_loadu_ps(a1 + p), p);
    if (k8 < k) { /* masked lanes read as 0 and meet zero padding in bt */
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(k - k8)),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        MG_STEP(_mm256_maskload_ps(a0 + k8, m), _mm256_maskload_ps(a1 + k8, m), k8);
    }
#undef MG_STEP
    /* Reduce: hadd pairs lanes (0+1),(2+3) per 128-bit half; the final add
     * joins the halves, giving the tree described above for every sum. */
    __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(s00, s01), _mm256_hadd_ps(s02, s03));
    __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(s10, s11), _mm256_hadd_ps(s12, s13));
    __m256 t4 = _mm256_hadd_ps(s04, s14);
    __m256 u4 = _mm256_hadd_ps(t4, t4);
    __m128 r0 = _mm_add_ps(_mm256_castps256_ps128(u0), _mm256_extractf128_ps(u0, 1));
    __m128 r1 = _mm_add_ps(_mm256_castps256_ps128(u1), _mm256_extractf128_ps(u1, 1));
    __m128 r4 = _mm_add_ps(_mm256_castps256_ps128(u4), _mm256_extractf128_ps(u4, 1));
    _mm_storeu_ps(out[0], r0);
    _mm_storeu_ps(out[1], r1);
    out[0][4] = _mm_cvtss_f32(r4);
    out[1][4] = _mm_cvtss_f32(_mm_shuffle_ps(r4, r4, 1));
}

static int gemm_narrow_dot(const struct mg_gemm_args *g)
{
    const int64_t m = g->m, n = g->n, k = g->k;
    const int64_t ldbt = mg_ceil_div(k, 8) * 8, nt = mg_ceil_div(n, DC) * DC;
    float *bt = mg_gemm_ws_get((size_t)(nt * ldbt));
    if (!bt) return MG_ENOMEM;
    for (int64_t j = 0; j < nt; ++j) {
        float *d = bt + j * ldbt;
        int64_t p = 0;
        if (j < n) {
            if (g->trans_b) for (; p < k; ++p) d[p] = g->b[j * g->ldb + p];
            else for (; p < k; ++p) d[p] = g->b[p * g->ldb + j];
        }
        for (; p < ldbt; ++p) d[p] = 0.0f;
    }
    const int64_t ntiles = mg_ceil_div(m, DR) * (nt / DC);
    const int plain = plain_product(g);
    MG_PARALLEL(mg_gemm_threads(m, n, k), , {
        MG_FTZ_BEGIN;
        MG_OMP(omp for schedule(static))
        for (int64_t t = 0; t < ntiles; ++t) {
            const int64_t i = (t / (nt / DC)) * DR, j = (t % (nt / DC)) * DC;
            const int64_t mr = mg_min64(DR, m - i), nr = mg_min64(DC, n - j);
            float s[DR][DC];
            narrow_dot_tile(k, g->a + i * g->lda, g->a + (i + mr - 1) * g->lda, bt + j * ldbt,
                            ldbt, s);
            store_block(g, plain, i, j, mr, nr, &s[0][0], DC, 1);
        }
        MG_FTZ_END;
    });
    return MG_OK;
}

/* ---------------------------------------------------------------- op(A) = A^T
 *
 * C[i][j] = sum_p A[p][i] * op(B)[p][j]. A tile is 16 rows of C (two vectors of
 * lanes) by a group of NW <= 6 columns (one accumulator per vector and column,
 * at most 12); per p it loads 16 values of A's row p and broadcasts NW values
 * of packed op(B) (k x n), so at most 8 loads feed 12 FMAs. n <= 6 is one
 * column group, 7..10 two. NW is a compile-time constant in each instance of
 * the inlined body below. */
#define OUTER_ROWS 16
#define OUTER_MAX_NW 6

__attribute__((target("avx2,fma"), always_inline))
static inline void narrow_outer_tile_n(int nw, int64_t k, const float *a, int64_t lda,
                                       const float *bp, int64_t ldbp, int64_t rows,
                                       float out[OUTER_MAX_NW][OUTER_ROWS])
{
    __m256 s0[OUTER_MAX_NW], s1[OUTER_MAX_NW];
#pragma GCC unroll 6
    for (int j = 0; j < nw; ++j) s0[j] = s1[j] = _mm256_setzero_ps();
    if (rows == OUTER_ROWS) {
        for (int64_t p = 0; p < k; ++p) {
            const __m256 x0 = _mm256_loadu_ps(a + p * lda), x1 = _mm256_loadu_ps(a + p * lda + 8);
            const float *b = bp + p * ldbp;
#pragma GCC unroll 6
            for (int j = 0; j < nw; ++j) {
                const __m256 w = _mm256_broadcast_ss(b + j);
                s0[j] = _mm256_fmadd_ps(x0, w, s0[j]);
                s1[j] = _mm256_fmadd_ps(x1, w, s1[j]);
            }
        }
    } else { /* the last, partial tile: lanes past `rows` read nothing */
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rows), lane);
        const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rows - 8), lane);
        for (int64_t p = 0; p < k; ++p) {
            const __m256 x0 = _mm256_maskload_ps(a + p * lda, m0);
            const __m256 x1 = _mm256_maskload_ps(a + p * lda + 8, m1);
            const float *b = bp + p * ldbp;
#pragma GCC unroll 6
            for (int j = 0; j < nw; ++j) {
                const __m256 w = _mm256_broadcast_ss(b + j);
                s0[j] = _mm256_fmadd_ps(x0, w, s0[j]);
                s1[j] = _mm256_fmadd_ps(x1, w, s1[j]);
            }
        }
    }
#pragma GCC unroll 6
    for (int j = 0; j < nw; ++j) {
        _mm256_storeu_ps(out[j], s0[j]);
        _mm256_storeu_ps(out[j] + 8, s1[j]);
    }
}

__attribute__((target("avx2,fma")))
static void narrow_outer_tile(int nw, int64_t k, const float *a, int64_t lda, const float *bp,
                              int64_t ldbp, int64_t rows, float out[OUTER_MAX_NW][OUTER_ROWS])
{
    switch (nw) { /* one register-resident instance per width */
    case 1: narrow_outer_tile_n(1, k, a, lda, bp, ldbp, rows, out); break;
    case 2: narrow_outer_tile_n(2, k, a, lda, bp, ldbp, rows, out); break;
    case 3: narrow_outer_tile_n(3, k, a, lda, bp, ldbp, rows, out); break;
    case 4: narrow_outer_tile_n(4, k, a, lda, bp, ldbp, rows, out); break;
    case 5: narrow_outer_tile_n(5, k, a, lda, bp, ldbp, rows, out); break;
    default: narrow_outer_tile_n(6, k, a, lda, bp, ldbp, rows, out); break;
    }
}

static int gemm_narrow_outer(const struct mg_gemm_args *g)
{
    const int64_t m = g->m, n = g->n, k = g->k;
    float *bp = mg_gemm_ws_get((size_t)(k * n));
    if (!bp) return MG_ENOMEM;
    for (int64_t p = 0; p < k; ++p)
        for (int64_t j = 0; j < n; ++j)
            bp[p * n + j] = g->trans_b ? g->b[j * g->ldb + p] : g->b[p * g->ldb + j];
    /* column groups: [0, w0) and, for n > OUTER_MAX_NW, [w0, n) */
    const int64_t groups = n > OUTER_MAX_NW ? 2 : 1, w0 = mg_ceil_div(n, groups);
    const int64_t ntiles = mg_ceil_div(m, OUTER_ROWS) * groups;
    const int plain = plain_product(g);
    MG_PARALLEL(mg_gemm_threads(m, n, k), , {
        MG_FTZ_BEGIN;
        MG_OMP(omp for schedule(static))
        for (int64_t t = 0; t < ntiles; ++t) {
            const int64_t i = (t / groups) * OUTER_ROWS, rows = mg_min64(OUTER_ROWS, m - i);
            const int64_t j0 = (t % groups) * w0, nw = mg_min64(w0, n - j0);
            float s[OUTER_MAX_NW][OUTER_ROWS];
            narrow_outer_tile((int)nw, k, g->a + i, g->lda, bp + j0, n, rows, s);
            store_block(g, plain, i, j0, rows, nw, &s[0][0], 1, OUTER_ROWS);
        }
        MG_FTZ_END;
    });
    return MG_OK;
}

int mg_gemm_narrow(const struct mg_gemm_args *g)
{
    if (g->n > NARROW_MAX_N)
        return MG_GEMM_DECLINED;
    if (!g->trans_a) {
        if (g->k < 8 || mg_ceil_div(g->n, DC) * DC * (mg_ceil_div(g->k, 8) * 8) > MG_NARROW_MAX_BT)
            return MG_GEMM_DECLINED;
        return gemm_narrow_dot(g);
    }
    if (g->k * g->n > MG_NARROW_MAX_BT)
        return MG_GEMM_DECLINED;
    return gemm_narrow_outer(g);
}
#endif
