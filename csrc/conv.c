/* 2-D convolution (NHWC, kernel kh x kw x cin x cout) as GEMM.
 *
 * Forward: im2col unfolds x into cols, one row per output pixel (b, oy, ox) and
 * one column per kernel tap (ky, kx, ci), in that order, which is exactly the
 * row order of the kernel array (kh, kw, cin, cout) seen as (kh*kw*cin, cout);
 * then y = cols @ W through mg_gemm, whose epilogue adds the bias and applies
 * relu while each tile is still in registers.
 *
 * Input gradient: dcols = dY @ W^T (mg_gemm), then col2im folds dcols back onto
 * x's shape as a gather: each input element sums the taps that read it, in
 * increasing (ky, kx) order. A scatter (each tap adding itself into dx) would
 * need atomics or a reduction whose order follows the thread split; the gather
 * gives every dx element one fixed sum whatever the number of threads.
 *
 * Weight gradient: cols^T @ dY, with cols unfolded again from x (see
 * wgrad_block). All three run on blocks of a few whole images (BLOCK_ROWS),
 * so that the unfolded rows and dcols are made and used while in L2 and are
 * never written out: the only arrays are x, W, the outputs and the gradients.
 *
 * Padding is implicit: taps outside [0, h) x [0, w) read zeros in im2col and
 * are skipped in col2im. Any pad/output size is memory-safe (every read of x
 * is bounds-checked); the wrapper computes them from 'valid'/'same'.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "minigrad.h"
#include "internal.h"
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define MG_HAVE_PTHREAD 1
#endif

struct geom {
    int64_t n, h, w, c, kh, kw, sh, sw, pt, pl, oh, ow;
};

/* Sizes that are non-negative and whose buffers can be indexed with int64_t. */
static int geom_ok(const struct geom *g)
{
    if (g->n < 0 || g->h < 0 || g->w < 0 || g->c < 0 || g->oh < 0 || g->ow < 0)
        return 0;
    if (g->kh < 1 || g->kw < 1 || g->sh < 1 || g->sw < 1 || g->pt < 0 || g->pl < 0)
        return 0;
    /* every product formed below stays under 2^62 */
    const double lim = 4.6e18;
    double rows = (double)g->n * (double)g->oh * (double)g->ow;
    double taps = (double)g->kh * (double)g->kw * (double)g->c;
    double in = (double)g->n * (double)g->h * (double)g->w * (double)g->c;
    if (rows * (taps > 1 ? taps : 1) > lim || in > lim)
        return 0;
    if ((double)g->oh * (double)g->sh + (double)g->kh + (double)g->h > lim
        || (double)g->ow * (double)g->sw + (double)g->kw + (double)g->w > lim)
        return 0;
    return 1;
}

/* Work is done in blocks of whole images of about BLOCK_ROWS output pixels:
 * a block's unfolded rows (forward) or its dcols (backward) are produced and
 * consumed while they are still in L2 (measured at conv2 of the book's model:
 * 0.55x the time of one whole-batch GEMM plus unfold; 128 to 1024 rows are
 * alike), and blocks are the unit of parallel work, each running its GEMM on
 * one thread. The grid depends on the shape only, and every block computes
 * the same bits whichever thread runs it (mg_gemm is thread-invariant), so
 * results do not depend on the team size nor on which thread takes which
 * block: blocks are handed out dynamically, so that a thread the OS
 * deschedules (a shared machine) does not hold the others at a barrier. */
#define BLOCK_ROWS 256

static inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* ------------------------------------------------------------------ scratch
 * Work buffers that only grow, one set per thread (like the GEMM's packing
 * workspace), so steady-state calls allocate nothing. Slots SCRATCH_BLOCK and
 * SCRATCH_MASK are a thread's own: a block's unfolded rows or dcols, and its
 * relu-masked gradient. Slots SCRATCH_SHARED and SCRATCH_WT are what the
 * calling thread prepares for (or collects from) its whole team: the blocks'
 * partials, and W^T.
 * Freed by a key destructor when their thread exits. */
