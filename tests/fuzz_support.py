"""The fuzz suite's shared machinery: the budget and its families, the oracle
(``check_kernel_call``), the child-process runner and the case counts.

The fuzz suite is split by area:

* tests/test_fuzz_kernels.py: gemm, bias, relu, softmax-xent, gather_rows, RowGather
  (fit's planned steps), conv2d, max_pool2d, sigmoid/tanh, dropout, sigmoid-BCE;
* tests/test_fuzz_optim.py: optimizer updates (rmsprop, sgd, adam, adamw/AMSGrad) and
  gradient clipping;
* tests/test_fuzz_ops.py: the public Tensor ops (those that call C, and the pure-NumPy
  element-wise, reduction and shape ops);
* tests/test_fuzz_threads.py: set_num_threads, thread races, fork; and
  ``test_fuzz_total_budget``, which checks that every family of every file ran its share
  (COUNTS lives in this module, imported once per pytest session by all four files;
  tests/conftest.py runs the budget test last and holds the session-wide pool that
  runs the child families, two at a time, whatever file they are in).

Arbitrary arguments go to each wrapper: any dtype (float16/32/64, every integer
type, bool, object, complex, strings, datetimes, structured, byte-swapped),
Python lists/scalars/None/strings/dicts, ndim 0..4, zero-size and one-size axes,
non-contiguous, negative-stride, Fortran-order, broadcast (zero-stride),
misaligned, offset and read-only arrays, huge broadcast views (1 PiB if copied),
mismatched shapes, outputs that alias inputs (the same object, a view, a partial
overlap), wrong out dtypes/shapes/layouts, labels of any dtype/shape/value
(negative, >= C, huge int64, uint64 > 2**63), NaN/inf/-0.0/subnormal values,
huge/tiny/negative/NaN/non-numeric hyper-parameters, odd thread counts, optimizer
lists of any length and grouping, the same arrays passed twice in a row (the
cached optimizer table), and bad upstream gradients for backward. gather_rows
gets rows of every dtype above (packed structured too), filled with random bit
patterns (NaN payloads, -0.0) or not, and indices of any dtype/ndim/value (bool,
float, lists, scalars, masked arrays), with outputs overlapping src or idx.
fit's batches (family planned_steps): kernels.RowGather gets the same srcs
and max_rows of any kind, then a few set_order/take calls (orders of any
dtype/ndim/value, lists, masked arrays; take bounds negative, reversed, beyond
the order, wider than the buffer, before any order, bools, NumPy integers,
floats, None), the caller's order overwritten after set_order.
Convolution and pooling (families conv, pool): small NHWC images, kernels and
pool windows, strides/pool sizes/paddings of any kind, x_shape/w_shape arguments
valid or not, argmax from the forward pass or arbitrary (out of window, negative,
other dtypes, non-contiguous). Element-wise (activations, bce): sigmoid, tanh,
dropout (rates, seeds, DropoutCounter steps up to 2**63 - 2, other counters; the
counter must advance by one exactly when the call succeeds) and sigmoid-BCE.
Optimizers (optimizers, adamw, clip): rmsprop/sgd/adam, adamw with and without
v_hat (AMSGrad), and clip_gradients in its three modes and bad ones.
Thread races (family thread_race): another Python thread rewrites the labels, the
gather indices or fit's x and y while the kernels, softmax_cross_entropy, RowGather
and fit run (whole arrays, single elements or moving slices; valid values only, or
also negative, >= C, 2**40 and the dtype's maximum). Fork (family fork): kernels and a
training step run on a thread team, then os.fork or multiprocessing's 'fork' starts a
child that repeats them; it must finish within a timeout, serially, with the
parent's numbers byte for byte.

The oracle (``check_kernel_call`` for kernels.*, ``check_op_call`` for the ops)
accepts exactly two outcomes:

* the call raises TypeError or ValueError (or MemoryError/OverflowError); for
  kernels.* the message starts with the function's name and ':'; every argument
  is left unchanged; or
* it returns what the NumPy twin in ``minigrad.reference`` (or, for the ops, the
  NumPy formula) gives on the same inputs converted as the library converts them
  (NaN-aware, float32 tolerance; for kernels that run with flush-to-zero, either
  with subnormals flushed or not; byte for byte for gather_rows, which copies
  bytes, and equal to np.take(src, idx, axis=0) too), and every argument it does
  not document as written is unchanged. For RowGather: a TypeError/ValueError
  naming gather_rows that leaves the RowGather usable with its previous order,
  or take returns src[order[start:stop]] byte for byte (a view of its buffer).

Calls whose arguments are all well formed must succeed, and ops must reject
exactly the operands NumPy cannot convert or broadcast. Anything else fails the
test: any other exception type, a crash, a wrong value, a modified input.

Crash safety: the kernel families, and the ops that call C, run in child
interpreters (``sys.executable -c``), two at a time; a segfault fails that one test
(negative exit status), and the test then replays the child with
MINIGRAD_FUZZ_TRACE=1 to show the last calls it made. The pure-NumPy ops
(element-wise, reductions, shapes) fuzz in-process.

Budget: MINIGRAD_FUZZ_EXAMPLES generated cases in all (default 12,000; about
13,300 run, as hypothesis adds a few), split over the twenty families (FAMILIES) by weight;
each family asserts it ran its share and ``test_fuzz_total_budget`` the total.
About 30-40 s on 2 idle cores. CI runs are derandomized (the same cases every run).
Nightly, 20x the cases with a fresh random seed (printed on failure; set
MINIGRAD_FUZZ_SEED=<seed> to replay it), about 10 minutes::

    MINIGRAD_FUZZ_EXAMPLES=250000 MINIGRAD_FUZZ_RANDOM=1 python -m pytest tests/test_fuzz_*.py

Library bugs found by this suite that are fixed have regression tests at the end of
the file of their area (test_fixed_*); the generators cover their triggers. An
open one would be kept out only by a narrow exclusion at the draw it concerns, with a
comment naming it ("BUG <name> (open)"); grep for "BUG " finds none today.
"""
import concurrent.futures
import importlib
import math
import numbers
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

