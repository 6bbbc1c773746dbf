/* The forward and backward pass of a stack of dense layers with a softmax
 * cross-entropy on top, in one call from Python (minigrad/train_plan.py).
 * It calls exactly the kernels the autograd graph calls, with the same
 * arguments in the same order, so its numbers are the graph's bit for bit;
 * what it saves is eleven trips through Python per training step. */
#include <math.h>
#include <stddef.h>
#include "minigrad.h"

int mg_dense_forward_backward(const mg_dense_layer_t *layers, int64_t count, int64_t rows,
                              const float *x, const void *target, int sparse_target,
                              float *probs, float *row_loss, float *dlogits, float *loss)
{
    if (count <= 0 || rows <= 0)
        return MG_EINVAL;
    int status;
    const float *in = x;
    for (int64_t i = 0; i < count; i++) { /* forward: y = x @ W + b [relu] */
        const mg_dense_layer_t *L = &layers[i];
        status = mg_gemm(0, 0, rows, L->units, L->k, 1.0f, in, L->k, L->w, L->units,
                         0.0f, L->y, L->units, L->b, L->relu);
        if (status != MG_OK)
            return status;
        in = L->y;
    }
    const mg_dense_layer_t *top = &layers[count - 1];
    status = sparse_target
        ? mg_softmax_xent_forward_index(top->y, (const int64_t *)target, probs, row_loss, loss,
                                        rows, top->units)
        : mg_softmax_xent_forward_dense(top->y, (const float *)target, probs, row_loss, loss,
                                        rows, top->units);
    if (status != MG_OK || !isfinite(*loss))
        return status; /* a NaN/inf loss gets no backward pass: no update will follow */
    float scale = (float)(1.0 / (double)rows); /* d(mean)/d(row loss), as the graph's float */
    status = sparse_target
        ? mg_softmax_xent_backward_index(probs, (const int64_t *)target, scale, dlogits, rows,
                                         top->units)
        : mg_softmax_xent_backward_dense(probs, (const float *)target, scale, dlogits, rows,
                                         top->units);
    if (status != MG_OK)
        return status;
    const float *grad = dlogits;
    for (int64_t i = count - 1; i >= 0; i--) { /* backward, as ops.Dense.backward */
        const mg_dense_layer_t *L = &layers[i];
        if (!(L->need_w || L->need_b || L->need_x))
            break; /* nothing here or below needs a gradient */
        const float *dz = grad;
        if (L->relu) {
            status = mg_relu_backward_bias_grad(L->y, grad, L->dz, L->db, rows, L->units);
            dz = L->dz;
        } else if (L->need_b) {
            status = mg_bias_grad(grad, L->db, rows, L->units);
        }
        if (status != MG_OK)
            return status;
        const float *layer_in = i > 0 ? layers[i - 1].y : x;
        if (L->need_w) { /* dW = x.T @ dz */
            status = mg_gemm(1, 0, L->k, L->units, rows, 1.0f, layer_in, L->k, dz, L->units,
                             0.0f, L->dw, L->units, NULL, 0);
            if (status != MG_OK)
                return status;
        }
        if (L->need_x) { /* dx = dz @ W.T */
            status = mg_gemm(0, 1, rows, L->k, L->units, 1.0f, dz, L->units, L->w, L->units,
                             0.0f, L->dx, L->k, NULL, 0);
            if (status != MG_OK)
                return status;
        }
        grad = L->dx;
    }
    return MG_OK;
}
