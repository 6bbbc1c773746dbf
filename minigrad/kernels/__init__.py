"""The only door to the C kernels.

Every function validates its arrays (dtype, C-contiguity, shapes, aliasing)
before calling C, and raises TypeError/ValueError naming the op, what it
expected and what it received. A non-contiguous *input* is copied; an *output*
must be a writeable, C-contiguous float32 array of the right shape, since the
kernel writes into it in place. ``minigrad.reference`` holds a NumPy twin of each
function with the same name and signature.

>>> import numpy as np
>>> from minigrad import kernels
>>> kernels.gemm(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)).tolist()[0]
[3.0, 3.0, 3.0, 3.0]
"""
import math
import numbers
import operator
import os

import numpy as np

from . import tape
from .tape import _local as _tape_local

# libgomp reads its wait policy once, when it initialises (as minigrad._C loads),
# so it is chosen here, before the import, unless the user chose one. Its default
# lets an idle worker spin for 300000 pause loops (milliseconds on recent CPUs)
# after each parallel region, CPU time another process may need. A third of that
# still covers the gaps between the back-to-back regions of a training step (a
# spin of 10000 made an idle MLP epoch ~10% slower: workers slept between
# regions and had to be woken), then the worker sleeps.
# The variable is removed again after the import, so child processes see the
# environment the user gave.
_SPIN_SET = "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ
if _SPIN_SET:
    os.environ["GOMP_SPINCOUNT"] = "100000"
try:
    from .._C import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on how minigrad was installed
    raise ImportError(
        "minigrad's C extension (minigrad._C) is not built. Install minigrad with "
        "`pip install .` (or `pip install -e .`) from the repository root, which "
        "compiles csrc/ with cffi; a C compiler is required. "
        f"Original error: {exc}") from exc
finally:
    if _SPIN_SET:
        os.environ.pop("GOMP_SPINCOUNT", None)

F32 = np.dtype(np.float32)
I64 = np.dtype(np.int64)
_FLT_MIN = float(np.finfo(np.float32).tiny)
_FLT_MAX = float(np.finfo(np.float32).max)
_ERRORS = {lib.MG_EINVAL: "invalid size or leading dimension",
           lib.MG_ENOMEM: "out of memory",
           lib.MG_ELABEL: "a class index is outside [0, number of classes)"}


def _check_status(op, status):
    if status != lib.MG_OK:
        if status == lib.MG_ENOMEM:
            raise MemoryError(f"{op}: the C kernel could not allocate its work buffer")
        raise ValueError(f"{op}: the C kernel rejected its arguments "
                         f"({_ERRORS.get(status, f'code {status}')})")


def _run(op, cfunc, args, outputs=()):
    """cfunc(*args), its status checked; recorded when a Tape is active (see tape.py).
    args must already point at validated arrays that outlive the call."""
    status = cfunc(*args)
    if status != lib.MG_OK:
        _check_status(op, status)
    recording = getattr(_tape_local, "tape", None)
    if recording is not None:
        recording.add_c(cfunc, args, outputs)


def _describe(x):
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__}"


def _usable_in_place(x):
    """C can read/write x directly: C-contiguous and aligned for its dtype (an
    unaligned float load is undefined behaviour in C, even where x86 tolerates it)."""
    return x.flags.c_contiguous and x.flags.aligned


