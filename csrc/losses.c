/* Fused sigmoid + binary cross-entropy on logits. Working from the logit z
 * keeps the loss finite for every finite z, where log(sigmoid(z)) would hit
 * log(0) once sigmoid(z) rounds to 0 or 1 (|z| > 17 in float32), and makes the
 * gradient a single subtraction. */
#include <stdlib.h>
#include "minigrad.h"
#include "internal.h"

/* log1p(e) for e in [0, 1], from float arithmetic that vectorises (libm's
 * log1p is a call per element). Cephes' logf polynomial for log(1 + f) on
 * |f| <= sqrt(2) - 1: applied to e itself when e is that small, so 1 + e is
 * never rounded; otherwise log1p(e) = ln 2 + log(1 + f) with
 * f = (1 + e)/2 - 1 in (-0.29, 0] (exact once 1 + e is rounded, which costs
 * at most 2^-24 relative in a result >= 0.35). Within 2 ulp. */
static inline float log1p_unit(float e)
{
    const int big = e > 0.41421356f;
    const float k = mg_select(big, 1.0f, 0.0f);
    const float f = mg_select(big, (1.0f + e) * 0.5f - 1.0f, e);
    const float z = f * f;
    float p = 7.0376836292e-2f;
    p = p * f - 1.1514610310e-1f;
    p = p * f + 1.1676998740e-1f;
    p = p * f - 1.2420140846e-1f;
    p = p * f + 1.4249322787e-1f;
    p = p * f - 1.6668057665e-1f;
    p = p * f + 2.0000714765e-1f;
    p = p * f - 2.4999993993e-1f;
    p = p * f + 3.3333331174e-1f;
    float y = p * f * z;
    y += -2.12194440e-4f * k; /* ln 2 in two parts, as in mg_exp_nonpos */
    y += -0.5f * z;
    return (f + y) + 0.693359375f * k;
}

/* Elements are handled in blocks of this many (a multiple of BCE_LANES that
 * divides MG_CHUNK), their log terms kept in a stack buffer between two loops. */
#define BCE_BLOCK 1024
/* The loss is summed in this many double accumulators, element i into lane
 * i % BCE_LANES: independent chains the compiler can keep in vector registers,
 * where a single running sum would wait on each addition. */
#define BCE_LANES 8

/* Vectorised: probabilities (bitwise mg_sigmoid_forward's) and log1p(exp(-|z|))
 * from the same e = exp(-|z|), so the loss and probs agree. */
MG_CLONES static void bce_probs_block(const float *z, float *p, float *lg, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float e;
        p[i] = mg_sigmoid_e(z[i], &e);
        lg[i] = log1p_unit(e);
    }
}

/* lanes[i % BCE_LANES] += max(z, 0) - z*t + log1p(exp(-|z|)) in double, where
 * z*t is exact and the sum of the two first terms nearly so: TensorFlow's
 * sigmoid_cross_entropy_with_logits, which is finite for every finite z. */
MG_CLONES static void bce_sum_block(const float *z, const float *t, const float *lg, int64_t n,
                                    double *lanes)
{
    int64_t i = 0;
    for (; i + BCE_LANES <= n; i += BCE_LANES)
        for (int j = 0; j < BCE_LANES; j++) {
            const double zd = z[i + j];
            lanes[j] += (zd > 0.0 ? zd : 0.0) - zd * (double)t[i + j] + (double)lg[i + j];
        }
    for (int j = 0; i < n; i++, j++) {
        const double zd = z[i];
        lanes[j] += (zd > 0.0 ? zd : 0.0) - zd * (double)t[i] + (double)lg[i];
    }
}

/* The loss summed over one MG_CHUNK chunk (lanes, then the lanes pairwise in
 * a fixed tree); also writes the probabilities. */
static double bce_chunk(const float *z, const float *t, float *p, int64_t n)
{
    float lg[BCE_BLOCK];
    double lanes[BCE_LANES] = {0.0};
    for (int64_t b0 = 0; b0 < n; b0 += BCE_BLOCK) {
        const int64_t m = n - b0 < BCE_BLOCK ? n - b0 : BCE_BLOCK;
        bce_probs_block(z + b0, p + b0, lg, m);
        bce_sum_block(z + b0, t + b0, lg, m, lanes);
    }
    for (int width = BCE_LANES / 2; width > 0; width /= 2)
        for (int j = 0; j < width; j++)
            lanes[j] += lanes[j + width];
    return lanes[0];
}

int mg_sigmoid_bce_forward(const float *logits, const float *targets, float *probs, float *loss,
                           int64_t n)
{
    if (n < 0)
        return MG_EINVAL;
    /* One partial sum per fixed chunk, then the partials in chunk order: the
     * summation order depends on n only, not on how chunks meet threads. */
    const int64_t chunks = (n + MG_CHUNK - 1) / MG_CHUNK;
    double one_partial;
    double *partial = chunks > 1 ? malloc((size_t)chunks * sizeof(double)) : &one_partial;
    if (!partial)
        return MG_ENOMEM;
    MG_FOR_CHUNKS(n, partial[off / MG_CHUNK] = bce_chunk(logits + off, targets + off,
                                                          probs + off, len));
    double total = 0.0;
    for (int64_t c = 0; c < chunks; c++)
        total += partial[c];
    if (partial != &one_partial)
        free(partial);
    /* the mean over all elements: Keras' mean over the last axis, then over
     * the batch, when every row has the same length */
    *loss = n > 0 ? (float)(total / (double)n) : 0.0f;
    return MG_OK;
}

MG_CLONES static void bce_backward_chunk(const float *p, const float *t, float scale, float *d,
                                         int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        d[i] = scale * (p[i] - t[i]);
}

int mg_sigmoid_bce_backward(const float *probs, const float *targets, float scale,
                            float *dlogits, int64_t n)
{
    if (n < 0)
        return MG_EINVAL;
    MG_FOR_CHUNKS(n, bce_backward_chunk(probs + off, targets + off, scale, dlogits + off, len));
    return MG_OK;
}
