"""Element-wise kernels: sigmoid, tanh, inverted dropout, and the fused
sigmoid + binary cross-entropy on logits.

Validation follows the rest of ``minigrad.kernels``: float32 arrays of any
shape, an output must be a writeable C-contiguous float32 array of the input's
shape that overlaps no input (except where a docstring says it may *be* one),
and every call goes through ``_run`` so that a ``tape.Tape`` records it.

>>> import numpy as np
>>> from minigrad import kernels
>>> kernels.sigmoid_forward(np.array([0.0, 1e4, -1e4], np.float32)).tolist()
[0.5, 1.0, 0.0]
"""
import numbers

import numpy as np

from . import I64, _any_input, _in_place, _output, _ptr, _run, _same_shape, _scalar, ffi, lib

__all__ = ["sigmoid_forward", "sigmoid_backward", "tanh_forward", "tanh_backward",
           "DropoutCounter", "dropout_forward", "dropout_backward",
           "sigmoid_bce_forward", "sigmoid_bce_backward", "philox4x32_10"]


def _unary(op, cfunc, x, out):
    """out = f(x) through cfunc(x, out, n); out may be x itself (C reads each element
    before it writes it)."""
    given = (("x", x),)
    x = _any_input(op, "x", x)
    if out is not x:
        out = _output(op, "out", out, x.shape, given + (("x", x),))
    else:
        _in_place(op, "out", out)
    _run(op, cfunc, (_ptr(x), _ptr(out), x.size), (out,))
    return out


def _backward(op, cfunc, y, dy, out, y_name="y"):
    """out from cfunc(y, dy, out, n), y being what the forward pass kept; out may be dy itself."""
    given = ((y_name, y), ("dy", dy))
    y = _any_input(op, y_name, y)
    dy = _any_input(op, "dy", dy)
    _same_shape(op, f"{y_name} and dy", y, dy)
    if out is not dy:
        out = _output(op, "out", out, y.shape, given + ((y_name, y), ("dy", dy)))
    else:
        _in_place(op, "out", out, given[:1] + ((y_name, y),))
    _run(op, cfunc, (_ptr(y), _ptr(dy), _ptr(out), y.size), (out,))
    return out


# ---------------------------------------------------------------- sigmoid, tanh

def sigmoid_forward(x, out=None):
    """out = 1 / (1 + exp(-x)), computed without overflow; out may be x itself.

    Within 2 ulp of the correctly rounded value where that is at least
    FLT_MIN (1.2e-38); 0 below (x < -87.3), exactly 1 for x > 17; NaN stays NaN.
    """
    return _unary("sigmoid_forward", lib.mg_sigmoid_forward, x, out)


def sigmoid_backward(y, dy, out=None):
    """out = dy * y * (1 - y), with y the forward output; out may be dy itself."""
    return _backward("sigmoid_backward", lib.mg_sigmoid_backward, y, dy, out)


def tanh_forward(x, out=None):
    """out = tanh(x), within 1 ulp; exactly +-1 for large |x|; out may be x itself."""
    return _unary("tanh_forward", lib.mg_tanh_forward, x, out)


def tanh_backward(y, dy, out=None):
    """out = dy * (1 - y * y), with y the forward output; out may be dy itself."""
    return _backward("tanh_backward", lib.mg_tanh_backward, y, dy, out)


# ---------------------------------------------------------------- dropout

_MAX_STEP = 2**63 - 1  # C refuses a step it could not increment


class DropoutCounter:
    """The step number of a dropout layer's next mask: ``dropout_forward``
    draws the mask of step ``value`` and increments it.

    It lives in a 1-element int64 array that the C kernel reads and advances
    through a pointer, so a recorded call (``tape.Tape``, ``mg.jit``) that is
    replayed draws the mask of the counter's *current* step, a new one on
    every replay, exactly as eager calls would have.

    >>> c = DropoutCounter()
    >>> c.value
    0
    >>> c.value = 7; c.value
    7
    """
    __slots__ = ("_array",)

    def __init__(self, start=0):
        self._array = np.zeros(1, dtype=I64)
        self.value = start

    @property
    def value(self):
        return int(self._array[0])

    @value.setter
    def value(self, step):
        if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)) \
                or not 0 <= step < _MAX_STEP:
            raise ValueError(f"DropoutCounter: expected a step in [0, 2**63 - 1), received {step!r}")
        self._array[0] = step

    def __repr__(self):
        return f"DropoutCounter({self.value})"


def _rate(op, rate):
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, numbers.Real):
        raise TypeError(f"{op}: expected rate to be a real number, received {type(rate).__name__}")
    rate = float(rate)
    if not 0.0 <= rate < 1.0:  # NaN fails too
        raise ValueError(f"{op}: expected rate in [0, 1), received {rate!r}")
    return rate


def _seed(op, seed):
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{op}: expected seed to be an integer, received {type(seed).__name__}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"{op}: expected seed in [0, 2**64), received {seed!r}")
    return int(seed)


