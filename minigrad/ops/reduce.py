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


# ---------------------------------------------------------------- more reductions (PyTorch's names)

import builtins  # noqa: E402  (this module's max and min shadow the builtins)

from . import _expand_reduced, _normalize_axis  # noqa: E402
from .elementwise import Sqrt as _Sqrt  # noqa: E402


def _count(shape, axes):
    return int(np.prod([shape[a] for a in axes], dtype=np.int64))


def _require_values(op, shape, axes, axis):
    if _count(shape, axes) == 0:
        raise ValueError(f"{op}: expected at least one element along axis {axis}, received "
                         f"shape {shape}")


class Var(Function):
    """sum((x - mean)^2) / (n - correction) over axes; backward: 2 (x - mean) / (n - correction)."""
    @staticmethod
    def forward(ctx, x, axes=(), keepdims=False, correction=1):
        n = _count(x.shape, axes)
        divisor = _F32.type(builtins.max(n - correction, 0))  # n <= correction: inf or NaN, as torch
        centred = ufunc(np.subtract, x, call(np.mean, x, axis=axes, keepdims=True))
        total = call(np.sum, ufunc(np.multiply, centred, centred), axis=axes, keepdims=keepdims)
        ctx.in_shape, ctx.axes, ctx.divisor = x.shape, axes, divisor
        ctx.save_for_backward(centred)
        with np.errstate(divide="ignore", invalid="ignore"):
            return ufunc(np.divide, total, divisor)

    @staticmethod
    def backward(ctx, grad):
        (centred,) = ctx.saved
        g = _expand_reduced(grad, ctx.in_shape, ctx.axes)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = ufunc(np.divide, ufunc(np.add, centred, centred), ctx.divisor)
        return ufunc(np.multiply, g, scale)


def _products_of_the_others(x, axes):
    """For each element, the product of the other elements of its reduction group:
    the exclusive prefix product times the exclusive suffix product (no division, so
    zeros are handled)."""
    rest = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(x, rest + list(axes))
    lanes = moved.reshape(moved.shape[:len(rest)] + (_count(x.shape, axes),))
    if lanes.shape[-1] == 0:  # an empty product: no element, no gradient
        return np.zeros(x.shape, _F32)
    ones = np.ones(lanes.shape[:-1] + (1,), _F32)
    before = np.cumprod(np.concatenate([ones, lanes[..., :-1]], axis=-1), axis=-1, dtype=_F32)
    after = np.cumprod(np.concatenate([ones, lanes[..., :0:-1]], axis=-1), axis=-1, dtype=_F32)[..., ::-1]
    others = (before * after).reshape(moved.shape)
    return np.transpose(others, np.argsort(rest + list(axes)))


