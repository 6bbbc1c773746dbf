/* Add-bias forward and its gradient (column sums). */
#include "minigrad.h"
#include "internal.h"

int mg_add_bias(const float *x, const float *b, float *y, int64_t rows, int64_t cols)
{
    if (rows < 0 || cols < 0)
        return MG_EINVAL;
    MG_PARALLEL(MG_THREADS(rows * cols), , {
        MG_FTZ_BEGIN;
        MG_OMP(omp for schedule(static))
        for (int64_t i = 0; i < rows; i++) {
            const float *xr = x + i * cols;
            float *yr = y + i * cols;
            for (int64_t j = 0; j < cols; j++)
                yr[j] = xr[j] + b[j];
        }
        MG_FTZ_END;
    });
    return MG_OK;
}

/* Columns are split between threads and each column is summed top to bottom,
 * so every db[j] has the same summation order whatever the thread count.
 * Blocks of 64 columns keep the inner loop vectorisable over j. */
#define COL_BLOCK 64

/* Columns [j0, j1) of all rows: acc = their sums, of dY as it is, or (masked)
 * of dX = dY where Y > 0 else 0, which is also written. Inlined twice, with
 * `masked` a constant, so each instance is a plain vectorised loop. */
__attribute__((always_inline))
static inline void column_block(const float *y, const float *dy, float *dx, float *acc,
                                int64_t rows, int64_t cols, int64_t j0, int64_t j1,
                                const int masked)
{
    for (int64_t j = j0; j < j1; j++)
        acc[j - j0] = 0.0f;
    for (int64_t i = 0; i < rows; i++) {
        const float *gr = dy + i * cols;
        if (!masked) {
            for (int64_t j = j0; j < j1; j++)
                acc[j - j0] += gr[j];
            continue;
        }
        const float *yr = y + i * cols;
        float *dr = dx + i * cols;
        for (int64_t j = j0; j < j1; j++) {
            float gj = gr[j]; /* loaded unconditionally so the select vectorises */
            float g = yr[j] > 0.0f ? gj : 0.0f;
            dr[j] = g;
            acc[j - j0] += g;
        }
    }
}

int mg_column_sums(const float *y, const float *dy, float *dx, float *db,
                   int64_t rows, int64_t cols)
{
    if (rows < 0 || cols < 0)
        return MG_EINVAL;
    int64_t nblocks = (cols + COL_BLOCK - 1) / COL_BLOCK;
    MG_PARALLEL(MG_THREADS(rows * cols), , {
        MG_FTZ_BEGIN;
        MG_OMP(omp for schedule(static))
        for (int64_t blk = 0; blk < nblocks; blk++) {
            int64_t j0 = blk * COL_BLOCK;
            int64_t j1 = j0 + COL_BLOCK < cols ? j0 + COL_BLOCK : cols;
            float acc[COL_BLOCK];
            if (y)
                column_block(y, dy, dx, acc, rows, cols, j0, j1, 1);
            else
                column_block(NULL, dy, NULL, acc, rows, cols, j0, j1, 0);
            if (db)
                for (int64_t j = j0; j < j1; j++)
                    db[j] = acc[j - j0];
        }
        MG_FTZ_END;
    });
    return MG_OK;
}

int mg_bias_grad(const float *dy, float *db, int64_t rows, int64_t cols)
{
    return mg_column_sums(NULL, dy, NULL, db, rows, cols);
}