def _input(op, name, x, ndim):
    """A float32 C-contiguous, aligned view of `x` (copied only if it is not one)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{op}: expected {name} to be a numpy float32 array, received {_describe(x)}")
    if x.dtype != F32:
        raise TypeError(f"{op}: expected {name} of dtype float32, received {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{op}: expected {name} with {ndim} dimension(s), "
                         f"received shape {x.shape}")
    if not _usable_in_place(x):
        try:
            x = tape.copy(x, F32)  # a fresh array is always aligned (recorded when capturing)
        except (MemoryError, ValueError) as exc:
            raise MemoryError(f"{op}: cannot copy {name} of shape {x.shape} into a contiguous "
                              f"array ({x.size * 4:,} bytes): {exc}") from None
    return x


def _output(op, name, out, shape, inputs=(), dtype=None):
    """A new array of `shape` (float32, or `dtype` for a kernel that copies any
    element type), or `out` checked to be a safe destination."""
    if out is None:
        return _allocate(op, name, shape, F32 if dtype is None else dtype)
    if not isinstance(out, np.ndarray) or out.dtype != (F32 if dtype is None else dtype):
        wanted = "a float32 array" if dtype is None else f"an array of dtype {dtype}"
        raise TypeError(f"{op}: expected {name} to be {wanted}, received {_describe(out)}")
    if out.shape != tuple(shape):
        raise ValueError(f"{op}: expected {name} of shape {tuple(shape)}, received {out.shape}")
    if not _usable_in_place(out) or not out.flags.writeable:
        problem = ("read-only" if not out.flags.writeable else
                   "non-contiguous" if not out.flags.c_contiguous else "misaligned")
        raise ValueError(f"{op}: expected {name} to be writeable, C-contiguous and aligned "
                         f"(it is written in place), received a {problem} array")
    for other_name, other in inputs:
        if other is not None and np.may_share_memory(out, other):
            raise ValueError(f"{op}: {name} must not share memory with {other_name}")
    return out


def _in_place(op, name, out, inputs=()):
    """`out` is also an input the kernel overwrites: it must be writeable and must
    not overlap the other inputs (the kernel would read values it already wrote)."""
    if not out.flags.writeable:
        raise ValueError(f"{op}: expected {name} to be writeable, received a read-only array")
    for other_name, other in inputs:
        if other is not None and other is not out and np.may_share_memory(out, other):
            raise ValueError(f"{op}: {name} is written in place, so it must not share memory "
                             f"with {other_name}")
    return out


def _labels(op, target, rows, cols):
    """Class indices as int64, checked to lie in [0, cols)."""
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: expected integer class indices (int32/int64), received {target.dtype}")
    if target.shape != (rows,):
        raise ValueError(f"{op}: expected labels of shape ({rows},), received {target.shape}")
    if rows:
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= cols:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{op}: expected class indices in [0, {cols}), received {bad}")
    if target.dtype == I64 and _usable_in_place(target):
        return target
    return tape.copy(target, I64)


def _ptr(x):
    return ffi.from_buffer("float[]", x)


# floats _scalar accepted before: a training loop passes the same few every step
_accepted_floats = set()


def _scalar(op, name, value):
    """A real hyperparameter as a float that C will round to float32 without surprise.

    A finite value that float32 cannot represent (|x| > 3.4e38 becomes inf, a
    non-zero |x| < 1.2e-38 becomes a subnormal that flush-to-zero reads as 0)
    would make C compute something the caller did not ask for, so it is refused.
    NaN and inf are passed through: IEEE arithmetic then says what happens.
    """
    if type(value) is float and value in _accepted_floats:
        return value
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: expected {name} to be a real number, "
                        f"received {type(value).__name__}")
    try:
        x = float(value)
    except OverflowError:
        x = math.inf  # an int beyond float64: certainly beyond float32
        finite = True
    else:
        finite = math.isfinite(x)
    if finite and x != 0.0:
        x32 = abs(float(np.float32(x))) if math.isfinite(x) else math.inf
        if not _FLT_MIN <= x32 <= _FLT_MAX:
            raise ValueError(f"{op}: expected {name} to be 0 or a float32-representable magnitude "
                             f"in [1.2e-38, 3.4e38], received {value!r}")
    if type(value) is float and finite:
        if len(_accepted_floats) >= 1024:
            _accepted_floats.clear()
        _accepted_floats.add(value)
    return x


def _flag(op, name, value):
    """A yes/no option: bool, int or None (no). Arrays are refused: their truth is ambiguous."""
    if value is False or value is True:  # the common case, first: gemm takes three per call
        return value
    if value is None:
        return False
    if not isinstance(value, (bool, int, np.bool_, np.integer)):
        raise TypeError(f"{op}: expected {name} to be a bool, received {type(value).__name__}")
    return bool(value)


def _allocate(op, name, shape, dtype=F32):
    try:
        return np.empty(shape, dtype=dtype)
    except (MemoryError, ValueError) as exc:
        raise MemoryError(f"{op}: cannot allocate {name} of shape {tuple(shape)} "
                          f"({math.prod(shape) * np.dtype(dtype).itemsize:,} bytes): {exc}") from None


# ---------------------------------------------------------------- threads

def set_num_threads(n):
    """Use `n` threads in every kernel (default: OMP_NUM_THREADS or the usable CPUs)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive integer, received {n!r}")
    lib.mg_set_num_threads(int(min(n, 4096)))


