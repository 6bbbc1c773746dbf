"""Model and data files: one safe .npz reader and an atomic writer.

Every file minigrad reads (weights, whole models, data sets) is an .npz archive
read member by member through zipfile: a member's .npy header (shape, dtype) is
parsed first, so shapes can be checked before a byte of data is read, and data
is read in chunks, so memory follows the bytes really present, never a size a
forged header declares. Nothing is ever unpickled, except Keras' data sets'
object arrays of int lists, which go through ``RestrictedUnpickler``: it
resolves only the three NumPy globals such a pickle names (to stand-ins that
call nothing) and refuses every other. Files that are not regular files
(``/dev/zero``, a FIFO) are refused before reading.

>>> import os, tempfile, numpy as np
>>> path = os.path.join(tempfile.mkdtemp(), "w.npz")
>>> write_npz(path, {"layer0/kernel": np.ones((2, 3), np.float32)})
>>> with NpzReader(path, "example") as archive:
...     archive.keys, archive.header("layer0/kernel")[0], float(archive.read_float32("layer0/kernel").sum())
(['layer0/kernel'], (2, 3), 6.0)
"""
import io
import math
import os
import pickle
import tempfile
import zipfile
import zlib

import numpy as np

from ._files import open_regular

_F32 = np.dtype(np.float32)
CONFIG_KEY = "model_config.json"  # model.save: the architecture, as JSON bytes
OPT_PREFIX = "optimizer/"
OPT_ITERATIONS = "optimizer/iterations"
_FLOAT_SIZES = (2, 4, 8)  # float16, float32, float64


