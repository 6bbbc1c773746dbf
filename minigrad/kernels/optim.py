"""Optimizer updates over a list of parameters, one C call each (part of ``minigrad.kernels``).

Each update takes one parameter array or a list of them (with matching lists of
gradients and state slots) and updates them all in one C call, after checking
every one: an error leaves all parameters untouched, and Python cannot be
interrupted half-way through a step."""
import operator

import numpy as np

from . import (F32, _any_input, _flag, _describe, _output, _ptr, _run, _scalar, _usable_in_place,
               ffi, lib, plain_array)


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
        w = plain_array(op, f"parameter {i}", w)
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
        if len(slots) > 2:
            table[i].slot3 = ptrs[4]
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
                                     _scalar(op, "eps", eps), _flag(op, "eps_inside", eps_inside)), keep)


def sgd_update(w, g, velocity, lr, momentum=0.0, nesterov=False):
    """In place, Keras SGD: velocity = momentum*velocity - lr*g; w += velocity (or the
    Nesterov form); velocity may be None when momentum == 0."""
    op = "sgd_update"
    momentum = _scalar(op, "momentum", momentum)
    table, count, keep = _param_table(op, w, g, [velocity] if momentum != 0.0 else [])
    _run(op, lib.mg_sgd_update, (table, count, _scalar(op, "lr", lr), momentum, _flag(op, "nesterov", nesterov)), keep)


def optimizer_updates_done():
    """How many optimizer updates (rmsprop/sgd/adam_update) this thread's C calls applied:
    compared before and after a call, it tells whether an interrupted call ran."""
    return int(lib.mg_optimizer_updates_done())


def adam_update(w, g, m, v, lr, beta1, beta2, eps, step):
    """In place, Keras 3 Adam with bias correction folded into the step size; step >= 1."""
    op = "adam_update"
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 1 <= step < 2**62:
        raise ValueError(f"{op}: expected step to be an integer >= 1, received {step!r}")
    table, count, keep = _param_table(op, w, g, [m, v])
    _run(op, lib.mg_adam_update, (table, count, _scalar(op, "lr", lr), _scalar(op, "beta1", beta1),
                                  _scalar(op, "beta2", beta2), _scalar(op, "eps", eps), int(step)), keep)



def _step(op, step):
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 1 <= step < 2**62:
        raise ValueError(f"{op}: expected step to be an integer >= 1, received {step!r}")
    return int(step)


def adamw_update(w, g, m, v, v_hat, lr, beta1, beta2, eps, weight_decay, step):
    """In place, Keras 3 order: w -= (w*weight_decay)*lr (skipped when weight_decay
    is 0), then the Adam step; v_hat (a list like m, or None) turns on AMSGrad:
    v_hat = max(v_hat, v) is the denominator's second moment."""
    op = "adamw_update"
    step = _step(op, step)
    slots = [m, v] if v_hat is None else [m, v, v_hat]
    table, count, keep = _param_table(op, w, g, slots)
    _run(op, lib.mg_adamw_update, (table, count, _scalar(op, "lr", lr), _scalar(op, "beta1", beta1),
                                   _scalar(op, "beta2", beta2), _scalar(op, "eps", eps),
                                   _scalar(op, "weight_decay", weight_decay), v_hat is not None, step),
         keep)


_CLIP_MODES = {"clipnorm": 1, "global_clipnorm": 2, "clipvalue": 3}


def clip_gradients(g, out, mode, clip):
    """Clipped copies of the gradients g written into out (arrays or equal-length
    lists of arrays), Keras 3 formulas; mode is 'clipnorm' (each gradient scaled
    to an L2 norm of at most clip), 'global_clipnorm' (all scaled together by
    their joint norm; NaN when that norm is not finite) or 'clipvalue'
    (each element into [-clip, clip]). Norms are summed in double in a fixed
    order, so the result does not depend on the thread count."""
    op = "clip_gradients"
    if mode not in _CLIP_MODES:
        raise ValueError(f"{op}: expected mode to be one of {sorted(_CLIP_MODES)}, received {mode!r}")
    clip = _scalar(op, "clip", clip)
    if not clip > 0.0:
        raise ValueError(f"{op}: expected clip > 0, received {clip!r}")
    # out plays the parameter's part in the table: the array the kernel writes
    table, count, keep = _param_table(op, out, g, [])
    _run(op, lib.mg_clip_gradients, (table, count, _CLIP_MODES[mode], clip), keep)


