"""``mg.jit``: record a training step's kernel calls once, replay them after.

The first call of a jitted function for a given input signature runs it eagerly
(the autograd graph, every wrapper validating its arrays) while a
``kernels.tape.Tape`` records each C call and each NumPy computation the ops
make, with the arrays they read and write. Later calls with the same signature
only copy the new inputs into the recording's input buffers and make the same
calls again: no graph, no re-validation, no allocation. The numbers are those
of the eager run bit for bit, at any thread count (the same kernels, with the
same arguments, in the same order).

What runs only while capturing (as with ``jax.jit`` or tinygrad's TinyJit): the
function's Python itself. Printing, appending to a list, reading ``.item()``,
branching on a value, drawing NumPy random numbers or doing NumPy work on the
raw input arrays happen once, at capture; the replay repeats only minigrad's
kernel calls. Work on inputs through minigrad Tensors and ops; return Tensors
(their values are fresh on every call) rather than Python numbers (a returned
float would be frozen, so it is refused).

A call replays only when all of these still hold, and recaptures otherwise
(``stats()["last_recapture"]`` says why):
- the inputs have the same shapes and dtypes (each signature keeps its own
  recording, so a short last batch gets one too), grad mode is the same, and
  other arguments are equal;
- every parameter (leaf Tensor) the step used holds the same array, with the
  same shape, dtype, layout and ``requires_grad``; a ``.grad`` the step read
  before setting it is the same object;
- the optimizers' state slots are the same arrays;
- no layer, model or loss was changed in between (assigning a layer's weight,
  ``trainable``, ``compile`` ...);
- ``mg.set_check_finite`` is off (when on, every call runs eagerly, so that
  each op checks its own output).
Optimizer hyperparameters (learning rate, schedules) and ``iterations`` are
read live on every replay. Tensors a call returns share memory with the
recording: the next call overwrites them (copy what you keep). A function
whose ops cannot be recorded (a custom ``Function`` doing NumPy work outside
``minigrad.kernels``) runs eagerly on every call, with one warning.

``mg.jit(step, borrow_inputs=True)`` skips the copy of the inputs: the recording
reads the very arrays passed at capture, in place, on every replay (``fit`` runs
its step this way on its batch buffers). It suits a loop that gathers each batch
into the same arrays (``kernels.RowGather``'s buffers, or arrays it refills);
each new array object is a new signature and is captured again.

>>> import numpy as np, minigrad as mg
>>> mg.utils.set_random_seed(0)
>>> model = mg.Sequential([mg.layers.Dense(4, activation="relu"), mg.layers.Dense(2)])
>>> model.build((3,))
>>> params = model.trainable_weights
>>> opt = mg.optimizers.SGD(learning_rate=0.1)
>>> @mg.jit
... def step(x, y):
...     loss = mg.softmax_cross_entropy(model(x), y)
...     loss.backward()
...     opt.step(params)
...     opt.zero_grad(params)
...     return loss
>>> x = np.ones((8, 3), np.float32); y = np.zeros(8, np.int64)
>>> losses = [step(x, y).item() for _ in range(3)]
>>> losses[0] > losses[1] > losses[2]
True
>>> step.stats()["captures"], step.stats()["replays"], opt.iterations
(1, 2, 3)
"""
import collections
import functools
import math
import operator
import threading
import warnings

import numpy as np

from . import grad_mode
from .kernels import tape as tape_module
from .tensor import Tensor

MAX_RECORDINGS = 8  # signatures kept per function (least recently used dropped first)
_enabled = True


def set_enabled(on):
    """Turn replaying off (every jitted call then runs eagerly, as written) or on again;
    for debugging and for measuring what the recording saves. Also ``mg.jit.set_enabled``.

    >>> set_enabled(False); enabled()
    False
    >>> set_enabled(True)
    """
    global _enabled
    if not isinstance(on, (bool, np.bool_)):
        raise TypeError(f"jit.set_enabled: expected True or False, received {on!r}")
    _enabled = bool(on)


def enabled():
    return _enabled


class _Unhashable(Exception):
    """An argument that can be neither compared by value nor recorded."""


