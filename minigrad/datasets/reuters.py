"""Reuters newswires (11,228 wires over 46 topics), Keras-compatible.

Each newswire is a list of word indices, words ranked by frequency (1 = the
most frequent); ``load_data`` shuffles all wires and splits them the way
``keras.datasets.reuters`` does, ``get_word_index`` maps words to ranks and
``get_label_names`` names the 46 topics.

Where the files are looked for (see ``minigrad.datasets._fetch``):

1. ``path``, when it names an existing file or a path with a directory part;
2. ``data_dir=`` : that directory, or its ``reuters/`` sub-directory;
3. the directory in the ``MINIGRAD_DATASETS`` environment variable (same two
   places), e.g. a folder holding ``reuters.npz`` and
   ``reuters_word_index.json``;
4. the cache ``$MINIGRAD_HOME/datasets`` (default ``~/.cache/minigrad/datasets``),
   then Keras' ``~/.keras/datasets``;
5. otherwise Keras' file is downloaded into the cache:
   https://storage.googleapis.com/tensorflow/tf-keras-datasets/reuters.npz

reuters.npz is checked against the SHA-256 Keras publishes; the word index
against the MD5 Keras publishes (the only hash there is for it).  Pass
``verify=False`` for other data in the same format given via ``path``,
``data_dir`` or ``MINIGRAD_DATASETS``.  The wires are an object array, which
NumPy stores as a pickle: it is read with a restricted unpickler that accepts
lists of ints only (``minigrad.datasets._npz``).

Example on a small file in the same format (keys x and y):

>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> from minigrad.datasets import reuters
>>> wires = np.empty(5, dtype=object)
>>> wires[:] = [[1], [2, 2], [3], [4, 1, 1], [5]]
>>> folder = Path(tempfile.mkdtemp())
>>> np.savez(folder / "reuters.npz", x=wires, y=np.array([10, 11, 12, 13, 14]))
>>> (x_train, y_train), (x_test, y_test) = reuters.load_data(
...     data_dir=folder, verify=False, num_words=100)
>>> len(x_train), len(x_test)
(4, 1)
>>> sorted(zip(y_train.tolist() + y_test.tolist(), (x_train.tolist() + x_test.tolist())))[:2]
[(10, [1, 4]), (11, [1, 5, 5])]
>>> reuters.get_label_names()[3]
'earn'
"""

import numpy as np

from . import _fetch, _npz, _sequences

__all__ = ["load_data", "get_word_index", "get_label_names"]

_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
# Hashes as published in keras/src/datasets/reuters.py (file_hash).  Sizes are
# bounds several times above the real files', not their exact sizes.
_NPZ = _fetch.FileSpec(
    "reuters.npz", "d6586e694ee56d7a4e65172e12b3e987c03096cb01eab99753921ef915959916",
    max_size=32 << 20, url=_ORIGIN + "reuters.npz")
_WORD_INDEX = _fetch.FileSpec(
    "reuters_word_index.json", "4d44cc38712099c9e383dc6e5f11a921",
    max_size=16 << 20, url=_ORIGIN + "reuters_word_index.json", algorithm="md5")
# Largest uncompressed member accepted: the real x pickle is a few MB
# (about 1.6 million word indices of 2 to 5 bytes each).
_MAX_MEMBER = 64 << 20

# Topic names in label order, as keras.datasets.reuters.get_label_names().
_LABEL_NAMES = (
    "cocoa", "grain", "veg-oil", "earn", "acq", "wheat", "copper", "housing",
    "money-supply", "coffee", "sugar", "trade", "reserves", "ship", "cotton",
    "carcass", "crude", "nat-gas", "cpi", "money-fx", "interest", "gnp",
    "meal-feed", "alum", "oilseed", "gold", "tin", "strategic-metal",
    "livestock", "retail", "ipi", "iron-steel", "rubber", "heat", "jobs", "lei",
    "bop", "zinc", "orange", "pet-chem", "dlr", "gas", "silver", "wpi", "hog",
    "lead",
)