import minigrad as mg
from minigrad import kernels, reference
import fuzz_strategies as fs
from fuzz_strategies import EPS32, F32, TINY32, describe_call, pick
from helpers import REPO

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# ================================================================ budget

TOTAL_EXAMPLES = int(os.environ.get("MINIGRAD_FUZZ_EXAMPLES", "12000"))
RANDOM_MODE = os.environ.get("MINIGRAD_FUZZ_RANDOM", "") == "1"
TRACE = os.environ.get("MINIGRAD_FUZZ_TRACE", "") == "1"

# family -> (weight, runs in a child process, the test module with its case_<family>)
K, O, P, T = "test_fuzz_kernels", "test_fuzz_optim", "test_fuzz_ops", "test_fuzz_threads"
FAMILIES = {
    "gemm": (0.12, True, K),
    "bias": (0.08, True, K),
    "relu": (0.11, True, K),
    "softmax_xent": (0.11, True, K),
    "gather": (0.04, True, K),          # gather_rows
    "planned_steps": (0.03, True, K),   # RowGather (fit's batches)
    "conv": (0.02, True, K),            # conv2d_forward, conv2d_backward_input/_weight
    "pool": (0.015, True, K),           # max_pool2d_forward/backward
    "activations": (0.025, True, K),    # sigmoid/tanh forward/backward, dropout forward/backward
    "bce": (0.015, True, K),            # sigmoid_bce_forward/backward
    "optimizers": (0.13, True, O),      # rmsprop, sgd, adam
    "adamw": (0.02, True, O),           # adamw_update (AMSGrad too)
    "clip": (0.015, True, O),           # clip_gradients
    "c_ops": (0.09, True, P),           # matmul, dense, relu, softmax, softmax_cross_entropy
    "elementwise_ops": (0.07, False, P),
    "shape_ops": (0.045, False, P),
    "dtype_ops": (0.01, False, P),      # int64/bool tensors: comparisons, logic, masks, conversions
    "torch_ops": (0.02, False, P),      # sin ... round, var ... logsumexp, gather ... chunk, x_()
    "threads": (0.02, True, T),
    "thread_race": (0.01, True, T),     # another thread rewrites labels/indices/x while C and fit run
    "fork": (0.005, True, T),           # fork after the thread team ran; the child's numbers
}
assert abs(sum(w for w, _, _ in FAMILIES.values()) - 1.0) < 1e-9


