"""Reading data set .npz archives safely: bounded memory, no arbitrary unpickling.

An .npz is a zip of .npy members.  Each member read here is first checked
through its zip entry and its .npy header, so a forged size cannot make the
reader allocate more than ``max_bytes``:

- ``"numeric"`` members (bool, integer or float dtypes) are read as exactly the
  bytes their header declares, with ``allow_pickle`` never involved;
- ``"int_lists"`` members are 1-d object arrays of lists of Python ints, the
  format of Keras' imdb.npz and reuters.npz.  NumPy stores object arrays as a
  pickle, so they are read with :class:`RestrictedUnpickler`, which resolves
  only the three globals such a pickle names and builds the array itself;
  every other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``,
  ...) is refused before anything is called.

Members not asked for are never read.

>>> import io, tempfile, numpy as np
>>> from pathlib import Path
>>> seqs = np.empty(2, dtype=object); seqs[0] = [1, 14, 22]; seqs[1] = [1, 5]
>>> path = Path(tempfile.mkdtemp()) / "tiny.npz"
>>> np.savez(path, x=seqs, y=np.array([0, 1]))
>>> data = read_npz(path, {"x": "int_lists", "y": "numeric"}, max_bytes=1 << 20, where="example")
>>> data["x"].tolist(), data["y"].tolist()
([[1, 14, 22], [1, 5]], [0, 1])
"""

import io
import math
import pickle
import zipfile
import zlib

import numpy as np

from ._fetch import DatasetFormatError

KINDS = ("int_lists", "numeric")
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, RuntimeError,
               NotImplementedError, zlib.error, ValueError, SyntaxError, TypeError)


def read_npz(path, expected, *, max_bytes, where):
    """Read the members named in `expected` ({key: kind}) from the .npz at `path`.

    max_bytes: the largest uncompressed member accepted (a bound above the
        real file's members).
    where: the calling function, named in every error.

    Returns {key: array}; raises DatasetFormatError (a ValueError) naming the
    file, the member and what was found.
    """
    for key, kind in expected.items():
        if kind not in KINDS:
            raise ValueError(f"read_npz: kind of {key!r} must be one of {KINDS}, received {kind!r}")
    fix = "Delete or replace the file with a good copy."
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as e:
        raise DatasetFormatError(f"{where}: {path} is not a readable .npz file ({e}). {fix}") from e
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        missing = [k for k in expected if k + ".npy" not in members]
        if missing:
            raise DatasetFormatError(
                f"{where}: {path} lacks the key(s) {', '.join(missing)}; expected keys "
                f"{', '.join(expected)}, found {', '.join(sorted(k[:-4] for k in members if k.endswith('.npy'))) or 'none'}. {fix}")
        arrays = {}
        for key, kind in expected.items():
            info = members[key + ".npy"]
            label = f"{where}: {path}: {key}"
            if info.file_size > max_bytes:
                raise DatasetFormatError(
                    f"{label} declares {info.file_size} bytes, more than the {max_bytes} "
                    f"allowed for this data set. {fix}")
            try:
                arrays[key] = _read_member(archive, info, kind, label, fix)
            except DatasetFormatError:
                raise
            except _ZIP_ERRORS as e:
                raise DatasetFormatError(f"{label} is not a readable .npy member ({e}). {fix}") from e
    return arrays


def _read_member(archive, info, kind, label, fix):
    with archive.open(info) as fp:
        shape, fortran, dtype = _read_header(fp)
        held = info.file_size - fp.tell()
        if kind == "int_lists":
            if dtype != np.dtype(object) or len(shape) != 1:
                raise DatasetFormatError(
                    f"{label} holds a {dtype} array of shape {shape}; expected a 1-d object "
                    f"array of lists of ints. {fix}")
            array = load_int_lists(_read_exactly(fp, held), label)
            if array.shape != shape:
                raise DatasetFormatError(
                    f"{label}: the .npy header declares shape {shape} but the data holds "
                    f"{len(array)} sequences. {fix}")
            return array
        if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biuf":
            raise DatasetFormatError(
                f"{label} has dtype {dtype}; expected a numeric (bool, integer or float) "
                f"array. {fix}")
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        # The header must agree with the member's size (zipfile never yields
        # more than that), so memory follows the bytes really present.
        if nbytes != held:
            raise DatasetFormatError(
                f"{label}: the .npy header declares shape {shape} of {dtype} ({nbytes} bytes) "
                f"but the member holds {held} bytes of data. {fix}")
        data = _read_exactly(fp, held)
    array = np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")
    return np.array(array, dtype=dtype.newbyteorder("="), order="C")  # writeable, native order


def _read_header(fp):
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    if version in ((2, 0), (3, 0)):  # 3.0 differs from 2.0 only in allowing utf-8 names
        return np.lib.format.read_array_header_2_0(fp)
    raise ValueError(f"unsupported .npy format version {version}")


def _read_exactly(fp, nbytes):
    chunks, remaining = [], nbytes
    while remaining:
        chunk = fp.read(min(remaining, 1 << 22))
        if not chunk:
            raise EOFError(f"the data ends {remaining} bytes short of the {nbytes} expected")
        chunks.append(chunk)
        remaining -= len(chunk)
    if fp.read(1):  # also makes zipfile check the member's CRC
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

    Raises DatasetFormatError naming `where` and what was found otherwise.
    """
    try:
        result = RestrictedUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # noqa: BLE001 - any failure on untrusted bytes means a bad file
        raise DatasetFormatError(
            f"{where}: not a pickled object array of int lists ({type(e).__name__}: {e}); "
            "the file is corrupted or was not written as a data set file. Refusing to load it."
        ) from None
    if not isinstance(result, _ArrayProxy) or result.items is None:
        raise DatasetFormatError(
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
            raise DatasetFormatError(
                f"{where}: element {i} is {_describe(row)}; expected a list of ints.")
        budget -= len(row)
        if budget < 0:
            raise DatasetFormatError(
                f"{where}: the sequences hold more ints than the {len(data)}-byte pickle can "
                "encode (repeated references); refusing to expand them.")
        if set(map(type, row)) - _INT:  # a set of types: several times faster than a loop
            bad = next(v for v in row if type(v) is not int)
            raise DatasetFormatError(
                f"{where}: element {i} holds {_describe(bad)}; expected a list of Python ints.")
        out[i] = list(row)  # a copy: repeated references must not alias
    return out


def _describe(obj):
    text = repr(obj)
    return f"{type(obj).__name__} {text[:60] + '...' if len(text) > 60 else text}"