enum { SCRATCH_BLOCK, SCRATCH_MASK, SCRATCH_SHARED, SCRATCH_WT, SCRATCH_SLOTS };
struct scratch { void *raw[SCRATCH_SLOTS]; float *p[SCRATCH_SLOTS]; size_t cap[SCRATCH_SLOTS]; };
static _Thread_local struct scratch tls_scratch;

#ifdef MG_HAVE_PTHREAD
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok;
static void scratch_free(void *sp)
{
    struct scratch *s = sp;
    for (int i = 0; i < SCRATCH_SLOTS; i++) free(s->raw[i]);
}
static void scratch_key_init(void) { scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0; }
#endif

static float *scratch_get(int slot, size_t nfloats)
{
    struct scratch *s = &tls_scratch;
    if (nfloats > (SIZE_MAX - 128) / sizeof(float)) return NULL;
    size_t bytes = (nfloats * sizeof(float) + 63) & ~(size_t)63;
    if (s->p[slot] && s->cap[slot] >= bytes) return s->p[slot];
    void *raw = malloc(bytes + 64);
    if (!raw) return NULL;
    free(s->raw[slot]);
    s->raw[slot] = raw;
    s->p[slot] = (float *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    s->cap[slot] = bytes;
#ifdef MG_HAVE_PTHREAD
    pthread_once(&scratch_once, scratch_key_init);
    if (scratch_key_ok) pthread_setspecific(scratch_key, s);
#endif
    return s->p[slot];
}

/* dst (cols x rows) = src (rows x cols)^T, in tiles of 16 x 16. */
static void transpose(const float *src, int64_t rows, int64_t cols, float *dst)
{
    for (int64_t i0 = 0; i0 < rows; i0 += 16)
        for (int64_t j0 = 0; j0 < cols; j0 += 16)
            for (int64_t i = i0; i < mg_min64(rows, i0 + 16); i++)
                for (int64_t j = j0; j < mg_min64(cols, j0 + 16); j++)
                    dst[j * rows + i] = src[i * cols + j];
}

/* ------------------------------------------------------------------ im2col */

/* Copies n floats; a loop rather than memcpy because most runs are short
 * (c floats, 1 for MNIST) and a call per run would cost more than the copy. */
static inline void copy_run(float *restrict dst, const float *restrict src, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = src[i];
}

static inline void zero_run(float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = 0.0f;
}

/* The unfolded rows of one kernel row (ky) for outputs [ox0, ox1) whose
 * window lies wholly inside x's columns: RUN = kw*c floats each, copied with
 * a compile-time length (a first layer's runs are 3 floats: a loop or memcpy
 * per run costs more than the copy). */
#define MG_INTERIOR(RUN)                                                             \
    for (int64_t ox = ox0; ox < ox1; ox++) {                                          \
        const float *s = xrow + (ox * g->sw - g->pl) * c;                             \
        float *d = dst0 + ox * taps;                                                  \
        for (int64_t i = 0; i < (RUN); i++) d[i] = s[i];                              \
    }

static void interior_runs(const struct geom *g, const float *xrow, float *dst0, int64_t taps,
                          int64_t ox0, int64_t ox1)
{
    const int64_t c = g->c;
    switch (g->kw * c) {
    case 1: MG_INTERIOR(1) break;
    case 2: MG_INTERIOR(2) break;
    case 3: MG_INTERIOR(3) break;
    case 4: MG_INTERIOR(4) break;
    case 5: MG_INTERIOR(5) break;
    case 6: MG_INTERIOR(6) break;
    case 7: MG_INTERIOR(7) break;
    case 8: MG_INTERIOR(8) break;
    case 9: MG_INTERIOR(9) break;
    default: {
        const int64_t run = g->kw * c;
        MG_INTERIOR(run)
    }
    }
}
#undef MG_INTERIOR

/* One kernel row's taps (kw*c floats at d) of output column ox, reading row
 * xrow of x; the columns outside x are zeros. */
static inline void edge_run(const struct geom *g, const float *xrow, float *d, int64_t ox)
{
    const int64_t c = g->c, kw = g->kw, ix0 = ox * g->sw - g->pl;
    /* the taps of one kernel row that fall inside x are contiguous */
    const int64_t kx0 = clamp64(-ix0, 0, kw);
    const int64_t kx1 = clamp64(g->w - ix0, kx0, kw);
    zero_run(d, kx0 * c);
    copy_run(d + kx0 * c, xrow + (ix0 + kx0) * c, (kx1 - kx0) * c);
    zero_run(d + kx1 * c, (kw - kx1) * c);
}

/* Output rows (b, oy) in [r0, r1), unfolded into cols, which points at row r0. */
static void im2col_rows(const struct geom *g, const float *x, float *cols, int64_t r0, int64_t r1)
{
    const int64_t c = g->c, kw = g->kw, ow = g->ow, run = kw * c;
    const int64_t taps = g->kh * run;
    /* outputs [in0, in1) have their whole window inside x's columns */
    int64_t in1 = g->w + g->pl >= kw ? (g->w + g->pl - kw) / g->sw + 1 : 0;
    if (in1 > ow) in1 = ow;
    const int64_t in0 = mg_min64(mg_ceil_div(g->pl, g->sw), in1);
    for (int64_t r = r0; r < r1; r++) {
        const int64_t b = r / g->oh, oy = r % g->oh;
        const float *xb = x + b * g->h * g->w * c;
        float *dst = cols + (r - r0) * ow * taps;
        for (int64_t ky = 0; ky < g->kh; ky++) {
            const int64_t iy = oy * g->sh - g->pt + ky;
            float *d0 = dst + ky * run;
            if (iy < 0 || iy >= g->h) {
                for (int64_t ox = 0; ox < ow; ox++) zero_run(d0 + ox * taps, run);
                continue;
            }
            const float *xrow = xb + iy * g->w * c;
            for (int64_t ox = 0; ox < in0; ox++) edge_run(g, xrow, d0 + ox * taps, ox);
            interior_runs(g, xrow, d0, taps, in0, in1);
            for (int64_t ox = in1; ox < ow; ox++) edge_run(g, xrow, d0 + ox * taps, ox);
        }
    }
}

/* ------------------------------------------------------------------ col2im */

/* dx[b, iy, ix, :] = sum over the taps (ky, kx) that read (iy, ix), in
 * increasing ky then kx, of dcols[(b, oy, ox), (ky, kx, :)]. Tap (ky, kx) of
 * output (oy, ox) reads iy = oy*sh - pt + ky: for a given iy the taps are
 * ky = (iy + pt) mod sh, then every sh-th, while oy = (iy + pt - ky)/sh >= 0,
 * and those with oy < oh count. dcols points at the rows of image b0. */
MG_CLONES
static void col2im_row(const struct geom *g, const float *dcols, int64_t b0, float *dxrow,
                       int64_t b, int64_t iy)
{
    const int64_t c = g->c, kw = g->kw, taps = g->kh * kw * c;
    const int64_t ty = iy + g->pt;
    const float *img = dcols + (b - b0) * g->oh * g->ow * taps;
    for (int64_t ix = 0; ix < g->w; ix++) {
        float *acc = dxrow + ix * c;
        for (int64_t ci = 0; ci < c; ci++)
            acc[ci] = 0.0f;
        const int64_t tx = ix + g->pl, kx_first = tx % g->sw;
        for (int64_t ky = ty % g->sh, oy = ty / g->sh; ky < g->kh && oy >= 0; ky += g->sh, oy--) {
            if (oy >= g->oh) continue;
            for (int64_t kx = kx_first, ox = tx / g->sw; kx < kw && ox >= 0; kx += g->sw, ox--) {
                if (ox >= g->ow) continue;
                const float *src = img + (oy * g->ow + ox) * taps + (ky * kw + kx) * c;
                for (int64_t ci = 0; ci < c; ci++)
                    acc[ci] += src[ci];
            }
        }
    }
}

/* ------------------------------------------------------------------ small k
 * A first layer on single-channel images has k = kh*kw*cin = 9: a packed GEMM
 * then spends its time packing and in per-tile overhead (measured: about 4x
 * slower than the output writes that bound this product). Here each row of y
 * is computed straight from a row of cols and the kernel matrix, which stays
 * in L1. Every y element is the dense GEMM's sequence of operations (an FMA
 * chain over p from 0, then + bias, then max(0, v)), so the results are those
 * of mg_gemm's dense AVX2 kernel (its n <= 10 kernels may round differently). */
#define SMALL_K_MAX 16

#ifdef MG_X86_AVX2
/* Columns [j0, j0 + 8*G) of every row; G is a constant in each instance so the
 * 2*G accumulators live in registers. */
__attribute__((target("avx2,fma"), always_inline))
static inline void small_k_cols(const float *a, int64_t m, int64_t k, const float *wt, int64_t cout,
                                const float *bias, int relu, float *y, int64_t j0, const int G)
{
    const __m256 zero = _mm256_setzero_ps();
    __m256 bv[4];
    for (int q = 0; q < G; q++)
        bv[q] = bias ? _mm256_loadu_ps(bias + j0 + 8 * q) : zero;
    int64_t i = 0;
    for (; i + 2 <= m; i += 2) { /* two rows: 2*G independent FMA chains */
        const float *a0 = a + i * k, *a1 = a0 + k;
        __m256 s0[4], s1[4];
        for (int q = 0; q < G; q++) s0[q] = s1[q] = zero;
        for (int64_t p = 0; p < k; p++) {
            const __m256 x0 = _mm256_broadcast_ss(a0 + p), x1 = _mm256_broadcast_ss(a1 + p);
            const float *wr = wt + p * cout + j0;
            for (int q = 0; q < G; q++) {
                const __m256 wv = _mm256_loadu_ps(wr + 8 * q);
                s0[q] = _mm256_fmadd_ps(x0, wv, s0[q]);
                s1[q] = _mm256_fmadd_ps(x1, wv, s1[q]);
            }
        }
        for (int q = 0; q < G; q++) {
            __m256 v0 = s0[q], v1 = s1[q];
            if (bias) { v0 = _mm256_add_ps(v0, bv[q]); v1 = _mm256_add_ps(v1, bv[q]); }
            if (relu) { v0 = _mm256_max_ps(zero, v0); v1 = _mm256_max_ps(zero, v1); }
            _mm256_storeu_ps(y + i * cout + j0 + 8 * q, v0);
            _mm256_storeu_ps(y + (i + 1) * cout + j0 + 8 * q, v1);
        }
    }
    for (; i < m; i++) {
        const float *a0 = a + i * k;
        __m256 s0[4];
        for (int q = 0; q < G; q++) s0[q] = zero;
        for (int64_t p = 0; p < k; p++) {
            const __m256 x0 = _mm256_broadcast_ss(a0 + p);
            for (int q = 0; q < G; q++)
                s0[q] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(wt + p * cout + j0 + 8 * q), s0[q]);
        }
        for (int q = 0; q < G; q++) {
            __m256 v0 = s0[q];
            if (bias) v0 = _mm256_add_ps(v0, bv[q]);
            if (relu) v0 = _mm256_max_ps(zero, v0);
            _mm256_storeu_ps(y + i * cout + j0 + 8 * q, v0);
        }
    }
}

