"""Cross-entropy losses, Keras-style: ``loss(y_true, y_pred)`` -> scalar Tensor, the mean over the batch.

On logits (``from_logits=True``) they are the fused C op ``mg.softmax_cross_entropy``.
On probabilities they follow Keras' clipped path: rows renormalised to sum 1,
clipped to [1e-7, 1 - 1e-7], then -sum(y * log p). (A model whose last layer is
a softmax does not take that path: it trains on the logits, as TensorFlow does.)

>>> import numpy as np, minigrad as mg
>>> from minigrad import losses
>>> p = mg.Tensor([[0.5, 0.25, 0.25]])
>>> round(losses.categorical_crossentropy(np.array([[1.0, 0.0, 0.0]]), p).item(), 4)
0.6931
>>> round(losses.sparse_categorical_crossentropy(np.array([0]), p).item(), 4)
0.6931
"""
import numpy as np

from .function import Function
from .kernels import plain_array
from .kernels.tape import call, copy, ufunc
from .ops import softmax_cross_entropy
from .tensor import Tensor

EPSILON = 1e-7
_F32 = np.float32


class _Clip(Function):
    """clip(x, lo, hi); the gradient passes where lo <= x <= hi (as tf.clip_by_value)."""
    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.save_for_backward(x)
        ctx.bounds = (lo, hi)
        return call(np.clip, x, _F32(lo), _F32(hi))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        lo, hi = ctx.bounds
        return ufunc(np.multiply, grad, call(_inside, x, _F32(lo), _F32(hi))), None, None


def _inside(x, lo, hi):
    return (x >= lo) & (x <= hi)


# ---------------------------------------------------------------- targets

def _array(y, op="loss"):
    return y.data if isinstance(y, Tensor) else np.asarray(plain_array(op, "y_true", y))


def sparse_targets(y_true, num_classes, op="sparse_categorical_crossentropy"):
    """Integer labels as int64 (N,), checked to lie in [0, num_classes). (N, 1) is accepted."""
    y = _array(y_true, op)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1:
        hint = " (one-hot targets? use categorical_crossentropy)" if y.ndim == 2 else ""
        raise ValueError(f"{op}: expected integer labels of shape (N,) or (N, 1), "
                         f"received shape {y.shape}{hint}")
    if y.dtype.kind == "f":
        # Keras casts float labels; accept them only when they are whole numbers.
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(f"{op}: expected integer class labels, received non-integral values")
    elif y.dtype.kind not in "iu":
        raise TypeError(f"{op}: expected integer class labels, received dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = y.min() if y.min() < 0 else y.max()
        raise ValueError(f"{op}: expected labels in [0, {num_classes}) for a model with "
                         f"{num_classes} outputs, received {int(bad)}")
    if y.dtype == np.int64 and y.flags.c_contiguous and y.flags.aligned:
        return y
    return copy(y, np.int64)


def categorical_targets(y_true, num_classes, op="categorical_crossentropy"):
    """Target rows (one-hot or probabilities) as float32 (N, num_classes)."""
    y = _array(y_true, op)
    if y.ndim != 2 or y.shape[1] != num_classes:
        hint = (" (integer labels? use sparse_categorical_crossentropy or to_categorical)"
                if y.ndim == 1 else "")
        raise ValueError(f"{op}: expected one-hot targets of shape (N, {num_classes}) for a model "
                         f"with {num_classes} outputs, received shape {y.shape}{hint}")
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{op}: expected numeric targets, received dtype {y.dtype}")
    if y.dtype == _F32 and y.flags.c_contiguous and y.flags.aligned:
        return y
    return copy(y, _F32)


def _pred(y_pred, op):
    y_pred = y_pred if isinstance(y_pred, Tensor) else Tensor(y_pred)
    if y_pred.ndim != 2:
        raise ValueError(f"{op}: expected predictions of shape (N, C), received {y_pred.shape}")
    return y_pred


def _check_rows(y, y_pred, op):
    if len(y) != len(y_pred):
        raise ValueError(f"{op}: expected as many targets as predictions ({len(y_pred)}), received {len(y)}")


def _clipped_crossentropy(y, p):
    """Keras' probability path: renormalise rows, clip, -sum(y * log p), mean over rows."""
    p = p / p.sum(axis=-1, keepdims=True)
    p = _Clip.apply(p, EPSILON, 1.0 - EPSILON)
    return -(Tensor(y) * p.log()).sum(axis=-1).mean()


# ---------------------------------------------------------------- functions

def categorical_crossentropy(y_true, y_pred, from_logits=False):
    """Mean cross-entropy of one-hot (or probability) rows y_true (N, C) against y_pred (N, C)."""
    op = "categorical_crossentropy"
    y_pred = _pred(y_pred, op)
    y = categorical_targets(y_true, y_pred.shape[1], op)
    _check_rows(y, y_pred, op)
    if from_logits:
        return softmax_cross_entropy(y_pred, y)
    return _clipped_crossentropy(y, y_pred)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False):
    """Mean cross-entropy of integer labels y_true (N,) against y_pred (N, C)."""
    op = "sparse_categorical_crossentropy"
    y_pred = _pred(y_pred, op)
    y = sparse_targets(y_true, y_pred.shape[1], op)
    _check_rows(y, y_pred, op)
    if from_logits:
        return softmax_cross_entropy(y_pred, y)
    return _clipped_crossentropy(call(_one_hot, y, y_pred.shape[1]), y_pred)


