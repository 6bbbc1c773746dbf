/* Zero-skipping GEMM, for an op(A) that is mostly exact zeros.
 *
 * Why: about 81% of MNIST pixels are exactly 0, and the first layer's two big
 * products both take the images as op(A): x @ W forward and x^T @ dZ for the
 * weight gradient. Together they are ~98% of an epoch's FLOPs, most of them
 * multiplications by zero. Here each row of op(A) is first listed as its
 * non-zero (p, value) pairs, and C[r, j:j+64] accumulates value * B[p, j:j+64]
 * over that list only: 8 ymm accumulators, one FMA per B load.
 *
 * Same numbers as the dense path: every C element is the dense AVX2 kernel's
 * FMA chain (the same KC slices, p increasing within a slice, slices added in
 * order, the same alpha/beta/bias/relu epilogue) minus the terms whose a is 0.
 * Such a term adds +0 or -0 to the chain, which changes nothing except, at
 * most, the sign of a zero result. (Where two different NaNs meet in an add,
 * which one survives follows the compiler's operand order, so that may differ
 * too; NaN stays NaN.) That holds only for finite b (0 * inf is
 * NaN), so a 64-column group of B that holds an inf or NaN runs the full chain
 * over every p, exactly like the dense kernel, and non-finite values spread
 * the same way. The decisions (sparse enough or not, full chain or not) depend
 * on the data only, and each C element is computed by one thread, so results
 * stay bitwise thread-invariant.
 *
 * Used only with the AVX2 kernel (whose chains it reproduces), when op(B) is
 * not transposed and n is wide enough to fill the 64-column groups.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include "minigrad.h"
#include "internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static atomic_int g_enabled = 1;
static atomic_llong g_calls; /* products done here: lets tests see the path is taken */

void mg_set_zero_skipping(int on) { atomic_store(&g_enabled, on != 0); }
int mg_get_zero_skipping(void) { return atomic_load(&g_enabled); }
long long mg_zero_skipping_calls(void) { return atomic_load(&g_calls); }

#ifndef MG_X86_AVX2
int mg_gemm_sparse(const struct mg_gemm_args *g, int64_t kc)
{
    (void)g; (void)kc;
    return MG_GEMM_DECLINED;
}
#else

/* At or below this share of non-zeros the zero-skipping path is used. Measured
 * on Zen 4 (x @ W and x^T @ dZ at the MLP's shapes, random zero patterns), it
 * takes 0.5x the dense time at 20% non-zeros, 0.7-0.8x at 40% and breaks even
 * near 50%; MNIST's 19% runs at about 0.4x. */
#define SPARSE_MAX_DENSITY 0.4
#define SPARSE_MIN_N 32                  /* narrower outputs waste the 64-column groups */
#define SPARSE_MIN_FLOPS 2000000.0       /* below this the scan costs more than it saves */
#define SPARSE_MAX_ELEMS ((int64_t)1 << 28) /* bounds the list workspace */
#define GW 64                            /* columns per group: 8 ymm accumulators */
#define KS 128                           /* panel rows per sub-slice (<= 32 KiB in use) */
#define RB 32                            /* rows per pass over a sub-slice */


/* The non-zero entries of op(A), row by row: row r's are idx/val[beg[r] ..
 * end[r]), p increasing. Each thread counts, then lists, a range of rows, so
 * the lists are built in parallel without any shared counter. */
struct lists { int64_t *beg, *end; int32_t *idx; float *val; };

/* Bit i set where x[i] is not 0 (NaN counts as non-zero, -0 as zero). */
__attribute__((target("avx2"), always_inline))
static inline unsigned nonzero_mask8(const float *x)
{
    const __m256 eq = _mm256_cmp_ps(_mm256_loadu_ps(x), _mm256_setzero_ps(), _CMP_EQ_OQ);
    return ~(unsigned)_mm256_movemask_ps(eq) & 0xffu;
}

/* How many of row[0..k) are not 0. */
__attribute__((target("avx2,popcnt")))
static int64_t count_row(const float *row, int64_t k)
{
    int64_t n = 0, p = 0;
    for (; p + 8 <= k; p += 8) n += __builtin_popcount(nonzero_mask8(row + p));
    for (; p < k; ++p) n += !(row[p] == 0.0f);
    return n;
}