def _umask():
    """The process umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_float_header(where, archive, key, shape, what):
    shape_got, _, dtype = archive.header(key)
    if shape_got != tuple(shape):
        raise ValueError(f"{where}: the file holds weights of a different architecture: expected "
                         f"{key} {what}{' ' if what else ''}of shape {tuple(shape)}, received "
                         f"shape {shape_got} and dtype {dtype}")
    if dtype.kind != "f" or dtype.itemsize not in _FLOAT_SIZES or dtype.hasobject:
        raise ValueError(f"{where}: expected {key} to hold floats (float16/32/64, cast to "
                         f"float32), received dtype {dtype}")


class NpzReader:
    """An .npz archive read member by member through zipfile, never unpickling.

    ``header(key)`` parses only the .npy header (shape, order, dtype), so shapes can
    be checked before a byte of data is read or allocated; ``read_*`` reads exactly
    the bytes the header declares and rejects short or trailing data.
    """
    _ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError,
               RuntimeError, NotImplementedError, zlib.error, SyntaxError, TypeError)

    def __init__(self, path, where):
        self.path, self.where = path, where
        self._file = open_regular(path, where)  # /dev/zero or a FIFO would be read forever
        try:
            self.zip = zipfile.ZipFile(self._file)
        except self._ERRORS as exc:
            self._file.seek(0)
            magic = self._file.read(6)
            self._file.close()
            if magic == b"\x93NUMPY":
                raise ValueError(f"{where}: expected an .npz archive written by save_weights, "
                                 f"received a single .npy array") from None
            raise ValueError(f"{where}: not a readable .npz archive (not a zip file, or "
                             f"truncated or corrupted): {exc}") from None
        try:
            names = self.zip.namelist()
            self.members, self.keys = {}, []
            for name in names:
                if not name.endswith(".npy"):
                    raise ValueError(f"{where}: unexpected member {name!r} in the archive "
                                     f"(an .npz written by save_weights holds only .npy arrays)")
                key = name[:-4]
                if key in self.members:
                    raise ValueError(f"{where}: the archive holds {name!r} twice")
                self.members[key] = self.zip.getinfo(name)
                self.keys.append(key)
        except BaseException:
            self.zip.close()
            self._file.close()
            raise
        self._headers = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.zip.close()
        self._file.close()
        return False

    def _fail(self, key, exc):
        return ValueError(f"{self.where}: {key} is not a readable .npy array (truncated or "
                          f"corrupted file?): {type(exc).__name__}: {exc}")

    def header(self, key):
        """(shape, fortran_order, dtype) from the member's .npy header alone."""
        if key not in self._headers:
            try:
                with self.zip.open(self.members[key]) as fp:
                    shape, fortran, dtype = read_npy_header(fp)
                    self._headers[key] = (shape, fortran, dtype, fp.tell())
            except self._ERRORS as exc:
                raise self._fail(key, exc) from None
        return self._headers[key][:3]

    def _read(self, key, max_bytes=None):
        shape, fortran, dtype = self.header(key)
        if dtype.hasobject:
            raise ValueError(f"{self.where}: {key} holds Python objects (dtype {dtype}), which "
                             f"are never unpickled here")
        nbytes = math.prod(shape) * dtype.itemsize
        # The shape was checked against the model, but an unbuilt model takes its
        # input size from the file: the header must also agree with the member's size
        # (zipfile never yields more than that), and data is read in chunks, so memory
        # follows the bytes really present, never a size a forged header declares.
        held = self.members[key].file_size - self._headers[key][3]
        if nbytes != held:
            raise ValueError(f"{self.where}: {key}'s header declares shape {shape} of {dtype} "
                             f"({nbytes} bytes) but the archive member holds {held} bytes of data")
        if max_bytes is not None and nbytes > max_bytes:
            raise ValueError(f"{self.where}: {key} declares {nbytes} bytes, more than the "
                             f"{max_bytes} allowed")
        try:
            with self.zip.open(self.members[key]) as fp:
                read_npy_header(fp)
                data = read_exactly(fp, nbytes)
        except self._ERRORS as exc:
            raise self._fail(key, exc) from None
        return np.frombuffer(data, dtype=dtype, count=math.prod(shape)).reshape(
            shape, order="F" if fortran else "C")

    def read_numeric(self, key, max_bytes=None):
        """A bool, integer or float member as a writeable, C-ordered native array."""
        dtype = self.header(key)[2]
        if dtype.fields is not None or dtype.kind not in "biuf":
            raise ValueError(f"{self.where}: {key} has dtype {dtype}; expected a numeric "
                             f"(bool, integer or float) array")
        array = self._read(key, max_bytes)
        return np.array(array, dtype=array.dtype.newbyteorder("="), order="C")

    def read_int_lists(self, key, max_bytes):
        """A 1-d object array of lists of Python ints (Keras' imdb/reuters format), read
        through ``RestrictedUnpickler``; anything else raises ValueError."""
        shape, _, dtype = self.header(key)
        if dtype != np.dtype(object) or len(shape) != 1:
            raise ValueError(f"{self.where}: {key} holds a {dtype} array of shape {shape}; "
                             f"expected a 1-d object array of lists of ints")
        info = self.members[key]
        if info.file_size > max_bytes:
            raise ValueError(f"{self.where}: {key} declares {info.file_size} bytes, more than "
                             f"the {max_bytes} allowed")
        try:
            with self.zip.open(info) as fp:
                read_npy_header(fp)
                data = read_exactly(fp, info.file_size - fp.tell())
        except self._ERRORS as exc:
            raise self._fail(key, exc) from None
        array = load_int_lists(data, f"{self.where}: {key}")
        if array.shape != shape:
            raise ValueError(f"{self.where}: {key}: the .npy header declares shape {shape} but "
                             f"the data holds {len(array)} sequences")
        return array

    def read_float32(self, key):
        array = self._read(key)
        if array.dtype == _F32:
            return array
        with np.errstate(over="ignore", invalid="ignore"):
            cast = array.astype(_F32)
        if array.dtype.itemsize > 4 and not np.array_equal(np.isfinite(array), np.isfinite(cast)):
            raise ValueError(f"{self.where}: {key} holds float64 values outside the float32 range")
        return cast

    def read_iterations(self, key):
        value = int(self._read(key)[()])
        if value < 0:
            raise ValueError(f"{self.where}: expected {key} >= 0, received {value}")
        return value




