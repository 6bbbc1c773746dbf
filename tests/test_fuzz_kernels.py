"""Fuzzing the kernels of minigrad.kernels (see fuzz_support.py for the oracle, the budget and the child processes): gemm, add_bias/bias_grad, relu, softmax-xent,
gather_rows, RowGather (fit's planned steps), conv2d, max_pool2d, sigmoid/tanh,
dropout and sigmoid-BCE. Every family runs in a child interpreter."""
import math
import numbers

import numpy as np
import pytest

from minigrad import kernels, reference
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
            ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in (start, stop))
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


# ---------------------------------------------------------------- convolution and pooling
#
# Small images (N, H, W, C) so that the twins (im2col in float64, pooling by window
# offsets) stay cheap; strides, pool sizes and paddings of any kind (ints, pairs, zero,
# negative, bools, floats, strings, None, other paddings), shapes given as arguments
# (x_shape, w_shape) valid or not (wrong length, negative, bool, float, str entries).

CONV_N = (1, 2, 0, 3)
CONV_HW = (5, 4, 3, 1, 2, 6, 7, 9, 0)
CONV_C = (1, 2, 3, 4)
CONV_K = (1, 2, 3, 4)
GOOD_PAIRS = (1, 2, (1, 2), (2, 1), 3, np.int64(2), (np.int32(1), 2), [2, 2], np.array([1, 1]))
BAD_PAIRS = (0, -1, (1,), (1, 2, 3), True, (True, 1), 1.0, (1.5, 1), "1", "11", None, (0, 1))
GOOD_PADDINGS = ("valid", "same", "SAME", "Valid")
BAD_PADDINGS = ("full", "", None, 1, b"same", ["same"])
SHAPE_ENTRIES = (-1, True, 2.0, np.float32(2.0), np.float32(2.5), "2", b"2", None)


def geometry_arg(data, good, bad, label, default):
    """`default` half the time, else mostly one of `good`, sometimes one of `bad`."""
    kind = integer(data, 0, 7, f"{label}.kind")
    if kind < 4:
        return default
    return pick(data, good if kind < 7 else bad, label)


def pair_ok(value):
    """value as the kernels' _pair reads it: an int or a pair of ints >= 1, else None."""
    items = (value, value) if isinstance(value, (int, np.integer)) else value
    try:
        items = tuple(items)
    except TypeError:
        return None
    if len(items) != 2 or any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))
                              or v < 1 for v in items):
        return None
    return int(items[0]), int(items[1])


def padding_ok(value):
    return isinstance(value, str) and value.lower() in ("valid", "same")


def conv_geometry(h, w, k, s, padding):
    """(oh, ow) of a window k over h x w with strides s, or None if the kernels refuse it."""
    if k is None or s is None or not padding_ok(padding) or h == 0 or w == 0:
        return None
    oh = reference.conv_output_size(h, k[0], s[0], padding)[0]
    ow = reference.conv_output_size(w, k[1], s[1], padding)[0]
    return (oh, ow) if oh > 0 and ow > 0 else None


def shape_arg(data, good, label, *, entries=SHAPE_ENTRIES):
    """A shape given as an argument: mostly `good` (a tuple, list or array of ints),
    else with a bad entry or the wrong length. Returns (value, valid)."""
    kind = integer(data, 0, 9, f"{label}.kind")
    if kind < 6:
        form = pick(data, ("tuple", "list", "np"), f"{label}.form")
        value = tuple(good) if form == "tuple" else list(good) if form == "list" else \
            tuple(np.int64(d) for d in good)
        return value, True
    if kind < 9:
        value = list(good)
        value[integer(data, 0, len(value) - 1, f"{label}.at")] = pick(data, entries, f"{label}.bad")
        return tuple(value), False
    return pick(data, (tuple(good)[:3], tuple(good) + (1,), None, "NHWC", 4), f"{label}.odd"), False


