"""Metrics as running means: ``update_state(y_true, y_pred)``, ``result()``, ``reset_state()``.

String ids, functions (per-sample values, as Keras') and classes: accuracy / acc,
binary_accuracy, categorical_accuracy, sparse_categorical_accuracy,
top_k_categorical_accuracy, mae / mean_absolute_error, mse / mean_squared_error.
``"accuracy"`` resolves as Keras does: binary accuracy (threshold 0.5) for a
one-unit output or a binary cross-entropy loss, sparse accuracy for integer
labels, categorical accuracy (argmax vs argmax) for one-hot targets. A metric
keeps the name it was asked by (``acc``, ``mae``...), which is its History key.
Accumulators are float64 sums, so a running mean weighted by batch size is
exact whatever the number of batches.

>>> import numpy as np
>>> m = CategoricalAccuracy()
>>> m.update_state(np.array([[0, 1], [1, 0]]), np.array([[0.2, 0.8], [0.3, 0.7]]))
>>> m.result()
0.5
"""
import numpy as np

from .kernels import plain_array
from .tensor import Tensor


def _array(x):
    return x.data if isinstance(x, Tensor) else np.asarray(plain_array("metric", "its input", x))


class Metric:
    """Base: a named running mean of per-sample values."""

    def __init__(self, name=None):
        self.name = name or self.default_name
        self.reset_state()

    def reset_state(self):
        self.total, self.count = 0.0, 0.0

    def result(self):
        return self.total / self.count if self.count else 0.0

    def update_state(self, y_true, y_pred):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


class Mean(Metric):
    """Weighted running mean of scalar values (the loss shown during ``fit``).

    >>> m = Mean(); m.update_state(1.0, weight=3); m.update_state(3.0, weight=1); m.result()
    1.5
    """
    default_name = "mean"

    def update_state(self, value, weight=1.0):
        self.total += float(value) * float(weight)
        self.count += float(weight)


class CategoricalAccuracy(Metric):
    """Fraction of rows where argmax(y_pred) == argmax(y_true) (one-hot targets)."""
    default_name = "categorical_accuracy"

    def update_state(self, y_true, y_pred):
        y_true, y_pred = _array(y_true), _array(y_pred)
        self.total += float(np.count_nonzero(y_true.argmax(axis=-1) == y_pred.argmax(axis=-1)))
        self.count += len(y_pred)


class SparseCategoricalAccuracy(Metric):
    """Fraction of rows where argmax(y_pred) == y_true (integer labels).

    >>> m = SparseCategoricalAccuracy()
    >>> m.update_state(np.array([1, 0, 1]), np.array([[0.2, 0.8], [0.3, 0.7], [0.1, 0.9]]))
    >>> round(m.result(), 4)
    0.6667
    """
    default_name = "sparse_categorical_accuracy"

    def update_state(self, y_true, y_pred):
        y_true, y_pred = _array(y_true), _array(y_pred)
        self.total += float(np.count_nonzero(y_true.reshape(-1) == y_pred.argmax(axis=-1)))
        self.count += len(y_pred)


def _per_sample(values):
    values = np.asarray(values, dtype=np.float64)
    return values.reshape(len(values), -1).mean(axis=1) if values.ndim > 1 else values


class _MeanOfFunction(Metric):
    """A running mean of a per-sample metric function."""

    def update_state(self, y_true, y_pred):
        values = _per_sample(type(self).function(_array(y_true), _array(y_pred)))
        self.total += float(values.sum())
        self.count += len(values)


def _as_pred_shape(y_true, y_pred):
    y_true = _array(y_true)
    if y_true.ndim == y_pred.ndim - 1:
        y_true = y_true.reshape(y_true.shape + (1,))
    return y_true


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """Per sample: the fraction of outputs where (y_pred > threshold) equals y_true."""
    y_pred = _array(y_pred)
    y_true = _as_pred_shape(y_true, y_pred)
    hit = (y_pred > threshold) == (y_true > 0.5)
    return hit.reshape(len(hit), -1).mean(axis=1)


def categorical_accuracy(y_true, y_pred):
    """Per sample: 1.0 where argmax(y_pred) == argmax(y_true)."""
    return (_array(y_true).argmax(axis=-1) == _array(y_pred).argmax(axis=-1)).astype(np.float64)


def sparse_categorical_accuracy(y_true, y_pred):
    """Per sample: 1.0 where argmax(y_pred) == y_true."""
    y_pred = _array(y_pred)
    return (_array(y_true).reshape(len(y_pred)) == y_pred.argmax(axis=-1)).astype(np.float64)


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    """Per sample: 1.0 where argmax(y_true) is among the k largest predictions
    (ties broken as Keras' in_top_k: a tie at the k-th value counts as in)."""
    y_pred = _array(y_pred)
    labels = _array(y_true).argmax(axis=-1)
    target = y_pred[np.arange(len(y_pred)), labels]
    return ((y_pred > target[:, None]).sum(axis=-1) < k).astype(np.float64)


def mean_absolute_error(y_true, y_pred):
    """Per sample: mean over the last axis of |y_true - y_pred|."""
    y_pred = _array(y_pred).astype(np.float64)
    return np.abs(_as_pred_shape(y_true, y_pred) - y_pred).mean(axis=-1)