def load_data(path="reuters.npz", num_words=None, skip_top=0, maxlen=None, test_split=0.2,
              seed=113, start_char=1, oov_char=2, index_from=3, *, data_dir=None, verify=True):
    """Load Reuters as ``(x_train, y_train), (x_test, y_test)``, like Keras.

    All wires are shuffled with ``np.random.RandomState(seed)``, shifted,
    filtered by ``maxlen`` and capped by ``num_words``/``skip_top``; the first
    ``int(n * (1 - test_split))`` of the remaining n are the training set.
    x_* are 1-d object arrays of lists of ints, y_* integer topic labels
    (0..45, named by :func:`get_label_names`).

    Args:
        path: a bare file name (Keras' cache name, default ``reuters.npz``) or
            the path of an .npz file holding x and y.
        num_words, skip_top, maxlen, seed, start_char, oov_char, index_from:
            as in ``imdb.load_data`` (``maxlen`` keeps sequences shorter than
            it; ``num_words=None`` excludes the largest index, as in Keras).
        test_split: the fraction of wires, in [0, 1), used as the test set.
        data_dir: a directory holding reuters.npz (or a ``reuters/``
            sub-directory that does); explicit, never downloads.
        verify: check reuters.npz from ``path``/``data_dir``/``MINIGRAD_DATASETS``
            against the published SHA-256 (the cache and downloads always are).

    Raises:
        FileNotFoundError, minigrad.datasets.DatasetUnavailableError and
        DatasetFormatError as ``imdb.load_data``; ValueError for a
        ``test_split`` outside [0, 1).
    """
    where = "reuters.load_data"
    _sequences.check_options(where, num_words, skip_top, maxlen, seed, start_char, oov_char, index_from)
    if isinstance(test_split, bool) or not isinstance(test_split, (int, float)) or not 0 <= test_split < 1:
        raise ValueError(f"{where}: test_split must be a number in [0, 1), received {test_split!r}")
    file, _ = _fetch.locate("Reuters", where, path, data_dir, [_NPZ], verify=verify)
    arrays = _npz.read_npz(file, {"x": "int_lists", "y": "numeric"}, max_bytes=_MAX_MEMBER, where=where)
    x, y = arrays["x"], arrays["y"]
    _sequences.check_labels(where, file, "y", y, len(x))
    rng = np.random.RandomState(seed)
    indices = np.arange(len(x))
    rng.shuffle(indices)
    seqs = _sequences.shift(x[indices], start_char, index_from)
    keep = _sequences.short_enough(seqs, maxlen)
    seqs, labels = [seqs[i] for i in keep], y[indices][keep]
    seqs = _sequences.cap_vocabulary(seqs, num_words, skip_top, oov_char)
    n = int(len(seqs) * (1 - test_split))
    return ((_sequences.object_array(seqs[:n]), labels[:n].copy()),
            (_sequences.object_array(seqs[n:]), labels[n:].copy()))


def get_word_index(path="reuters_word_index.json", *, data_dir=None, verify=True):
    """A dict mapping each word to its frequency rank (1 = most frequent).

    In ``load_data``'s sequences a word of rank r appears as
    ``r + index_from`` (``r + 3`` by default). Looked for like reuters.npz;
    checked against the MD5 Keras publishes unless ``verify=False``.

    >>> import json, tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "reuters_word_index.json").write_text(json.dumps({"the": 1, "of": 2}))
    >>> get_word_index(data_dir=folder, verify=False)["of"]
    2
    """
    where = "reuters.get_word_index"
    file, _ = _fetch.locate("Reuters word index", where, path, data_dir, [_WORD_INDEX],
                         verify=verify, dataset_dir="reuters")
    return _sequences.read_word_index(file, where, _WORD_INDEX.max_size)


def get_label_names():
    """The 46 topic names, indexed by label, as a tuple (Keras 3's order).

    >>> names = get_label_names()
    >>> len(names), names[:3]
    (46, ('cocoa', 'grain', 'veg-oil'))
    """
    return _LABEL_NAMES