class NonFiniteLoss(FloatingPointError):
    """Raised by ``stop_if_not_finite`` (eagerly, or inside a replay) before an update."""

    def __init__(self, value):
        super().__init__(f"the loss is {value}; the step stopped before any update")
        self.value = value


def stop_if_not_finite(loss):
    """Stop the step here (``NonFiniteLoss``) if ``loss`` holds NaN or infinity.

    Eagerly it checks at once; while capturing it also records the check, so every
    replay stops at the same point, before the backward pass and the update.
    """
    data = loss.data if isinstance(loss, Tensor) else loss
    recording = tape_module.active()
    if recording is not None:
        recording.add(_check_finite_loss, (data,))
    _check_finite_loss(data)


def _check_finite_loss(data):
    if data.size == 1:
        value = data.item()
        if not math.isfinite(value):
            raise NonFiniteLoss(value)
    elif not np.isfinite(data).all():
        raise NonFiniteLoss(float("nan"))


# ---------------------------------------------------------------- what a replay assumes

class _LeafState:
    """A parameter as the recording found it. Its array must be the same object
    with the same shape, strides (so still C-contiguous), dtype and writeability:
    all but the memory itself can be reassigned in place on an ndarray."""
    __slots__ = ("leaf", "data", "shape", "strides", "dtype", "writeable", "requires_grad")

    def __init__(self, leaf):
        self.leaf, self.data = leaf, leaf.data
        self.shape, self.strides, self.dtype = leaf.data.shape, leaf.data.strides, leaf.data.dtype
        self.writeable, self.requires_grad = leaf.data.flags.writeable, leaf.requires_grad

    def problem(self):
        leaf, data = self.leaf, self.data
        if leaf.data is not data:
            return "a parameter's data was replaced"
        if data.shape != self.shape or data.dtype != self.dtype:
            return "a parameter changed shape or dtype"
        if data.strides != self.strides or data.flags.writeable != self.writeable:
            return "a parameter changed layout or writeability"
        if leaf.requires_grad is not self.requires_grad:
            return "a parameter's requires_grad changed"
        return None


class _Recording:
    """One signature's tape plus what it needs to replay safely."""

    def __init__(self, recording, inputs, borrowed, template, version):
        self.calls = recording.calls
        self.inputs = inputs          # the arrays the recorded calls read as inputs
        self.borrowed = borrowed
        self.template = template
        self.version = version
        self.leaves = [_LeafState(t) for t in recording.leaves.values()]
        self.grad_reads = list(recording.grad_reads.values())
        self.grad_ends = [(leaf, leaf.grad) for leaf in recording.grad_writes.values()]
        self.guards = list(recording.guards)
        self.keep = recording.produced  # keeps every buffer alive

    def problem(self):
        if tape_module.version() != self.version:
            return "a layer, model or loss changed"
        for state in self.leaves:  # (problem() inlined for its common, passing case)
            data = state.data
            if (state.leaf.data is not data or data.shape != state.shape
                    or data.strides != state.strides or data.dtype is not state.dtype
                    or data.flags.writeable is not state.writeable
                    or state.leaf.requires_grad is not state.requires_grad):
                reason = state.problem()
                if reason is not None:
                    return reason
        for leaf, grad in self.grad_reads:
            if leaf.grad is not grad:
                return "a .grad the step reads was changed outside it"
        for guard in self.guards:
            reason = guard()
            if reason is not None:
                return reason
        return None

    def run(self, arrays):
        if not self.borrowed:
            for buffer, array in zip(self.inputs, arrays):
                np.copyto(buffer, array, casting="no")
        for function, args, is_c in self.calls:
            status = function(*args)
            if is_c and status:
                _raise_status(function, status, is_c)
        for leaf, grad in self.grad_ends:
            leaf.grad = grad
        return self.template()


# ---------------------------------------------------------------- the decorator

def jit(function=None, *, name=None, borrow_inputs=False):
    """Capture ``function``'s kernel calls on first use and replay them after.

    Use as ``@mg.jit``, ``mg.jit(step)`` or ``mg.jit(step, borrow_inputs=True)``
    (the inputs are read in place, not copied: for loops that pass the same
    arrays every call). See the module docstring for what runs only while
    capturing and what makes a call recapture; ``.stats()`` tells how many calls
    were captured, replayed and run eagerly.
    """
    if function is None:
        return functools.partial(jit, name=name, borrow_inputs=borrow_inputs)
    if not callable(function):
        raise TypeError(f"jit: expected a callable, received {type(function).__name__}")
    return Jitted(function, name=name, borrow_inputs=borrow_inputs)


