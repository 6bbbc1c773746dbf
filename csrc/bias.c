/* Add-bias forward and its gradient (column sums). */
#include "minigrad.h"
#include "internal.h"

int mg_add_bias(const float *x, const float *b, float *y, int64_t rows, int64_t cols)
{
    if (rows < 0 || cols < 0)
        return MG_EINVAL;
    MG_OMP(omp parallel num_threads(MG_THREADS(rows * cols)))
    {
        MG_FTZ_BEGIN;
        MG_OMP(omp for schedule(static))
        for (int64_t i = 0; i < rows; i++) {
            const float *xr = x + i * cols;
            float *yr = y + i * cols;
            for (int64_t j = 0; j < cols; j++)
                yr[j] = xr[j] + b[j];
        }
        MG_FTZ_END;
    }
    return MG_OK;
}

/* Columns are split between threads and each column is summed top to bottom,
 * so every db[j] has the same summation order whatever the thread count.
 * Blocks of 64 columns keep the inner loop vectorisable over j. */
#define BIAS_COL_BLOCK 64

int mg_bias_grad(const float *dy, float *db, int64_t rows, int64_t cols)
{
    if (rows < 0 || cols < 0)
        return MG_EINVAL;
    int64_t nblocks = (cols + BIAS_COL_BLOCK - 1) / BIAS_COL_BLOCK;
    MG_OMP(omp parallel num_threads(MG_THREADS(rows * cols)))
    {
        MG_FTZ_BEGIN;
        MG_OMP(omp for schedule(static))
        for (int64_t blk = 0; blk < nblocks; blk++) {
            int64_t j0 = blk * BIAS_COL_BLOCK;
            int64_t j1 = j0 + BIAS_COL_BLOCK < cols ? j0 + BIAS_COL_BLOCK : cols;
            float acc[BIAS_COL_BLOCK];
            for (int64_t j = j0; j < j1; j++)
                acc[j - j0] = 0.0f;
            for (int64_t i = 0; i < rows; i++) {
                const float *r = dy + i * cols;
                for (int64_t j = j0; j < j1; j++)
                    acc[j - j0] += r[j];
            }
            for (int64_t j = j0; j < j1; j++)
                db[j] = acc[j - j0];
        }
        MG_FTZ_END;
    }
    return MG_OK;
}