/* y (m x cout) = [relu](a (m x k) @ wt (k x cout) + bias), cout a multiple of 8. */
__attribute__((target("avx2,fma")))
static void small_k_rows(const float *a, int64_t m, int64_t k, const float *wt, int64_t cout,
                         const float *bias, int relu, float *y)
{
    int64_t j0 = 0;
    for (; j0 + 32 <= cout; j0 += 32)
        small_k_cols(a, m, k, wt, cout, bias, relu, y, j0, 4);
    switch ((cout - j0) / 8) {
    case 3: small_k_cols(a, m, k, wt, cout, bias, relu, y, j0, 3); break;
    case 2: small_k_cols(a, m, k, wt, cout, bias, relu, y, j0, 2); break;
    case 1: small_k_cols(a, m, k, wt, cout, bias, relu, y, j0, 1); break;
    default: break;
    }
}
#endif

#ifdef MG_X86_AVX2
/* part (k x cout) = a[r0:r1]^T @ dy[r0:r1] for a small k: for each pair of taps
 * and group of 32 columns, one pass over the rows with 8 accumulators, each an
 * FMA chain over the rows in increasing order. */
__attribute__((target("avx2,fma")))
static void small_k_wgrad(const float *a, const float *dy, int64_t r0, int64_t r1, int64_t k,
                          int64_t cout, float *part)
{
    for (int64_t j0 = 0; j0 < cout; j0 += 32) {
        const int G = (int)mg_min64(4, (cout - j0) / 8);
        for (int64_t p0 = 0; p0 < k; p0 += 2) {
            const int P = (int)mg_min64(2, k - p0);
            __m256 acc[2][4];
            for (int pp = 0; pp < 2; pp++)
                for (int q = 0; q < 4; q++) acc[pp][q] = _mm256_setzero_ps();
            if (G == 4 && P == 2) { /* the common case, with every bound constant */
                for (int64_t i = r0; i < r1; i++) {
                    const float *d = dy + i * cout + j0;
                    const __m256 x0 = _mm256_broadcast_ss(a + i * k + p0);
                    const __m256 x1 = _mm256_broadcast_ss(a + i * k + p0 + 1);
                    for (int q = 0; q < 4; q++) {
                        const __m256 dv = _mm256_loadu_ps(d + 8 * q);
                        acc[0][q] = _mm256_fmadd_ps(x0, dv, acc[0][q]);
                        acc[1][q] = _mm256_fmadd_ps(x1, dv, acc[1][q]);
                    }
                }
            } else {
                for (int64_t i = r0; i < r1; i++) {
                    const float *d = dy + i * cout + j0;
                    for (int pp = 0; pp < P; pp++) {
                        const __m256 x = _mm256_broadcast_ss(a + i * k + p0 + pp);
                        for (int q = 0; q < G; q++)
                            acc[pp][q] = _mm256_fmadd_ps(x, _mm256_loadu_ps(d + 8 * q), acc[pp][q]);
                    }
                }
            }
            for (int pp = 0; pp < P; pp++)
                for (int q = 0; q < G; q++)
                    _mm256_storeu_ps(part + (p0 + pp) * cout + j0 + 8 * q, acc[pp][q]);
        }
    }
}
#endif

