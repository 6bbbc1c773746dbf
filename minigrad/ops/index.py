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
        if not _broadcasts_to(other.shape, self.shape):
            raise ValueError(f"{op}: expected an operand that broadcasts to the tensor's shape "
                             f"{self.shape}, received shape {other.shape}")
        tape.into(self.data, ufunc, other)
        self._vc[0] += 1
        return self
    method.__name__ = op
    return method


def _broadcasts_to(shape, target):
    """True if an operand of shape broadcasts to target without changing target."""
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


def _install():
    T = Tensor
    T.__getitem__ = lambda self, key: index(self, key)
    T.__setitem__ = setitem
    T.__iadd__ = _in_place(np.add, "__iadd__")
    T.__isub__ = _in_place(np.subtract, "__isub__")
    T.__imul__ = _in_place(np.multiply, "__imul__")
    T.__itruediv__ = _in_place(np.divide, "__itruediv__")


# ---------------------------------------------------------------- gather, index_select, masked_fill

from . import _one_axis, _tensor  # noqa: E402
from .elementwise import _bound  # noqa: E402

def _index_array(op, name, value, kind):
    """An index (kind "int") or mask (kind "bool") argument as a NumPy array: a NumPy array
    (kept as given, so a replay under mg.jit reads its current values), an array-like, or
    any object whose ``.data`` holds one (an integer or bool Tensor)."""
    if isinstance(value, Tensor) or (not isinstance(value, np.ndarray) and hasattr(value, "data")):
        value = value.data
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except Exception:
            raise TypeError(f"{op}: expected {name} to be an array of {kind}s, received "
                            f"{type(value).__name__}") from None
    if kind == "int":
        ok = value.dtype.kind in "iu"
        wanted = "an integer dtype"
    else:
        ok = value.dtype.kind == "b"
        wanted = "dtype bool"
    if not ok:
        raise TypeError(f"{op}: expected {name} of {wanted}, received dtype {value.dtype}")
    return value


def _check_range(op, index, size):
    """Every index in [0, size) (PyTorch's gather and index_select take no negatives)."""
    if index.size and (int(index.min()) < 0 or int(index.max()) >= size):
        bad = index[(index < 0) | (index >= size)].reshape(-1)[0]
        raise ValueError(f"{op}: expected indices in [0, {size}), received {int(bad)}")


def _checked_range(op, index, size):
    _check_range(op, index, size)
    recording = tape.active()
    if recording is not None:  # a replay reads the index array again: check it again
        recording.add(_check_range, (op, index, size))


def _gather_slices(index_shape, x_shape, dim):
    return tuple(slice(None) if d == dim else slice(0, n) for d, n in enumerate(index_shape))


def _gather(x, index, dim):
    return np.take_along_axis(x[_gather_slices(index.shape, x.shape, dim)], index, axis=dim)


def _gather_backward(grad, index, dim, shape):
    out = np.zeros(shape, _F32)
    positions = list(np.indices(index.shape, sparse=True))
    positions[dim] = index
    # np.add.at adds repeated positions one after another in index order: deterministic
    np.add.at(out[_gather_slices(index.shape, shape, dim)], tuple(positions), grad)
    return out


class Gather(Function):
    """out[i][j] = x[index[i][j]][j] (dim 0), as torch.gather."""
    @staticmethod
    def forward(ctx, x, index, dim=0):
        ctx.index, ctx.dim, ctx.in_shape = index, dim, x.shape
        return call(_gather, x, index, dim)

    @staticmethod
    def backward(ctx, grad):
        return call(_gather_backward, grad, ctx.index, ctx.dim, ctx.in_shape), None


def _select_backward(grad, index, dim, shape):
    out = np.zeros(shape, _F32)
    np.add.at(out, (slice(None),) * dim + (index,), grad)
    return out


class IndexSelect(Function):
    @staticmethod
    def forward(ctx, x, index, dim=0):
        ctx.index, ctx.dim, ctx.in_shape = index, dim, x.shape
        return call(np.take, x, index, axis=dim)

    @staticmethod
    def backward(ctx, grad):
        return call(_select_backward, grad, ctx.index, ctx.dim, ctx.in_shape), None


