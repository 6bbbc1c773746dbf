"""Tests for minigrad.datasets.mnist: real files, malformed files, download, offline.

No network: every test replaces the module's opener with one that fails the
test if called, unless it installs its own fake opener or file:// mirror.
"""

import doctest
import gzip
import hashlib
import io
import os
import shutil
import stat
import struct
import time
import tracemalloc
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minigrad.datasets import _fetch, mnist

# The real files: MINIGRAD_DATA from the environment wins, else the shared/
# directory next to the repository clone.  Read at import time, before the
# fixtures below clear the variable.
SHARED = Path(
    os.environ.get("MINIGRAD_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "mnist"
).resolve()  # absolute: tests symlink to it from temporary directories
GZ_NAMES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
IDX_NAMES = [n[:-3] for n in GZ_NAMES]

TRAIN_FIRST_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
TEST_FIRST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
X_TRAIN0_PIXEL_SUM = 27525
X_TEST0_PIXEL_SUM = 18454


def _no_network(url, timeout=None):
    raise AssertionError(f"test tried to open {url}")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No real caches, no env configuration, no network."""
    for var in ("MINIGRAD_DATA", "MINIGRAD_HOME", "KERAS_HOME"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(mnist, "_urlopen", _no_network)
    return home


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGRAD_HOME", str(tmp_path / "mghome"))
    return tmp_path / "mghome" / "datasets"


def require_shared():
    if not all((SHARED / n).is_file() for n in GZ_NAMES):
        reason = (f"MNIST not found in {SHARED}: set MINIGRAD_DATA to a folder holding "
                  f"{', '.join(GZ_NAMES)}")
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI never skips these tests)")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def real():
    require_shared()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINIGRAD_DATA", str(SHARED))
        return mnist.load_data()


# --------------------------------------------------------------------------
# The real files


def test_real_shapes_and_dtypes(real):
    (x_train, y_train), (x_test, y_test) = real
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    for a in (x_train, y_train, x_test, y_test):
        assert a.dtype == np.uint8
        assert a.flags.c_contiguous and a.flags.writeable


def test_real_golden_values(real):
    (x_train, y_train), (x_test, y_test) = real
    assert y_train[:10].tolist() == TRAIN_FIRST_LABELS
    assert y_test[:10].tolist() == TEST_FIRST_LABELS
    assert np.bincount(y_train, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(y_test, minlength=10).tolist() == TEST_COUNTS
    assert int(x_train[0].sum(dtype=np.int64)) == X_TRAIN0_PIXEL_SUM
    assert int(x_test[0].sum(dtype=np.int64)) == X_TEST0_PIXEL_SUM
    # The well-known normalisation constants 0.1307 / 0.3081, from a pixel
    # histogram built in chunks (x_train.std() needs a 376 MB temporary).
    hist = sum(np.bincount(chunk.ravel(), minlength=256) for chunk in np.split(x_train, 60))
    hist = hist.astype(np.float64)
    values = np.arange(256) / 255.0
    mean = (hist * values).sum() / hist.sum()
    std = np.sqrt((hist * values**2).sum() / hist.sum() - mean**2)
    assert hist[0] > 0 and hist[255] > 0
    assert mean == pytest.approx(0.1306604762738429, abs=1e-12)
    assert std == pytest.approx(0.3081078038564626, abs=1e-9)


def test_real_via_path_argument(real):
    require_shared()
    loaded = mnist.load_data(path=SHARED)
    for a, b in zip(_flat(loaded), _flat(real)):
        np.testing.assert_array_equal(a, b)


def test_real_uncompressed_copies_verified(real, tmp_path):
    require_shared()
    d = tmp_path / "raw"
    d.mkdir()
    for gz, raw in zip(GZ_NAMES, IDX_NAMES):
        with gzip.open(SHARED / gz, "rb") as src, open(d / raw, "wb") as dst:
            shutil.copyfileobj(src, dst)
    loaded = mnist.load_data(d)  # verify=True: the raw SHA-256 table applies
    for a, b in zip(_flat(loaded), _flat(real)):
        np.testing.assert_array_equal(a, b)


def test_real_file_with_same_size_but_wrong_hash_rejected(tmp_path):
    require_shared()
    d = tmp_path / "copy"
    d.mkdir()
    for name in GZ_NAMES[:3]:
        (d / name).symlink_to(SHARED / name)
    data = bytearray((SHARED / GZ_NAMES[3]).read_bytes())
    data[100] ^= 0xFF
    (d / GZ_NAMES[3]).write_bytes(bytes(data))
    with pytest.raises(mnist.ChecksumMismatchError) as e:
        mnist.load_data(d)
    msg = str(e.value)
    assert str(d / GZ_NAMES[3]) in msg and "SHA-256" in msg
    assert "Delete it" in msg and "verify=False" in msg


def test_docstring_example_runs(monkeypatch):
    require_shared()
    monkeypatch.setenv("MINIGRAD_DATA", str(SHARED))
    result = doctest.testmod(mnist)
    assert result.attempted >= 4 and result.failed == 0


def _flat(data):
    (a, b), (c, d) = data
    return [a, b, c, d]


# --------------------------------------------------------------------------
# Small synthetic IDX files


def synthetic(n_train=3, n_test=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def idx(arr=None, dims=None, payload=None, dtype_code=0x08, ndim=None):
    """IDX bytes for an array, or for hand-made dims/payload."""
    if arr is not None:
        dims, payload = arr.shape, arr.tobytes()
    ndim = len(dims) if ndim is None else ndim
    return bytes([0, 0, dtype_code, ndim]) + struct.pack(f">{len(dims)}I", *dims) + payload


def write_set(d, arrays, gz=True, replace=None):
    """Write the four files; `replace` maps an IDX name to raw file content."""
    d.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        content = (replace or {}).get(name, idx(arr) if arr is not None else None)
        if gz:
            (d / (name + ".gz")).write_bytes(gzip.compress(content, compresslevel=1))
        else:
            (d / name).write_bytes(content)
    return d


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_synthetic_round_trip(tmp_path, gz):
    arrays = synthetic()
    d = write_set(tmp_path / "data", arrays, gz=gz)
    (x_train, y_train), (x_test, y_test) = mnist.load_data(d, verify=False)
    np.testing.assert_array_equal(x_train, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(x_test, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    assert x_train.dtype == np.uint8 and x_train.shape == (3, 28, 28)


def test_synthetic_canonical_names_rejected_when_verifying(tmp_path):
    d = write_set(tmp_path / "data", synthetic())
    with pytest.raises(mnist.ChecksumMismatchError, match="Delete it") as e:
        mnist.load_data(d)
    assert str(d / "train-images-idx3-ubyte.gz") in str(e.value)


def test_synthetic_via_minigrad_data(tmp_path, monkeypatch):
    arrays = synthetic()
    d = write_set(tmp_path / "data", arrays)
    monkeypatch.setenv("MINIGRAD_DATA", str(d))
    (_, y_train), _ = mnist.load_data(verify=False)
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte"])


def _malformed_cases():
    a = synthetic()
    img, lbl = a["t10k-images-idx3-ubyte"], a["t10k-labels-idx1-ubyte"]
    I, L = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
    return {
        "truncated-payload": (I, idx(img)[:-100], r"truncated: header declares 1568 data bytes, file has 1468"),
        "truncated-header": (I, idx(img)[:10], r"truncated IDX header"),
        "empty-file": (L, b"", r"truncated IDX header"),
        "trailing-data": (I, idx(img) + b"\0" * 7, r"more data than its header declares"),
        "not-idx-magic": (I, b"\x89PNG\r\n\x1a\n" + bytes(2000), r"not an IDX file"),
        "labels-magic-in-images": (I, idx(lbl), r"has 1 dimensions, expected 3"),
        "images-magic-in-labels": (L, idx(img), r"has 3 dimensions, expected 1"),
        "dtype-float32": (I, idx(dims=img.shape, payload=img.tobytes() * 4, dtype_code=0x0D), r"dtype code is 0x0d"),
        "huge-count": (I, idx(dims=(2**31, 28, 28), payload=bytes(100)), r"declares shape \(2147483648, 28, 28\)"),
        "huge-max-dims": (I, idx(dims=(2**32 - 1,) * 3, payload=bytes(100)), r"declares shape"),
        "huge-label-count": (L, idx(dims=(2**32 - 1,), payload=bytes(100)), r"at most 10000 items"),
        "wrong-image-size": (I, idx(np.zeros((2, 32, 32), np.uint8)), r"of 28x28 pixels"),
        "count-mismatch": (L, idx(lbl[:1]), r"holds 2 images but .* holds 1 labels"),
        "label-10": (L, idx(np.array([3, 10], np.uint8)), r"label value 10 found"),
        "label-255": (L, idx(np.array([255, 0], np.uint8)), r"label value 255 found"),
    }


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("case", sorted(_malformed_cases()))
def test_malformed_idx(tmp_path, case, gz):
    name, content, pattern = _malformed_cases()[case]
    d = write_set(tmp_path / "data", synthetic(), gz=gz, replace={name: content})
    with pytest.raises(mnist.DatasetFormatError, match=pattern) as e:
        mnist.load_data(d, verify=False)
    assert str(d / name) in str(e.value)  # names the file


def _peak_memory_of(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("declared", [(2**31, 28, 28), (60000, 28, 28)])
def test_declared_size_beyond_payload_allocates_nothing_big(tmp_path, declared):
    bogus = idx(dims=declared, payload=bytes(100))
    d = write_set(tmp_path / "data", synthetic(), replace={"train-images-idx3-ubyte": bogus})

    def load():
        with pytest.raises(mnist.DatasetFormatError):
            mnist.load_data(d, verify=False)

    assert _peak_memory_of(load) < 4 * 2**20


@pytest.mark.parametrize("corruption", ["flipped-byte", "bad-crc", "cut-in-half", "not-gzip"])
def test_corrupted_gzip(tmp_path, corruption):
    arrays = synthetic(n_train=50)
    d = write_set(tmp_path / "data", arrays)
    path = d / "train-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    if corruption == "flipped-byte":
        data[len(data) // 2] ^= 0x55
    elif corruption == "bad-crc":
        data[-8] ^= 0x01
    elif corruption == "cut-in-half":
        data = data[: len(data) // 2]
    else:
        data = bytearray(idx(arrays["train-images-idx3-ubyte"]))
    path.write_bytes(bytes(data))
    with pytest.raises(mnist.DatasetFormatError, match="cannot be read or decompressed") as e:
        mnist.load_data(d, verify=False)
    assert str(path) in str(e.value)


def test_gzip_bomb_is_not_decompressed(tmp_path):
    arrays = synthetic()
    # Valid 3-image header+payload followed by 1 GiB of zeros in ~1 MB of gzip
    # members (concatenated members are valid gzip).
    zeros = gzip.compress(bytes(2**20), compresslevel=9)
    bomb = gzip.compress(idx(arrays["train-images-idx3-ubyte"])) + zeros * 1024
    d = write_set(tmp_path / "data", arrays)
    (d / "train-images-idx3-ubyte.gz").write_bytes(bomb)

    def load():
        with pytest.raises(mnist.DatasetFormatError, match="more data than its header"):
            mnist.load_data(d, verify=False)

    start = time.perf_counter()
    assert _peak_memory_of(load) < 8 * 2**20
    assert time.perf_counter() - start < 2


# --------------------------------------------------------------------------
# .npz files


def npy_header(shape):
    text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}".ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()


def write_npz(path, **arrays):
    with zipfile.ZipFile(path, "w") as zf:
        for key, value in arrays.items():
            with zf.open(key + ".npy", "w") as f:
                if isinstance(value, bytes):  # hand-made .npy content
                    f.write(value)
                else:
                    np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=True)
    return path


def npz_arrays(**changes):
    a = synthetic()
    arrays = {
        "x_train": a["train-images-idx3-ubyte"], "y_train": a["train-labels-idx1-ubyte"],
        "x_test": a["t10k-images-idx3-ubyte"], "y_test": a["t10k-labels-idx1-ubyte"],
    }
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


class _Exploit:
    def __reduce__(self):
        return (exec, ("import builtins; builtins._minigrad_pwned = True",))


def test_npz_round_trip_extra_keys_ignored(tmp_path):
    arrays = npz_arrays()
    # An extra key holding a pickled object is ignored and never loaded.
    p = write_npz(tmp_path / "data.npz", **arrays, extra=np.array([_Exploit()], dtype=object))
    (x_train, y_train), (x_test, y_test) = mnist.load_data(p)
    np.testing.assert_array_equal(x_train, arrays["x_train"])
    np.testing.assert_array_equal(y_test, arrays["y_test"])
    assert x_train.dtype == np.uint8 and x_test.shape == (2, 28, 28)
    assert not hasattr(__import__("builtins"), "_minigrad_pwned")


def test_npz_in_directory_and_checksum_of_canonical_name(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    write_npz(d / "mnist.npz", **npz_arrays())
    # "mnist.npz" is a canonical name with a published checksum.
    with pytest.raises(mnist.ChecksumMismatchError, match="mnist.npz"):
        mnist.load_data(d)
    (_, y_train), _ = mnist.load_data(d, verify=False)
    assert y_train.tolist() == npz_arrays()["y_train"].tolist()


def test_npz_pickled_object_array_refused(tmp_path):
    import builtins

    p = write_npz(tmp_path / "evil.npz", **npz_arrays(x_train=np.array([_Exploit()], dtype=object)))
    with pytest.raises(mnist.DatasetFormatError, match="x_train has dtype object") as e:
        mnist.load_data(p, verify=False)
    assert str(p) in str(e.value)
    assert not hasattr(builtins, "_minigrad_pwned")


@pytest.mark.parametrize("case, changes, pattern", [
    ("missing-keys", dict(y_test=None, x_test=None), r"missing key\(s\) x_test, y_test"),
    ("x-float32", dict(x_train=np.zeros((3, 28, 28), np.float32)), r"x_train has dtype float32"),
    ("y-int64", dict(y_test=np.zeros(2, np.int64)), r"y_test has dtype int64"),
    ("x-flat", dict(x_train=np.zeros((3, 784), np.uint8)), r"x_train has shape \(3, 784\)"),
    ("x-32x32", dict(x_test=np.zeros((2, 32, 32), np.uint8)), r"x_test has shape \(2, 32, 32\)"),
    ("count-mismatch", dict(y_train=np.zeros(4, np.uint8)), r"y_train \(4,\)"),
    ("label-10", dict(y_train=np.array([1, 10, 2], np.uint8)), r"label value 10"),
    # Forged .npy headers: np.load would allocate the declared shape up front.
    ("huge-shape", dict(x_train=npy_header((2**31, 28, 28)) + bytes(100),
                        y_train=npy_header((2**31,)) + bytes(100)), r"shape \(2147483648, 28, 28\)"),
])
def test_npz_malformed(tmp_path, case, changes, pattern):
    p = write_npz(tmp_path / f"{case}.npz", **npz_arrays(**changes))

    def load():
        with pytest.raises(mnist.DatasetFormatError, match=pattern) as e:
            mnist.load_data(p, verify=False)
        assert str(p) in str(e.value)

    assert _peak_memory_of(load) < 4 * 2**20


@pytest.mark.parametrize("corruption", ["garbage", "truncated", "bad-crc", "short-member"])
def test_npz_unreadable(tmp_path, corruption):
    p = tmp_path / "bad.npz"
    if corruption == "garbage":
        p.write_bytes(b"this is not a zip file" * 10)
    elif corruption == "short-member":
        header = np.lib.format.header_data_from_array_1_0(np.zeros((3, 28, 28), np.uint8))
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, header)
        write_npz(p, **npz_arrays(x_train=buf.getvalue() + bytes(10)))
    else:
        np.savez(p, **npz_arrays())
        data = bytearray(p.read_bytes())
        if corruption == "truncated":
            data = data[: len(data) // 2]
        else:  # flip a pixel inside the stored (uncompressed) x_train member
            data[data.index(b"\x93NUMPY") + 200] ^= 0xFF
        p.write_bytes(bytes(data))
    with pytest.raises(mnist.DatasetFormatError, match="not a readable .npz file") as e:
        mnist.load_data(p, verify=False)
    assert str(p) in str(e.value)


# --------------------------------------------------------------------------
# Search order and explicit locations


def test_explicit_path_without_files_raises_and_never_downloads(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as e:
        mnist.load_data(missing)
    msg = str(e.value)
    assert str(missing) in msg and "the path argument" in msg
    assert all(n in msg for n in GZ_NAMES) and "mnist.npz" in msg


def test_minigrad_data_without_files_raises(tmp_path, monkeypatch):
    d = write_set(tmp_path / "partial", synthetic())
    (d / "t10k-labels-idx1-ubyte.gz").unlink()  # 3 of 4 files is not usable
    monkeypatch.setenv("MINIGRAD_DATA", str(d))
    with pytest.raises(FileNotFoundError, match="MINIGRAD_DATA") as e:
        mnist.load_data()
    assert str(d) in str(e.value)


def test_path_that_is_not_a_directory_or_npz(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(FileNotFoundError, match="notes.txt"):
        mnist.load_data(f)


def test_precedence_path_then_env_then_cache(tmp_path, monkeypatch, cache):
    arrays_a, arrays_b = synthetic(seed=1), synthetic(seed=2)
    a = write_set(tmp_path / "a", arrays_a)
    b = write_set(tmp_path / "b", arrays_b)
    write_set(cache, synthetic(seed=3))  # would fail verification if reached
    monkeypatch.setenv("MINIGRAD_DATA", str(b))
    (_, y), _ = mnist.load_data(a, verify=False)
    assert y.tolist() == arrays_a["train-labels-idx1-ubyte"].tolist()
    (_, y), _ = mnist.load_data(verify=False)
    assert y.tolist() == arrays_b["train-labels-idx1-ubyte"].tolist()


def test_cache_is_always_verified(cache):
    write_set(cache, synthetic())
    with pytest.raises(mnist.ChecksumMismatchError, match="re-download"):
        mnist.load_data(verify=False)  # verify=False does not apply to the cache


def test_keras_cache_is_used_and_verified(isolated_env, monkeypatch):
    keras = isolated_env / ".keras" / "datasets"
    keras.mkdir(parents=True)
    p = write_npz(keras / "mnist.npz", **npz_arrays())
    with pytest.raises(mnist.ChecksumMismatchError) as e:
        mnist.load_data()
    assert str(p) in str(e.value)
    data = p.read_bytes()
    monkeypatch.setitem(mnist._KNOWN, "mnist.npz", (len(data), hashlib.sha256(data).hexdigest()))
    (_, y), _ = mnist.load_data()
    assert y.tolist() == npz_arrays()["y_train"].tolist()


def test_bare_file_name_resolved_in_cache(tmp_path, monkeypatch, cache):
    monkeypatch.chdir(tmp_path)
    cache.mkdir(parents=True)
    write_npz(cache / "custom.npz", **npz_arrays())
    (_, y), _ = mnist.load_data("custom.npz")
    assert y.tolist() == npz_arrays()["y_train"].tolist()
    with pytest.raises(FileNotFoundError) as e:
        mnist.load_data("other.npz")
    assert str(cache / "other.npz") in str(e.value)


def test_keras_default_name_behaves_like_no_argument(tmp_path, monkeypatch, cache):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mnist, "_urlopen", _offline)
    with pytest.raises(mnist.DatasetUnavailableError):
        mnist.load_data("mnist.npz")


# --------------------------------------------------------------------------
# Download


def _offline(url, timeout=None):
    raise urllib.error.URLError("network is unreachable")


def test_offline_error_says_where_to_put_files(cache, monkeypatch):
    monkeypatch.setattr(mnist, "_urlopen", _offline)
    with pytest.raises(mnist.DatasetUnavailableError) as e:
        mnist.load_data()
    assert isinstance(e.value, OSError)
    msg = str(e.value)
    assert str(cache) in msg and "MINIGRAD_DATA" in msg
    assert all(n in msg for n in GZ_NAMES)
    assert "network is unreachable" in msg
    assert os.listdir(cache) == []


def test_download_from_file_mirror_then_cache(tmp_path, monkeypatch, cache, real):
    require_shared()
    calls = []

    def counting_urlopen(url, timeout=None):
        calls.append(url)
        assert timeout == _fetch.TIMEOUT
        return urllib.request.urlopen(url, timeout=timeout)

    # The first mirror lacks the files, so every download falls back to the second.
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    monkeypatch.setattr(mnist, "MIRRORS", [empty.as_uri() + "/", SHARED.as_uri() + "/"])
    monkeypatch.setattr(mnist, "_urlopen", counting_urlopen)
    loaded = mnist.load_data()
    assert len(calls) == 8
    for a, b in zip(_flat(loaded), _flat(real)):
        np.testing.assert_array_equal(a, b)
    assert sorted(os.listdir(cache)) == sorted(GZ_NAMES)  # no temp files left
    for name in GZ_NAMES:
        assert hashlib.sha256((cache / name).read_bytes()).hexdigest() == mnist._KNOWN[name][1]
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700

    # Second call: served from the cache, no download.
    calls.clear()
    (_, y_train), _ = mnist.load_data()
    assert calls == [] and y_train[:10].tolist() == TRAIN_FIRST_LABELS

    # A missing file is fetched alone.
    (cache / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setattr(mnist, "MIRRORS", [SHARED.as_uri() + "/"])
    _, (_, y_test) = mnist.load_data()
    assert calls == [SHARED.as_uri() + "/t10k-labels-idx1-ubyte.gz"]
    assert y_test[:10].tolist() == TEST_FIRST_LABELS


def test_download_bad_checksum_leaves_nothing(cache, monkeypatch):
    seen = []

    def wrong_content(url, timeout=None):
        seen.append(url)
        return io.BytesIO(b"<html>not mnist</html>")

    monkeypatch.setattr(mnist, "_urlopen", wrong_content)
    with pytest.raises(mnist.DatasetUnavailableError) as e:
        mnist.load_data()
    msg = str(e.value)
    assert "SHA-256" in msg and str(cache) in msg and "train-images-idx3-ubyte.gz" in msg
    assert seen == [m + "train-images-idx3-ubyte.gz" for m in mnist.MIRRORS]  # both mirrors tried
    assert os.listdir(cache) == []


class _DyingResponse(io.RawIOBase):
    """A response that delivers some bytes, then fails."""

    def __init__(self, exc):
        self.exc, self.sent = exc, False

    def read(self, n=-1):
        if not self.sent:
            self.sent = True
            return b"\x1f\x8b" + bytes(65536)
        raise self.exc


@pytest.mark.parametrize("exc", [ConnectionResetError("connection reset"), TimeoutError("timed out")])
def test_interrupted_download_leaves_nothing(cache, monkeypatch, exc):
    monkeypatch.setattr(mnist, "_urlopen", lambda url, timeout=None: _DyingResponse(exc))
    with pytest.raises(mnist.DatasetUnavailableError, match=str(exc)):
        mnist.load_data()
    assert os.listdir(cache) == []


def test_keyboard_interrupt_during_download_leaves_nothing(cache, monkeypatch):
    monkeypatch.setattr(mnist, "_urlopen", lambda url, timeout=None: _DyingResponse(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        mnist.load_data()
    assert os.listdir(cache) == []


def test_download_function_directly(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 100)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "out"
    out.mkdir()
    _fetch.download(src.as_uri(), out / "f.bin", sha, 700, opener=urllib.request.urlopen)
    assert (out / "f.bin").read_bytes() == src.read_bytes() and os.listdir(out) == ["f.bin"]
    # Too large (a server streaming endless data): refused, nothing written.
    with pytest.raises(mnist.DatasetFormatError, match="more than the expected 699 bytes"):
        _fetch.download(src.as_uri(), out / "g.bin", sha, 699, opener=urllib.request.urlopen)
    # Wrong checksum: the existing good file is not replaced.
    with pytest.raises(mnist.ChecksumMismatchError):
        _fetch.download(src.as_uri(), out / "f.bin", "0" * 64, opener=urllib.request.urlopen)
    assert os.listdir(out) == ["f.bin"] and (out / "f.bin").read_bytes() == src.read_bytes()


def test_corrupt_cached_file_is_reported_not_redownloaded(tmp_path, cache, monkeypatch):
    require_shared()
    cache.mkdir(parents=True)
    for name in GZ_NAMES:
        shutil.copy(SHARED / name, cache / name)
    with open(cache / "train-labels-idx1-ubyte.gz", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(mnist.ChecksumMismatchError) as e:
        mnist.load_data()  # _urlopen is the no-network guard
    msg = str(e.value)
    assert str(cache / "train-labels-idx1-ubyte.gz") in msg and "re-download" in msg


def test_minigrad_data_naming_a_missing_path_falls_through_to_the_cache(tmp_path, monkeypatch):
    # One README command must work offline (local copy) and online (cache):
    # a MINIGRAD_DATA that does not exist is skipped, not an error.
    monkeypatch.setenv("MINIGRAD_DATA", str(tmp_path / "no-such-dir"))
    home = tmp_path / "home"
    cache = home / "datasets"
    cache.mkdir(parents=True)
    for name in os.listdir(SHARED):
        if name.endswith(".gz"):
            shutil.copy(SHARED / name, cache / name)
    monkeypatch.setenv("MINIGRAD_HOME", str(home))
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    assert x_train.shape == (60000, 28, 28) and y_test[:3].tolist() == [7, 2, 1]