/* The small-k path applies: AVX2 GEMM kernel in use (so the bits match it),
 * k small, and whole 8-float groups of output columns. */
static int small_k_applies(int64_t k, int64_t cout)
{
#ifdef MG_X86_AVX2
    return k <= SMALL_K_MAX && cout % 8 == 0 && mg_gemm_kernel_name()[0] == 'a'; /* "avx2-fma" */
#else
    (void)k; (void)cout;
    return 0;
#endif
}

/* ------------------------------------------------------------------ drivers */

struct blocks { int64_t per, count, threads; };

/* Images per block, the number of blocks, and the threads to run them on. */
static struct blocks plan_blocks(const struct geom *g, int64_t cout)
{
    struct blocks B;
    const int64_t pix = g->oh * g->ow;
    B.per = pix >= BLOCK_ROWS ? 1 : BLOCK_ROWS / (pix > 0 ? pix : 1);
    B.count = g->n > 0 ? mg_ceil_div(g->n, B.per) : 0;
    const double flops = 2.0 * (double)g->n * (double)pix * (double)(g->kh * g->kw * g->c) * (double)cout;
    B.threads = flops >= MG_GEMM_PAR_MIN_FLOPS ? mg_team_threads() : 1;
    if (B.threads > B.count) B.threads = B.count > 0 ? (int)B.count : 1;
    return B;
}