def case_conv(data):
    threads(data)
    which = pick(data, ["conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight"], "which")
    n, h, w_ = (pick(data, CONV_N, "n"), pick(data, CONV_HW, "h"), pick(data, CONV_HW, "w"))
    cin, cout = pick(data, CONV_C, "cin"), pick(data, CONV_C, "cout")
    k = (pick(data, CONV_K, "kh"), pick(data, CONV_K, "kw"))
    strides = geometry_arg(data, GOOD_PAIRS, BAD_PAIRS, "strides", (1, 1))
    padding = geometry_arg(data, GOOD_PADDINGS, BAD_PADDINGS, "padding", "valid")
    s = pair_ok(strides)
    geo = conv_geometry(h, w_, k, s, padding)
    oh, ow = geo if geo else (1, 1)
    x_shape, w_shape, y_shape = (n, h, w_, cin), k + (cin, cout), (n, oh, ow, cout)
    vk = dict(huge=1e15, subnormal=True, p_bad=0.1)
    kw = dict(strides=strides, padding=padding)
    if which == "conv2d_forward":
        x, w = arg(data, x_shape, "x", **vk), arg(data, w_shape, "w", **vk)
        b = arg(data, (cout,), "b", **vk) if boolean(data, "has_b") else None
        relu = flag(data, "relu")
        out = out_arg(data, y_shape, "out", others=[x, w, b])
        kw.update(b=b, relu=relu, out=out)
        valid = (geo is not None and is_f32(x, x_shape) and is_f32(w, w_shape)
                 and (b is None or is_f32(b, (cout,))) and fs.flag_ok(relu)
                 and is_out(out, y_shape, [x, w, b]))
        tol = gemm_tolerance(x, w, k[0] * k[1] * cin, 1.0, 0.0, None, b)
        got = check_kernel_call(which, (x, w), kw, written=[out], tol=tol, must_succeed=valid)
    elif which == "conv2d_backward_input":
        dy, w = arg(data, y_shape, "dy", **vk), arg(data, w_shape, "w", **vk)
        xs, xs_ok = shape_arg(data, x_shape, "x_shape")
        out = out_arg(data, x_shape, "out", others=[dy, w])
        kw.update(out=out)
        valid = (geo is not None and xs_ok and is_f32(dy, y_shape) and is_f32(w, w_shape)
                 and is_out(out, x_shape, [dy, w]))
        tol = gemm_tolerance(dy, w, k[0] * k[1] * cout, 1.0, 0.0, None, None)
        got = check_kernel_call(which, (dy, w, xs), kw, written=[out], tol=tol, must_succeed=valid)
    else:
        x, dy = arg(data, x_shape, "x", **vk), arg(data, y_shape, "dy", **vk)
        ws, ws_ok = shape_arg(data, w_shape, "w_shape")
        out = out_arg(data, w_shape, "out", others=[x, dy])
        kw.update(out=out)
        valid = (geo is not None and ws_ok and is_f32(x, x_shape) and is_f32(dy, y_shape)
                 and is_out(out, w_shape, [x, dy]))
        tol = gemm_tolerance(x, dy, max(n * oh * ow, 1), 1.0, 0.0, None, None)
        got = check_kernel_call(which, (x, dy, ws), kw, written=[out], tol=tol, must_succeed=valid)
    if got is not None and out is not None:
        assert got is out, f"{which} returned a new array instead of out"