def budget(family):
    return max(1, math.ceil(TOTAL_EXAMPLES * FAMILIES[family][0]))


COUNTS = {}  # family -> examples run (filled by the tests, checked by the last one)

# ================================================================ the oracle

class Mismatch(AssertionError):
    pass


def _arrays_in(obj, found=None):
    """Every ndarray reachable through lists/tuples/dicts, once each, in order."""
    found = {} if found is None else found
    if isinstance(obj, np.ndarray):
        found.setdefault(id(obj), obj)
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _arrays_in(x, found)
    elif isinstance(obj, dict):
        for x in obj.values():
            _arrays_in(x, found)
    return found


def _memory_of(x):
    """The smallest array whose bytes stand for x (a huge broadcast view -> its base)."""
    while x.nbytes > 64 * 2**20 and isinstance(x.base, np.ndarray):
        x = x.base
    return x


def _snapshot(arrays):
    return {k: (a.shape, a.dtype, _memory_of(a).tobytes()) for k, a in arrays.items()}


def _assert_unchanged(arrays, snap, skip=(), what=""):
    for k, a in arrays.items():
        if k in skip:
            continue
        shape_, dtype_, raw = snap[k]
        if a.shape != shape_ or a.dtype != dtype_ or _memory_of(a).tobytes() != raw:
            raise Mismatch(f"{what}: an input that must not be modified was modified: "
                           f"array of shape {shape_} and dtype {dtype_}")


def _daz(x):
    """Subnormal float32 -> signed zero (the kernels run with denormals-are-zero)."""
    if isinstance(x, np.ndarray) and x.dtype == F32:
        return np.where(np.abs(x) < TINY32, np.copysign(np.float32(0), x), x).astype(F32)
    return x


SCALAR_NAMES = {"alpha", "beta", "scale", "lr", "rho", "eps", "momentum", "beta1", "beta2", "weight_decay", "clip"}


def _reference_inputs(args, kwargs, daz):
    """Independent copies of the arguments for the NumPy twin: arrays copied (the
    same object twice stays one object, as in the call), subnormals flushed for
    kernels that run under DAZ, hyper-parameters as float64 (C's double)."""
    memo = {}

    def conv(x):
        if isinstance(x, np.ndarray):
            if id(x) not in memo and x.nbytes > 2**30:  # a huge broadcast view: no copy
                memo[id(x)] = x
            if id(x) not in memo:
                c = np.array(x, copy=True, order="C")
                memo[id(x)] = _daz(c) if daz else c
            return memo[id(x)]
        if isinstance(x, list):
            return [conv(y) for y in x]
        if isinstance(x, tuple):
            return tuple(conv(y) for y in x)
        if isinstance(x, kernels.DropoutCounter):  # its step before the call (which advances it)
            return reference.DropoutCounter(x.value)
        return x

    rargs = [conv(a) for a in args]
    rkwargs = {}
    for k, v in kwargs.items():
        if k in SCALAR_NAMES and isinstance(v, numbers.Real):
            v = np.float64(fs.as_float(v))
            with np.errstate(all="ignore"):
                subnormal32 = 0 < abs(float(np.float32(v))) < TINY32
            if daz and subnormal32:
                v = np.float64(0.0) * np.sign(v)
        rkwargs[k] = conv(v)
    return rargs, rkwargs, memo


def _flat_results(x):
    if isinstance(x, tuple):
        return [y for z in x for y in _flat_results(z)]
    if x is None:
        return []
    return [x]


