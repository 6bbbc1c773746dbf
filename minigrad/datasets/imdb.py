"""IMDB movie reviews (25,000 train, 25,000 test, positive/negative), Keras-compatible.

Each review is a list of word indices, words ranked by frequency (1 = the
most frequent); ``load_data`` returns them the way ``keras.datasets.imdb``
does, and ``get_word_index`` maps words to those ranks.

Where the files are looked for (see ``minigrad.datasets._fetch``):

1. ``path``, when it names an existing file or a path with a directory part;
2. ``data_dir=`` : that directory, or its ``imdb/`` sub-directory;
3. the directory in the ``MINIGRAD_DATASETS`` environment variable (same two
   places), e.g. a folder holding ``imdb.npz`` and ``imdb_word_index.json``;
4. the cache ``$MINIGRAD_HOME/datasets`` (default ``~/.cache/minigrad/datasets``),
   then Keras' ``~/.keras/datasets``;
5. otherwise Keras' file is downloaded into the cache:
   https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz

imdb.npz is checked against the SHA-256 Keras publishes; the word index
against the MD5 Keras publishes (the only hash there is for it).  Pass
``verify=False`` for other data in the same format given via ``path``,
``data_dir`` or ``MINIGRAD_DATASETS``.  The reviews are object arrays, which
NumPy stores as a pickle: they are read with a restricted unpickler that
accepts lists of ints only (``minigrad.datasets._npz``); nothing else in the
file can run.

Example on a small file in the same format (the real one is used the same way,
``imdb.load_data(num_words=10000)``):

>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> from minigrad.datasets import imdb
>>> def reviews(*seqs):
...     out = np.empty(len(seqs), dtype=object)
...     out[:] = [list(s) for s in seqs]
...     return out
>>> folder = Path(tempfile.mkdtemp())
>>> np.savez(folder / "imdb.npz", x_train=reviews([1, 2], [3]), y_train=np.array([1, 0]),
...          x_test=reviews([4, 1]), y_test=np.array([0]))
>>> (x_train, y_train), (x_test, y_test) = imdb.load_data(data_dir=folder, verify=False)
>>> x_train.tolist(), y_train.tolist(), x_test.tolist()
([[1, 4, 5], [1, 6]], [1, 0], [[1, 2, 4]])

Indices are shifted by 3 and start with 1; with ``num_words=None`` the largest
index (here 7) is out of the vocabulary and became 2, exactly as in Keras.
"""

import warnings

import numpy as np

from . import _fetch, _npz, _sequences

__all__ = ["load_data", "get_word_index"]

_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
# Hashes as published in keras/src/datasets/imdb.py (file_hash).  Sizes are
# bounds several times above the real files', not their exact sizes.
_NPZ = _fetch.FileSpec(
    "imdb.npz", "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f",
    max_size=64 << 20, url=_ORIGIN + "imdb.npz")
_WORD_INDEX = _fetch.FileSpec(
    "imdb_word_index.json", "bfafd718b763782e994055a2d397834f",
    max_size=16 << 20, url=_ORIGIN + "imdb_word_index.json", algorithm="md5")
# Largest uncompressed member accepted: the real x_train pickle is about
# 16 MB (6 million word indices of 2 to 5 bytes each).
_MAX_MEMBER = 128 << 20


