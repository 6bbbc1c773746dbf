"""Element-wise ops: sigmoid and tanh (C kernels), abs, sqrt, clip, maximum,
minimum, where, and the comparisons (NumPy through ``kernels.tape``).

Comparisons and the logical operators are not differentiable: ``t > 0`` returns a
bool Tensor (as ``argmax`` returns an int64 one), which indexes (``t[t > 0]``),
selects (``mg.where(t > 0, a, b)``) and counts (``(t > 0).sum()``).
"""
import numpy as np

from .. import kernels
from ..function import Function
from ..kernels.tape import call, call_as, ufunc
from ..tensor import Tensor
from . import _const, _normalize_axis, _numeric, _operands, _tensor, _unbroadcast

_F32 = np.dtype(np.float32)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        y = kernels.sigmoid_forward(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        return kernels.sigmoid_backward(ctx.saved[0], grad)


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        y = kernels.tanh_forward(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        return kernels.tanh_backward(ctx.saved[0], grad)


class Abs(Function):
    """|x|; the gradient is sign(x), 0 at 0 (as PyTorch)."""
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ufunc(np.abs, x)

    @staticmethod
    def backward(ctx, grad):
        return ufunc(np.multiply, grad, ufunc(np.sign, ctx.saved[0]))


class Sqrt(Function):
    @staticmethod
    def forward(ctx, x):
        y = ufunc(np.sqrt, x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):  # grad / (2 sqrt(x)): inf at 0, as PyTorch
        return ufunc(np.divide, grad, ufunc(np.add, ctx.saved[0], ctx.saved[0]))


def _pass_inside(grad, x, low, high):
    """grad where low <= x <= high (the bounds themselves pass, as PyTorch's clamp), else 0."""
    keep = np.ones(x.shape, bool)
    if low is not None:
        keep &= x >= low
    if high is not None:
        keep &= x <= high
    return np.where(keep, grad, _F32.type(0))


class Clip(Function):
    @staticmethod
    def forward(ctx, x, low=None, high=None):
        ctx.save_for_backward(x)
        ctx.bounds = (low, high)
        y = x if low is None else ufunc(np.maximum, x, low)
        # min(max(x, low), high): high wins when low > high, as in PyTorch
        return y if high is None else ufunc(np.minimum, y, high)

    @staticmethod
    def backward(ctx, grad):
        return call(_pass_inside, grad, ctx.saved[0], *ctx.bounds)


def _share_of(grad, mine, other, wins):
    """grad where this operand wins, half of it on ties (PyTorch's maximum/minimum)."""
    half = grad * _F32.type(0.5)
    return np.where(wins(mine, other), grad, np.where(mine == other, half, _F32.type(0)))


class _Extremum(Function):
    wins = None

    @classmethod
    def forward(cls, ctx, a, b):
        ctx.save_for_backward(a, b)
        return ufunc(cls.ufunc, a, b)

    @classmethod
    def backward(cls, ctx, grad):
        a, b = ctx.saved
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = _unbroadcast(call(_share_of, grad, a, b, cls.wins), np.shape(a))
        if ctx.needs_input_grad[1]:
            gb = _unbroadcast(call(_share_of, grad, b, a, cls.wins), np.shape(b))
        return ga, gb


class Maximum(_Extremum):
    ufunc, wins = np.maximum, np.greater


class Minimum(_Extremum):
    ufunc, wins = np.minimum, np.less


def _select(cond, grad, chosen):
    return np.where(cond, grad, _F32.type(0)) if chosen else np.where(cond, _F32.type(0), grad)


class Where(Function):
    @staticmethod
    def forward(ctx, a, b, cond):
        ctx.cond, ctx.shapes = cond, (np.shape(a), np.shape(b))
        return call(np.where, cond, a, b)

    @staticmethod
    def backward(ctx, grad):
        sa, sb = ctx.shapes
        ga = _unbroadcast(call(_select, ctx.cond, grad, True), sa) if ctx.needs_input_grad[0] else None
        gb = _unbroadcast(call(_select, ctx.cond, grad, False), sb) if ctx.needs_input_grad[1] else None
        return ga, gb, None


# ---------------------------------------------------------------- functional entry points

def sigmoid(x):
    """1 / (1 + exp(-x)) in the C kernel.

    >>> import minigrad as mg
    >>> mg.sigmoid(mg.Tensor([0.0])).tolist()
    [0.5]
    """
    return Sigmoid.apply(_tensor(x, "sigmoid"))


def tanh(x):
    return Tanh.apply(_tensor(x, "tanh"))


def abs(x):  # noqa: A001  (mg.abs, as torch.abs)
    return Abs.apply(_tensor(x, "abs"))


def sqrt(x):
    return Sqrt.apply(_tensor(x, "sqrt"))


def _bound(op, name, value):
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: expected {name} to be a real number or None, received "
                        f"{type(value).__name__}")
    return _F32.type(value)


def clip(x, min=None, max=None):  # noqa: A002  (PyTorch's argument names)
    """x limited to [min, max]; either bound may be None. Alias ``clamp``.

    >>> import minigrad as mg
    >>> mg.clip(mg.Tensor([-2.0, 0.5, 3.0]), 0, 1).tolist()
    [0.0, 0.5, 1.0]
    """
    if min is None and max is None:
        raise ValueError("clip: expected at least one of min and max, received None for both")
    return Clip.apply(_tensor(x, "clip"), low=_bound("clip", "min", min), high=_bound("clip", "max", max))


clamp = clip


def maximum(a, b):
    """Element-wise max with broadcasting; on ties each side gets half the gradient."""
    a, b = _operands("maximum", a, b)
    return Maximum.apply(a, b)


def minimum(a, b):
    a, b = _operands("minimum", a, b)
    return Minimum.apply(a, b)


def _condition(cond, op):
    if isinstance(cond, Tensor):
        if cond.data.dtype == np.bool_:
            return cond.data  # its array, so a replay reads the current mask
        return call_as(np.bool_, np.not_equal, cond.data, cond.data.dtype.type(0))  # nonzero
    array = np.asarray(cond)  # an ndarray stays the same object, so a replay reads it live
    if array.dtype.kind not in "biu":
        raise TypeError(f"{op}: expected a boolean condition (such as t > 0), received dtype "
                        f"{array.dtype}")
    return array


def where(cond, a, b):
    """a where cond holds, else b (broadcasting all three); differentiable in a and b.

    >>> import minigrad as mg
    >>> t = mg.Tensor([-1.0, 2.0])
    >>> mg.where(t > 0, t, 0.0).tolist()
    [0.0, 2.0]
    """
    cond = _condition(cond, "where")
    a, b = _const(a, "where"), _const(b, "where")
    try:
        np.broadcast_shapes(cond.shape, a.shape, b.shape)
    except ValueError:
        raise ValueError(f"where: expected cond, a and b shapes that broadcast together, "
                         f"received {cond.shape}, {a.shape} and {b.shape}") from None
    return Where.apply(a, b, cond)


def _raw(op, a, b, convert=_numeric):
    """Both operands' arrays, of their own dtypes (an int64 tensor compares exactly with ints)."""
    a, b = _operands(op, a, b, convert)
    return (a.data if isinstance(a, Tensor) else a), (b.data if isinstance(b, Tensor) else b)


def _integral(x, op):
    """An operand of the logical operators: bool or integer data only."""
    x = _numeric(x, op)
    dtype = (x.data if isinstance(x, Tensor) else x).dtype
    if dtype.kind not in "biu":
        raise TypeError(f"{op}: expected bool or integer tensors, received dtype {dtype}")
    return x


def _compare(op, ufunc_, a, b):
    """A comparison: a bool Tensor (not differentiable), recorded for mg.jit."""
    a, b = _raw(op, a, b)
    return Tensor._wrap(call_as(np.bool_, ufunc_, a, b), False)


def _logical(op, ufunc_, a, b):
    """&, |, ^ of bool (logical) or int64 (bitwise) tensors, as PyTorch."""
    a, b = _raw(op, a, b, _integral)
    dtype = np.bool_ if a.dtype == np.bool_ and b.dtype == np.bool_ else np.int64
    return Tensor._wrap(call_as(dtype, ufunc_, a, b), False)


def _invert(t):
    """~t: logical not of a bool tensor, bitwise not of an int64 one."""
    if t.data.dtype.kind not in "bi":
        raise TypeError(f"__invert__: expected a bool or int64 tensor, received dtype {t.data.dtype}")
    return Tensor._wrap(call_as(t.data.dtype, np.invert, t.data), False)


def _any_all(op, function, t, dim=None, keepdim=False):
    """Whether any (all) element is non-zero, along dim or over all: a bool tensor."""
    axes = _normalize_axis(dim, t.ndim, op)
    return Tensor._wrap(call_as(np.bool_, function, t.data, axis=axes, keepdims=bool(keepdim)), False)


def _install():
    T = Tensor
    T.sigmoid = lambda self: Sigmoid.apply(self)
    T.tanh = lambda self: Tanh.apply(self)
    T.abs = lambda self: Abs.apply(self)
    T.__abs__ = T.abs
    T.sqrt = lambda self: Sqrt.apply(self)
    T.clip = lambda self, min=None, max=None: clip(self, min, max)
    T.clamp = T.clip
    T.maximum = lambda self, other: maximum(self, other)
    T.minimum = lambda self, other: minimum(self, other)
    for name, op, f in (("lt", "__lt__", np.less), ("le", "__le__", np.less_equal),
                        ("gt", "__gt__", np.greater), ("ge", "__ge__", np.greater_equal),
                        ("eq", "__eq__", np.equal), ("ne", "__ne__", np.not_equal)):
        setattr(T, op, _comparison(name, f))
        setattr(T, name, getattr(T, op))  # t.eq(other), as torch
    T.__hash__ = object.__hash__  # defining __eq__ would drop it; Tensors are dict keys
    for name, f in (("and", np.bitwise_and), ("or", np.bitwise_or), ("xor", np.bitwise_xor)):
        setattr(T, f"__{name}__", _logical_method(f"__{name}__", f, False))
        setattr(T, f"__r{name}__", _logical_method(f"__r{name}__", f, True))
    T.__invert__ = _invert
    T.logical_not = lambda self: _invert(self.bool())
    T.any = lambda self, dim=None, keepdim=False: _any_all("any", np.any, self, dim, keepdim)
    T.all = lambda self, dim=None, keepdim=False: _any_all("all", np.all, self, dim, keepdim)


def _logical_method(name, f, reflected):
    def method(self, other):
        return _logical(name, f, other, self) if reflected else _logical(name, f, self, other)
    method.__name__ = name
    return method


def _comparison(name, f):
    def compare(self, other):
        if not isinstance(other, (Tensor, np.ndarray, int, float, np.number, list, tuple)):
            return NotImplemented  # t == None is False, as for other objects
        return _compare(name, f, self, other)
    compare.__name__ = f"__{name}__"
    return compare


# ---------------------------------------------------------------- more unary ops (PyTorch's names)

class Sin(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ufunc(np.sin, x)

    @staticmethod
    def backward(ctx, grad):
        return ufunc(np.multiply, grad, ufunc(np.cos, ctx.saved[0]))


class Cos(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ufunc(np.cos, x)

    @staticmethod
    def backward(ctx, grad):  # -sin(x) * grad
        return ufunc(np.multiply, grad, ufunc(np.negative, ufunc(np.sin, ctx.saved[0])))


class Log1p(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ufunc(np.log1p, x)

    @staticmethod
    def backward(ctx, grad):
        return ufunc(np.divide, grad, ufunc(np.add, ctx.saved[0], _F32.type(1)))


class Expm1(Function):
    @staticmethod
    def forward(ctx, x):
        y = ufunc(np.expm1, x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):  # exp(x) = y + 1
        return ufunc(np.multiply, grad, ufunc(np.add, ctx.saved[0], _F32.type(1)))


class Square(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ufunc(np.multiply, x, x)

    @staticmethod
    def backward(ctx, grad):
        return ufunc(np.multiply, grad, ufunc(np.add, ctx.saved[0], ctx.saved[0]))


class Reciprocal(Function):
    @staticmethod
    def forward(ctx, x):
        y = ufunc(np.reciprocal, x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):  # d(1/x) = -1/x^2 = -y*y
        (y,) = ctx.saved
        return ufunc(np.multiply, grad, ufunc(np.negative, ufunc(np.multiply, y, y)))


class Rsqrt(Function):
    @staticmethod
    def forward(ctx, x):
        y = ufunc(np.reciprocal, ufunc(np.sqrt, x))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):  # d(x^-1/2) = -x^-3/2 / 2 = -y^3 / 2
        (y,) = ctx.saved
        cube = ufunc(np.multiply, ufunc(np.multiply, y, y), y)
        return ufunc(np.multiply, grad, ufunc(np.multiply, cube, _F32.type(-0.5)))


def _zeros_like(grad):
    return np.zeros(grad.shape, _F32)


class _Step(Function):
    """A piecewise-constant function: its gradient is zero wherever it is defined (PyTorch
    returns zero at the jumps too)."""
    ufunc = None

    @classmethod
    def forward(cls, ctx, x):
        return ufunc(cls.ufunc, x)

    @classmethod
    def backward(cls, ctx, grad):
        return call(_zeros_like, grad)  # not grad * 0: inf * 0 would be NaN


class Sign(_Step):
    ufunc = np.sign


class Floor(_Step):
    ufunc = np.floor


class Ceil(_Step):
    ufunc = np.ceil


class Round(_Step):
    ufunc = np.rint  # halves to even, as torch.round


def sin(x):
    """Element-wise sine.

    >>> import minigrad as mg
    >>> mg.sin(mg.Tensor([0.0])).tolist()
    [0.0]
    """
    return Sin.apply(_tensor(x, "sin"))


def cos(x):
    """Element-wise cosine.

    >>> import minigrad as mg
    >>> mg.cos(mg.Tensor([0.0])).tolist()
    [1.0]
    """
    return Cos.apply(_tensor(x, "cos"))


def log1p(x):
    """log(1 + x), accurate for small x.

    >>> import minigrad as mg
    >>> mg.log1p(mg.Tensor([1e-10])).tolist()
    [1.000000013351432e-10]
    """
    return Log1p.apply(_tensor(x, "log1p"))


def expm1(x):
    """exp(x) - 1, accurate for small x.

    >>> import minigrad as mg
    >>> mg.expm1(mg.Tensor([1e-10])).tolist()
    [1.000000013351432e-10]
    """
    return Expm1.apply(_tensor(x, "expm1"))


def square(x):
    """x * x.

    >>> import minigrad as mg
    >>> mg.square(mg.Tensor([-3.0])).tolist()
    [9.0]
    """
    return Square.apply(_tensor(x, "square"))


def reciprocal(x):
    """1 / x.

    >>> import minigrad as mg
    >>> mg.reciprocal(mg.Tensor([4.0])).tolist()
    [0.25]
    """
    return Reciprocal.apply(_tensor(x, "reciprocal"))


def rsqrt(x):
    """1 / sqrt(x).

    >>> import minigrad as mg
    >>> mg.rsqrt(mg.Tensor([4.0])).tolist()
    [0.5]
    """
    return Rsqrt.apply(_tensor(x, "rsqrt"))


def sign(x):
    """-1, 0 or 1 by the sign of x (NaN stays NaN); the gradient is zero.

    >>> import minigrad as mg
    >>> mg.sign(mg.Tensor([-2.0, 0.0, 3.0])).tolist()
    [-1.0, 0.0, 1.0]
    """
    return Sign.apply(_tensor(x, "sign"))


def floor(x):
    """The largest integer <= x; the gradient is zero.

    >>> import minigrad as mg
    >>> mg.floor(mg.Tensor([-1.5, 1.5])).tolist()
    [-2.0, 1.0]
    """
    return Floor.apply(_tensor(x, "floor"))


def ceil(x):
    """The smallest integer >= x; the gradient is zero.

    >>> import minigrad as mg
    >>> mg.ceil(mg.Tensor([-1.5, 1.5])).tolist()
    [-1.0, 2.0]
    """
    return Ceil.apply(_tensor(x, "ceil"))


def round(x):  # noqa: A001  (mg.round, as torch.round)
    """The nearest integer, halves to the even one (as torch.round); the gradient is zero.

    >>> import minigrad as mg
    >>> mg.round(mg.Tensor([0.5, 1.5, 2.6])).tolist()
    [0.0, 2.0, 3.0]
    """
    return Round.apply(_tensor(x, "round"))


def _install_more():
    T = Tensor
    for name, function in (("sin", Sin), ("cos", Cos), ("log1p", Log1p), ("expm1", Expm1),
                           ("square", Square), ("reciprocal", Reciprocal), ("rsqrt", Rsqrt),
                           ("sign", Sign), ("floor", Floor), ("ceil", Ceil), ("round", Round)):
        setattr(T, name, lambda self, f=function: f.apply(self))
    from . import pow as _pow  # the binary op lives with the other operators
    T.pow = lambda self, exponent: _pow(self, exponent)
    T.__rpow__ = lambda self, base: _pow(base, self)
