/* minigrad C API: float32, row-major, OpenMP.
 *
 * This header is the single source of truth: the C files include it and
 * minigrad/_build.py hands the part between the CDEF markers to cffi as its cdef.
 * Every function trusts its arguments: minigrad/kernels.py validates shapes,
 * dtypes, contiguity and aliasing before calling. Sizes are int64_t so no
 * product of two dimensions can overflow silently.
 *
 * Return codes: MG_OK on success, a negative MG_E* code when an argument is
 * impossible (the caller turns it into a Python exception).
 */
#ifndef MINIGRAD_H
#define MINIGRAD_H
#include <stdint.h>

/* CDEF BEGIN */
#define MG_OK 0
#define MG_EINVAL -1
#define MG_ENOMEM -2
#define MG_ELABEL -3

/* Threads: every parallel region uses this many threads (>= 1). */
void mg_set_num_threads(int n);
int mg_get_num_threads(void);
int mg_default_num_threads(void);
/* 1 in a process forked after kernels ran on several threads: it runs them serially. */
int mg_is_serial_child(void);
int mg_has_openmp(void);
/* Adaptation (on by default): while other processes keep CPUs busy, parallel
 * regions use fewer threads than configured (never more); results are the same
 * at any team size. Effective: the team size now in use. others_milli: the last
 * estimate of CPUs other processes used, in thousandths (-1: none yet). */
void mg_set_adaptive_threads(int on);
int mg_get_adaptive_threads(void);
int mg_effective_num_threads(void);
int mg_adaptive_others_milli(void);
/* The rule itself, for tests: the next team size from the current one when
 * free_milli thousandths of the usable CPUs are free of other processes. */
int mg_adaptive_next_team(int team, int configured, long long free_milli);
/* Which GEMM micro-kernel runs on this CPU: "avx2-fma" or "portable". */
const char *mg_gemm_kernel_name(void);
/* How many times a GEMM packing workspace was (re)allocated, over all threads:
 * each calling thread keeps one that only grows, so this stays flat in a loop. */
long long mg_gemm_workspace_allocations(void);

/* Zero-skipping (on by default; AVX2 kernel only): when at least 60% of op(A) is
 * exact zeros (like MNIST images), mg_gemm skips their terms. The result is the
 * dense kernel's bit for bit, except possibly the sign of a zero result or
 * which NaN is kept where two meet; turning it off only changes speed. See gemm_sparse.c. */
void mg_set_zero_skipping(int on);
int mg_get_zero_skipping(void);
/* How many mg_gemm calls took the zero-skipping path so far (all threads). */
long long mg_zero_skipping_calls(void);

/* C = alpha * op(A) * op(B) + beta * C, then optionally C += bias (row vector of
 * length n, broadcast over rows) and C = max(C, 0) when relu != 0.
 * op(A) is m x k (A stored k x m when trans_a), op(B) is k x n (B stored n x k
 * when trans_b). beta == 0 means C is write-only (never read, NaN in C is ignored).
 * Every element of C is a dot product summed in one fixed order whatever the
 * number of threads, so results are bitwise thread-invariant. */
int mg_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
            float alpha, const float *a, int64_t lda,
            const float *b, int64_t ldb,
            float beta, float *c, int64_t ldc,
            const float *bias, int relu);

/* Y[i, j] = X[i, j] + b[j]; X and Y may be the same buffer. */
int mg_add_bias(const float *x, const float *b, float *y, int64_t rows, int64_t cols);
/* db[j] = sum_i dY[i, j], summed over i in increasing order. */
int mg_bias_grad(const float *dy, float *db, int64_t rows, int64_t cols);

/* Y = max(X, 0); X and Y may be the same buffer. */
int mg_relu_forward(const float *x, float *y, int64_t n);
/* dX = dY where Y > 0 else 0 (relu'(0) = 0). Y is the forward output. */
int mg_relu_backward(const float *y, const float *dy, float *dx, int64_t n);
/* The same, fused with the bias gradient of the layer below:
 * dX = dY * (Y > 0) and db[j] = sum_i dX[i, j] (rows in increasing order).
 * db may be NULL. */
