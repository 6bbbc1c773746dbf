"""The Function contract every differentiable op follows.

An op is a subclass of Function with two static methods on NumPy arrays:
``forward(ctx, *inputs, **options) -> array`` and
``backward(ctx, grad) -> one gradient (or None) per positional input``.
``ctx.needs_input_grad[i]`` tells backward which gradients anyone needs, so an
op skips the rest (no gradient for input images, for example).

Every array forward or backward returns must come from ``minigrad.kernels``
(a C kernel, or NumPy work done through ``kernels.tape.ufunc``/``call``/``copy``)
or be a view of one: that is what lets ``mg.jit`` record a step once and replay
it. An op that breaks this rule still runs, and ``mg.jit`` then runs that step
eagerly every time rather than replay a stale value.

>>> import numpy as np, minigrad as mg
>>> from minigrad import kernels
>>> class Square(Function):
...     @staticmethod
...     def forward(ctx, x):
...         ctx.save_for_backward(x)
...         return kernels.tape.ufunc(np.multiply, x, x)
...     @staticmethod
...     def backward(ctx, grad):
...         (x,) = ctx.saved
...         return kernels.tape.ufunc(np.multiply, grad, kernels.tape.ufunc(np.add, x, x))
>>> x = mg.Tensor([3.0], requires_grad=True)
>>> Square.apply(x).sum().backward(); x.grad
array([6.], dtype=float32)
"""
import numpy as np

from . import grad_mode as _grad_mode
from .grad_mode import (check_backward, check_forward, get_check_finite,  # noqa: F401
                        is_grad_enabled, no_grad, op_name, set_check_finite)
from .kernels.tape import _local as _tape_local
from .kernels.tape import copy as _copy
from .tensor import Tensor

_F32 = np.dtype(np.float32)


def _root(array):
    while array.base is not None and isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _share_version_counter(out, inputs):
    """A view of an input's memory counts that input's in-place changes too."""
    root = _root(out.data)
    for x in inputs:
        if isinstance(x, Tensor) and _root(x.data) is root:
            out._vc = x._vc
            return


def _record_versions(ctx, inputs, out):
    """Remember the versions of the tensors (inputs or output) whose data backward reads."""
    saved = ctx.saved
    versions = []
    for x in inputs + (out,):  # plain loops: this runs for every recorded op
        if isinstance(x, Tensor):
            data = x.data
            for s in saved:
                if s is data:
                    counter = x._vc
                    versions.append((counter, counter[0], data.shape))
                    break
    if versions:
        ctx.versions = tuple(versions)


class Context:
    """What forward leaves for backward: saved arrays and any attributes it sets.

    ``versions``: (counter, version, shape) of each Tensor whose data forward
    saved, set by ``Function.apply``; backward refuses to run if one changed.
    """
    versions = ()

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved = ()

    def save_for_backward(self, *arrays):
        self.saved = arrays


class Node:
    """The graph edge of a computed Tensor: the op, its context and its inputs."""
    __slots__ = ("function", "ctx", "inputs")

    def __init__(self, function, ctx, inputs):
        self.function, self.ctx, self.inputs = function, ctx, inputs


class Function:
    # An op whose forward only moves data (reshape, permute, cat, indexing) keeps an
    # int64 or bool input's dtype; every other op computes in float32, so such
    # inputs reach its forward as float32 copies (they never require grad).
    keeps_dtype = False

    @staticmethod
    def forward(ctx, *inputs, **options):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **options):
        """Run forward on the inputs' data and, when needed, record the graph edge."""
        needs = tuple(isinstance(x, Tensor) and x.requires_grad for x in inputs)
        record = any(needs) and is_grad_enabled()
        ctx = Context(needs)
        raw = [x.data if isinstance(x, Tensor) else x for x in inputs]
        if not cls.keeps_dtype:
            for i, a in enumerate(raw):
                if isinstance(inputs[i], Tensor) and a.dtype is not _F32 and a.dtype != _F32:
                    raw[i] = _copy(a)
        recording = getattr(_tape_local, "tape", None)
        if recording is not None:
            for x in inputs:
                if isinstance(x, Tensor) and x._node is None:
                    recording.note_leaf(x)
        result = cls.forward(ctx, *raw, **options)
        if _grad_mode._check_finite:
            check_forward(cls, result)
        out = Tensor._wrap(result, record)
        if type(result) is np.ndarray and result.base is not None:
            _share_version_counter(out, inputs)
        if record:
            out._node = Node(cls, ctx, inputs)
            if ctx.saved:
                _record_versions(ctx, inputs, out)
        if recording is not None and not recording.knows(out.data):
            recording.refuse(f"{op_name(cls)}: its forward returned an array made outside "
                             f"minigrad.kernels, which a replay could not recompute (compute "
                             f"it with a kernels function or kernels.tape.ufunc/call/copy)")
        return out