/* left_pack[mask]: the lanes whose bit is set in mask, in increasing order,
 * then zeros. Filled once when the library is loaded. */
static uint8_t left_pack[256][8];

__attribute__((constructor))
static void fill_left_pack(void)
{
    for (int mask = 0; mask < 256; ++mask)
        for (int lane = 0, n = 0; lane < 8; ++lane)
            if (mask >> lane & 1) left_pack[mask][n++] = (uint8_t)lane;
}

/* Writes the non-zeros of row[0..k) to idx/val from n on, up to `end` (the row
 * has exactly end - n of them); returns the new n. While 8 slots remain, each
 * group of 8 values is compacted in registers and stored 8 wide: the slots
 * past its own non-zeros are rewritten by the next group of the same row. */
__attribute__((target("avx2")))
static int64_t list_row(const float *row, int64_t k, int32_t *idx, float *val, int64_t n,
                        int64_t end)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int64_t p = 0;
    for (; p + 8 <= k && n + 8 <= end; p += 8) {
        const unsigned mask = nonzero_mask8(row + p);
        const __m256i perm = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)left_pack[mask]));
        _mm256_storeu_ps(val + n, _mm256_permutevar8x32_ps(_mm256_loadu_ps(row + p), perm));
        _mm256_storeu_si256((__m256i *)(idx + n), _mm256_permutevar8x32_epi32(
                                _mm256_add_epi32(_mm256_set1_epi32((int)p), lane), perm));
        n += __builtin_popcount(mask);
    }
    for (; p + 8 <= k; p += 8)
        for (unsigned mask = nonzero_mask8(row + p); mask; mask &= mask - 1) {
            const int b = __builtin_ctz(mask);
            idx[n] = (int32_t)(p + b);
            val[n++] = row[p + b];
        }
    for (; p < k; ++p)
        if (!(row[p] == 0.0f)) { idx[n] = (int32_t)p; val[n++] = row[p]; }
    return n;
}

/* op(A) stored transposed: walks seg = a[p, r0 .. r0+len) and appends
 * (p, value) at end[r] for each non-zero a[p, r]. */
__attribute__((target("avx2")))
static void scatter_row(const float *seg, int64_t len, int64_t r0, int32_t p,
                        const struct lists *L)
{
    int64_t i = 0;
#define MG_VISIT(ii)                                                                  \
    do {                                                                              \
        int64_t *e_ = &L->end[r0 + (ii)];                                             \
        L->idx[*e_] = p;                                                              \
        L->val[*e_] = seg[ii];                                                        \
        ++*e_;                                                                        \
    } while (0)
    for (; i + 8 <= len; i += 8)
        for (unsigned mask = nonzero_mask8(seg + i); mask; mask &= mask - 1)
            MG_VISIT(i + __builtin_ctz(mask));
    for (; i < len; ++i)
        if (!(seg[i] == 0.0f)) MG_VISIT(i);
#undef MG_VISIT
}

/* Op(A) = A^T: the non-zero count of each row r in [r0, r1) of op(A), i.e. of
 * each column r of the stored A, as column sums of the A != 0 mask: 8 int32
 * lanes per vector, 64 columns per pass over A's rows (NaN counts, -0 not). */
__attribute__((target("avx2")))
static int64_t count_columns(const struct mg_gemm_args *g, int64_t r0, int64_t r1,
                             const struct lists *L)
{
    int64_t total = 0, r = r0;
    for (int width = 64; width >= 8; width /= 8) /* blocks of 64 columns, then of 8 */
        for (; r + width <= r1; r += width) {
            __m256i acc[8];
            const int nv = width / 8;
            for (int q = 0; q < nv; ++q) acc[q] = _mm256_setzero_si256();
            for (int64_t p = 0; p < g->k; ++p) {
                const float *row = g->a + p * g->lda + r;
                for (int q = 0; q < nv; ++q) { /* a true compare is -1: subtract it */
                    const __m256 ne = _mm256_cmp_ps(_mm256_loadu_ps(row + 8 * q),
                                                    _mm256_setzero_ps(), _CMP_NEQ_UQ);
                    acc[q] = _mm256_sub_epi32(acc[q], _mm256_castps_si256(ne));
                }
            }
            int32_t counts[64];
            for (int q = 0; q < nv; ++q) _mm256_storeu_si256((__m256i *)(counts + 8 * q), acc[q]);
            for (int i = 0; i < width; ++i) total += L->end[r + i] = counts[i];
        }
    for (; r < r1; ++r) { /* the last few columns */
        int64_t n = 0;
        for (int64_t p = 0; p < g->k; ++p) n += !(g->a[p * g->lda + r] == 0.0f);
        total += L->end[r] = n;
    }
    return total;
}