int mg_relu_backward_bias_grad(const float *y, const float *dy, float *dx, float *db,
                               int64_t rows, int64_t cols);

/* Fused softmax + cross-entropy on logits Z (rows x cols).
 * Forward writes probs = softmax(Z) row-wise, row_loss[i] = -sum_j t_ij * log softmax(Z)_ij
 * and *loss = the mean of row_loss (summed in row order, in double).
 * _index takes class indices (rows,), _dense takes target rows (rows x cols);
 * a zero target never multiplies a log, so -inf log-probabilities of classes
 * with zero target do not turn the loss into NaN.
 * _index returns MG_ELABEL, writing nothing, if a label is outside [0, cols). */
int mg_softmax_xent_forward_index(const float *logits, const int64_t *labels,
                                  float *probs, float *row_loss, float *loss,
                                  int64_t rows, int64_t cols);
int mg_softmax_xent_forward_dense(const float *logits, const float *targets,
                                  float *probs, float *row_loss, float *loss,
                                  int64_t rows, int64_t cols);
/* dZ = scale * (probs * sum_j t_ij - t), scale = upstream_grad / rows for the mean
 * (for one-hot or probability targets this is scale * (probs - t)). */
int mg_softmax_xent_backward_index(const float *probs, const int64_t *labels, float scale,
                                   float *dlogits, int64_t rows, int64_t cols);
int mg_softmax_xent_backward_dense(const float *probs, const float *targets, float scale,
                                   float *dlogits, int64_t rows, int64_t cols);

/* Row gather (a shuffled mini-batch): dst row i = src row idx[i], rows of
 * row_bytes bytes each, for any element type. Returns MG_EINVAL, writing
 * nothing, if an index is outside [0, src_rows). */
int mg_gather_rows(const void *src, int64_t src_rows, int64_t row_bytes,
                   const int64_t *idx, int64_t count, void *dst);

/* In-place optimizer updates over a list of parameters, all in one call so that
 * Python can never interrupt a step half-way (a model is updated whole or not
 * at all). Hyperparameters come in double so that 1 - rho and 1 - beta are
 * formed before rounding to float32, as Keras does (1 - 0.999f would be off by
 * 1.3e-5 relative). slot1/slot2 are the optimizer's per-parameter state arrays (n floats
 * each, or NULL where the optimizer does not use them).
 *
 * RMSprop (slot1 = v): v = rho*v + (1-rho)*g^2; w -= lr*g/sqrt(v+eps) when
 *          eps_inside (Keras 3), else w -= lr*g/(sqrt(v)+eps) (Keras 2, PyTorch).
 * SGD (slot1 = velocity, unused when momentum == 0), Keras form:
 *          velocity = momentum*velocity - lr*g; w += velocity
 *          (nesterov: w += momentum*velocity - lr*g); without momentum w -= lr*g.
 * Adam (slot1 = m, slot2 = v), Keras 3: m += (g-m)*(1-b1); v += (g^2-v)*(1-b2);
 *          w -= lr_t*m/(sqrt(v)+eps), lr_t = lr*sqrt(1-b2^t)/(1-b1^t), t = step >= 1.
 * AdamW (slot1 = m, slot2 = v, slot3 = v_hat or NULL), Keras 3 order: first the
 *          decoupled decay w -= (w*weight_decay)*lr (skipped when weight_decay == 0),
 *          then the Adam step above; with amsgrad, v_hat = max(v_hat, v) and v_hat
 *          replaces v in the denominator. weight_decay = 0 with amsgrad is Adam(amsgrad).
 * Gradient clipping (Keras 3 formulas), writing clipped copies: for each parameter,
 *          w is the destination (n floats) and g the source; the slots are unused.
 *          mode 1, clipnorm: w = g * c / max(|g|, c) per parameter (|g| its L2 norm);
 *          mode 2, global_clipnorm: w = g * c / max(G, c), G the L2 norm over all
 *          parameters, and NaN everywhere when G is not finite;
 *          mode 3, clipvalue: w = min(max(g, -c), c).
 *          Norms are sums of squares in double over fixed 8192-element chunks,
 *          added in index order, so they do not depend on the thread count. A
 *          norm below c gives the gradient back bit for bit. */
