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
"""
import numpy as np

from . import function as _function
from .function import Function, is_grad_enabled  # noqa: F401  (re-exported)

_F32 = np.dtype(np.float32)


def _as_float32(data):
    if isinstance(data, Tensor):
        return data.data
    if isinstance(data, np.ndarray):
        if data.dtype == _F32:
            return data if data.flags.c_contiguous else np.array(data, order="C")
        if data.dtype.kind not in "biuf":
            raise TypeError(f"Tensor: expected real numeric data, received an array of dtype {data.dtype}")
        return data.astype(_F32, order="C")
    try:
        array = np.asarray(data)
    except Exception as exc:
        raise TypeError(f"Tensor: expected numeric data, received {type(data).__name__}") from exc
    if array.dtype.kind not in "biuf":
        raise TypeError(f"Tensor: expected real numeric data, received {type(data).__name__} "
                        f"(dtype {array.dtype})")
    return np.array(array, dtype=_F32, order="C")  # np.ascontiguousarray would make 0-d 1-d


class Tensor:
    """A float32 array that can record the operations applied to it.

    ``Tensor(data, requires_grad=False)`` shares memory with ``data`` when it is
    already a C-contiguous float32 NumPy array; anything else numeric is copied
    into one.
    """
    __slots__ = ("data", "grad", "requires_grad", "_node", "__weakref__")
    __array_priority__ = 1000  # so ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False):
        self.data = _as_float32(data)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._node = None

    @classmethod
    def _wrap(cls, array, requires_grad):
        """A Tensor around an op's fresh float32 output, skipping conversion."""
        if type(array) is not np.ndarray:  # NumPy returns scalars for 0-d arithmetic
            array = np.asarray(array, dtype=_F32)
        t = cls.__new__(cls)
        t.data, t.grad, t.requires_grad, t._node = array, None, requires_grad, None
        return t

    # -------------------------------------------------------------- basics
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)
    is_leaf = property(lambda self: self._node is None)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, separator=', ')}{grad})"

    def numpy(self):
        """The underlying float32 array (shared, not copied)."""
        return self.data

    def item(self):
        """The value of a one-element tensor as a Python float."""
        if self.data.size != 1:
            raise ValueError(f"item: expected a tensor with one element, received shape {self.shape}")
        return float(self.data.reshape(-1)[0])

    def detach(self):
        """A new leaf sharing this tensor's data, outside any graph."""
        return Tensor._wrap(self.data, False)

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
        else:
            grad = _as_float32(grad.data if isinstance(grad, Tensor) else grad)
            if grad.shape != self.shape:
                raise ValueError(f"backward: expected grad of shape {self.shape}, received {grad.shape}")
            grad = grad.copy()  # it may be stored as a leaf's .grad
        _backpropagate(self, grad)

    # -------------------------------------------------------------- operators
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __neg__(self): return ops.Neg.apply(self)
    def __pow__(self, exponent): return ops.pow(self, exponent)
    def __matmul__(self, other): return ops.matmul(self, other)
    def __rmatmul__(self, other): return ops.matmul(other, self)

    def sum(self, axis=None, keepdims=False): return ops.Sum.apply(self, axis=axis, keepdims=keepdims)
    def mean(self, axis=None, keepdims=False): return ops.Mean.apply(self, axis=axis, keepdims=keepdims)
    def reshape(self, *shape): return ops.Reshape.apply(self, shape=shape[0] if len(shape) == 1 else shape)
    def transpose(self): return ops.Transpose.apply(self)
    T = property(transpose)
    def exp(self): return ops.Exp.apply(self)
    def log(self): return ops.Log.apply(self)
    def relu(self): return ops.ReLU.apply(self)
    def softmax(self): return ops.Softmax.apply(self)


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
    if root._node is None:  # root is itself a leaf
        root.grad = grad if root.grad is None else root.grad + grad
        return
    pending = {id(root): grad}
    # Arrays handed to a tensor in this pass. An op may return the same array for
    # two inputs (add passes its gradient through); the second holder gets a copy
    # so that in-place accumulation never writes into someone else's gradient.
    handed_out = {id(grad)}
    for tensor in reversed(_topological_order(root)):
        grad = pending.pop(id(tensor), None)
        if grad is None:
            continue
        handed_out.discard(id(grad))
        node = tensor._node
        input_grads = node.function.backward(node.ctx, grad)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if _function._check_finite:
            _function.check_backward(node.function, input_grads)
        for x, g, needed in zip(node.inputs, input_grads, node.ctx.needs_input_grad):
            if not needed or g is None:
                continue
            if type(g) is not np.ndarray:  # a NumPy scalar from 0-d arithmetic
                g = np.asarray(g, dtype=_F32)
            if id(g) in handed_out:
                g = g.copy()
            if x._node is None:  # a leaf: accumulate into .grad, PyTorch style
                if x.grad is None:
                    x.grad = g
                    handed_out.add(id(g))
                elif np.may_share_memory(x.grad, g):
                    # only a reused workspace buffer can do this: the previous
                    # step's gradient was not cleared before this backward
                    raise RuntimeError("backward: a gradient buffer is being reused while the "
                                       "previous gradient is still in .grad; clear the "
                                       "gradients (optimizer.zero_grad) between steps")
                else:
                    x.grad += g
            elif id(x) in pending:
                pending[id(x)] += g
            else:
                pending[id(x)] = g
                handed_out.add(id(g))


from . import ops  # noqa: E402  (ops needs Tensor defined first)
