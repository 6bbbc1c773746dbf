"""Tensor factories with PyTorch's names: tensor, zeros, ones, full, randn, rand,
arange, eye, zeros_like, ones_like. All float32 (``tensor`` infers int64 and bool
as ``torch.tensor`` does); ``requires_grad=`` makes a parameter.

Sizes are given as ``zeros(2, 3)`` or ``zeros((2, 3))``. randn and rand draw from
``minigrad.utils.rng()``, so ``mg.utils.set_random_seed`` makes them reproducible.
Each is computed through ``kernels.tape.call``: inside a step captured by
``mg.jit``, a replay fills the tensor again (and randn/rand draw fresh numbers
from the same generator, as the eager step would).

>>> import minigrad as mg
>>> mg.utils.set_random_seed(0); a = mg.randn(2, 2)
>>> mg.utils.set_random_seed(0); b = mg.randn(2, 2)
>>> bool((a.numpy() == b.numpy()).all())
True
"""
import numbers

import numpy as np

from . import utils
from .kernels.tape import call
from .tensor import Tensor

_F32 = np.dtype(np.float32)


def _shape(op, size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for n in size:
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
            raise TypeError(f"{op}: expected integer sizes, received {size!r}")
        if n < 0:
            raise ValueError(f"{op}: expected sizes >= 0, received {size!r}")
    return tuple(int(n) for n in size)


def _make(array, requires_grad):
    return Tensor._wrap(array, bool(requires_grad))


def tensor(data, dtype=None, requires_grad=False):
    """A new tensor with its dtype inferred as ``torch.tensor`` does: bools give a bool
    tensor, integers an int64 one, anything with a float float32 (``mg.Tensor`` makes
    float32 of everything unless told otherwise).

    >>> import minigrad as mg
    >>> mg.tensor([1, 2]).dtype, mg.tensor([True]).dtype, mg.tensor([1, 2.5]).dtype
    (dtype('int64'), dtype('bool'), dtype('float32'))
    """
    if dtype is None:
        kind = (data.data if isinstance(data, Tensor) else np.asarray(data)).dtype.kind
        dtype = {"b": np.bool_, "i": np.int64, "u": np.int64}.get(kind, np.float32)
    made = Tensor(data, requires_grad=requires_grad, dtype=dtype)
    if made.data is (data.data if isinstance(data, Tensor) else data):
        made = Tensor(made.data.copy(), requires_grad=requires_grad, dtype=dtype)  # a copy, as torch
    return made


def zeros(*size, requires_grad=False):
    return _make(call(np.zeros, _shape("zeros", size), dtype=_F32), requires_grad)


def ones(*size, requires_grad=False):
    return _make(call(np.ones, _shape("ones", size), dtype=_F32), requires_grad)


def _fill_value(op, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: expected a real fill value, received {type(value).__name__}")
    return _F32.type(value)


def full(size, fill_value, requires_grad=False):
    """A tensor of shape size (a tuple or an int) filled with fill_value."""
    shape = _shape("full", size if isinstance(size, (tuple, list)) else (size,))
    return _make(call(np.full, shape, _fill_value("full", fill_value), dtype=_F32), requires_grad)


def _normal(shape):
    return utils.rng().standard_normal(shape, dtype=np.float32)


def _uniform(shape):
    return utils.rng().random(shape, dtype=np.float32)


def randn(*size, requires_grad=False):
    """Standard normal samples from minigrad's generator (``mg.utils.rng()``)."""
    return _make(call(_normal, _shape("randn", size)), requires_grad)


def rand(*size, requires_grad=False):
    """Uniform samples in [0, 1) from minigrad's generator."""
    return _make(call(_uniform, _shape("rand", size)), requires_grad)


def arange(start, end=None, step=1, requires_grad=False):
    """start, start + step, ... below end (arange(n) is 0 .. n-1), as float32.

    >>> import minigrad as mg
    >>> mg.arange(3).tolist(), mg.arange(1, 2, 0.5).tolist()
    ([0.0, 1.0, 2.0], [1.0, 1.5])
    """
    if end is None:
        start, end = 0, start
    for name, value in (("start", start), ("end", end), ("step", step)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"arange: expected a real {name}, received {type(value).__name__}")
    if step == 0:
        raise ValueError("arange: expected a non-zero step, received 0")
    return _make(call(np.arange, start, end, step, dtype=np.float64), requires_grad)


def eye(n, m=None, requires_grad=False):
    """The n x m identity (m defaults to n)."""
    n, m = _shape("eye", (n, n if m is None else m))
    return _make(call(np.eye, n, m, dtype=_F32), requires_grad)


def _like(op, t):
    if isinstance(t, Tensor):
        return t.shape
    try:
        return np.shape(t)
    except Exception:
        raise TypeError(f"{op}: expected a Tensor or array, received {type(t).__name__}") from None


def zeros_like(t, requires_grad=False):
    return zeros(_like("zeros_like", t), requires_grad=requires_grad)


def ones_like(t, requires_grad=False):
    return ones(_like("ones_like", t), requires_grad=requires_grad)