typedef struct {
    float *w;
    const float *g;
    float *slot1;
    float *slot2;
    int64_t n;
    float *slot3;
} mg_param_t;

int mg_rmsprop_update(const mg_param_t *params, int64_t count,
                      double lr, double rho, double eps, int eps_inside);
int mg_sgd_update(const mg_param_t *params, int64_t count,
                  double lr, double momentum, int nesterov);
int mg_adam_update(const mg_param_t *params, int64_t count,
                   double lr, double beta1, double beta2, double eps, int64_t step);
int mg_adamw_update(const mg_param_t *params, int64_t count,
                    double lr, double beta1, double beta2, double eps, double weight_decay,
                    int amsgrad, int64_t step);
int mg_clip_gradients(const mg_param_t *params, int64_t count, int mode, double clip);
/* How many of the three updates above returned MG_OK on the calling thread. */
uint64_t mg_optimizer_updates_done(void);
/* 2-D convolution and max pooling, NHWC (see conv.c and pool.c).
 * Geometry, shared by all of them: x is n x h x w x c; the kernel (or pool
 * window) is kh x kw with strides sh, sw; pad_top/pad_left rows/columns of
 * implicit zeros (pooling: never-winning padding) come before x, and the output
 * is oh x ow (padding after x is implied by oh, ow). MG_EINVAL for negative
 * sizes, kernel sizes or strides < 1, or products beyond int64_t.
 *
 * Convolutions unfold x (im2col: one row per output pixel (b, oy, ox), one
 * column per tap (ky, kx, ci)) a few images at a time into per-thread scratch
 * buffers that only grow (MG_ENOMEM if they cannot); the unfolded x is never
 * kept. wt is the kernel (kh, kw, c, cout) seen as (kh*kw*c) x cout, and
 * cout >= 1, kh*kw*c >= 1.
 *
 * forward: y (n x oh x ow x cout) = unfold(x) @ wt + bias (cout values, or
 * NULL), then max(y, 0) when relu. */
int mg_conv2d_forward(const float *x, const float *wt, const float *bias, float *y,
                      int64_t cout, int relu,
                      int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw,
                      int64_t sh, int64_t sw, int64_t pad_top, int64_t pad_left, int64_t oh, int64_t ow);
/* dx (n x h x w x c) = fold(dY @ wt^T), dY being n x oh x ow x cout: each dx
 * element sums the taps that read it in increasing (ky, kx) order (a gather). */
int mg_conv2d_backward_input(const float *dy, const float *wt, float *dx, int64_t cout,
                             int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw,
                             int64_t sh, int64_t sw, int64_t pad_top, int64_t pad_left,
                             int64_t oh, int64_t ow);
/* dw (kh*kw*c x cout) = unfold(x)^T @ dY: one partial product per block of
 * images (a grid fixed by the shape), added in block order. */
int mg_conv2d_backward_weight(const float *x, const float *dy, float *dw, int64_t cout,
                              int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw,
                              int64_t sh, int64_t sw, int64_t pad_top, int64_t pad_left,
                              int64_t oh, int64_t ow);
/* The same for a relu layer, with db: dZ = dY where Y > 0 else 0 (Y the layer's
 * output) is made a block at a time and never written out; dw = unfold(x)^T @ dZ,
 * db[j] = sum_i dZ[i, j] (block partials added in block order). */
int mg_conv2d_relu_backward_params(const float *x, const float *y, const float *dy, float *dw, float *db,
                                   int64_t cout,
                                   int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw,
                                   int64_t sh, int64_t sw, int64_t pad_top, int64_t pad_left,
                                   int64_t oh, int64_t ow);
/* The whole backward of a relu layer: dx as mg_conv2d_backward_input and dw, db
 * as mg_conv2d_relu_backward_params, block by block, dZ never written out. */
int mg_conv2d_relu_backward(const float *x, const float *y, const float *dy, const float *wt,
                            float *dx, float *dw, float *db, int64_t cout,
                            int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw,
                            int64_t sh, int64_t sw, int64_t pad_top, int64_t pad_left,
                            int64_t oh, int64_t ow);
