"""Indexing ``t[key]``, item assignment ``t[key] = v`` and the in-place operators
``+=``, ``-=``, ``*=``, ``/=``.

Keys follow NumPy: ints, slices, Ellipsis, None, integer arrays or lists, boolean
masks (such as ``t > 0``), int64 and bool Tensors, and tuples mixing them. Basic keys (ints, slices,
Ellipsis, None) give a view when it is C-contiguous (sharing memory and the version
counter, as PyTorch's views do), else a copy; other keys a copy. In backward the
gradient is scattered back with ``np.add.at``, which adds repeated indices one
after another in index order: deterministic.

In-place changes (the operators and item assignment) write the tensor's own array
(recorded by ``kernels.tape``, so they replay under ``mg.jit``) and bump its
version. As in PyTorch, a leaf that requires grad may be changed only under
``mg.no_grad()``. A non-leaf that requires grad (part of a graph) may not be
changed in place while grad mode is on: minigrad refuses rather than track the
change through the graph (write ``y = y + x`` instead). Under ``no_grad`` it may,
and a graph that saved the old value then refuses to backward.

>>> import minigrad as mg
>>> w = mg.Tensor([1.0, 2.0, 3.0], requires_grad=True)
>>> w[[0, 0, 2]].sum().backward(); w.grad.tolist()
[2.0, 0.0, 1.0]
>>> with mg.no_grad():
...     w -= 1
...     w[1] = 7.0
>>> w.tolist(), w._version
([0.0, 7.0, 2.0], 2)
"""
import numbers
import operator

import numpy as np

from ..function import Function
from ..grad_mode import is_grad_enabled
from ..kernels import tape
from ..kernels.tape import call, call_as, copy
from ..tensor import Tensor
from . import _const

_F32 = np.dtype(np.float32)


def _is_basic(part):
    return part is None or part is Ellipsis or isinstance(part, slice) or (
        isinstance(part, numbers.Integral) and not isinstance(part, (bool, np.bool_)))


def _key(key, op):
    """The key as NumPy takes it: lists become arrays; Tensors and float arrays are refused."""
    parts = key if isinstance(key, tuple) else (key,)
    out = []
    for part in parts:
        if _is_basic(part):
            out.append(part)
            continue
        if isinstance(part, Tensor):
            if part.data.dtype.kind not in "bi":
                raise TypeError(f"{op}: expected index tensors of dtype int64 or bool (such as "
                                f"argmax's result or t > 0), received a {part.data.dtype} tensor")
            out.append(part.data)  # its array, so a replay reads its current indices
            continue
        array = part if isinstance(part, np.ndarray) else np.asarray(part)
        if array.dtype.kind not in "biu":
            raise TypeError(f"{op}: expected integer or boolean index arrays, received "
                            f"{type(part).__name__} of dtype {array.dtype}")
        out.append(array)  # an ndarray is kept as given, so a replay reads its current indices
    return tuple(out)


def _scatter_basic(grad, key, shape):
    """A basic key (ints, slices, None, Ellipsis) names each element at most once."""
    out = np.zeros(shape, _F32)
    out[key] = grad
    return out


def _scatter_add(grad, key, shape):
    out = np.zeros(shape, _F32)
    np.add.at(out, key, grad)
    return out


def _scatter_add_with_none(grad, key, shape):
    """As _scatter_add for keys holding None: map each output element to its flat input
    position, then add the gradient there in output order."""
    positions = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)[key]
    out = np.zeros(int(np.prod(shape)), _F32)
    np.add.at(out, positions.reshape(-1), grad.reshape(-1))
    return out.reshape(shape)