def load_data(path="imdb.npz", num_words=None, skip_top=0, maxlen=None, seed=113,
              start_char=1, oov_char=2, index_from=3, *, data_dir=None, verify=True, **kwargs):
    """Load IMDB as ``(x_train, y_train), (x_test, y_test)``, like Keras.

    x_train and x_test are 1-d object arrays of lists of ints; y_train and
    y_test integer arrays of 0 (negative) and 1 (positive).

    Args:
        path: a bare file name (Keras' cache name, default ``imdb.npz``) or
            the path of an .npz file holding x_train, y_train, x_test, y_test.
        num_words: keep the words ranked below ``num_words`` (after the
            ``index_from`` shift); any other becomes ``oov_char``. None: the
            largest index present bounds them (exclusively, as in Keras).
        skip_top: indices below ``skip_top`` become ``oov_char`` too.
        maxlen: keep only the sequences shorter than ``maxlen`` (counting
            ``start_char``); None keeps all.
        seed: the train and test sets are shuffled, in that order, by one
            ``np.random.RandomState(seed)``.
        start_char: put in front of every sequence; None for nothing.
        oov_char: replaces cut words; None drops them instead.
        index_from: added to every word index (0, 1, 2 are reserved for
            padding, start and out-of-vocabulary).
        data_dir: a directory holding imdb.npz (or an ``imdb/``
            sub-directory that does); explicit, never downloads.
        verify: check imdb.npz from ``path``/``data_dir``/``MINIGRAD_DATASETS``
            against the published SHA-256 (the cache and downloads always are).
        **kwargs: only ``nb_words``, the old name of ``num_words`` (with a
            DeprecationWarning); any other keyword is a TypeError.

    Raises:
        FileNotFoundError: ``path``/``data_dir`` holds no IMDB file.
        minigrad.datasets.DatasetUnavailableError (an OSError): nothing
            local and the download failed.
        DatasetFormatError (a ValueError): a malformed or unsafe file; its
            subclass ChecksumMismatchError for a file that is not Keras'.
        ValueError: ``maxlen`` leaves no training or no test sequence.
    """
    where = "imdb.load_data"
    if "nb_words" in kwargs:
        warnings.warn(f"{where}: nb_words is deprecated, use num_words", DeprecationWarning, stacklevel=2)
        num_words = kwargs.pop("nb_words")
    if kwargs:
        raise TypeError(f"{where}: unexpected keyword argument(s) {', '.join(sorted(kwargs))}; "
                        "expected those of keras.datasets.imdb.load_data, data_dir or verify")
    _sequences.check_options(where, num_words, skip_top, maxlen, seed, start_char, oov_char, index_from)
    file, _ = _fetch.locate("IMDB", where, path, data_dir, [_NPZ], verify=verify)
    arrays = _npz.read_npz(file, {"x_train": "int_lists", "y_train": "numeric",
                                  "x_test": "int_lists", "y_test": "numeric"},
                           max_bytes=_MAX_MEMBER, where=where)
    splits = []
    rng = np.random.RandomState(seed)
    for split in ("train", "test"):
        x, y = arrays["x_" + split], arrays["y_" + split]
        _sequences.check_labels(where, file, "y_" + split, y, len(x))
        # One generator for both splits, train first: Keras' exact order.
        indices = np.arange(len(x))
        rng.shuffle(indices)
        seqs = _sequences.shift(x[indices], start_char, index_from)
        keep = _sequences.short_enough(seqs, maxlen)
        splits.append(([seqs[i] for i in keep], y[indices][keep]))
    (x_train, y_train), (x_test, y_test) = splits
    if maxlen and (not x_train or not x_test):
        raise ValueError(
            f"{where}: after keeping the sequences shorter than maxlen={maxlen}, "
            f"{len(x_train)} training and {len(x_test)} test sequences remain; "
            "expected at least one of each. Increase maxlen.")
    # The vocabulary bound comes from train and test together, as in Keras.
    capped = _sequences.cap_vocabulary(x_train + x_test, num_words, skip_top, oov_char)
    n = len(x_train)
    return ((_sequences.object_array(capped[:n]), y_train),
            (_sequences.object_array(capped[n:]), y_test))


def get_word_index(path="imdb_word_index.json", *, data_dir=None, verify=True):
    """A dict mapping each word to its frequency rank (1 = most frequent).

    In ``load_data``'s sequences a word of rank r appears as
    ``r + index_from`` (``r + 3`` by default). Looked for like imdb.npz;
    checked against the MD5 Keras publishes unless ``verify=False``.

    >>> import json, tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "imdb_word_index.json").write_text(json.dumps({"the": 1, "and": 2}))
    >>> index = get_word_index(data_dir=folder, verify=False)
    >>> words = {rank + 3: word for word, rank in index.items()}
    >>> " ".join(words[i] for i in [4, 5])
    'the and'
    """
    where = "imdb.get_word_index"
    file, _ = _fetch.locate("IMDB word index", where, path, data_dir, [_WORD_INDEX],
                         verify=verify, dataset_dir="imdb")
    return _sequences.read_word_index(file, where, _WORD_INDEX.max_size)