jit.set_enabled, jit.enabled = set_enabled, enabled
jit.stop_if_not_finite, jit.NonFiniteLoss = stop_if_not_finite, NonFiniteLoss


class Jitted:
    """A function with one recording per input signature (see ``jit``)."""

    def __init__(self, function, name=None, borrow_inputs=False):
        self.function = function
        self.name = name or getattr(function, "__name__", "function")
        self._borrow = bool(borrow_inputs)
        self._recordings = collections.OrderedDict()
        self._eager_keys = set()
        self._lock = threading.RLock()
        self._stats = {"captures": 0, "replays": 0, "eager": 0, "last_recapture": None}
        self._last = None  # borrowed inputs: (args, grad mode, key, arrays) of the last call
        functools.update_wrapper(self, function)

    def stats(self):
        """{'captures', 'replays', 'eager', 'recordings', 'last_recapture'}: how calls ran."""
        with self._lock:
            return dict(self._stats, recordings=len(self._recordings))

    def reset(self):
        """Drop every recording (the next call of each signature captures again)."""
        with self._lock:
            self._last = None
            self._recordings.clear()
            self._eager_keys.clear()

    def __get__(self, instance, owner):  # as a method: bind like a function
        return self if instance is None else functools.partial(self, instance)

    def __call__(self, *args, **kwargs):
        if tape_module.active() is not None or grad_mode._check_finite or not _enabled:
            self._stats["eager"] += 1
            return self.function(*args, **kwargs)
        last = self._last
        if (last is not None and not kwargs and len(args) == len(last[0])
                and all(map(operator.is_, args, last[0])) and grad_mode.is_grad_enabled() is last[1]
                and list(map(_layout, args)) == last[4]):
            key, arrays = last[2], last[3]  # the very same (borrowed) arrays as last time
        else:
            key, arrays = self._signature(args, kwargs)
            if key is None:
                self._stats["eager"] += 1
                return self.function(*args, **kwargs)
            if self._borrow and not kwargs and all(type(a) is np.ndarray for a in args):
                # plain arrays only: a Tensor argument's .data may be replaced in between
                self._last = (args, grad_mode.is_grad_enabled(), key, arrays, list(map(_layout, args)))
        with self._lock:
            if key in self._eager_keys:
                self._stats["eager"] += 1
                return self.function(*args, **kwargs)
            recording = self._recordings.get(key)
            if recording is not None:
                reason = recording.problem()
                if reason is None:
                    self._recordings.move_to_end(key)
                    self._stats["replays"] += 1
                    return recording.run(arrays)
                self._stats["last_recapture"] = reason
                del self._recordings[key]
            return self._capture(key, args, kwargs, arrays)

    # ------------------------------------------------------------ internals
    def _signature(self, args, kwargs):
        """(key, arrays): the call's signature and its input arrays in order; key is
        None when an argument can be neither compared by value nor recorded (an
        unhashable object that is not a list, tuple or dict): such calls run eagerly."""
        parts, arrays = [grad_mode.is_grad_enabled()], []
        try:
            for value in list(args) + [kwargs[k] for k in sorted(kwargs)]:
                parts.append(self._part(value, arrays))
        except _Unhashable:
            return None, arrays
        parts.append(tuple(sorted(kwargs)))
        return tuple(parts), arrays

    def _part(self, value, arrays):
        if type(value) is np.ndarray:  # the common case first
            array, part = value, ("A", value.shape, value.dtype)
        elif isinstance(value, Tensor):
            if value.requires_grad:
                raise ValueError(f"jit({self.name}): expected inputs that do not require grad "
                                 f"(parameters are read by the function, not passed to it)")
            array, part = value.data, ("T", value.data.shape, value.data.dtype)
        elif isinstance(value, np.ndarray):
            raise TypeError(f"jit({self.name}): expected plain numpy arrays, received "
                            f"{type(value).__name__}")
        elif isinstance(value, (list, tuple)):
            return (type(value).__name__,) + tuple(self._part(v, arrays) for v in value)
        elif isinstance(value, dict):
            return ("dict",) + tuple((k, self._part(value[k], arrays)) for k in sorted(value, key=repr))
        else:
            try:
                hash(value)
            except TypeError:
                raise _Unhashable from None
            return ("V", type(value), value)
        if self._borrow:
            part += (id(array), array.strides)
        arrays.append(array)
        return part

    def _capture(self, key, args, kwargs, arrays):
        recording = tape_module.Tape()
        buffers = arrays if self._borrow else [np.array(a, order="C") for a in arrays]
        recording.mark(*buffers)
        feed = iter(buffers)

        def substitute(value):  # in the order _part visited them
            if isinstance(value, Tensor):
                return Tensor._wrap(next(feed), False)
            if isinstance(value, np.ndarray):
                return next(feed)
            if isinstance(value, (list, tuple)):
                items = [substitute(v) for v in value]
                return type(value)(items) if type(value) in (list, tuple) else type(value)(*items)
            if isinstance(value, dict):
                done = {k: substitute(value[k]) for k in sorted(value, key=repr)}
                return {k: done[k] for k in value}
            return value
        call_args = [substitute(a) for a in args]
        call_kwargs = {k: substitute(kwargs[k]) for k in sorted(kwargs)}
        with recording:
            result = self.function(*call_args, **call_kwargs)
        template = _template(result, recording, self.name)
        if recording.refused is not None:
            # The call itself ran eagerly and completely; only its replay is refused.
            self._eager_keys.add(key)
            self._stats["eager"] += 1
            warnings.warn(f"jit({self.name}): this step runs eagerly on every call: "
                          f"{recording.refused}", RuntimeWarning, stacklevel=3)
            return _untemplated(result)
        self._stats["captures"] += 1
        self._recordings[key] = _Recording(recording, buffers, self._borrow, template,
                                           tape_module.version())
        while len(self._recordings) > MAX_RECORDINGS:
            self._recordings.popitem(last=False)
        return template()