def _finite_max(*xs):
    m = 0.0
    for x in xs:
        if isinstance(x, np.ndarray) and x.size and x.dtype.kind == "f" and x.nbytes < 2**30:
            finite = np.abs(x[np.isfinite(x)])
            if finite.size:
                m = max(m, float(finite.max()))
    return m


def assert_close(got, want, rtol, atol, what, nan_for_inf=False):
    """got == want up to rtol/atol (atol may be per element), NaN where NaN, inf
    where inf (same sign). nan_for_inf: a NaN in got may stand for an inf in want
    (an infinite factor times a float32 value that rounded to 0 where the float64
    one did not)."""
    got_a, want_a = np.asarray(got), np.asarray(want)
    if isinstance(got, np.ndarray) and got.dtype != F32:
        raise Mismatch(f"{what}: dtype {got.dtype}, expected float32")
    if got_a.shape != want_a.shape:
        raise Mismatch(f"{what}: shape {got_a.shape}, expected {want_a.shape}")
    g, w = got_a.astype(np.float64), want_a.astype(np.float64)
    if nan_for_inf:
        g = np.where(np.isnan(g) & np.isinf(w), w, g)
    tolerance = np.nan_to_num(np.asarray(atol, dtype=np.float64)) + 1e-30 + rtol * np.abs(w)
    with np.errstate(invalid="ignore"):
        ok = (np.isnan(g) & np.isnan(w)) | (np.isinf(w) & (g == w)) | (
            np.isfinite(g) & np.isfinite(w) & (np.abs(g - w) <= tolerance))
    if not ok.all():
        bad = np.argwhere(~ok) if ok.ndim else [()]
        i = tuple(bad[0])
        raise Mismatch(f"{what}: values differ from the NumPy reference in {len(bad)} of {ok.size} "
                       f"element(s); first at {i}: {g[i]!r} (got) vs {w[i]!r} (want), tolerance "
                       f"{np.broadcast_to(tolerance, w.shape)[i]:.3g}\ngot:  "
                       f"{np.array2string(got_a, threshold=24)}\nwant: {np.array2string(want_a, threshold=24)}")


def assert_same_bytes(got, want, what):
    """got is an ndarray of want's shape and dtype holding the same bytes (NaN
    payloads, -0.0 and padding included)."""
    if not isinstance(got, np.ndarray):
        raise Mismatch(f"{what}: returned {type(got).__name__}, expected an array")
    want = np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
        raise Mismatch(f"{what}: shape {got.shape} dtype {got.dtype}, expected shape {want.shape} "
                       f"dtype {want.dtype}")
    g = np.ascontiguousarray(got).reshape(-1).view(np.uint8)
    w = np.ascontiguousarray(want).reshape(-1).view(np.uint8)
    if not np.array_equal(g, w):
        bad = np.flatnonzero(g != w)
        row = bad[0] // max(got.nbytes // max(len(got), 1), 1) if got.ndim else 0
        raise Mismatch(f"{what}: {bad.size} of {g.size} bytes differ from the reference, the first "
                       f"at byte {bad[0]} (row {row}): {g[bad[0]]:#04x} (got) vs {w[bad[0]]:#04x} (want)")


def _trace(text):
    if TRACE:
        print("CALL", text, file=sys.stderr, flush=True)


