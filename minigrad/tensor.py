"""Tensor: a float32 NumPy array with an optional reverse-mode autograd graph.

>>> import minigrad as mg
>>> x = mg.Tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
>>> loss = (x * x).sum()
>>> loss.backward()
>>> x.grad
array([[2., 4.],
       [6., 8.]], dtype=float32)

Graph semantics (PyTorch conventions):
- ``backward()`` walks the graph once, iteratively, in a fixed order, and adds
  each leaf's gradient into ``leaf.grad`` (calling it twice adds twice).
- Intermediate (non-leaf) tensors do not keep a ``.grad``; their gradients are
  dropped as soon as they have been passed down. Unlike PyTorch the graph is
  kept after backward (as with ``retain_graph=True``), so a second backward
  works and accumulates again; the graph is freed with the output tensor.
- A gradient is computed only along paths that lead to a leaf with
  ``requires_grad=True``.
- ``.grad`` is a float32 NumPy array (not a Tensor), of the leaf's shape.
- Version counter: ``_version`` counts the in-place changes of a tensor's data
  (``+=``, ``t[key] = v``, an optimizer's update). Tensors that share memory
  through ``detach()`` or a view op (reshape, basic indexing) share the counter.
  An op records the versions of the tensors whose data it saved for backward,
  and backward raises RuntimeError if one changed since, instead of computing a
  wrong gradient.
"""
import threading

import numpy as np

from . import grad_mode as _grad_mode
from .kernels import plain_array as _plain_array
from .kernels import tape as _tape
from .kernels.tape import _local as _tape_local

_F32 = np.dtype(np.float32)

# The dtypes a Tensor holds: float32 (the default, and the only one with gradients),
# int64 (indices: argmax, labels) and bool (comparisons, masks).
float32, int64, bool_ = _F32, np.dtype(np.int64), np.dtype(np.bool_)
_DTYPES = (float32, int64, bool_)


def _as_array(data, dtype=_F32):
    """data as a C-contiguous array of dtype: the array itself when it already is one,
    else a copy (recorded while capturing, as the source may be a step's input)."""
    data = data.data if isinstance(data, Tensor) else _plain_array("Tensor", "data", data)
    if not isinstance(data, np.ndarray):  # numbers and (nested) lists: a constant, copied now
        try:
            array = np.asarray(data)
        except Exception as exc:
            raise TypeError(f"Tensor: expected numeric data, received {type(data).__name__}") from exc
        if array.dtype.kind not in "biuf":
            raise TypeError(f"Tensor: expected real numeric data, received {type(data).__name__} "
                            f"(dtype {array.dtype})")
        _check_castable(array, dtype)
        return np.array(array, dtype=dtype, order="C")  # np.ascontiguousarray would make 0-d 1-d
    if data.dtype == dtype and data.flags.c_contiguous:
        return data
    if data.dtype.kind not in "biuf":
        raise TypeError(f"Tensor: expected real numeric data, received an array of dtype {data.dtype}")
    _check_castable(data, dtype)
    return _tape.copy(data, dtype)


def _check_castable(array, dtype):
    if dtype == int64 and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError("Tensor: expected finite values for an int64 tensor, received NaN or inf")


def as_dtype(dtype, op="Tensor"):
    """float32, int64 or bool as a NumPy dtype (also from "float32", torch-style names,
    np.float32, bool, int); anything else is a TypeError naming op."""
    try:
        d = np.dtype({"float": "float32", "long": "int64", "bool": "bool"}.get(dtype, dtype))
    except TypeError:
        d = None
    if d == np.dtype(int):  # Python's int
        d = int64
    if d not in _DTYPES:
        raise TypeError(f"{op}: expected dtype float32, int64 or bool, received {dtype!r}")
    return d


class _Size(int):
    """``t.size``: the number of elements (NumPy's attribute), and, called,
    the shape (PyTorch's method): ``t.size()`` or ``t.size(dim)``."""
    # (an int subclass cannot have __slots__: shape lives in the instance dict)

    def __new__(cls, count, shape):
        self = super().__new__(cls, count)
        self.shape = shape
        return self

    def __reduce__(self):  # pickles and copies as the plain count
        return int, (int(self),)

    def __call__(self, dim=None):
        if dim is None:
            return self.shape
        ndim = len(self.shape)
        if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)) \
                or not -max(ndim, 1) <= dim < max(ndim, 1) or ndim == 0:
            raise IndexError(f"size: expected dim in [{-ndim}, {ndim}), received {dim!r}")
        return self.shape[dim]


