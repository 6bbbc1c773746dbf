"""Bias, relu and the fused softmax + cross-entropy kernels (part of ``minigrad.kernels``)."""

import numpy as np

from . import (_any_input, _describe, _in_place, _input, _labels, _labels_explained, _output, _ptr, _run,
               _same_shape, _scalar, ffi, lib, plain_array)


def add_bias(x, b, out=None):
    """out = x + b with b broadcast over rows; out may be x itself."""
    op = "add_bias"
    given = (("x", x), ("b", b))
    x = _input(op, "x", x, 2)
    b = _input(op, "b", b, 1)
    if b.shape != (x.shape[1],):
        raise ValueError(f"{op}: expected (N, C) + (C,), received {x.shape} + {b.shape}")
    if out is not x:
        out = _output(op, "out", out, x.shape, given + (("x", x), ("b", b)))
    else:
        _in_place(op, "out", out, given[1:] + (("b", b),))
    _run(op, lib.mg_add_bias, (_ptr(x), _ptr(b), _ptr(out), x.shape[0], x.shape[1]), (out,))
    return out


def bias_grad(dy, out=None):
    """Column sums of dy (the gradient of a bias added over rows)."""
    op = "bias_grad"
    given = (("dy", dy),)
    dy = _input(op, "dy", dy, 2)
    out = _output(op, "out", out, (dy.shape[1],), given + (("dy", dy),))
    _run(op, lib.mg_bias_grad, (_ptr(dy), _ptr(out), dy.shape[0], dy.shape[1]), (out,))
    return out


# ---------------------------------------------------------------- relu

def relu_forward(x, out=None):
    """out = max(x, 0); out may be x itself."""
    op = "relu_forward"
    given = (("x", x),)
    x = _any_input(op, "x", x)
    if out is not x:
        out = _output(op, "out", out, x.shape, given + (("x", x),))
    else:
        _in_place(op, "out", out)
    _run(op, lib.mg_relu_forward, (_ptr(x), _ptr(out), x.size), (out,))
    return out


def relu_backward(y, dy, out=None):
    """out = dy where y > 0 else 0, with y the forward output; out may be dy itself."""
    op = "relu_backward"
    given = (("y", y), ("dy", dy))
    y = _any_input(op, "y", y)
    dy = _any_input(op, "dy", dy)
    _same_shape(op, "y and dy", y, dy)
    if out is not dy:
        out = _output(op, "out", out, y.shape, given + (("y", y), ("dy", dy)))
    else:
        _in_place(op, "out", out, given[:1] + (("y", y),))
    _run(op, lib.mg_relu_backward, (_ptr(y), _ptr(dy), _ptr(out), y.size), (out,))
    return out


def relu_backward_bias_grad(y, dy, out=None, db_out=None):
    """(dx, db): dx = dy * (y > 0) and db = column sums of dx, in one pass."""
    op = "relu_backward_bias_grad"
    given = (("y", y), ("dy", dy))
    y = _input(op, "y", y, 2)
    dy = _input(op, "dy", dy, 2)
    _same_shape(op, "y and dy", y, dy)
    if out is not dy:
        out = _output(op, "out", out, y.shape, given + (("y", y), ("dy", dy)))
    else:
        _in_place(op, "out", out, given[:1] + (("y", y),))
    db_out = _output(op, "db_out", db_out, (y.shape[1],), given + (("y", y), ("dy", dy), ("out", out)))
    _run(op, lib.mg_relu_backward_bias_grad,
         (_ptr(y), _ptr(dy), _ptr(out), _ptr(db_out), y.shape[0], y.shape[1]), (out, db_out))
    return out, db_out


# ---------------------------------------------------------------- softmax + cross-entropy

def _logits_and_target(op, logits, target):
    logits = _input(op, "logits", logits, 2)
    rows, cols = logits.shape
    if cols == 0:
        raise ValueError(f"{op}: expected at least one class, received logits of shape {logits.shape}")
    target = plain_array(op, "target", target)
    if not isinstance(target, np.ndarray):
        raise TypeError(f"{op}: expected target to be a numpy array, received {_describe(target)}")
    if target.ndim == 1:
        return logits, _labels(op, target, rows, cols), True
    target = _input(op, "target", target, 2)
    if target.shape != logits.shape:
        raise ValueError(f"{op}: expected target of shape {logits.shape} (or class indices of "
                         f"shape ({rows},)), received {target.shape}")
    return logits, target, False


def softmax_xent_forward(logits, target, probs_out=None, row_loss_out=None, loss_out=None):
    """(loss, probs, row_loss): mean cross-entropy of softmax(logits) against target.

    target is either integer class indices (N,) or float rows (N, C); loss is a
    0-d float32 array (``loss_out`` when given).
    """
    op = "softmax_xent_forward"
    logits, target, is_index = _logits_and_target(op, logits, target)
    rows, cols = logits.shape
    probs_out = _output(op, "probs_out", probs_out, (rows, cols), (("logits", logits), ("target", target)))
    row_loss_out = _output(op, "row_loss_out", row_loss_out, (rows,),
                           (("logits", logits), ("target", target), ("probs_out", probs_out)))
    loss_out = _output(op, "loss_out", loss_out, (), (("logits", logits), ("target", target),
                                                      ("probs_out", probs_out),
                                                      ("row_loss_out", row_loss_out)))
    if is_index:
        _run(op, lib.mg_softmax_xent_forward_index,
             (_ptr(logits), ffi.from_buffer("int64_t[]", target), _ptr(probs_out),
              _ptr(row_loss_out), _ptr(loss_out), rows, cols), (probs_out, row_loss_out, loss_out),
             _labels_explained(op, target, cols))
    else:
        _run(op, lib.mg_softmax_xent_forward_dense,
             (_ptr(logits), _ptr(target), _ptr(probs_out), _ptr(row_loss_out), _ptr(loss_out),
              rows, cols), (probs_out, row_loss_out, loss_out))
    return loss_out, probs_out, row_loss_out


def softmax_xent_backward(probs, target, scale, out=None):
    """out = scale * (probs * target_row_sum - target); scale is upstream_grad / N for the mean."""
    op = "softmax_xent_backward"
    probs, target, is_index = _logits_and_target(op, probs, target)
    rows, cols = probs.shape
    scale = _scalar(op, "scale", scale)
    out = _output(op, "out", out, (rows, cols), (("probs", probs), ("target", target)))
    if is_index:
        _run(op, lib.mg_softmax_xent_backward_index,
             (_ptr(probs), ffi.from_buffer("int64_t[]", target), scale, _ptr(out), rows, cols), (out,),
             _labels_explained(op, target, cols))
    else:
        _run(op, lib.mg_softmax_xent_backward_dense,
             (_ptr(probs), _ptr(target), scale, _ptr(out), rows, cols), (out,))
    return out


