"""Losses, Keras-style: ``loss(y_true, y_pred)`` -> scalar Tensor, the mean over the batch.

String ids, functions and classes: categorical_crossentropy,
sparse_categorical_crossentropy, binary_crossentropy, mean_squared_error / mse,
mean_absolute_error / mae. (The functions return the batch mean, ready for
``backward()``; Keras' functions return per-sample values, which ``compile``
reduces to the same mean. A user's callable may return either: ``compile``
takes the mean of per-sample values.)

On logits (``from_logits=True``) the cross-entropies are the fused C ops
(softmax + CE, sigmoid + BCE). On probabilities they follow Keras' clipped path:
clipped to [1e-7, 1 - 1e-7] (rows renormalised for the categorical ones). A
model whose last layer is a softmax (or a sigmoid, for binary_crossentropy)
does not take that path: it trains on that layer's input through the fused op,
as TensorFlow does (``Loss.fuses_with``).

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
from .kernels import tape
from .kernels import plain_array
from .kernels.tape import call, copy, ufunc
from .ops import nn, softmax_cross_entropy
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


def _reduce(per_sample, sample_weight):
    """Keras' 'sum_over_batch_size': mean of per-sample losses (weighted: sum(w l) / N)."""
    if sample_weight is None:
        return per_sample.mean()
    return (per_sample * sample_weight).sum() / float(max(per_sample.shape[0], 1))


def _clipped_crossentropy(y, p, sample_weight=None):
    """Keras' probability path: renormalise rows, clip, -sum(y * log p), mean over rows."""
    p = p / p.sum(axis=-1, keepdims=True)
    p = _Clip.apply(p, EPSILON, 1.0 - EPSILON)
    return _reduce(-(Tensor(y) * p.log()).sum(axis=-1), sample_weight)


# ---------------------------------------------------------------- functions

def _fused_softmax(y_pred, y, sample_weight, probs):
    if sample_weight is None:
        return softmax_cross_entropy(y_pred, y, probs_out=probs)
    return nn.softmax_cross_entropy_weighted(y_pred, y, sample_weight, probs=probs)


def categorical_crossentropy(y_true, y_pred, from_logits=False, sample_weight=None, probs=None):
    """Mean cross-entropy of one-hot (or probability) rows y_true (N, C) against y_pred (N, C).

    ``probs`` (a list, logits only) receives the softmax the fused kernel computed."""
    op = "categorical_crossentropy"
    y_pred = _pred(y_pred, op)
    y = categorical_targets(y_true, y_pred.shape[1], op)
    _check_rows(y, y_pred, op)
    if from_logits:
        return _fused_softmax(y_pred, y, sample_weight, probs)
    return _clipped_crossentropy(y, y_pred, sample_weight)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, sample_weight=None,
                                    probs=None):
    """Mean cross-entropy of integer labels y_true (N,) against y_pred (N, C)."""
    op = "sparse_categorical_crossentropy"
    y_pred = _pred(y_pred, op)
    y = sparse_targets(y_true, y_pred.shape[1], op)
    _check_rows(y, y_pred, op)
    if from_logits:
        return _fused_softmax(y_pred, y, sample_weight, probs)
    return _clipped_crossentropy(call(_one_hot, y, y_pred.shape[1]), y_pred, sample_weight)


def _any_pred(y_pred, op):
    y_pred = y_pred if isinstance(y_pred, Tensor) else Tensor(y_pred)
    if y_pred.ndim < 1:
        raise ValueError(f"{op}: expected predictions of shape (N, ...), received {y_pred.shape}")
    return y_pred


def regression_targets(y_true, shape, op):
    """Float32 targets of the predictions' per-sample shape; (N,) is taken as (N, 1)
    for one output, as Keras squeezes/expands it."""
    y = _array(y_true)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{op}: expected numeric targets, received dtype {y.dtype}")
    if y.ndim == 1 and len(shape) == 2 and shape[1] == 1:
        y = y.reshape(-1, 1)
    if y.shape[1:] != tuple(shape[1:]):
        raise ValueError(f"{op}: expected targets of shape (N, {', '.join(map(str, shape[1:]))}) "
                         f"for a model with output shape {tuple(shape)}, received {y.shape}")
    if y.dtype == _F32 and y.flags.c_contiguous:
        return y
    return copy(y, _F32)


def _per_sample_mean(t):
    return t.mean(axis=tuple(range(1, t.ndim))) if t.ndim > 1 else t


