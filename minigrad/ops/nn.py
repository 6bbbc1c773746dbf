"""The neural-network ops the layers and losses use: dropout, the fused sigmoid +
binary cross-entropy, and per-sample weighting of the fused losses.

Dropout runs in the C kernels (forward and backward); the fused losses write
their probabilities too, for the metrics.

>>> import numpy as np, minigrad as mg
>>> from minigrad.ops import nn
>>> z = mg.Tensor([[0.0]], requires_grad=True)
>>> loss = nn.sigmoid_binary_cross_entropy(z, np.array([[1.0]], np.float32))
>>> round(loss.item(), 4)
0.6931
>>> loss.backward(); z.grad
array([[-0.5]], dtype=float32)
"""
import numpy as np

from .. import kernels
from ..function import Function
from ..kernels.tape import ufunc
from ..tensor import Tensor

_F32 = np.dtype(np.float32)


def _tensor(x, op):
    if isinstance(x, Tensor):
        return x
    try:
        return Tensor(x)
    except TypeError:
        raise TypeError(f"{op}: expected a Tensor or array, received {type(x).__name__}") from None


class Dropout(Function):
    """Inverted dropout: kept values scaled by 1 / (1 - rate); the mask of step
    ``counter.value`` under ``seed`` (then the counter advances), see
    ``kernels.dropout_forward``."""
    @staticmethod
    def forward(ctx, x, rate, seed, counter):
        y, mask = kernels.dropout_forward(x, rate, seed, counter)
        ctx.save_for_backward(mask)
        return y

    @staticmethod
    def backward(ctx, grad):
        return kernels.dropout_backward(grad, ctx.saved[0]), None, None, None


class SigmoidBinaryCrossEntropy(Function):
    """Mean over all elements of the binary cross-entropy of sigmoid(logits) against
    target, fused and stable (max(z, 0) - z t + log(1 + exp(-|z|))).

    ``weights`` (optional, one per row) turn the mean into sum(w_i * row mean_i) / rows;
    ``probs`` (optional list) receives sigmoid(logits) for the metrics.
    """
    @staticmethod
    def forward(ctx, logits, target, weights=None, probs=None):
        loss, p = kernels.sigmoid_bce_forward(logits, target)
        if weights is not None:
            row = ufunc(np.subtract, ufunc(np.maximum, logits, _F32.type(0)),
                        ufunc(np.multiply, logits, target))
            row = ufunc(np.add, row, ufunc(np.log1p, ufunc(np.exp, ufunc(np.negative, ufunc(np.abs, logits)))))
            loss = _weighted_mean(row, weights)
        ctx.save_for_backward(p, target, weights)
        if probs is not None:
            probs.append(p)
        return loss

    @staticmethod
    def backward(ctx, grad):
        p, target, weights = ctx.saved
        d = kernels.sigmoid_bce_backward(p, target, 1.0 / p.size if p.size else 0.0)
        if weights is not None:
            d = ufunc(np.multiply, d, weights.reshape((-1,) + (1,) * (d.ndim - 1)))
        return ufunc(np.multiply, d, grad), None


def _weighted_mean(row_values, weights):
    """sum over rows of weights * (mean of the row's values) / rows, as Keras'
    'sum_over_batch_size' reduction of a weighted loss."""
    per_row = kernels.tape.call(np.mean, row_values, axis=tuple(range(1, row_values.ndim)))
    total = kernels.tape.call(np.sum, ufunc(np.multiply, per_row, weights))
    return ufunc(np.divide, total, _F32.type(max(len(weights), 1)))


class SoftmaxCrossEntropyWeighted(Function):
    """The fused softmax + cross-entropy with one weight per row:
    sum_i w_i * loss_i / rows (Keras' sample_weight)."""
    @staticmethod
    def forward(ctx, logits, target, weights, probs=None):
        _, p, row_loss = kernels.softmax_xent_forward(logits, target)
        ctx.save_for_backward(p, target, weights)
        if probs is not None:
            probs.append(p)
        return _weighted_mean(row_loss, weights)

    @staticmethod
    def backward(ctx, grad):
        p, target, weights = ctx.saved
        rows = p.shape[0]
        d = kernels.softmax_xent_backward(p, target, 1.0 / rows if rows else 0.0)
        d = ufunc(np.multiply, d, weights.reshape(-1, 1))
        return ufunc(np.multiply, d, grad), None, None


# ---------------------------------------------------------------- functional forms

def dropout(x, rate, seed, counter):
    """Inverted dropout of x (see ``Dropout``); identity when rate == 0."""
    x = _tensor(x, "dropout")
    if rate == 0:
        return x
    return Dropout.apply(x, rate, seed, counter)


def sigmoid_binary_cross_entropy(logits, target, sample_weight=None, probs=None):
    """Mean binary cross-entropy of sigmoid(logits) against target (same shape), fused."""
    logits = _tensor(logits, "sigmoid_binary_cross_entropy")
    target = target.data if isinstance(target, Tensor) else np.asarray(target)
    if target.dtype != _F32:
        target = kernels.tape.copy(target)
    return SigmoidBinaryCrossEntropy.apply(logits, target, weights=_weights(sample_weight),
                                           probs=probs)


def softmax_cross_entropy_weighted(logits, target, sample_weight, probs=None):
    """The fused softmax cross-entropy with per-row weights."""
    logits = _tensor(logits, "softmax_cross_entropy")
    target = target.data if isinstance(target, Tensor) else np.asarray(target)
    if target.ndim == 2 and target.dtype != _F32:
        target = kernels.tape.copy(target)
    return SoftmaxCrossEntropyWeighted.apply(logits, target, _weights(sample_weight), probs=probs)


def _weights(sample_weight):
    if sample_weight is None:
        return None
    w = sample_weight.data if isinstance(sample_weight, Tensor) else np.asarray(sample_weight)
    return w if w.dtype == _F32 and w.flags.c_contiguous else kernels.tape.copy(w)
