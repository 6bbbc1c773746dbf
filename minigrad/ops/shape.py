"""Shape ops with PyTorch's names: flatten, view, squeeze, unsqueeze, transpose(dim0,
dim1), permute, clone; and the joins cat (concatenate) and stack.

View-like ops reshape (a view of the input, sharing its version counter); axis
permutations copy, because the C kernels take C-contiguous arrays.
"""
import numpy as np

from ..function import Function
from ..kernels.tape import call, call_as, copy
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


# ---------------------------------------------------------------- expand, repeat, split, chunk, flip

from . import _unbroadcast  # noqa: E402


class Expand(Function):
    """x broadcast to a larger shape (a contiguous copy: the C kernels take C-contiguous
    arrays); backward sums over the expanded axes."""
    @staticmethod
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        return copy(np.broadcast_to(x, shape))

    @staticmethod
    def backward(ctx, grad):
        return _unbroadcast(grad, ctx.in_shape)


def _sum_tiles(grad, reps, in_shape):
    """The sum of the tiles np.tile(x, reps) made: each axis split into (repeat, size)."""
    padded = (1,) * (len(reps) - len(in_shape)) + tuple(in_shape)
    split = grad.reshape(tuple(n for pair in zip(reps, padded) for n in pair))
    return np.sum(split, axis=tuple(range(0, 2 * len(reps), 2)), dtype=_F32).reshape(in_shape)


class Repeat(Function):
    @staticmethod
    def forward(ctx, x, reps):
        ctx.reps, ctx.in_shape = reps, x.shape
        return call(np.tile, x, reps)

    @staticmethod
    def backward(ctx, grad):
        return call(_sum_tiles, grad, ctx.reps, ctx.in_shape)


class Narrow(Function):
    """x[..., start:stop, ...] along one axis: a view when contiguous, else a copy."""
    @staticmethod
    def forward(ctx, x, axis, start, stop):
        ctx.in_shape, ctx.key = x.shape, (slice(None),) * axis + (slice(start, stop),)
        out = x[ctx.key]
        return out if out.flags.c_contiguous else copy(out)

    @staticmethod
    def backward(ctx, grad):
        return call(_place, grad, ctx.key, ctx.in_shape)


def _place(grad, key, shape):
    out = np.zeros(shape, _F32)
    out[key] = grad
    return out


class Flip(Function):
    @staticmethod
    def forward(ctx, x, axes):
        ctx.axes = axes
        return copy(np.flip(x, axes))

    @staticmethod
    def backward(ctx, grad):
        return copy(np.flip(grad, ctx.axes))


def expand(x, *sizes):
    """x broadcast to ``sizes`` (new axes in front; -1 keeps an axis), as
    torch.Tensor.expand, but a copy rather than a view.

    >>> import minigrad as mg
    >>> mg.Tensor([[1.0], [2.0]]).expand(2, 3).tolist()
    [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]
    """
    x = _tensor(x, "expand")
    sizes = _dims("expand", sizes)
    lead = len(sizes) - x.ndim
    if lead < 0:
        raise ValueError(f"expand: expected at least {x.ndim} sizes (the number of dimensions), "
                         f"received {sizes}")
    shape = []
    for i, n in enumerate(sizes):
        have = x.shape[i - lead] if i >= lead else None
        if n == -1 and have is not None:
            n = have
        if n < 0 or (have is not None and have != 1 and have != n):
            raise ValueError(f"expand: expected sizes equal to the tensor's {x.shape} where it is "
                             f"not 1 (or -1 to keep them; new leading sizes >= 0), received {sizes}")
        shape.append(n)
    return Expand.apply(x, shape=tuple(shape))


def repeat(x, *repeats):
    """x tiled ``repeats`` times along each axis (torch.Tensor.repeat, NumPy's tile); at
    least one repeat per axis, extra ones add leading axes. Backward sums the tiles.

    >>> import minigrad as mg
    >>> mg.Tensor([1.0, 2.0]).repeat(2, 2).tolist()
    [[1.0, 2.0, 1.0, 2.0], [1.0, 2.0, 1.0, 2.0]]
    """
    x = _tensor(x, "repeat")
    reps = _dims("repeat", repeats)
    if len(reps) < x.ndim or any(r < 0 for r in reps):
        raise ValueError(f"repeat: expected at least {x.ndim} repeats (the number of dimensions), "
                         f"each >= 0, received {reps}")
    return Repeat.apply(x, reps=reps)