def argmax_arg(data, x, y_shape, pool, strides, padding, label):
    """argmax for max_pool2d_backward: usually the forward's (when it accepts the
    geometry), else int64 values anywhere (negative, beyond x, another window's),
    another dtype or shape, or a non-contiguous int64 array."""
    kind = pick(data, ("forward", "forward", "forward", "random", "random", "strided", "dtype", "shape", "list"),
                f"{label}.kind")
    rng = fs._rng()
    size = int(np.prod(y_shape))
    if kind == "forward" and isinstance(x, np.ndarray):
        try:
            return kernels.max_pool2d_forward(x, pool, strides, padding)[1]
        except (TypeError, ValueError, MemoryError):
            pass
    values = rng.integers(-3, max(2 * size, 4) + 8, size=y_shape, dtype=np.int64)
    if kind == "dtype":
        return values.astype(pick(data, (np.int32, np.float32, np.uint64, ">i8"), f"{label}.dtype"))
    if kind == "shape":
        return np.zeros(fs.wrong_shape(data, y_shape, label), np.int64)
    if kind == "strided":
        return np.repeat(values, 2, axis=-1)[..., ::2]
    if kind == "list":
        return values.tolist()
    return values


def case_pool(data):
    threads(data)
    n, h, w_, c = pick(data, CONV_N, "n"), pick(data, CONV_HW, "h"), pick(data, CONV_HW, "w"), pick(data, CONV_C, "c")
    pool = geometry_arg(data, GOOD_PAIRS, BAD_PAIRS, "pool_size", (2, 2))
    strides = geometry_arg(data, GOOD_PAIRS, BAD_PAIRS, "strides", None)
    padding = geometry_arg(data, GOOD_PADDINGS, BAD_PADDINGS, "padding", "valid")
    p = pair_ok(pool)
    s = p if strides is None else pair_ok(strides)
    geo = conv_geometry(h, w_, p, s, padding)
    oh, ow = geo if geo else (1, 1)
    x_shape, y_shape = (n, h, w_, c), (n, oh, ow, c)
    kw = dict(pool_size=pool, strides=strides, padding=padding)
    if boolean(data, "forward"):
        x = arg(data, x_shape, "x", subnormal=True, p_bad=0.1)
        out = out_arg(data, y_shape, "out", others=[x])
        kind = pick(data, ("None", "fresh", "None", "fresh", "None", "fresh", "dtype", "alias", "readonly"),
                    "argmax_out.kind")
        argmax_out = {"None": None, "fresh": np.full(y_shape, -7, np.int64),
                      "dtype": np.zeros(y_shape, np.int32), "readonly": fs.lay_out(np.zeros(y_shape, np.int64), "readonly"),
                      "alias": out.view(np.int32) if isinstance(out, np.ndarray) and out.dtype == F32 and out.ndim
                      else np.zeros(y_shape, np.float32)}[kind]
        kw.update(out=out, argmax_out=argmax_out)
        valid = (geo is not None and is_f32(x, x_shape) and is_out(out, y_shape, [x])
                 and (argmax_out is None or kind == "fresh"))
        # the maxima are copies of x's elements: byte for byte (NaN payloads, -0.0)
        got = check_kernel_call("max_pool2d_forward", (x,), kw, written=[out, argmax_out], bitwise=True,
                                must_succeed=valid)
        if got is not None:
            assert out is None or got[0] is out
            assert argmax_out is None or got[1] is argmax_out
        return
    dy = arg(data, y_shape, "dy", subnormal=True, p_bad=0.1)
    x = np.asarray(fs.array(data, x_shape, "x", layouts=["C"]))
    argmax = argmax_arg(data, x, y_shape, pool, strides, padding, "argmax")
    xs, xs_ok = shape_arg(data, x_shape, "x_shape")
    out = out_arg(data, x_shape, "out", others=[dy, argmax])
    kw.update(out=out)
    argmax_ok = isinstance(argmax, np.ndarray) and argmax.dtype == np.dtype(np.int64) and argmax.shape == y_shape
    valid = (geo is not None and xs_ok and is_f32(dy, y_shape) and argmax_ok
             and is_out(out, x_shape, [dy, argmax]))
    taps = (p[0] * p[1]) if p else 1
    atol = 4 * EPS32 * taps * _finite_max(dy) + 2 * TINY32
    got = check_kernel_call("max_pool2d_backward", (dy, argmax, xs), kw, written=[out], tol=(4 * EPS32, atol),
                            must_succeed=valid)
    if got is not None and out is not None:
        assert got is out