def get_num_threads():
    """The configured number of threads: what set_num_threads set, or the default.
    Parallel regions never use more; see effective_num_threads."""
    return lib.mg_get_num_threads()


def set_adaptive_threads(on):
    """Adapt the team to other processes' load (on by default; off when the
    environment has MINIGRAD_ADAPTIVE_THREADS=0). While other processes keep CPUs
    busy, parallel regions use fewer than get_num_threads() threads: a thread
    that shares its CPU stalls every barrier of its team. No result depends on
    the team size, so this changes speed only. Off: always get_num_threads()."""
    lib.mg_set_adaptive_threads(1 if _flag("set_adaptive_threads", "on", on) else 0)


def get_adaptive_threads():
    return bool(lib.mg_get_adaptive_threads())


def effective_num_threads():
    """The team size parallel regions use now (<= get_num_threads())."""
    return lib.mg_effective_num_threads()


def others_cpu_load():
    """CPUs that other processes used over the last sampling window (~100 ms),
    as the adaptation measured it; None before the first measurement or when
    adaptation is off or unsupported (no /proc)."""
    milli = lib.mg_adaptive_others_milli()
    return None if milli < 0 else milli / 1000.0


if os.environ.get("MINIGRAD_ADAPTIVE_THREADS", "").strip().lower() in ("0", "false", "off", "no"):
    lib.mg_set_adaptive_threads(0)


def has_openmp():
    return bool(lib.mg_has_openmp())


def gemm_kernel_name():
    """The GEMM micro-kernel this CPU runs: "avx2-fma" or "portable"."""
    return ffi.string(lib.mg_gemm_kernel_name()).decode()


def gemm_workspace_allocations():
    """How many times a GEMM packing buffer was (re)allocated, over all threads."""
    return int(lib.mg_gemm_workspace_allocations())


def set_zero_skipping(on):
    """Let gemm skip the zero entries of a mostly-zero op(a) (on by default).

    When at least 60% of op(a) is exact zeros (MNIST images are 81% zeros),
    the AVX2 GEMM multiplies only the non-zero entries. The result is the dense
    kernel's, bit for bit, except that a zero result may differ in sign and,
    where two NaNs meet, the other NaN may be kept; inf and NaN in b spread
    exactly as in the dense product (NaN in the same places). Turning it off changes
    speed only; it exists for benchmarks and tests.

    >>> from minigrad import kernels
    >>> kernels.set_zero_skipping(True); kernels.zero_skipping()
    True
    """
    if not isinstance(on, (bool, np.bool_)):
        raise TypeError(f"set_zero_skipping: expected True or False, received {on!r}")
    lib.mg_set_zero_skipping(bool(on))


def zero_skipping():
    """Whether gemm may skip the zero entries of a mostly-zero op(a)."""
    return bool(lib.mg_get_zero_skipping())


def zero_skipping_calls():
    """How many gemm calls took the zero-skipping path so far, over all threads."""
    return int(lib.mg_zero_skipping_calls())


# ---------------------------------------------------------------- gemm

def gemm(a, b, out=None, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0,
         bias=None, relu=False):
    """out = alpha * op(a) @ op(b) + beta * out [+ bias] [relu]; returns out.

    op(x) is x.T when the matching trans flag is set. `out` is required when
    beta != 0 (it is read); `bias` has one value per output column.
    """
    op = "gemm"
    trans_a, trans_b = _flag(op, "trans_a", trans_a), _flag(op, "trans_b", trans_b)
    relu = _flag(op, "relu", relu)
    given = (("a", a), ("b", b), ("bias", bias))  # as passed: an input copied below may still overlap out
    a = _input(op, "a", a, 2)
    b = _input(op, "b", b, 2)
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb:
        sa = "(K, N)" if trans_a else "(N, K)"
        sb = "(M, K)" if trans_b else "(K, M)"
        ta, tb = (".T" if trans_a else ""), (".T" if trans_b else "")
        raise ValueError(f"{op}: expected {sa}{ta} @ {sb}{tb}, received {a.shape}{ta} @ {b.shape}{tb}")
    alpha, beta = _scalar(op, "alpha", alpha), _scalar(op, "beta", beta)
    if beta != 0.0 and out is None:
        raise ValueError(f"{op}: beta={beta} reads out, so out must be given")
    if bias is not None:
        bias = _input(op, "bias", bias, 1)
        if bias.shape != (n,):
            raise ValueError(f"{op}: expected bias of shape ({n},), received {bias.shape}")
    out = _output(op, "out", out, (m, n), given + (("a", a), ("b", b), ("bias", bias)))
    _run(op, lib.mg_gemm, (trans_a, trans_b, m, n, k, alpha, _ptr(a), a.shape[1], _ptr(b), b.shape[1],
                           beta, _ptr(out), n, _ptr(bias) if bias is not None else ffi.NULL, relu),
         (out,))
    return out


