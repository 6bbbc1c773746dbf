"""Hypothesis fuzzing of every door to C (minigrad.kernels) and every public op.

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
13,200 run, as hypothesis adds a few), split over the thirteen families by weight;
each family asserts it ran its share and ``test_fuzz_total_budget`` the total.
About 25-35 s on 2 cores. CI runs are derandomized (the same cases every run).
Nightly, 20x the cases with a fresh random seed (printed on failure; set
MINIGRAD_FUZZ_SEED=<seed> to replay it), about 10 minutes::

    MINIGRAD_FUZZ_EXAMPLES=250000 MINIGRAD_FUZZ_RANDOM=1 python -m pytest tests/test_fuzz.py

Library bugs found by this suite, all fixed, have regression tests at the end of
this file (test_fixed_*); the generators cover their triggers.
"""
import concurrent.futures
import copy
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
from fuzz_strategies import (EPS32, F32, TINY32, arg, array, boolean, describe_call,
                             dims, draw, flag, integer, labels, out_arg, pick, real_scalar, shape)
from helpers import REPO, run_python

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# ================================================================ budget

TOTAL_EXAMPLES = int(os.environ.get("MINIGRAD_FUZZ_EXAMPLES", "12000"))
RANDOM_MODE = os.environ.get("MINIGRAD_FUZZ_RANDOM", "") == "1"
TRACE = os.environ.get("MINIGRAD_FUZZ_TRACE", "") == "1"

# family -> (weight, runs in a child process)
FAMILIES = {
    "gemm": (0.135, True),
    "bias": (0.09, True),
    "relu": (0.13, True),
    "softmax_xent": (0.13, True),
    "optimizers": (0.15, True),
    "threads": (0.02, True),
    "gather": (0.04, True),          # gather_rows
    "c_ops": (0.10, True),          # matmul, dense, relu, softmax, softmax_cross_entropy
    "planned_steps": (0.03, True),  # RowGather (fit's batches)
    "thread_race": (0.01, True),    # another thread rewrites labels/indices/x while C and fit run
    "fork": (0.005, True),          # fork after the thread team ran; the child's numbers
    "elementwise_ops": (0.09, False),
    "shape_ops": (0.07, False),
}
assert abs(sum(w for w, _ in FAMILIES.values()) - 1.0) < 1e-9


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


SCALAR_NAMES = {"alpha", "beta", "scale", "lr", "rho", "eps", "momentum", "beta1", "beta2"}


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


# ================================================================ families: kernels

def gemm_tolerance(a, b, k, alpha, beta, out, bias):
    amax, bmax = _finite_max(a), _finite_max(b)
    scale = abs(fs.as_float(alpha)) if np.isfinite(fs.as_float(alpha)) else 0.0
    atol = 16 * EPS32 * math.sqrt(max(k, 1)) * amax * bmax * scale
    if isinstance(out, np.ndarray) and np.isfinite(fs.as_float(beta)):
        atol += 4 * EPS32 * abs(fs.as_float(beta)) * _finite_max(out)
    atol += 4 * EPS32 * _finite_max(bias) + 4 * TINY32
    return 16 * EPS32 * math.sqrt(max(k, 1)) + 1e-6, atol


def case_gemm(data):
    threads(data)
    m, n, k = dims(data, "m"), dims(data, "n"), dims(data, "k")
    trans_a, trans_b, relu = flag(data, "trans_a"), flag(data, "trans_b"), flag(data, "relu")
    alpha = real_scalar(data, "alpha", default=1.0)
    beta = real_scalar(data, "beta", default=0.0)
    # huge hyper-parameters with huge values would overflow float32 intermediates
    big_scalar = any(isinstance(s, numbers.Real) and np.isfinite(fs.as_float(s)) and abs(fs.as_float(s)) > 1e3
                     for s in (alpha, beta))
    vk = dict(huge=1e3 if big_scalar else 1e15, subnormal=True)
    a = arg(data, (k, m) if fs.truth(trans_a) else (m, k), "a", **vk)
    b = arg(data, (n, k) if fs.truth(trans_b) else (k, n), "b", **vk)
    bias = arg(data, (n,), "bias", **vk) if boolean(data, "has_bias") else None
    out = out_arg(data, (m, n), "out", others=[a, b, bias])
    if isinstance(out, np.ndarray) and out.dtype == F32 and out.flags.writeable:
        with np.errstate(all="ignore"):
            out[...] = array(data, out.shape, "out_values", **vk)
    kwargs = dict(trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, bias=bias, relu=relu)
    if out is not None or boolean(data, "out_kw"):
        kwargs["out"] = out
    valid = (all(fs.flag_ok(f) for f in (trans_a, trans_b, relu))
             and is_f32(a, (k, m) if fs.truth(trans_a) else (m, k))
             and is_f32(b, (n, k) if fs.truth(trans_b) else (k, n))
             and (bias is None or is_f32(bias, (n,))) and is_out(out, (m, n), [a, b, bias])
             and all(fs.representable32(s) for s in (alpha, beta))
             and (out is not None or float(beta) == 0.0))
    real = all(fs.representable32(x) for x in (alpha, beta))
    tol = gemm_tolerance(a, b, k, alpha, beta, out, bias) if real else (1e-5, 1e-6)
    got = check_kernel_call("gemm", (a, b), kwargs, written=[out], tol=tol, must_succeed=valid,
                            nan_for_inf=real and not np.isfinite(float(alpha)))
    if got is not None and out is not None:
        assert got is out, "gemm returned a new array instead of out"


def case_bias(data):
    threads(data)
    rows, cols = dims(data, "rows"), dims(data, "cols")
    if boolean(data, "which"):
        x = arg(data, (rows, cols), "x", subnormal=True)
        b = arg(data, (cols,), "b", subnormal=True)
        how = pick(data, ["out", "in_place"], "form")
        out = x if how == "in_place" else out_arg(data, (rows, cols), "out", others=[x, b])
        args = (x, b, out) if out is not None or boolean(data, "pos") else (x, b)
        valid = (is_f32(x, (rows, cols)) and is_f32(b, (cols,))
                 and (is_out(out, (rows, cols), [x, b]) or (
                     out is x and is_out(x, (rows, cols), [])
                     and not np.may_share_memory(x, b))))
        got = check_kernel_call("add_bias", args, written=[out], tol=(1e-6, 2 * TINY32),
                                must_succeed=valid)
    else:
        dy = arg(data, (rows, cols), "dy", subnormal=True)
        out = out_arg(data, (cols,), "out", others=[dy])
        args = (dy, out) if out is not None or boolean(data, "pos") else (dy,)
        valid = is_f32(dy, (rows, cols)) and is_out(out, (cols,), [dy])
        atol = 2 * EPS32 * max(rows, 1) * _finite_max(dy) + 2 * TINY32
        got = check_kernel_call("bias_grad", args, written=[out], tol=(1e-5, atol), must_succeed=valid)
    if got is not None and out is not None:
        assert got is out


def case_relu(data):
    threads(data)
    which = pick(data, ["relu_forward", "relu_backward", "relu_backward_bias_grad"], "which")
    if which == "relu_forward":
        s = shape(data, "shape")
        x = arg(data, s, "x", subnormal=True)
        out = x if boolean(data, "in_place") else out_arg(data, s, "out", others=[x])
        valid = is_f32(x, s) and (is_out(out, s, [x]) or (
            out is x and is_out(x, s, [])))
        # no flush-to-zero in the plain relu: exact IEEE results, bit for bit
        got = check_kernel_call(which, (x, out), written=[out], tol=(0, 0), daz=False,
                                must_succeed=valid)
        if got is not None and out is not None:
            assert got is out
        return
    s = (dims(data, "rows"), dims(data, "cols")) if which == "relu_backward_bias_grad" else shape(data, "shape")
    y = arg(data, s, "y", subnormal=True)
    dy = y if integer(data, 0, 9, "dy_is_y") == 0 else arg(data, s, "dy", subnormal=True)
    out = dy if boolean(data, "in_place") else out_arg(data, s, "out", others=[y, dy])
    valid = is_f32(y, s) and is_f32(dy, s) and (is_out(out, s, [y, dy]) or (
        out is dy and is_out(dy, s, [])
        and (y is dy or not np.may_share_memory(dy, y))))
    if which == "relu_backward":
        got = check_kernel_call(which, (y, dy, out), written=[out], tol=(0, 0), daz=False,
                                must_succeed=valid)
        if got is not None and out is not None:
            assert got is out
        return
    db_out = out_arg(data, (s[1],), "db_out", others=[y, dy, out])
    valid = valid and is_out(db_out, (s[1],), [y, dy, out])
    atol = 2 * EPS32 * max(s[0], 1) * _finite_max(dy) + 2 * TINY32
    got = check_kernel_call(which, (y, dy, out, db_out), written=[out, db_out],
                            tol=[(0, TINY32), (1e-5, atol)], must_succeed=valid)
    if got is not None:
        assert out is None or got[0] is out
        assert db_out is None or got[1] is db_out


def case_softmax_xent(data):
    threads(data)
    rows, cols = dims(data, "rows"), dims(data, "cols")
    logits = arg(data, (rows, cols), "logits", mag=1e2, huge=1e6)
    dense = boolean(data, "dense_target")
    if dense:
        target = arg(data, (rows, cols), "target", mag=1e2, huge=1e6)
    else:
        target = labels(data, rows, cols, "labels")
    index_ok = (isinstance(target, np.ndarray) and target.dtype.kind in "iu" and target.shape == (rows,)
                and (rows == 0 or (int(target.min()) >= 0 and int(target.max()) < cols)))
    target_ok = is_f32(target, (rows, cols)) if dense else index_ok
    lmax, tmax = _finite_max(logits), _finite_max(target) if dense else 1.0
    if boolean(data, "forward"):
        probs_out = out_arg(data, (rows, cols), "probs_out", others=[logits, target])
        row_loss_out = out_arg(data, (rows,), "row_loss_out", others=[logits, target, probs_out])
        valid = (is_f32(logits, (rows, cols)) and cols > 0 and target_ok
                 and is_out(probs_out, (rows, cols), [logits, target])
                 and is_out(row_loss_out, (rows,), [logits, target, probs_out]))
        loss_atol = 8 * EPS32 * max(cols, 1) * max(tmax, 1.0) * (lmax + math.log(max(cols, 1)) + 1)
        inf_target = dense and isinstance(target, np.ndarray) and target.dtype.kind == "f" and _has_inf(target)
        got = check_kernel_call("softmax_xent_forward", (logits, target, probs_out, row_loss_out),
                                written=[probs_out, row_loss_out],
                                tol=[(1e-5, loss_atol), (1e-5, 1e-6), (1e-5, loss_atol)],
                                must_succeed=valid, nan_for_inf=inf_target)
        if got is not None:
            assert isinstance(got[0], np.ndarray) and got[0].shape == () and got[0].dtype == np.float32
            assert probs_out is None or got[1] is probs_out
            assert row_loss_out is None or got[2] is row_loss_out
        return
    scale = real_scalar(data, "scale", default=0.25)
    out = out_arg(data, (rows, cols), "out", others=[logits, target])
    valid = (is_f32(logits, (rows, cols)) and cols > 0 and target_ok and fs.representable32(scale)
             and is_out(out, (rows, cols), [logits, target]))
    s = abs(float(scale)) if fs.representable32(scale) and np.isfinite(float(scale)) else 0.0
    atol = s * 8 * EPS32 * (lmax * max(cols, 1) * tmax + tmax + 1) + 2 * TINY32
    got = check_kernel_call("softmax_xent_backward", (logits, target), dict(scale=scale, out=out),
                            written=[out], tol=(1e-5, atol), must_succeed=valid,
                            nan_for_inf=fs.representable32(scale) and not np.isfinite(float(scale)))
    if got is not None and out is not None:
        assert got is out