# ---------------------------------------------------------------- sigmoid, tanh, dropout, sigmoid-BCE

RATES = (0.5, 0.0, 0.1, 0.999, 0.25, np.float32(0.5), np.float64(0.3), 0, 1.0, 1, -0.1, 2.0,
         float("nan"), float("inf"), True, None, "0.5", [0.5], np.array(0.5))
SEEDS = (0, 1, 12345, 2**32, 2**64 - 1, np.uint64(2**64 - 1), np.int64(5), np.uint8(7),
         2**64, -1, True, 1.5, None, "1", np.array(3))
STEPS = (0, 1, 7, 2**32 - 1, 2**32, 2**63 - 2)


def rate_ok(rate):
    return (isinstance(rate, numbers.Real) and not isinstance(rate, (bool, np.bool_))
            and 0.0 <= float(rate) < 1.0)


def seed_ok(seed_):
    return (isinstance(seed_, (int, np.integer)) and not isinstance(seed_, (bool, np.bool_))
            and 0 <= int(seed_) < 2**64)


def case_activations(data):
    threads(data)
    which = pick(data, ["sigmoid_forward", "sigmoid_backward", "tanh_forward", "tanh_backward",
                        "dropout_forward", "dropout_backward"], "which")
    s = shape(data, "shape", max_size=20_000)
    if which in ("sigmoid_forward", "tanh_forward"):
        x = arg(data, s, "x", subnormal=True)
        out = x if boolean(data, "in_place") else out_arg(data, s, "out", others=[x])
        valid = is_f32(x, s) and (is_out(out, s, [x]) or (out is x and is_out(x, s, [])))
        # sigmoid within 2 ulp (0 below FLT_MIN), tanh within 1 ulp (tanh(x) = x for tiny x: flushed)
        tol = (3 * EPS32, TINY32) if which == "sigmoid_forward" else (2 * EPS32, 2 * TINY32)
        got = check_kernel_call(which, (x, out), written=[out], tol=tol, must_succeed=valid)
        if got is not None and out is not None:
            assert got is out
        return
    if which != "dropout_forward":
        y_name = "mask" if which == "dropout_backward" else "y"
        y = arg(data, s, y_name, subnormal=True)
        dy = y if integer(data, 0, 9, "dy_is_y") == 0 else arg(data, s, "dy", subnormal=True)
        out = dy if boolean(data, "in_place") else out_arg(data, s, "out", others=[y, dy])
        valid = is_f32(y, s) and is_f32(dy, s) and (is_out(out, s, [y, dy]) or (
            out is dy and is_out(dy, s, []) and (y is dy or not np.may_share_memory(dy, y))))
        # the twins do the kernels' float32 arithmetic: a few ulp (order, FMA), flushed subnormals
        args = (dy, y, out) if which == "dropout_backward" else (y, dy, out)  # dropout_backward(dy, mask, out)
        got = check_kernel_call(which, args, written=[out], tol=(4 * EPS32, 4 * TINY32),
                                must_succeed=valid)
        if got is not None and out is not None:
            assert got is out
        return
    x = arg(data, s, "x", subnormal=True)
    rate = pick(data, RATES, "rate") if integer(data, 0, 3, "rate.odd") == 0 else 0.5
    seed_ = pick(data, SEEDS, "seed") if integer(data, 0, 3, "seed.odd") == 0 else integer(data, 0, 2**64 - 1, "seed")
    kind = pick(data, ("counter",) * 6 + ("int", "None", "twin"), "counter.kind")
    start = pick(data, STEPS, "counter.start")
    counter = {"counter": kernels.DropoutCounter(start), "int": start, "None": None,
               "twin": reference.DropoutCounter(start)}[kind]
    out = x if boolean(data, "in_place") else out_arg(data, s, "out", others=[x])
    mask_out = out_arg(data, s, "mask_out", others=[x, out])
    valid = (is_f32(x, s) and rate_ok(rate) and seed_ok(seed_) and kind == "counter"
             and (is_out(out, s, [x]) or (out is x and is_out(x, s, [])))
             and is_out(mask_out, s, [x, out]))
    got = check_kernel_call("dropout_forward", (x, rate, seed_, counter),
                            dict(out=out, mask_out=mask_out), written=[out, mask_out],
                            tol=(EPS32, 2 * TINY32), must_succeed=valid)
    if kind == "counter":
        want = start + 1 if got is not None else start
        assert counter.value == want, f"dropout_forward: the counter is {counter.value}, expected {want}"
    if got is not None:
        assert out is None or got[0] is out
        assert mask_out is None or got[1] is mask_out