def _fill_where(x, mask, value):
    return np.where(mask, value, x)


def _keep_unfilled(grad, mask):
    return np.where(mask, _F32.type(0), grad)


class MaskedFill(Function):
    @staticmethod
    def forward(ctx, x, mask, value=0.0):
        ctx.mask = mask
        return call(_fill_where, x, mask, value)

    @staticmethod
    def backward(ctx, grad):
        return call(_keep_unfilled, grad, ctx.mask)


def _dim_of(op, dim, ndim):
    return _one_axis(dim, ndim, op)


def gather(x, dim, index):
    """Values of x picked along ``dim`` by ``index`` (torch.gather): index has x's number of
    dimensions, no larger than x along the others, and the output has index's shape. The
    gradient is added back to the picked positions (repeats accumulate, in index order).

    >>> import numpy as np, minigrad as mg
    >>> t = mg.Tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> mg.gather(t, 1, np.array([[0, 0], [1, 0]])).tolist()
    [[1.0, 1.0], [4.0, 3.0]]
    """
    x = _tensor_of(x, "gather")
    index = _index_array("gather", "index", index, "int")
    if index.ndim != x.ndim:
        raise ValueError(f"gather: expected index of the same number of dimensions as the input "
                         f"({x.ndim}), received {index.ndim}")
    dim = _dim_of("gather", dim, x.ndim)
    if x.ndim == 0:
        _checked_range("gather", index, 1)
        return Gather.apply(x.reshape(1), index.reshape(1), dim=0).reshape(())
    if any(i > n for d, (i, n) in enumerate(zip(index.shape, x.shape)) if d != dim):
        raise ValueError(f"gather: expected index no larger than the input {x.shape} except along "
                         f"dim {dim}, received index of shape {index.shape}")
    _checked_range("gather", index, x.shape[dim])
    return Gather.apply(x, index, dim=dim)


def index_select(x, dim, index):
    """The slices of x at the positions ``index`` (1-d) along ``dim`` (torch.index_select);
    repeated positions accumulate their gradients.

    >>> import numpy as np, minigrad as mg
    >>> mg.index_select(mg.Tensor([[1.0, 2.0], [3.0, 4.0]]), 0, np.array([1, 1])).tolist()
    [[3.0, 4.0], [3.0, 4.0]]
    """
    x = _tensor_of(x, "index_select")
    index = _index_array("index_select", "index", index, "int")
    if index.ndim > 1:
        raise ValueError(f"index_select: expected index of 1 dimension, received {index.ndim}")
    dim = _dim_of("index_select", dim, x.ndim)
    if x.ndim == 0:
        _checked_range("index_select", index, 1)
        return IndexSelect.apply(x.reshape(1), index.reshape(-1), dim=0).reshape(index.shape)
    _checked_range("index_select", index, x.shape[dim])
    return IndexSelect.apply(x, index.reshape(-1), dim=dim)


def masked_fill(x, mask, value):
    """x with ``value`` where ``mask`` (a bool array broadcastable to x's shape) is True; the
    gradient is zero at the filled positions.

    >>> import numpy as np, minigrad as mg
    >>> t = mg.Tensor([1.0, 2.0, 3.0])
    >>> mg.masked_fill(t, np.array([True, False, True]), -1.0).tolist()
    [-1.0, 2.0, -1.0]
    """
    x = _tensor_of(x, "masked_fill")
    mask = _index_array("masked_fill", "mask", mask, "bool")
    try:
        shape = np.broadcast_shapes(x.shape, mask.shape)
    except ValueError:
        shape = None
    if shape != x.shape:
        raise ValueError(f"masked_fill: expected a mask broadcastable to the input's shape "
                         f"{x.shape}, received shape {mask.shape}")
    return MaskedFill.apply(x, mask=mask, value=_fill_value("masked_fill", value))