class Tensor:
    """A float32 array that can record the operations applied to it.

    ``Tensor(data, requires_grad=False)`` shares memory with ``data`` when it is
    already a C-contiguous float32 NumPy array; anything else numeric is copied
    into one (integers and bools too: float32 is the default dtype).
    ``Tensor(data, dtype=mg.int64)`` or ``dtype=mg.bool`` holds indices or masks
    instead, as comparisons (bool) and argmax (int64) return them; those never
    require grad, and arithmetic on them gives float32 tensors.

    >>> import minigrad as mg
    >>> labels = mg.Tensor([1, 0, 2], dtype=mg.int64)
    >>> hits = mg.Tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.3, 0.3, 0.4]]).argmax(dim=1) == labels
    >>> hits, hits.float().mean().item()
    (Tensor([ True,  True,  True], dtype=bool), 1.0)
    """
    # _vc: the version counter, a one-element list shared by tensors that share memory
    __slots__ = ("data", "grad", "requires_grad", "_node", "_vc", "__weakref__")
    __array_priority__ = 1000  # so ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None):
        if not (isinstance(requires_grad, (bool, np.bool_))
                or (isinstance(requires_grad, (int, np.integer)) and requires_grad in (0, 1))):
            # bool() of an array is ambiguous, or silently true for a one-element one
            raise TypeError(f"Tensor: expected requires_grad to be True or False, "
                            f"received {type(requires_grad).__name__}")
        dtype = _F32 if dtype is None else as_dtype(dtype)
        if requires_grad and dtype != _F32:
            raise RuntimeError(f"Tensor: only float32 tensors can require gradients, "
                               f"received dtype {dtype}")
        self.data = _as_array(data, dtype)
        same = isinstance(data, Tensor) and self.data is data.data
        self._vc = data._vc if same else [0]  # shared memory shares the version counter
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._node = None

    @classmethod
    def _wrap(cls, array, requires_grad):
        """A Tensor around an op's fresh float32 output, skipping conversion."""
        if type(array) is not np.ndarray:  # NumPy returns scalars for 0-d arithmetic
            array = np.asarray(array, dtype=_F32)
        t = cls.__new__(cls)
        t.data, t.grad, t.requires_grad, t._node, t._vc = array, None, requires_grad, None, [0]
        return t

    # -------------------------------------------------------------- basics
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: _Size(self.data.size, self.data.shape),
                    doc="the number of elements; called, the shape: t.size(), t.size(dim)")
    is_leaf = property(lambda self: self._node is None)
    _version = property(lambda self: self._vc[0], doc="in-place changes of the data so far")

    def dim(self):
        """The number of axes (``ndim``), as ``torch.Tensor.dim()``."""
        return self.data.ndim

    def numel(self):
        """The number of elements (``size``), as ``torch.Tensor.numel()``."""
        return self.data.size

    def is_floating_point(self):
        """True for float32 tensors (the ones that can require grad)."""
        return self.data.dtype == _F32

    def requires_grad_(self, requires_grad=True):
        """Start (or stop) recording operations on this leaf; returns the tensor."""
        if requires_grad and self.data.dtype != _F32:
            raise RuntimeError(f"requires_grad_: only float32 tensors can require gradients, "
                               f"received dtype {self.data.dtype}")
        if self._node is not None and not requires_grad:
            raise RuntimeError("requires_grad_: expected a leaf tensor, received one computed by "
                               "an op (use detach() for a copy outside the graph)")
        self.requires_grad = bool(requires_grad)
        return self

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len: expected a tensor with at least one axis, received a 0-d tensor")
        return len(self.data)

    # -------------------------------------------------------------- interop
    def __array__(self, dtype=None, copy=None):
        """np.asarray(t): the data itself (dtype/copy as NumPy 2 passes them)."""
        if dtype is not None and np.dtype(dtype) != self.data.dtype:
            if copy is False:
                raise ValueError(f"__array__: converting {self.data.dtype} to {np.dtype(dtype)} "
                                 f"needs a copy, received copy=False")
            return self.data.astype(dtype)
        return self.data.copy() if copy else self.data

    def tolist(self):
        """The values as (nested lists of) Python floats (ints, bools for those dtypes)."""
        return self.data.tolist()

    def _one_value(self, op):
        if self.data.size != 1:
            raise ValueError(f"{op}: expected a tensor with one element, received shape {self.shape}")
        return self.data.reshape(-1)[0]

    def __float__(self):
        return float(self._one_value("float"))

    def __int__(self):
        return int(self._one_value("int"))

    def __bool__(self):
        """The truth of a one-element tensor (more elements are ambiguous, as in PyTorch)."""
        if self.data.size != 1:
            raise RuntimeError(f"bool: the truth value of a tensor with more than one element "
                               f"is ambiguous (shape {self.shape}); use (t != 0).any() or .all()")
        return bool(self.data.reshape(-1)[0])

    def to(self, *args, dtype=None, **kwargs):
        """``t.to(dtype)`` (float32, int64 or bool; a copy unless it is already that
        dtype) or ``t.to("cpu")``, the only device (self)."""
        for value in args + tuple(kwargs.values()):
            if isinstance(value, str) and value.split(":")[0] == "cpu":
                continue
            if dtype is not None or kwargs.keys() - {"device"}:
                raise TypeError(f"to: expected a dtype and/or device='cpu', received {args!r} {kwargs!r}")
            dtype = value
        if dtype is None:
            return self
        dtype = as_dtype(dtype, "to")
        if dtype == self.data.dtype:
            return self
        if dtype == _F32:  # through an op, so that the result is a float32 graph input
            return Tensor._wrap(_tape.copy(self.data), False)
        return Tensor._wrap(_as_array(self.data, dtype), False)

    def contiguous(self):
        """The tensor itself: minigrad tensors are always C-contiguous."""
        return self

    def cpu(self):
        """The tensor itself: the CPU is the only device."""
        return self

    def float(self):
        """As float32 (the tensor itself when it is float32 already)."""
        return self.to(_F32)

    def long(self):
        """As int64 (truncating toward zero, as a C cast); not differentiable."""
        return self.to(int64)

    def bool(self):
        """As bool (non-zero is True); not differentiable."""
        if self.data.dtype == bool_:
            return self
        return Tensor._wrap(_tape.call_as(np.bool_, np.not_equal, self.data, 0), False)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dtype = "" if self.data.dtype == _F32 else f", dtype={self.data.dtype}"
        return f"Tensor({np.array2string(self.data, separator=', ')}{dtype}{grad})"

    def __format__(self, spec):
        """A one-element tensor formats as its value (f"{loss:.4f}"), as in PyTorch."""
        if self.data.ndim == 0 or (spec and self.data.size == 1):
            return format(self.item(), spec)
        return format(repr(self), spec)

    def numpy(self):
        """The underlying array (shared, not copied)."""
        return self.data

    def item(self):
        """The value of a one-element tensor as a Python float (int, bool for those dtypes)."""
        return self._one_value("item").item()

    def detach(self):
        """A new leaf sharing this tensor's data, outside any graph."""
        t = Tensor._wrap(self.data, False)
        t._vc = self._vc  # the same memory: an in-place change of either is seen by both
        return t

    # -------------------------------------------------------------- autograd
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is the upstream gradient; it may be omitted for a one-element tensor.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad and has no graph "
                               "(did you build it under no_grad, or from inputs without "
                               "requires_grad=True?)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: grad can be omitted only for a one-element tensor, "
                                   f"this one has shape {self.shape}")
            grad = np.ones(self.shape, dtype=_F32)
            recording = getattr(_tape_local, "tape", None)
            if recording is not None:
                recording.mark(grad)  # a constant seed: the same in every replay
            if self._node is not None:  # only the engine holds it (no leaf stores it)
                _seed.array = grad
        else:
            grad = _as_array(grad)
            if grad.shape != self.shape:
                raise ValueError(f"backward: expected grad of shape {self.shape}, received {grad.shape}")
            grad = _tape.copy(grad)  # it may be stored as a leaf's .grad
        try:
            _backpropagate(self, grad)
        finally:
            _seed.array = None

    # Operators and math methods (+, @, sum, relu, ...) are installed by
    # minigrad.ops, which sits above this module.


