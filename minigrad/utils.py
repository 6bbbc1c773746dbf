"""Small helpers of the Keras-style API: one-hot labels and the random seed.

>>> from minigrad.utils import to_categorical
>>> to_categorical([0, 2], num_classes=3)
array([[1., 0., 0.],
       [0., 0., 1.]], dtype=float32)
"""
import random

import numpy as np

from .kernels import plain_array

# The one random stream of the Keras-style layer: weight initialisation and the
# per-epoch shuffles both draw from it, so set_random_seed(s) makes a whole
# training run reproducible bit for bit. Read it through rng(): set_random_seed
# replaces the object.
_rng = np.random.default_rng()


def rng():
    """The numpy Generator that initialisers and ``fit``'s shuffling draw from."""
    return _rng


def set_random_seed(seed):
    """Reseed minigrad's generator (and Python's and NumPy's global ones, as Keras does).

    The same seed gives bitwise-identical weights after the same training run.

    >>> from minigrad import utils, layers
    >>> utils.set_random_seed(1); a = layers.Dense(2, input_shape=(3,)).kernel.numpy().copy()
    >>> utils.set_random_seed(1); b = layers.Dense(2, input_shape=(3,)).kernel.numpy().copy()
    >>> bool((a == b).all())
    True
    """
    global _rng
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"set_random_seed: expected a non-negative integer seed, received {seed!r}")
    seed = int(seed)
    _rng = np.random.default_rng(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def to_categorical(y, num_classes=None):
    """One-hot encode integer class labels: shape (N,) -> (N, num_classes), float32.

    ``num_classes`` defaults to ``max(y) + 1``. Like Keras, a trailing axis of
    size 1 is dropped first ((N, 1) -> (N,)).

    >>> to_categorical([1, 0])
    array([[0., 1.],
           [1., 0.]], dtype=float32)
    """
    y = np.asarray(plain_array("to_categorical", "y", y))
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError("to_categorical: expected integer class labels, received "
                             "non-integral float values")
    elif y.dtype.kind not in "iub":
        raise TypeError(f"to_categorical: expected integer class labels, received dtype {y.dtype}")
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y.reshape(y.shape[:-1])
    y = y.astype(np.int64)
    if num_classes is None:
        if y.size == 0:
            raise ValueError("to_categorical: cannot infer num_classes from empty labels; pass num_classes")
        num_classes = int(y.max()) + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"to_categorical: expected num_classes to be a positive integer, "
                         f"received {num_classes!r}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise ValueError(f"to_categorical: expected labels in [0, {num_classes}), received {bad}")
    out = np.zeros(y.shape + (int(num_classes),), dtype=np.float32)
    np.put_along_axis(out, y[..., None], 1.0, axis=-1)
    return out


def plot_history(history, path):
    """Write a PNG of a ``History``'s loss and metric curves (training and validation)
    to ``path``; needs matplotlib (``pip install 'minigrad[plot]'``). See minigrad.plot."""
    from .plot import plot_history as plot
    return plot(history, path)
