"""Shape ops with PyTorch's names: flatten, view, squeeze, unsqueeze, transpose(dim0,
dim1), permute, clone; and the joins cat (concatenate) and stack.

View-like ops reshape (a view of the input, sharing its version counter); axis
permutations copy, because the C kernels take C-contiguous arrays.
"""
import numpy as np

from ..function import Function
from ..kernels.tape import call_as, copy
from ..tensor import Tensor
from . import Reshape, Transpose, _one_axis, _pick, _tensor

_F32 = np.dtype(np.float32)


class Permute(Function):
    keeps_dtype = True

    @staticmethod
    def forward(ctx, x, axes):
        ctx.inverse = tuple(np.argsort(axes))
        return copy(np.transpose(x, axes), x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return copy(np.transpose(grad, ctx.inverse))


class Clone(Function):
    keeps_dtype = True

    @staticmethod
    def forward(ctx, x):
        return copy(x, x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


class Cat(Function):
    """Inputs joined along one existing axis; backward hands each its slice (a copy)."""
    keeps_dtype = True  # the wrapper gives all inputs one dtype

    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis, ctx.sizes = axis, [a.shape[axis] for a in arrays]
        return call_as(arrays[0].dtype, np.concatenate, arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        grads, start, lead = [], 0, (slice(None),) * ctx.axis
        for size, needed in zip(ctx.sizes, ctx.needs_input_grad):
            grads.append(copy(grad[lead + (slice(start, start + size),)]) if needed else None)
            start += size
        return tuple(grads)


class Stack(Function):
    """Inputs of one shape joined along a new axis."""
    keeps_dtype = True  # the wrapper gives all inputs one dtype

    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        return call_as(arrays[0].dtype, np.stack, arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        lead = (slice(None),) * ctx.axis
        return tuple(copy(grad[lead + (i,)]) if needed else None
                     for i, needed in enumerate(ctx.needs_input_grad))


# ---------------------------------------------------------------- functional entry points

def _dims(op, dims):
    """view(2, 3) and view((2, 3)) alike; each an int."""
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"{op}: expected integer sizes or axes, received {dims!r}")
    return tuple(int(d) for d in dims)


def reshape(x, *shape):
    """The same data in a new shape (one size may be -1): ``reshape(2, 3)`` or
    ``reshape((2, 3))``; alias ``view``. NumPy judges the shape (ValueError naming
    reshape otherwise)."""
    return Reshape.apply(_tensor(x, "reshape"), shape=shape[0] if len(shape) == 1 else shape)


view = reshape


def flatten(x, start_dim=0, end_dim=-1):
    """Axes start_dim..end_dim merged into one.

    >>> import minigrad as mg
    >>> mg.flatten(mg.zeros(2, 3, 4), 1).shape
    (2, 12)
    """
    x = _tensor(x, "flatten")
    if x.ndim == 0:
        return Reshape.apply(x, shape=(1,))
    start, end = _one_axis(start_dim, x.ndim, "flatten"), _one_axis(end_dim, x.ndim, "flatten")
    if start > end:
        raise ValueError(f"flatten: expected start_dim <= end_dim, received {start_dim} and {end_dim}")
    shape = x.shape[:start] + (int(np.prod(x.shape[start:end + 1])),) + x.shape[end + 1:]
    return Reshape.apply(x, shape=shape)


def squeeze(x, dim=None, axis=None):
    """Drop size-1 axes (all, or the one given; a given axis of another size is kept,
    as in PyTorch)."""
    x = _tensor(x, "squeeze")
    dim = _pick("squeeze", "axis", axis, "dim", dim, None)
    if dim is None:
        shape = tuple(n for n in x.shape if n != 1)
    else:
        d = _one_axis(dim, x.ndim, "squeeze") if x.ndim else None
        shape = x.shape if d is None or x.shape[d] != 1 else x.shape[:d] + x.shape[d + 1:]
    return Reshape.apply(x, shape=shape)


def unsqueeze(x, dim=None, axis=None):
    """A new size-1 axis at position dim (in [-ndim - 1, ndim])."""
    x = _tensor(x, "unsqueeze")
    dim = _pick("unsqueeze", "axis", axis, "dim", dim, None)
    if dim is None:
        raise TypeError("unsqueeze: expected dim, received None")
    d = _one_axis(dim, x.ndim + 1, "unsqueeze")
    return Reshape.apply(x, shape=x.shape[:d] + (1,) + x.shape[d:])


def permute(x, *dims):
    """The axes in the order dims (a permutation of 0..ndim-1); a contiguous copy."""
    x = _tensor(x, "permute")
    dims = _dims("permute", dims)
    axes = tuple(_one_axis(d, x.ndim, "permute") for d in dims) if x.ndim else dims
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"permute: expected a permutation of the {x.ndim} axes, received {dims}")
    return Permute.apply(x, axes=axes)


def transpose(x, dim0=None, dim1=None):
    """Swap two axes (PyTorch); with no axes, reverse them all (NumPy's x.T)."""
    x = _tensor(x, "transpose")
    if dim0 is None and dim1 is None:
        return Transpose.apply(x)
    if dim0 is None or dim1 is None:
        raise TypeError(f"transpose: expected both dim0 and dim1 or neither, received "
                        f"{dim0!r} and {dim1!r}")
    a, b = _one_axis(dim0, x.ndim, "transpose"), _one_axis(dim1, x.ndim, "transpose")
    axes = list(range(x.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return Permute.apply(x, axes=tuple(axes))


def clone(x):
    """A copy with its own memory that stays in the graph (gradient passes through)."""
    return Clone.apply(_tensor(x, "clone"))


def _joined(op, tensors):
    if isinstance(tensors, (Tensor, np.ndarray)) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{op}: expected a list or tuple of tensors, received "
                        f"{type(tensors).__name__}")
    if not tensors:
        raise ValueError(f"{op}: expected at least one tensor, received an empty sequence")
    tensors = [_tensor(t, op) for t in tensors]
    if len({t.data.dtype for t in tensors}) > 1:  # mixed dtypes join as float32 (PyTorch promotes)
        tensors = [t.float() for t in tensors]
    return tensors


def cat(tensors, axis=None, dim=None):
    """Tensors joined along an existing axis (default 0); alias ``concatenate``.

    >>> import minigrad as mg
    >>> mg.cat([mg.ones(1, 2), mg.zeros(2, 2)]).shape
    (3, 2)
    """
    tensors = _joined("cat", tensors)
    ndim = tensors[0].ndim
    if ndim == 0:
        raise ValueError("cat: expected tensors with at least one axis, received 0-d tensors")
    axis = _one_axis(_pick("cat", "axis", axis, "dim", dim, 0), ndim, "cat")
    for t in tensors:
        if t.ndim != ndim or t.shape[:axis] + t.shape[axis + 1:] != tensors[0].shape[:axis] + tensors[0].shape[axis + 1:]:
            raise ValueError(f"cat: expected shapes equal except along axis {axis}, received "
                             f"{[u.shape for u in tensors]}")
    return Cat.apply(*tensors, axis=axis)


concatenate = cat


def stack(tensors, axis=None, dim=None):
    """Tensors of one shape joined along a new axis (default 0).

    >>> import minigrad as mg
    >>> mg.stack([mg.ones(2), mg.zeros(2)], dim=1).shape
    (2, 2)
    """
    tensors = _joined("stack", tensors)
    axis = _one_axis(_pick("stack", "axis", axis, "dim", dim, 0), tensors[0].ndim + 1, "stack")
    if any(t.shape != tensors[0].shape for t in tensors):
        raise ValueError(f"stack: expected tensors of one shape, received {[t.shape for t in tensors]}")
    return Stack.apply(*tensors, axis=axis)


def _install():
    T = Tensor
    T.reshape = lambda self, *shape: reshape(self, *shape)
    T.view = T.reshape
    T.flatten = lambda self, start_dim=0, end_dim=-1: flatten(self, start_dim, end_dim)
    T.squeeze = lambda self, dim=None, axis=None: squeeze(self, dim, axis)
    T.unsqueeze = lambda self, dim=None, axis=None: unsqueeze(self, dim, axis)
    T.permute = lambda self, *dims: permute(self, *dims)
    T.transpose = lambda self, dim0=None, dim1=None: transpose(self, dim0, dim1)
    T.T = property(lambda self: Transpose.apply(self))
    T.clone = lambda self: clone(self)