_seed = threading.local()


def is_backward_seed(grad):
    """True if grad is the all-ones seed of the backward pass running on this
    thread (``loss.backward()`` of a computed loss): only the engine holds it and
    it stays all ones, so an op may skip multiplying by it (x * 1 is exact)."""
    return grad is getattr(_seed, "array", None)


def _topological_order(root):
    """Every tensor that has a graph node and leads to root, inputs before users.

    Iterative depth-first search over inputs in their positional order, so the
    order (and so the order in which gradients are summed) is deterministic and
    any depth works.
    """
    order, visited = [], {id(root)}
    stack = [(root, iter(root._node.inputs))] if root._node is not None else []
    while stack:
        tensor, children = stack[-1]
        for child in children:
            if (isinstance(child, Tensor) and child.requires_grad and child._node is not None
                    and id(child) not in visited):
                visited.add(id(child))
                stack.append((child, iter(child._node.inputs)))
                break
        else:
            stack.pop()
            order.append(tensor)
    return order


def _backpropagate(root, grad):
    recording = getattr(_tape_local, "tape", None)
    if root._node is None:  # root is itself a leaf
        _accumulate_leaf(root, grad, recording)
        return
    pending = {id(root): grad}
    # Arrays handed to a tensor in this pass. An op may return the same array for
    # two inputs (add passes its gradient through); the second holder gets a copy
    # so that in-place accumulation never writes into someone else's gradient.
    handed_out = {id(grad)}
    check_finite = _grad_mode._check_finite
    for tensor in reversed(_topological_order(root)):
        grad = pending.pop(id(tensor), None)
        if grad is None:
            continue
        handed_out.discard(id(grad))
        node = tensor._node
        if node.ctx.versions:
            _check_versions(node)
        input_grads = node.function.backward(node.ctx, grad)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if len(input_grads) != len(node.inputs):
            raise RuntimeError(f"{_grad_mode.op_name(node.function)}.backward returned "
                               f"{len(input_grads)} gradients, expected one per input "
                               f"({len(node.inputs)})")
        if check_finite:
            _grad_mode.check_backward(node.function, input_grads)
        for x, g, needed in zip(node.inputs, input_grads, node.ctx.needs_input_grad):
            if not needed or g is None:
                continue
            if type(g) is not np.ndarray:  # a NumPy scalar from 0-d arithmetic
                g = _tape.copy(g)
            if g.shape != x.data.shape:
                raise RuntimeError(f"{_grad_mode.op_name(node.function)}.backward returned a "
                                   f"gradient of shape {g.shape} for an input of shape "
                                   f"{x.data.shape}")
            if recording is not None and not recording.knows(g):
                recording.refuse(f"{_grad_mode.op_name(node.function)}.backward returned an "
                                 f"array made outside minigrad.kernels, which a replay could "
                                 f"not recompute")
            if id(g) in handed_out:
                g = _tape.copy(g)
            if x._node is None:  # a leaf: accumulate into .grad, PyTorch style
                if _accumulate_leaf(x, g, recording):
                    handed_out.add(id(g))
            elif id(x) in pending:
                _tape.into(pending[id(x)], np.add, g)
            else:
                pending[id(x)] = g
                handed_out.add(id(g))


def _check_versions(node):
    for counter, version, shape in node.ctx.versions:
        if counter[0] != version:
            name = _grad_mode.op_name(node.function)
            raise RuntimeError(
                f"backward: one of the variables needed for gradient computation has been "
                f"modified by an inplace operation: a tensor of shape {shape} that {name} saved "
                f"is at version {counter[0]}; expected version {version} instead (compute the "
                f"graph again after the in-place change, or change a copy: t = t + x)")


def _accumulate_leaf(leaf, g, recording):
    """leaf.grad = g, or += g; True when g itself became leaf.grad."""
    if recording is not None:
        recording.read_grad(leaf)
    if leaf.grad is None:
        leaf.grad = g
        taken = True
    else:
        _tape.into(leaf.grad, np.add, g)
        taken = False
    if recording is not None:
        recording.wrote_grad(leaf)
    return taken