def write_npz(filepath, arrays):
    """Write ``arrays`` ({key: array}) to ``filepath`` as an .npz, atomically: a temporary
    file in the same directory is written, flushed to disk and renamed over the path, so
    a reader (or a crash) never sees a half-written file."""
    directory = os.path.dirname(os.path.abspath(filepath))
    fd, tmp = tempfile.mkstemp(prefix=".tmp_weights_", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; a plain open would not
        os.replace(tmp, filepath)  # a reader never sees a half-written file
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_npy_header(fp):
    """(shape, fortran_order, dtype) of an .npy stream, never unpickling."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    if version in ((2, 0), (3, 0)):  # 3.0 differs only in allowing utf-8 names
        return np.lib.format.read_array_header_2_0(fp)
    raise ValueError(f"unsupported .npy format version {version}")


def read_exactly(fp, nbytes):
    """Exactly nbytes from fp, in chunks; short or trailing data is an error."""
    chunks, remaining = [], nbytes
    while remaining:
        chunk = fp.read(min(remaining, 1 << 22))
        if not chunk:
            raise EOFError(f"the data ends {remaining} bytes short of the {nbytes} expected")
        chunks.append(chunk)
        remaining -= len(chunk)
    if fp.read(1):  # also makes zipfile verify the member's CRC
        raise ValueError(f"more data than the {nbytes} bytes expected")
    return b"".join(chunks)


# --------------------------------------------------------------------------
# The restricted unpickler


class _NdarrayType:
    """Stands for ``numpy.ndarray`` inside the pickle; deliberately not callable,
    so a pickle cannot allocate an array of a size it chooses."""


_NDARRAY = _NdarrayType()


class _DtypeProxy:
    """What ``numpy.dtype(...)`` yields inside the pickle: the arguments, recorded.

    No real dtype is created (``dtype.__setstate__`` would otherwise run on
    data from the file); only an object dtype is accepted.
    """

    def __init__(self, spec, align=False, copy=False):
        if not isinstance(spec, str) or spec not in ("O", "O8", "O4", "|O"):
            raise pickle.UnpicklingError(f"numpy.dtype({spec!r}) refused: only the object dtype is expected")

    def __setstate__(self, state):
        pass  # byte order and flags of an object dtype carry nothing to keep


class _ArrayProxy:
    """What ``_reconstruct(ndarray, ...)`` yields: filled by ``__setstate__``,
    which receives NumPy's (version, shape, dtype, fortran, data) state."""

    def __init__(self):
        self.items = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError(f"array state {_describe(state)} refused: expected a 5-tuple")
        _, shape, dtype, _, data = state
        if not isinstance(dtype, _DtypeProxy):
            raise pickle.UnpicklingError(f"array dtype {_describe(dtype)} refused: expected the object dtype")
        if not (isinstance(shape, tuple) and len(shape) == 1 and type(shape[0]) is int):
            raise pickle.UnpicklingError(f"array shape {shape!r} refused: expected (n,)")
        if type(data) is not list or len(data) != shape[0]:
            raise pickle.UnpicklingError(
                f"array data {_describe(data)} refused: expected a list of {shape[0]} sequences")
        self.items = data


def _reconstruct(subtype, shape, typecode):
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError(f"_reconstruct({_describe(subtype)}) refused: expected numpy.ndarray")
    return _ArrayProxy()


def _dtype(*args):
    return _DtypeProxy(*args)


# The only globals an object array pickle names: numpy < 2 writes
# numpy.core.multiarray, numpy >= 2 numpy._core.multiarray.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles NumPy object arrays and nothing else.

    ``find_class`` is the only way a pickle reaches a global (GLOBAL,
    STACK_GLOBAL, INST, OBJ and the copyreg EXT opcodes all go through it); it
    returns stand-ins for the three allowed names and refuses every other,
    so no function named by the file is ever called.
    """

    def find_class(self, module, name):
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"global {module}.{name} refused (only numpy array reconstruction is allowed)")
        return allowed

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"persistent id {pid!r} refused")


_INT = {int}


def load_int_lists(data, where):
    """A 1-d object array of lists of Python ints from the pickle bytes `data`.

    Raises ValueError naming `where` and what was found otherwise.
    """
    try:
        result = RestrictedUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # noqa: BLE001 - any failure on untrusted bytes means a bad file
        raise ValueError(
            f"{where}: not a pickled object array of int lists ({type(e).__name__}: {e}); "
            "the file is corrupted or was not written as a data set file. Refusing to load it."
        ) from None
    if not isinstance(result, _ArrayProxy) or result.items is None:
        raise ValueError(
            f"{where}: expected a pickled 1-d object array of lists of ints, found "
            f"{_describe(result)}. Refusing to load it.")
    items = result.items
    out = np.empty(len(items), dtype=object)
    # Memo references let a small pickle repeat one long list many times;
    # bounding the total by the stream length keeps the work linear in the
    # file (every int in a pickle takes at least 2 bytes).
    budget = len(data)
    for i, row in enumerate(items):
        if type(row) is not list:
            raise ValueError(
                f"{where}: element {i} is {_describe(row)}; expected a list of ints.")
        budget -= len(row)
        if budget < 0:
            raise ValueError(
                f"{where}: the sequences hold more ints than the {len(data)}-byte pickle can "
                "encode (repeated references); refusing to expand them.")
        if set(map(type, row)) - _INT:  # a set of types: several times faster than a loop
            bad = next(v for v in row if type(v) is not int)
            raise ValueError(
                f"{where}: element {i} holds {_describe(bad)}; expected a list of Python ints.")
        out[i] = list(row)  # a copy: repeated references must not alias
    return out


def _describe(obj):
    text = repr(obj)
    return f"{type(obj).__name__} {text[:60] + '...' if len(text) > 60 else text}"