/* How many non-zeros rows [r0, r1) of op(A) have; each row's count is left in
 * end[r] for list_rows. Only counting, with no store per entry, keeps a dense
 * op(A)'s decline cheap. */
static int64_t count_rows(const struct mg_gemm_args *g, int64_t r0, int64_t r1,
                          const struct lists *L)
{
    if (g->trans_a) return count_columns(g, r0, r1, L);
    int64_t n = 0;
    for (int64_t r = r0; r < r1; ++r) n += L->end[r] = count_row(g->a + r * g->lda, g->k);
    return n;
}

/* Lists rows [r0, r1) of op(A) into the entries from `base` on (exactly as
 * many as count_rows found). */
static void list_rows(const struct mg_gemm_args *g, int64_t r0, int64_t r1, int64_t base,
                      const struct lists *L)
{
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t cnt = L->end[r];
        L->beg[r] = base;
        L->end[r] = g->trans_a ? base : base + cnt; /* transposed A: the fill cursor */
        base += cnt;
    }
    if (!g->trans_a) {
        for (int64_t r = r0; r < r1; ++r)
            L->end[r] = list_row(g->a + r * g->lda, g->k, L->idx, L->val, L->beg[r], L->end[r]);
    } else { /* in increasing p, so every list comes out sorted */
        for (int64_t p = 0; p < g->k; ++p)
            scatter_row(g->a + p * g->lda + r0, r1 - r0, r0, (int32_t)p, L);
    }
}

/* Copies B[0:k, j0:j0+nc) into a contiguous k x GW panel (columns past nc
 * zeroed) and returns 1 if it holds an inf or NaN (x - x is NaN exactly then).
 * Read in place, B's rows (often 2 KiB apart) would fall into a few cache
 * sets and evict each other; the packed panel streams from L2 instead. */
__attribute__((target("avx2")))
static int pack_group(const struct mg_gemm_args *g, int64_t j0, int64_t nc, float *restrict dst)
{
    __m256 bad = _mm256_setzero_ps();
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int64_t p = 0; p < g->k; ++p, dst += GW) {
        const float *row = g->b + p * g->ldb + j0;
        for (int q = 0; q < GW; q += 8) {
            __m256 v;
            if (q + 8 <= nc) v = _mm256_loadu_ps(row + q);
            else if (q < nc) v = _mm256_maskload_ps(row + q, _mm256_cmpgt_epi32(
                                     _mm256_set1_epi32((int)(nc - q)), lane));
            else v = _mm256_setzero_ps();
            bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_sub_ps(v, v), v, _CMP_UNORD_Q));
            _mm256_store_ps(dst + q, v);
        }
    }
    return _mm256_movemask_ps(bad) != 0;
}

/* One row r of op(A) times panel rows [q0, q1) into C[r, j0:j0+nc) (nc <= GW).
 * The chain starts from 0 when `first`, else from the partial sums in tmp;
 * it ends in the epilogue to C when ep is given, else back in tmp (a round
 * trip through memory leaves the FMA chain unchanged). *cursor walks the
 * row's list. full_chain: every p, zeros included (non-finite B in the group). */