OPTIMIZERS = {  # name -> (number of slots, hyper-parameters and their defaults)
    "rmsprop_update": (1, dict(lr=1e-3, rho=0.9, eps=1e-7)),
    "sgd_update": (1, dict(lr=0.01, momentum=0.9)),
    "adam_update": (2, dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7)),
}


ADAM_STEPS = (1, 2, 10, 1000, 2**61, np.int64(7), np.uint8(3), 0, -1, 2**62, 1.0, True, None, "1")


def _alias_one(data, groups, shapes):
    """Make one array of `groups` (lists of per-parameter arrays) the same object
    as, or a view overlapping, another one."""
    count = len(shapes)
    (dst, src) = [groups[integer(data, 0, len(groups) - 1, f"alias{i}")] for i in range(2)]
    i, j = (integer(data, 0, count - 1, f"alias_{x}") for x in "ij")
    if not isinstance(src[j], np.ndarray):
        return
    if shapes[i] == shapes[j] and boolean(data, "alias_same"):
        dst[i] = src[j]
    else:
        view = fs.alias_of(src[j], shapes[i])
        if view is not None:
            dst[i] = view


def case_optimizers(data):
    threads(data)
    name = pick(data, sorted(OPTIMIZERS), "optimizer")
    nslots, defaults = OPTIMIZERS[name]
    count = pick(data, (1, 2, 0, 1, 3, 2, 1, 4), "params")
    as_list = count != 1 or boolean(data, "list_form")
    shapes = [shape(data, f"shape{i}", max_ndim=3, max_size=40_000) for i in range(count)]
    writable = fs.WRITABLE_LAYOUTS + ["readonly", "strided", "unaligned"]
    ws = [arg(data, s, f"w{i}", p_bad=0.1, layouts=writable) for i, s in enumerate(shapes)]
    gs = [arg(data, s, f"g{i}", p_bad=0.1) for i, s in enumerate(shapes)]
    slots = [[arg(data, s, f"slot{j}_{i}", p_bad=0.1, mag=1e2, huge=1e6, layouts=writable)
              for i, s in enumerate(shapes)] for j in range(nslots)]
    groups = [ws, gs] + slots
    if count and integer(data, 0, 4, "alias") == 0:
        _alias_one(data, groups, shapes)
    if as_list and integer(data, 0, 9, "lengths") == 0:  # lists of different lengths
        victim = groups[integer(data, 0, len(groups) - 1, "short")]
        victim.pop() if victim else victim.append(np.zeros(1, np.float32))

    # hyper-parameters float32 cannot represent (1e39, 1e-40, 10**400) are refused
    hyper = {k: real_scalar(data, k, default=v) for k, v in defaults.items()}
    if name == "sgd_update":
        hyper["nesterov"] = flag(data, "nesterov")
    if name == "rmsprop_update":
        hyper["eps_inside"] = flag(data, "eps_inside")
    if name == "adam_update":
        hyper["step"] = pick(data, ADAM_STEPS, "step")
    form = (lambda xs: xs) if as_list else (lambda xs: xs[0] if xs else None)
    no_velocity = name == "sgd_update" and integer(data, 0, 3, "no_velocity") == 0
    slot_args = [None] if no_velocity else [form(s) for s in slots]
    args = (form(ws), form(gs), *slot_args)

    # well formed, and nothing written overlaps anything else: the call must succeed
    scalars_ok = (all(fs.representable32(v) for k, v in hyper.items() if k in defaults)
                  and all(fs.flag_ok(hyper.get(f)) for f in ("nesterov", "eps_inside")))
    uses_slots = name != "sgd_update" or (scalars_ok and float(hyper["momentum"]) != 0.0)
    written = ws + ([x for s in slots for x in s] if uses_slots else [])
    arrays_written = [x for x in written if isinstance(x, np.ndarray)]
    arrays_read = [g for g in gs if isinstance(g, np.ndarray)]
    step = hyper.get("step", 1)
    valid = (scalars_ok and all(len(group) == count for group in groups)
             and all(w is not None and is_out(w, sh, []) for w, sh in zip(ws, shapes))
             and all(is_f32(g, sh) for g, sh in zip(gs, shapes))
             and (not uses_slots or (not no_velocity and all(
                 x is not None and is_out(x, sh, []) for s in slots for x, sh in zip(s, shapes))))
             and not any(np.may_share_memory(x, y) for i, x in enumerate(arrays_written)
                         for y in arrays_written[i + 1:] + arrays_read)
             and isinstance(step, (int, np.integer)) and not isinstance(step, bool) and 1 <= step < 2**62)
    check_kernel_call(name, args, hyper, written=written, tol=(1e-5, 1e-30), must_succeed=valid)

    # the training-loop path: the very same arrays again (the validated table is
    # reused from the first call), with new gradient values
    if not valid or not boolean(data, "again"):
        return
    for g in gs:
        if g.flags.writeable:
            g *= np.float32(-0.5)
    how = pick(data, ["same", "regroup", "reshape", "retype"], "again.how")
    if how == "same":
        check_kernel_call(name, args, hyper, written=written, tol=(1e-5, 1e-30), must_succeed=True)
        return
    # the same array objects split differently between the lists (the cache keys on
    # the grouping since e167f87), or changed in place (shape, dtype: the cached table
    # re-checks them; see test_fixed_optimizer_table_cache_in_place_metadata_change)
    if how == "regroup":  # move one array from one list to another, keeping the order
        groups = [list(ws), list(gs)] + ([] if no_velocity else [list(x) for x in slots])
        flat, sizes = [x for group in groups for x in group], [len(group) for group in groups]
        i, j = (integer(data, 0, len(groups) - 1, f"again.{k}") for k in "ij")
        if sizes[i]:
            sizes[i], sizes[j] = sizes[i] - 1, sizes[j] + 1
        cuts = np.cumsum([0] + sizes)
        args = tuple(flat[cuts[k]:cuts[k + 1]] for k in range(len(groups))) + ((None,) if no_velocity else ())
        if name == "sgd_update" and hyper["momentum"] != 0 and boolean(data, "again.momentum0"):
            hyper = dict(hyper, momentum=0.0)
    elif how == "reshape" and gs and gs[0].flags.c_contiguous:
        gs[0].shape = (1,) + gs[0].shape  # same memory, another shape
    elif how == "retype" and ws:
        ws[0].dtype = np.int32  # same memory, another dtype
    check_kernel_call(name, args, hyper, written=[x for x in _arrays_in(args).values()],
                      tol=(1e-5, 1e-30))


THREAD_COUNTS = (1, 2, 3, 4, 8, 64, 4096, 2**40, np.int64(2), np.uint8(3), 0, -1, -2**40, True, False,
                 1.0, 2.5, float("nan"), None, "2", [2], np.array(2), np.float32(2))


def case_threads(data):
    original = kernels.get_num_threads()
    try:
        n = pick(data, THREAD_COUNTS, "n")
        desc = f"kernels.set_num_threads({n!r})"
        _trace(desc)
        try:
            kernels.set_num_threads(n)
        except (TypeError, ValueError) as exc:
            assert str(exc).startswith("set_num_threads:"), f"{desc}: unclear message {exc}"
            assert kernels.get_num_threads() == original, f"{desc} raised but changed the thread count"
            ok = isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
            assert not ok, f"{desc} rejected a positive integer: {exc}"
        else:
            assert isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1, \
                f"{desc} accepted a non-positive-integer"
            assert kernels.get_num_threads() == min(int(n), 4096), desc
        if kernels.get_num_threads() > 4:
            kernels.set_num_threads(original)  # 4096 threads are allowed, but slow to start
        # a kernel still agrees with its twin at this thread count (at sizes that go parallel)
        rows = pick(data, [1, 7, 300], "rows")
        x = array(data, (rows, 130), "x", layouts=["C"])
        which = pick(data, ["gemm", "relu_backward_bias_grad", "softmax_xent_forward"], "kernel")
        if which == "gemm":
            w = array(data, (130, 110), "w", layouts=["C"])
            check_kernel_call("gemm", (x, w), tol=gemm_tolerance(x, w, 130, 1.0, 0.0, None, None),
                              must_succeed=True)
        elif which == "relu_backward_bias_grad":
            check_kernel_call("relu_backward_bias_grad", (x, x[::-1].copy()),
                              tol=[(0, TINY32), (1e-5, 2 * EPS32 * rows * _finite_max(x) + 1e-30)],
                              must_succeed=True)
        else:
            check_kernel_call("softmax_xent_forward", (x, np.zeros(rows, np.int64)),
                              tol=[(1e-5, 1e-3), (1e-5, 1e-6), (1e-5, 1e-3)], must_succeed=True)
    finally:
        kernels.set_num_threads(original)


def _raw_copy(x):
    """A plain C-ordered copy of x with the same bytes per element (None for a huge view)."""
    return np.array(x, copy=True, order="C", subok=False) if x.nbytes <= 2**30 else None


