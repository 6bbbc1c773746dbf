"""MNIST handwritten digits, Keras-compatible: ``load_data()``.

Needs numpy, the standard library and the shared ``_fetch`` module only, so
it can be used and tested without the rest of minigrad.

Where the data is looked for, in order:

1. the ``path`` argument: a directory holding the four IDX files or
   ``mnist.npz``, or the path of an ``.npz`` file;
2. the directory (or ``.npz`` file) named by the ``MINIGRAD_DATA`` environment
   variable;
3. the cache directory ``$MINIGRAD_HOME/datasets`` (default
   ``~/.cache/minigrad/datasets``);
4. an existing Keras download, ``$KERAS_HOME/datasets/mnist.npz`` (default
   ``~/.keras/datasets/mnist.npz``);
5. otherwise the four IDX ``.gz`` files are downloaded into the cache.

Sources 1 and 2 are *explicit*: if they hold no usable files the loader raises
``FileNotFoundError`` instead of quietly downloading something else. One
exception: a ``MINIGRAD_DATA`` that names a path which does not exist at all
is skipped, so one command line (``MINIGRAD_DATA=../shared/mnist python -m
minigrad.train_mnist``) works both on a machine that has that local copy and
on one that downloads into the cache.

Verification: every file whose name is one of the canonical MNIST names has a
published size and SHA-256 (``_KNOWN``) and is checked against it.  For
explicit sources this can be switched off with ``verify=False`` (e.g. for
Fashion-MNIST, which uses the same names and format, or for small test files).
Files from the cache, the Keras cache and downloads are *always* verified, and
downloads are verified before they are moved into place.  Independently of
checksums, every file is parsed strictly (header, sizes, dtype, label range)
with memory bounded by the real MNIST sizes, and ``.npz`` files are never
unpickled.
"""

import gzip
import hashlib
import http.client
import os
import struct
import sys
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from . import _fetch
from ..saving import NpzReader
from ._fetch import ChecksumMismatchError, DatasetFormatError, DatasetUnavailableError
from .._files import open_regular

__all__ = [
    "load_data",
    "DatasetUnavailableError",
    "DatasetFormatError",
    "ChecksumMismatchError",
]


# Mirrors of the original IDX files, tried in order (the same ones torchvision
# and TFDS use).  Module-level so tests can point them at file:// URLs.
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
# Replaceable in tests; called as _urlopen(url, timeout=...).
_urlopen = urllib.request.urlopen
_CHUNK = _fetch.CHUNK

# (images, labels, largest count allowed) per split.  The counts are those of
# the real files; they bound every allocation made while parsing.
_SPLITS = (
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
)
_IDX_NAMES = [name for split in _SPLITS for name in split[:2]]
_GZ_NAMES = [name + ".gz" for name in _IDX_NAMES]
_NPZ_NAME = "mnist.npz"
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_ROWS = _COLS = 28