def binary_crossentropy(y_true, y_pred, from_logits=False, sample_weight=None, probs=None):
    """Mean binary cross-entropy, -(y log p + (1 - y) log(1 - p)), over the last axis and
    the batch. On logits: the fused, stable sigmoid + BCE kernel; on probabilities:
    p clipped to [1e-7, 1 - 1e-7] (Keras).

    >>> import numpy as np, minigrad as mg
    >>> round(binary_crossentropy(np.array([[1.0], [0.0]]), mg.Tensor([[0.9], [0.2]])).item(), 4)
    0.1643
    """
    op = "binary_crossentropy"
    y_pred = _any_pred(y_pred, op)
    y = regression_targets(y_true, y_pred.shape, op)
    _check_rows(y, y_pred, op)
    if from_logits:
        return nn.sigmoid_binary_cross_entropy(y_pred, y, sample_weight, probs=probs)
    p = _Clip.apply(y_pred, EPSILON, 1.0 - EPSILON)
    t = Tensor(y)
    per = -(t * p.log() + (1.0 - t) * (1.0 - p).log())
    return _reduce(_per_sample_mean(per), sample_weight)


def mean_squared_error(y_true, y_pred, sample_weight=None):
    """Mean over the last axis of (y_true - y_pred)^2, then over the batch.

    >>> import numpy as np, minigrad as mg
    >>> mean_squared_error(np.array([[1.0, 2.0]]), mg.Tensor([[0.0, 4.0]])).item()
    2.5
    """
    op = "mean_squared_error"
    y_pred = _any_pred(y_pred, op)
    y = regression_targets(y_true, y_pred.shape, op)
    _check_rows(y, y_pred, op)
    d = y_pred - Tensor(y)
    return _reduce(_per_sample_mean(d * d), sample_weight)


def mean_absolute_error(y_true, y_pred, sample_weight=None):
    """Mean over the last axis of |y_true - y_pred|, then over the batch.

    >>> import numpy as np, minigrad as mg
    >>> mean_absolute_error(np.array([[1.0, 2.0]]), mg.Tensor([[0.0, 4.0]])).item()
    1.5
    """
    op = "mean_absolute_error"
    y_pred = _any_pred(y_pred, op)
    y = regression_targets(y_true, y_pred.shape, op)
    _check_rows(y, y_pred, op)
    return _reduce(_per_sample_mean(_Abs.apply(y_pred - Tensor(y))), sample_weight)


mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error


class _Abs(Function):
    """|x|; the gradient is sign(x) (0 at 0, as tf.abs)."""
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ufunc(np.abs, x)

    @staticmethod
    def backward(ctx, grad):
        return ufunc(np.multiply, grad, ufunc(np.sign, ctx.saved[0]))