def check_kernel_call(name, args, kwargs=None, *, written=(), tol=(1e-5, 1e-6), daz=True,
                      must_succeed=False, nan_for_inf=False, bitwise=False):
    """THE ORACLE for kernels.<name>(*args, **kwargs).

    written: the arrays the call documents as written in place (outputs given,
    parameters, optimizer slots); every other array must come back unchanged
    (apart from memory it shares with a written one).
    tol: (rtol, atol) or a list of them: one per returned output, then one per
    written array (the last one repeats).
    daz: the kernel runs with flush-to-zero/denormals-are-zero, so the twin's
    answer with subnormal inputs flushed to zero is right too.
    must_succeed: the arguments are all valid, so the call must not raise.
    nan_for_inf: a NaN may stand for an inf of the twin (see assert_close).
    bitwise: results and written arrays must be the twin's byte for byte, of its
    dtype (kernels that copy bytes: gather_rows); tol, daz, nan_for_inf unused.
    Returns the kernel's result, or None when it raised (acceptably)."""
    kwargs = dict(kwargs or {})
    desc = describe_call(f"kernels.{name}", args, kwargs)
    arrays = _arrays_in((args, kwargs))
    snap = _snapshot(arrays)
    references = [_reference_inputs(args, kwargs, daz)]
    if daz and _has_subnormals(arrays, kwargs):  # flushed or not: either is a right answer
        references.append(_reference_inputs(args, kwargs, False))
    _trace(desc)
    try:
        with np.errstate(all="ignore"):
            got = getattr(kernels, name)(*args, **kwargs)
    except (TypeError, ValueError, MemoryError, OverflowError) as exc:
        msg = str(exc)
        if not msg.startswith(f"{name}:"):
            raise Mismatch(f"{type(exc).__name__} whose message does not start with "
                           f"'{name}:': {msg!r}\ncall: {desc}") from exc
        if must_succeed:
            raise Mismatch(f"a valid call was rejected: {type(exc).__name__}: {msg}\ncall: {desc}") from exc
        _assert_unchanged(arrays, snap, what=f"{desc} (raised {type(exc).__name__})")
        return None
    except Exception as exc:
        raise Mismatch(f"{type(exc).__name__} (expected TypeError/ValueError or a result): {exc}"
                       f"\ncall: {desc}") from exc
    # success: untouched inputs, then the twin's answer
    written_ids = {id(w) for w in written if isinstance(w, np.ndarray)}
    overlapping = {k for k, a in arrays.items()
                   if any(np.may_share_memory(a, w) for w in written if isinstance(w, np.ndarray))}
    _assert_unchanged(arrays, snap, skip=written_ids | overlapping, what=desc)
    mismatches = []
    for rargs, rkwargs, memo in references:
        try:
            _compare_with_twin(name, got, rargs, rkwargs, memo, written, tol, desc, nan_for_inf, bitwise)
            return got
        except Mismatch as exc:
            mismatches.append(exc)
    raise mismatches[0]


def _has_subnormals(arrays, kwargs):
    """Any float32 subnormal among the arrays or (as float32) the hyper-parameters."""
    with np.errstate(all="ignore"):
        return (any(a.dtype == F32 and a.nbytes < 2**30 and bool(np.any((np.abs(a) < TINY32) & (a != 0)))
                    for a in arrays.values())
                or any(k in SCALAR_NAMES and isinstance(v, numbers.Real)
                       and 0 < abs(float(np.float32(fs.as_float(v)))) < TINY32 for k, v in kwargs.items()))


def _compare_with_twin(name, got, rargs, rkwargs, memo, written, tol, desc, nan_for_inf, bitwise=False):
    """The kernel's results and written arrays against reference.<name> on the copies."""
    try:
        with np.errstate(all="ignore"):
            want = getattr(reference, name)(*rargs, **rkwargs)
    except Exception as exc:  # the twin cannot handle something the kernel accepted
        raise Mismatch(f"the kernel accepted a call its NumPy twin rejects "
                       f"({type(exc).__name__}: {exc})\ncall: {desc}") from exc
    got_list, want_list = _flat_results(got), _flat_results(want)
    if len(got_list) != len(want_list):
        raise Mismatch(f"{len(got_list)} results, the twin returns {len(want_list)}\ncall: {desc}")
    if bitwise:
        for i, (g, w) in enumerate(zip(got_list, want_list)):
            assert_same_bytes(g, w, f"{desc}\nresult {i}")
        for j, w_arr in enumerate(x for x in written if isinstance(x, np.ndarray)):
            assert_same_bytes(w_arr, memo[id(w_arr)], f"{desc}\nwritten array {j}")
        return got
    tols = tol if isinstance(tol, list) else [tol] * (len(got_list) + len(written))
    for i, (g, w) in enumerate(zip(got_list, want_list)):
        assert_close(g, w, *tols[i], f"{desc}\nresult {i}", nan_for_inf)
    for j, w_arr in enumerate(x for x in written if isinstance(x, np.ndarray)):
        rtol, atol = tols[min(len(got_list) + j, len(tols) - 1)]
        assert_close(w_arr, memo[id(w_arr)], rtol, atol, f"{desc}\nwritten array {j}", nan_for_inf)
    return got