/* Forward of images [b0, b0 + nb): unfold them into this thread's scratch,
 * then y = cols @ W + bias [relu]. */
static int forward_block(const struct geom *g, const float *x, const float *wt, const float *bias,
                         float *y, int64_t cout, int relu, int64_t b0, int64_t nb)
{
    const int64_t pix = g->oh * g->ow, k = g->kh * g->kw * g->c;
    float *a = scratch_get(SCRATCH_BLOCK, (size_t)(nb * pix) * (size_t)k);
    if (!a) return MG_ENOMEM;
    im2col_rows(g, x, a, b0 * g->oh, (b0 + nb) * g->oh);
#ifdef MG_X86_AVX2
    if (small_k_applies(k, cout)) {
        MG_FTZ_BEGIN;
        small_k_rows(a, nb * pix, k, wt, cout, bias, relu, y + b0 * pix * cout);
        MG_FTZ_END;
        return MG_OK;
    }
#endif
    return mg_gemm(0, 0, nb * pix, cout, k, 1.0f, a, k, wt, cout,
                   0.0f, y + b0 * pix * cout, cout, bias, relu);
}

/* Input gradient of images [b0, b0 + nb): their dcols = dY @ W^T into this
 * thread's scratch, then folded onto dx. w_t is W^T (cout x k), stored so:
 * with op(B) not transposed, mg_gemm may skip the zeros of dY (a relu's
 * gradient below a max pooling is mostly exact zeros); same bits either way. */