# ---------------------------------------------------------------- bias

def add_bias(x, b, out=None):
    """out = x + b with b broadcast over rows; out may be x itself."""
    op = "add_bias"
    given = (("x", x), ("b", b))
    x = _input(op, "x", x, 2)
    b = _input(op, "b", b, 1)
    if b.shape != (x.shape[1],):
        raise ValueError(f"{op}: expected (N, C) + (C,), received {x.shape} + {b.shape}")
    if out is not x:
        out = _output(op, "out", out, x.shape, given + (("x", x), ("b", b)))
    else:
        _in_place(op, "out", out, given[1:] + (("b", b),))
    _run(op, lib.mg_add_bias, (_ptr(x), _ptr(b), _ptr(out), x.shape[0], x.shape[1]), (out,))
    return out


def bias_grad(dy, out=None):
    """Column sums of dy (the gradient of a bias added over rows)."""
    op = "bias_grad"
    given = (("dy", dy),)
    dy = _input(op, "dy", dy, 2)
    out = _output(op, "out", out, (dy.shape[1],), given + (("dy", dy),))
    _run(op, lib.mg_bias_grad, (_ptr(dy), _ptr(out), dy.shape[0], dy.shape[1]), (out,))
    return out


# ---------------------------------------------------------------- relu

def _same_shape(op, names, *arrays):
    if any(x.shape != arrays[0].shape for x in arrays):
        got = " and ".join(str(x.shape) for x in arrays)
        raise ValueError(f"{op}: expected {names} of the same shape, received {got}")


def _any_input(op, name, x):
    return _input(op, name, x, x.ndim if isinstance(x, np.ndarray) else 0)


def relu_forward(x, out=None):
    """out = max(x, 0); out may be x itself."""
    op = "relu_forward"
    given = (("x", x),)
    x = _any_input(op, "x", x)
    if out is not x:
        out = _output(op, "out", out, x.shape, given + (("x", x),))
    else:
        _in_place(op, "out", out)
    _run(op, lib.mg_relu_forward, (_ptr(x), _ptr(out), x.size), (out,))
    return out


def relu_backward(y, dy, out=None):
    """out = dy where y > 0 else 0, with y the forward output; out may be dy itself."""
    op = "relu_backward"
    given = (("y", y), ("dy", dy))
    y = _any_input(op, "y", y)
    dy = _any_input(op, "dy", dy)
    _same_shape(op, "y and dy", y, dy)
    if out is not dy:
        out = _output(op, "out", out, y.shape, given + (("y", y), ("dy", dy)))
    else:
        _in_place(op, "out", out, given[:1] + (("y", y),))
    _run(op, lib.mg_relu_backward, (_ptr(y), _ptr(dy), _ptr(out), y.size), (out,))
    return out


def relu_backward_bias_grad(y, dy, out=None, db_out=None):
    """(dx, db): dx = dy * (y > 0) and db = column sums of dx, in one pass."""
    op = "relu_backward_bias_grad"
    given = (("y", y), ("dy", dy))
    y = _input(op, "y", y, 2)
    dy = _input(op, "dy", dy, 2)
    _same_shape(op, "y and dy", y, dy)
    if out is not dy:
        out = _output(op, "out", out, y.shape, given + (("y", y), ("dy", dy)))
    else:
        _in_place(op, "out", out, given[:1] + (("y", y),))
    db_out = _output(op, "db_out", db_out, (y.shape[1],), given + (("y", y), ("dy", dy), ("out", out)))
    _run(op, lib.mg_relu_backward_bias_grad,
         (_ptr(y), _ptr(dy), _ptr(out), _ptr(db_out), y.shape[0], y.shape[1]), (out, db_out))
    return out, db_out


