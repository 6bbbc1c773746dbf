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

from .. import saving
from ..saving import NpzReader, RestrictedUnpickler  # noqa: F401  (re-exported)
from ._fetch import DatasetFormatError

KINDS = ("int_lists", "numeric")


def read_npz(path, expected, *, max_bytes, where):
    """Read the members named in `expected` ({key: kind}) from the .npz at `path`,
    through ``minigrad.saving.NpzReader`` (the one safe reader of every file).

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
        with NpzReader(path, f"{where}: {path}") as archive:
            missing = [k for k in expected if k not in archive.members]
            if missing:
                raise DatasetFormatError(
                    f"{where}: {path} lacks the key(s) {', '.join(missing)}; expected keys "
                    f"{', '.join(expected)}, found {', '.join(sorted(archive.keys)) or 'none'}. {fix}")
            arrays = {}
            for key, kind in expected.items():
                if kind == "int_lists":
                    arrays[key] = archive.read_int_lists(key, max_bytes)
                else:
                    arrays[key] = archive.read_numeric(key, max_bytes)
            return arrays
    except DatasetFormatError:
        raise
    except ValueError as exc:
        raise DatasetFormatError(f"{exc}. {fix}") from None


def load_int_lists(data, where):
    """``saving.load_int_lists``, failing with DatasetFormatError."""
    try:
        return saving.load_int_lists(data, where)
    except ValueError as exc:
        raise DatasetFormatError(str(exc)) from None
