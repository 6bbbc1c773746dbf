"""NumPy twins of the C kernels in ``minigrad.kernels``: same names, same signatures,
same semantics. Tests compare each kernel against its twin; the twins are also
readable documentation of what each kernel computes.

>>> import numpy as np
>>> from minigrad import reference
>>> reference.relu_forward(np.array([-1.0, 0.0, 2.0], np.float32))
array([0., 0., 2.], dtype=float32)
"""
import numpy as np

F32 = np.float32


def _out(out, value):
    if out is None:
        return np.array(value, dtype=F32, order="C")  # keeps 0-d shapes (ascontiguousarray would not)
    out[...] = value
    return out


def set_num_threads(n):
    """The NumPy twins are single-threaded; accepted for signature parity."""


def get_num_threads():
    return 1


def gemm(a, b, out=None, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0,
         bias=None, relu=False):
    opa = a.T if trans_a else a
    opb = b.T if trans_b else b
    if alpha == 0.0 or opa.shape[1] == 0:  # BLAS convention: a and b (and alpha) are not used
        result = np.zeros((opa.shape[0], opb.shape[1]))
    else:
        result = alpha * (opa.astype(np.float64) @ opb.astype(np.float64))
    if beta != 0.0:
        result = result + beta * out.astype(np.float64)
    if bias is not None:
        result = result + bias
    result = result.astype(F32)
    if relu:
        result = np.where(result < 0, F32(0), result)
    return _out(out, result)


def add_bias(x, b, out=None):
    return _out(out, x + b)


def bias_grad(dy, out=None):
    return _out(out, dy.sum(axis=0, dtype=np.float64))


def relu_forward(x, out=None):
    return _out(out, np.where(x < 0, F32(0), x))


def relu_backward(y, dy, out=None):
    return _out(out, np.where(y > 0, dy, F32(0)))


def relu_backward_bias_grad(y, dy, out=None, db_out=None):
    dx = relu_backward(y, dy, out)
    return dx, bias_grad(dx, db_out)


def _log_softmax(logits):
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _dense_target(target, shape):
    if target.ndim == 1:
        dense = np.zeros(shape, dtype=np.float64)
        dense[np.arange(shape[0]), target] = 1.0
        return dense
    return target.astype(np.float64)


def softmax_xent_forward(logits, target, probs_out=None, row_loss_out=None, loss_out=None):
    log_p = _log_softmax(logits)
    t = _dense_target(target, logits.shape)
    # a zero target never multiplies a log (0 * -inf would be NaN)
    row_loss = -np.where(t != 0, t * log_p, 0.0).sum(axis=1)
    loss = row_loss.mean() if len(row_loss) else 0.0
    return _out(loss_out, loss), _out(probs_out, np.exp(log_p)), _out(row_loss_out, row_loss)


def softmax_xent_backward(probs, target, scale, out=None):
    t = _dense_target(target, probs.shape)
    p = probs.astype(np.float64)
    return _out(out, scale * (p * t.sum(axis=1, keepdims=True) - t))


def gather_rows(src, idx, out=None):
    idx = np.asarray(idx)
    if idx.size and (idx.min() < 0 or idx.max() >= len(src)):
        raise ValueError("gather_rows: index out of range")
    rows = src[idx.astype(np.int64)]  # reads only these rows (np.take copies a strided src whole)
    if out is None:
        return rows
    out[...] = rows
    return out


class RowGather:
    """Twin of kernels.RowGather: rows of src in the given order, batch by batch."""

    def __init__(self, src, max_rows):
        self._src, self.buffer, self._order = src, np.empty((max_rows,) + src.shape[1:], src.dtype), None

    def set_order(self, order):
        self._order = np.array(order, dtype=np.int64)

    def take(self, start, stop):
        return gather_rows(self._src, self._order[start:stop], self.buffer[:stop - start])


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def rmsprop_update(w, g, v, lr, rho, eps, eps_inside=True):
    for w, g, v in zip(_as_list(w), _as_list(g), _as_list(v)):
        v[...] = F32(rho) * v + F32(1 - rho) * g * g
        denom = np.sqrt(v + F32(eps)) if eps_inside else np.sqrt(v) + F32(eps)
        w -= F32(lr) * g / denom


def sgd_update(w, g, velocity, lr, momentum=0.0, nesterov=False):
    velocities = _as_list(velocity) if momentum != 0.0 else [None] * len(_as_list(w))
    for w, g, vel in zip(_as_list(w), _as_list(g), velocities):
        if momentum == 0.0:
            w -= F32(lr) * g
            continue
        vel[...] = F32(momentum) * vel - F32(lr) * g
        w += (F32(momentum) * vel - F32(lr) * g) if nesterov else vel


def adam_update(w, g, m, v, lr, beta1, beta2, eps, step):
    alpha = F32(lr * np.sqrt(1 - beta2 ** step) / (1 - beta1 ** step))
    for w, g, m, v in zip(_as_list(w), _as_list(g), _as_list(m), _as_list(v)):
        m += (g - m) * F32(1 - beta1)
        v += (g * g - v) * F32(1 - beta2)
        w -= alpha * m / (np.sqrt(v) + F32(eps))