# ---------------------------------------------------------------- validity predicates

def is_f32(x, shape_):
    """x is an array the kernels must accept as an input of this shape."""
    return (isinstance(x, np.ndarray) and x.dtype == F32 and x.shape == tuple(shape_)
            and x.nbytes < 2**30)


def is_out(x, shape_, inputs):
    """x is None or a destination the kernels must accept."""
    if x is None:
        return True
    return (is_f32(x, shape_) and x.flags.c_contiguous and x.flags.writeable and x.flags.aligned
            and not any(isinstance(i, np.ndarray) and np.may_share_memory(x, i) for i in inputs))


def threads(data):
    n = pick(data, [None, 1, 2, 3], "threads")
    if n is not None:
        kernels.set_num_threads(n)


def gemm_tolerance(a, b, k, alpha, beta, out, bias):
    amax, bmax = _finite_max(a), _finite_max(b)
    scale = abs(fs.as_float(alpha)) if np.isfinite(fs.as_float(alpha)) else 0.0
    atol = 16 * EPS32 * math.sqrt(max(k, 1)) * amax * bmax * scale
    if isinstance(out, np.ndarray) and np.isfinite(fs.as_float(beta)):
        atol += 4 * EPS32 * abs(fs.as_float(beta)) * _finite_max(out)
    atol += 4 * EPS32 * _finite_max(bias) + 4 * TINY32
    return 16 * EPS32 * math.sqrt(max(k, 1)) + 1e-6, atol


def _raw_copy(x):
    """A plain C-ordered copy of x with the same bytes per element (None for a huge view)."""
    return np.array(x, copy=True, order="C", subok=False) if x.nbytes <= 2**30 else None


def as_f32(x):
    """What the ops make of an operand (None if they must reject it)."""
    if isinstance(x, mg.Tensor):
        return x.data
    try:
        a = np.asarray(x)
    except Exception:
        return None
    if a.dtype.kind not in "biuf":
        return None
    with np.errstate(all="ignore"):
        return a.astype(F32)


def _has_inf(x):
    """x (a Tensor or array) holds an infinity: an infinite target times a log-probability
    that is 0 in float32 but tiny in float64 is NaN in C and inf in the twin."""
    if getattr(x, "nbytes", 0) >= 2**30:  # a huge broadcast view
        return False
    a = as_f32(x)
    return a is not None and bool(np.isinf(a).any())


# ================================================================ running a family


def fuzz(family, examples, seed_=None, case=None):
    """Run `examples` hypothesis cases of a family (case_<family> of its module,
    unless `case` is given); return how many ran."""
    counter = [0]
    if case is None:
        case = getattr(importlib.import_module(FAMILIES[family][2]), f"case_{family}")

    @settings(max_examples=examples, derandomize=seed_ is None, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink],
              print_blob=True)
    @given(st.data())
    def run(data):
        counter[0] += 1
        fs.begin_case(data)
        with np.errstate(all="ignore"):  # NaN/inf arithmetic is expected here, warnings are noise
            case(data)

    if seed_ is not None:
        run = seed(seed_)(run)
    run()
    return counter[0]


def child_main(family, examples, seed_=None):
    """Entry point of a child interpreter: prints FUZZ_CASES <family> <count>."""
    import faulthandler
    faulthandler.enable()
    count = fuzz(family, examples, seed_)
    print(f"FUZZ_CASES {family} {count}", flush=True)
    return 0


def run_child(family, examples, seed_=None, trace=False):
    """Fuzz a family in a fresh interpreter; returns the CompletedProcess."""
    code = (f"import sys; sys.path.insert(0, {TESTS_DIR!r}); import fuzz_support; "
            f"sys.exit(fuzz_support.child_main({family!r}, {examples}, {seed_!r}))")
    env = dict(os.environ, MINIGRAD_FUZZ_TRACE="1" if trace else "")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120 + 0.1 * examples)


