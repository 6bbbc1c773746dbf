/* In-place optimizer updates (Keras 3 formulas; see minigrad.h). Element-wise,
 * so any thread split gives the same bits. All parameters are validated before
 * any is written, so a bad argument leaves every parameter untouched. */
#include <math.h>
#include "minigrad.h"
#include "internal.h"

/* Updates completed by the calling thread: Python reads it before and after an
 * optimizer call to know whether the update was applied when an exception
 * (a Ctrl-C) interrupts the call's Python side. Per thread, so that another
 * thread's training cannot be mistaken for this one's. */
static _Thread_local uint64_t tls_updates_done = 0;

uint64_t mg_optimizer_updates_done(void)
{
    return tls_updates_done;
}

static int update_done(void)
{
    tls_updates_done++;
    return MG_OK;
}

static int check_params(const mg_param_t *params, int64_t count, int slots)
{
    if (count < 0 || (count > 0 && !params))
        return MG_EINVAL;
    for (int64_t p = 0; p < count; p++) {
        if (params[p].n < 0 || (params[p].n > 0 && (!params[p].w || !params[p].g)))
            return MG_EINVAL;
        if (params[p].n > 0 && ((slots >= 1 && !params[p].slot1) || (slots >= 2 && !params[p].slot2)))
            return MG_EINVAL;
    }
    return MG_OK;
}

MG_CLONES static void rmsprop_chunk(float *restrict w, const float *restrict g,
                                    float *restrict v, int64_t n, float lr, float rho,
                                    float one_minus_rho, float eps, int eps_inside)
{
    if (eps_inside) {
        for (int64_t i = 0; i < n; i++) {
            float vi = rho * v[i] + one_minus_rho * g[i] * g[i];
            v[i] = vi;
            w[i] -= lr * g[i] / sqrtf(vi + eps);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            float vi = rho * v[i] + one_minus_rho * g[i] * g[i];
            v[i] = vi;
            w[i] -= lr * g[i] / (sqrtf(vi) + eps);
        }
    }
}

MG_CLONES static void sgd_chunk(float *restrict w, const float *restrict g, float *restrict vel,
                                int64_t n, float lr, float momentum, int nesterov)
{
    if (!vel) {
        for (int64_t i = 0; i < n; i++)
            w[i] -= lr * g[i];
    } else if (nesterov) {
        for (int64_t i = 0; i < n; i++) {
            float m = momentum * vel[i] - lr * g[i];
            vel[i] = m;
            w[i] += momentum * m - lr * g[i];
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            float m = momentum * vel[i] - lr * g[i];
            vel[i] = m;
            w[i] += m;
        }
    }
}

MG_CLONES static void adam_chunk(float *restrict w, const float *restrict g, float *restrict m,
                                 float *restrict v, int64_t n, float alpha, float c1, float c2,
                                 float eps)
{
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = m[i] + (gi - m[i]) * c1;
        float vi = v[i] + (gi * gi - v[i]) * c2;
        m[i] = mi;
        v[i] = vi;
        w[i] -= alpha * mi / (sqrtf(vi) + eps);
    }
}

/* Run body(offset, length) over [0, n) in MG_CHUNK pieces spread over the threads. */
#define FOR_CHUNKS(n, body)                                                        \
    do {                                                                           \
        const int64_t n_ = (n), chunks_ = (n_ + MG_CHUNK - 1) / MG_CHUNK;          \
        MG_OMP(omp parallel num_threads(MG_THREADS(n_)))                           \
        {                                                                          \
            MG_FTZ_BEGIN;                                                          \
            MG_OMP(omp for schedule(static))                                       \
            for (int64_t c_ = 0; c_ < chunks_; c_++) {                             \
                const int64_t off = c_ * MG_CHUNK;                                 \
                const int64_t len = n_ - off < MG_CHUNK ? n_ - off : MG_CHUNK;     \
                body;                                                              \
            }                                                                      \
            MG_FTZ_END;                                                            \
        }                                                                          \
    } while (0)

int mg_rmsprop_update(const mg_param_t *params, int64_t count,
                      double lr_d, double rho_d, double eps_d, int eps_inside)
{
    if (check_params(params, count, 1) != MG_OK)
        return MG_EINVAL;
    const float lr = (float)lr_d, rho = (float)rho_d, eps = (float)eps_d;
    const float one_minus_rho = (float)(1.0 - rho_d);
    for (int64_t p = 0; p < count; p++) {
        const mg_param_t *q = &params[p];
        FOR_CHUNKS(q->n, rmsprop_chunk(q->w + off, q->g + off, q->slot1 + off, len,
                                       lr, rho, one_minus_rho, eps, eps_inside));
    }
    return update_done();
}

int mg_sgd_update(const mg_param_t *params, int64_t count,
                  double lr_d, double momentum_d, int nesterov)
{
    const float lr = (float)lr_d, momentum = (float)momentum_d;
    if (check_params(params, count, momentum != 0.0f ? 1 : 0) != MG_OK)
        return MG_EINVAL;
    for (int64_t p = 0; p < count; p++) {
        const mg_param_t *q = &params[p];
        float *vel = momentum != 0.0f ? q->slot1 : 0;
        FOR_CHUNKS(q->n, sgd_chunk(q->w + off, q->g + off, vel ? vel + off : 0, len,
                                   lr, momentum, nesterov));
    }
    return update_done();
}

int mg_adam_update(const mg_param_t *params, int64_t count,
                   double lr, double beta1, double beta2, double eps_d, int64_t step)
{
    if (step < 1 || check_params(params, count, 2) != MG_OK)
        return MG_EINVAL;
    /* Bias correction folded into the step size, computed once in double. */
    double t = (double)step;
    const float alpha = (float)(lr * sqrt(1.0 - pow(beta2, t)) / (1.0 - pow(beta1, t)));
    const float c1 = (float)(1.0 - beta1), c2 = (float)(1.0 - beta2), eps = (float)eps_d;
    for (int64_t p = 0; p < count; p++) {
        const mg_param_t *q = &params[p];
        FOR_CHUNKS(q->n, adam_chunk(q->w + off, q->g + off, q->slot1 + off, q->slot2 + off, len,
                                    alpha, c1, c2, eps));
    }
    return update_done();
}
