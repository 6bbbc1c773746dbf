"""Fuzzing the optimizer kernels (rmsprop_update, sgd_update, adam_update, adamw_update) and clip_gradients; see fuzz_support.py for the oracle, the budget
and the child processes. Every family runs in a child interpreter."""
import re

import numpy as np
import pytest

from minigrad import kernels
import fuzz_strategies as fs
import fuzz_support as fz
from helpers import run_python
from fuzz_strategies import (EPS32, TINY32, arg, boolean, flag, integer, pick, real_scalar, shape)
from fuzz_support import (_arrays_in, check_kernel_call, is_f32, is_out, threads)

F = np.float32


# ================================================================ families: optimizers

OPTIMIZERS = {  # name -> (number of slots, hyper-parameters and their defaults)
    "rmsprop_update": (1, dict(lr=1e-3, rho=0.9, eps=1e-7)),
    "sgd_update": (1, dict(lr=0.01, momentum=0.9)),
    "adam_update": (2, dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7)),
    "adamw_update": (2, dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.004)),  # family adamw
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


def case_optimizers(data, names=("adam_update", "rmsprop_update", "sgd_update")):
    threads(data)
    name = pick(data, names, "optimizer")
    nslots, defaults = OPTIMIZERS[name]
    amsgrad = name == "adamw_update" and boolean(data, "amsgrad")  # v_hat: a third slot
    nslots += amsgrad
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
    if name in ("adam_update", "adamw_update"):
        hyper["step"] = pick(data, ADAM_STEPS, "step")
    form = (lambda xs: xs) if as_list else (lambda xs: xs[0] if xs else None)
    no_velocity = name == "sgd_update" and integer(data, 0, 3, "no_velocity") == 0
    slot_args = [None] if no_velocity else [form(s) for s in slots]
    if name == "adamw_update":  # v_hat (None: plain AdamW) goes by keyword, like the hyper-parameters
        hyper["v_hat"] = slot_args.pop() if amsgrad else None
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
        positional = slots[:2] if name == "adamw_update" else slots  # v_hat stays a keyword
        groups = [list(ws), list(gs)] + ([] if no_velocity else [list(x) for x in positional])
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
    check_kernel_call(name, args, hyper, written=[x for x in _arrays_in((args, hyper)).values()],
                      tol=(1e-5, 1e-30))


def case_adamw(data):
    """adamw_update (decoupled weight decay, AMSGrad with v_hat), as the optimizers family."""
    case_optimizers(data, names=("adamw_update",))


CLIP_MODES = ("clipnorm", "global_clipnorm", "clipvalue", "clipnorm", "global_clipnorm", "clipvalue",
              "CLIPNORM", "norm", None, 1, b"clipvalue")


def case_clip(data):
    """clip_gradients(g, out, mode, clip): out (arrays, like optimizer parameters) gets
    the clipped g; twin reference.clip_gradients."""
    threads(data)
    count = pick(data, (1, 2, 0, 3, 1), "params")
    as_list = count != 1 or boolean(data, "list_form")
    big = boolean(data, "big")  # over 8192 elements: the norms are summed by chunks
    shapes = [shape(data, f"shape{i}", max_ndim=3, max_size=40_000 if big else 300) for i in range(count)]
    writable = fs.WRITABLE_LAYOUTS + ["readonly", "strided", "unaligned"]
    gs = [arg(data, s, f"g{i}", p_bad=0.1, subnormal=True) for i, s in enumerate(shapes)]
    outs = [arg(data, s, f"out{i}", p_bad=0.1, layouts=writable) for i, s in enumerate(shapes)]
    groups = [outs, gs]
    if count and integer(data, 0, 4, "alias") == 0:
        _alias_one(data, groups, shapes)
    if as_list and integer(data, 0, 9, "lengths") == 0:
        victim = groups[integer(data, 0, 1, "short")]
        victim.pop() if victim else victim.append(np.zeros(1, np.float32))
    mode = pick(data, CLIP_MODES, "mode")
    clip = real_scalar(data, "clip", default=1.0)
    form = (lambda xs: xs) if as_list else (lambda xs: xs[0] if xs else None)
    args = (form(gs), form(outs), mode)
    written = [o for o in outs if isinstance(o, np.ndarray)]
    read = [g for g in gs if isinstance(g, np.ndarray)]
    valid = (mode in ("clipnorm", "global_clipnorm", "clipvalue") and fs.representable32(clip)
             and float(clip) > 0 and len(outs) == len(gs) == count
             and all(o is not None and is_out(o, sh, []) for o, sh in zip(outs, shapes))
             and all(is_f32(g, sh) for g, sh in zip(gs, shapes))
             and not any(np.may_share_memory(x, y) for i, x in enumerate(written)
                         for y in written[i + 1:] + read))
    check_kernel_call("clip_gradients", args, dict(clip=clip), written=written,
                      tol=(4 * EPS32, 2 * TINY32), must_succeed=valid)

#@@NEW_OPTIM_FAMILIES@@


# ================================================================ running the families

@pytest.mark.parametrize("family", fz.child_families('test_fuzz_optim'))
def test_fuzz_in_child_process(family, fuzz_children):
    """One family of C-calling wrappers, fuzzed in a child interpreter."""
    fz.check_child(family, fuzz_children)


# ================================================================ bugs found by the fuzzing (fixed)


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


@pytest.mark.parametrize("momentum,velocity", [(1e-50, 0.0), (1e-40, np.inf)])
def test_fixed_sgd_momentum_below_float32(momentum, velocity):
    w, g, v = np.zeros(2, F), np.ones(2, F), np.full(2, velocity, F)
    check_kernel_call("sgd_update", (w, g, v), dict(lr=0.1, momentum=momentum), written=[w, v])


def test_fixed_optimizer_flags_are_checked():
    """Found by the optimizers family: sgd_update's nesterov and rmsprop_update's
    eps_inside went through bool(), so an array raised NumPy's unnamed error and a
    string was taken as True."""
    w, g, v = np.zeros(2, np.float32), np.ones(2, np.float32), np.zeros(2, np.float32)
    for bad in (np.array([True, False]), "no"):
        with pytest.raises(TypeError, match=r"sgd_update: expected nesterov to be a bool"):
            kernels.sgd_update(w, g, v, 0.01, momentum=0.9, nesterov=bad)
        with pytest.raises(TypeError, match=r"rmsprop_update: expected eps_inside to be a bool"):
            kernels.rmsprop_update(w, g, v, 1e-3, 0.9, 1e-7, eps_inside=bad)
    assert not w.any() and not v.any()  # nothing was written
