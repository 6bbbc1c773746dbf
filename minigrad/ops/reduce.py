"""Reductions beyond sum and mean: max, min (values; the gradient goes to the first
extremum only), argmax, argmin (int64 NumPy arrays, not differentiable) and
log_softmax along any axis.
"""
import numpy as np

from ..function import Function
from ..kernels.tape import call, call_as, ufunc
from ..tensor import Tensor
from . import _axis_args, _one_axis, _pick, _tensor

_F32 = np.dtype(np.float32)


def _scatter(grad, index, axis, shape):
    """Zeros of shape with grad placed at index along axis (one position per lane)."""
    out = np.zeros(shape, _F32)
    np.put_along_axis(out, index, grad, axis)
    return out


class _Extreme(Function):
    """The value of the first maximum (or minimum) along one axis, or of all elements.

    np.argmax/argmin return the first extremum (and the first NaN, so NaN propagates);
    backward puts the whole gradient there.
    """
    arg = None

    @classmethod
    def forward(cls, ctx, x, axis=None, keepdims=False):
        flat = x.reshape(-1) if axis is None else x
        along = 0 if axis is None else axis
        if flat.shape[along] == 0:
            raise ValueError(f"{cls.name}: expected at least one value along axis {axis}, "
                             f"received shape {x.shape}")
        index = call_as(np.int64, cls.arg, flat, axis=along, keepdims=True)
        values = call(np.take_along_axis, flat, index, axis=along)
        ctx.index, ctx.along, ctx.flat_shape, ctx.in_shape = index, along, flat.shape, x.shape
        if keepdims:
            shape = (1,) * x.ndim if axis is None else values.shape
        else:
            shape = () if axis is None else x.shape[:axis] + x.shape[axis + 1:]
        return values.reshape(shape)

    @classmethod
    def backward(cls, ctx, grad):
        g = call(_scatter, grad.reshape(ctx.index.shape), ctx.index, ctx.along, ctx.flat_shape)
        return g.reshape(ctx.in_shape)


class Max(_Extreme):
    name, arg = "max", np.argmax


class Min(_Extreme):
    name, arg = "min", np.argmin


class LogSoftmax(Function):
    """x - max - log(sum(exp(x - max))) along one axis; backward: g - softmax * sum(g)."""
    @staticmethod
    def forward(ctx, x, axis=-1):
        if x.ndim and x.shape[axis] == 0:  # a 0-d x is one value (NumPy reduces it along axis 0)
            where = "the last axis" if axis == x.ndim - 1 else f"axis {axis}"
            raise ValueError(f"log_softmax: expected at least one value along {where}, "
                             f"received shape {x.shape}")
        shifted = ufunc(np.subtract, x, call(np.max, x, axis=axis, keepdims=True))
        total = call(np.sum, ufunc(np.exp, shifted), axis=axis, keepdims=True)
        y = ufunc(np.subtract, shifted, ufunc(np.log, total))
        ctx.axis = axis
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        total = call(np.sum, grad, axis=ctx.axis, keepdims=True)
        return ufunc(np.subtract, grad, ufunc(np.multiply, ufunc(np.exp, y), total))


# ---------------------------------------------------------------- functional entry points

def _extreme(function, op, x, axis, dim, keepdims, keepdim):
    x = _tensor(x, op)
    axis, keepdims = _axis_args(op, axis, dim, keepdims, keepdim)
    if axis is not None:
        axis = _one_axis(axis, x.ndim, op)
        if x.ndim == 0:
            axis = None
    return function.apply(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=None, *, dim=None, keepdim=None):  # noqa: A001
    """The largest value along ``axis`` (or of all elements); the gradient goes to the
    first maximum only. Returns the values, not PyTorch's (values, indices) pair:
    ``argmax`` gives the indices.

    >>> import minigrad as mg
    >>> t = mg.Tensor([[1.0, 3.0, 3.0]], requires_grad=True)
    >>> m = mg.max(t, axis=1); m.backward(); t.grad.tolist()
    [[0.0, 1.0, 0.0]]
    """
    return _extreme(Max, "max", x, axis, dim, keepdims, keepdim)


def min(x, axis=None, keepdims=None, *, dim=None, keepdim=None):  # noqa: A001
    """The smallest value along ``axis`` (or of all elements); gradient to the first minimum."""
    return _extreme(Min, "min", x, axis, dim, keepdims, keepdim)


def _arg(function, op, x, axis, dim, keepdims, keepdim):
    data = _tensor(x, op).data
    axis, keepdims = _axis_args(op, axis, dim, keepdims, keepdim)
    if axis is not None:
        axis = _one_axis(axis, data.ndim, op)
        if data.ndim == 0:
            axis = None
    if data.size == 0 or (axis is not None and data.shape[axis] == 0):
        raise ValueError(f"{op}: expected at least one value along axis {axis}, received "
                         f"shape {data.shape}")
    return call_as(np.int64, function, data, axis=axis, keepdims=keepdims)


def argmax(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """Index of the first maximum along ``axis`` (of the flattened tensor when None), as a
    NumPy int64 array: indices are not differentiable and Tensors hold float32.

    >>> import minigrad as mg
    >>> mg.argmax(mg.Tensor([[1.0, 5.0], [7.0, 2.0]]), dim=1).tolist()
    [1, 0]
    """
    return _arg(np.argmax, "argmax", x, axis, dim, keepdims, keepdim)


def argmin(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """Index of the first minimum along ``axis``, as a NumPy int64 array."""
    return _arg(np.argmin, "argmin", x, axis, dim, keepdims, keepdim)


def log_softmax(x, axis=None, dim=None):
    """log(softmax(x)) along ``axis`` (or ``dim``), the last by default, computed stably.

    >>> import minigrad as mg
    >>> round(float(mg.log_softmax(mg.Tensor([0.0, 0.0]))[0]), 4)
    -0.6931
    """
    x = _tensor(x, "log_softmax")
    axis = _one_axis(_pick("log_softmax", "axis", axis, "dim", dim, -1), x.ndim, "log_softmax")
    return LogSoftmax.apply(x, axis=axis)


def _install():
    T = Tensor
    T.max = lambda self, axis=None, keepdims=None, *, dim=None, keepdim=None: max(
        self, axis, keepdims, dim=dim, keepdim=keepdim)
    T.min = lambda self, axis=None, keepdims=None, *, dim=None, keepdim=None: min(
        self, axis, keepdims, dim=dim, keepdim=keepdim)
    T.argmax = lambda self, axis=None, keepdims=None, *, dim=None, keepdim=None: argmax(
        self, axis, keepdims, dim=dim, keepdim=keepdim)
    T.argmin = lambda self, axis=None, keepdims=None, *, dim=None, keepdim=None: argmin(
        self, axis, keepdims, dim=dim, keepdim=keepdim)
    T.log_softmax = lambda self, axis=None, dim=None: log_softmax(self, axis, dim)