def case_gather(data):
    """kernels.gather_rows(src, idx, out): rows of any dtype copied as bytes, so the
    result must be np.take(src, idx, axis=0) byte for byte (NaN payloads, -0.0,
    NaT), written into out and returned when out is given."""
    threads(data)
    src = fs.gather_src(data, "src")
    src_ok = isinstance(src, np.ndarray) and src.ndim >= 1
    rows = src.shape[0] if src_ok else dims(data, "rows")
    row_shape = src.shape[1:] if src_ok else ()
    row_size = math.prod(row_shape)
    counts = fs.GATHER_BATCHES if row_size >= 130 else fs.GATHER_COUNTS
    count = min(pick(data, counts, "count"), max(1, 200_000 // max(row_size, 1)))
    idx = fs.gather_idx(data, count, rows, "idx")
    n = len(idx) if isinstance(idx, np.ndarray) and idx.ndim == 1 else count
    out_shape = (n,) + row_shape
    out, src, idx = fs.gather_out(data, out_shape, src.dtype if isinstance(src, np.ndarray) else F32,
                                  src, idx, "out")
    form = pick(data, ["positional", "keyword", "omitted"], "out_form")
    args, kwargs = (src, idx), {}
    if form == "positional" or (out is not None and form == "omitted"):
        args = (src, idx, out)
    elif form == "keyword":
        kwargs["out"] = out

    # well formed: numeric rows, a plain (not masked) 1-d integer ndarray of indices in
    # range, out None or a writeable, C-contiguous, aligned array of src's dtype and the
    # result's shape, sharing no memory with src or idx
    raw_idx = np.asarray(idx) if isinstance(idx, np.ndarray) else None  # masked entries too
    idx_ok = (raw_idx is not None and not isinstance(idx, np.ma.MaskedArray)
              and raw_idx.ndim == 1 and raw_idx.dtype.kind in "iu"
              and (raw_idx.size == 0 or (int(raw_idx.min()) >= 0 and int(raw_idx.max()) < rows)))
    out_ok = out is None or (
        isinstance(out, np.ndarray) and src_ok and out.dtype == src.dtype and out.shape == out_shape
        and out.flags.c_contiguous and out.flags.aligned and out.flags.writeable
        and not np.may_share_memory(out, src) and not np.may_share_memory(out, idx))
    valid = (src_ok and src.dtype.kind in "biufc" and idx_ok and out_ok
             and n * row_size * src.itemsize < 2**30)

    # the independent reference, from copies made before the call
    src_before = _raw_copy(src) if isinstance(src, np.ndarray) else None
    idx_before = np.array(idx, copy=True, subok=False) if isinstance(idx, np.ndarray) else None
    want = None
    if src_ok and idx_ok and not src.dtype.hasobject:
        want = np.take(src_before, raw_idx, axis=0) if src_before is not None else src[raw_idx]

    got = check_kernel_call("gather_rows", args, kwargs, written=[out], daz=False, bitwise=True,
                            must_succeed=valid)
    if got is None:
        return
    desc = describe_call("kernels.gather_rows", args, kwargs)
    if want is None:
        raise Mismatch(f"accepted a call np.take cannot make sense of\ncall: {desc}")
    if out is not None:
        assert got is out, f"returned a new array instead of out\ncall: {desc}"
    else:
        assert type(got) is np.ndarray and got.flags.c_contiguous and got.flags.writeable, desc
        assert not np.may_share_memory(got, src) and not np.may_share_memory(got, idx), desc
    assert_same_bytes(got, want, f"{desc}\nresult vs np.take(src, idx, axis=0)")
    # even where out overlaps them (which must be refused)
    if src_before is not None:
        assert_same_bytes(src, src_before, f"{desc}\nsrc was modified")
    assert_same_bytes(np.asarray(idx), idx_before, f"{desc}\nidx was modified")


# ---------------------------------------------------------------- planned steps

def _refusal(op, exc, desc, valid, what, types=(TypeError, ValueError)):
    """exc is acceptable only as one of `types` naming op, raised by a call that
    was not `valid` (`what` names the kind of call in the message)."""
    if not isinstance(exc, types):
        raise Mismatch(f"{type(exc).__name__} (expected TypeError/ValueError or a result): {exc}"
                       f"\ncall: {desc}") from exc
    if not str(exc).startswith(f"{op}:"):
        raise Mismatch(f"{type(exc).__name__} whose message does not start with '{op}:': "
                       f"{str(exc)!r}\ncall: {desc}") from exc
    if valid:
        raise Mismatch(f"a valid {what} was rejected: {exc}\ncall: {desc}") from exc


def case_row_gather(data):
    """kernels.RowGather(src, max_rows), then a few set_order/take calls: each one
    raises TypeError/ValueError naming gather_rows and leaves the object as it was
    (src, the order and the caller's arrays unchanged), or take returns
    src[order[start:stop]] byte for byte, as a view of the object's buffer."""
    threads(data)
    src = fs.gather_src(data, "src")
    if (isinstance(src, np.ndarray) and not src.flags.c_contiguous and src.nbytes < 2**26
            and boolean(data, "src.copy")):
        src = np.ascontiguousarray(src)  # mostly arrays it takes: the calls after are the point
    max_rows = fs.max_rows(data, "max_rows")
    desc = f"g = kernels.RowGather({fs.describe(src)}, {max_rows!r})"
    src_ok = isinstance(src, np.ndarray) and src.ndim >= 1 and not src.dtype.hasobject
    valid = (src_ok and src.flags.c_contiguous and src.flags.aligned and src.nbytes < 2**30
             and isinstance(max_rows, (int, np.integer)) and not isinstance(max_rows, (bool, np.bool_))
             and 1 <= max_rows <= 2**20)
    src_before = _raw_copy(src) if isinstance(src, np.ndarray) and not src.dtype.hasobject else None
    snap = _snapshot(_arrays_in(src))
    _trace(desc)
    try:
        g = kernels.RowGather(src, max_rows)
    except Exception as exc:  # a max_rows beyond memory: a named MemoryError
        _refusal("gather_rows", exc, desc, valid, "call", types=(TypeError, ValueError, MemoryError))
        _assert_unchanged(_arrays_in(src), snap, what=desc)
        return
    if not valid:
        raise Mismatch(f"accepted an src or max_rows it must refuse\ncall: {desc}")
    rows, cap = src.shape[0], int(max_rows)
    order = None  # the model: the order the object must be using (int64)
    calls = [desc]
    for step in range(integer(data, 1, 5, "calls")):
        if pick(data, ("set_order", "take") if step else ("set_order", "set_order", "take"),
                f"call{step}") == "set_order":
            given = fs.row_order(data, rows, f"order{step}")
            text = f"g.set_order({fs.describe(given)})"
            raw = np.asarray(given) if isinstance(given, np.ndarray) else None
            ok = (raw is not None and not isinstance(given, np.ma.MaskedArray) and raw.ndim == 1
                  and raw.dtype.kind in "iu" and (raw.size == 0 or (int(raw.min()) >= 0 and int(raw.max()) < rows)))
            before = np.array(given, copy=True, subok=False) if isinstance(given, np.ndarray) else None
            calls.append(text)
            _trace(text)
            try:
                g.set_order(given)
            except Exception as exc:
                _refusal("gather_rows", exc, "\n".join(calls), ok, "order")
            else:
                if not ok:
                    raise Mismatch("accepted an order it must refuse\ncalls:\n" + "\n".join(calls))
                order = raw.astype(np.int64)
            if before is not None and not np.array_equal(np.asarray(given), before):
                raise Mismatch("set_order modified the order it was given\ncalls:\n" + "\n".join(calls))
            if (order is not None and ok and isinstance(given, np.ndarray) and given.flags.writeable
                    and given.size and boolean(data, f"scribble{step}")):
                given[...] = np.array(rows + 5).astype(given.dtype)  # the object must hold a private copy
                calls.append("order[...] = rows + 5")
        else:
            n = len(order) if order is not None else 0
            start, stop = fs.take_bounds(data, n, cap, f"take{step}")
            text = f"g.take({start!r}, {stop!r})"
            calls.append(text)
            ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, np.bool_) for v in (start, stop))
            ok = (order is not None and ints and 0 <= start <= stop <= n and stop - start <= cap)
            _trace(text)
            try:
                got = g.take(start, stop)
            except Exception as exc:
                _refusal("gather_rows", exc, "\n".join(calls), ok, "take")
            else:
                if not ok:
                    raise Mismatch("take accepted bounds it must refuse\ncalls:\n" + "\n".join(calls))
                if got.nbytes and not np.may_share_memory(got, g.buffer):
                    raise Mismatch("take did not return a view of the buffer\ncalls:\n" + "\n".join(calls))
                assert_same_bytes(got, np.take(src_before, order[int(start):int(stop)], axis=0),
                                  "\n".join(calls) + "\nresult vs src[order[start:stop]]")
        _assert_unchanged(_arrays_in(src), snap, what="\n".join(calls))
    if order is not None and len(order):  # still usable after whatever failed
        got = g.take(0, min(len(order), cap))
        assert_same_bytes(got, np.take(src_before, order[:min(len(order), cap)], axis=0),
                          "\n".join(calls) + "\nfinal take(0, ...)")


def case_planned_steps(data):
    """fit's batches: RowGather."""
    case_row_gather(data)


# ================================================================ families: thread races
#
# Another Python thread rewrites the labels (or gather indices, or fit's x and y) while
# the main thread calls a kernel, an op or fit. cffi releases the GIL during each C
# call, so the writer runs while C reads. The writer only ever stores values from a
# per-element candidate set: the element's two valid values and, in some cases, one
# bad value (negative, >= the class count, 2**40, the dtype's extreme). Accepted:
# a TypeError/ValueError naming the op (only when a bad value can be written), or a
# result in which every row is the reference's for one of its valid candidates (a
# consistent snapshot per row: the wrappers copy the labels once, then check the copy).

RACE_TARGETS = ("softmax_xent_forward", "softmax_xent_backward", "softmax_cross_entropy",
                "gather_rows", "row_gather", "fit")
RACE_DTYPES = (np.int64, np.int32, np.uint16, np.uint64, np.int16)


class _Writer:
    """A thread that stores candidate values into `target` until stopped."""

    def __init__(self, target, choices, pattern):
        import threading
        self.target, self.choices, self.pattern = target, choices, pattern
        self.stop, self.started = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        t, choices, n, k = self.target, self.choices, len(self.target), 0
        while not self.stop.is_set():
            c = choices[k % len(choices)]
            if self.pattern == "whole":
                t[...] = c
            elif self.pattern == "element":
                i = (k * 7919) % n
                t[i] = c[i]
            else:  # "slices": a moving window
                i = (k * 131) % n
                t[i:i + 97] = c[i:i + 97]
            k += 1
            self.started.set()

    def __enter__(self):
        self.thread.start()
        self.started.wait(10)
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the writer thread did not stop"
        return False


