/* Fused softmax + cross-entropy on logits. Fusing keeps the loss finite for
 * any finite logits (log-sum-exp with the row maximum subtracted) and makes
 * the backward pass a single subtraction. */
#include <math.h>
#include "minigrad.h"
#include "internal.h"

/* Softmax of one row into p; returns log(sum(exp(z - max))) and sets *zmax. */
static float softmax_row(const float *z, float *p, int64_t cols, float *zmax)
{
    float mx = z[0];
    for (int64_t j = 1; j < cols; j++)
        mx = z[j] > mx ? z[j] : mx;
    float sum = 0.0f;
    for (int64_t j = 0; j < cols; j++) {
        p[j] = expf(z[j] - mx);
        sum += p[j];
    }
    float inv = 1.0f / sum;
    for (int64_t j = 0; j < cols; j++)
        p[j] *= inv;
    *zmax = mx;
    return logf(sum);
}

/* labels[i], read exactly once. The labels may live in memory another thread
 * can write while the kernel runs, so the value that is range-checked must be
 * the value that is used: a second read could return an index the check never
 * saw. The relaxed atomic load keeps the compiler from re-reading it. */
static inline int64_t label_at(const int64_t *labels, int64_t i)
{
    return __atomic_load_n(labels + i, __ATOMIC_RELAXED);
}

/* Checked before anything is written, so a bad label leaves every output untouched. */
static int labels_in_range(const int64_t *labels, int64_t rows, int64_t cols)
{
    for (int64_t i = 0; i < rows; i++)
        if (label_at(labels, i) < 0 || label_at(labels, i) >= cols)
            return 0;
    return 1;
}

static float mean_in_row_order(const float *row_loss, int64_t rows)
{
    double total = 0.0;
    for (int64_t i = 0; i < rows; i++)
        total += row_loss[i];
    return rows > 0 ? (float)(total / (double)rows) : 0.0f;
}

int mg_softmax_xent_forward_index(const float *logits, const int64_t *labels,
                                  float *probs, float *row_loss, float *loss,
                                  int64_t rows, int64_t cols)
{
    if (rows < 0 || cols <= 0)
        return MG_EINVAL;
    if (!labels_in_range(labels, rows, cols))
        return MG_ELABEL;
    int changed = 0; /* a label left the range after the check (a concurrent writer) */
    MG_PARALLEL(MG_THREADS(rows * cols * 8), reduction(|:changed), {
        MG_FTZ_BEGIN;
        MG_OMP(omp for schedule(static))
        for (int64_t i = 0; i < rows; i++) {
            float mx;
            const float *z = logits + i * cols;
            float log_sum = softmax_row(z, probs + i * cols, cols, &mx);
            const int64_t y = label_at(labels, i);
            if (y < 0 || y >= cols) {
                changed = 1;
                row_loss[i] = NAN;
                continue;
            }
            /* -log softmax(z)_y = log_sum - (z_y - max) */
            row_loss[i] = log_sum - (z[y] - mx);
        }
        MG_FTZ_END;
    });
    if (changed)
        return MG_ELABEL;
    *loss = mean_in_row_order(row_loss, rows);
    return MG_OK;
}

int mg_softmax_xent_forward_dense(const float *logits, const float *targets,
                                  float *probs, float *row_loss, float *loss,
                                  int64_t rows, int64_t cols)
{
    if (rows < 0 || cols <= 0)
        return MG_EINVAL;
    MG_PARALLEL(MG_THREADS(rows * cols * 8), , {
        MG_FTZ_BEGIN;
        MG_OMP(omp for schedule(static))
        for (int64_t i = 0; i < rows; i++) {
            float mx;
            const float *z = logits + i * cols;
            const float *t = targets + i * cols;
            float log_sum = softmax_row(z, probs + i * cols, cols, &mx);
            float acc = 0.0f;
            for (int64_t j = 0; j < cols; j++)
                if (t[j] != 0.0f)
                    acc += t[j] * (log_sum - (z[j] - mx));
            row_loss[i] = acc;
        }
        MG_FTZ_END;
    });
    *loss = mean_in_row_order(row_loss, rows);
    return MG_OK;
}

int mg_softmax_xent_backward_index(const float *probs, const int64_t *labels, float scale,
                                   float *dlogits, int64_t rows, int64_t cols)
{
    if (rows < 0 || cols <= 0)
        return MG_EINVAL;
    if (!labels_in_range(labels, rows, cols))
        return MG_ELABEL;
    int changed = 0; /* as in the forward: the label used is the label checked */
    MG_PARALLEL(MG_THREADS(rows * cols), reduction(|:changed), {
        MG_FTZ_BEGIN;
        MG_OMP(omp for schedule(static))
        for (int64_t i = 0; i < rows; i++) {
            const float *p = probs + i * cols;
            float *d = dlogits + i * cols;
            const int64_t y = label_at(labels, i);
            changed |= y < 0 || y >= cols;
            for (int64_t j = 0; j < cols; j++)
                d[j] = scale * (j == y ? p[j] - 1.0f : p[j]);
        }
        MG_FTZ_END;
    });
    return changed ? MG_ELABEL : MG_OK;
}

int mg_softmax_xent_backward_dense(const float *probs, const float *targets, float scale,
                                   float *dlogits, int64_t rows, int64_t cols)
{
    if (rows < 0 || cols <= 0)
        return MG_EINVAL;
    MG_PARALLEL(MG_THREADS(rows * cols), , {
        MG_FTZ_BEGIN;
        MG_OMP(omp for schedule(static))
        for (int64_t i = 0; i < rows; i++) {
            const float *p = probs + i * cols;
            const float *t = targets + i * cols;
            float *d = dlogits + i * cols;
            float tsum = 0.0f;
            for (int64_t j = 0; j < cols; j++)
                tsum += t[j];
            for (int64_t j = 0; j < cols; j++)
                d[j] = scale * (p[j] * tsum - t[j]);
        }
        MG_FTZ_END;
    });
    return MG_OK;
}
