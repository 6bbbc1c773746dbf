"""Differentiable ops. Each op's backward sits right under its forward.

The heavy ops (matmul, add-bias, relu, the fused dense layer and softmax +
cross-entropy) run in the C kernels; the general element-wise and shape ops use
NumPy through ``kernels.tape`` (so that ``mg.jit`` can replay them), with
broadcasting undone in backward by summing over the broadcast axes. This module
also gives ``Tensor`` its operators and math methods; the families in this
package's other files (elementwise, reduce, shape, index, conv) add theirs.
"""
import numbers

import numpy as np

from .. import kernels
from ..function import Function
from ..kernels.tape import call, call_as, copy, ufunc
from ..tensor import Tensor, is_backward_seed

_F32 = np.dtype(np.float32)


def _numeric(x, op):
    """A non-Tensor operand as a NumPy array of a real dtype, as given (a Tensor unchanged)."""
    if isinstance(x, Tensor):
        return x
    try:
        array = np.asarray(kernels.plain_array(op, "the operand", x))
    except TypeError:
        raise
    except Exception:
        array = None
    if array is None or array.dtype.kind not in "biuf":
        raise TypeError(f"{op}: expected a Tensor, array or real number, received {type(x).__name__}")
    return array


def _const(x, op):
    """A non-Tensor operand as a float32 array (so results stay float32)."""
    x = _numeric(x, op)
    return x if isinstance(x, Tensor) or x.dtype == _F32 else copy(x)


def _unbroadcast(grad, shape):
    """Sum grad over the axes that broadcasting added or stretched to reach grad.shape."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    stretched = tuple(i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    summed = call(np.sum, grad, axis=tuple(range(extra)) + stretched, keepdims=True, dtype=_F32)
    return summed.reshape(shape)


# ---------------------------------------------------------------- element-wise, broadcasting

class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (np.shape(a), np.shape(b))
        return ufunc(np.add, a, b)

    @staticmethod
    def backward(ctx, grad):
        sa, sb = ctx.shapes
        ga = _unbroadcast(grad, sa) if ctx.needs_input_grad[0] else None
        gb = _unbroadcast(grad, sb) if ctx.needs_input_grad[1] else None
        return ga, gb


class AddBias(Function):
    """(N, C) + (C,) in the C kernel; the bias gradient is the column sums."""
    @staticmethod
    def forward(ctx, x, b):
        return kernels.add_bias(x, b)

    @staticmethod
    def backward(ctx, grad):
        gb = kernels.bias_grad(grad) if ctx.needs_input_grad[1] else None
        return grad, gb


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (np.shape(a), np.shape(b))
        return ufunc(np.subtract, a, b)

    @staticmethod
    def backward(ctx, grad):
        sa, sb = ctx.shapes
        ga = _unbroadcast(grad, sa) if ctx.needs_input_grad[0] else None
        gb = _unbroadcast(ufunc(np.negative, grad), sb) if ctx.needs_input_grad[1] else None
        return ga, gb


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ufunc(np.multiply, a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        ga = _unbroadcast(ufunc(np.multiply, grad, b), np.shape(a)) if ctx.needs_input_grad[0] else None
        gb = _unbroadcast(ufunc(np.multiply, grad, a), np.shape(b)) if ctx.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ufunc(np.divide, a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        ga = _unbroadcast(ufunc(np.divide, grad, b), np.shape(a)) if ctx.needs_input_grad[0] else None
        gb = None
        if ctx.needs_input_grad[1]:  # -grad * a / (b * b), in that order
            gb = ufunc(np.divide, ufunc(np.multiply, ufunc(np.negative, grad), a), ufunc(np.multiply, b, b))
            gb = _unbroadcast(gb, np.shape(b))
        return ga, gb


class Neg(Function):
    @staticmethod
    def forward(ctx, x):
        return ufunc(np.negative, x)

    @staticmethod
    def backward(ctx, grad):
        return ufunc(np.negative, grad)


class Pow(Function):
    """x ** p for a constant real exponent p."""
    @staticmethod
    def forward(ctx, x, exponent):
        ctx.save_for_backward(x)
        ctx.exponent = exponent
        return ufunc(np.power, x, _F32.type(exponent))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        p = _F32.type(ctx.exponent)
        return ufunc(np.multiply, ufunc(np.multiply, grad, p), ufunc(np.power, x, p - 1)), None


def _pow_base_grad(grad, a, b):
    """grad * b * a ** (b - 1), and 0 where b == 0 (as PyTorch: no 0 * inf from 0 ** -1)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(b == 0, _F32.type(0), grad * (b * np.power(a, b - _F32.type(1))))