def _layout(array):
    """What an ndarray can change in place without becoming another object."""
    return array.shape, array.strides, array.dtype


def _raise_status(cfunc, status, explain):
    """The error the kernel's wrapper would have raised (e.g. a label out of range)."""
    from . import kernels
    if callable(explain):
        explain()
    name = getattr(cfunc, "__name__", "kernel")
    op = name[3:] if name.startswith("mg_") else name
    for suffix in ("_index", "_dense"):
        op = op[:-len(suffix)] if op.endswith(suffix) else op
    kernels._check_status(op, status)
    raise RuntimeError(f"jit: a recorded C call ({name}) returned error code {status}")


def _untemplated(result):
    """The eager call's own result, without graph edges (as a replay would return)."""
    if isinstance(result, Tensor):
        return Tensor._wrap(result.data, False)
    if isinstance(result, (tuple, list)):
        return type(result)(_untemplated(r) for r in result)
    if isinstance(result, dict):
        return {k: _untemplated(v) for k, v in result.items()}
    return result


def _template(result, recording, name):
    """A function that rebuilds the returned structure around the recording's arrays."""
    if result is None:
        return lambda: None
    if isinstance(result, Tensor):
        data = result.data
        _check_known(data, recording, name)
        return lambda: Tensor._wrap(data, False)
    if isinstance(result, np.ndarray):
        _check_known(result, recording, name)
        return lambda: result
    if isinstance(result, (tuple, list)):
        parts = [_template(r, recording, name) for r in result]
        kind = type(result) if type(result) in (tuple, list) else tuple
        return lambda: kind(p() for p in parts)
    if isinstance(result, dict):
        parts = {k: _template(v, recording, name) for k, v in result.items()}
        return lambda: {k: p() for k, p in parts.items()}
    raise TypeError(f"jit({name}): expected the function to return Tensors (or tuples, lists "
                    f"or dicts of them, or None), received {type(result).__name__}; a Python "
                    f"number would be the same on every replay: return the Tensor and call "
                    f".item() outside")


def _check_known(array, recording, name):
    if not recording.knows(array):
        recording.refuse(f"jit({name}): a returned array was made outside minigrad's kernels "
                         f"and would not change on replay")
