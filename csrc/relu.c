/* ReLU forward and backward; relu'(0) = 0, as in PyTorch and Keras.
 * The plain forward and backward only compare and copy, so they need no
 * flush-to-zero mode (and must not have it: under denormals-are-zero a negative
 * subnormal would compare equal to 0 and be copied through as a negative output). */
#include "minigrad.h"
#include "internal.h"

int mg_relu_forward(const float *x, float *y, int64_t n)
{
    if (n < 0)
        return MG_EINVAL;
    MG_PARALLEL(MG_THREADS(n), , {
        MG_OMP(omp for schedule(static))
        for (int64_t i = 0; i < n; i++)
            /* NaN < 0 is false, so NaN propagates (as np.maximum does) */
            y[i] = x[i] < 0.0f ? 0.0f : x[i];
    });
    return MG_OK;
}

int mg_relu_backward(const float *y, const float *dy, float *dx, int64_t n)
{
    if (n < 0)
        return MG_EINVAL;
    MG_PARALLEL(MG_THREADS(n), , {
        MG_OMP(omp for schedule(static))
        for (int64_t i = 0; i < n; i++) {
            float d = dy[i]; /* loaded unconditionally so the select vectorises */
            dx[i] = y[i] > 0.0f ? d : 0.0f;
        }
    });
    return MG_OK;
}

/* One pass over dY instead of two: mask it and sum its columns for the bias
 * gradient while the rows are in cache (bias.c's column sums, masked). */
int mg_relu_backward_bias_grad(const float *y, const float *dy, float *dx, float *db,
                               int64_t rows, int64_t cols)
{
    return mg_column_sums(y, dy, dx, db, rows, cols);
}