# Published size and SHA-256 of every canonical file name.  The IDX values are
# the ones in shared/mnist/SOURCE.md (they equal those of torchvision, TFDS and
# Keras); mnist.npz is the file Keras downloads (keras.datasets.mnist).
_KNOWN = {
    "train-images-idx3-ubyte.gz": (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train-labels-idx1-ubyte.gz": (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "t10k-images-idx3-ubyte.gz": (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "t10k-labels-idx1-ubyte.gz": (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    "train-images-idx3-ubyte": (47040016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": (60008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": (7840016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": (10008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    "mnist.npz": (11490434, "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"),
}

_EXPECTED = (
    "the four IDX files " + ", ".join(_GZ_NAMES)
    + " (uncompressed copies without .gz also work) or a Keras-style mnist.npz"
)


def load_data(path=None, *, verify=True):
    """Load MNIST as ``(x_train, y_train), (x_test, y_test)``, like Keras.

    Returns uint8 arrays of shapes (60000, 28, 28), (60000,), (10000, 28, 28)
    and (10000,); labels are 0..9.

    Args:
        path: a directory holding the IDX files (train-images-idx3-ubyte.gz,
            train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
            t10k-labels-idx1-ubyte.gz, or the same without .gz) or mnist.npz,
            or the path of an .npz file (keys x_train, y_train, x_test,
            y_test; other keys are ignored and never loaded).  A bare file
            name that does not exist in the working directory is looked up in
            the cache directories, as in Keras; Keras' default
            ``path="mnist.npz"`` therefore behaves like ``path=None``.
            If ``path`` (or ``MINIGRAD_DATA``) is given but holds no usable
            files, FileNotFoundError is raised; nothing is downloaded.
        verify: check files with canonical MNIST names against the published
            SHA-256.  Only ``False`` for data given via ``path`` or
            ``MINIGRAD_DATA`` (same-format data such as Fashion-MNIST, or test
            files); the cache and downloads are always verified.

    Raises:
        FileNotFoundError: ``path``/``MINIGRAD_DATA`` holds no usable files.
        DatasetUnavailableError (an OSError): no data anywhere and the
            download failed (e.g. offline).
        DatasetFormatError (a ValueError): a file is truncated, corrupted or
            malformed; ChecksumMismatchError (a subclass) if a canonical file
            does not match its published SHA-256.

    Example (uses MINIGRAD_DATA, the cache, or downloads ~11 MB once):

    >>> from minigrad.datasets import mnist
    >>> (x_train, y_train), (x_test, y_test) = mnist.load_data()
    >>> x_train.shape, x_train.dtype, x_test.shape
    ((60000, 28, 28), dtype('uint8'), (10000, 28, 28))
    >>> y_train[:10].tolist()
    [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    >>> x = x_train.reshape(-1, 784).astype("float32") / 255.0
    """
    if path is not None:
        given = Path(os.fspath(path)).expanduser()
        if given.exists() or len(given.parts) != 1:
            return _load_explicit(given, "the path argument", verify)
        # A bare file name that is not in the working directory: Keras
        # resolves it in its cache directory, so do the same.
        if given.name != _NPZ_NAME:
            searched = [Path.cwd() / given, _fetch.cache_dir() / given, _fetch.keras_dir() / given]
            for candidate in searched[1:]:
                if candidate.is_file():
                    return _load_file(candidate, verify=True)
            raise FileNotFoundError(
                f"MNIST file {str(given)!r} not found; searched "
                + ", ".join(map(str, searched)) + f". Expected {_EXPECTED}."
            )
        # path="mnist.npz" is Keras' default argument: same as no argument.

    env = os.environ.get("MINIGRAD_DATA")
    if env and Path(env).expanduser().exists():
        return _load_explicit(Path(env).expanduser(), "MINIGRAD_DATA", verify)

    cache = _fetch.cache_dir()
    found = _find(cache)
    if found is not None:
        return _load_file(found, verify=True)
    keras_npz = _fetch.keras_dir() / _NPZ_NAME
    if keras_npz.is_file():
        return _load_file(keras_npz, verify=True)
    _download_missing(cache)
    return _load_file(_find(cache), verify=True)


# --------------------------------------------------------------------------
# Locating files


def _find(directory):
    """A complete set in `directory`: {idx name: path} or an .npz path, else None.

    The IDX files win over mnist.npz because their checksums are published.
    """
    files = {}
    for name in _IDX_NAMES:
        for candidate in (directory / (name + ".gz"), directory / name):
            if candidate.is_file():
                files[name] = candidate
                break
    if len(files) == len(_IDX_NAMES):
        return files
    npz = directory / _NPZ_NAME
    return npz if npz.is_file() else None


def _load_explicit(location, origin, verify):
    if location.is_file() and location.suffix == ".npz":
        return _load_npz(location, verify)
    found = _find(location) if location.is_dir() else None
    if found is None:
        raise FileNotFoundError(
            f"No usable MNIST files at {str(location)!r} (from {origin}): expected "
            f"a directory holding {_EXPECTED}, or the path of an .npz file. "
            "Nothing is downloaded for an explicit location; without one, the "
            f"cache ({_fetch.cache_dir()}) and automatic download are used."
        )
    return _load_file(found, verify)


def _load_file(found, verify):
    if isinstance(found, dict):
        return _load_idx(found, verify)
    return _load_npz(found, verify)


# --------------------------------------------------------------------------
# Verification


def _sha256_file(path):
    digest = hashlib.sha256()
    with open_regular(path, str(path), DatasetFormatError) as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path):
    """Check a canonical file name against its published size and SHA-256."""
    known = _KNOWN.get(path.name)
    if known is None:  # not a canonical name: structural checks only
        return
    size, sha256 = known
    _fetch.verify_file(path, sha256, size=size, dataset="MNIST", override="path= or MINIGRAD_DATA")


# --------------------------------------------------------------------------
# IDX parsing


def _load_idx(files, verify):
    result = []
    for image_name, label_name, max_count in _SPLITS:
        x = _read_idx(files[image_name], 3, max_count, verify)
        y = _read_idx(files[label_name], 1, max_count, verify)
        if len(x) != len(y):
            raise DatasetFormatError(
                f"{files[image_name]} holds {len(x)} images but "
                f"{files[label_name]} holds {len(y)} labels; the files do not "
                "belong together. Replace them with a matching pair."
            )
        _check_labels(y, files[label_name])
        result.append((x, y))
    return tuple(result)


def _read_idx(path, ndim, max_count, verify):
    """Parse one IDX file (gzip-compressed if the name ends in .gz) strictly.

    IDX header: two zero bytes, a dtype code (0x08 = uint8), the number of
    dimensions, then one big-endian uint32 per dimension.
    """
    if verify:
        _verify(path)
    fix = "Delete or replace it with a good copy of the MNIST file."
    try:
        raw = open_regular(path, str(path), DatasetFormatError)  # never a device or a FIFO
        with raw, (gzip.open(raw, "rb") if path.name.endswith(".gz") else raw) as f:
            magic = f.read(4)
            if len(magic) < 4:
                raise DatasetFormatError(f"{path}: truncated IDX header. {fix}")
            if magic[:2] != b"\0\0":
                raise DatasetFormatError(f"{path}: not an IDX file (bad magic number {magic.hex()}). {fix}")
            if magic[2] != 0x08:
                raise DatasetFormatError(
                    f"{path}: IDX dtype code is 0x{magic[2]:02x}, expected 0x08 (uint8). {fix}")
            if magic[3] != ndim:
                raise DatasetFormatError(
                    f"{path}: IDX file has {magic[3]} dimensions, expected {ndim} "
                    f"(magic 0x0000080{ndim}); images and labels mixed up? {fix}")
            header = f.read(4 * ndim)
            if len(header) < 4 * ndim:
                raise DatasetFormatError(f"{path}: truncated IDX header. {fix}")
            dims = struct.unpack(f">{ndim}I", header)
            # Check the declared sizes before reading anything, so a forged
            # header cannot make us allocate or decompress more than the real
            # MNIST files need.
            if dims[0] > max_count or dims[1:] not in ((), (_ROWS, _COLS)):
                raise DatasetFormatError(
                    f"{path}: IDX header declares shape {dims}; expected at most "
                    f"{max_count} items" + (f" of {_ROWS}x{_COLS} pixels" if ndim == 3 else "")
                    + f". {fix}")
            nbytes = int(np.prod(dims))
            # Read at most one byte more than declared: detects trailing data
            # and bounds decompression (gzip bombs).  Growing the buffer chunk
            # by chunk keeps memory proportional to the data actually present.
            data = bytearray()
            while len(data) <= nbytes:
                chunk = f.read(min(_CHUNK, nbytes + 1 - len(data)))
                if not chunk:
                    break
                data += chunk
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DatasetFormatError(f"{path}: cannot be read or decompressed ({e}). {fix}") from e
    if len(data) < nbytes:
        raise DatasetFormatError(
            f"{path}: truncated: header declares {nbytes} data bytes, file has {len(data)}. {fix}")
    if len(data) > nbytes:
        raise DatasetFormatError(f"{path}: more data than its header declares. {fix}")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _check_labels(y, path):
    if y.size and int(y.max()) > 9:
        raise DatasetFormatError(
            f"{path}: label value {int(y.max())} found, MNIST labels are 0..9. "
            "Delete or replace the file.")


# --------------------------------------------------------------------------
# .npz (Keras format)


def _load_npz(path, verify):
    """Load a Keras-style mnist.npz through minigrad.saving's reader (never unpickling).

    The .npy headers are inspected first, so a forged header cannot make it
    allocate what the file does not hold. Keys other than the four expected ones
    are ignored and never loaded.
    """
    if verify:
        _verify(path)
    fix = f"Delete or replace it; expected keys {', '.join(_NPZ_KEYS)} holding uint8 MNIST arrays."
    try:
        with NpzReader(path, str(path)) as archive:
            missing = [k for k in _NPZ_KEYS if k not in archive.members]
            if missing:
                raise DatasetFormatError(f"{path}: missing key(s) {', '.join(missing)}. {fix}")
            headers = {k: archive.header(k) for k in _NPZ_KEYS}
            for split, (_, _, max_count) in zip(("train", "test"), _SPLITS):
                x_shape, _, x_dtype = headers["x_" + split]
                y_shape, _, y_dtype = headers["y_" + split]
                for key, dtype in (("x_" + split, x_dtype), ("y_" + split, y_dtype)):
                    if dtype != np.uint8:  # also refuses object (pickled) arrays
                        raise DatasetFormatError(f"{path}: {key} has dtype {dtype}, expected uint8. {fix}")
                if (len(x_shape) != 3 or x_shape[1:] != (_ROWS, _COLS) or x_shape[0] > max_count
                        or y_shape != x_shape[:1]):
                    raise DatasetFormatError(
                        f"{path}: x_{split} has shape {x_shape} and y_{split} {y_shape}; expected "
                        f"(n, {_ROWS}, {_COLS}) and (n,) with n <= {max_count}. {fix}")
            arrays = {k: archive.read_numeric(k) for k in _NPZ_KEYS}
    except DatasetFormatError:
        raise
    except ValueError as e:
        raise DatasetFormatError(f"{path}: not a readable .npz file ({e}). {fix}") from e
    _check_labels(arrays["y_train"], path)
    _check_labels(arrays["y_test"], path)
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])

def _download_missing(cache):
    _fetch.make_cache_dir(cache)
    for name in _IDX_NAMES:
        if (cache / (name + ".gz")).is_file() or (cache / name).is_file():
            continue  # present; verified when loaded
        filename = name + ".gz"
        size, sha256 = _KNOWN[filename]
        errors = []
        for mirror in MIRRORS:
            url = mirror + filename
            try:
                print(f"minigrad: downloading {url}", file=sys.stderr)
                _fetch.download(url, cache / filename, sha256, size, opener=_urlopen)
                break
            except (OSError, ValueError, http.client.HTTPException) as e:
                # OSError covers URLError, HTTPError and timeouts; ValueError a
                # bad checksum or size.  Try the next mirror.
                errors.append(f"  {url}: {e}")
        else:
            raise DatasetUnavailableError(
                f"MNIST is not available locally and {filename} could not be "
                "downloaded:\n" + "\n".join(errors or ["  (no mirrors configured)"])
                + f"\nTo use MNIST offline, put {_EXPECTED} into the cache directory "
                f"{cache}, or into any directory and set MINIGRAD_DATA to it "
                "(or pass path=...)."
            )
