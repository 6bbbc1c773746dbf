"""Fuzzing the kernels of minigrad.kernels (see fuzz_support.py for the oracle, the budget and the child processes): gemm, add_bias/bias_grad, relu, softmax-xent,
gather_rows, RowGather (fit's planned steps), conv2d, max_pool2d, sigmoid/tanh,
dropout and sigmoid-BCE. Every family runs in a child interpreter."""
import math
import numbers

import numpy as np
import pytest

from minigrad import kernels
import fuzz_strategies as fs
import fuzz_support as fz
from fuzz_strategies import (EPS32, F32, TINY32, arg, array, boolean, describe_call, dims, flag, integer,
                             labels, out_arg, pick, real_scalar, shape)
from fuzz_support import (Mismatch, _arrays_in, _assert_unchanged, _finite_max, _has_inf, _raw_copy,
                          _snapshot, _trace, assert_same_bytes, check_kernel_call, gemm_tolerance, is_f32,
                          is_out, threads)

F = np.float32


# ================================================================ families: kernels

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

#@@NEW_KERNEL_FAMILIES@@


# ================================================================ running the families

@pytest.mark.parametrize("family", fz.child_families('test_fuzz_kernels'))
def test_fuzz_in_child_process(family, fuzz_children):
    """One family of C-calling wrappers, fuzzed in a child interpreter."""
    fz.check_child(family, fuzz_children)


# ================================================================ bugs found by the fuzzing (fixed)

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
