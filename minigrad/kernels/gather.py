"""Row gathers: a shuffled mini-batch copied in C (part of ``minigrad.kernels``)."""
import functools
import math

import numpy as np

from . import (I64, _allocate, _check_status, _describe, _output, _run,
               _tape_local, _usable_in_place, ffi, lib, plain_array, tape)


def gather_rows(src, idx, out=None):
    """out[i] = src[idx[i]]: rows of any dtype without Python objects (fit's shuffled batch).

    Like ``np.take(src, idx, axis=0)`` (or ``torch.index_select``), with the rows
    copied on all threads. Indices must lie in [0, len(src)): negative ones are
    refused, as in PyTorch. ``out`` gets src's dtype and shape (len(idx),) + src.shape[1:].

    >>> import numpy as np
    >>> gather_rows(np.arange(6, dtype=np.float32).reshape(3, 2), np.array([2, 0])).tolist()
    [[4.0, 5.0], [0.0, 1.0]]
    """
    op = "gather_rows"
    src = plain_array(op, "src", src)
    if not isinstance(src, np.ndarray) or src.ndim < 1:
        raise TypeError(f"{op}: expected src to be a numpy array with at least 1 dimension, "
                        f"received {_describe(src)}")
    if src.dtype.hasobject:  # copying object pointers as bytes would corrupt reference counts
        raise TypeError(f"{op}: expected src of a numeric dtype, received {src.dtype}")
    if isinstance(idx, np.ma.MaskedArray):  # min/max would skip masked entries the copy reads
        raise TypeError(f"{op}: expected idx to be a plain 1-d integer array, received a masked array")
    idx = plain_array(op, "idx", idx)
    if not isinstance(idx, np.ndarray) or idx.dtype.kind not in "iu" or idx.ndim != 1:
        got = f"{idx.ndim}-d {idx.dtype} array" if isinstance(idx, np.ndarray) else _describe(idx)
        raise TypeError(f"{op}: expected idx to be a 1-d integer array, received {got}")
    rows = src.shape[0]
    _check_indices(op, idx, rows)  # before the int64 copy, which would wrap a huge uint64
    # always a private copy, checked again: C checks the indices, then reads them
    # again while copying, and another thread may have changed the caller's array
    given_idx, idx = idx, tape.copy(idx, I64)
    _check_indices(op, idx, rows)
    shape = (idx.size,) + src.shape[1:]
    out = _output(op, "out", out, shape, (("src", src), ("idx", given_idx)), dtype=src.dtype)
    if not _usable_in_place(src):
        # a strided or broadcast view: indexing reads only the rows asked for
        # (np.take would first copy all of src)
        out[...] = src[idx]
        recording = getattr(_tape_local, "tape", None)
        if recording is not None:  # NumPy would wrap a negative index: check on replay
            recording.add(_check_indices, (op, idx, rows))
            recording.add(_take_rows, (src, idx, out), (out,))
        return out
    row_bytes = src.itemsize * math.prod(src.shape[1:])
    _run(op, lib.mg_gather_rows, (ffi.from_buffer(src), rows, row_bytes,
                                  ffi.from_buffer("int64_t[]", idx), idx.size, ffi.from_buffer(out)),
         (out,), functools.partial(_check_indices, op, idx, rows))
    return out


def _check_indices(op, idx, rows):
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= rows:
            raise ValueError(f"{op}: expected indices in [0, {rows}), received {lo if lo < 0 else hi}")


def _take_rows(src, idx, out):
    out[...] = src[idx]


# ---------------------------------------------------------------- fit's batches

class RowGather:
    """Rows of one array gathered into a buffer reused for every batch: fit's
    shuffled mini-batches. src is checked once, each epoch's order once, and a
    batch is one C call (``gather_rows`` is the one-off form).

    >>> import numpy as np
    >>> g = RowGather(np.arange(8, dtype=np.float32).reshape(4, 2), max_rows=2)
    >>> g.set_order(np.array([3, 1, 0, 2]))
    >>> g.take(0, 2).tolist()
    [[6.0, 7.0], [2.0, 3.0]]
    """

    def __init__(self, src, max_rows):
        op = "gather_rows"
        src = plain_array(op, "src", src)
        if not isinstance(src, np.ndarray) or src.ndim < 1 or src.dtype.hasobject:
            raise TypeError(f"{op}: expected src to be a numeric array with at least 1 dimension, "
                            f"received {_describe(src)}")
        if not _usable_in_place(src):
            raise ValueError(f"{op}: expected a C-contiguous, aligned src (it is read in place "
                             f"for every batch), received a strided or misaligned array")
        if isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer)) or max_rows < 1:
            raise ValueError(f"{op}: expected max_rows to be a positive integer, received {max_rows!r}")
        self._src, self._rows = src, src.shape[0]
        self._row_bytes = src.itemsize * math.prod(src.shape[1:])
        self.buffer = _allocate(op, "a batch buffer", (int(max_rows),) + src.shape[1:], src.dtype)
        self._src_ptr, self._buf_ptr = ffi.from_buffer(src), ffi.from_buffer(self.buffer)
        self._order = None
        self._views = {}

    def set_order(self, order):
        """The sample order of the next batches: a 1-d array of row indices."""
        op = "gather_rows"
        if isinstance(order, np.ma.MaskedArray):  # min/max would skip masked entries
            raise TypeError(f"{op}: expected the order to be a plain 1-d integer array, "
                            f"received a masked array")
        order = plain_array(op, "the order", order)
        if not isinstance(order, np.ndarray) or order.ndim != 1 or order.dtype.kind not in "iu":
            raise TypeError(f"{op}: expected the order to be a 1-d integer array, "
                            f"received {_describe(order)}")
        _check_indices(op, order, self._rows)
        order = np.array(order, dtype=I64)  # private: C checks it, then reads it again
        _check_indices(op, order, self._rows)  # the caller's array may have changed meanwhile
        self._order, self._order_ptr = order, ffi.cast("int64_t *", ffi.from_buffer(order))

    def take(self, start, stop):
        """Rows order[start:stop] of src, in the buffer's leading rows (a view)."""
        for bound in (start, stop):
            if isinstance(bound, (bool, np.bool_)) or not isinstance(bound, (int, np.integer)):
                raise TypeError(f"gather_rows: expected integer batch bounds, received "
                                f"{type(bound).__name__}")
        if self._order is None:
            raise ValueError("gather_rows: expected set_order() before take()")
        start, stop = int(start), int(stop)
        count, available = stop - start, len(self._order)
        if not 0 <= start <= stop <= available or count > len(self.buffer):
            raise ValueError(f"gather_rows: expected 0 <= start <= stop <= {available} and at most "
                             f"{len(self.buffer)} rows, received [{start}, {stop})")
        _check_status("gather_rows", lib.mg_gather_rows(self._src_ptr, self._rows, self._row_bytes,
                                                        self._order_ptr + start, count, self._buf_ptr))
        view = self._views.get(count)
        if view is None:  # the same view object for the same count: mg.jit can borrow it
            view = self._views[count] = self.buffer[:count]
        return view


