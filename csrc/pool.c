/* 2-D max pooling, NHWC, with the argmax kept for backward.
 *
 * Window (oy, ox) covers rows oy*sh - pad_top + [0, ph) and columns
 * ox*sw - pad_left + [0, pw); positions outside x are padding and never win.
 * Within a window the first maximum in row-major order wins (later equal
 * values do not replace it), so the gradient of a tie goes to the first one,
 * as in Keras. NaN propagates: the first NaN of a window wins over any number
 * (and over later NaNs), so y is NaN and argmax points at that NaN.
 *
 * argmax holds flat indices into x ((b*h + iy)*w + ix)*c + ci, as int64.
 *
 * Backward is a gather: each input element sums dY over the windows that
 * contain it (in increasing oy, then ox) whose argmax names it. Every dx
 * element is then one fixed sum, whatever the thread split, also when windows
 * overlap (strides smaller than the pool). An argmax entry that does not name
 * an element of its own window matches nothing, so a corrupted argmax loses
 * gradient but can never make C write outside dx.
 *
 * Rows are handed to threads dynamically (each row's result does not depend
 * on which thread computes it), so a descheduled thread delays no barrier.
 *
 * The forward only compares and copies, so it runs without flush-to-zero
 * (which would make a subnormal compare equal to 0 and change the winner);
 * the backward adds, and runs with it like the other kernels.
 */
#include "minigrad.h"
#include "internal.h"

struct pgeom {
    int64_t n, h, w, c, ph, pw, sh, sw, pt, pl, oh, ow;
};

/* Non-negative sizes, int64-safe products, and no window that lies wholly in
 * the padding (it would have no maximum). */
static int pgeom_ok(const struct pgeom *g)
{
    if (g->n < 0 || g->h < 0 || g->w < 0 || g->c < 0 || g->oh < 0 || g->ow < 0)
        return 0;
    if (g->ph < 1 || g->pw < 1 || g->sh < 1 || g->sw < 1 || g->pt < 0 || g->pl < 0)
        return 0;
    const double lim = 4.6e18;
    if ((double)g->n * (double)g->h * (double)g->w * (double)g->c > lim
        || (double)g->n * (double)g->oh * (double)g->ow * (double)g->c > lim
        || (double)g->oh * (double)g->sh + (double)g->ph + (double)g->h > lim
        || (double)g->ow * (double)g->sw + (double)g->pw + (double)g->w > lim)
        return 0;
    if (g->oh > 0 && (g->pt >= g->ph || (g->oh - 1) * g->sh - g->pt >= g->h))
        return 0;
    if (g->ow > 0 && (g->pl >= g->pw || (g->ow - 1) * g->sw - g->pl >= g->w))
        return 0;
    return 1;
}

#define PGEOM_ARGS int64_t n, int64_t h, int64_t w, int64_t c, int64_t ph, int64_t pw, \
    int64_t sh, int64_t sw, int64_t pad_top, int64_t pad_left, int64_t oh, int64_t ow
#define PGEOM_INIT {n, h, w, c, ph, pw, sh, sw, pad_top, pad_left, oh, ow}

static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* One output row (b, oy): y and argmax of its ow windows, all channels. */
MG_CLONES
static void pool_row(const struct pgeom *g, const float *x, float *yrow, int64_t *arow,
                     int64_t b, int64_t oy)
{
    const int64_t c = g->c;
    const int64_t iy0 = max64(oy * g->sh - g->pt, 0);
    const int64_t iy1 = mg_min64(oy * g->sh - g->pt + g->ph, g->h);
    for (int64_t ox = 0; ox < g->ow; ox++) {
        const int64_t ix0 = max64(ox * g->sw - g->pl, 0);
        const int64_t ix1 = mg_min64(ox * g->sw - g->pl + g->pw, g->w);
        float *best = yrow + ox * c;
        int64_t *where = arow + ox * c;
        int first = 1;
        for (int64_t iy = iy0; iy < iy1; iy++) {
            for (int64_t ix = ix0; ix < ix1; ix++) {
                const int64_t base = ((b * g->h + iy) * g->w + ix) * c;
                const float *v = x + base;
                if (first) {
                    for (int64_t ci = 0; ci < c; ci++) {
                        best[ci] = v[ci];
                        where[ci] = base + ci;
                    }
                    first = 0;
                    continue;
                }
                for (int64_t ci = 0; ci < c; ci++) {
                    const float bv = best[ci], xv = v[ci];
                    /* strictly greater keeps the first of equal maxima; a NaN
                     * wins only over a non-NaN, so the first NaN stays */
                    const int take = (xv > bv) | ((xv != xv) & (bv == bv));
                    best[ci] = take ? xv : bv;
                    where[ci] = take ? base + ci : where[ci];
                }
            }
        }
    }
}