def dropout_forward(x, rate, seed, counter, out=None, mask_out=None):
    """(out, mask): inverted dropout of x for step ``counter.value``, which is then incremented.

    Element i is kept iff u >= rate, u = w / 2**32 with w word i % 4 of the
    Philox-4x32-10 block with counter (i // 4, step) and key seed (each split
    into low and high 32-bit words); so the mask depends only on (seed, step,
    i), never on the thread count. Kept elements: out = x * scale and
    mask = scale, scale = float32(1 / (1 - rate)); dropped ones are 0 in both,
    even where x is inf or NaN. ``dropout_backward`` multiplies by the stored
    mask, so the backward pass needs no step number.

    counter is a ``DropoutCounter``. The recorded C call points at its array
    rather than holding the step, so replaying a recording draws a new mask
    each time, the same one eager calls at that counter value would draw.
    out may be x itself.

    >>> import numpy as np
    >>> y, mask = dropout_forward(np.ones(8, np.float32), 0.5, seed=1, counter=DropoutCounter())
    >>> sorted(set(mask.tolist())) == [0.0, 2.0] and bool(np.all(y == mask))
    True
    """
    op = "dropout_forward"
    rate, seed = _rate(op, rate), _seed(op, seed)
    if not isinstance(counter, DropoutCounter):
        raise TypeError(f"{op}: expected counter to be a DropoutCounter, "
                        f"received {type(counter).__name__}")
    given = (("x", x),)
    x = _any_input(op, "x", x)
    if out is not x:
        out = _output(op, "out", out, x.shape, given + (("x", x),))
    else:
        _in_place(op, "out", out)
    mask_out = _output(op, "mask_out", mask_out, x.shape, given + (("x", x), ("out", out)))
    step = counter._array
    _run(op, lib.mg_dropout_forward,
         (_ptr(x), _ptr(out), _ptr(mask_out), x.size, rate, seed, ffi.from_buffer("int64_t[]", step)),
         (out, mask_out, step))
    return out, mask_out


def dropout_backward(dy, mask, out=None):
    """out = dy * mask where mask != 0, else 0 (mask from dropout_forward); out may be dy itself."""
    return _backward("dropout_backward", lib.mg_dropout_backward, mask, dy, out, y_name="mask")


# ---------------------------------------------------------------- sigmoid + BCE

def _logits_and_target(op, logits, target):
    given = (("logits", logits), ("target", target))
    logits = _any_input(op, "logits", logits)
    target = _any_input(op, "target", target)
    if target.shape != logits.shape:
        raise ValueError(f"{op}: expected target of the logits' shape {logits.shape}, "
                         f"received {target.shape}")
    return logits, target, given + (("logits", logits), ("target", target))


def sigmoid_bce_forward(logits, target, probs_out=None, loss_out=None):
    """(loss, probs): binary cross-entropy of sigmoid(logits) against target, fused.

    loss (a 0-d float32 array, ``loss_out`` when given) is the mean over all
    elements of max(z, 0) - z*t + log1p(exp(-|z|)), finite for every finite
    logit; for an (N, K) output that is Keras' binary_crossentropy (mean over
    the last axis, then over the batch). It is summed in double in an order
    that depends on the size alone, so it is the same for any thread count;
    0 for empty input.
    probs = sigmoid(logits), bitwise ``sigmoid_forward``'s, for metrics and
    ``sigmoid_bce_backward``. target holds float32 values (usually 0 or 1).
    """
    op = "sigmoid_bce_forward"
    logits, target, inputs = _logits_and_target(op, logits, target)
    probs_out = _output(op, "probs_out", probs_out, logits.shape, inputs)
    loss_out = _output(op, "loss_out", loss_out, (), inputs + (("probs_out", probs_out),))
    _run(op, lib.mg_sigmoid_bce_forward,
         (_ptr(logits), _ptr(target), _ptr(probs_out), _ptr(loss_out), logits.size),
         (probs_out, loss_out))
    return loss_out, probs_out


def sigmoid_bce_backward(probs, target, scale, out=None):
    """out = scale * (probs - target): the gradient on the logits, with
    scale = upstream_grad / probs.size for the mean."""
    op = "sigmoid_bce_backward"
    given = (("probs", probs), ("target", target))
    probs = _any_input(op, "probs", probs)
    target = _any_input(op, "target", target)
    if target.shape != probs.shape:
        raise ValueError(f"{op}: expected target of the probs' shape {probs.shape}, "
                         f"received {target.shape}")
    scale = _scalar(op, "scale", scale)
    out = _output(op, "out", out, probs.shape, given + (("probs", probs), ("target", target)))
    _run(op, lib.mg_sigmoid_bce_backward,
         (_ptr(probs), _ptr(target), scale, _ptr(out), probs.size), (out,))
    return out


def philox4x32_10(counter, key):
    """One Philox-4x32-10 block, the generator behind dropout: four uint32
    words from a counter of 4 words and a key of 2 (for known-answer tests).

    >>> [hex(w) for w in philox4x32_10([0, 0, 0, 0], [0, 0])]
    ['0x6627e8d5', '0xe169c58d', '0xbc57ac4c', '0x9b00dbd8']
    """
    op = "philox4x32_10"
    words = []
    for name, value, size in (("counter", counter, 4), ("key", key, 2)):
        if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != size or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                and 0 <= v <= 0xFFFFFFFF for v in value):
            raise ValueError(f"{op}: expected {name} to be {size} integers in [0, 2**32), "
                             f"received {value!r}")
        words.append(np.array([int(v) for v in value], dtype=np.uint32))
    out = np.empty(4, dtype=np.uint32)
    _run(op, lib.mg_philox4x32_10, tuple(ffi.from_buffer("uint32_t[]", w) for w in words)
         + (ffi.from_buffer("uint32_t[]", out),), (out,))
    return out