def _one_hot(labels, classes):
    out = np.zeros((len(labels), classes), dtype=_F32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


# ---------------------------------------------------------------- classes

class Loss:
    """Base of the loss classes: a named callable ``loss(y_true, y_pred)`` -> scalar Tensor."""
    name = "loss"
    sparse = False  # integer labels (True) or target rows (False)

    def __init__(self, from_logits=False):
        if not isinstance(from_logits, (bool, np.bool_)):
            raise TypeError(f"{type(self).__name__}: expected from_logits to be a bool, "
                            f"received {from_logits!r}")
        self.from_logits = bool(from_logits)

    def __call__(self, y_true, y_pred):
        raise NotImplementedError

    @property
    def fuses_with(self):
        """The name of an output activation this loss can take fused, computing the loss
        from that activation's input (``on_pre_activation``); None when it cannot."""
        return None

    def on_pre_activation(self, y_true, z):
        """The loss of activation(z), computed from z (for ``fuses_with``)."""
        raise NotImplementedError

    def targets(self, y_true, num_classes):
        """y_true validated and converted once (a whole data set) for this loss."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class CategoricalCrossentropy(Loss):
    """Cross-entropy against one-hot targets.

    >>> import numpy as np, minigrad as mg
    >>> loss = CategoricalCrossentropy(from_logits=True)
    >>> round(loss(np.array([[0.0, 1.0]]), mg.Tensor([[0.0, 0.0]])).item(), 4)
    0.6931
    """
    name = "categorical_crossentropy"

    def __call__(self, y_true, y_pred):
        return categorical_crossentropy(y_true, y_pred, from_logits=self.from_logits)

    @property
    def fuses_with(self):
        return None if self.from_logits else "softmax"

    def on_pre_activation(self, y_true, z):
        return categorical_crossentropy(y_true, z, from_logits=True)

    def targets(self, y_true, num_classes):
        return categorical_targets(y_true, num_classes, self.name)


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy against integer class labels (any integer dtype, e.g. uint8).

    >>> import numpy as np, minigrad as mg
    >>> loss = SparseCategoricalCrossentropy(from_logits=True)
    >>> round(loss(np.array([1], np.uint8), mg.Tensor([[0.0, 0.0]])).item(), 4)
    0.6931
    """
    name = "sparse_categorical_crossentropy"
    sparse = True

    def __call__(self, y_true, y_pred):
        return sparse_categorical_crossentropy(y_true, y_pred, from_logits=self.from_logits)

    @property
    def fuses_with(self):
        return None if self.from_logits else "softmax"

    def on_pre_activation(self, y_true, z):
        return sparse_categorical_crossentropy(y_true, z, from_logits=True)

    def targets(self, y_true, num_classes):
        return sparse_targets(y_true, num_classes, self.name)


_BY_NAME = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}
_BY_FUNCTION = {categorical_crossentropy: CategoricalCrossentropy,
                sparse_categorical_crossentropy: SparseCategoricalCrossentropy}


def get(identifier):
    """A loss from a name, a Loss instance or class, or any callable ``f(y_true, y_pred)``.

    >>> get("sparse_categorical_crossentropy")
    SparseCategoricalCrossentropy(from_logits=False)
    """
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, str):
        key = identifier.lower()
        for cls in _BY_NAME.values():
            if key == cls.__name__.lower():
                return cls()
        if key in _BY_NAME:
            return _BY_NAME[key]()
        raise ValueError(f"Unknown loss {identifier!r}; expected one of {sorted(_BY_NAME)} "
                         f"(or a Loss instance or callable)")
    if callable(identifier):
        cls = next((c for f, c in _BY_FUNCTION.items() if f is identifier), None)
        return cls() if cls else identifier
    raise TypeError(f"Could not interpret loss {identifier!r}: expected a name, a Loss or a callable")
