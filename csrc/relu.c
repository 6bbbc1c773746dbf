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
    MG_OMP(omp parallel for schedule(static) num_threads(MG_THREADS(n)))
    for (int64_t i = 0; i < n; i++)
        /* NaN < 0 is false, so NaN propagates (as np.maximum does) */
        y[i] = x[i] < 0.0f ? 0.0f : x[i];
    return MG_OK;
}

int mg_relu_backward(const float *y, const float *dy, float *dx, int64_t n)
{
    if (n < 0)
        return MG_EINVAL;
    MG_OMP(omp parallel for schedule(static) num_threads(MG_THREADS(n)))
    for (int64_t i = 0; i < n; i++) {
        float d = dy[i]; /* loaded unconditionally so the select vectorises */
        dx[i] = y[i] > 0.0f ? d : 0.0f;
    }
    return MG_OK;
}

#define RELU_COL_BLOCK 64

/* One pass over dY instead of two: mask it and sum its columns for the bias
 * gradient while the rows are in cache. Column blocks go to threads, rows are
 * summed in increasing order, so db is thread-invariant. */
int mg_relu_backward_bias_grad(const float *y, const float *dy, float *dx, float *db,
                               int64_t rows, int64_t cols)
{
    if (rows < 0 || cols < 0)
        return MG_EINVAL;
    int64_t nblocks = (cols + RELU_COL_BLOCK - 1) / RELU_COL_BLOCK;
    MG_OMP(omp parallel num_threads(MG_THREADS(rows * cols)))
    {
        MG_FTZ_BEGIN;
        MG_OMP(omp for schedule(static))
        for (int64_t blk = 0; blk < nblocks; blk++) {
            int64_t j0 = blk * RELU_COL_BLOCK;
            int64_t j1 = j0 + RELU_COL_BLOCK < cols ? j0 + RELU_COL_BLOCK : cols;
            float acc[RELU_COL_BLOCK];
            for (int64_t j = j0; j < j1; j++)
                acc[j - j0] = 0.0f;
            for (int64_t i = 0; i < rows; i++) {
                const float *yr = y + i * cols;
                const float *gr = dy + i * cols;
                float *dr = dx + i * cols;
                for (int64_t j = j0; j < j1; j++) {
                    float gj = gr[j]; /* loaded unconditionally so the select vectorises */
                float g = yr[j] > 0.0f ? gj : 0.0f;
                    dr[j] = g;
                    acc[j - j0] += g;
                }
            }
            if (db)
                for (int64_t j = j0; j < j1; j++)
                    db[j] = acc[j - j0];
        }
        MG_FTZ_END;
    }
    return MG_OK;
}