static int backward_block(const struct geom *g, const float *dy, const float *w_t, float *dx,
                          int64_t cout, int64_t b0, int64_t nb)
{
    const int64_t pix = g->oh * g->ow, k = g->kh * g->kw * g->c;
    float *dcols = scratch_get(SCRATCH_BLOCK, (size_t)(nb * pix) * (size_t)k);
    if (!dcols) return MG_ENOMEM;
    int status = mg_gemm(0, 0, nb * pix, k, cout, 1.0f, dy + b0 * pix * cout, cout, w_t, k,
                         0.0f, dcols, k, NULL, 0);
    if (status != MG_OK) return status;
    MG_FTZ_BEGIN;
    for (int64_t r = b0 * g->h; r < (b0 + nb) * g->h; r++)
        col2im_row(g, dcols, b0, dx + r * g->w * g->c, r / g->h, r % g->h);
    MG_FTZ_END;
    return MG_OK;
}

/* dz = dy where y > 0 else 0 for n rows of cout, and colsum[j] = the sum of
 * column j of dz, rows in increasing order. */
MG_CLONES
static void relu_mask_rows(const float *restrict y, const float *restrict dy, float *restrict dz,
                           float *restrict colsum, int64_t n, int64_t cout)
{
    for (int64_t j = 0; j < cout; j++) colsum[j] = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        const float *yr = y + i * cout, *gr = dy + i * cout;
        float *zr = dz + i * cout;
        for (int64_t j = 0; j < cout; j++) {
            const float g = gr[j]; /* loaded unconditionally so the select vectorises */
            const float z = yr[j] > 0.0f ? g : 0.0f;
            zr[j] = z;
            colsum[j] += z;
        }
    }
}

/* Backward of images [b0, b0 + nb). Their rows of cols are unfolded again from
 * x (cheaper than keeping them from the forward: cols is kh*kw times the size
 * of x, and would be written out and read back). dZ is dY, or with y given dY
 * masked by y > 0 (a relu layer; its column sums go to part's bias entries),
 * made here and never written out. part receives the block's dW: for a small
 * k as dW (k x cout, small_k_wgrad), otherwise as dW^T (cout x k) = dZ^T @
 * cols, with dZ as op(A) so that mg_gemm may skip its zeros (a relu's
 * gradient below a max pooling is mostly zeros). With w_t (W^T) given, the
 * block's input gradient too: dcols = dZ @ W^T into the unfolding's buffer,
 * then folded onto dx, while dZ is still in L2. */
