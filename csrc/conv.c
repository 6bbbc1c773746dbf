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
 * Padding is implicit: taps outside [0, h) x [0, w) read zeros in im2col and
 * are skipped in col2im. Any pad/output size is memory-safe (every read of x
 * is bounds-checked); the wrapper computes them from 'valid'/'same'.
 */
#include <string.h>
#include "minigrad.h"
#include "internal.h"

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

static inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static void im2col(const struct geom *g, const float *x, float *cols)
{
    const int64_t c = g->c, kw = g->kw, ow = g->ow;
    const int64_t taps = g->kh * kw * c;
    const int64_t nrows = g->n * g->oh; /* one (b, oy) output row per iteration */
    MG_OMP(omp parallel for schedule(static) num_threads(MG_THREADS(nrows * ow * taps)))
    for (int64_t r = 0; r < nrows; r++) {
        const int64_t b = r / g->oh, oy = r % g->oh;
        const float *xb = x + b * g->h * g->w * c;
        float *dst = cols + r * ow * taps;
        for (int64_t ox = 0; ox < ow; ox++) {
            const int64_t ix0 = ox * g->sw - g->pl;
            for (int64_t ky = 0; ky < g->kh; ky++) {
                const int64_t iy = oy * g->sh - g->pt + ky;
                if (iy < 0 || iy >= g->h) {
                    memset(dst, 0, (size_t)(kw * c) * sizeof(float));
                    dst += kw * c;
                    continue;
                }
                const float *xrow = xb + iy * g->w * c;
                /* the taps of one kernel row that fall inside x are contiguous */
                const int64_t kx0 = clamp64(-ix0, 0, kw);
                const int64_t kx1 = clamp64(g->w - ix0, kx0, kw);
                if (kx0) memset(dst, 0, (size_t)(kx0 * c) * sizeof(float));
                if (kx1 > kx0)
                    memcpy(dst + kx0 * c, xrow + (ix0 + kx0) * c, (size_t)((kx1 - kx0) * c) * sizeof(float));
                if (kx1 < kw) memset(dst + kx1 * c, 0, (size_t)((kw - kx1) * c) * sizeof(float));
                dst += kw * c;
            }
        }
    }
}

/* dx[b, iy, ix, :] = sum over the taps (ky, kx) that read (iy, ix), in
 * increasing ky then kx, of dcols[(b, oy, ox), (ky, kx, :)]. Tap (ky, kx) of
 * output (oy, ox) reads iy = oy*sh - pt + ky, so for a given iy the valid ky
 * are those with (iy + pt - ky) divisible by sh and the quotient in [0, oh). */
MG_CLONES
static void col2im_row(const struct geom *g, const float *dcols, float *dxrow, int64_t b, int64_t iy)
{
    const int64_t c = g->c, kw = g->kw, taps = g->kh * kw * c;
    for (int64_t ix = 0; ix < g->w; ix++) {
        float *acc = dxrow + ix * c;
        for (int64_t ci = 0; ci < c; ci++)
            acc[ci] = 0.0f;
        for (int64_t ky = 0; ky < g->kh; ky++) {
            const int64_t ty = iy + g->pt - ky;
            if (ty < 0 || ty % g->sh) continue;
            const int64_t oy = ty / g->sh;
            if (oy >= g->oh) continue;
            for (int64_t kx = 0; kx < kw; kx++) {
                const int64_t tx = ix + g->pl - kx;
                if (tx < 0 || tx % g->sw) continue;
                const int64_t ox = tx / g->sw;
                if (ox >= g->ow) continue;
                const float *src = dcols + ((b * g->oh + oy) * g->ow + ox) * taps + (ky * kw + kx) * c;
                for (int64_t ci = 0; ci < c; ci++)
                    acc[ci] += src[ci];
            }
        }
    }
}

static void col2im(const struct geom *g, const float *dcols, float *dx)
{
    const int64_t nrows = g->n * g->h;
    const int64_t work = g->n * g->oh * g->ow * g->kh * g->kw * g->c;
    MG_OMP(omp parallel num_threads(MG_THREADS(work)))
    {
        MG_FTZ_BEGIN;
        MG_OMP(omp for schedule(static))
        for (int64_t r = 0; r < nrows; r++)
            col2im_row(g, dcols, dx + r * g->w * g->c, r / g->h, r % g->h);
        MG_FTZ_END;
    }
}

#define GEOM_ARGS int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw, \
    int64_t sh, int64_t sw, int64_t pad_top, int64_t pad_left, int64_t oh, int64_t ow
#define GEOM_INIT {n, h, w, c, kh, kw, sh, sw, pad_top, pad_left, oh, ow}

int mg_im2col(const float *x, float *cols, GEOM_ARGS)
{
    const struct geom g = GEOM_INIT;
    if (!geom_ok(&g)) return MG_EINVAL;
    im2col(&g, x, cols);
    return MG_OK;
}

int mg_col2im(const float *dcols, float *dx, GEOM_ARGS)
{
    const struct geom g = GEOM_INIT;
    if (!geom_ok(&g)) return MG_EINVAL;
    col2im(&g, dcols, dx);
    return MG_OK;
}

int mg_conv2d_forward(const float *x, const float *wt, const float *bias, float *cols, float *y,
                      int64_t cout, int relu, GEOM_ARGS)
{
    const struct geom g = GEOM_INIT;
    if (!geom_ok(&g) || cout < 0) return MG_EINVAL;
    const int64_t m = n * oh * ow, k = kh * kw * c;
    if ((double)m * (double)(cout > 1 ? cout : 1) > 4.6e18) return MG_EINVAL;
    im2col(&g, x, cols);
    return mg_gemm(0, 0, m, cout, k, 1.0f, cols, k > 0 ? k : 1, wt, cout > 0 ? cout : 1,
                   0.0f, y, cout > 0 ? cout : 1, bias, relu);
}

int mg_conv2d_backward_input(const float *dy, const float *wt, float *dcols, float *dx,
                             int64_t cout, GEOM_ARGS)
{
    const struct geom g = GEOM_INIT;
    if (!geom_ok(&g) || cout < 0) return MG_EINVAL;
    const int64_t m = n * oh * ow, k = kh * kw * c;
    if ((double)m * (double)(cout > 1 ? cout : 1) > 4.6e18) return MG_EINVAL;
    /* dcols (m x k) = dY (m x cout) @ W^T, W stored k x cout */
    int status = mg_gemm(0, 1, m, k, cout, 1.0f, dy, cout > 0 ? cout : 1, wt, cout > 0 ? cout : 1,
                         0.0f, dcols, k > 0 ? k : 1, NULL, 0);
    if (status != MG_OK) return status;
    col2im(&g, dcols, dx);
    return MG_OK;
}