/* Max pooling over kh x kw windows: y and argmax are n x oh x ow x c; argmax
 * holds flat indices into x. Padding never wins; ties go to the first maximum
 * in row-major window order; the first NaN of a window wins (NaN propagates).
 * MG_EINVAL also when a window would lie wholly in the padding.
 * Backward: dx[i] = sum of dY over the windows (oy, then ox increasing) whose
 * argmax is i; argmax entries naming no element of their window add nothing. */
int mg_max_pool2d_forward(const float *x, float *y, int64_t *argmax,
                          int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw,
                          int64_t sh, int64_t sw, int64_t pad_top, int64_t pad_left,
                          int64_t oh, int64_t ow);
int mg_max_pool2d_backward(const float *dy, const int64_t *argmax, float *dx,
                           int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw,
                           int64_t sh, int64_t sw, int64_t pad_top, int64_t pad_left,
                           int64_t oh, int64_t ow);

/* ---- element-wise activations (elementwise.c). X and Y (or dY and dX) may be
 * the same buffer. Backward passes take the forward output Y.
 * sigmoid: 1/(1+exp(-x)) for x >= 0, exp(x)/(1+exp(x)) below (no overflow,
 * no NaN for finite x, NaN propagates); dX = dY * Y * (1 - Y).
 * tanh: odd; exactly +-1 for large |x|; dX = dY * (1 - Y*Y).
 * Within 2 ulp (sigmoid) and 1 ulp (tanh) of the exact values, 0 where those
 * are below FLT_MIN. Both use a float-only exp, so the bits are the same for
 * every thread count and on every x86 CPU (AVX2 or not). */
int mg_sigmoid_forward(const float *x, float *y, int64_t n);
int mg_sigmoid_backward(const float *y, const float *dy, float *dx, int64_t n);
int mg_tanh_forward(const float *x, float *y, int64_t n);
int mg_tanh_backward(const float *y, const float *dy, float *dx, int64_t n);

/* Inverted dropout. The step is read from *counter, which is then incremented
 * (so replaying a recorded call draws a fresh mask each time); element i of
 * step s under seed is kept iff word i%4 of Philox-4x32-10 with counter
 * (i/4 low, high, s low, high) and key (seed low, high) is >= ceil(rate * 2^32),
 * i.e. iff u = word / 2^32 >= rate. Kept: Y = X * scale and mask = scale with
 * scale = (float)(1 / (1 - rate)); dropped: 0 in both. Depends only on
 * (seed, step, i). MG_EINVAL unless 0 <= rate < 1 and 0 <= *counter < INT64_MAX.
 * X and Y may be the same buffer. */
int mg_dropout_forward(const float *x, float *y, float *mask, int64_t n, double rate,
                       uint64_t seed, int64_t *counter);
/* dX = dY * mask where mask != 0, else 0 (the forward's mask first, as the
 * activations take their forward output first). dY and dX may be the same buffer. */
int mg_dropout_backward(const float *mask, const float *dy, float *dx, int64_t n);
/* One Philox-4x32-10 block from dropout's generator (for known-answer tests). */
int mg_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

/* ---- fused sigmoid + binary cross-entropy on logits (losses.c), over n elements
 * of any shape. Forward: probs = sigmoid(Z) (bitwise mg_sigmoid_forward) and
 * *loss = mean of max(z,0) - z*t + log1p(exp(-|z|)) over all n elements (Keras'
 * mean over the last axis, then over the batch), summed in double in an order
 * fixed by n alone: within each chunk of 8192 elements, element i goes to
 * accumulator i % 8 in index order, the 8 are added pairwise; then the chunks
 * in order. 0 when n == 0; MG_ENOMEM if the per-chunk sums (n > 8192) cannot be
 * allocated. Backward: dZ = scale * (probs - t), scale = upstream_grad / n. */
int mg_sigmoid_bce_forward(const float *logits, const float *targets, float *probs, float *loss,
                           int64_t n);
int mg_sigmoid_bce_backward(const float *probs, const float *targets, float scale,
                            float *dlogits, int64_t n);
/* CDEF END */

#endif