__attribute__((target("avx2,fma"), always_inline))
static inline void row_part(const struct mg_gemm_args *g, const struct lists *L,
                            const float *panel, int64_t r, int64_t j0, int64_t nc,
                            int64_t q0, int64_t q1, int first, const struct mg_epi8 *ep,
                            int64_t *cursor, float *tmp, int full_chain, int nv)
{
    const int whole = nc == GW; /* nv == 8 and no masks: the fast instance */
    __m256 acc[GW / 8];
    for (int q = 0; q < nv; ++q)
        acc[q] = first ? _mm256_setzero_ps() : _mm256_load_ps(tmp + 8 * q);
#define MG_TERM(pp, av)                                                               \
    do {                                                                              \
        const __m256 a_ = _mm256_set1_ps(av);                                         \
        const float *b_ = panel + (int64_t)(pp) * GW;                                 \
        for (int q = 0; q < nv; ++q)                                                  \
            acc[q] = _mm256_fmadd_ps(a_, _mm256_load_ps(b_ + 8 * q), acc[q]);         \
    } while (0)
    if (full_chain) {
        const float *a_row = g->trans_a ? g->a + r : g->a + r * g->lda;
        const int64_t a_step = g->trans_a ? g->lda : 1;
        for (int64_t p = q0; p < q1; ++p) MG_TERM(p, a_row[p * a_step]);
    } else {
        const int32_t *idx = L->idx;
        const float *val = L->val;
        int64_t t = *cursor;
        const int64_t t_end = L->end[r];
        for (; t < t_end && idx[t] < q1; ++t) MG_TERM(idx[t], val[t]);
        *cursor = t;
    }
#undef MG_TERM
    if (!ep) {
        for (int q = 0; q < nv; ++q) _mm256_store_ps(tmp + 8 * q, acc[q]);
        return;
    }
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    float *cr = g->c + r * g->ldc + j0;
    const float *bias = ep->last && g->bias ? g->bias + j0 : NULL;
    for (int q = 0; q < nv; ++q) {
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(nc - 8 * q)), lane);
        __m256 bv = _mm256_setzero_ps();
        if (bias) bv = whole ? _mm256_loadu_ps(bias + 8 * q) : _mm256_maskload_ps(bias + 8 * q, m);
        mg_epilogue8(cr + 8 * q, acc[q], m, whole, bias ? &bv : NULL, ep);
    }
}

/* Rows [r0, r1) (at most RB) times one packed column group, slice by slice;
 * each KC slice is cut into sub-slices of at most KS panel rows (32 KiB) so
 * the part of the panel in use stays in L1 while all the rows go through it. */
__attribute__((target("avx2,fma")))
static void row_block(const struct mg_gemm_args *g, const struct lists *L, int64_t kc,
                      const float *panel, int64_t r0, int64_t r1, int64_t j0, int64_t nc,
                      int full_chain, int64_t *cursor, float *tmp)
{
    for (int64_t r = r0; r < r1; ++r) cursor[r - r0] = L->beg[r];
    for (int64_t p0 = 0; p0 < g->k; p0 += kc) {
        const int64_t p_end = mg_min64(g->k, p0 + kc);
        const int64_t nsub = mg_ceil_div(p_end - p0, KS), sub = mg_ceil_div(p_end - p0, nsub);
        const struct mg_epi8 e = {
            .alpha = _mm256_set1_ps(g->alpha), .beta = _mm256_set1_ps(g->beta),
            .scale = g->alpha != 1.0f, .relu = g->relu, .last = p_end == g->k,
            .prev = mg_prev_for_slice(p0, g->beta),
        };
        for (int64_t q0 = p0; q0 < p_end; q0 += sub) {
            const int64_t q1 = mg_min64(p_end, q0 + sub);
            const struct mg_epi8 *ep = q1 == p_end ? &e : NULL;
            for (int64_t r = r0; r < r1; ++r) {
                float *t = tmp + (r - r0) * GW;
                int64_t *cur = cursor + (r - r0);
                if (nc == GW)
                    row_part(g, L, panel, r, j0, GW, q0, q1, q0 == p0, ep, cur, t, full_chain, GW / 8);
                else
                    row_part(g, L, panel, r, j0, nc, q0, q1, q0 == p0, ep, cur, t, full_chain,
                             (int)mg_ceil_div(nc, 8));
            }
        }
    }
}