def _race_candidates(data, rows, high, dtype):
    """(the array the writer rewrites, its values to write in turn, per-row valid
    candidates (rows, 2), whether a bad value can appear)."""
    rng = fs._rng()
    valid = [rng.integers(0, high, rows).astype(dtype) for _ in range(2)]
    bad_kind = pick(data, ["none", "none", "negative", "high", "huge", "extreme"], "bad")
    choices = list(valid)
    info = np.iinfo(dtype)
    bad_value = {"negative": -1, "high": high, "huge": 2**40, "extreme": int(info.max)}.get(bad_kind)
    if bad_value is not None and info.min <= bad_value <= info.max:
        spoiled = valid[0].copy()
        spoiled[rng.integers(0, rows, max(1, rows // 50))] = bad_value
        choices.append(spoiled)
    elif bad_value is not None and bad_value < 0:  # unsigned: -1 wraps to the maximum
        spoiled = valid[0].copy()
        spoiled[rng.integers(0, rows)] = info.max
        choices.append(spoiled)
    return valid[1].copy(), choices, np.stack(valid, axis=1).astype(np.int64), len(choices) > 2


def _torn(value, written, dtype):
    """value is what a read of an element could return while the writer stored the
    `written` values into it: each byte from one of them. A writer's copy (memcpy, or
    ASan's byte-wise one) need not store an element at once, so a reader may see a
    value that was never written whole; the kernels must stay safe and consistent
    with the value they read, whatever it is."""
    have = np.asarray(written, dtype).reshape(-1, 1).view(np.uint8)
    want = np.asarray([value], dtype).view(np.uint8)
    return bool(((have == want).any(axis=0)).all())


def _rows_match_some_candidate(got, per_candidate, what, written=None, every_label=None):
    """got[i] must be close to per_candidate[c][i] for some c (NaN-aware), or else to
    the result of a label that is a torn read of what the writer stored at i:
    every_label(i) -> (labels, their results for row i)."""
    ok = np.zeros(len(got), bool)
    for want in per_candidate:
        close = np.isclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)
        ok |= close.reshape(len(got), -1).all(axis=1)
    for i in np.flatnonzero(~ok):
        if every_label is not None:
            labels_, results = every_label(i)
            close = np.isclose(results, got[i], rtol=1e-5, atol=1e-6, equal_nan=True)
            matching = labels_[close.reshape(len(labels_), -1).all(axis=1)]
            if any(_torn(j, written[:, i], written.dtype) for j in matching):
                continue
        raise AssertionError(f"{what}: row {i} matches none of its labels' results")


def _torn_refusal(exc, written):
    """The refused value (the message's last number) is a torn read of some element."""
    found = re.search(r"received (-?\d+)$", str(exc))
    if not found:
        return False
    value = int(found.group(1))
    info = np.iinfo(written.dtype)
    if not info.min <= value <= info.max:
        return False
    have = written.T.copy().view(np.uint8).reshape(written.shape[1], written.shape[0], -1)
    want = np.asarray([value], written.dtype).view(np.uint8)
    return bool(((have == want).any(axis=1)).all(axis=1).any())


def case_thread_race(data):
    threads(data)
    target = pick(data, RACE_TARGETS, "target")
    rows = pick(data, [1, 7, 300, 4096], "rows")
    cols = pick(data, [1, 3, 10, 130], "cols")
    dtype = np.dtype(pick(data, RACE_DTYPES, "dtype"))
    pattern = pick(data, ["whole", "element", "slices"], "pattern")
    reps = 1 if target == "fit" else pick(data, [1, 3, 8], "calls")
    rng = fs._rng()
    desc = f"{target} rows={rows} cols={cols} labels {dtype} written {pattern}"
    _trace(desc)
    if target in ("gather_rows", "row_gather"):
        src = fs.raw_bits((rows, cols), pick(data, [np.float32, np.int64, np.uint8], "src dtype"))
        labels_, choices, valid, can_fail = _race_candidates(data, rows, rows, dtype)
        op = "gather_rows"
    elif target == "fit":
        classes = min(max(cols, 2), 10)
        labels_, choices, valid, can_fail = _race_candidates(data, rows, classes, dtype)
        op = None
    else:
        logits = (rng.standard_normal((rows, cols)) * 3).astype(F32)
        labels_, choices, valid, can_fail = _race_candidates(data, rows, cols, dtype)
        op = target
    written = np.stack(choices)
    classes_ = np.arange(cols)
    if target in ("softmax_xent_forward", "softmax_xent_backward", "softmax_cross_entropy"):
        per_label = [reference.softmax_xent_forward(logits, valid[:, c]) for c in (0, 1)]
        probs_want = per_label[0][1]
        grads_want = [reference.softmax_xent_backward(probs_want, valid[:, c], 0.5) for c in (0, 1)]
        every_loss = lambda i: (classes_, reference.softmax_xent_forward(
            np.repeat(logits[i:i + 1], cols, 0), classes_)[2])
        every_grad = lambda i: (classes_, reference.softmax_xent_backward(
            np.repeat(probs_want[i:i + 1], cols, 0), classes_, 0.5))
        all_losses = reference.softmax_xent_forward(np.repeat(logits, cols, 0), np.tile(classes_, rows))[2]
        all_losses = all_losses.reshape(rows, cols)
    if target in ("gather_rows", "row_gather"):
        src_rows = src.view(np.uint8).astype(np.float64).reshape(rows, -1)
        every_row = lambda i: (np.arange(rows), src_rows)
    with _Writer(labels_, choices, pattern):
        for _ in range(reps):
            try:
                if target == "softmax_xent_forward":
                    loss, probs, row_loss = kernels.softmax_xent_forward(logits, labels_)
                    assert np.allclose(probs, probs_want, rtol=1e-5, atol=1e-6), f"{desc}: probs"
                    _rows_match_some_candidate(row_loss, [p[2] for p in per_label], desc, written, every_loss)
                    assert np.isclose(loss, np.mean(row_loss, dtype=np.float64), rtol=1e-5, atol=1e-6), desc
                elif target == "softmax_xent_backward":
                    grad = kernels.softmax_xent_backward(probs_want, labels_, 0.5)
                    _rows_match_some_candidate(grad, grads_want, desc, written, every_grad)
                elif target == "softmax_cross_entropy":
                    t = mg.Tensor(logits, requires_grad=True)
                    loss = mg.softmax_cross_entropy(t, labels_)
                    loss.backward(np.array(0.5 * rows, F32))  # d(mean)/d(logits) * rows * 0.5
                    lo = np.minimum(per_label[0][2], per_label[1][2]).mean(dtype=np.float64)
                    hi = np.maximum(per_label[0][2], per_label[1][2]).mean(dtype=np.float64)
                    within = lambda lo, hi: lo - 1e-4 * (1 + abs(lo)) <= float(loss.data) <= hi + 1e-4 * (1 + abs(hi))
                    # a torn label may be any class: then the loss is only bounded by all of them
                    assert within(lo, hi) or within(all_losses.min(axis=1).mean(dtype=np.float64),
                                                    all_losses.max(axis=1).mean(dtype=np.float64)), desc
                    _rows_match_some_candidate(t.grad, grads_want, desc, written, every_grad)
                elif target == "gather_rows":
                    out = kernels.gather_rows(src, labels_)
                    _rows_match_some_candidate(out.view(np.uint8).astype(np.float64).reshape(rows, -1),
                                               [src_rows[valid[:, c]] for c in (0, 1)], desc,
                                               written, every_row)
                elif target == "row_gather":
                    g = kernels.RowGather(src, rows)
                    g.set_order(labels_)
                    out = g.take(0, rows)
                    _rows_match_some_candidate(out.view(np.uint8).astype(np.float64).reshape(rows, -1),
                                               [src_rows[valid[:, c]] for c in (0, 1)], desc,
                                               written, every_row)
                else:
                    _race_fit(data, rng, rows, classes, labels_, desc)
            except (TypeError, ValueError) as exc:
                assert can_fail or _torn_refusal(exc, written), \
                    f"{desc}: only valid labels were written, but: {exc!r}"
                if op is not None:  # the op reports its loss kernel's check
                    names = (op, "softmax_xent_forward", "softmax_xent_backward") if op == \
                        "softmax_cross_entropy" else (op,)
                    assert str(exc).split(":")[0] in names, f"{desc}: unclear message {exc}"
                else:
                    assert re.search(rf"(class indices|labels) in \[0, {classes}\)", str(exc)), \
                        f"{desc}: unclear message {exc}"


def _race_fit(data, rng, rows, classes, y, desc):
    """fit while the writer rewrites y; x is rewritten too (any float values are valid)."""
    from minigrad import layers, models
    x = rng.standard_normal((rows, 8)).astype(F32)
    utils_seed = integer(data, 0, 2**16, "model seed")
    mg.utils.set_random_seed(utils_seed)
    model = models.Sequential([layers.Dense(6, activation="relu", input_shape=(8,)),
                               layers.Dense(classes, activation="softmax")])
    model.compile(optimizer=pick(data, ["adam", "sgd", "rmsprop"], "optimizer"),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    with _Writer(x, [x * 0.5, x, -x], "slices"):
        model.fit(x, y, batch_size=pick(data, [16, 64, 512], "batch_size"), epochs=1, verbose=0,
                  shuffle=boolean(data, "shuffle"))
    assert all(np.isfinite(w).all() for w in model.get_weights()), f"{desc}: non-finite weights"


# ================================================================ families: fork
#
# Kernels run on a team of threads (at sizes that go parallel), then the process forks
# (os.fork or multiprocessing's 'fork'); the child runs the same computation and sends
# its numbers back. libgomp's team does not survive a fork: without the fork handler
# the child waits forever in its first parallel region. Every result is bitwise equal
# to the parent's (no number depends on the thread count), within a timeout.

FORK_WORK = ("gemm", "softmax_xent", "relu_backward_bias_grad", "gather_rows", "adam_update",
             "conv2d_forward", "max_pool2d_forward", "train_step")


def _fork_work(which, big, seed_):
    """A deterministic computation of `which`: a list of arrays."""
    rng = np.random.default_rng(seed_)
    n = 512 if big else 5
    if which == "gemm":
        a, b = rng.standard_normal((n, 300)).astype(F32), rng.standard_normal((300, 140)).astype(F32)
        return [kernels.gemm(a, b, bias=np.ones(140, F32), relu=True)]
    if which == "softmax_xent":
        logits = rng.standard_normal((n * 8, 10)).astype(F32)
        labels_ = rng.integers(0, 10, n * 8)
        loss, probs, row_loss = kernels.softmax_xent_forward(logits, labels_)
        return [loss, probs, row_loss, kernels.softmax_xent_backward(probs, labels_, 0.25)]
    if which == "relu_backward_bias_grad":
        y, dy = rng.standard_normal((n * 8, 130)).astype(F32), rng.standard_normal((n * 8, 130)).astype(F32)
        return list(kernels.relu_backward_bias_grad(y, dy))
    if which == "gather_rows":
        src = rng.standard_normal((n * 4, 784)).astype(F32)
        return [kernels.gather_rows(src, rng.permutation(n * 4))]
    if which == "adam_update":
        w, g = rng.standard_normal(n * 200).astype(F32), rng.standard_normal(n * 200).astype(F32)
        m, v = np.zeros_like(w), np.zeros_like(w)
        for step in (1, 2):
            kernels.adam_update(w, g, m, v, 1e-3, 0.9, 0.999, 1e-7, step)
        return [w, m, v]
    if which == "conv2d_forward":
        x = rng.standard_normal((max(n // 16, 1), 28, 28, 3)).astype(F32)
        w = rng.standard_normal((3, 3, 3, 8)).astype(F32)
        out = kernels.conv2d_forward(x, w, padding="same")
        return list(out) if isinstance(out, tuple) else [out]
    if which == "max_pool2d_forward":
        x = rng.standard_normal((max(n // 8, 1), 28, 28, 16)).astype(F32)
        return list(kernels.max_pool2d_forward(x, 2))
    from minigrad import layers, models
    mg.utils.set_random_seed(seed_)
    model = models.Sequential([layers.Dense(64, activation="relu", input_shape=(784,)),
                               layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = rng.standard_normal((n, 784)).astype(F32)
    model.train_step(x, rng.integers(0, 10, n))
    return model.get_weights() + model.optimizer.variables()


def _fork_child(conn, which, big, seed_):
    try:
        conn.send((kernels.get_num_threads(), [np.array(a) for a in _fork_work(which, big, seed_)]))
    finally:
        conn.close()


def case_fork(data):
    import multiprocessing
    n_threads = pick(data, [2, 3, 4], "threads")
    kernels.set_num_threads(n_threads)
    which = pick(data, FORK_WORK, "work")
    big = boolean(data, "parallel size")
    how = pick(data, ["os.fork", "multiprocessing fork"], "how")
    seed_ = integer(data, 0, 2**16, "seed")
    desc = f"{which} ({'parallel' if big else 'small'} size, {n_threads} threads) via {how}"
    _trace(desc)
    # the parent's numbers, with the team started (the big size runs in parallel)
    parent = [np.array(a) for a in _fork_work(which, big, seed_)]
    kernels.gemm(np.ones((300, 300), F32), np.ones((300, 300), F32))  # a parallel region for sure
    read, write = multiprocessing.Pipe(duplex=False)
    if how == "os.fork":
        pid = os.fork()
        if pid == 0:  # the child never returns into hypothesis
            code = 70
            try:
                read.close()
                _fork_child(write, which, big, seed_)
                code = 0
            finally:
                os._exit(code)
        proc = None
    else:
        proc = multiprocessing.get_context("fork").Process(target=_fork_child,
                                                           args=(write, which, big, seed_))
        proc.start()
    write.close()
    finished = read.poll(60)
    result = read.recv() if finished else None
    if proc is None:
        if not finished:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
    else:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()
        code = proc.exitcode
    read.close()
    assert finished, f"{desc}: the child did not finish in 60 s (hung in its first kernel?)"
    assert code == 0, f"{desc}: the child exited with {code}"
    threads_in_child, numbers = result
    assert threads_in_child == 1, f"{desc}: the child runs {threads_in_child} threads, expected 1"
    assert len(numbers) == len(parent), desc
    for i, (got, want) in enumerate(zip(numbers, parent)):
        assert_same_bytes(got, want, f"{desc}: result {i}, child vs parent")


# ================================================================ families: ops

OP_DTYPES = [np.dtype(t) for t in (np.float64, np.float16, np.int32, np.int8, np.uint8, np.bool_, np.int64)]


def tensor_or_value(data, s, label, *, p_bad=0.15, **kw):
    """An operand for an op: usually a Tensor (requires_grad or not) built from an
    array of any real dtype and layout; else a raw array, list, scalar or junk."""
    kind = integer(data, 0, 99, f"{label}.operand")
    if kind < 100 * (1 - p_bad) * 0.8:
        dtype = F32 if integer(data, 0, 3, f"{label}.f32") else pick(data, OP_DTYPES, f"{label}.dtype")
        x = array(data, s, label, dtype=dtype, **kw)
        return mg.Tensor(x, requires_grad=boolean(data, f"{label}.grad"))
    if kind < 100 * (1 - p_bad):
        form = pick(data, ["array", "list", "scalar"], f"{label}.raw")
        x = array(data, s, label, **kw)
        return x if form == "array" else (x.tolist() if form == "list" else 1.5)
    return arg(data, s, label, p_bad=1.0, allow_huge=False)


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


def reduce_to(g, shape_):
    """Sum a float64 gradient over the axes broadcasting added or stretched."""
    g = np.asarray(g, dtype=np.float64)
    while g.ndim > len(shape_):
        g = g.sum(axis=0)
    for i, n in enumerate(shape_):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


def check_op_call(desc, fn, operands, expect, *, upstream=None, tol=(2e-6, 1e-30), grad_tol=None,
                  no_grad=(), nan_for_inf=False):
    """THE ORACLE for public ops.

    fn() performs the op on `operands` (Tensors and raw values); expect() returns
    (forward value, {operand index: gradient given upstream G}) computed in NumPy
    on the float32 conversions, or raises _Invalid if the ops must reject the
    operands. The op must raise TypeError/ValueError exactly when it is invalid
    (OverflowError is allowed too), return a float32 Tensor equal to the forward
    value otherwise, and backward must give every requires_grad leaf its gradient.
    No input array may change."""
    arrays = _arrays_in([o.data if isinstance(o, mg.Tensor) else o for o in operands])
    snap = _snapshot(arrays)
    try:
        want, grads = expect()
        invalid = None
    except _Invalid as exc:
        invalid = str(exc)
    _trace(desc)
    try:
        with np.errstate(all="ignore"):
            out = fn()
    except (TypeError, ValueError, OverflowError) as exc:
        if invalid is None:
            raise Mismatch(f"{desc}: rejected valid operands: {type(exc).__name__}: {exc}") from exc
        _assert_unchanged(arrays, snap, what=desc)
        return
    except Exception as exc:
        raise Mismatch(f"{desc}: {type(exc).__name__} (expected TypeError/ValueError or a result): "
                       f"{exc}") from exc
    if invalid is not None:
        raise Mismatch(f"{desc}: accepted operands it should reject ({invalid})")
    assert isinstance(out, mg.Tensor), f"{desc}: returned {type(out).__name__}"
    assert type(out.data) is np.ndarray and out.dtype == F32, f"{desc}: data {type(out.data)} {out.dtype}"
    assert_close(out.data, want, *tol, f"{desc}: forward", nan_for_inf)
    _assert_unchanged(arrays, snap, what=f"{desc} forward")
    leaves = [o for i, o in enumerate(operands)
              if isinstance(o, mg.Tensor) and o.requires_grad and i not in no_grad]
    assert out.requires_grad == bool(leaves), f"{desc}: requires_grad {out.requires_grad}"
    if not leaves:
        return
    if upstream is None:
        G = np.ones(out.shape, F32)
        if out.size != 1:  # documented: RuntimeError, as in PyTorch
            with pytest.raises(RuntimeError, match="^backward: grad can be omitted only"):
                out.backward()
            assert all(o.grad is None for o in leaves)
            return
    else:
        G = as_f32(upstream)
        if G is None or G.shape != out.shape:  # a wrong upstream gradient
            try:
                out.backward(upstream)
            except (TypeError, ValueError):
                assert all(o.grad is None for o in leaves), f"{desc}: a failed backward left gradients"
                return
            raise Mismatch(f"{desc}: backward accepted the upstream gradient {fs.describe(upstream)} "
                           f"for an output of shape {out.shape}")
    upstream_copy = copy.deepcopy(upstream)
    with np.errstate(all="ignore"):
        out.backward(upstream)
    _assert_unchanged(arrays, snap, what=f"{desc} backward")
    if isinstance(upstream, np.ndarray):
        assert np.array_equal(upstream, upstream_copy, equal_nan=True), f"{desc}: backward modified its grad"
    for i in no_grad:
        if isinstance(operands[i], mg.Tensor):
            assert operands[i].grad is None, f"{desc}: operand {i} must get no gradient"
    expected, atols = {}, {}  # by leaf: the gradient, and its tolerance (summed if the leaf is used twice)
    rtol, atol = grad_tol(G) if grad_tol else (1e-5, 1e-30)
    for i, o in enumerate(operands):
        if isinstance(o, mg.Tensor) and o.requires_grad and i not in no_grad:
            with np.errstate(all="ignore"):
                gi, ai = grads[i](np.asarray(G, F32)), atol
                if isinstance(gi, tuple):  # (gradient, sum of the |terms| it adds up)
                    gi, ai = gi[0], 8 * EPS32 * np.nan_to_num(np.asarray(gi[1], dtype=np.float64))
                gi = np.asarray(gi, dtype=np.float64).reshape(o.shape)
                ai = np.broadcast_to(ai, o.shape)
            expected[id(o)] = expected[id(o)] + gi if id(o) in expected else gi
            atols[id(o)] = atols[id(o)] + ai if id(o) in atols else ai
    for o in leaves:
        assert o.grad is not None, f"{desc}: a leaf got no gradient"
        assert o.grad.shape == o.shape and o.grad.dtype == F32, \
            f"{desc}: gradient of shape {o.grad.shape} dtype {o.grad.dtype} for a leaf of shape {o.shape}"
        assert_close(o.grad, expected[id(o)], rtol, atols[id(o)], f"{desc}: gradient", nan_for_inf)


class _Invalid(Exception):
    pass


UPSTREAM_KINDS = ("array", "array", "array", "array", "default", "float64", "int8", "list", "Tensor",
                  "wrong shape", "complex", "str", "None-like")


def upstream_grad(data, out_shape):
    """The gradient passed to backward(): usually a float32 array of the output's
    shape; else omitted (None), another real dtype, a list, a Tensor, or wrong."""
    if out_shape is None:
        return None
    kind = pick(data, UPSTREAM_KINDS, "G.kind")
    if kind == "default":
        return None
    if kind == "wrong shape":
        return np.ones(fs.wrong_shape(data, out_shape, "G"), F32)
    if kind in ("complex", "str", "None-like"):
        return {"complex": np.ones(out_shape, np.complex64), "str": "1", "None-like": [None]}[kind]
    g = array(data, out_shape, "G", mag=30.0, huge=30.0, layouts=fs.LAYOUTS)
    if kind == "float64":
        return g.astype(np.float64)
    if kind == "int8":
        return np.nan_to_num(g).clip(-100, 100).astype(np.int8)
    if kind == "list":
        return g.tolist()
    return mg.Tensor(g) if kind == "Tensor" else g


def _need(a, what):
    if a is None:
        raise _Invalid(f"{what} is not real numeric data")
    return a


def broadcast_shape_like(data, s, label):
    """A shape that broadcasts with s (mostly), or any shape."""
    kind = integer(data, 0, 9, f"{label}.bshape")
    if kind == 0:
        return shape(data, label, max_ndim=3, max_size=2000)
    out = list(s)
    drop = integer(data, 0, len(out), f"{label}.drop")
    out = out[drop:]
    return tuple(1 if integer(data, 0, 3, f"{label}.one{i}") == 0 else n for i, n in enumerate(out))


EXPONENTS = (2, 0, 1, 3, 0.5, -1, -2, 1.5, 1 / 3, -0.0, 2.0, np.float32(2), np.int64(3), float("nan"),
             float("inf"), 1e39, 10**400, True, "2", None, 1 + 1j, mg.Tensor(2.0), np.array(2.0), [2])
ELEMENTWISE = ["add", "sub", "mul", "div", "radd", "rsub", "rmul", "rdiv", "neg", "pow", "exp", "log",
               "sigmoid", "tanh", "abs", "sqrt", "maximum", "minimum"]
UNARY = ("neg", "pow", "exp", "log", "sigmoid", "tanh", "abs", "sqrt")


def _sigmoid64(x):
    """sigmoid in float64 without overflow, rounded once to float32."""
    x = x.astype(np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(F32)


def _extremum_share(G, mine, other, wins):
    """PyTorch's maximum/minimum gradient: all where this side wins, half on ties."""
    return np.where(wins(mine, other), G, np.where(mine == other, G * np.float32(0.5), np.float32(0)))


def case_elementwise_ops(data):
    op = pick(data, ELEMENTWISE, "op")
    sa = shape(data, "a", max_ndim=3, max_size=2000)
    a = tensor_or_value(data, sa, "a", p_bad=0.0, mag=30.0, huge=30.0)
    if not isinstance(a, mg.Tensor):
        a = mg.Tensor(as_f32(a), requires_grad=True)
    A = a.data
    same = op not in UNARY and integer(data, 0, 9, "same") == 0
    b = a if same else tensor_or_value(data, broadcast_shape_like(data, sa, "b"), "b", mag=30.0, huge=30.0)
    exponent = pick(data, EXPONENTS, "exponent")
    fns = {
        "add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b, "div": lambda: a / b,
        "radd": lambda: b + a, "rsub": lambda: b - a, "rmul": lambda: b * a, "rdiv": lambda: b / a,
        "neg": lambda: -a, "pow": lambda: a ** exponent, "exp": lambda: a.exp(), "log": lambda: a.log(),
        "sigmoid": lambda: mg.sigmoid(a), "tanh": lambda: a.tanh(), "abs": lambda: abs(a),
        "sqrt": lambda: mg.sqrt(a), "maximum": lambda: mg.maximum(a, b), "minimum": lambda: a.minimum(b),
    }
    B = as_f32(b)

    def expect():
        f32 = np.float32
        if op in ("neg", "exp", "log"):
            return {"neg": (-A, {0: lambda G: -G}),
                    "exp": (np.exp(A), {0: lambda G: G * np.exp(A)}),
                    "log": (np.log(A), {0: lambda G: G / A})}[op]
        if op in ("sigmoid", "tanh", "abs", "sqrt"):
            y = {"sigmoid": _sigmoid64(A), "tanh": np.tanh(A.astype(np.float64)).astype(F32),
                 "abs": np.abs(A), "sqrt": np.sqrt(A)}[op]
            # sigmoid' = y (1 - y) and tanh' = 1 - y^2 cancel near |y| = 1: the kernels' y
            # (within 2 ulp) moves them by a few ulp of y, so the tolerance scales with |G| y
            y64 = y.astype(np.float64)
            return y, {0: {"sigmoid": lambda G: (G * y64 * (1 - y64), np.abs(G) * y64),
                           "tanh": lambda G: (G * (1 - y64 ** 2), 2 * np.abs(G) * y64 ** 2),
                           "abs": lambda G: G * np.sign(A),
                           "sqrt": lambda G: G / (y + y)}[op]}
        if op == "pow":
            if isinstance(exponent, (mg.Tensor, bool, str)) or not np.isscalar(exponent) or \
                    isinstance(exponent, complex):
                raise _Invalid("exponent")
            try:
                p = f32(float(exponent))
            except OverflowError:  # 10**400: float() overflows, an OverflowError is fine
                raise _Invalid("exponent beyond float") from None
            return np.power(A, p), {0: lambda G: G * p * np.power(A, p - f32(1))}
        _need(B, "b")
        try:
            out_shape = np.broadcast_shapes(A.shape, B.shape)
        except ValueError:
            raise _Invalid("shapes do not broadcast") from None
        if op in ("maximum", "minimum"):
            wins = np.greater if op == "maximum" else np.less
            return ({"maximum": np.maximum, "minimum": np.minimum}[op](A, B).astype(F32),
                    {0: lambda G: reduce_to(_extremum_share(G, A, B, wins), A.shape),
                     1: lambda G: reduce_to(_extremum_share(G, B, A, wins), B.shape)})
        left, right = (A, B) if op in ("add", "sub", "mul", "div") else (B, A)
        ia = 0 if op in ("add", "sub", "mul", "div") else 1  # a's place
        sl, sr = left.shape, right.shape
        base = op.lstrip("r") if op != "rdiv" else "div"
        value = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}[base](left, right)
        term_l = {"add": lambda G: G, "sub": lambda G: G, "mul": lambda G: G * right,
                  "div": lambda G: G / right}[base]
        term_r = {"add": lambda G: G, "sub": lambda G: -G, "mul": lambda G: G * left,
                  "div": lambda G: -G * left / (right * right)}[base]

        def gl(G):  # the gradient, and the sum of the magnitudes of the terms it adds up
            return reduce_to(term_l(G), sl), reduce_to(np.abs(term_l(G)), sl)

        def gr(G):
            return reduce_to(term_r(G), sr), reduce_to(np.abs(term_r(G)), sr)
        assert value.shape == out_shape
        return value.astype(F32), ({0: gl, 1: gr} if ia == 0 else {0: gr, 1: gl})

    operands = [a] if op in UNARY else [a, b]
    with np.errstate(all="ignore"):
        try:
            out_shape = np.shape(expect()[0])
        except _Invalid:
            out_shape = None
    upstream = upstream_grad(data, out_shape)

    check_op_call(f"{op}: a={fs.describe(A)}, b={fs.describe(b)}", fns[op], operands, expect,
                  upstream=upstream, tol=(2e-6, 1e-30), grad_tol=lambda G: (2e-6, 1e-30))


def case_shape_ops(data):
    s = shape(data, "x", max_ndim=4, max_size=3000)
    x = tensor_or_value(data, s, "x", p_bad=0.0, mag=30.0, huge=30.0)
    if not isinstance(x, mg.Tensor):
        x = mg.Tensor(as_f32(x), requires_grad=True)
    X = x.data
    op = pick(data, ["sum", "mean", "reshape", "T", "max"], "op")
    axis = draw(data, st.one_of(st.none(), st.integers(-5, 5),
                                st.lists(st.integers(-5, 5), max_size=3).map(tuple),
                                st.sampled_from([1.5, "0", [0], True, np.int64(0), (0, "a")])), "axis")
    keepdims = boolean(data, "keepdims")
    new_shape = draw(data, st.one_of(
        st.permutations(list(s)).map(tuple),
        st.just((-1,)), st.just(-1),
        st.lists(st.integers(-2, 6), max_size=4).map(tuple),
        st.sampled_from([(), (1, -1), "3", (2.0,), None])), "new_shape")
    ndim = X.ndim

    def norm_axes():
        if axis is None:
            return tuple(range(ndim))
        axes = (axis,) if isinstance(axis, (int, np.integer)) else axis
        if not isinstance(axes, (tuple, list)):
            raise _Invalid("axis")
        out = []
        for ax in axes:
            if not isinstance(ax, (int, np.integer)) or not -ndim <= ax < ndim:
                raise _Invalid("axis")
            out.append(int(ax) % ndim)
        return tuple(sorted(set(out)))

    def expect():
        if op in ("sum", "mean"):
            axes = norm_axes()
            count = int(np.prod([X.shape[i] for i in axes]))
            if op == "mean" and count == 0:
                raise _Invalid("mean of nothing")
            value = X.astype(np.float64).sum(axis=axes, keepdims=keepdims)
            kept = tuple(1 if i in axes else n for i, n in enumerate(X.shape))
            div = count if op == "mean" else 1
            return value / div, {0: lambda G: np.broadcast_to(np.reshape(G, kept) / np.float64(div), X.shape)}
        if op == "reshape":
            try:
                value = np.reshape(X, new_shape)
            except Exception:
                raise _Invalid("shape") from None
            return value, {0: lambda G: np.reshape(G, X.shape)}
        if op == "max":
            return expect_max()
        return X.T, {0: lambda G: G.T}

    def expect_max():
        """One integer axis or None; the whole gradient to the first maximum (or first NaN)."""
        if axis is not None and (isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer))):
            raise _Invalid("max takes one integer axis")
        ax = None
        if axis is not None:
            if not -max(ndim, 1) <= axis < max(ndim, 1):
                raise _Invalid("axis")
            ax = int(axis) % ndim if ndim else None  # a 0-d tensor reduces along 0 or -1
        flat = X.reshape(-1) if ax is None else X
        along = 0 if ax is None else ax
        if flat.shape[along] == 0:
            raise _Invalid("max of nothing")
        first = np.argmax(flat, axis=along, keepdims=True)

        def grad(G):
            g = np.zeros(flat.shape)
            np.put_along_axis(g, first, np.reshape(G, first.shape), along)
            return g.reshape(X.shape)
        return np.max(X, axis=ax, keepdims=keepdims), {0: grad}

    fn = {"sum": lambda: x.sum(axis=axis, keepdims=keepdims),
          "mean": lambda: x.mean(axis=axis, keepdims=keepdims),
          "reshape": lambda: x.reshape(new_shape), "T": lambda: x.T,
          "max": lambda: x.max(axis=axis, keepdims=keepdims)}[op]
    try:
        out_shape = np.shape(expect()[0])
    except _Invalid:
        out_shape = None
    upstream = upstream_grad(data, out_shape)
    check_op_call(f"{op}(axis={axis!r}, keepdims={keepdims}, shape={new_shape!r}) of {fs.describe(X)}",
                  fn, [x], expect, upstream=upstream,
                  tol=(1e-5, 4 * EPS32 * max(X.size, 1) * _finite_max(X) + 1e-30))


def _has_inf(x):
    """x (a Tensor or array) holds an infinity: an infinite target times a log-probability
    that is 0 in float32 but tiny in float64 is NaN in C and inf in the twin."""
    if getattr(x, "nbytes", 0) >= 2**30:  # a huge broadcast view
        return False
    a = as_f32(x)
    return a is not None and bool(np.isinf(a).any())


C_OPS = ["matmul", "@", "r@", "dense", "relu", "softmax", "softmax_cross_entropy"]


def case_c_ops(data):
    op = pick(data, C_OPS, "op")
    n, k, m = dims(data, "n"), dims(data, "k"), dims(data, "m")
    vk = dict(mag=30.0, huge=1e3)
    if op in ("matmul", "@", "r@"):
        a = tensor_or_value(data, (n, k), "a", **vk)
        b = tensor_or_value(data, (k, m), "b", **vk)
        # "@": Tensor @ anything; "r@": anything @ Tensor (Tensor.__rmatmul__)
        if op == "@" and not isinstance(a, mg.Tensor):
            a = mg.Tensor(as_f32(a) if as_f32(a) is not None else np.zeros((n, k), F32), requires_grad=True)
        if op == "r@" and not isinstance(b, mg.Tensor):
            b = mg.Tensor(as_f32(b) if as_f32(b) is not None else np.zeros((k, m), F32), requires_grad=True)
        fn = (lambda: mg.matmul(a, b)) if op == "matmul" else (lambda: a @ b)
        operands = [a, b]

        def expect():
            A, B = _need(as_f32(a), "a"), _need(as_f32(b), "b")
            if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
                raise _Invalid("shapes")
            A, B = _daz(A), _daz(B)
            value = reference.gemm(A, B)
            return value, {0: lambda G: G.astype(np.float64) @ B.T.astype(np.float64),
                           1: lambda G: A.T.astype(np.float64) @ G.astype(np.float64)}
        tol = (1e-4, 16 * EPS32 * math.sqrt(max(k, 1)) * _finite_max(as_f32(a)) * _finite_max(as_f32(b))
               + 1e-30) if as_f32(a) is not None and as_f32(b) is not None else (1e-5, 1e-30)
    elif op == "dense":
        x = tensor_or_value(data, (n, k), "x", **vk)
        w = tensor_or_value(data, (k, m), "w", **vk)
        b = None if boolean(data, "no_bias") else tensor_or_value(data, (m,), "b", **vk)
        activation = pick(data, [None, "relu", "linear", "tanh", 1, ""], "activation")
        fn = lambda: mg.dense(x, w, b, activation)  # noqa: E731
        operands = [x, w, b]

        def expect():
            if activation not in (None, "relu", "linear"):
                raise _Invalid("activation")
            X, W = _need(as_f32(x), "x"), _need(as_f32(w), "w")
            B = None if b is None else _need(as_f32(b), "b")
            if X.ndim != 2 or W.ndim != 2 or X.shape[1] != W.shape[0] or (
                    B is not None and B.shape != (W.shape[1],)):
                raise _Invalid("shapes")
            X, W, B = _daz(X), _daz(W), _daz(B)
            y = reference.gemm(X, W, bias=B, relu=activation == "relu")

            def dz(G):
                return np.where(y > 0, G, 0).astype(np.float64) if activation == "relu" else G.astype(np.float64)
            return y, {0: lambda G: dz(G) @ W.T.astype(np.float64),
                       1: lambda G: X.T.astype(np.float64) @ dz(G),
                       2: lambda G: dz(G).sum(axis=0)}
        xs = [as_f32(v) for v in (x, w)]
        tol = ((1e-4, 16 * EPS32 * math.sqrt(max(k, 1)) * _finite_max(xs[0]) * _finite_max(xs[1])
                + 4 * EPS32 * _finite_max(as_f32(b) if b is not None else None) + 1e-30)
               if all(v is not None for v in xs) else (1e-5, 1e-30))
    elif op in ("relu", "softmax"):
        s = shape(data, "x", max_ndim=4, max_size=5000)
        x = tensor_or_value(data, s, "x", subnormal=op == "relu", **vk)
        fn = (lambda: mg.relu(x)) if op == "relu" else (lambda: mg.softmax(x))
        operands = [x]

        def expect():
            X = _need(as_f32(x), "x")
            if op == "relu":
                y = reference.relu_forward(X)
                return y, {0: lambda G: np.where(y > 0, G, 0)}
            if X.ndim and X.shape[-1] == 0:  # numpy's max has nothing to reduce
                raise _Invalid("softmax over an empty last axis")
            Z = X.astype(np.float64)
            Z = Z - Z.max(axis=-1, keepdims=True) if Z.size else Z
            E = np.exp(Z)
            y = (E / E.sum(axis=-1, keepdims=True) if Z.size else Z).astype(F32)  # what the op saves
            y64 = y.astype(np.float64)
            return y, {0: lambda G: y64 * (G - (G * y64).sum(axis=-1, keepdims=True))}
        tol = (1e-5, 1e-6) if op == "softmax" else (0, 0)
    else:  # softmax_cross_entropy
        logits = tensor_or_value(data, (n, m), "logits", **vk)
        dense = boolean(data, "dense")
        target = (tensor_or_value(data, (n, m), "target", p_bad=0.1, **vk) if dense
                  else labels(data, n, m, "labels"))
        if isinstance(target, mg.Tensor) and boolean(data, "raw_target"):
            target = target.data
        fn = lambda: mg.softmax_cross_entropy(logits, target)  # noqa: E731
        operands = [logits, target]

        def expect():
            Z = _need(as_f32(logits), "logits")
            T = target.data if isinstance(target, mg.Tensor) else np.asarray(target)
            if Z.ndim != 2 or Z.shape[1] == 0:
                raise _Invalid("logits")
            if T.ndim == 1:
                if T.dtype.kind not in "iu" or T.shape != (Z.shape[0],) or (
                        T.size and (int(T.min()) < 0 or int(T.max()) >= Z.shape[1])):
                    raise _Invalid("labels")
            elif T.ndim == 2 and T.shape == Z.shape and T.dtype.kind in "biuf":
                with np.errstate(all="ignore"):
                    T = _daz(T.astype(F32))
            else:
                raise _Invalid("target")
            loss, probs, _ = reference.softmax_xent_forward(_daz(Z), T)
            rows = Z.shape[0]
            return np.float32(loss), {0: lambda G: reference.softmax_xent_backward(
                probs, T, float(G) / rows if rows else 0.0).astype(np.float64)}
        tol = (1e-5, 1e-3 * (_finite_max(as_f32(logits)) + 1) if as_f32(logits) is not None else 1e-5)

    try:
        with np.errstate(all="ignore"):
            out_shape = np.shape(expect()[0])
    except _Invalid:
        out_shape = None
    upstream = upstream_grad(data, out_shape)
    ops_ = [o for o in operands if o is not None]  # only dense's bias can be None, and it is last

    def grad_tol(G):
        mags = [_finite_max(as_f32(o)) if as_f32(o) is not None else 0 for o in ops_]
        return 1e-4, 32 * EPS32 * (max(mags + [1.0]) ** 2) * _finite_max(G) * (n + k + m + 1) + 1e-30
    check_op_call(f"{op}: " + ", ".join(fs.describe(o.data if isinstance(o, mg.Tensor) else o) for o in ops_),
                  fn, ops_, expect, upstream=upstream, tol=tol, grad_tol=grad_tol,
                  no_grad=(1,) if op == "softmax_cross_entropy" else (),
                  nan_for_inf=op == "softmax_cross_entropy" and _has_inf(operands[1]))


CASES = {
    "gemm": case_gemm, "bias": case_bias, "relu": case_relu, "softmax_xent": case_softmax_xent,
    "optimizers": case_optimizers, "threads": case_threads, "gather": case_gather, "c_ops": case_c_ops,
    "planned_steps": case_planned_steps, "thread_race": case_thread_race, "fork": case_fork,
    "elementwise_ops": case_elementwise_ops, "shape_ops": case_shape_ops,
}

# ================================================================ running a family


def fuzz(family, examples, seed_=None):
    """Run `examples` hypothesis cases of a family; return how many ran."""
    counter = [0]
    case = CASES[family]

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
    code = (f"import sys; sys.path.insert(0, {TESTS_DIR!r}); import test_fuzz; "
            f"sys.exit(test_fuzz.child_main({family!r}, {examples}, {seed_!r}))")
    env = dict(os.environ, MINIGRAD_FUZZ_TRACE="1" if trace else "")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120 + 0.1 * examples)


def _session_seed():
    if os.environ.get("MINIGRAD_FUZZ_SEED"):
        return int(os.environ["MINIGRAD_FUZZ_SEED"])
    return random.SystemRandom().randrange(2**32) if RANDOM_MODE else None


SEED = _session_seed()  # None: derandomized (CI); else hypothesis.seed(SEED) for every family
CHILD_FAMILIES = [f for f, (_, child) in FAMILIES.items() if child]
JOBS = int(os.environ.get("MINIGRAD_FUZZ_JOBS", str(min(2, os.cpu_count() or 1))))


@pytest.fixture(scope="module")
def children(request):
    """Start the selected child families, JOBS at a time, as soon as the first one
    is needed; each test then waits for its own."""
    selected = [item.callspec.params["family"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_fuzz_in_child_process"]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(JOBS, 1))
    futures = {f: pool.submit(run_child, f, budget(f), SEED) for f in CHILD_FAMILIES if f in selected}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("family", CHILD_FAMILIES)
def test_fuzz_in_child_process(family, children):
    """One family of C-calling wrappers, fuzzed in a child interpreter."""
    n = budget(family)
    proc = children[family].result()
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


@pytest.mark.parametrize("family", [f for f, (_, child) in FAMILIES.items() if not child])
def test_fuzz_in_process(family):
    """Ops that only use NumPy: fuzzed in this process."""
    n = budget(family)
    COUNTS[family] = fuzz(family, n, SEED)
    assert COUNTS[family] >= n


# ================================================================ bugs found by the fuzzing
#
# One minimal reproducer per bug, all fixed: kept as regression tests.

F = np.float32


# Fixed in e167f87 (the cache now keys on the grouping); kept as regression tests.
# The variant "sgd_update(w, g, None); sgd_update([w, g], [], None)" is in test_bad_input.py.

def test_fixed_optimizer_table_cache_regrouped_after_momentum_step():
    """Was: SIGSEGV or a garbage table row (the 1-parameter table used for 2)."""
    proc = run_python("""
        import numpy as np
        from minigrad import kernels
        w, g, v = np.full(3, 1, np.float32), np.full(3, 2, np.float32), np.full(3, 3, np.float32)
        kernels.sgd_update(w, g, v, 0.01, momentum=0.9)
        try:
            kernels.sgd_update([w, g], [v], None, 0.01)
        except ValueError as exc:
            print("ValueError:", exc)
        """)
    assert proc.returncode == 0, f"exit status {proc.returncode} (-11 = SIGSEGV)\n{proc.stderr}"
    assert "ValueError: sgd_update: expected as many grads as parameters (2), received 1" in proc.stdout


def test_fixed_optimizer_table_cache_regrouped_lists_are_validated():
    """Was: accepted, and w0 updated with the cached gradient g0 instead of an error."""
    w0, w1, g0, g1 = (np.full(3, i, F) for i in range(4))
    kernels.sgd_update([w0, w1], [g0, g1], None, 0.1)
    before = w0.copy()
    with pytest.raises(ValueError, match=re.escape("sgd_update: expected as many grads as parameters (1), "
                                                   "received 3")):
        kernels.sgd_update([w0], [w1, g0, g1], None, 0.1)
    np.testing.assert_array_equal(w0, before)


@pytest.mark.parametrize("change,error", [
    ("w.dtype = np.int32", "rmsprop_update: expected parameter 0 to be a float32 array"),
    ("g.shape = (2, 2)", "rmsprop_update: expected grad 0 of shape (4,)"),
])
def test_fixed_optimizer_table_cache_in_place_metadata_change(change, error):
    w, g, v = np.ones(4, F), np.ones(4, F), np.zeros(4, F)
    kernels.rmsprop_update(w, g, v, 0.1, 0.9, 1e-7)
    exec(change)
    with pytest.raises((TypeError, ValueError), match=re.escape(error)):
        kernels.rmsprop_update(w, g, v, 0.1, 0.9, 1e-7)


@pytest.mark.parametrize("name,args,kwargs", [
    ("gemm", [np.zeros((1, 1), F), np.ones((1, 1), F)], dict(alpha=1e39)),             # C: inf*0 = NaN, twin 0
    ("gemm", [np.full((1, 1), np.nan, F), np.ones((1, 1), F)], dict(alpha=1e-50)),     # C: 0, twin NaN
    ("gemm", [np.full((1, 1), np.inf, F), np.ones((1, 1), F)], dict(alpha=1e-40)),     # C: NaN, twin inf or 0
    ("gemm", [np.ones((1, 1), F), np.ones((1, 1), F), np.zeros((1, 1), F)], dict(beta=1e39)),  # NaN vs 1
    ("softmax_xent_backward", [np.zeros((1, 2), F), np.array([0])], dict(scale=1e39)),  # [-inf, NaN] vs [-inf, 0]
], ids=["gemm-alpha-1e39", "gemm-alpha-1e-50", "gemm-alpha-1e-40", "gemm-beta-1e39",
        "softmax_xent_backward-scale-1e39"])
def test_fixed_scalars_outside_float32_range(name, args, kwargs):
    """Rejecting such a scalar (ValueError naming the op) or matching the twin both fix it."""
    check_kernel_call(name, args, kwargs, written=args[2:])


@pytest.mark.parametrize("alpha", [float("nan"), float("inf")])
def test_fixed_gemm_k0_nonfinite_alpha(alpha):
    check_kernel_call("gemm", (np.zeros((1, 0), F), np.zeros((0, 1), F)), dict(alpha=alpha))


@pytest.mark.parametrize("momentum,velocity", [(1e-50, 0.0), (1e-40, np.inf)])
def test_fixed_sgd_momentum_below_float32(momentum, velocity):
    w, g, v = np.zeros(2, F), np.ones(2, F), np.full(2, velocity, F)
    check_kernel_call("sgd_update", (w, g, v), dict(lr=0.1, momentum=momentum), written=[w, v])


@pytest.mark.parametrize("name,call", [
    ("gemm", lambda: kernels.gemm(np.zeros((2**24, 0), F), np.zeros((0, 2**24), F))),        # MemoryError
    ("relu_forward", lambda: kernels.relu_forward(np.broadcast_to(F(1), (2**24, 2**24)))),   # MemoryError
    ("gemm", lambda: kernels.gemm(np.zeros((2**31, 0), F), np.zeros((0, 2**31), F))),        # "array is too big"
    ("gemm", lambda: kernels.gemm(np.ones((1, 1), F), np.ones((1, 1), F), alpha=10**400)),   # OverflowError
    ("sgd_update", lambda: kernels.sgd_update(np.ones(1, F), np.ones(1, F), None, 10**400)),  # OverflowError
    ("gemm", lambda: kernels.gemm(np.ones((2, 2), F), np.ones((2, 2), F), trans_a=np.array([1, 0]))),
], ids=["gemm-huge-output", "relu_forward-huge-broadcast", "gemm-too-big", "gemm-alpha-10**400",
        "sgd_update-lr-10**400", "gemm-array-flag"])
def test_fixed_unnamed_messages(name, call):
    with pytest.raises((TypeError, ValueError, MemoryError, OverflowError)) as info:
        call()
    assert str(info.value).startswith(f"{name}:"), f"{type(info.value).__name__}: {info.value}"


def test_fixed_transpose_of_0d_tensor():
    x = mg.Tensor(2.0, requires_grad=True)
    y = x.T
    assert y.shape == np.array(2.0).T.shape == ()
    y.backward()
    assert x.grad.shape == ()


# Fixed (found by this suite): gather_rows copied a strided or broadcast src whole
# (np.take), refusing a 1 PiB broadcast view with NumPy's unnamed MemoryError; it
# now indexes only the rows asked for.

@pytest.mark.parametrize("what", ["broadcast", "strided"])
def test_fixed_gather_rows_strided_src_reads_only_its_rows(what):
    import tracemalloc
    if what == "broadcast":  # 3 PiB if copied
        got = kernels.gather_rows(np.broadcast_to(np.arange(3, dtype=F), (2**48, 3)), np.array([0, 2**47]))
        assert got.tolist() == [[0, 1, 2], [0, 1, 2]]
        return
    src = np.zeros((4096, 1024), F)[:, ::2]  # a 16 MiB view; 8 rows are 16 KiB
    tracemalloc.start()
    try:
        kernels.gather_rows(src, np.arange(8))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"gathering 16 KiB of rows allocated {peak:,} bytes at peak"


# Fixed (found by this suite): a masked idx passed the range check (min/max skip
# masked entries) while the copy read every entry; masked arrays are now refused.

@pytest.mark.parametrize("idx", [np.ma.array([0, 99], mask=[False, True]), np.ma.array([0], mask=[True])],
                         ids=["masked-out-of-range", "all-masked"])
def test_fixed_gather_rows_masked_idx_is_refused(idx):
    src = np.arange(6, dtype=F).reshape(3, 2)[:, :1]
    with pytest.raises(TypeError, match="gather_rows: expected idx to be a plain 1-d integer array"):
        kernels.gather_rows(src, idx)


# ---------------------------------------------------------------- fixed: fit's planned step
# Found by the planned_steps family, fixed the same session: take's bounds are
# checked as integers first, a huge max_rows gets a named MemoryError, masked orders
# are refused, and inconsistent need_x flags (a SIGSEGV in C) are refused.

@pytest.mark.parametrize("start,stop", [(0.0, 1.0), (0, 1.0), (0, None), ("0", 1), (-1, np.uint64(0)),
                                        (np.int8(-1), 2**70), (np.bool_(False), np.bool_(True))],
                         ids=["floats", "float-stop", "None", "str", "negative-uint64", "int8-huge",
                              "np.bool_"])
def test_fixed_row_gather_take_non_integer_bounds(start, stop):
    """take(0.0, 1.0) -> TypeError 'float' object cannot be interpreted as an integer (from
    cffi, after the range check passed); take(0, None) -> TypeError unsupported operand;
    take(-1, np.uint64(0)) -> OverflowError from NumPy; none names gather_rows."""
    g = kernels.RowGather(np.arange(6, dtype=F).reshape(3, 2), 2)
    g.set_order(np.array([2, 0, 1]))
    with pytest.raises((TypeError, ValueError)) as info:
        g.take(start, stop)
    assert str(info.value).startswith("gather_rows:"), f"{type(info.value).__name__}: {info.value}"
    assert g.take(0, 2).tolist() == [[4, 5], [0, 1]]


@pytest.mark.parametrize("max_rows", [2**40, 2**62, 2**64], ids=["8TiB", "too-big", "beyond-int64"])
def test_fixed_row_gather_huge_max_rows(max_rows):
    """RowGather(src, 2**40) -> MemoryError 'Unable to allocate 8.00 TiB ...'; 2**62 ->
    ValueError 'array is too big; ...'; 2**64 -> ValueError 'Maximum allowed dimension
    exceeded' (np.empty's messages, not naming gather_rows)."""
    with pytest.raises((TypeError, ValueError, MemoryError)) as info:
        kernels.RowGather(np.zeros((3, 2), F), max_rows)
    assert str(info.value).startswith("gather_rows:"), f"{type(info.value).__name__}: {info.value}"


@pytest.mark.parametrize("order", [np.ma.array([0, 99], mask=[False, True]), np.ma.array([0], mask=[True])],
                         ids=["masked-out-of-range", "all-masked"])
def test_fixed_row_gather_masked_order(order):
    """The bug fixed in gather_rows (test_fixed_gather_rows_masked_idx_is_refused),
    still in RowGather.set_order: [0, 99] with 99 masked is accepted (every take
    then fails in C: 'the C kernel rejected its arguments'), an all-masked order
    raises numpy.ma.MaskError. gather_rows refuses masked indices with a TypeError."""
    g = kernels.RowGather(np.arange(6, dtype=F).reshape(3, 2), 2)
    g.set_order(np.array([1]))
    with pytest.raises((TypeError, ValueError)) as info:
        g.set_order(order)
    assert str(info.value).startswith("gather_rows:"), f"{type(info.value).__name__}: {info.value}"
    assert g.take(0, 1).tolist() == [[2, 3]]  # the previous order is kept


def test_fuzz_total_budget():
    """Runs last: every family ran its share, >= 10,000 cases in all by default."""
    if set(COUNTS) != set(FAMILIES):
        pytest.skip("not every fuzz family ran and passed in this session")
    total = sum(COUNTS.values())
    print(f"fuzz cases per family: {COUNTS}, total {total}")
    assert total >= TOTAL_EXAMPLES
    if "MINIGRAD_FUZZ_EXAMPLES" not in os.environ:
        assert total >= 10_000