int mg_max_pool2d_forward(const float *x, float *y, int64_t *argmax, PGEOM_ARGS)
{
    const struct pgeom g = PGEOM_INIT;
    if (!pgeom_ok(&g)) return MG_EINVAL;
    const int64_t nrows = n * oh;
    MG_PARALLEL(MG_THREADS(nrows * ow * c * ph * pw), , {
        MG_OMP(omp for schedule(dynamic, 4))
        for (int64_t r = 0; r < nrows; r++)
            pool_row(&g, x, y + r * ow * c, argmax + r * ow * c, r / oh, r % oh);
    });
    return MG_OK;
}

/* Windows along one axis that contain input position i: o in [lo, hi). */
static inline void covering(int64_t i, int64_t pad, int64_t k, int64_t s, int64_t o_count,
                            int64_t *lo, int64_t *hi)
{
    /* o*s - pad <= i  and  i <= o*s - pad + k - 1 */
    const int64_t t = i + pad - k + 1; /* o >= ceil(t / s) */
    *lo = t <= 0 ? 0 : (t + s - 1) / s;
    *hi = mg_min64((i + pad) / s + 1, o_count);
}

MG_CLONES
static void unpool_row(const struct pgeom *g, const float *dy, const int64_t *argmax, float *dxrow,
                       int64_t b, int64_t iy)
{
    const int64_t c = g->c;
    int64_t oy0, oy1;
    covering(iy, g->pt, g->ph, g->sh, g->oh, &oy0, &oy1);
    for (int64_t ix = 0; ix < g->w; ix++) {
        float *acc = dxrow + ix * c;
        const int64_t base = ((b * g->h + iy) * g->w + ix) * c;
        for (int64_t ci = 0; ci < c; ci++)
            acc[ci] = 0.0f;
        int64_t ox0, ox1;
        covering(ix, g->pl, g->pw, g->sw, g->ow, &ox0, &ox1);
        for (int64_t oy = oy0; oy < oy1; oy++) {
            for (int64_t ox = ox0; ox < ox1; ox++) {
                const int64_t o = ((b * g->oh + oy) * g->ow + ox) * c;
                const float *d = dy + o;
                const int64_t *a = argmax + o;
                for (int64_t ci = 0; ci < c; ci++) {
                    const float dv = d[ci]; /* loaded unconditionally so the select vectorises */
                    acc[ci] += a[ci] == base + ci ? dv : 0.0f;
                }
            }
        }
    }
}

int mg_max_pool2d_backward(const float *dy, const int64_t *argmax, float *dx, PGEOM_ARGS)
{
    const struct pgeom g = PGEOM_INIT;
    if (!pgeom_ok(&g)) return MG_EINVAL;
    const int64_t nrows = n * h;
    MG_PARALLEL(MG_THREADS(nrows * w * c), , {
        MG_FTZ_BEGIN;
        MG_OMP(omp for schedule(dynamic, 4))
        for (int64_t r = 0; r < nrows; r++)
            unpool_row(&g, dy, argmax, dx + r * w * c, r / h, r % h);
        MG_FTZ_END;
    });
    return MG_OK;
}
