/* In-place optimizer updates and gradient clipping (Keras 3 formulas; see
 * minigrad.h). The updates are element-wise, and the clipping norms add fixed
 * chunks' partial sums in chunk order, so any thread split gives the same bits.
 * All parameters are validated before any is written, so a bad argument leaves
 * every parameter untouched. */
#include <math.h>
#include <stdlib.h>
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
        if (params[p].n > 0 && ((slots >= 1 && !params[p].slot1) || (slots >= 2 && !params[p].slot2)
                                || (slots >= 3 && !params[p].slot3)))
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

MG_CLONES static void adamw_chunk(float *restrict w, const float *restrict g, float *restrict m,
                                  float *restrict v, float *restrict vhat, int64_t n, float lr,
                                  float wd, float alpha, float c1, float c2, float eps)
{
    for (int64_t i = 0; i < n; i++) {
        float wi = w[i];
        if (wd != 0.0f)
            wi = wi - wi * wd * lr; /* Keras: variable - variable * wd * lr, before the step */
        float gi = g[i];
        float mi = m[i] + (gi - m[i]) * c1;
        float vi = v[i] + (gi * gi - v[i]) * c2;
        m[i] = mi;
        v[i] = vi;
        if (vhat) {
            /* written so that a NaN in v propagates into v_hat, as a maximum does in Keras */
            float h = vhat[i] >= vi ? vhat[i] : vi;
            vhat[i] = h;
            vi = h;
        }
        w[i] = wi - alpha * mi / (sqrtf(vi) + eps);
    }
}

int mg_rmsprop_update(const mg_param_t *params, int64_t count,
                      double lr_d, double rho_d, double eps_d, int eps_inside)
{
    if (check_params(params, count, 1) != MG_OK)
        return MG_EINVAL;
    const float lr = (float)lr_d, rho = (float)rho_d, eps = (float)eps_d;
    const float one_minus_rho = (float)(1.0 - rho_d);
    for (int64_t p = 0; p < count; p++) {
        const mg_param_t *q = &params[p];
        MG_FOR_CHUNKS(q->n, rmsprop_chunk(q->w + off, q->g + off, q->slot1 + off, len,
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
        MG_FOR_CHUNKS(q->n, sgd_chunk(q->w + off, q->g + off, vel ? vel + off : 0, len,
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
        MG_FOR_CHUNKS(q->n, adam_chunk(q->w + off, q->g + off, q->slot1 + off, q->slot2 + off, len,
                                       alpha, c1, c2, eps));
    }
    return update_done();
}

int mg_adamw_update(const mg_param_t *params, int64_t count,
                    double lr_d, double beta1, double beta2, double eps_d, double wd_d,
                    int amsgrad, int64_t step)
{
    if (step < 1 || check_params(params, count, amsgrad ? 3 : 2) != MG_OK)
        return MG_EINVAL;
    double t = (double)step;
    const float alpha = (float)(lr_d * sqrt(1.0 - pow(beta2, t)) / (1.0 - pow(beta1, t)));
    const float c1 = (float)(1.0 - beta1), c2 = (float)(1.0 - beta2), eps = (float)eps_d;
    const float lr = (float)lr_d, wd = (float)wd_d;
    for (int64_t p = 0; p < count; p++) {
        const mg_param_t *q = &params[p];
        float *vhat = amsgrad ? q->slot3 : 0;
        MG_FOR_CHUNKS(q->n, adamw_chunk(q->w + off, q->g + off, q->slot1 + off, q->slot2 + off,
                                     vhat ? vhat + off : 0, len, lr, wd, alpha, c1, c2, eps));
    }
    return update_done();
}

/* Sum of squares of one chunk, in double and in index order. */
MG_CLONES static double sumsq_chunk(const float *restrict g, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)g[i] * (double)g[i];
    return s;
}

MG_CLONES static void scale_chunk(float *restrict dst, const float *restrict g, int64_t n, float scale)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = g[i] * scale;
}

MG_CLONES static void clip_value_chunk(float *restrict dst, const float *restrict g, int64_t n, float c)
{
    /* comparisons false for NaN: a NaN gradient stays NaN, as Keras' clip */
    for (int64_t i = 0; i < n; i++)
        dst[i] = g[i] < -c ? -c : (g[i] > c ? c : g[i]);
}

/* The squared L2 norm of g: per-chunk partial sums (each chunk summed by one
 * thread) added in chunk order, so the result does not depend on how the chunks
 * were spread over threads. partial holds ceil(n / MG_CHUNK) doubles. */
static double sum_of_squares(const float *g, int64_t n, double *partial)
{
    MG_FOR_CHUNKS(n, partial[c_] = sumsq_chunk(g + off, len));
    double s = 0.0;
    for (int64_t c = 0, chunks = (n + MG_CHUNK - 1) / MG_CHUNK; c < chunks; c++)
        s += partial[c];
    return s;
}

/* The factor Keras' clip_by_norm multiplies by: c / max(norm, c); NaN for a NaN norm
 * (a maximum propagates it); exactly 1 when the norm is within c. */
static double norm_scale(double norm, double c)
{
    if (isnan(norm))
        return NAN;
    return norm > c ? c / norm : 1.0;
}

int mg_clip_gradients(const mg_param_t *params, int64_t count, int mode, double clip)
{
    if (mode < 1 || mode > 3 || !(clip > 0.0) || check_params(params, count, 0) != MG_OK)
        return MG_EINVAL;
    if (mode == 3) {
        const float c = (float)clip;
        for (int64_t p = 0; p < count; p++) {
            const mg_param_t *q = &params[p];
            MG_FOR_CHUNKS(q->n, clip_value_chunk(q->w + off, q->g + off, len, c));
        }
        return MG_OK;
    }
    int64_t most = 1;
    for (int64_t p = 0; p < count; p++) {
        int64_t chunks = (params[p].n + MG_CHUNK - 1) / MG_CHUNK;
        if (chunks > most)
            most = chunks;
    }
    double *partial = malloc((size_t)most * sizeof(double));
    if (!partial)
        return MG_ENOMEM;
    if (mode == 1) {
        for (int64_t p = 0; p < count; p++) {
            const mg_param_t *q = &params[p];
            const float scale = (float)norm_scale(sqrt(sum_of_squares(q->g, q->n, partial)), clip);
            MG_FOR_CHUNKS(q->n, scale_chunk(q->w + off, q->g + off, len, scale));
        }
    } else {
        double total = 0.0;
        for (int64_t p = 0; p < count; p++)
            total += sum_of_squares(params[p].g, params[p].n, partial);
        const double norm = sqrt(total);
        /* Keras: a non-finite global norm makes every clipped gradient NaN */
        const float scale = isfinite(norm) ? (float)norm_scale(norm, clip) : NAN;
        for (int64_t p = 0; p < count; p++) {
            const mg_param_t *q = &params[p];
            MG_FOR_CHUNKS(q->n, scale_chunk(q->w + off, q->g + off, len, scale));
        }
    }
    free(partial);
    return MG_OK;
}