def _session_seed():
    if os.environ.get("MINIGRAD_FUZZ_SEED"):
        return int(os.environ["MINIGRAD_FUZZ_SEED"])
    return random.SystemRandom().randrange(2**32) if RANDOM_MODE else None


SEED = _session_seed()  # None: derandomized (CI); else hypothesis.seed(SEED) for every family
JOBS = int(os.environ.get("MINIGRAD_FUZZ_JOBS", str(min(2, os.cpu_count() or 1))))
RUNNERS = ("test_fuzz_in_child_process", "test_fuzz_in_process")


def child_families(module):
    return [f for f, (_, child, mod) in FAMILIES.items() if child and mod == module]


def in_process_families(module):
    return [f for f, (_, child, mod) in FAMILIES.items() if not child and mod == module]


def selected_families(session):
    """The families whose test is collected (and not deselected) in this session."""
    return {item.callspec.params["family"] for item in session.items
            if getattr(item, "originalname", None) in RUNNERS and hasattr(item, "callspec")}


def start_children(session):
    """The session's pool: every selected child family of every fuzz file started,
    JOBS at a time, in FAMILIES order (used by the fuzz_children fixture, conftest.py)."""
    selected = selected_families(session)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(JOBS, 1))
    futures = {f: pool.submit(run_child, f, budget(f), SEED)
               for f, (_, child, _m) in FAMILIES.items() if child and f in selected}
    return pool, futures


def check_child(family, futures):
    """The body of test_fuzz_in_child_process: the child's verdict and case count."""
    n = budget(family)
    proc = futures[family].result()
    if proc.returncode < 0:  # killed by a signal: replay with tracing to show the call
        replay = run_child(family, n, SEED, trace=True)
        calls = [line for line in replay.stderr.splitlines() if line.startswith("CALL ")]
        pytest.fail(f"the {family} fuzz child was killed by signal {-proc.returncode} "
                    f"(seed {SEED}); last calls before the crash:\n" + "\n".join(calls[-3:])
                    + f"\nstderr:\n{proc.stderr[-5000:]}")
    assert proc.returncode == 0, (f"the {family} fuzz child failed (exit {proc.returncode}, seed {SEED})"
                                  f"\nstdout:\n{proc.stdout[-20000:]}\nstderr:\n{proc.stderr[-20000:]}")
    found = re.search(rf"^FUZZ_CASES {family} (\d+)$", proc.stdout, re.M)
    assert found, f"no case count from the child:\n{proc.stdout}\n{proc.stderr}"
    COUNTS[family] = int(found.group(1))
    assert COUNTS[family] >= n, f"{family}: ran {COUNTS[family]} cases, expected {n}"


def check_in_process(family, case):
    """The body of test_fuzz_in_process: fuzz a pure-NumPy family here."""
    n = budget(family)
    COUNTS[family] = fuzz(family, n, SEED, case=case)
    assert COUNTS[family] >= n


def check_total_budget(session):
    """The body of test_fuzz_total_budget (run last by conftest.py): when every fuzz
    family was collected in this session, every one must have run its share (a
    family that failed fails this test too), >= 10,000 cases in all by default.
    Skipped only when some family was not selected (one file, -k)."""
    selected = selected_families(session)
    unselected = sorted(set(FAMILIES) - selected)
    if unselected:
        pytest.skip(f"fuzz families not selected in this session: {', '.join(unselected)}")
    missing = sorted(set(FAMILIES) - set(COUNTS))
    assert not missing, f"fuzz families that did not report a case count (failed?): {', '.join(missing)}"
    total = sum(COUNTS.values())
    print(f"fuzz cases per family: {COUNTS}, total {total}")
    assert total >= TOTAL_EXAMPLES
    if "MINIGRAD_FUZZ_EXAMPLES" not in os.environ:
        assert total >= 10_000
