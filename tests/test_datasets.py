"""Tests for minigrad.datasets: imdb, reuters, boston_housing and the shared
_fetch / _npz / _sequences modules.

No network: Keras' imdb.npz and reuters.npz cannot be downloaded here, so the
tests write small files in the same formats (object arrays of lists, saved by
np.savez) and compare every option with expectations worked out by hand.
Every test replaces the download opener with one that fails if called,
unless it installs its own.  The real Boston housing table is read from
shared/datasets/boston_housing next to the repository (or the directory in
MINIGRAD_TEST_BOSTON, or MINIGRAD_DATASETS/boston_housing); when it is missing those tests skip, except under CI,
where they fail.
"""

import dataclasses
import doctest
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import time
import tracemalloc
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minigrad import datasets
from minigrad.datasets import _fetch, _npz, _sequences, boston_housing, imdb, reuters

# Read at import time, before the fixtures below clear MINIGRAD_DATASETS.
BOSTON = Path(
    os.environ.get("MINIGRAD_TEST_BOSTON")
    or (os.environ.get("MINIGRAD_DATASETS") and Path(os.environ["MINIGRAD_DATASETS"]) / "boston_housing")
    or Path(__file__).resolve().parents[2] / "shared" / "datasets" / "boston_housing"
).resolve()
BOSTON_CSV = BOSTON / "boston_house_prices.csv"
# The book's (Deep Learning with Python, chapter 3) first training targets.
BOOK_FIRST_TARGETS = [15.2, 42.3, 50.0, 21.1, 17.7, 18.5, 11.3, 15.6, 15.6, 14.4, 12.1, 17.9]
CSV_HEADER = '"CRIM","ZN","INDUS","CHAS","NOX","RM","AGE","DIS","RAD","TAX","PTRATIO","B","LSTAT","MEDV"'


def _no_network(url, timeout=None):
    raise AssertionError(f"test tried to open {url}")