class Prod(Function):
    @staticmethod
    def forward(ctx, x, axes=(), keepdims=False):
        ctx.in_shape, ctx.axes = x.shape, axes
        ctx.save_for_backward(x)
        return call(np.prod, x, axis=axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        g = _expand_reduced(grad, ctx.in_shape, ctx.axes)
        return ufunc(np.multiply, g, call(_products_of_the_others, x, ctx.axes))


def _reverse_cumsum(grad, axis):
    return np.flip(np.cumsum(np.flip(grad, axis), axis=axis, dtype=_F32), axis)


class Cumsum(Function):
    """Running sums along one axis, in index order; backward: the reversed running sums."""
    @staticmethod
    def forward(ctx, x, axis=0):
        ctx.axis = axis
        return call(np.cumsum, x, axis=axis, dtype=_F32)

    @staticmethod
    def backward(ctx, grad):
        return call(_reverse_cumsum, grad, ctx.axis)


def _norm_value(x, p, axes, keepdims):
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        a = np.abs(x)
        if p == 1:
            return np.sum(a, axis=axes, keepdims=keepdims, dtype=_F32)
        if p == 2:
            return np.sqrt(np.sum(a * a, axis=axes, keepdims=keepdims, dtype=_F32))
        if p == np.inf:
            return np.max(a, axis=axes, keepdims=keepdims)
        p32 = _F32.type(p)
        return np.power(np.sum(np.power(a, p32), axis=axes, keepdims=keepdims, dtype=_F32),
                        _F32.type(1) / p32)


def _norm_grad(grad, x, norm, p, axes, in_shape):
    """PyTorch's norm gradient: sign(x) |x|^(p-1) / norm^(p-1), 0 where the norm is 0; for
    p = inf the gradient is shared equally by the elements whose |x| is the norm."""
    kept = tuple(1 if i in axes else n for i, n in enumerate(in_shape))
    g, n = np.reshape(grad, kept), np.reshape(norm, kept)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        a = np.abs(x)
        if p == np.inf:
            mask = (a == n) | np.isnan(a)
            ties = np.sum(mask, axis=axes, keepdims=True, dtype=_F32)
            return np.sign(x) * ((g / ties) * mask)
        if p == 1:
            return np.sign(x) * g
        p32 = _F32.type(p)
        scaled = np.where(x == 0, _F32.type(0), np.sign(x) * np.power(a, p32 - _F32.type(1)))
        scale = np.where(n == 0, _F32.type(0), g / np.power(n, p32 - _F32.type(1)))
        return np.broadcast_to(scaled * scale, in_shape)


class Norm(Function):
    @staticmethod
    def forward(ctx, x, p=2.0, axes=(), keepdims=False):
        y = call(_norm_value, x, p, axes, keepdims)
        ctx.p, ctx.axes, ctx.in_shape = p, axes, x.shape
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved
        return call(_norm_grad, grad, x, y, ctx.p, ctx.axes, ctx.in_shape)


def _finite_or_zero(m):
    """The max with infinities replaced by 0 (as PyTorch), so inf - inf never appears."""
    return np.where(np.isinf(m), _F32.type(0), m)


class LogSumExp(Function):
    """m + log(sum(exp(x - m))) with m the max (stable for any finite x); backward:
    grad * exp(x - result), the softmax."""
    @staticmethod
    def forward(ctx, x, axes=(), keepdims=False):
        m = call(_finite_or_zero, call(np.max, x, axis=axes, keepdims=True))
        with np.errstate(divide="ignore"):
            total = ufunc(np.log, call(np.sum, ufunc(np.exp, ufunc(np.subtract, x, m)),
                                       axis=axes, keepdims=True))
        y = ufunc(np.add, total, m)
        ctx.in_shape, ctx.axes = x.shape, axes
        ctx.save_for_backward(x, y)
        if keepdims:
            return y
        return y.reshape(tuple(n for i, n in enumerate(x.shape) if i not in axes))

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved
        g = _expand_reduced(grad, ctx.in_shape, ctx.axes)
        return ufunc(np.multiply, g, ufunc(np.exp, ufunc(np.subtract, x, y)))


def _axes(op, x, axis, dim, keepdims, keepdim):
    axis, keepdims = _axis_args(op, axis, dim, keepdims, keepdim)
    return _normalize_axis(axis, x.ndim, op), keepdims


def var(x, dim=None, *, correction=None, unbiased=None, keepdim=None, axis=None, keepdims=None):
    """The variance over ``dim`` (an int, a tuple, or None for all elements), divided by
    n - correction: ``correction=1`` (the default, as PyTorch; ``unbiased=True``) or 0
    (``unbiased=False``).

    >>> import minigrad as mg
    >>> mg.var(mg.Tensor([1.0, 2.0, 3.0, 4.0])).item(), mg.var(mg.Tensor([1.0, 3.0]), unbiased=False).item()
    (1.6666666269302368, 1.0)
    """
    return _variance("var", x, dim, correction, unbiased, keepdim, axis, keepdims)


def std(x, dim=None, *, correction=None, unbiased=None, keepdim=None, axis=None, keepdims=None):
    """sqrt(var(x, ...)), with var's arguments.

    >>> import minigrad as mg
    >>> mg.std(mg.Tensor([[1.0, 3.0], [2.0, 2.0]]), dim=1).tolist()
    [1.4142135381698608, 0.0]
    """
    return _Sqrt.apply(_variance("std", x, dim, correction, unbiased, keepdim, axis, keepdims))


def _variance(op, x, dim, correction, unbiased, keepdim, axis, keepdims):
    x = _tensor(x, op)
    if correction is not None and unbiased is not None:
        raise TypeError(f"{op}: expected correction= or unbiased=, received both")
    if unbiased is not None:
        if not isinstance(unbiased, (bool, np.bool_)):
            raise TypeError(f"{op}: expected unbiased to be True or False, received "
                            f"{type(unbiased).__name__}")
        correction = 1 if unbiased else 0
    correction = 1 if correction is None else correction
    if isinstance(correction, (bool, np.bool_)) or not isinstance(correction, (int, float, np.integer,
                                                                              np.floating)):
        raise TypeError(f"{op}: expected correction to be a real number, received "
                        f"{type(correction).__name__}")
    if not 0 <= correction < np.inf:
        raise ValueError(f"{op}: expected a finite correction >= 0, received {correction!r}")
    axes, keepdims = _axes(op, x, axis, dim, keepdims, keepdim)
    _require_values(op, x.shape, axes, _pick(op, "axis", axis, "dim", dim, None))
    return Var.apply(x, axes=axes, keepdims=keepdims, correction=float(correction))


def prod(x, dim=None, keepdim=None, *, axis=None, keepdims=None):
    """The product over ``dim`` (or of all elements). The gradient multiplies the other
    elements together instead of dividing by the input, so it is right with zeros.

    >>> import minigrad as mg
    >>> t = mg.Tensor([2.0, 0.0, 3.0], requires_grad=True)
    >>> y = t.prod(); y.backward(); y.item(), t.grad.tolist()
    (0.0, [0.0, 6.0, 0.0])
    """
    x = _tensor(x, "prod")
    axes, keepdims = _axes("prod", x, axis, dim, keepdims, keepdim)
    return Prod.apply(x, axes=axes, keepdims=keepdims)


def cumsum(x, dim=None, *, axis=None):
    """Running sums along ``dim`` (required, as PyTorch), in index order.

    >>> import minigrad as mg
    >>> mg.cumsum(mg.Tensor([[1.0, 2.0, 3.0]]), dim=1).tolist()
    [[1.0, 3.0, 6.0]]
    """
    x = _tensor(x, "cumsum")
    dim = _pick("cumsum", "axis", axis, "dim", dim, None)
    if dim is None:
        raise TypeError("cumsum: expected dim, received None")
    dim = _one_axis(dim, x.ndim, "cumsum")
    if x.ndim == 0:
        return Cumsum.apply(x.reshape(1), axis=0).reshape(())
    return Cumsum.apply(x, axis=dim)


def norm(x, p=2, dim=None, keepdim=None, *, axis=None, keepdims=None):
    """The p-norm over ``dim`` (or of all elements: for p=2 the Frobenius norm):
    sum(|x|^p)^(1/p) for any real p > 0, and max(|x|) for p=inf. The gradient is 0 where
    the norm is 0 (as PyTorch); for p=inf it is shared by the tied largest elements.

    >>> import minigrad as mg
    >>> t = mg.Tensor([[3.0, -4.0]])
    >>> t.norm().item(), t.norm(1).item(), t.norm(float("inf"), dim=1).tolist()
    (5.0, 7.0, [4.0])
    """
    x = _tensor(x, "norm")
    if isinstance(p, str) and p == "fro":
        p = 2
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"norm: expected p to be a real number > 0 (or inf), received "
                        f"{type(p).__name__}")
    if not p > 0:
        raise ValueError(f"norm: expected p > 0 (or inf), received {p!r}")
    axes, keepdims = _axes("norm", x, axis, dim, keepdims, keepdim)
    if p == np.inf:
        _require_values("norm", x.shape, axes, _pick("norm", "axis", axis, "dim", dim, None))
    return Norm.apply(x, p=float(p), axes=axes, keepdims=keepdims)