def mean_squared_error(y_true, y_pred):
    """Per sample: mean over the last axis of (y_true - y_pred)^2."""
    y_pred = _array(y_pred).astype(np.float64)
    return np.square(_as_pred_shape(y_true, y_pred) - y_pred).mean(axis=-1)


mae, mse = mean_absolute_error, mean_squared_error


class BinaryAccuracy(Metric):
    """Fraction of outputs where (y_pred > threshold) == y_true.

    >>> m = BinaryAccuracy(); m.update_state(np.array([1, 0, 1]), np.array([[0.9], [0.6], [0.2]]))
    >>> round(m.result(), 4)
    0.3333
    """
    default_name = "binary_accuracy"

    def __init__(self, name=None, threshold=0.5):
        self.threshold = float(threshold)
        super().__init__(name)

    def update_state(self, y_true, y_pred):
        values = binary_accuracy(y_true, y_pred, self.threshold)
        self.total += float(values.sum())
        self.count += len(values)


class TopKCategoricalAccuracy(Metric):
    """Fraction of rows whose true class is among the k highest predictions."""
    default_name = "top_k_categorical_accuracy"

    def __init__(self, k=5, name=None):
        self.k = int(k)
        super().__init__(name)

    def update_state(self, y_true, y_pred):
        values = top_k_categorical_accuracy(y_true, y_pred, self.k)
        self.total += float(values.sum())
        self.count += len(values)


class MeanAbsoluteError(_MeanOfFunction):
    """Running mean of |y_true - y_pred| (per sample: over the last axis)."""
    default_name = "mean_absolute_error"
    function = staticmethod(mean_absolute_error)


class MeanSquaredError(_MeanOfFunction):
    """Running mean of (y_true - y_pred)^2 (per sample: over the last axis)."""
    default_name = "mean_squared_error"
    function = staticmethod(mean_squared_error)


_BY_NAME = {"categorical_accuracy": CategoricalAccuracy,
            "sparse_categorical_accuracy": SparseCategoricalAccuracy,
            "binary_accuracy": BinaryAccuracy,
            "top_k_categorical_accuracy": TopKCategoricalAccuracy,
            "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
            "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError}
_BY_FUNCTION = {categorical_accuracy: CategoricalAccuracy,
                sparse_categorical_accuracy: SparseCategoricalAccuracy,
                binary_accuracy: BinaryAccuracy,
                top_k_categorical_accuracy: TopKCategoricalAccuracy,
                mean_absolute_error: MeanAbsoluteError, mean_squared_error: MeanSquaredError}
_ACCURACY = ("accuracy", "acc")


def get(identifier, sparse_targets=None, binary=False):
    """A Metric from a name, a function, a class or an instance.

    ``"accuracy"``/``"acc"`` needs to know the problem: ``binary`` (a one-unit output
    or a binary cross-entropy) picks binary accuracy, else ``sparse_targets`` (are
    the targets integer labels?) picks the sparse or the categorical form; the
    metric keeps the name it was asked by, as in Keras.

    >>> get("accuracy", sparse_targets=True)
    SparseCategoricalAccuracy(name='accuracy')
    >>> get("acc", binary=True)
    BinaryAccuracy(name='acc')
    >>> get("mae")
    MeanAbsoluteError(name='mae')
    """
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if callable(identifier) and identifier in _BY_FUNCTION:
        return _BY_FUNCTION[identifier](name=identifier.__name__)
    if not isinstance(identifier, str):
        raise TypeError(f"Could not interpret metric {identifier!r}: expected a name, a metric "
                        f"function or a Metric")
    key = identifier.lower()
    if key in _ACCURACY:
        if binary:
            return BinaryAccuracy(name=identifier)
        if sparse_targets is None:
            raise ValueError(f"metric {identifier!r} needs to know whether targets are sparse")
        cls = SparseCategoricalAccuracy if sparse_targets else CategoricalAccuracy
        return cls(name=identifier)
    if key in _BY_NAME:
        return _BY_NAME[key](name=identifier)
    raise ValueError(f"Unknown metric {identifier!r}; expected one of "
                     f"{sorted(_ACCURACY + tuple(_BY_NAME))} (or a Metric instance)")


def check(identifier):
    """Validate a metric identifier at compile time, before the targets are known."""
    if isinstance(identifier, str) and identifier.lower() in _ACCURACY:
        return
    get(identifier)


def serialize(identifier):
    """A metric identifier as JSON-ready data (for model.save)."""
    if isinstance(identifier, str):
        return identifier
    if callable(identifier) and identifier in _BY_FUNCTION:
        return identifier.__name__
    if isinstance(identifier, Metric):
        config = {"name": identifier.name}
        for attr in ("threshold", "k"):
            if hasattr(identifier, attr):
                config[attr] = getattr(identifier, attr)
        return {"class_name": type(identifier).__name__, "config": config}
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return {"class_name": identifier.__name__, "config": {}}
    raise ValueError(f"save: the metric {identifier!r} cannot be saved as configuration "
                     f"(use a name, a minigrad metric function or a Metric)")


def deserialize(config):
    if isinstance(config, str):
        return config
    classes = {cls.__name__: cls for cls in set(_BY_NAME.values())}
    cls = classes.get(config.get("class_name")) if isinstance(config, dict) else None
    if cls is None:
        raise ValueError(f"load_model: unknown metric {config!r}")
    return cls(**config.get("config", {}))