static int backward_params_block(const struct geom *g, const float *x, const float *y,
                                 const float *dy, const float *w_t, float *dx, float *part,
                                 int64_t cout, int small, int64_t b0, int64_t nb)
{
    const int64_t pix = g->oh * g->ow, k = g->kh * g->kw * g->c, rows = nb * pix;
    float *a = scratch_get(SCRATCH_BLOCK, (size_t)rows * (size_t)k);
    if (!a) return MG_ENOMEM;
    im2col_rows(g, x, a, b0 * g->oh, (b0 + nb) * g->oh);
    const float *dz = dy + b0 * pix * cout;
    if (y) {
        float *z = scratch_get(SCRATCH_MASK, (size_t)rows * (size_t)cout);
        if (!z) return MG_ENOMEM;
        MG_FTZ_BEGIN;
        relu_mask_rows(y + b0 * pix * cout, dz, z, part + k * cout, rows, cout);
        MG_FTZ_END;
        dz = z;
    }
    int status = MG_OK;
#ifdef MG_X86_AVX2
    if (small) {
        MG_FTZ_BEGIN;
        small_k_wgrad(a, dz, 0, rows, k, cout, part);
        MG_FTZ_END;
    } else
#else
    (void)small;
#endif
    status = mg_gemm(1, 0, cout, k, rows, 1.0f, dz, cout, a, k, 0.0f, part, k, NULL, 0);
    if (status != MG_OK || !w_t) return status;
    status = mg_gemm(0, 0, rows, k, cout, 1.0f, dz, cout, w_t, k, 0.0f, a, k, NULL, 0);
    if (status != MG_OK) return status;
    MG_FTZ_BEGIN;
    for (int64_t r = b0 * g->h; r < (b0 + nb) * g->h; r++)
        col2im_row(g, a, b0, dx + r * g->w * g->c, r / g->h, r % g->h);
    MG_FTZ_END;
    return MG_OK;
}

/* dW (and db when y is given, dx when wt is given) of a whole batch: one
 * partial per block of images (the grid of plan_blocks, fixed by the shape),
 * made in parallel, then each element's partials added in block order: the
 * same bits at any thread count. (A single GEMM over all rows could not be
 * split between threads when k x cout is a handful of tiles, as in a first
 * layer.) Each dx element comes from one block alone. */
static int backward_params(const struct geom *g, const float *x, const float *y, const float *dy,
                           const float *wt, float *dx, float *dw, float *db, int64_t cout)
{
    const int64_t k = g->kh * g->kw * g->c, kc = k * cout;
    const int64_t part = kc + (y ? cout : 0);
    const struct blocks B = plan_blocks(g, cout);
    if (B.count == 0) {
        for (int64_t e = 0; e < kc; e++) dw[e] = 0.0f;
        for (int64_t j = 0; db && j < cout; j++) db[j] = 0.0f;
        return MG_OK;
    }
    float *parts = scratch_get(SCRATCH_SHARED, (size_t)B.count * (size_t)part);
    if (!parts) return MG_ENOMEM;
    float *w_t = NULL;
    if (wt) {
        w_t = scratch_get(SCRATCH_WT, (size_t)kc);
        if (!w_t) return MG_ENOMEM;
        transpose(wt, k, cout, w_t);
    }
    const int small = small_k_applies(k, cout);
    int status = MG_OK;
    MG_OMP(omp parallel num_threads(B.threads))
    {
        MG_OMP(omp for schedule(dynamic, 1))
        for (int64_t blk = 0; blk < B.count; blk++) {
            const int64_t b0 = blk * B.per;
            const int st = backward_params_block(g, x, y, dy, w_t, dx, parts + blk * part, cout, small,
                                                 b0, mg_min64(B.per, g->n - b0));
            if (st != MG_OK) {
                MG_OMP(omp atomic write)
                status = st;
            }
        }
        MG_FTZ_BEGIN;
        MG_OMP(omp for schedule(dynamic, 64))
        for (int64_t e = 0; e < part; e++) {
            float sum = parts[e];
            for (int64_t blk = 1; blk < B.count; blk++)
                sum += parts[blk * part + e];
            if (e >= kc) db[e - kc] = sum;
            else if (small) dw[e] = sum;
            else dw[(e % k) * cout + e / k] = sum; /* partials hold dW^T */
        }
        MG_FTZ_END;
    }
    return status;
}