int mg_gemm_sparse(const struct mg_gemm_args *g, int64_t kc)
{
    if (!atomic_load_explicit(&g_enabled, memory_order_relaxed)) return MG_GEMM_DECLINED;
    if (g->trans_b || g->n < SPARSE_MIN_N || g->k > INT32_MAX) return MG_GEMM_DECLINED;
    if (2.0 * (double)g->m * (double)g->n * (double)g->k < SPARSE_MIN_FLOPS)
        return MG_GEMM_DECLINED;
    if (g->m > SPARSE_MAX_ELEMS / g->k) return MG_GEMM_DECLINED;
    int nthreads = 1;
#ifdef _OPENMP
    nthreads = mg_team_threads();
#endif
    const int64_t m = g->m, k = g->k;
    const int64_t limit = (int64_t)(SPARSE_MAX_DENSITY * (double)(m * k));
    /* Per thread: a packed k x GW panel of B, RB x GW partial sums, RB list
     * cursors and its count of non-zeros (64-byte aligned parts); then
     * shared: beg and end (m int64 each), idx (int32) and val (float) for
     * the at most `limit` non-zeros that are ever listed. */
    const size_t per_thread = (size_t)k * GW + RB * GW + 2 * RB + 16;
    const size_t total = per_thread * (size_t)nthreads + (size_t)(4 * m) + (size_t)(2 * limit);
    float *ws = mg_gemm_ws_get(total);
    if (!ws) return MG_ENOMEM;
    struct lists L;
    L.beg = (int64_t *)(ws + per_thread * (size_t)nthreads);
    L.end = L.beg + m;
    L.idx = (int32_t *)(L.end + m);
    L.val = (float *)(L.idx + limit);
#define MG_PANEL(t) (ws + per_thread * (size_t)(t))
#define MG_TMP(t) (MG_PANEL(t) + k * GW)
#define MG_CURSOR(t) ((int64_t *)(MG_TMP(t) + RB * GW))
#define MG_COUNT(t) (MG_CURSOR(t) + RB)

    const int64_t ngroups = mg_ceil_div(g->n, GW);
    /* Items are (column group, block of rows), group-major so a thread keeps
     * its groups' B columns in cache; rows are split only when there are
     * fewer groups than threads. The item grid may depend on the thread
     * count: every C element is still computed whole by one thread. */
    const int64_t rblocks = ngroups >= nthreads ? 1 : mg_ceil_div(nthreads, ngroups);
    const int64_t rb_size = mg_ceil_div(m, rblocks);
    const int64_t nitems = ngroups * rblocks;
    int declined = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
#endif
    {
        int tid = 0, team = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        team = omp_get_num_threads();
#endif
        const int64_t r0 = m * tid / team, r1 = m * (tid + 1) / team;
        /* Phase 1: each thread counts the non-zeros of its share of rows. */
        *MG_COUNT(tid) = count_rows(g, r0, r1, &L);
#ifdef _OPENMP
#pragma omp barrier
#endif
        /* Every thread reaches the same verdict from the same counts. */
        int64_t nnz = 0, base = 0;
        for (int t = 0; t < team; ++t) {
            if (t == tid) base = nnz;
            nnz += *MG_COUNT(t);
        }
        if (nnz > limit) {
            if (tid == 0) declined = 1;
        } else {
            /* Phase 2: the lists, each thread's after those of lower threads. */
            list_rows(g, r0, r1, base, &L);
#ifdef _OPENMP
#pragma omp barrier
#endif
            /* Phase 3: the products, group by group. */
            MG_FTZ_BEGIN;
            float *panel = MG_PANEL(tid);
            int64_t packed = -1;
            int full_chain = 0;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (int64_t it = 0; it < nitems; ++it) {
                const int64_t grp = it / rblocks, rb = it % rblocks;
                const int64_t j0 = grp * GW, nc = mg_min64(GW, g->n - j0);
                if (grp != packed) { full_chain = pack_group(g, j0, nc, panel); packed = grp; }
                const int64_t r_end = mg_min64(m, (rb + 1) * rb_size);
                for (int64_t rr = rb * rb_size; rr < r_end; rr += RB)
                    row_block(g, &L, kc, panel, rr, mg_min64(r_end, rr + RB), j0, nc, full_chain,
                              MG_CURSOR(tid), MG_TMP(tid));
            }
            MG_FTZ_END;
        }
    }
#undef MG_PANEL
#undef MG_TMP
#undef MG_CURSOR
#undef MG_COUNT
    if (declined) return MG_GEMM_DECLINED;
    atomic_fetch_add(&g_calls, 1);
    return MG_OK;
}
#endif