# ---------------------------------------------------------------- softmax + cross-entropy

def _logits_and_target(op, logits, target):
    logits = _input(op, "logits", logits, 2)
    rows, cols = logits.shape
    if cols == 0:
        raise ValueError(f"{op}: expected at least one class, received logits of shape {logits.shape}")
    if not isinstance(target, np.ndarray):
        raise TypeError(f"{op}: expected target to be a numpy array, received {_describe(target)}")
    if target.ndim == 1:
        return logits, _labels(op, target, rows, cols), True
    target = _input(op, "target", target, 2)
    if target.shape != logits.shape:
        raise ValueError(f"{op}: expected target of shape {logits.shape} (or class indices of "
                         f"shape ({rows},)), received {target.shape}")
    return logits, target, False


def softmax_xent_forward(logits, target, probs_out=None, row_loss_out=None, loss_out=None):
    """(loss, probs, row_loss): mean cross-entropy of softmax(logits) against target.

    target is either integer class indices (N,) or float rows (N, C); loss is a
    0-d float32 array (``loss_out`` when given).
    """
    op = "softmax_xent_forward"
    logits, target, is_index = _logits_and_target(op, logits, target)
    rows, cols = logits.shape
    probs_out = _output(op, "probs_out", probs_out, (rows, cols), (("logits", logits), ("target", target)))
    row_loss_out = _output(op, "row_loss_out", row_loss_out, (rows,),
                           (("logits", logits), ("target", target), ("probs_out", probs_out)))
    loss_out = _output(op, "loss_out", loss_out, (), (("logits", logits), ("target", target),
                                                      ("probs_out", probs_out),
                                                      ("row_loss_out", row_loss_out)))
    if is_index:
        _run(op, lib.mg_softmax_xent_forward_index,
             (_ptr(logits), ffi.from_buffer("int64_t[]", target), _ptr(probs_out),
              _ptr(row_loss_out), _ptr(loss_out), rows, cols), (probs_out, row_loss_out, loss_out))
    else:
        _run(op, lib.mg_softmax_xent_forward_dense,
             (_ptr(logits), _ptr(target), _ptr(probs_out), _ptr(row_loss_out), _ptr(loss_out),
              rows, cols), (probs_out, row_loss_out, loss_out))
    return loss_out, probs_out, row_loss_out


def softmax_xent_backward(probs, target, scale, out=None):
    """out = scale * (probs * target_row_sum - target); scale is upstream_grad / N for the mean."""
    op = "softmax_xent_backward"
    probs, target, is_index = _logits_and_target(op, probs, target)
    rows, cols = probs.shape
    scale = _scalar(op, "scale", scale)
    out = _output(op, "out", out, (rows, cols), (("probs", probs), ("target", target)))
    if is_index:
        _run(op, lib.mg_softmax_xent_backward_index,
             (_ptr(probs), ffi.from_buffer("int64_t[]", target), scale, _ptr(out), rows, cols), (out,))
    else:
        _run(op, lib.mg_softmax_xent_backward_dense,
             (_ptr(probs), _ptr(target), scale, _ptr(out), rows, cols), (out,))
    return out