def _pow_exponent_grad(grad, a, b, y):
    """grad * a ** b * log(a), and 0 where a == 0 and b >= 0 (as PyTorch): there a ** b
    is 0 or 1 and log(a) = -inf would give NaN or -inf for a function flat in b."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return grad * np.where((a == 0) & (b >= 0), _F32.type(0), y * np.log(a))


class PowTensor(Function):
    """a ** b with a Tensor exponent; d/da = b * a ** (b - 1), d/db = a ** b * log(a)."""
    @staticmethod
    def forward(ctx, a, b):
        y = ufunc(np.power, a, b)
        ctx.save_for_backward(a, b, y)
        return y

    @staticmethod
    def backward(ctx, grad):
        a, b, y = ctx.saved
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = _unbroadcast(call(_pow_base_grad, grad, a, b), np.shape(a))
        if ctx.needs_input_grad[1]:
            gb = _unbroadcast(call(_pow_exponent_grad, grad, a, b, y), np.shape(b))
        return ga, gb


class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        y = ufunc(np.exp, x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        return ufunc(np.multiply, grad, ctx.saved[0])


class Log(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ufunc(np.log, x)

    @staticmethod
    def backward(ctx, grad):
        return ufunc(np.divide, grad, ctx.saved[0])


# ---------------------------------------------------------------- reductions and shapes

def _normalize_axis(axis, ndim, op):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axes = (axis,)
    elif isinstance(axis, (tuple, list)):
        axes = tuple(axis)
    else:  # a float, a string or an array: tuple() would fail without naming the op
        raise TypeError(f"{op}: expected axis to be None, an integer or a tuple of integers, "
                        f"received {type(axis).__name__}")
    normalized = []
    for a in axes:
        if not isinstance(a, (int, np.integer)) or not -ndim <= a < ndim:
            raise ValueError(f"{op}: expected axis in [{-ndim}, {ndim}), received {axis!r}")
        normalized.append(int(a) % ndim)
    return tuple(sorted(set(normalized)))


def _pick(op, numpy_name, numpy_value, torch_name, torch_value, default):
    """One argument spelt NumPy's way (axis, keepdims) or PyTorch's (dim, keepdim)."""
    if numpy_value is not None and torch_value is not None:
        raise TypeError(f"{op}: expected {numpy_name}= or {torch_name}=, received both")
    if numpy_value is not None:
        return numpy_value
    return default if torch_value is None else torch_value


def _axis_args(op, axis, dim, keepdims, keepdim):
    return _pick(op, "axis", axis, "dim", dim, None), bool(_pick(op, "keepdims", keepdims,
                                                                  "keepdim", keepdim, False))


def _reduce(function, op, x, axis, dim, keepdims, keepdim):
    axis, keepdims = _axis_args(op, axis, dim, keepdims, keepdim)
    if x.data.dtype != _F32:  # an int64 or bool tensor: counts, as PyTorch's int64 sum
        if function is not Sum:
            raise TypeError(f"{op}: expected a float32 tensor, received dtype {x.data.dtype} "
                            f"(use t.float().{op}())")
        axes = _normalize_axis(axis, x.ndim, op)
        return Tensor._wrap(call_as(np.int64, np.sum, x.data, axis=axes, keepdims=keepdims), False)
    return function.apply(x, axis=axis, keepdims=keepdims)


def _expand_reduced(grad, in_shape, axes):
    """Broadcast a reduction's gradient back to the input shape (a fresh array)."""
    kept = tuple(1 if i in axes else n for i, n in enumerate(in_shape))
    return copy(np.broadcast_to(np.reshape(grad, kept), in_shape))