def _offline(url, timeout=None):
    raise urllib.error.URLError("network is unreachable")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No real caches, no env configuration, no network."""
    for var in ("MINIGRAD_DATASETS", "MINIGRAD_DATA", "MINIGRAD_HOME", "KERAS_HOME"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(_fetch, "urlopen", _no_network)
    return home


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGRAD_HOME", str(tmp_path / "mghome"))
    return tmp_path / "mghome" / "datasets"


def seqs(*lists):
    out = np.empty(len(lists), dtype=object)
    for i, x in enumerate(lists):
        out[i] = list(x)
    return out


def as_lists(a):
    assert a.dtype == object and a.ndim == 1
    return [list(x) for x in a]


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------
# IMDB


IMDB_X_TRAIN = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]]
IMDB_Y_TRAIN = [10, 11, 12, 13]
IMDB_X_TEST = [[2, 9], [11, 1, 5], [3]]
IMDB_Y_TEST = [20, 21, 22]
# RandomState(113) shuffles arange(4) to [3, 2, 0, 1], then arange(3) to [1, 0, 2].


def write_imdb(path, x_train=IMDB_X_TRAIN, y_train=IMDB_Y_TRAIN, x_test=IMDB_X_TEST,
               y_test=IMDB_Y_TEST, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=seqs(*x_train), y_train=np.array(y_train, np.int64),
             x_test=seqs(*x_test), y_test=np.array(y_test, np.int64), **extra)
    return path


@pytest.fixture
def imdb_dir(tmp_path):
    write_imdb(tmp_path / "data" / "imdb.npz")
    return tmp_path / "data"


def imdb_load(imdb_dir, **options):
    (x_train, y_train), (x_test, y_test) = imdb.load_data(data_dir=imdb_dir, verify=False, **options)
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    return (as_lists(x_train), y_train.tolist()), (as_lists(x_test), y_test.tolist())


IMDB_CASES = {
    # Shifted by 3, start 1; num_words=None makes the largest index (14) out of vocabulary.
    "defaults": ({}, [[1, 10, 11, 12, 13], [1, 9], [1, 4, 5, 6], [1, 7, 8]], [13, 12, 10, 11],
                 [[1, 2, 4, 8], [1, 5, 12], [1, 6]], [21, 20, 22]),
    "num_words": (dict(num_words=10), [[1, 2, 2, 2, 2], [1, 9], [1, 4, 5, 6], [1, 7, 8]], [13, 12, 10, 11],
                  [[1, 2, 4, 8], [1, 5, 2], [1, 6]], [21, 20, 22]),
    # skip_top also catches start_char (1 < 5), as in Keras.
    "skip_top": (dict(num_words=10, skip_top=5), [[2, 2, 2, 2, 2], [2, 9], [2, 2, 5, 6], [2, 7, 8]],
                 [13, 12, 10, 11], [[2, 2, 2, 8], [2, 5, 2], [2, 6]], [21, 20, 22]),
    "oov_none_drops": (dict(num_words=10, oov_char=None), [[1], [1, 9], [1, 4, 5, 6], [1, 7, 8]],
                       [13, 12, 10, 11], [[1, 4, 8], [1, 5], [1, 6]], [21, 20, 22]),
    # Strictly shorter than maxlen, start_char counted; then the largest kept index (12) is OOV.
    "maxlen": (dict(maxlen=4), [[1, 9], [1, 7, 8]], [12, 11], [[1, 5, 2], [1, 6]], [20, 22]),
    "no_start_no_shift": (dict(start_char=None, index_from=0), [[7, 8, 9, 10], [6], [1, 2, 3], [4, 5]],
                          [13, 12, 10, 11], [[2, 1, 5], [2, 9], [3]], [21, 20, 22]),
    "no_start_shift_2": (dict(start_char=None, index_from=2), [[9, 10, 11, 12], [8], [3, 4, 5], [6, 7]],
                         [13, 12, 10, 11], [[2, 3, 7], [4, 11], [5]], [21, 20, 22]),
    # RandomState(7): train [2, 1, 0, 3], test [0, 1, 2].
    "seed": (dict(seed=7), [[1, 9], [1, 7, 8], [1, 4, 5, 6], [1, 10, 11, 12, 13]], [12, 11, 10, 13],
             [[1, 5, 12], [1, 2, 4, 8], [1, 6]], [20, 21, 22]),
    "custom_chars": (dict(start_char=5, oov_char=3, index_from=4, num_words=12),
                     [[5, 11, 3, 3, 3], [5, 10], [5, 5, 6, 7], [5, 8, 9]], [13, 12, 10, 11],
                     [[5, 3, 5, 9], [5, 6, 3], [5, 7]], [21, 20, 22]),
}


@pytest.mark.parametrize("case", sorted(IMDB_CASES))
def test_imdb_options(imdb_dir, case):
    options, x_train, y_train, x_test, y_test = IMDB_CASES[case]
    assert imdb_load(imdb_dir, **options) == ((x_train, y_train), (x_test, y_test))


def test_imdb_returns_fresh_1d_object_arrays_even_for_equal_lengths(tmp_path):
    write_imdb(tmp_path / "imdb.npz", x_train=[[1, 2], [3, 4]], y_train=[0, 1],
               x_test=[[5, 6]], y_test=[1])
    (x_train, _), (x_test, _) = imdb.load_data(tmp_path / "imdb.npz", verify=False)
    assert x_train.shape == (2,) and x_test.shape == (1,) and x_train.dtype == object
    assert all(type(x) is list for x in x_train)
    assert x_train[0] is not x_train[1]


def test_imdb_maxlen_leaving_nothing(imdb_dir):
    with pytest.raises(ValueError, match=r"imdb.load_data: .*maxlen=2, 0 training and 0 test"):
        imdb.load_data(data_dir=imdb_dir, verify=False, maxlen=2)


def test_imdb_legacy_nb_words_and_unknown_keywords(imdb_dir):
    with pytest.warns(DeprecationWarning, match="nb_words"):
        old = imdb.load_data(data_dir=imdb_dir, verify=False, nb_words=10)
    new = imdb.load_data(data_dir=imdb_dir, verify=False, num_words=10)
    assert [as_lists(a) for a in (old[0][0], old[1][0])] == [as_lists(a) for a in (new[0][0], new[1][0])]
    with pytest.raises(TypeError, match=r"imdb.load_data: unexpected keyword argument\(s\) num_word"):
        imdb.load_data(data_dir=imdb_dir, verify=False, num_word=10)


@pytest.mark.parametrize("name, value, error, pattern", [
    ("num_words", 1.5, TypeError, r"num_words must be an int or None, received 1.5"),
    ("skip_top", None, TypeError, r"skip_top must be an int, received None"),
    ("maxlen", -1, ValueError, r"maxlen must be >= 0, received -1"),
    ("index_from", True, TypeError, r"index_from must be an int, received True"),
])
def test_imdb_argument_errors(imdb_dir, name, value, error, pattern):
    with pytest.raises(error, match="imdb.load_data: " + pattern):
        imdb.load_data(data_dir=imdb_dir, verify=False, **{name: value})


def test_imdb_extra_members_never_read(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    p = write_imdb(tmp_path / "imdb.npz", extra=np.array([Payload()], dtype=object))
    (x_train, _), _ = imdb.load_data(p, verify=False)
    assert len(x_train) == 4 and not (tmp_path / "ran").exists()


@pytest.mark.parametrize("case, changes, pattern", [
    ("labels-float", dict(y_train=[0.0, 1.0, 0.0, 1.0]), r"y_train holds a float64 array of shape \(4,\); expected 4 integer"),
    ("labels-short", dict(y_test=[1, 0]), r"y_test holds a int64 array of shape \(2,\); expected 3"),
    ("float-in-list", dict(x_train=[[1, 2.5], [1], [1], [1]]), r"x_train: element 0 holds float 2.5"),
    ("bool-in-list", dict(x_test=[[True], [1], [1]]), r"x_test: element 0 holds bool True"),
    ("string-element", dict(x_test=["abc", [1], [1]]), r"x_test: element 0 is str 'abc'"),
    ("tuple-element", dict(x_test=[(1, 2), [1], [1]]), r"x_test: element 0 is tuple"),
])
def test_imdb_wrong_content(tmp_path, case, changes, pattern):
    arrays = dict(x_train=IMDB_X_TRAIN, y_train=IMDB_Y_TRAIN, x_test=IMDB_X_TEST, y_test=IMDB_Y_TEST)
    arrays.update(changes)
    p = tmp_path / "imdb.npz"
    x = {k: v for k, v in arrays.items() if k.startswith("x")}
    y = {k: np.array(v) for k, v in arrays.items() if k.startswith("y")}
    objs = {}
    for k, v in x.items():
        objs[k] = np.empty(len(v), dtype=object)
        for i, item in enumerate(v):
            objs[k][i] = item
    np.savez(p, **objs, **y)
    with pytest.raises(datasets.DatasetFormatError, match=pattern) as e:
        imdb.load_data(p, verify=False)
    assert str(p) in str(e.value) and "imdb.load_data" in str(e.value)


def test_imdb_wrong_keys_and_dtypes(tmp_path):
    p = tmp_path / "a.npz"
    np.savez(p, x=seqs([1]), y=np.array([0]))
    with pytest.raises(datasets.DatasetFormatError,
                       match=r"lacks the key\(s\) x_train, y_train, x_test, y_test; .* found x, y"):
        imdb.load_data(p, verify=False)
    np.savez(p, x_train=np.zeros((4, 3), np.int64), y_train=np.zeros(4, np.int64),
             x_test=seqs([1]), y_test=np.zeros(1, np.int64))
    with pytest.raises(datasets.DatasetFormatError,
                       match=r"x_train holds a int64 array of shape \(4, 3\); expected a 1-d object"):
        imdb.load_data(p, verify=False)
    np.savez(p, x_train=seqs([1]), y_train=np.array([object()], dtype=object),
             x_test=seqs([1]), y_test=np.zeros(1, np.int64))
    with pytest.raises(datasets.DatasetFormatError, match=r"y_train has dtype object; expected a numeric"):
        imdb.load_data(p, verify=False)


def test_imdb_two_dimensional_object_array_refused(tmp_path):
    p = tmp_path / "imdb.npz"
    grid = np.empty((2, 2), dtype=object)
    grid[:] = [[[1], [2]], [[3], [4]]]
    np.savez(p, x_train=grid, y_train=np.zeros(2, np.int64), x_test=seqs([1]), y_test=np.zeros(1, np.int64))
    with pytest.raises(datasets.DatasetFormatError, match=r"x_train holds a object array of shape \(2, 2\)"):
        imdb.load_data(p, verify=False)


def test_imdb_word_index(tmp_path):
    d = tmp_path / "data" / "imdb"  # the data set's sub-directory is searched too
    d.mkdir(parents=True)
    (d / "imdb_word_index.json").write_text(json.dumps({"the": 1, "and": 2, "a": 3}))
    index = imdb.get_word_index(data_dir=tmp_path / "data", verify=False)
    assert index == {"the": 1, "and": 2, "a": 3}
    with pytest.raises(datasets.ChecksumMismatchError, match=r"MD5 .*bfafd718b763782e994055a2d397834f"):
        imdb.get_word_index(data_dir=tmp_path / "data")


@pytest.mark.parametrize("content, pattern", [
    (b"[1, 2]", r"holds a JSON list; expected an object"),
    (b'{"the": "1"}', r"the index of 'the' is '1'; expected an int >= 0"),
    (b'{"the": true}', r"the index of 'the' is True"),
    (b'{"the": 1.0}', r"the index of 'the' is 1.0"),
    (b'{"the": -1}', r"the index of 'the' is -1"),
    (b'{"the": 1', r"is not valid JSON"),
    (b'\xff\xfe{}', r"is not valid JSON"),
])
def test_word_index_malformed(tmp_path, content, pattern):
    p = tmp_path / "reuters_word_index.json"
    p.write_bytes(content)
    with pytest.raises(datasets.DatasetFormatError, match=pattern) as e:
        reuters.get_word_index(p, verify=False)
    assert str(p) in str(e.value) and "reuters.get_word_index" in str(e.value)


def test_word_index_size_bound(tmp_path, monkeypatch):
    p = tmp_path / "imdb_word_index.json"
    p.write_text(json.dumps({f"w{i}": i for i in range(100)}))
    monkeypatch.setattr(imdb, "_WORD_INDEX", dataclasses.replace(imdb._WORD_INDEX, max_size=100))
    with pytest.raises(datasets.DatasetFormatError, match=r"more than the 100 a word index may have"):
        imdb.get_word_index(p, verify=False)


# --------------------------------------------------------------------------
# Reuters


REUTERS_X = [[1, 2], [3], [4, 5, 6], [7], [8, 9], [10, 11, 12, 13]]
REUTERS_Y = [0, 1, 2, 3, 4, 5]
# RandomState(113) shuffles arange(6) to [1, 0, 3, 2, 4, 5]; RandomState(1) to [2, 1, 4, 0, 3, 5].

REUTERS_CASES = {
    # int(6 * 0.8) = 4 training wires; num_words=None makes 16 out of vocabulary.
    "defaults": ({}, [[1, 6], [1, 4, 5], [1, 10], [1, 7, 8, 9]], [1, 0, 3, 2],
                 [[1, 11, 12], [1, 13, 14, 15, 2]], [4, 5]),
    "test_split": (dict(test_split=0.5), [[1, 6], [1, 4, 5], [1, 10]], [1, 0, 3],
                   [[1, 7, 8, 9], [1, 11, 12], [1, 13, 14, 15, 2]], [2, 4, 5]),
    "no_test": (dict(test_split=0), [[1, 6], [1, 4, 5], [1, 10], [1, 7, 8, 9], [1, 11, 12],
                                     [1, 13, 14, 15, 2]], [1, 0, 3, 2, 4, 5], [], []),
    # Keeps [1, 6] and [1, 10]; 10 becomes OOV; int(2 * 0.8) = 1.
    "maxlen": (dict(maxlen=3), [[1, 6]], [1], [[1, 2]], [3]),
    "skip_top": (dict(num_words=10, skip_top=5), [[2, 6], [2, 2, 5], [2, 2], [2, 7, 8, 9]], [1, 0, 3, 2],
                 [[2, 2, 2], [2, 2, 2, 2, 2]], [4, 5]),
    "oov_none_drops": (dict(num_words=10, oov_char=None), [[1, 6], [1, 4, 5], [1], [1, 7, 8, 9]],
                       [1, 0, 3, 2], [[1], [1]], [4, 5]),
    "seed": (dict(seed=1), [[1, 7, 8, 9], [1, 6], [1, 11, 12], [1, 4, 5]], [2, 1, 4, 0],
             [[1, 10], [1, 13, 14, 15, 2]], [3, 5]),
    "no_start_no_shift": (dict(start_char=None, index_from=0), [[3], [1, 2], [7], [4, 5, 6]], [1, 0, 3, 2],
                          [[8, 9], [10, 11, 12, 2]], [4, 5]),
}


@pytest.fixture
def reuters_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    np.savez(d / "reuters.npz", x=seqs(*REUTERS_X), y=np.array(REUTERS_Y, np.int64))
    return d


@pytest.mark.parametrize("case", sorted(REUTERS_CASES))
def test_reuters_options(reuters_dir, case):
    options, x_train, y_train, x_test, y_test = REUTERS_CASES[case]
    (xa, ya), (xb, yb) = reuters.load_data(data_dir=reuters_dir, verify=False, **options)
    assert ya.dtype == np.int64 and yb.dtype == np.int64
    assert xa.shape == (len(x_train),) and xb.shape == (len(x_test),)
    assert (as_lists(xa), ya.tolist(), as_lists(xb), yb.tolist()) == (x_train, y_train, x_test, y_test)


@pytest.mark.parametrize("split", [1, 1.0, -0.1, "0.2", None])
def test_reuters_bad_test_split(reuters_dir, split):
    with pytest.raises(ValueError, match=r"reuters.load_data: test_split must be a number in \[0, 1\), received"):
        reuters.load_data(data_dir=reuters_dir, verify=False, test_split=split)


def test_reuters_label_names_match_keras():
    names = reuters.get_label_names()
    assert isinstance(names, tuple) and len(names) == 46 and len(set(names)) == 46
    assert names[:5] == ("cocoa", "grain", "veg-oil", "earn", "acq")
    assert names[19] == "money-fx" and names[-1] == "lead"


def test_reuters_via_environment_folder(tmp_path, monkeypatch, reuters_dir):
    folder = tmp_path / "collection"
    (folder / "reuters").mkdir(parents=True)
    (reuters_dir / "reuters.npz").rename(folder / "reuters" / "reuters.npz")
    monkeypatch.setenv("MINIGRAD_DATASETS", str(folder))
    (_, y_train), _ = reuters.load_data(verify=False)
    assert y_train.tolist() == REUTERS_CASES["defaults"][2]
    # The collection is verified by default: these are not Keras' bytes.
    with pytest.raises(datasets.ChecksumMismatchError, match=r"reuters.npz has SHA-256 .*verify=False"):
        reuters.load_data()


# --------------------------------------------------------------------------
# Malicious and malformed pickles


class _Reduce:
    """Pickles as a call of `func(*args)`."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _payloads(marker):
    return {
        "os.system": _Reduce(os.system, f"touch {marker}"),
        "builtins.eval": _Reduce(eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.Popen": _Reduce(subprocess.Popen, ["touch", str(marker)]),
        "builtins.exec": _Reduce(exec, f"open({str(marker)!r}, 'w').close()"),
    }


REFUSED_GLOBAL = {
    "os.system": r"global (posix|os|nt)\.system refused",
    "builtins.eval": r"global builtins\.eval refused",
    "subprocess.Popen": r"global subprocess\.Popen refused",
    "builtins.exec": r"global builtins\.exec refused",
}


def _wait_for(path, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return path.exists()


@pytest.mark.parametrize("payload", sorted(REFUSED_GLOBAL))
def test_malicious_pickle_element_refused_and_never_run(tmp_path, payload):
    # Control: the same file really runs its payload under np.load(allow_pickle=True).
    control = tmp_path / "control-ran"
    control_file = tmp_path / "control.npz"
    evil = np.empty(4, dtype=object)
    evil[:] = [[1], [2], _payloads(control)[payload], [4]]
    np.savez(control_file, x_train=evil, y_train=np.zeros(4, np.int64),
             x_test=seqs([1]), y_test=np.zeros(1, np.int64))
    with np.load(control_file, allow_pickle=True) as f:
        f["x_train"]
    assert _wait_for(control), "the payload does not work, so this test could not fail"

    marker = tmp_path / "ran"
    p = tmp_path / "imdb.npz"
    evil[:] = [[1], [2], _payloads(marker)[payload], [4]]
    np.savez(p, x_train=evil, y_train=np.zeros(4, np.int64), x_test=seqs([1]), y_test=np.zeros(1, np.int64))
    with pytest.raises(datasets.DatasetFormatError, match=REFUSED_GLOBAL[payload]) as e:
        imdb.load_data(p, verify=False)
    assert str(p) in str(e.value) and "x_train" in str(e.value)
    time.sleep(0.2)  # a Popen would run asynchronously
    assert not marker.exists()


def _object_npy(payload_bytes, shape=(1,)):
    header = {"descr": "|O", "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload_bytes


def _write_members(path, **members):
    with zipfile.ZipFile(path, "w") as zf:
        for key, content in members.items():
            zf.writestr(key + ".npy", content)
    return path


def _reuters_with_x(path, x_member):
    y = io.BytesIO()
    np.lib.format.write_array(y, np.zeros(1, np.int64))
    return _write_members(path, x=x_member, y=y.getvalue())


@pytest.mark.parametrize("payload", sorted(REFUSED_GLOBAL))
def test_malicious_pickle_as_whole_member_refused(tmp_path, payload):
    marker = tmp_path / "ran"
    p = _reuters_with_x(tmp_path / "reuters.npz", _object_npy(pickle.dumps(_payloads(marker)[payload])))
    with pytest.raises(datasets.DatasetFormatError, match=REFUSED_GLOBAL[payload]):
        reuters.load_data(p, verify=False)
    time.sleep(0.2)
    assert not marker.exists()


class _HugeArray:
    """Calls the allowed numpy.ndarray global directly: a 1 TB allocation."""

    def __reduce__(self):
        return (np.ndarray, ((2**40,), "u1"))


class _BadReconstruct:
    def __reduce__(self):
        return (np._core.multiarray._reconstruct, (dict, (0,), b"b"))


@pytest.mark.parametrize("obj, pattern", [
    (_HugeArray(), r"TypeError: .*_NdarrayType.* not callable"),
    (_BadReconstruct(), r"global builtins.dict refused"),
    ([[1, 2]], r"found list"),  # a bare list, not an array
    ({"a": 1}, r"found dict"),
    (np.array([1.5, 2.5], dtype=object), r"element 0 is float 1.5"),
    (np.array(["a", "b"], dtype=object), r"element 0 is str 'a'"),
    (np.array([None, None], dtype=object), r"element 0 is NoneType None"),
    (np.array([1, 2], dtype=np.int64), r"numpy.dtype\('i8'\) refused"),
])
def test_pickles_that_are_not_int_list_arrays(tmp_path, obj, pattern):
    p = _reuters_with_x(tmp_path / "reuters.npz", _object_npy(pickle.dumps(obj, protocol=3)))

    def load():
        with pytest.raises(datasets.DatasetFormatError, match=pattern) as e:
            reuters.load_data(p, verify=False)
        assert str(p) in str(e.value)

    assert _peak_memory_of(load) < 4 * 2**20


@pytest.mark.parametrize("data", [
    b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"abc",  # BINBYTES8 declaring 1 TB
    b"\x80\x04\x8d" + struct.pack("<Q", 2**40) + b"abc",  # BINUNICODE8 declaring 1 TB
    b"\x80\x04(" * 1000 + b".",  # marks without an object
    b"",
])
def test_forged_pickle_lengths_allocate_nothing_big(data):
    def load():
        with pytest.raises(datasets.DatasetFormatError, match="not a pickled object array"):
            _npz.load_int_lists(data, "test")

    assert _peak_memory_of(load) < 4 * 2**20


def test_repeated_references_cannot_expand_memory(tmp_path):
    row = list(range(1000))
    bomb = np.empty(10_000, dtype=object)
    for i in range(len(bomb)):
        bomb[i] = row  # one list, pickled once and referenced 10,000 times
    data = pickle.dumps(bomb, protocol=3)
    assert len(data) < 100_000
    with pytest.raises(datasets.DatasetFormatError, match="repeated references"):
        _npz.load_int_lists(data, "test")


def test_restricted_unpickler_accepts_numpy_1_and_2_spellings():
    data = pickle.dumps(seqs([1, 2], [3]), protocol=3)  # GLOBAL opcodes: names without a length
    assert b"numpy._core.multiarray" in data or b"numpy.core.multiarray" in data
    for spelling in (b"numpy._core.multiarray", b"numpy.core.multiarray"):
        for other in (b"numpy._core.multiarray", b"numpy.core.multiarray"):
            data = data.replace(other, spelling)
        assert _npz.load_int_lists(data, "test").tolist() == [[1, 2], [3]]


# An object array [[1, 2], [3]] as Python 2's pickle protocol 2 writes it (str
# type code and dtype flags as ints): the form of files written long ago.
PY2_PICKLE = (
    b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85U\x01b\x87R"
    b"(K\x01K\x02\x85cnumpy\ndtype\nU\x02O8K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xff"
    b"J\xff\xff\xff\xffK?tb\x89](](K\x01K\x02e]K\x03aetb."
)


def test_restricted_unpickler_reads_python_2_pickles():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core, on numpy >= 2
        reference = pickle.loads(PY2_PICKLE)
    assert reference.dtype == object and reference.tolist() == [[1, 2], [3]]
    assert _npz.load_int_lists(PY2_PICKLE, "test").tolist() == [[1, 2], [3]]


def _peak_memory_of(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _npy_header(descr, shape):
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}".ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()


def test_forged_numeric_header_allocates_nothing_big(tmp_path):
    x = io.BytesIO()
    np.lib.format.write_array(x, seqs([1]), allow_pickle=True)
    p = _write_members(tmp_path / "reuters.npz", x=x.getvalue(), y=_npy_header("<i8", (2**40,)) + bytes(8))

    def load():
        with pytest.raises(datasets.DatasetFormatError,
                           match=r"y's header declares shape \(1099511627776,\) of int64"):
            reuters.load_data(p, verify=False)

    assert _peak_memory_of(load) < 4 * 2**20


def test_forged_object_header_shape_mismatch(tmp_path):
    p = _reuters_with_x(tmp_path / "reuters.npz", _object_npy(pickle.dumps(seqs([1], [2]), protocol=3),
                                                           shape=(2**40,)))
    with pytest.raises(datasets.DatasetFormatError, match=r"declares shape \(1099511627776,\) but the data holds 2"):
        reuters.load_data(p, verify=False)


def test_member_size_limit(tmp_path, monkeypatch, reuters_dir):
    monkeypatch.setattr(reuters, "_MAX_MEMBER", 100)
    with pytest.raises(datasets.DatasetFormatError, match=r"x declares \d+ bytes, more than the 100 allowed"):
        reuters.load_data(data_dir=reuters_dir, verify=False)


@pytest.mark.parametrize("corruption", ["garbage", "truncated", "flipped"])
def test_unreadable_npz(tmp_path, reuters_dir, corruption):
    p = reuters_dir / "reuters.npz"
    data = bytearray(p.read_bytes())
    if corruption == "garbage":
        data = bytearray(b"not a zip file" * 20)
    elif corruption == "truncated":
        data = data[: len(data) // 2]
    else:  # inside the stored x member's pickle: zipfile's CRC check catches it
        data[data.index(b"\x93NUMPY") + 140] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(datasets.DatasetFormatError, match=r"not a readable") as e:
        reuters.load_data(p, verify=False)
    assert str(p) in str(e.value)


def test_read_npz_rejects_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match=r"read_npz: kind of 'x' must be one of .* received 'text'"):
        _npz.read_npz(tmp_path / "x.npz", {"x": "text"}, max_bytes=1, where="test")


# --------------------------------------------------------------------------
# Finding files, verification, download


def test_missing_data_dir_names_the_files_and_never_downloads(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        imdb.load_data(data_dir=tmp_path / "nowhere")
    msg = str(e.value)
    assert msg.startswith("imdb.load_data: no IMDB file in data_dir=")
    assert str(tmp_path / "nowhere") in msg and "imdb.npz" in msg and "imdb/" in msg


def test_explicit_path_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"reuters.load_data: Reuters file .*the path argument.* does not exist"):
        reuters.load_data(tmp_path / "reuters.npz")


def test_explicit_path_of_another_format(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hi")
    with pytest.raises(FileNotFoundError, match=r"is not a Boston housing file: expected a file named like "
                                                r"boston_housing.npz, boston_house_prices.csv"):
        boston_housing.load_data(p)


def test_offline_error_says_where_to_put_files(cache, monkeypatch, tmp_path):
    monkeypatch.setattr(_fetch, "urlopen", _offline)
    monkeypatch.setenv("MINIGRAD_DATASETS", str(tmp_path / "collection"))
    with pytest.raises(datasets.DatasetUnavailableError) as e:
        imdb.load_data()
    assert isinstance(e.value, OSError)
    msg = str(e.value)
    assert msg.startswith("imdb.load_data: IMDB is not available locally")
    for part in (str(cache), "MINIGRAD_DATASETS", "data_dir=", "imdb.npz", "network is unreachable",
                 imdb._NPZ.url, str(tmp_path / "collection")):
        assert part in msg
    assert os.listdir(cache) == []


def _serve(content, calls):
    def opener(url, timeout=None):
        calls.append(url)
        assert timeout == _fetch.TIMEOUT
        return io.BytesIO(content)
    return opener


def test_download_into_cache_then_reuse(tmp_path, cache, monkeypatch, imdb_dir):
    content = (imdb_dir / "imdb.npz").read_bytes()
    spec = dataclasses.replace(imdb._NPZ, digest=hashlib.sha256(content).hexdigest())
    monkeypatch.setattr(imdb, "_NPZ", spec)
    calls = []
    monkeypatch.setattr(_fetch, "urlopen", _serve(content, calls))
    (_, y_train), _ = imdb.load_data()
    assert calls == [spec.url] and y_train.tolist() == IMDB_CASES["defaults"][2]
    assert os.listdir(cache) == ["imdb.npz"] and (cache / "imdb.npz").read_bytes() == content
    assert os.stat(cache).st_mode & 0o777 == 0o700
    (_, y_train), _ = imdb.load_data()  # from the cache
    assert calls == [spec.url]


def test_download_from_a_file_url(tmp_path, cache, monkeypatch, reuters_dir):
    src = reuters_dir / "reuters.npz"
    spec = dataclasses.replace(reuters._NPZ, digest=sha256(src), url=src.as_uri())
    monkeypatch.setattr(reuters, "_NPZ", spec)
    monkeypatch.setattr(_fetch, "urlopen", urllib.request.urlopen)
    (_, y_train), _ = reuters.load_data()
    assert y_train.tolist() == REUTERS_CASES["defaults"][2]
    assert (cache / "reuters.npz").read_bytes() == src.read_bytes()


def test_download_with_wrong_checksum_is_refused_and_leaves_nothing(cache, monkeypatch):
    calls = []
    monkeypatch.setattr(_fetch, "urlopen", _serve(b"<html>not the file</html>", calls))
    with pytest.raises(datasets.DatasetUnavailableError) as e:
        reuters.load_data()
    msg = str(e.value)
    assert "SHA-256" in msg and reuters._NPZ.digest in msg and "discarded" in msg
    assert calls == [reuters._NPZ.url] and os.listdir(cache) == []


def test_download_of_word_index_checks_md5(cache, monkeypatch):
    content = json.dumps({"the": 1}).encode()
    spec = dataclasses.replace(imdb._WORD_INDEX, digest=hashlib.md5(content).hexdigest())
    calls = []
    monkeypatch.setattr(_fetch, "urlopen", _serve(content, calls))
    with pytest.raises(datasets.DatasetUnavailableError, match="MD5"):
        imdb.get_word_index()  # the published MD5 is not that of these bytes
    monkeypatch.setattr(imdb, "_WORD_INDEX", spec)
    assert imdb.get_word_index() == {"the": 1}
    assert os.listdir(cache) == ["imdb_word_index.json"]


def test_oversized_download_refused(cache, monkeypatch):
    monkeypatch.setattr(boston_housing, "_NPZ", dataclasses.replace(boston_housing._NPZ, max_size=10))
    monkeypatch.setattr(_fetch, "urlopen", _serve(bytes(11), []))
    with pytest.raises(datasets.DatasetUnavailableError, match="more than the expected 10 bytes"):
        boston_housing.load_data()
    assert os.listdir(cache) == []


def test_cache_is_always_verified(cache, imdb_dir):
    cache.mkdir(parents=True)
    (cache / "imdb.npz").write_bytes((imdb_dir / "imdb.npz").read_bytes())
    with pytest.raises(datasets.ChecksumMismatchError, match=r"re-download"):
        imdb.load_data(verify=False)  # verify=False does not apply to the cache


def test_keras_cache_is_used_and_verified(isolated_env, monkeypatch, imdb_dir):
    keras = isolated_env / ".keras" / "datasets"
    keras.mkdir(parents=True)
    p = keras / "imdb.npz"
    p.write_bytes((imdb_dir / "imdb.npz").read_bytes())
    with pytest.raises(datasets.ChecksumMismatchError) as e:
        imdb.load_data()
    assert str(p) in str(e.value)
    monkeypatch.setattr(imdb, "_NPZ", dataclasses.replace(imdb._NPZ, digest=sha256(p)))
    (_, y_train), _ = imdb.load_data()
    assert y_train.tolist() == IMDB_CASES["defaults"][2]


def test_explicit_file_verified_by_default(imdb_dir):
    with pytest.raises(datasets.ChecksumMismatchError) as e:
        imdb.load_data(data_dir=imdb_dir)
    msg = str(e.value)
    assert str(imdb_dir / "imdb.npz") in msg and imdb._NPZ.digest in msg
    assert "not the canonical IMDB file" in msg and "verify=False" in msg


def test_bare_name_is_a_cache_name(tmp_path, cache, monkeypatch, imdb_dir):
    monkeypatch.chdir(tmp_path)
    cache.mkdir(parents=True)
    (cache / "imdb-v2.npz").write_bytes((imdb_dir / "imdb.npz").read_bytes())
    monkeypatch.setattr(imdb, "_NPZ", dataclasses.replace(imdb._NPZ, digest=sha256(cache / "imdb-v2.npz")))
    (_, y_train), _ = imdb.load_data("imdb-v2.npz")
    assert y_train.tolist() == IMDB_CASES["defaults"][2]


def test_bare_csv_name_is_a_cache_name_in_the_csv_format(tmp_path, cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = write_boston_csv(cache / "my-boston.csv")
    monkeypatch.setattr(boston_housing, "_CSV", dataclasses.replace(boston_housing._CSV, digest=sha256(p)))
    (_, y_train), (_, y_test) = boston_housing.load_data("my-boston.csv")
    assert sorted(y_train.tolist() + y_test.tolist()) == sorted(BOSTON_PRICES)


def test_unpublished_hash_verifies_nothing(tmp_path, cache, monkeypatch):
    spec = _fetch.FileSpec("data.bin", None, max_size=100, url="https://example.invalid/data.bin")
    calls = []
    monkeypatch.setattr(_fetch, "urlopen", _serve(b"any bytes", calls))
    path, found = _fetch.locate("Example", "example.load_data", None, None, [spec])
    assert path == cache / "data.bin" and path.read_bytes() == b"any bytes" and found is spec
    assert calls == [spec.url]
    assert _fetch.locate("Example", "example.load_data", None, None, [spec])[0] == path  # cached
    assert calls == [spec.url]


def test_precedence_path_then_data_dir_then_environment_then_cache(tmp_path, monkeypatch, cache):
    def folder(name, labels):
        write_imdb(tmp_path / name / "imdb.npz", y_train=labels)
        return tmp_path / name

    a, b, c = folder("a", [0, 0, 0, 0]), folder("b", [1, 1, 1, 1]), folder("c", [2, 2, 2, 2])
    write_imdb(cache / "imdb.npz")  # would fail verification if reached
    monkeypatch.setenv("MINIGRAD_DATASETS", str(c))
    assert imdb.load_data(a / "imdb.npz", data_dir=b, verify=False)[0][1].tolist() == [0] * 4
    assert imdb.load_data(data_dir=b, verify=False)[0][1].tolist() == [1] * 4
    assert imdb.load_data(verify=False)[0][1].tolist() == [2] * 4


def test_environment_folder_without_the_file_falls_through_to_the_cache(tmp_path, monkeypatch, cache, imdb_dir):
    monkeypatch.setenv("MINIGRAD_DATASETS", str(tmp_path / "collection-without-imdb"))
    cache.mkdir(parents=True)
    (cache / "imdb.npz").write_bytes((imdb_dir / "imdb.npz").read_bytes())
    monkeypatch.setattr(imdb, "_NPZ", dataclasses.replace(imdb._NPZ, digest=sha256(cache / "imdb.npz")))
    assert imdb.load_data()[0][1].tolist() == IMDB_CASES["defaults"][2]


def test_published_hashes_are_keras():
    # As published in keras/src/datasets/*.py (file_hash); MD5 for the word indices.
    assert imdb._NPZ.digest == "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"
    assert reuters._NPZ.digest == "d6586e694ee56d7a4e65172e12b3e987c03096cb01eab99753921ef915959916"
    assert boston_housing._NPZ.digest == "f553886a1f8d56431e820c5b82552d9d95cfcb96d1e678153f8839538947dff5"
    assert (imdb._WORD_INDEX.algorithm, reuters._WORD_INDEX.algorithm) == ("md5", "md5")
    for spec in (imdb._NPZ, reuters._NPZ, boston_housing._NPZ, imdb._WORD_INDEX, reuters._WORD_INDEX):
        assert spec.url == "https://storage.googleapis.com/tensorflow/tf-keras-datasets/" + spec.name


# --------------------------------------------------------------------------
# Boston housing


def require_boston():
    if BOSTON_CSV.is_file():
        return
    reason = f"Boston housing CSV not found at {BOSTON_CSV} (set MINIGRAD_TEST_BOSTON)"
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI must provide it")
    pytest.skip(reason)


def test_boston_real_split_matches_the_book():
    require_boston()
    (x_train, y_train), (x_test, y_test) = boston_housing.load_data(data_dir=BOSTON)
    assert x_train.shape == (404, 13) and x_test.shape == (102, 13)
    assert y_train.shape == (404,) and y_test.shape == (102,)
    assert x_train.dtype == np.float64 and y_train.dtype == np.float64
    assert y_train[:12].tolist() == BOOK_FIRST_TARGETS
    # Train and test together are the 506 rows of the table, each (features, target) intact.
    table = np.loadtxt(BOSTON_CSV, delimiter=",", skiprows=1)
    assert table.shape == (506, 14)
    split = np.concatenate([np.column_stack([x_train, y_train]), np.column_stack([x_test, y_test])])
    np.testing.assert_array_equal(np.unique(split, axis=0), np.unique(table, axis=0))


def test_boston_real_via_parent_folder_environment_and_path(monkeypatch):
    require_boston()
    reference = boston_housing.load_data(data_dir=BOSTON)
    monkeypatch.setenv("MINIGRAD_DATASETS", str(BOSTON.parent))  # holds boston_housing/
    via_env = boston_housing.load_data()
    via_path = boston_housing.load_data(BOSTON_CSV)
    via_parent = boston_housing.load_data(data_dir=BOSTON.parent)
    for other in (via_env, via_path, via_parent):
        for a, b in zip(reference[0] + reference[1], other[0] + other[1]):
            np.testing.assert_array_equal(a, b)


def test_boston_keras_npz_format_gives_the_same_split(tmp_path):
    require_boston()
    table = np.loadtxt(BOSTON_CSV, delimiter=",", skiprows=1)
    p = tmp_path / "boston_housing.npz"
    np.savez(p, x=table[:, :13], y=table[:, 13])
    with pytest.raises(datasets.ChecksumMismatchError):  # not Keras' bytes
        boston_housing.load_data(p)
    (x_train, y_train), (x_test, y_test) = boston_housing.load_data(p, verify=False)
    (cx_train, cy_train), (cx_test, cy_test) = boston_housing.load_data(BOSTON_CSV)
    np.testing.assert_array_equal(x_train, cx_train)
    np.testing.assert_array_equal(y_test, cy_test)
    assert y_train[:4].tolist() == BOOK_FIRST_TARGETS[:4]


def test_boston_altered_csv_refused_unless_verify_false(tmp_path):
    require_boston()
    text = BOSTON_CSV.read_text().replace(",24\n", ",25\n", 1)
    p = tmp_path / "boston_house_prices.csv"
    p.write_text(text)
    with pytest.raises(datasets.ChecksumMismatchError, match=r"has SHA-256 .* the published value is 04ea3ed0"):
        boston_housing.load_data(p)
    data = boston_housing.load_data(p, verify=False)
    assert 25.0 in np.concatenate([data[0][1], data[1][1]]).tolist()


BOSTON_PRICES = [24.0, 21.6, 34.7, 33.4, 36.2]
# RandomState(113) shuffles arange(5) to [1, 0, 3, 2, 4]; RandomState(0) to [2, 0, 1, 3, 4];
# RandomState(5) to [4, 0, 1, 2, 3].


def write_boston_csv(path, prices=BOSTON_PRICES, header=CSV_HEADER, rows=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if rows is None:
        rows = [",".join([str(i + 0.5)] * 13 + [str(p)]) for i, p in enumerate(prices)]
    path.write_text("\n".join([header] + rows) + "\n")
    return path


@pytest.mark.parametrize("options, train, test", [
    ({}, [21.6, 24.0, 33.4, 34.7], [36.2]),
    (dict(seed=0), [34.7, 24.0, 21.6, 33.4], [36.2]),
    (dict(seed=5, test_split=0.4), [36.2, 24.0, 21.6], [34.7, 33.4]),
    (dict(test_split=0), [21.6, 24.0, 33.4, 34.7, 36.2], []),
])
def test_boston_split_semantics(tmp_path, options, train, test):
    write_boston_csv(tmp_path / "boston_housing" / "boston_house_prices.csv")
    (x_train, y_train), (x_test, y_test) = boston_housing.load_data(data_dir=tmp_path, verify=False, **options)
    assert y_train.tolist() == train and y_test.tolist() == test
    assert x_train.shape == (len(train), 13) and x_test.shape == (len(test), 13)
    # Rows stay whole: the features of row i are all i + 0.5.
    row_of = {price: i for i, price in enumerate(BOSTON_PRICES)}
    for x, y in ((x_train, y_train), (x_test, y_test)):
        for features, price in zip(x, y):
            assert features.tolist() == [row_of[price] + 0.5] * 13


@pytest.mark.parametrize("split", [1.0, -0.5, 2, "0.2"])
def test_boston_bad_test_split(split):
    with pytest.raises(ValueError, match=r"boston_housing.load_data: test_split must be a number in \[0, 1\)"):
        boston_housing.load_data(test_split=split)


@pytest.mark.parametrize("case, kwargs, pattern", [
    ("header", dict(header="a,b,c"), r"the header is \['a', 'b', 'c'\]"),
    ("short-row", dict(rows=["1,2,3"]), r"line 2 is \['1', '2', '3'\]"),
    ("text-value", dict(rows=[",".join(["x"] * 14)]), r"line 2 is \['x'"),
    ("nan", dict(rows=[",".join(["nan"] * 14)]), r"line 2 is \['nan'"),
    ("no-rows", dict(rows=[]), r"has a header but no rows"),
])
def test_boston_malformed_csv(tmp_path, case, kwargs, pattern):
    p = write_boston_csv(tmp_path / "boston_house_prices.csv", **kwargs)
    with pytest.raises(datasets.DatasetFormatError, match=pattern) as e:
        boston_housing.load_data(p, verify=False)
    assert str(p) in str(e.value)


def test_boston_malformed_npz(tmp_path):
    p = tmp_path / "boston_housing.npz"
    np.savez(p, x=np.zeros((5, 12)), y=np.zeros(5))
    with pytest.raises(datasets.DatasetFormatError, match=r"x has shape \(5, 12\) and y \(5,\); expected \(n, 13\)"):
        boston_housing.load_data(p, verify=False)
    marker = tmp_path / "ran"
    np.savez(p, x=np.array([_Reduce(os.system, f"touch {marker}")], dtype=object), y=np.zeros(1))
    with pytest.raises(datasets.DatasetFormatError, match=r"x has dtype object; expected a numeric"):
        boston_housing.load_data(p, verify=False)
    assert not marker.exists()


def test_boston_missing_everywhere(cache, monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no Boston housing file in data_dir=.*boston_housing.npz, "
                                                r"boston_house_prices.csv .*boston_housing/"):
        boston_housing.load_data(data_dir=tmp_path)
    monkeypatch.setattr(_fetch, "urlopen", _offline)
    with pytest.raises(datasets.DatasetUnavailableError, match=r"boston_housing.npz, boston_house_prices.csv"):
        boston_housing.load_data()


# --------------------------------------------------------------------------
# Package and documentation


def test_package_exports():
    assert {"mnist", "imdb", "reuters", "boston_housing"} <= set(datasets.__all__)
    assert datasets.DatasetFormatError is datasets.mnist.DatasetFormatError
    assert issubclass(datasets.ChecksumMismatchError, ValueError)
    assert issubclass(datasets.DatasetUnavailableError, OSError)


@pytest.mark.parametrize("module", [_fetch, _npz, _sequences, imdb, reuters, boston_housing],
                         ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted >= 2 and result.failed == 0