# ---------------------------------------------------------------- gather

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
    if not isinstance(src, np.ndarray) or src.ndim < 1:
        raise TypeError(f"{op}: expected src to be a numpy array with at least 1 dimension, "
                        f"received {_describe(src)}")
    if src.dtype.hasobject:  # copying object pointers as bytes would corrupt reference counts
        raise TypeError(f"{op}: expected src of a numeric dtype, received {src.dtype}")
    if isinstance(idx, np.ma.MaskedArray):  # min/max would skip masked entries the copy reads
        raise TypeError(f"{op}: expected idx to be a plain 1-d integer array, received a masked array")
    if not isinstance(idx, np.ndarray) or idx.dtype.kind not in "iu" or idx.ndim != 1:
        got = f"{idx.ndim}-d {idx.dtype} array" if isinstance(idx, np.ndarray) else _describe(idx)
        raise TypeError(f"{op}: expected idx to be a 1-d integer array, received {got}")
    rows = src.shape[0]
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= rows:
            raise ValueError(f"{op}: expected indices in [0, {rows}), received {lo if lo < 0 else hi}")
    # always a private copy: C checks the indices, then reads them again while
    # copying, and no other thread may change them in between
    given_idx, idx = idx, tape.copy(idx, I64)
    shape = (idx.size,) + src.shape[1:]
    out = _output(op, "out", out, shape, (("src", src), ("idx", given_idx)), dtype=src.dtype)
    if not _usable_in_place(src):
        # a strided or broadcast view: indexing reads only the rows asked for
        # (np.take would first copy all of src)
        out[...] = src[idx]
        recording = getattr(_tape_local, "tape", None)
        if recording is not None:
            recording.add(_take_rows, (src, idx, out), (out,))
        return out
    row_bytes = src.itemsize * math.prod(src.shape[1:])
    _run(op, lib.mg_gather_rows, (ffi.from_buffer(src), rows, row_bytes,
                                  ffi.from_buffer("int64_t[]", idx), idx.size, ffi.from_buffer(out)),
         (out,))
    return out


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
        if not isinstance(order, np.ndarray) or order.ndim != 1 or order.dtype.kind not in "iu":
            raise TypeError(f"{op}: expected the order to be a 1-d integer array, "
                            f"received {_describe(order)}")
        if order.size and (int(order.min()) < 0 or int(order.max()) >= self._rows):
            raise ValueError(f"{op}: expected indices in [0, {self._rows}), received "
                             f"{int(order.min()) if order.min() < 0 else int(order.max())}")
        order = np.array(order, dtype=I64)  # private: C checks it, then reads it again
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


# ---------------------------------------------------------------- optimizers
#
# Each update takes one parameter array or a list of them (with matching lists of
# gradients and state slots) and updates them all in one C call, after checking
# every one: an error leaves all parameters untouched, and Python cannot be
# interrupted half-way through a step.

def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


# The last validated table per op. A training loop passes the very same array
# objects every step (parameters, optimizer slots, workspace gradient buffers);
# an ndarray's shape, dtype and memory cannot change, so only the writeable
# flag is re-checked and the table is reused.
_table_cache = {}


def _param_table(op, ws, gs, slot_lists):
    """Validate parameters, gradients and slots; return (cffi table, count, keep-alive list)."""
    ws, gs = _as_list(ws), _as_list(gs)
    slot_lists = [_as_list(s) for s in slot_lists]
    arrays = ws + gs + [s for slots in slot_lists for s in slots]
    # the grouping is part of the key: the same arrays split differently into
    # parameters, gradients and slots make a different (or invalid) table
    layout = (len(ws), len(gs)) + tuple(len(s) for s in slot_lists)
    cached = _table_cache.get(op)
    if (cached is not None and cached[0] == layout and len(cached[1]) == len(arrays)
            and all(map(operator.is_, arrays, cached[1]))
            and _unchanged(cached[1], cached[5], cached[4])):
        return cached[2], len(ws), cached[3]
    table, count, keep = _validate_params(op, ws, gs, slot_lists)
    # cache only tables that point at the caller's own arrays (no gradient was copied)
    if all(isinstance(g, np.ndarray) and g.dtype == F32 and _usable_in_place(g) for g in gs):
        written = ws + [s for slots in slot_lists for s in slots]
        _table_cache[op] = (layout, arrays, table, keep, written, [a.shape for a in arrays])
    return table, count, keep


def _unchanged(arrays, shapes, written):
    """The cached arrays still have their dtype, shape and layout (all can be
    reassigned in place on an ndarray), and the written ones are still writeable."""
    for a, shape in zip(arrays, shapes):
        if a.shape != shape or a.dtype != F32:
            return False
        flags = a.flags
        if not (flags.c_contiguous and flags.aligned):
            return False
    for w in written:
        if not w.flags.writeable:
            return False
    return True