def logsumexp(x, dim=None, keepdim=None, *, axis=None, keepdims=None):
    """log(sum(exp(x))) over ``dim`` (an int, a tuple, or None for all elements), computed
    stably: the max is subtracted first.

    >>> import minigrad as mg
    >>> round(mg.logsumexp(mg.Tensor([1000.0, 1000.0]), dim=0).item(), 3)
    1000.693
    """
    x = _tensor(x, "logsumexp")
    axes, keepdims = _axes("logsumexp", x, axis, dim, keepdims, keepdim)
    _require_values("logsumexp", x.shape, axes, _pick("logsumexp", "axis", axis, "dim", dim, None))
    return LogSumExp.apply(x, axes=axes, keepdims=keepdims)


def _install_more():
    T = Tensor
    T.var = lambda self, dim=None, *, correction=None, unbiased=None, keepdim=None, axis=None, \
        keepdims=None: var(self, dim, correction=correction, unbiased=unbiased, keepdim=keepdim,
                           axis=axis, keepdims=keepdims)
    T.std = lambda self, dim=None, *, correction=None, unbiased=None, keepdim=None, axis=None, \
        keepdims=None: std(self, dim, correction=correction, unbiased=unbiased, keepdim=keepdim,
                           axis=axis, keepdims=keepdims)
    T.prod = lambda self, dim=None, keepdim=None, *, axis=None, keepdims=None: prod(
        self, dim, keepdim, axis=axis, keepdims=keepdims)
    T.cumsum = lambda self, dim=None, *, axis=None: cumsum(self, dim, axis=axis)
    T.norm = lambda self, p=2, dim=None, keepdim=None, *, axis=None, keepdims=None: norm(
        self, p, dim, keepdim, axis=axis, keepdims=keepdims)
    T.logsumexp = lambda self, dim=None, keepdim=None, *, axis=None, keepdims=None: logsumexp(
        self, dim, keepdim, axis=axis, keepdims=keepdims)