#define GEOM_ARGS int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw, \
    int64_t sh, int64_t sw, int64_t pad_top, int64_t pad_left, int64_t oh, int64_t ow
#define GEOM_INIT {n, h, w, c, kh, kw, sh, sw, pad_top, pad_left, oh, ow}

/* Sizes check shared by the conv entry points: also m * cout and the kernel fit int64_t. */
static int conv_ok(const struct geom *g, int64_t cout)
{
    if (!geom_ok(g) || cout < 1 || g->kh * g->kw * g->c < 1) return 0;
    return (double)g->n * (double)g->oh * (double)g->ow * (double)cout <= 4.6e18
           && (double)g->kh * (double)g->kw * (double)g->c * (double)cout <= 4.6e18;
}

int mg_conv2d_forward(const float *x, const float *wt, const float *bias, float *y,
                      int64_t cout, int relu, GEOM_ARGS)
{
    const struct geom g = GEOM_INIT;
    if (!conv_ok(&g, cout)) return MG_EINVAL;
    const struct blocks B = plan_blocks(&g, cout);
    if (B.count <= 1) /* one block: its GEMM may use the whole team */
        return n > 0 ? forward_block(&g, x, wt, bias, y, cout, relu, 0, n) : MG_OK;
    int status = MG_OK;
    MG_OMP(omp parallel for schedule(dynamic, 1) num_threads(B.threads))
    for (int64_t blk = 0; blk < B.count; blk++) {
        const int64_t b0 = blk * B.per;
        const int st = forward_block(&g, x, wt, bias, y, cout, relu, b0, mg_min64(B.per, n - b0));
        if (st != MG_OK) {
            MG_OMP(omp atomic write)
            status = st;
        }
    }
    return status;
}

int mg_conv2d_backward_weight(const float *x, const float *dy, float *dw, int64_t cout, GEOM_ARGS)
{
    const struct geom g = GEOM_INIT;
    if (!conv_ok(&g, cout)) return MG_EINVAL;
    return backward_params(&g, x, NULL, dy, NULL, NULL, dw, NULL, cout);
}

int mg_conv2d_relu_backward_params(const float *x, const float *y, const float *dy, float *dw, float *db,
                                   int64_t cout, GEOM_ARGS)
{
    const struct geom g = GEOM_INIT;
    if (!conv_ok(&g, cout)) return MG_EINVAL;
    return backward_params(&g, x, y, dy, NULL, NULL, dw, db, cout);
}

int mg_conv2d_relu_backward(const float *x, const float *y, const float *dy, const float *wt,
                            float *dx, float *dw, float *db, int64_t cout, GEOM_ARGS)
{
    const struct geom g = GEOM_INIT;
    if (!conv_ok(&g, cout)) return MG_EINVAL;
    return backward_params(&g, x, y, dy, wt, dx, dw, db, cout);
}

int mg_conv2d_backward_input(const float *dy, const float *wt, float *dx, int64_t cout, GEOM_ARGS)
{
    const struct geom g = GEOM_INIT;
    if (!conv_ok(&g, cout)) return MG_EINVAL;
    const struct blocks B = plan_blocks(&g, cout);
    if (n == 0) return MG_OK;
    const int64_t k = kh * kw * c;
    float *w_t = scratch_get(SCRATCH_WT, (size_t)(k * cout));
    if (!w_t) return MG_ENOMEM;
    transpose(wt, k, cout, w_t);
    if (B.count <= 1)
        return backward_block(&g, dy, w_t, dx, cout, 0, n);
    int status = MG_OK;
    MG_OMP(omp parallel for schedule(dynamic, 1) num_threads(B.threads))
    for (int64_t blk = 0; blk < B.count; blk++) {
        const int64_t b0 = blk * B.per;
        const int st = backward_block(&g, dy, w_t, dx, cout, b0, mg_min64(B.per, n - b0));
        if (st != MG_OK) {
            MG_OMP(omp atomic write)
            status = st;
        }
    }
    return status;
}
