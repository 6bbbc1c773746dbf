/* Fused sigmoid + binary cross-entropy on logits. Working from the logit z
 * keeps the loss finite for every finite z, where log(sigmoid(z)) would hit
 * log(0) once sigmoid(z) rounds to 0 or 1 (|z| > 17 in float32), and makes the
 * gradient a single subtraction. */
#include <stdlib.h>
#include "minigrad.h"
#include "internal.h"

/* The loss of elements [0, n) of one MG_CHUNK chunk, summed in index order in
 * double; also writes the probabilities. Per element (TensorFlow's
 * sigmoid_cross_entropy_with_logits):
 *     max(z, 0) - z*t + log1p(exp(-|z|))
 * with exp(-|z|) the float32 value the probability is built from, so the
 * loss and probs agree, and log1p in double (one libm call per element). */
static double bce_chunk(const float *z, const float *t, float *p, int64_t n)
{
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float e;
        p[i] = mg_sigmoid_e(z[i], &e);
        const double zd = z[i], td = t[i];
        acc += (zd > 0.0 ? zd : 0.0) - zd * td + log1p((double)e);
    }
    return acc;
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