def _narrowed(x, axis, bounds):
    return tuple(Narrow.apply(x, axis=axis, start=a, stop=b) for a, b in bounds)


def _positive_int(op, name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}: expected {name} to be an integer, received {type(value).__name__}")
    return int(value)


def split(x, split_size_or_sections, dim=0):
    """x cut along ``dim`` into pieces of ``split_size_or_sections`` elements (the last may be
    smaller), or of the sizes in a list; a tuple of Tensors, each a differentiable slice.

    >>> import minigrad as mg
    >>> [t.tolist() for t in mg.arange(5).split(2)]
    [[0.0, 1.0], [2.0, 3.0], [4.0]]
    >>> [t.shape for t in mg.zeros(2, 5).split([1, 4], dim=1)]
    [(2, 1), (2, 4)]
    """
    x = _tensor(x, "split")
    if x.ndim == 0:
        raise ValueError("split: expected a tensor with at least one dimension, received a 0-d tensor")
    axis = _one_axis(dim, x.ndim, "split")
    n = x.shape[axis]
    if isinstance(split_size_or_sections, (list, tuple)):
        sizes = [_positive_int("split", "each section", s) for s in split_size_or_sections]
        if any(s < 0 for s in sizes) or sum(sizes) != n:
            raise ValueError(f"split: expected sections >= 0 that sum to the size of dim {axis} "
                             f"({n}), received {list(split_size_or_sections)}")
        starts = np.cumsum([0] + sizes).tolist()
        return _narrowed(x, axis, zip(starts[:-1], starts[1:]))
    size = _positive_int("split", "split_size_or_sections", split_size_or_sections)
    if size < 0 or (size == 0 and n != 0):
        raise ValueError(f"split: expected a split size > 0, received {size}")
    if n == 0:
        return _narrowed(x, axis, [(0, 0)])
    return _narrowed(x, axis, [(a, min(a + size, n)) for a in range(0, n, size)])


def chunk(x, chunks, dim=0):
    """x cut along ``dim`` into at most ``chunks`` pieces of ceil(n / chunks) elements (the
    last may be smaller, and fewer pieces may come back), as torch.chunk.

    >>> import minigrad as mg
    >>> [t.tolist() for t in mg.chunk(mg.arange(5), 3)]
    [[0.0, 1.0], [2.0, 3.0], [4.0]]
    """
    x = _tensor(x, "chunk")
    chunks = _positive_int("chunk", "chunks", chunks)
    if chunks <= 0:
        raise ValueError(f"chunk: expected chunks > 0, received {chunks}")
    if x.ndim == 0:
        raise ValueError("chunk: expected a tensor with at least one dimension, received a 0-d tensor")
    axis = _one_axis(dim, x.ndim, "chunk")
    n = x.shape[axis]
    return split(x, -(-n // chunks) if n else 0, dim=axis)


def flip(x, *dims):
    """x reversed along ``dims`` (an int, several, or a list); a contiguous copy.

    >>> import minigrad as mg
    >>> mg.flip(mg.Tensor([[1.0, 2.0], [3.0, 4.0]]), 1).tolist()
    [[2.0, 1.0], [4.0, 3.0]]
    """
    x = _tensor(x, "flip")
    dims = _dims("flip", dims)
    axes = tuple(_one_axis(d, x.ndim, "flip") for d in dims)
    if len(set(axes)) != len(axes):
        raise ValueError(f"flip: expected distinct dims, received {dims}")
    if x.ndim == 0:
        return Flip.apply(x, axes=())
    return Flip.apply(x, axes=axes)


def _install_more():
    T = Tensor
    T.expand = lambda self, *sizes: expand(self, *sizes)
    T.repeat = lambda self, *repeats: repeat(self, *repeats)
    T.split = lambda self, split_size_or_sections, dim=0: split(self, split_size_or_sections, dim)
    T.chunk = lambda self, chunks, dim=0: chunk(self, chunks, dim)
    T.flip = lambda self, *dims: flip(self, *dims)