def _validate_params(op, ws, gs, slot_lists):
    for name, items in [("grads", gs)] + [(f"slot {i + 1}", s) for i, s in enumerate(slot_lists)]:
        if len(items) != len(ws):
            raise ValueError(f"{op}: expected as many {name} as parameters ({len(ws)}), received {len(items)}")
    table = ffi.new("mg_param_t[]", max(len(ws), 1))
    keep = []
    written = []  # every array the kernel writes: none may overlap another or an input
    grads = []
    for i, (w, g) in enumerate(zip(ws, gs)):
        if not isinstance(w, np.ndarray) or w.dtype != F32:
            raise TypeError(f"{op}: expected parameter {i} to be a float32 array, received {_describe(w)}")
        _output(op, f"parameter {i}", w, w.shape)
        g = _any_input(op, f"grad {i}", g)
        if g.shape != w.shape:
            raise ValueError(f"{op}: expected grad {i} of shape {w.shape} (like its parameter), "
                             f"received {g.shape}")
        slots = []
        for k, slot_list in enumerate(slot_lists):
            s = slot_list[i]
            if s is None:
                raise TypeError(f"{op}: expected slot {k + 1} of parameter {i} to be a float32 "
                                f"array of shape {w.shape}, received None")
            slots.append(_output(op, f"slot {k + 1} of parameter {i}", s, w.shape))
        for x in [w] + slots:
            for other_name, other in written + [(f"grad {i}", g)]:
                if np.may_share_memory(x, other):
                    raise ValueError(f"{op}: arrays written in place must not share memory "
                                     f"(parameter {i} and {other_name})")
            written.append((f"an array of parameter {i}", x))
        grads.append((f"grad {i}", g))
        ptrs = [_ptr(w), _ptr(g)] + [_ptr(s) for s in slots]
        keep += ptrs + [g]
        table[i].w, table[i].g, table[i].n = ptrs[0], ptrs[1], w.size
        if slots:
            table[i].slot1 = ptrs[2]
        if len(slots) > 1:
            table[i].slot2 = ptrs[3]
    for grad_name, g in grads:  # a gradient must not be rewritten while it is read
        for other_name, other in written:
            if np.may_share_memory(g, other):
                raise ValueError(f"{op}: {grad_name} must not share memory with {other_name}")
    return table, len(ws), keep


def rmsprop_update(w, g, v, lr, rho, eps, eps_inside=True):
    """In place: v = rho*v + (1-rho)*g**2; w -= lr*g/sqrt(v+eps) (eps_inside, Keras 3)
    or w -= lr*g/(sqrt(v)+eps). w, g, v: arrays or equal-length lists of arrays."""
    op = "rmsprop_update"
    table, count, keep = _param_table(op, w, g, [v])
    _run(op, lib.mg_rmsprop_update, (table, count, _scalar(op, "lr", lr), _scalar(op, "rho", rho),
                                     _scalar(op, "eps", eps), bool(eps_inside)), keep)


def sgd_update(w, g, velocity, lr, momentum=0.0, nesterov=False):
    """In place, Keras SGD: velocity = momentum*velocity - lr*g; w += velocity (or the
    Nesterov form); velocity may be None when momentum == 0."""
    op = "sgd_update"
    momentum = _scalar(op, "momentum", momentum)
    table, count, keep = _param_table(op, w, g, [velocity] if momentum != 0.0 else [])
    _run(op, lib.mg_sgd_update, (table, count, _scalar(op, "lr", lr), momentum, bool(nesterov)), keep)


def adam_update(w, g, m, v, lr, beta1, beta2, eps, step):
    """In place, Keras 3 Adam with bias correction folded into the step size; step >= 1."""
    op = "adam_update"
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 1 <= step < 2**62:
        raise ValueError(f"{op}: expected step to be an integer >= 1, received {step!r}")
    table, count, keep = _param_table(op, w, g, [m, v])
    _run(op, lib.mg_adam_update, (table, count, _scalar(op, "lr", lr), _scalar(op, "beta1", beta1),
                                  _scalar(op, "beta2", beta2), _scalar(op, "eps", eps), int(step)), keep)


# ---------------------------------------------------------------- convolution and pooling
# (after everything above: conv.py builds on the helpers of this module)
from .conv import (conv2d_backward_input, conv2d_backward_weight, conv2d_forward,  # noqa: E402
                   conv_output_size, max_pool2d_backward, max_pool2d_forward)

# ---------------------------------------------------------------- element-wise (elementwise.py)
# Imported last: that module builds on the helpers above.
from .elementwise import (  # noqa: E402
    DropoutCounter, dropout_backward, dropout_forward, philox4x32_10, sigmoid_backward,
    sigmoid_bce_backward, sigmoid_bce_forward, sigmoid_forward, tanh_backward, tanh_forward)
