"""Differentiable ops. Each op's backward sits right under its forward.

The heavy ops (matmul, add-bias, relu, the fused dense layer and softmax +
cross-entropy) run in the C kernels; the general element-wise and shape ops use
NumPy, with broadcasting undone in backward by summing over the broadcast axes.
"""
import numpy as np

from .. import kernels
from ..function import Function
from ..tensor import Tensor

_F32 = np.dtype(np.float32)


def _const(x, op):
    """A non-Tensor operand as a float32 array (so results stay float32)."""
    if isinstance(x, Tensor):
        return x
    try:
        array = np.asarray(x)
    except Exception:
        array = None
    if array is None or array.dtype.kind not in "biuf":
        raise TypeError(f"{op}: expected a Tensor, array or real number, received {type(x).__name__}")
    return array.astype(_F32, copy=False)


def _unbroadcast(grad, shape):
    """Sum grad over the axes that broadcasting added or stretched to reach grad.shape."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return np.asarray(grad, dtype=_F32).reshape(shape)


def _fresh(array):
    """A writeable, contiguous float32 copy of a (possibly broadcast) view."""
    return np.array(array, dtype=_F32, order="C")



# ---------------------------------------------------------------- element-wise, broadcasting

class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (np.shape(a), np.shape(b))
        return np.add(a, b, dtype=_F32)

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
        return np.subtract(a, b, dtype=_F32)

    @staticmethod
    def backward(ctx, grad):
        sa, sb = ctx.shapes
        ga = _unbroadcast(grad, sa) if ctx.needs_input_grad[0] else None
        gb = _unbroadcast(-grad, sb) if ctx.needs_input_grad[1] else None
        return ga, gb


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.multiply(a, b, dtype=_F32)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        ga = _unbroadcast(grad * b, np.shape(a)) if ctx.needs_input_grad[0] else None
        gb = _unbroadcast(grad * a, np.shape(b)) if ctx.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.divide(a, b, dtype=_F32)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        ga = _unbroadcast(grad / b, np.shape(a)) if ctx.needs_input_grad[0] else None
        gb = _unbroadcast(-grad * a / (b * b), np.shape(b)) if ctx.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    @staticmethod
    def forward(ctx, x):
        return np.negative(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class Pow(Function):
    """x ** p for a constant real exponent p."""
    @staticmethod
    def forward(ctx, x, exponent):
        ctx.save_for_backward(x)
        ctx.exponent = exponent
        return np.power(x, _F32.type(exponent), dtype=_F32)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        p = _F32.type(ctx.exponent)
        return grad * p * np.power(x, p - 1, dtype=_F32), None


class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved[0]


class Log(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log(x)

    @staticmethod
    def backward(ctx, grad):
        return grad / ctx.saved[0]


# ---------------------------------------------------------------- reductions and shapes

def _normalize_axis(axis, ndim, op):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    normalized = []
    for a in axes:
        if not isinstance(a, (int, np.integer)) or not -ndim <= a < ndim:
            raise ValueError(f"{op}: expected axis in [{-ndim}, {ndim}), received {axis!r}")
        normalized.append(int(a) % ndim)
    return tuple(sorted(set(normalized)))


def _expand_reduced(grad, in_shape, axes):
    """Broadcast a reduction's gradient back to the input shape (a fresh array)."""
    kept = tuple(1 if i in axes else n for i, n in enumerate(in_shape))
    return _fresh(np.broadcast_to(np.reshape(grad, kept), in_shape))


class Sum(Function):
    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.in_shape, ctx.axes = x.shape, _normalize_axis(axis, x.ndim, "sum")
        return np.asarray(x.sum(axis=ctx.axes, keepdims=keepdims), dtype=_F32)

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
        return np.asarray(x.mean(axis=ctx.axes, keepdims=keepdims), dtype=_F32)

    @staticmethod
    def backward(ctx, grad):
        return _expand_reduced(grad / _F32.type(ctx.count), ctx.in_shape, ctx.axes)


class Reshape(Function):
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
    @staticmethod
    def forward(ctx, x):
        return np.array(x.T, order="C")  # not ascontiguousarray, which makes 0-d arrays 1-d

    @staticmethod
    def backward(ctx, grad):
        return np.array(grad.T, order="C")


# ---------------------------------------------------------------- the C-kernel ops

def _no_buffer(role, shape):
    return None