class Index(Function):
    name = "index"
    keeps_dtype = True

    @staticmethod
    def forward(ctx, x, key):
        ctx.key, ctx.in_shape = key, x.shape
        try:
            if all(_is_basic(p) for p in key):
                # a trailing Ellipsis makes an all-int key give a 0-d view, not a scalar
                out = x[key if Ellipsis in key else key + (Ellipsis,)]
                return out if out.flags.c_contiguous else copy(out, x.dtype)
            return call_as(x.dtype, operator.getitem, x, key)
        except IndexError as exc:
            raise IndexError(f"index: {exc} (indexing a tensor of shape {x.shape})") from None

    @staticmethod
    def backward(ctx, grad):
        key = ctx.key
        if all(_is_basic(p) for p in key):
            scatter = _scatter_basic
        else:  # np.add.at cannot take None; map positions instead
            scatter = _scatter_add_with_none if any(p is None for p in key) else _scatter_add
        return call(scatter, grad, key, ctx.in_shape)


def index(x, key):
    """x[key] (see the module docstring for the keys); differentiable."""
    key = _key(key, "index")
    recording = tape.active()
    if recording is not None and any(isinstance(p, np.ndarray) and p.dtype == np.bool_ for p in key):
        recording.refuse("index: a boolean mask selects a number of elements that depends on "
                         "the data, which a replay with fixed shapes cannot follow")
    return Index.apply(x, key=key)


# ---------------------------------------------------------------- in place

def _check_in_place(t, op):
    if t.requires_grad and is_grad_enabled():
        if t._node is None:
            raise RuntimeError(f"{op}: a leaf Tensor that requires grad is being used in an "
                               f"in-place operation; do it under `with mg.no_grad():` (as an "
                               f"optimizer step does) or on a copy")
        raise RuntimeError(f"{op}: in-place change of a Tensor that is part of a graph (it "
                           f"requires grad and is not a leaf) is not supported while grad mode "
                           f"is on; write y = y + x instead")
    if not t.data.flags.writeable:
        raise ValueError(f"{op}: expected a writeable tensor, received one whose data is read-only")


def _operand(op, value):
    value = _const(value, op)
    if isinstance(value, Tensor):
        if value.requires_grad and is_grad_enabled():
            # writing it into another tensor's memory would silently drop its gradient
            raise RuntimeError(f"{op}: expected an operand that does not require grad while "
                               f"grad mode is on (its gradient would be lost); build a new "
                               f"tensor (mg.where, mg.cat, t + x) or pass value.detach()")
        return value.data
    return value


def setitem(t, key, value):
    """t[key] = value in place (value broadcast to t[key]'s shape)."""
    _check_in_place(t, "setitem")
    key, value = _key(key, "setitem"), _operand("setitem", value)
    try:
        tape.setitem(t.data, key, value)
    except IndexError as exc:
        raise IndexError(f"setitem: {exc} (indexing a tensor of shape {t.shape})") from None
    except ValueError as exc:
        raise ValueError(f"setitem: expected a value that broadcasts to the indexed shape, "
                         f"received shape {value.shape} ({exc})") from None
    t._vc[0] += 1


def _in_place(ufunc, op):
    def method(self, other):
        if self.data.dtype != _F32:
            raise TypeError(f"{op}: expected a float32 tensor, received dtype {self.data.dtype} "
                            f"(in-place arithmetic is float32 only)")
        _check_in_place(self, op)
        other = _operand(op, other)
        if not _broadcasts(self.shape, other.shape) or np.broadcast_shapes(self.shape, other.shape) != self.shape:
            raise ValueError(f"{op}: expected an operand that broadcasts to the tensor's shape "
                             f"{self.shape}, received shape {other.shape}")
        tape.into(self.data, ufunc, other)
        self._vc[0] += 1
        return self
    method.__name__ = op
    return method


def _broadcasts(a, b):
    try:
        np.broadcast_shapes(a, b)
    except ValueError:
        return False
    return True


def _install():
    T = Tensor
    T.__getitem__ = lambda self, key: index(self, key)
    T.__setitem__ = setitem
    T.__iadd__ = _in_place(np.add, "__iadd__")
    T.__isub__ = _in_place(np.subtract, "__isub__")
    T.__imul__ = _in_place(np.multiply, "__imul__")
    T.__itruediv__ = _in_place(np.divide, "__itruediv__")