class Sum(Function):
    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.in_shape, ctx.axes = x.shape, _normalize_axis(axis, x.ndim, "sum")
        return call(np.sum, x, axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        return _expand_reduced(grad, ctx.in_shape, ctx.axes)


class Mean(Function):
    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.in_shape, ctx.axes = x.shape, _normalize_axis(axis, x.ndim, "mean")
        ctx.count = int(np.prod([x.shape[a] for a in ctx.axes]))
        if ctx.count == 0:
            raise ValueError(f"mean: expected at least one element along axis {axis}, "
                             f"received shape {x.shape}")
        return call(np.mean, x, axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        return _expand_reduced(ufunc(np.divide, grad, _F32.type(ctx.count)), ctx.in_shape, ctx.axes)


class Reshape(Function):
    keeps_dtype = True

    @staticmethod
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        try:
            return np.reshape(x, shape)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"reshape: cannot reshape {x.shape} ({x.size} elements) "
                             f"into {shape}") from exc

    @staticmethod
    def backward(ctx, grad):
        return np.reshape(grad, ctx.in_shape)


class Transpose(Function):
    """Reverses the axes (x.T); the result is a contiguous copy, as kernels expect."""
    keeps_dtype = True

    @staticmethod
    def forward(ctx, x):
        return copy(x.T, x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return copy(grad.T)


# ---------------------------------------------------------------- the C-kernel ops

def _check_matmul(a, b):
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: expected (N, K) @ (K, M), received {a.shape} @ {b.shape}")


class MatMul(Function):
    name = "matmul"  # in error messages (set_check_finite)

    @staticmethod
    def forward(ctx, a, b):
        _check_matmul(a, b)
        ctx.save_for_backward(a, b)
        return kernels.gemm(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        ga = kernels.gemm(grad, b, trans_b=True) if ctx.needs_input_grad[0] else None
        gb = kernels.gemm(a, grad, trans_a=True) if ctx.needs_input_grad[1] else None
        return ga, gb


class ReLU(Function):
    @staticmethod
    def forward(ctx, x):
        y = kernels.relu_forward(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        return kernels.relu_backward(ctx.saved[0], grad)


class Dense(Function):
    """y = x @ w + b [relu], as one GEMM with a bias (+ relu) epilogue.

    Backward masks the gradient by relu' and sums its columns for the bias in
    one pass, then does dW = x.T @ dz and, only if needed, dx = dz @ w.T.
    """
    @staticmethod
    def forward(ctx, x, w, b, relu=False):
        if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
            raise ValueError(f"dense: expected x (N, K) and kernel (K, M), "
                             f"received {x.shape} and {w.shape}")
        if b is not None and b.shape != (w.shape[1],):
            raise ValueError(f"dense: expected bias of shape ({w.shape[1]},), received {b.shape}")
        y = kernels.gemm(x, w, bias=b, relu=relu)
        ctx.relu = relu
        ctx.save_for_backward(x, w, y)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, w, y = ctx.saved
        need_x, need_w, need_b = ctx.needs_input_grad
        if ctx.relu:
            dz, db = kernels.relu_backward_bias_grad(y, grad)
        else:
            dz, db = grad, (kernels.bias_grad(grad) if need_b else None)
        dw = kernels.gemm(x, dz, trans_a=True) if need_w else None
        dx = kernels.gemm(dz, w, trans_b=True) if need_x else None
        return dx, dw, (db if need_b else None)


class Softmax(Function):
    """Softmax along one axis, the last by default (max subtracted first, so any finite
    input is safe)."""
    @staticmethod
    def forward(ctx, x, axis=-1):
        if x.ndim and x.shape[axis] == 0:  # a 0-d x is one value (NumPy reduces it along axis 0)
            where = "the last axis" if axis == x.ndim - 1 else f"axis {axis}"
            raise ValueError(f"softmax: expected at least one value along {where}, "
                             f"received shape {x.shape}")
        e = ufunc(np.exp, ufunc(np.subtract, x, call(np.max, x, axis=axis, keepdims=True)))
        y = ufunc(np.divide, e, call(np.sum, e, axis=axis, keepdims=True))
        ctx.axis = axis
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        dot = call(np.sum, ufunc(np.multiply, grad, y), axis=ctx.axis, keepdims=True)
        return ufunc(np.multiply, y, ufunc(np.subtract, grad, dot))


class SoftmaxCrossEntropy(Function):
    """Mean over rows of the cross-entropy of softmax(logits) against target.

    target: integer class indices (N,) or float target rows (N, C); it gets no gradient.
    The upstream gradient multiplies the result as an array (x * 1 is exact), never
    read into a Python float, so a replayed step never uses a stale value.
    """
    @staticmethod
    def forward(ctx, logits, target, probs_out=None):
        loss, probs, _ = kernels.softmax_xent_forward(logits, target)
        ctx.save_for_backward(probs, target)
        if probs_out is not None:  # a list: the softmax, for the metrics
            probs_out.append(probs)
        return loss

    @staticmethod
    def backward(ctx, grad):
        probs, target = ctx.saved
        rows = probs.shape[0]
        dlogits = kernels.softmax_xent_backward(probs, target, 1.0 / rows if rows else 0.0)
        if is_backward_seed(grad):  # the loss itself: d loss = 1
            return dlogits, None
        return ufunc(np.multiply, dlogits, grad), None


# ---------------------------------------------------------------- functional entry points

def _operands(op, a, b, convert=_const):
    """Both operands of a broadcasting binary op, constants as float32 arrays
    (``convert=_numeric``: as given, for comparisons and logic)."""
    a, b = convert(a, op), convert(b, op)
    shape_a, shape_b = a.shape, b.shape
    try:
        np.broadcast_shapes(shape_a, shape_b)
    except ValueError:
        raise ValueError(f"{op}: expected shapes that broadcast together, "
                         f"received {shape_a} and {shape_b}") from None
    return a, b


def add(a, b):
    a, b = _operands("add", a, b)
    if (isinstance(a, Tensor) and isinstance(b, Tensor) and a.ndim == 2 and b.ndim == 1
            and a.shape[1] == b.shape[0]):
        return AddBias.apply(a, b)  # the bias add of a layer: C kernel
    return Add.apply(a, b)


def sub(a, b):
    return Sub.apply(*_operands("sub", a, b))


def mul(a, b):
    return Mul.apply(*_operands("mul", a, b))


def div(a, b):
    return Div.apply(*_operands("div", a, b))


def pow(x, exponent):  # noqa: A001  (mg.pow, as torch.pow)
    """x ** exponent: a constant real exponent, or a Tensor one (then either side may be
    a constant, broadcasting as the other binary ops; both get a gradient).

    >>> import minigrad as mg
    >>> mg.pow(mg.Tensor([3.0]), 2).tolist(), (2.0 ** mg.Tensor([3.0])).tolist()
    ([9.0], [8.0])
    """
    if isinstance(exponent, Tensor) or not isinstance(x, Tensor):
        return PowTensor.apply(*_operands("pow", x, exponent))
    if isinstance(exponent, (bool, np.bool_)) or not isinstance(exponent, numbers.Real):
        raise TypeError(f"pow: expected a constant real exponent, received "
                        f"{type(exponent).__name__} (or a Tensor)")
    return Pow.apply(x, float(exponent))


def matmul(a, b):
    """a @ b for 2-D tensors, in the C GEMM.

    >>> import minigrad as mg
    >>> (mg.Tensor([[1.0, 2.0]]) @ mg.Tensor([[3.0], [4.0]])).item()
    11.0
    """
    a, b = _tensor(a, "matmul"), _tensor(b, "matmul")
    _check_matmul(a.data, b.data)
    return MatMul.apply(a, b)


def relu(x):
    return ReLU.apply(_tensor(x, "relu"))


def dense(x, w, b=None, activation=None):
    """activation(x @ w + b) as one fused op; activation is None, 'linear' or 'relu'.

    >>> import minigrad as mg
    >>> y = mg.dense(mg.Tensor([[1.0, -2.0]]), mg.Tensor([[1.0], [1.0]]), mg.Tensor([0.5]), 'relu')
    >>> y.numpy()
    array([[0.]], dtype=float32)
    """
    if activation not in (None, "linear", "relu"):
        raise ValueError(f"dense: expected activation None, 'linear' or 'relu', received {activation!r}")
    b = None if b is None else _tensor(b, "dense")
    return Dense.apply(_tensor(x, "dense"), _tensor(w, "dense"), b, relu=activation == "relu")


def softmax(x, axis=None, dim=None):
    """exp(x) / sum(exp(x)) along ``axis`` (or ``dim``), the last by default."""
    x = _tensor(x, "softmax")
    return Softmax.apply(x, axis=_one_axis(_pick("softmax", "axis", axis, "dim", dim, -1), x.ndim, "softmax"))


def _one_axis(axis, ndim, op):
    """A single axis as a non-negative int (TypeError/ValueError naming op otherwise)."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{op}: expected an integer axis, received {axis!r}")
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise ValueError(f"{op}: expected axis in [{-ndim}, {ndim}), received {axis}")
    return int(axis) % max(ndim, 1)


def softmax_cross_entropy(logits, target, probs_out=None):
    """Mean cross-entropy of softmax(logits) against target, fused in C.

    target: integer class indices of shape (N,), or float target rows (N, C)
    (one-hot or probabilities). The gradient w.r.t. logits is (softmax - target) / N.
    ``probs_out``, a list, receives the softmax the kernel computed.

    >>> import minigrad as mg
    >>> logits = mg.Tensor([[0.0, 0.0]], requires_grad=True)
    >>> loss = mg.softmax_cross_entropy(logits, np.array([1]))
    >>> round(loss.item(), 4)
    0.6931
    >>> loss.backward(); logits.grad
    array([[ 0.5, -0.5]], dtype=float32)
    """
    logits = _tensor(logits, "softmax_cross_entropy")
    target = target.data if isinstance(target, Tensor) else np.asarray(
        kernels.plain_array("softmax_cross_entropy", "target", target))
    if target.ndim == 1 and target.dtype.kind in "iu" and logits.ndim == 2:
        # named after this op here; the kernel checks its private copy again
        kernels._check_labels("softmax_cross_entropy", target, logits.shape[1])
    if target.ndim == 2 and target.dtype != _F32:
        if target.dtype.kind not in "biuf":
            raise TypeError(f"softmax_cross_entropy: expected float target rows, received {target.dtype}")
        target = copy(target)
    return SoftmaxCrossEntropy.apply(logits, target, probs_out=probs_out)


def _tensor(x, op):
    if isinstance(x, Tensor):
        return x
    return Tensor(_const(x, op))


# ---------------------------------------------------------------- Tensor's operators and methods

def _install():
    T = Tensor
    T.__add__ = lambda self, other: add(self, other)
    T.__radd__ = lambda self, other: add(other, self)
    T.__sub__ = lambda self, other: sub(self, other)
    T.__rsub__ = lambda self, other: sub(other, self)
    T.__mul__ = lambda self, other: mul(self, other)
    T.__rmul__ = lambda self, other: mul(other, self)
    T.__truediv__ = lambda self, other: div(self, other)
    T.__rtruediv__ = lambda self, other: div(other, self)
    T.__neg__ = lambda self: Neg.apply(self)
    T.__pow__ = lambda self, exponent: pow(self, exponent)
    T.__matmul__ = lambda self, other: matmul(self, other)
    T.__rmatmul__ = lambda self, other: matmul(other, self)
    T.sum = lambda self, axis=None, keepdims=None, *, dim=None, keepdim=None: _reduce(
        Sum, "sum", self, axis, dim, keepdims, keepdim)
    T.mean = lambda self, axis=None, keepdims=None, *, dim=None, keepdim=None: _reduce(
        Mean, "mean", self, axis, dim, keepdims, keepdim)
    T.exp = lambda self: Exp.apply(self)
    T.log = lambda self: Log.apply(self)
    T.relu = lambda self: ReLU.apply(self)
    T.softmax = lambda self, axis=None, dim=None: softmax(self, axis, dim)


_install()

# One file per family; they build on the helpers above and add their Tensor methods.
from .conv import Conv2D, MaxPool2D, conv2d, max_pool2d  # noqa: E402,F401
from . import elementwise as _elementwise, index as _index, reduce as _reduce_ops, shape as _shape  # noqa: E402
# (abs, max and min stay in their modules: here they would shadow the builtins)
from .elementwise import (Abs, Clip, Maximum, Minimum, Sigmoid, Sqrt, Tanh, Where,  # noqa: E402,F401
                          clamp, clip, maximum, minimum, sigmoid, sqrt, tanh, where)
from .index import Index, index, setitem  # noqa: E402,F401
from .reduce import LogSoftmax, Max, Min, argmax, argmin, log_softmax  # noqa: E402,F401
from .shape import (Cat, Clone, Permute, Stack, cat, clone, concatenate, flatten,  # noqa: E402,F401
                    permute, reshape, squeeze, stack, transpose, unsqueeze, view)

# The PyTorch-named additions of each family (sin, var, gather, expand, zero_...).
from .elementwise import (Ceil, Cos, Expm1, Floor, Log1p, Reciprocal, Round, Rsqrt,  # noqa: E402,F401
                          Sign, Sin, Square, ceil, cos, expm1, floor, log1p, reciprocal, rsqrt,
                          sign, sin, square)
from .index import (Gather, IndexSelect, MaskedFill, gather, index_select,  # noqa: E402,F401
                    masked_fill)
from .reduce import (Cumsum, LogSumExp, Norm, Prod, Var, cumsum, logsumexp, norm,  # noqa: E402,F401
                     prod, std, var)
from .shape import Expand, Flip, Narrow, Repeat, chunk, expand, flip, repeat, split  # noqa: E402,F401
for _family in (_elementwise, _index, _reduce_ops, _shape):
    _family._install()
    _family._install_more()
from .nn import dropout, sigmoid_binary_cross_entropy  # noqa: E402,F401
