/* Sigmoid and tanh (forward from x, backward from the forward output y) and
 * inverted dropout drawn from a counter-based RNG.
 *
 * Every element is computed on its own from float32 arithmetic that the
 * compiler may vectorise but not reassociate (-ffp-contract=off, no
 * -ffast-math), so the results are bitwise the same for any thread count and
 * on both GCC clones (AVX2 and baseline). */
#include <string.h>
#include "minigrad.h"
#include "internal.h"

/* ------------------------------------------------------------------ sigmoid */

MG_CLONES static void sigmoid_chunk(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float e;
        y[i] = mg_sigmoid_e(x[i], &e);
    }
}

int mg_sigmoid_forward(const float *x, float *y, int64_t n)
{
    if (n < 0)
        return MG_EINVAL;
    MG_FOR_CHUNKS(n, sigmoid_chunk(x + off, y + off, len));
    return MG_OK;
}

MG_CLONES static void sigmoid_backward_chunk(const float *y, const float *dy, float *dx, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

int mg_sigmoid_backward(const float *y, const float *dy, float *dx, int64_t n)
{
    if (n < 0)
        return MG_EINVAL;
    MG_FOR_CHUNKS(n, sigmoid_backward_chunk(y + off, dy + off, dx + off, len));
    return MG_OK;
}

/* --------------------------------------------------------------------- tanh */

/* tanh(x) = sign(x) * tanh(|x|). For |x| >= 0.625, tanh(a) = (1 - e)/(1 + e)
 * with e = exp(-2a) <= 0.29, so 1 - e cancels no leading bits and large |x|
 * gives e = 0 and exactly 1 (never inf/inf). Below 0.625 that subtraction
 * would lose bits, so Cephes' odd polynomial a + a*s*P(s), s = a^2, is used.
 * Both are computed and one selected, so the loop has no branch. */
static inline float tanh_one(float x)
{
    const float a = fabsf(x);
    const float s = a * a;
    float p = -5.70498872745e-3f;
    p = p * s + 2.06390887954e-2f;
    p = p * s - 5.37397155531e-2f;
    p = p * s + 1.33314422036e-1f;
    p = p * s - 3.33332819422e-1f;
    const float small = p * s * a + a;
    const float e = mg_exp_nonpos(-2.0f * a);
    const float large = (1.0f - e) / (1.0f + e);
    /* NaN fails the comparison and takes `large`, which is NaN as well */
    return copysignf(mg_select(a < 0.625f, small, large), x);
}

MG_CLONES static void tanh_chunk(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = tanh_one(x[i]);
}

int mg_tanh_forward(const float *x, float *y, int64_t n)
{
    if (n < 0)
        return MG_EINVAL;
    MG_FOR_CHUNKS(n, tanh_chunk(x + off, y + off, len));
    return MG_OK;
}

MG_CLONES static void tanh_backward_chunk(const float *y, const float *dy, float *dx, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

int mg_tanh_backward(const float *y, const float *dy, float *dx, int64_t n)
{
    if (n < 0)
        return MG_EINVAL;
    MG_FOR_CHUNKS(n, tanh_backward_chunk(y + off, dy + off, dx + off, len));
    return MG_OK;
}

/* ------------------------------------------------------------------ dropout */

/* Words are drawn for this many elements at a time (a multiple of
 * 4 * PHILOX_LANES that divides MG_CHUNK), into a stack buffer the select loop
 * then reads. */
#define DROPOUT_BLOCK 1024
/* Blocks generated side by side, one per vector lane: each round's two
 * multiplications become vector 32x32->64 products (vpmuludq) across blocks. */
#define PHILOX_LANES 8

/* Philox-4x32-10 (Salmon et al., SC'11; the generator of Random123, JAX and
 * cuRAND): ten rounds of two 32x32->64 multiplications mixing a 128-bit counter
 * under a 64-bit key, with Random123's constants and round. Here the counters
 * are (block low, high, step low, high) for blocks first .. first + nblocks - 1,
 * the key (seed low, high); their 4 words each go to words, in block order
 * (room for nblocks rounded up to PHILOX_LANES blocks). */
MG_CLONES static void philox_blocks(uint64_t first, int64_t nblocks, uint64_t seed, uint64_t step,
                                    uint32_t *words)
{
    for (int64_t q0 = 0; q0 < nblocks; q0 += PHILOX_LANES) {
        uint32_t c0[PHILOX_LANES], c1[PHILOX_LANES], c2[PHILOX_LANES], c3[PHILOX_LANES];
        for (int j = 0; j < PHILOX_LANES; j++) {
            const uint64_t block = first + (uint64_t)q0 + (uint64_t)j;
            c0[j] = (uint32_t)block;
            c1[j] = (uint32_t)(block >> 32);
            c2[j] = (uint32_t)step;
            c3[j] = (uint32_t)(step >> 32);
        }
        uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
        for (int r = 0; r < 10; r++) {
            for (int j = 0; j < PHILOX_LANES; j++) {
                const uint64_t p0 = (uint64_t)0xD2511F53u * c0[j];
                const uint64_t p1 = (uint64_t)0xCD9E8D57u * c2[j];
                c0[j] = (uint32_t)(p1 >> 32) ^ c1[j] ^ k0;
                c1[j] = (uint32_t)p1;
                c2[j] = (uint32_t)(p0 >> 32) ^ c3[j] ^ k1;
                c3[j] = (uint32_t)p0;
            }
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        for (int j = 0; j < PHILOX_LANES; j++) {
            uint32_t *w = words + 4 * (q0 + j);
            w[0] = c0[j];
            w[1] = c1[j];
            w[2] = c2[j];
            w[3] = c3[j];
        }
    }
}

int mg_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t words[4 * PHILOX_LANES];
    philox_blocks((uint64_t)counter[1] << 32 | counter[0], 1,
                  (uint64_t)key[1] << 32 | key[0], (uint64_t)counter[3] << 32 | counter[2], words);
    memcpy(out, words, 4 * sizeof(uint32_t));
    return MG_OK;
}

/* Elements [first, first + n) of the step, first a multiple of 4: element i
 * takes word i % 4 of Philox(counter = (i / 4 low, high, step low, high),
 * key = (seed low, high)) and is kept iff that word >= thr, i.e. iff
 * u = word / 2^32 >= rate. Kept: y = x * scale and mask = scale; dropped:
 * exactly 0 in both (a select, not a product, so inf or NaN in a dropped x
 * does not leak into y as NaN). */
MG_CLONES static void dropout_chunk(const float *x, float *y, float *mask, int64_t first,
                                    int64_t n, uint32_t thr, float scale, uint64_t seed,
                                    uint64_t step)
{
    uint32_t words[DROPOUT_BLOCK];
    for (int64_t b0 = 0; b0 < n; b0 += DROPOUT_BLOCK) {
        const int64_t m = n - b0 < DROPOUT_BLOCK ? n - b0 : DROPOUT_BLOCK;
        philox_blocks((uint64_t)(first + b0) / 4, (m + 3) / 4, seed, step, words);
        const float *xb = x + b0;
        float *yb = y + b0, *mb = mask + b0;
        for (int64_t i = 0; i < m; i++) {
            const int keep = words[i] >= thr;
            const float xi = xb[i] * scale;
            yb[i] = mg_select(keep, xi, 0.0f);
            mb[i] = mg_select(keep, scale, 0.0f);
        }
    }
}

int mg_dropout_forward(const float *x, float *y, float *mask, int64_t n, double rate,
                       uint64_t seed, int64_t *counter)
{
    if (n < 0 || !counter || !(rate >= 0.0 && rate < 1.0))
        return MG_EINVAL;
    const int64_t step = *counter;
    if (step < 0 || step == INT64_MAX)
        return MG_EINVAL;
    /* u >= rate  <=>  word >= rate * 2^32  <=>  word >= ceil(rate * 2^32); the
     * product is exact in double. A threshold of 2^32 (rate within 2^-32 of 1)
     * keeps nothing: the scale is then multiplied into no element. */
    const double thr_d = ceil(rate * 4294967296.0);
    const int keep_none = thr_d > 4294967295.0;
    const uint32_t thr = keep_none ? 0u : (uint32_t)thr_d;
    const float scale = (float)(1.0 / (1.0 - rate));
    if (keep_none) {
        MG_FOR_CHUNKS(n, (memset(y + off, 0, (size_t)len * sizeof(float)),
                          memset(mask + off, 0, (size_t)len * sizeof(float))));
    } else {
        MG_FOR_CHUNKS(n, dropout_chunk(x + off, y + off, mask + off, off, len, thr, scale,
                                       seed, (uint64_t)step));
    }
    *counter = step + 1;
    return MG_OK;
}

MG_CLONES static void dropout_backward_chunk(const float *mask, const float *dy, float *dx,
                                             int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        dx[i] = mg_select(mask[i] != 0.0f, dy[i] * mask[i], 0.0f);
    }
}

int mg_dropout_backward(const float *mask, const float *dy, float *dx, int64_t n)
{
    if (n < 0)
        return MG_EINVAL;
    MG_FOR_CHUNKS(n, dropout_backward_chunk(mask + off, dy + off, dx + off, len));
    return MG_OK;
}
