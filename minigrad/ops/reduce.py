"""Reductions beyond sum and mean: max, min (the gradient goes to the first
extremum only; with ``dim``, PyTorch's (values, indices)), argmax, argmin (int64
Tensors, not differentiable) and log_softmax along any axis.
"""
import collections

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

# What max(dim) and min(dim) return, as torch.return_types.max: (values, indices)
ValuesIndices = collections.namedtuple("ValuesIndices", ["values", "indices"])


def _extreme(function, op, x, dim, keepdim, axis, keepdims):
    if isinstance(dim, (Tensor, np.ndarray)):  # torch.max(a, b): the element-wise maximum
        if keepdim is not None or axis is not None or keepdims is not None:
            raise TypeError(f"{op}: expected ({op}(a, b)) no axis arguments with a second tensor")
        from .elementwise import maximum, minimum
        return (maximum if op == "max" else minimum)(x, dim)
    x = _tensor(x, op)
    with_indices = dim is not None  # PyTorch's max(dim): values and indices
    axis, keepdims = _axis_args(op, axis, dim, keepdims, keepdim)
    if axis is not None:
        axis = _one_axis(axis, x.ndim, op)
        if x.ndim == 0:
            axis = None
    if x.data.dtype == _F32:
        values = function.apply(x, axis=axis, keepdims=keepdims)
    else:  # int64 or bool: the values, not differentiable
        _check_not_empty(op, x.data, axis)
        values = Tensor._wrap(call_as(x.data.dtype, np.max if op == "max" else np.min, x.data,
                                      axis=axis, keepdims=keepdims), False)
    if not with_indices:
        return values
    return ValuesIndices(values, _arg(function.arg, "arg" + op, x, axis, None, keepdims, None))


def max(x, dim=None, keepdim=None, *, axis=None, keepdims=None):  # noqa: A001
    """The largest value, as PyTorch: ``t.max()`` the largest element; ``t.max(dim)``
    (or ``dim=``) the pair ``(values, indices)`` along dim; ``mg.max(a, b)`` the
    element-wise maximum. NumPy's ``axis=`` gives the values only. The gradient
    goes to the first maximum.

    >>> import minigrad as mg
    >>> t = mg.Tensor([[1.0, 3.0, 3.0]], requires_grad=True)
    >>> values, indices = t.max(dim=1)
    >>> values.backward(); t.grad.tolist(), indices.tolist()
    ([[0.0, 1.0, 0.0]], [1])
    """
    return _extreme(Max, "max", x, dim, keepdim, axis, keepdims)


def min(x, dim=None, keepdim=None, *, axis=None, keepdims=None):  # noqa: A001
    """The smallest value (see ``max``); the gradient goes to the first minimum."""
    return _extreme(Min, "min", x, dim, keepdim, axis, keepdims)


def _check_not_empty(op, data, axis):
    if data.size == 0 or (axis is not None and data.shape[axis] == 0):
        raise ValueError(f"{op}: expected at least one value along axis {axis}, received "
                         f"shape {data.shape}")


def _arg(function, op, x, axis, dim, keepdims, keepdim):
    data = _tensor(x, op).data
    axis, keepdims = _axis_args(op, axis, dim, keepdims, keepdim)
    if axis is not None:
        axis = _one_axis(axis, data.ndim, op)
        if data.ndim == 0:
            axis = None
    _check_not_empty(op, data, axis)
    return Tensor._wrap(call_as(np.int64, function, data, axis=axis, keepdims=keepdims), False)


def argmax(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """Index of the first maximum along ``axis``/``dim`` (of the flattened tensor when
    None), as an int64 Tensor (indices are not differentiable).

    >>> import minigrad as mg
    >>> mg.argmax(mg.Tensor([[1.0, 5.0], [7.0, 2.0]]), dim=1)
    Tensor([1, 0], dtype=int64)
    """
    return _arg(np.argmax, "argmax", x, axis, dim, keepdims, keepdim)


def argmin(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """Index of the first minimum along ``axis``/``dim``, as an int64 Tensor."""
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
    T.max = lambda self, dim=None, keepdim=None, *, axis=None, keepdims=None: max(
        self, dim, keepdim, axis=axis, keepdims=keepdims)
    T.min = lambda self, dim=None, keepdim=None, *, axis=None, keepdims=None: min(
        self, dim, keepdim, axis=axis, keepdims=keepdims)
    T.argmax = lambda self, axis=None, keepdims=None, *, dim=None, keepdim=None: argmax(
        self, axis, keepdims, dim=dim, keepdim=keepdim)
    T.argmin = lambda self, axis=None, keepdims=None, *, dim=None, keepdim=None: argmin(
        self, axis, keepdims, dim=dim, keepdim=keepdim)
    T.log_softmax = lambda self, axis=None, dim=None: log_softmax(self, axis, dim)
