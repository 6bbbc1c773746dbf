"""What Keras' IMDB and Reuters loaders share: argument checks, index shifting,
length filtering, vocabulary capping and the JSON word index.

The semantics are Keras' (``keras/src/datasets/imdb.py`` and ``reuters.py``):

- every word index ``w`` becomes ``w + index_from``, and ``start_char`` (when
  not None) is put in front of every sequence;
- ``maxlen`` (when truthy) keeps only the sequences *shorter* than ``maxlen``,
  counting ``start_char``;
- ``num_words`` (when falsy: the largest index present) and ``skip_top``:
  indices outside ``skip_top <= w < num_words`` become ``oov_char``, or are
  dropped when ``oov_char`` is None.  With ``num_words=None`` the bound is
  exclusive of the largest index, so that word becomes ``oov_char`` too, as
  in Keras.

>>> seqs = shift([[5, 9], [1]], start_char=1, index_from=3)
>>> seqs
[[1, 8, 12], [1, 4]]
>>> cap_vocabulary(seqs, num_words=10, skip_top=0, oov_char=2)
[[1, 8, 2], [1, 4]]
"""

import json
import numbers

import numpy as np

from ._fetch import DatasetFormatError


def check_int(where, name, value, minimum=0, allow_none=True):
    """Raise TypeError/ValueError unless `value` is an int >= minimum (or None if allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        expected = "an int" + (" or None" if allow_none else "")
        raise TypeError(f"{where}: {name} must be {expected}, received {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, received {value}")


def check_options(where, num_words, skip_top, maxlen, seed, start_char, oov_char, index_from):
    check_int(where, "num_words", num_words)
    check_int(where, "skip_top", skip_top, allow_none=False)
    check_int(where, "maxlen", maxlen)
    check_int(where, "seed", seed, allow_none=False)
    check_int(where, "start_char", start_char)
    check_int(where, "oov_char", oov_char)
    check_int(where, "index_from", index_from, allow_none=False)


def check_labels(where, path, key, labels, count):
    """Labels must be a 1-d integer array with one entry per sequence."""
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != count:
        raise DatasetFormatError(
            f"{where}: {path}: {key} holds a {labels.dtype} array of shape {labels.shape}; "
            f"expected {count} integer labels, one per sequence. Delete or replace the file.")


def shift(seqs, start_char, index_from):
    """New lists: every index plus `index_from`, `start_char` first unless None."""
    if start_char is not None:
        return [[start_char] + [w + index_from for w in x] for x in seqs]
    return [[w + index_from for w in x] for x in seqs]


def short_enough(seqs, maxlen):
    """Indices of the sequences kept by Keras' maxlen filter (length < maxlen)."""
    if not maxlen:
        return list(range(len(seqs)))
    return [i for i, x in enumerate(seqs) if len(x) < maxlen]


def cap_vocabulary(seqs, num_words, skip_top, oov_char):
    """Keras' vocabulary cut: keep skip_top <= w < num_words, else oov_char (or drop)."""
    if not num_words:
        # Keras takes max(max(x) for x in xs), which fails on an empty
        # sequence (possible with start_char=None); empty ones are skipped.
        num_words = max((max(x) for x in seqs if x), default=0)
    if oov_char is not None:
        return [[w if skip_top <= w < num_words else oov_char for w in x] for x in seqs]
    return [[w for w in x if skip_top <= w < num_words] for x in seqs]


def object_array(seqs):
    """A 1-d object array of lists.

    ``np.array(seqs, dtype=object)``, which Keras uses, makes a 2-d array
    when all sequences happen to have the same length; filling an empty 1-d
    array keeps the documented shape (n,) in every case.
    """
    out = np.empty(len(seqs), dtype=object)
    for i, x in enumerate(seqs):
        out[i] = x
    return out


def read_word_index(path, where, max_bytes):
    """A {word: index} dict from a Keras word-index JSON file, checked entry by entry."""
    fix = "Delete or replace the file with a good copy."
    size = path.stat().st_size
    if size > max_bytes:
        raise DatasetFormatError(
            f"{where}: {path} has {size} bytes, more than the {max_bytes} a word index may have. {fix}")
    try:
        with open(path, "rb") as f:
            index = json.loads(f.read(max_bytes + 1).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DatasetFormatError(f"{where}: {path} is not valid JSON ({e}). {fix}") from None
    if not isinstance(index, dict):
        raise DatasetFormatError(
            f"{where}: {path} holds a JSON {type(index).__name__}; expected an object "
            f"mapping words to indices. {fix}")
    for word, value in index.items():
        if type(value) is not int or value < 0:
            raise DatasetFormatError(
                f"{where}: {path}: the index of {word!r} is {value!r}; expected an int >= 0. {fix}")
    return index
