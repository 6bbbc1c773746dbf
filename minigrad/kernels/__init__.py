"""The only door to the C kernels.

This module holds the checks every wrapper uses and the thread and GEMM
controls; the wrappers live by family in ``dense`` (bias, relu, softmax +
cross-entropy), ``gather``, ``optim``, ``conv`` and ``elementwise``, and are
all importable from here.

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
import functools
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


def _run(op, cfunc, args, outputs=(), explain=None):
    """cfunc(*args), its status checked; recorded when a Tape is active (see tape.py).
    args must already point at validated arrays that outlive the call. C checks
    what can change between replays (labels, indices) itself; on its error status,
    ``explain()`` raises the precise error when it can (which label is out of range)."""
    status = cfunc(*args)
    if status != lib.MG_OK:
        if explain is not None:
            explain()
        _check_status(op, status)
    recording = getattr(_tape_local, "tape", None)
    if recording is not None:
        recording.add_c(cfunc, args, outputs, explain)


def plain_array(op, name, x):
    """x as a base-class ndarray when it is an ndarray subclass (a view of the same
    memory); anything else unchanged. A masked array is refused: NumPy reductions
    honour its mask but C (and np.asarray) would read the masked values too.

    Everything after this sees the array's real shape, strides and dtype: a
    subclass cannot answer for them with its own attributes, and np.matrix's
    operators (``*`` as a matrix product) never apply.

    >>> import numpy as np
    >>> class Sub(np.ndarray): pass
    >>> type(plain_array("f", "x", np.zeros(2).view(Sub))).__name__
    'ndarray'
    """
    if type(x) is np.ndarray or not isinstance(x, np.ndarray):
        return x
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{op}: expected {name} to be a plain array, received a masked array "
                        f"(its mask would be ignored); pass {name}.filled(value) or drop the "
                        f"masked entries")
    return np.ndarray.view(x, np.ndarray)


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
    x = plain_array(op, name, x)
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
    out = plain_array(op, name, out)
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
    _check_labels(op, target, cols)  # before the int64 copy, which would wrap a huge uint64
    # always a private copy, checked again: the caller's array may be rewritten
    # by another thread, and what is checked must be what C reads. A replay
    # refreshes the copy from the caller's array and the kernel checks it (each
    # label read once): pass _labels_explained(op, target, cols) to _run.
    target = tape.copy(target, I64)
    _check_labels(op, target, cols)
    return target


def _labels_explained(op, labels, cols):
    """For _run: the precise error when a kernel refuses these labels."""
    return functools.partial(_check_labels, op, labels, cols)


def _check_labels(op, target, cols):
    if target.size:
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= cols:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{op}: expected class indices in [0, {cols}), received {bad}")


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


def _same_shape(op, names, *arrays):
    if any(x.shape != arrays[0].shape for x in arrays):
        got = " and ".join(str(x.shape) for x in arrays)
        raise ValueError(f"{op}: expected {names} of the same shape, received {got}")


def _any_input(op, name, x):
    return _input(op, name, x, x.ndim if isinstance(x, np.ndarray) else 0)


# ---------------------------------------------------------------- threads

def set_num_threads(n):
    """Use `n` threads in every kernel (default: OMP_NUM_THREADS or the usable CPUs).

    A process forked after kernels ran on several threads runs them on one thread
    (OpenMP's team does not survive a fork); it computes the same numbers.
    """
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


# ---------------------------------------------------------------- the kernel families
# (after everything above: each module builds on the helpers of this one)
from .dense import (add_bias, bias_grad, relu_backward, relu_backward_bias_grad,  # noqa: E402,F401
                    relu_forward, softmax_xent_backward, softmax_xent_forward)
from .gather import RowGather, gather_rows  # noqa: E402,F401
from .optim import (ParamTable, adam_update, adamw_update, clip_gradients,  # noqa: E402,F401
                    optimizer_updates_done, param_table, rmsprop_update, sgd_update)

# ---------------------------------------------------------------- convolution and pooling
# (after everything above: conv.py builds on the helpers of this module)
from .conv import (conv2d_backward_input, conv2d_backward_weight, conv2d_forward,  # noqa: E402
                   conv2d_relu_backward, conv2d_relu_backward_params, conv_output_size,
                   max_pool2d_backward, max_pool2d_forward)

# ---------------------------------------------------------------- element-wise (elementwise.py)
# Imported last: that module builds on the helpers above.
from .elementwise import (  # noqa: E402
    DropoutCounter, dropout_backward, dropout_forward, philox4x32_10, sigmoid_backward,
    sigmoid_bce_backward, sigmoid_bce_forward, sigmoid_forward, tanh_backward, tanh_forward)
