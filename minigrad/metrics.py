"""Metrics as running means: ``update_state(y_true, y_pred)``, ``result()``, ``reset_state()``.

``"accuracy"`` resolves to categorical accuracy (argmax vs argmax) for one-hot
targets and to sparse accuracy for integer labels, decided by the targets' shape
as in Keras. Accumulators are float64 sums, so a running mean weighted by batch
size is exact whatever the number of batches.

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


_BY_NAME = {"categorical_accuracy": CategoricalAccuracy,
            "sparse_categorical_accuracy": SparseCategoricalAccuracy}
_ACCURACY = ("accuracy", "acc")


def get(identifier, sparse_targets=None):
    """A Metric from a name or instance.

    ``"accuracy"``/``"acc"`` needs ``sparse_targets`` (are the targets integer
    labels?) to pick the categorical or sparse form; the metric keeps the name
    it was asked by, as in Keras.

    >>> get("accuracy", sparse_targets=True)
    SparseCategoricalAccuracy(name='accuracy')
    """
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if not isinstance(identifier, str):
        raise TypeError(f"Could not interpret metric {identifier!r}: expected a name or a Metric")
    key = identifier.lower()
    if key in _ACCURACY:
        if sparse_targets is None:
            raise ValueError(f"metric {identifier!r} needs to know whether targets are sparse")
        cls = SparseCategoricalAccuracy if sparse_targets else CategoricalAccuracy
        return cls(name=identifier)
    if key in _BY_NAME:
        return _BY_NAME[key]()
    raise ValueError(f"Unknown metric {identifier!r}; expected one of "
                     f"{sorted(_ACCURACY + tuple(_BY_NAME))} (or a Metric instance)")


def check(identifier):
    """Validate a metric identifier at compile time, before the targets are known."""
    if isinstance(identifier, str) and identifier.lower() in _ACCURACY:
        return
    get(identifier)
