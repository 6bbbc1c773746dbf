"""Optimizer updates over a list of parameters, one C call each (part of ``minigrad.kernels``).

Each update takes one parameter array or a list of them (with matching lists of
gradients and state slots) and updates them all in one C call, after checking
every one: an error leaves all parameters untouched, and Python cannot be
interrupted half-way through a step."""
import operator

import numpy as np

from . import (F32, _any_input, _flag, _describe, _output, _ptr, _run, _scalar, _usable_in_place,
               ffi, lib, plain_array)


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


class ParamTable:
    """Parameters, gradients and state slots validated once for one update op.

    ``param_table(op, ws, gs, slot_lists)`` makes one; passing it as the update's
    first argument (with ``None`` for the gradients and slots) skips the checks,
    which is how a replayed training step calls the optimizer kernels: the arrays
    were validated when the step was captured, the table keeps them alive, and
    ``mg.jit``'s guards refuse a replay when a parameter changed.

    >>> import numpy as np
    >>> w, g, v = np.ones(3, np.float32), np.ones(3, np.float32), np.zeros(3, np.float32)
    >>> table = param_table("rmsprop_update", w, g, [v])
    >>> rmsprop_update(table, None, None, lr=0.1, rho=0.9, eps=1e-7)
    >>> [round(float(x), 4) for x in w]
    [0.6838, 0.6838, 0.6838]
    """
    __slots__ = ("op", "slots", "table", "count", "keep", "arrays", "_check")

    def __init__(self, op, ws, gs, slot_lists):
        ws, gs = _as_list(ws), _as_list(gs)
        slot_lists = [_as_list(s) for s in slot_lists]
        self.op, self.slots = op, len(slot_lists)
        self.table, self.count, self.keep = _validate_params(op, ws, gs, slot_lists)
        self.arrays = ws + gs + [s for slots in slot_lists for s in slots]
        # the grouping is part of the check: the same arrays split differently into
        # parameters, gradients and slots make a different (or invalid) table
        self._check = ((len(ws), len(gs)) + tuple(len(s) for s in slot_lists),
                       [a.shape for a in self.arrays], ws + [s for slots in slot_lists for s in slots])

    def __len__(self):  # the number of parameters
        return self.count

    def still_valid_for(self, layout, arrays):
        """True when arrays (grouped as layout) are this table's arrays, unchanged:
        an ndarray's shape, dtype, strides and flags can be reassigned in place."""
        own_layout, shapes, written = self._check
        return (layout == own_layout and len(arrays) == len(self.arrays)
                and all(map(operator.is_, arrays, self.arrays)) and _unchanged(arrays, shapes, written))


# The last validated table per op. A training loop passes the very same array
# objects every step (parameters, optimizer slots, workspace gradient buffers),
# so the table is reused after a re-check of the metadata that can change in place.
_table_cache = {}


def param_table(op, ws, gs, slot_lists):
    """A ParamTable for op (the last one made for op when it still fits)."""
    ws, gs = _as_list(ws), _as_list(gs)
    slot_lists = [_as_list(s) for s in slot_lists]
    layout = (len(ws), len(gs)) + tuple(len(s) for s in slot_lists)
    arrays = ws + gs + [s for slots in slot_lists for s in slots]
    cached = _table_cache.get(op)
    if cached is not None and cached.still_valid_for(layout, arrays):
        return cached
    made = ParamTable(op, ws, gs, slot_lists)
    # cache only tables that point at the caller's own arrays (no gradient was copied)
    if all(isinstance(g, np.ndarray) and g.dtype == F32 and _usable_in_place(g) for g in gs):
        _table_cache[op] = made
    return made


def _param_table(op, ws, gs, slot_lists):
    """(cffi table, count, keep-alive list) for an update: from a ParamTable given
    as ws (gs and every slot None), else validated (or found in the cache)."""
    if isinstance(ws, ParamTable):
        needed = len(slot_lists)
        if ws.op != op or ws.slots < needed:
            raise ValueError(f"{op}: expected a ParamTable made for {op} with {needed} slot(s), "
                             f"received one made for {ws.op} with {ws.slots}")
        if gs is not None or any(s is not None for s in slot_lists):
            raise ValueError(f"{op}: expected None for the gradients and slots when the "
                             f"parameters are a ParamTable")
        return ws.table, ws.count, ws.keep
    made = param_table(op, ws, gs, slot_lists)
    return made.table, made.count, made.keep


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


def adamw_update(w, g, m, v, v_hat, lr, beta1, beta2, eps, weight_decay, step, amsgrad=None):
    """In place, Keras 3 order: w -= (w*weight_decay)*lr (skipped when weight_decay
    is 0), then the Adam step; v_hat (a list like m, or None) turns on AMSGrad:
    v_hat = max(v_hat, v) is the denominator's second moment. With a ParamTable
    as w, ``amsgrad`` says whether its third slot is v_hat."""
    op = "adamw_update"
    step = _step(op, step)
    amsgrad = v_hat is not None if amsgrad is None else bool(amsgrad)
    slots = [m, v, v_hat] if amsgrad else [m, v]
    table, count, keep = _param_table(op, w, g, slots)
    _run(op, lib.mg_adamw_update, (table, count, _scalar(op, "lr", lr), _scalar(op, "beta1", beta1),
                                   _scalar(op, "beta2", beta2), _scalar(op, "eps", eps),
                                   _scalar(op, "weight_decay", weight_decay), amsgrad, step),
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