def _buffers(workspace):
    """buffer(role, shape): the workspace's reusable array, or None (the kernel allocates)."""
    return workspace.get if workspace is not None else _no_buffer


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
    With a ``workspace`` (see minigrad.workspace) every output goes into a
    buffer reused from step to step.
    """
    @staticmethod
    def forward(ctx, x, w, b, relu=False, workspace=None):
        if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
            raise ValueError(f"dense: expected x (N, K) and kernel (K, M), "
                             f"received {x.shape} and {w.shape}")
        if b is not None and b.shape != (w.shape[1],):
            raise ValueError(f"dense: expected bias of shape ({w.shape[1]},), received {b.shape}")
        y = kernels.gemm(x, w, _buffers(workspace)("y", (x.shape[0], w.shape[1])), bias=b, relu=relu)
        ctx.relu, ctx.workspace = relu, workspace
        ctx.save_for_backward(x, w, y)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, w, y = ctx.saved
        need_x, need_w, need_b = ctx.needs_input_grad
        buf = _buffers(ctx.workspace)
        if ctx.relu:
            dz, db = kernels.relu_backward_bias_grad(y, grad, buf("dz", y.shape), buf("db", (y.shape[1],)))
        else:
            dz, db = grad, (kernels.bias_grad(grad, buf("db", (y.shape[1],))) if need_b else None)
        dw = kernels.gemm(x, dz, buf("dw", w.shape), trans_a=True) if need_w else None
        dx = kernels.gemm(dz, w, buf("dx", x.shape), trans_b=True) if need_x else None
        return dx, dw, (db if need_b else None)


class Softmax(Function):
    """Softmax over the last axis."""
    @staticmethod
    def forward(ctx, x):
        if x.ndim and x.shape[-1] == 0:
            raise ValueError(f"softmax: expected at least one value along the last axis, "
                             f"received shape {x.shape}")
        z = x - x.max(axis=-1, keepdims=True)
        e = np.exp(z)
        y = (e / e.sum(axis=-1, keepdims=True)).astype(_F32, copy=False)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return y * (grad - (grad * y).sum(axis=-1, keepdims=True))


class SoftmaxCrossEntropy(Function):
    """Mean over rows of the cross-entropy of softmax(logits) against target.

    target: integer class indices (N,) or float target rows (N, C); it gets no gradient.
    """
    @staticmethod
    def forward(ctx, logits, target, workspace=None):
        buf = _buffers(workspace)
        loss, probs, _ = kernels.softmax_xent_forward(logits, target, buf("probs", logits.shape),
                                                      buf("row_loss", logits.shape[:1]))
        ctx.workspace = workspace
        ctx.save_for_backward(probs, target)
        return loss

    @staticmethod
    def backward(ctx, grad):
        probs, target = ctx.saved
        rows = probs.shape[0]
        scale = float(grad) / rows if rows else 0.0
        out = _buffers(ctx.workspace)("dlogits", probs.shape)
        return kernels.softmax_xent_backward(probs, target, scale, out), None


# ---------------------------------------------------------------- functional entry points

def _operands(op, a, b):
    """Both operands of a broadcasting binary op, constants as float32 arrays."""
    a, b = _const(a, op), _const(b, op)
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


def pow(x, exponent):
    if isinstance(exponent, Tensor) or not np.isscalar(exponent) or isinstance(exponent, (bool, str)):
        raise TypeError(f"pow: expected a constant real exponent, received {type(exponent).__name__}")
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


def dense(x, w, b=None, activation=None, workspace=None):
    """activation(x @ w + b) as one fused op; activation is None, 'linear' or 'relu'.

    >>> import minigrad as mg
    >>> y = mg.dense(mg.Tensor([[1.0, -2.0]]), mg.Tensor([[1.0], [1.0]]), mg.Tensor([0.5]), 'relu')
    >>> y.numpy()
    array([[0.]], dtype=float32)
    """
    if activation not in (None, "linear", "relu"):
        raise ValueError(f"dense: expected activation None, 'linear' or 'relu', received {activation!r}")
    b = None if b is None else _tensor(b, "dense")
    return Dense.apply(_tensor(x, "dense"), _tensor(w, "dense"), b, relu=activation == "relu",
                       workspace=workspace)


def softmax(x):
    return Softmax.apply(_tensor(x, "softmax"))


def softmax_cross_entropy(logits, target, workspace=None):
    """Mean cross-entropy of softmax(logits) against target, fused in C.

    target: integer class indices of shape (N,), or float target rows (N, C)
    (one-hot or probabilities). The gradient w.r.t. logits is (softmax - target) / N.

    >>> import minigrad as mg
    >>> logits = mg.Tensor([[0.0, 0.0]], requires_grad=True)
    >>> loss = mg.softmax_cross_entropy(logits, np.array([1]))
    >>> round(loss.item(), 4)
    0.6931
    >>> loss.backward(); logits.grad
    array([[ 0.5, -0.5]], dtype=float32)
    """
    logits = _tensor(logits, "softmax_cross_entropy")
    target = target.data if isinstance(target, Tensor) else np.asarray(target)
    if target.ndim == 2 and target.dtype != _F32:
        if target.dtype.kind not in "biuf":
            raise TypeError(f"softmax_cross_entropy: expected float target rows, received {target.dtype}")
        target = target.astype(_F32)
    return SoftmaxCrossEntropy.apply(logits, target, workspace=workspace)


def _tensor(x, op):
    if isinstance(x, Tensor):
        return x
    return Tensor(_const(x, op))


from .conv import Conv2D, MaxPool2D, conv2d, max_pool2d  # noqa: E402,F401  (conv.py uses _tensor above)