def _one_hot(labels, classes):
    out = np.zeros((len(labels), classes), dtype=_F32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


# ---------------------------------------------------------------- classes

class Loss:
    """Base of the loss classes: a named callable ``loss(y_true, y_pred, sample_weight=None)``
    -> scalar Tensor (the mean over the batch; weighted: sum(w * loss) / N, Keras'
    'sum_over_batch_size')."""
    name = "loss"
    sparse = False  # integer labels (True) or target rows (False)

    def __setattr__(self, name, value):
        tape.changed()  # a recorded step (mg.jit) computed this loss as it was
        object.__setattr__(self, name, value)

    def __init__(self, from_logits=False):
        if not isinstance(from_logits, (bool, np.bool_)):
            raise TypeError(f"{type(self).__name__}: expected from_logits to be a bool, "
                            f"received {from_logits!r}")
        self.from_logits = bool(from_logits)

    def __call__(self, y_true, y_pred, sample_weight=None):
        raise NotImplementedError

    @property
    def fuses_with(self):
        """The name of an output activation this loss can take fused, computing the loss
        from that activation's input (``on_pre_activation``); None when it cannot."""
        return None

    def on_pre_activation(self, y_true, z, sample_weight=None, probs=None):
        """The loss of activation(z), computed from z (for ``fuses_with``); ``probs``, a
        list, receives activation(z) as the fused kernel computed it."""
        raise NotImplementedError

    def targets(self, y_true, output_shape):
        """y_true validated and converted once (a whole data set) for this loss;
        output_shape is the model's per-sample output shape."""
        raise NotImplementedError

    def get_config(self):
        return {"from_logits": self.from_logits}

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


def _classes(output_shape, op):
    if len(output_shape) != 1:
        raise ValueError(f"{op}: expected a model output of shape (N, classes), received "
                         f"(N, {', '.join(map(str, output_shape))})")
    return output_shape[0]


class CategoricalCrossentropy(Loss):
    """Cross-entropy against one-hot targets.

    >>> import numpy as np, minigrad as mg
    >>> loss = CategoricalCrossentropy(from_logits=True)
    >>> round(loss(np.array([[0.0, 1.0]]), mg.Tensor([[0.0, 0.0]])).item(), 4)
    0.6931
    """
    name = "categorical_crossentropy"

    def __call__(self, y_true, y_pred, sample_weight=None):
        return categorical_crossentropy(y_true, y_pred, self.from_logits, sample_weight)

    @property
    def fuses_with(self):
        return None if self.from_logits else "softmax"

    def on_pre_activation(self, y_true, z, sample_weight=None, probs=None):
        return categorical_crossentropy(y_true, z, True, sample_weight, probs)

    def targets(self, y_true, output_shape):
        return categorical_targets(y_true, _classes(output_shape, self.name), self.name)


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy against integer class labels (any integer dtype, e.g. uint8).

    >>> import numpy as np, minigrad as mg
    >>> loss = SparseCategoricalCrossentropy(from_logits=True)
    >>> round(loss(np.array([1], np.uint8), mg.Tensor([[0.0, 0.0]])).item(), 4)
    0.6931
    """
    name = "sparse_categorical_crossentropy"
    sparse = True

    def __call__(self, y_true, y_pred, sample_weight=None):
        return sparse_categorical_crossentropy(y_true, y_pred, self.from_logits, sample_weight)

    @property
    def fuses_with(self):
        return None if self.from_logits else "softmax"

    def on_pre_activation(self, y_true, z, sample_weight=None, probs=None):
        return sparse_categorical_crossentropy(y_true, z, True, sample_weight, probs)

    def targets(self, y_true, output_shape):
        return sparse_targets(y_true, _classes(output_shape, self.name), self.name)


class BinaryCrossentropy(Loss):
    """Binary cross-entropy, for a sigmoid output (one unit, or one per label).

    >>> import numpy as np, minigrad as mg
    >>> round(BinaryCrossentropy(from_logits=True)(np.array([1.0]), mg.Tensor([[0.0]])).item(), 4)
    0.6931
    """
    name = "binary_crossentropy"

    def __call__(self, y_true, y_pred, sample_weight=None):
        return binary_crossentropy(y_true, y_pred, self.from_logits, sample_weight)

    @property
    def fuses_with(self):
        return None if self.from_logits else "sigmoid"

    def on_pre_activation(self, y_true, z, sample_weight=None, probs=None):
        return binary_crossentropy(y_true, z, True, sample_weight, probs)

    def targets(self, y_true, output_shape):
        return regression_targets(y_true, (None,) + tuple(output_shape), self.name)


class MeanSquaredError(Loss):
    """Mean squared error.

    >>> import numpy as np, minigrad as mg
    >>> MeanSquaredError()(np.array([3.0]), mg.Tensor([[1.0]])).item()
    4.0
    """
    name = "mean_squared_error"

    def __init__(self):
        super().__init__(False)

    def __call__(self, y_true, y_pred, sample_weight=None):
        return mean_squared_error(y_true, y_pred, sample_weight)

    def targets(self, y_true, output_shape):
        return regression_targets(y_true, (None,) + tuple(output_shape), self.name)

    def get_config(self):
        return {}

    def __repr__(self):
        return f"{type(self).__name__}()"


class MeanAbsoluteError(MeanSquaredError):
    """Mean absolute error.

    >>> import numpy as np, minigrad as mg
    >>> MeanAbsoluteError()(np.array([3.0]), mg.Tensor([[1.0]])).item()
    2.0
    """
    name = "mean_absolute_error"

    def __call__(self, y_true, y_pred, sample_weight=None):
        return mean_absolute_error(y_true, y_pred, sample_weight)


_BY_NAME = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
}
_BY_FUNCTION = {categorical_crossentropy: CategoricalCrossentropy,
                sparse_categorical_crossentropy: SparseCategoricalCrossentropy,
                binary_crossentropy: BinaryCrossentropy,
                mean_squared_error: MeanSquaredError, mean_absolute_error: MeanAbsoluteError}


def get(identifier):
    """A loss from a name, a Loss instance or class, or any callable ``f(y_true, y_pred)``.

    >>> get("sparse_categorical_crossentropy")
    SparseCategoricalCrossentropy(from_logits=False)
    >>> get("mse")
    MeanSquaredError()
    """
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, str):
        key = identifier.lower()
        for cls in set(_BY_NAME.values()):
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


def serialize(loss):
    """A loss as JSON-ready data (for model.save), or None for a user's callable."""
    if isinstance(loss, Loss):
        return {"class_name": type(loss).__name__, "config": loss.get_config()}
    return None


def deserialize(config):
    classes = {cls.__name__: cls for cls in set(_BY_NAME.values())}
    cls = classes.get(config.get("class_name"))
    if cls is None:
        raise ValueError(f"load_model: unknown loss {config.get('class_name')!r}")
    return cls(**config.get("config", {}))