def _fill_value(op, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{op}: expected value to be a real number, received {type(value).__name__}")
    with np.errstate(over="ignore"):  # beyond float32's range: inf, as a cast to float32 gives
        return _F32.type(value)


def _tensor_of(x, op):
    return _tensor(x, op)


# ---------------------------------------------------------------- in-place methods (PyTorch's names)

def zero_(self):
    """Set every element to 0 in place; returns the tensor.

    >>> import minigrad as mg
    >>> t = mg.ones(2); t.zero_().tolist(), t._version
    ([0.0, 0.0], 1)
    """
    return fill_(self, 0.0, "zero_")


def fill_(self, value, op="fill_"):
    """Set every element to ``value`` in place; returns the tensor.

    >>> import minigrad as mg
    >>> mg.zeros(2).fill_(1.5).tolist()
    [1.5, 1.5]
    """
    _check_in_place(self, op)
    tape.setitem(self.data, Ellipsis, _fill_value(op, value))
    self._vc[0] += 1
    return self


def copy_(self, src):
    """Copy ``src`` (broadcast to this tensor's shape) into this tensor's memory; returns the
    tensor. src may not require grad while grad mode is on (its gradient would be lost).

    >>> import minigrad as mg
    >>> mg.zeros(2, 2).copy_(mg.Tensor([1.0, 2.0])).tolist()
    [[1.0, 2.0], [1.0, 2.0]]
    """
    _check_in_place(self, "copy_")
    src = _operand("copy_", src)
    if not _broadcasts_to(src.shape, self.shape):
        raise ValueError(f"copy_: expected a source that broadcasts to the tensor's shape "
                         f"{self.shape}, received shape {src.shape}")
    tape.setitem(self.data, Ellipsis, src)
    self._vc[0] += 1
    return self


def _scaled_in_place(ufunc_, op):
    plain = _in_place(ufunc_, op)

    def method(self, other, alpha=1):
        if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.integer,
                                                                         np.floating)):
            raise TypeError(f"{op}: expected alpha to be a real number, received {type(alpha).__name__}")
        if alpha != 1:
            _check_in_place(self, op)  # the tensor's own error first, as without alpha
            other = _operand(op, other)
            other = tape.ufunc(np.multiply, other, _F32.type(alpha))
        return plain(self, other)
    method.__name__ = op
    method.__doc__ = (f"self {'+' if ufunc_ is np.add else '-'}= alpha * other in place (other "
                      f"broadcast to this tensor's shape); returns the tensor.")
    return method


add_ = _scaled_in_place(np.add, "add_")
add_.__doc__ += """

    >>> import minigrad as mg
    >>> mg.ones(2).add_(mg.Tensor([1.0, 2.0]), alpha=2).tolist()
    [3.0, 5.0]
"""
sub_ = _scaled_in_place(np.subtract, "sub_")
mul_ = _in_place(np.multiply, "mul_")
mul_.__doc__ = """self *= other in place; returns the tensor.

    >>> import minigrad as mg
    >>> mg.ones(2).mul_(3).tolist()
    [3.0, 3.0]
"""
div_ = _in_place(np.divide, "div_")
div_.__doc__ = "self /= other in place; returns the tensor."


def clamp_(self, min=None, max=None):  # noqa: A002  (PyTorch's argument names)
    """Limit the values to [min, max] in place (either bound may be None; max wins when
    min > max, as clamp); returns the tensor.

    >>> import minigrad as mg
    >>> mg.Tensor([-2.0, 0.5, 3.0]).clamp_(0, 1).tolist()
    [0.0, 0.5, 1.0]
    """
    _check_in_place(self, "clamp_")
    if min is None and max is None:
        raise ValueError("clamp_: expected at least one of min and max, received None for both")
    low, high = _bound("clamp_", "min", min), _bound("clamp_", "max", max)
    if low is not None:
        tape.into(self.data, np.maximum, low)
    if high is not None:
        tape.into(self.data, np.minimum, high)
    self._vc[0] += 1
    return self


def _install_more():
    T = Tensor
    T.gather = lambda self, dim, index: gather(self, dim, index)
    T.index_select = lambda self, dim, index: index_select(self, dim, index)
    T.masked_fill = lambda self, mask, value: masked_fill(self, mask, value)
    T.zero_ = zero_
    T.fill_ = lambda self, value: fill_(self, value)
    T.copy_ = copy_
    T.add_ = add_
    T.sub_ = sub_
    T.mul_ = mul_
    T.div_ = div_
    T.clamp_ = clamp_
