"""Standard data sets, loaded as numpy arrays (Keras-style ``load_data()``).

``mnist`` reads its files from ``MINIGRAD_DATA``; ``imdb``, ``reuters`` and
``boston_housing`` from ``data_dir=`` or the ``MINIGRAD_DATASETS`` folder
(e.g. holding ``imdb.npz``, ``reuters.npz`` and ``boston_housing/``).  All
share the cache ``$MINIGRAD_HOME/datasets`` (default
``~/.cache/minigrad/datasets``), verify files against their published hashes
and download into the cache atomically when nothing is found locally.
"""

from . import boston_housing, imdb, mnist, reuters
from ._fetch import ChecksumMismatchError, DatasetFormatError, DatasetUnavailableError

__all__ = [
    "mnist", "imdb", "reuters", "boston_housing",
    "DatasetUnavailableError", "DatasetFormatError", "ChecksumMismatchError",
]