def case_bce(data):
    threads(data)
    s = shape(data, "shape", max_size=20_000)
    logits = arg(data, s, "logits", mag=1e2, huge=1e6, subnormal=True)
    target = arg(data, s, "target", mag=1e2, huge=1e6, subnormal=True)
    if is_f32(target, s) and target.size and boolean(data, "binary"):
        target = (fs._rng().random(target.shape) < 0.5).astype(F32)
    if boolean(data, "forward"):
        probs_out = out_arg(data, s, "probs_out", others=[logits, target])
        loss_out = out_arg(data, (), "loss_out", others=[logits, target, probs_out])
        valid = (is_f32(logits, s) and is_f32(target, s) and is_out(probs_out, s, [logits, target])
                 and is_out(loss_out, (), [logits, target, probs_out]))
        zmax, tmax = _finite_max(logits), _finite_max(target)
        loss_atol = 8 * EPS32 * (zmax * (1 + tmax) + 1)
        got = check_kernel_call("sigmoid_bce_forward", (logits, target, probs_out, loss_out),
                                written=[probs_out, loss_out],
                                tol=[(1e-5, loss_atol), (3 * EPS32, TINY32), (3 * EPS32, TINY32), (1e-5, loss_atol)],
                                must_succeed=valid, nan_for_inf=_has_inf(target) or _has_inf(logits))
        if got is not None:
            assert isinstance(got[0], np.ndarray) and got[0].shape == () and got[0].dtype == F32
            assert loss_out is None or got[0] is loss_out
            assert probs_out is None or got[1] is probs_out
        return
    probs = logits
    scale = real_scalar(data, "scale", default=0.25)
    out = out_arg(data, s, "out", others=[probs, target])
    valid = (is_f32(probs, s) and is_f32(target, s) and fs.representable32(scale)
             and is_out(out, s, [probs, target]))
    got = check_kernel_call("sigmoid_bce_backward", (probs, target), dict(scale=scale, out=out),
                            written=[out], tol=(4 * EPS32, 4 * TINY32), must_succeed=valid,
                            nan_for_inf=fs.representable32(scale) and not np.isfinite(float(scale)))
    if got is not None and out is not None:
        assert got is out


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
# are refused.

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


def test_fixed_w_shape_entries_must_be_integers():
    """Found by the conv family: w_shape entries went through int(), so "2", b"2" and
    np.float32(2.5) (truncated to 2) were accepted as kernel sizes."""
    x, dy = np.ones((1, 5, 5, 1), np.float32), np.ones((1, 4, 5, 1), np.float32)
    for bad in ("2", b"2", np.float32(2.5), np.float16(2.0), 2.0, True):
        with pytest.raises(ValueError, match=r"conv2d_backward_weight: expected w_shape"):
            kernels.conv2d_backward_weight(x, dy, (bad, 1, 1, 1), (1, 1), "valid")
    assert kernels.conv2d_backward_weight(x, dy, (np.int64(2), 1, 1, 1), (1, 1), "valid").shape == (2, 1, 1, 1)
