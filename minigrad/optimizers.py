"""Optimizers: RMSprop, SGD, Adam and AdamW, each updating ALL parameters in one C call.

The kernels (``kernels.rmsprop_update`` etc.) validate every parameter, gradient
and state slot before writing any, so a step is applied to all parameters or
to none: an error or a KeyboardInterrupt never leaves a model half-updated.

The same objects drive ``Sequential.fit`` and a hand-written loop:

>>> import numpy as np, minigrad as mg
>>> w = mg.Tensor(np.array([1.0, -1.0], np.float32), requires_grad=True)
>>> opt = SGD(learning_rate=0.1)
>>> (w * w).sum().backward()          # grad = 2w
>>> opt.step([w]); opt.zero_grad([w])
>>> w.numpy()
array([ 0.8, -0.8], dtype=float32)

Keras-style: ``opt.apply_gradients(zip(grads, variables))``.
State slots (one float32 array per parameter and slot) are created on first use,
keyed by the parameter Tensor itself.
"""
import functools
import inspect
import math

import numpy as np

from . import kernels
from .kernels import tape
from . import schedules
from .tensor import Tensor


def _number(cls, name, value, low=None, high=None, low_open=False, high_open=False):
    """A finite real in the given range, or a ValueError saying expected/received."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(float(value))
    if ok and low is not None:
        ok = float(value) > low if low_open else float(value) >= low
    if ok and high is not None:
        ok = float(value) < high if high_open else float(value) <= high
    if not ok:
        lo = "" if low is None else f"{low} {'<' if low_open else '<='} "
        hi = "" if high is None else f" {'<' if high_open else '<='} {high}"
        raise ValueError(f"{cls}: expected {lo}{name}{hi} (a finite number), received {value!r}")
    return float(value)


def _takes_an_argument(fn):
    """Whether fn can be called with one positional argument (the step)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature (some builtins): assume fn(step)
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


class Optimizer:
    """Base class. Subclasses set ``_slot_names`` and ``_kernel_op`` (the kernel's name)
    and implement ``_update(params, step)``, params a ``kernels.ParamTable``.

    ``learning_rate`` is a float, a ``schedules.LearningRateSchedule`` or any
    callable of the step: ``schedule(iterations)``, with ``iterations`` 0 for
    the first update (as Keras). A callable taking no argument is called without
    one (Keras 3 calls every non-schedule callable that way). Reading
    ``optimizer.learning_rate`` gives the value the next update uses (Keras 3);
    the rate itself is in ``optimizer.learning_rate_schedule`` (None for a
    float). Assigning a float replaces a float rate; an optimizer built with a
    schedule or callable refuses a float (TypeError, as Keras), but takes a
    new schedule.

    Gradient clipping, at most one of (Keras 3): ``clipnorm`` clips each
    gradient to that L2 norm, ``global_clipnorm`` scales all gradients together
    so that their joint norm is at most that, ``clipvalue`` clips each element
    to [-clipvalue, clipvalue]. The gradients passed in are not modified; the
    clipped copies are computed at each update (also on a replay), before any
    weight decay and the update itself.

    >>> import numpy as np, minigrad as mg
    >>> w = mg.Tensor(np.zeros(2, np.float32), requires_grad=True)
    >>> opt = SGD(learning_rate=lambda step: 1.0 / (step + 1), clipnorm=1.0)
    >>> opt.apply_gradients([(np.array([3.0, 4.0], np.float32), w)])   # norm 5 -> 1
    >>> w.numpy(), opt.learning_rate
    (array([-0.6, -0.8], dtype=float32), 0.5)
    """
    _slot_names = ()

    def __init__(self, learning_rate, clipnorm=None, clipvalue=None, global_clipnorm=None):
        cls = type(self).__name__
        self._learning_rate = None
        self.learning_rate = learning_rate
        self.iterations = 0  # steps applied, as Keras' optimizer.iterations
        self._slots = {}     # parameter Tensor -> tuple of state arrays
        self._clip_buffers = {}  # id(parameter array) -> (that array, its clipped-gradient buffer)
        given = {k: v for k, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue),
                                   ("global_clipnorm", global_clipnorm)) if v is not None}
        if len(given) > 1:
            raise ValueError(f"{cls}: expected at most one of clipnorm, clipvalue and global_clipnorm, "
                             f"received {', '.join(f'{k}={v!r}' for k, v in given.items())}")
        self.clipnorm = self.clipvalue = self.global_clipnorm = None
        for name, value in given.items():
            setattr(self, name, _number(cls, name, value, 0.0, low_open=True))

    @property
    def learning_rate(self):
        """The learning rate of the next update (a float, also with a schedule)."""
        if getattr(self, "_pinned_rate", None) is not None:
            return self._pinned_rate  # inside an update: the rate of the step being applied
        rate = self._learning_rate
        if self._lr_callable is None:
            return rate
        value = rate(int(self.iterations)) if self._lr_takes_step else rate()
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not ok or not math.isfinite(float(value)) or float(value) < 0:
            raise ValueError(f"{type(self).__name__}: expected the learning-rate schedule {rate!r} to "
                             f"return a finite number >= 0 at step {self.iterations}, received {value!r}")
        return float(value)

    @learning_rate.setter
    def learning_rate(self, value):
        cls = type(self).__name__
        if callable(value) and not isinstance(value, type):
            self._learning_rate, self._lr_callable = value, value
            self._lr_takes_step = isinstance(value, schedules.LearningRateSchedule) or _takes_an_argument(value)
            return
        if self._learning_rate is not None and self._lr_callable is not None:
            raise TypeError(f"{cls}: expected a LearningRateSchedule or callable for learning_rate "
                            f"(this optimizer was built with the schedule {self._learning_rate!r}, "
                            f"so its rate is not settable to a number), received {value!r}")
        self._learning_rate = _number(cls, "learning_rate", value, 0.0, low_open=True)
        self._lr_callable = None

    @property
    def learning_rate_schedule(self):
        """The schedule or callable given as learning_rate (None when it is a float)."""
        return self._lr_callable

    def _config_repr(self):
        """The learning rate (the schedule itself, if any) and clipping arguments, for __repr__."""
        lr = self._learning_rate
        parts = [f"learning_rate={lr!r}" if self._lr_callable is not None else f"learning_rate={lr}"]
        for name in ("clipnorm", "clipvalue", "global_clipnorm"):
            if getattr(self, name) is not None:
                parts.append(f"{name}={getattr(self, name)}")
        return parts

    # ------------------------------------------------------------ public API
    def apply(self, grads, variables):
        """Update each variable (Tensor) with its gradient (array or Tensor; None = skip)."""
        try:
            grads, variables = list(grads), list(variables)
        except TypeError:
            raise TypeError(f"{type(self).__name__}: expected gradients and variables as iterables, "
                            f"received {type(grads).__name__} and {type(variables).__name__}") from None
        if len(grads) != len(variables):
            raise ValueError(f"{type(self).__name__}: expected one gradient per variable "
                             f"({len(variables)}), received {len(grads)}")
        pairs = []
        for g, v in zip(grads, variables):
            if not isinstance(v, Tensor):
                raise TypeError(f"{type(self).__name__}: expected variables to be minigrad Tensors, "
                                f"received {type(v).__name__}")
            if g is not None:
                pairs.append((v, g.data if isinstance(g, Tensor) else g))
        if not pairs:
            return
        ws = [v.data for v, _ in pairs]
        gs = [g for _, g in pairs]
        slots = [[self._slot(v)[k] for v, _ in pairs] for k in range(len(self._slot_names))]
        recording = tape.active()
        with tape.paused():  # a replay must read the hyperparameters and step count live
            tables = self._apply_update(ws, gs, slots)
        for v, _ in pairs:  # an in-place change: graphs built before it cannot backward
            v._vc[0] += 1
        if recording is not None:
            for v, _ in pairs:
                recording.note_leaf(v)
            # the replay reuses the tables validated now (the step's guards check the
            # parameters and this optimizer's state arrays before every replay)
            recording.add(self._apply_update, (ws, gs, slots, tables))
            variables = [v for v, _ in pairs]
            recording.guards.append(functools.partial(
                self._same_state, variables, [self._slots.get(v) for v in variables]))

    def _apply_update(self, ws, gs, slots, tables=None):
        """The update of one step: clipping (one C call), the update (one C call for
        every parameter), then the step count. A replay calls this again, so the
        learning rate, the clipping and the step are all read here, live. Returns the
        validated tables, which a replay passes back (they are remade when the
        clipping was switched on or off in between).

        The update and the count happen together or not at all: weights and slots
        updated without their count would give Adam's next step the wrong t. A
        KeyboardInterrupt can arrive between any two bytecodes, also right after the
        C call returned, so the count goes first and is taken back only if the C call
        did not complete (the C side's per-thread count of applied updates says so)."""
        mode, clip = self._clipping()
        if (tables is None or (tables[0] is None) != (mode is None)
                or tables[1].op != self._kernel_op):
            tables = self._tables(ws, gs, slots, mode)
        if mode is not None:
            kernels.clip_gradients(None, tables[0], mode, clip)
        before, done = self.iterations, kernels.optimizer_updates_done()
        self._pinned_rate = self.learning_rate  # the rate of step `before` (schedules read iterations)
        try:
            self.iterations = before + 1
            self._update(tables[1], before + 1)
        except BaseException:
            if kernels.optimizer_updates_done() == done:
                self.iterations = before
            raise
        finally:
            self._pinned_rate = None
        return tables

    def _clipping(self):
        """(mode, value) of the clipping that is set, or (None, None)."""
        for mode in ("clipnorm", "global_clipnorm", "clipvalue"):
            clip = getattr(self, mode)
            if clip is not None:
                return mode, clip
        return None, None

    def _tables(self, ws, gs, slots, mode):
        """(clip table or None, update table): the arrays validated for the kernels.
        With clipping, the update reads the clipped copies, in buffers of its own
        (one per parameter array, kept so that every step sees the same arrays)."""
        if mode is None:
            return None, kernels.param_table(self._kernel_op, ws, gs, slots)
        outs = []
        for w in ws:
            entry = self._clip_buffers.get(id(w))
            if entry is None or entry[0] is not w or entry[1].shape != w.shape:
                entry = (w, np.empty(w.shape, dtype=np.float32))
                self._clip_buffers[id(w)] = entry
            outs.append(entry[1])
        return (kernels.param_table("clip_gradients", outs, gs, []),
                kernels.param_table(self._kernel_op, ws, outs, slots))

    def _same_state(self, variables, slots):
        """None while the optimizer still holds these state arrays (else why not)."""
        current = self._slots
        for v, s in zip(variables, slots):
            if current.get(v) is not s:
                return f"{type(self).__name__}'s state was replaced"
        return None

    def apply_gradients(self, grads_and_vars):
        """Keras form: ``opt.apply_gradients(zip(grads, variables))``."""
        try:
            pairs = [tuple(p) for p in grads_and_vars]
        except TypeError:
            raise TypeError(f"{type(self).__name__}.apply_gradients: expected (gradient, variable) "
                            f"pairs, received {type(grads_and_vars).__name__}") from None
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"{type(self).__name__}.apply_gradients: expected (gradient, variable) "
                             f"pairs, received an item of length {[len(p) for p in pairs if len(p) != 2][0]}")
        self.apply([g for g, _ in pairs], [v for _, v in pairs])

    def step(self, params):
        """Update every parameter from its ``.grad`` (parameters without one are skipped)."""
        params = list(params)
        recording = tape.active()
        if recording is not None:
            for p in params:
                if isinstance(p, Tensor):
                    recording.read_grad(p)
        self.apply([p.grad if isinstance(p, Tensor) else None for p in params], params)

    @staticmethod
    def zero_grad(params):
        """Drop the parameters' gradients (the next backward starts from zero)."""
        recording = tape.active()
        for p in params:
            p.grad = None
            if recording is not None:
                recording.wrote_grad(p)

    def variables(self):
        """All state arrays, in the order their parameters were first seen."""
        return [s for slots in self._slots.values() for s in slots]

    # ------------------------------------------------------------ internals
    def _slot(self, v):
        slots = self._slots.get(v)
        if slots is None or (slots and slots[0].shape != v.shape):
            slots = tuple(np.zeros(v.shape, dtype=np.float32) for _ in self._slot_names)
            self._slots[v] = slots
        return slots

    def _update(self, params, step):
        raise NotImplementedError


class RMSprop(Optimizer):
    """RMSprop: v = rho*v + (1-rho)*g^2; w -= lr * g / sqrt(v + epsilon).

    ``epsilon_inside=True`` puts epsilon inside the root (Keras 3);
    ``False`` gives w -= lr * g / (sqrt(v) + epsilon) (Keras 2, PyTorch).

    >>> import numpy as np, minigrad as mg
    >>> w = mg.Tensor(np.zeros(1, np.float32), requires_grad=True)
    >>> opt = RMSprop(learning_rate=0.001)
    >>> opt.apply_gradients([(np.array([1e-4], np.float32), w)])
    >>> round(float(w.numpy()[0]), 9)
    -0.000314658
    """
    _slot_names = ("velocity",)

    def __init__(self, learning_rate=0.001, rho=0.9, epsilon=1e-7, epsilon_inside=True,
                 clipnorm=None, clipvalue=None, global_clipnorm=None):
        super().__init__(learning_rate, clipnorm, clipvalue, global_clipnorm)
        self.rho = _number("RMSprop", "rho", rho, 0.0, 1.0, high_open=True)
        self.epsilon = _number("RMSprop", "epsilon", epsilon, 0.0)
        if not isinstance(epsilon_inside, (bool, np.bool_)):
            raise TypeError(f"RMSprop: expected epsilon_inside to be a bool, received {epsilon_inside!r}")
        self.epsilon_inside = bool(epsilon_inside)

    _kernel_op = "rmsprop_update"

    def _update(self, params, step):
        kernels.rmsprop_update(params, None, None, self.learning_rate, self.rho, self.epsilon,
                               self.epsilon_inside)

    def __repr__(self):
        return _repr(self, [f"rho={self.rho}", f"epsilon={self.epsilon}",
                            f"epsilon_inside={self.epsilon_inside}"])


class SGD(Optimizer):
    """Keras SGD: velocity = momentum*velocity - lr*g; w += velocity
    (Nesterov: w += momentum*velocity - lr*g). Plain w -= lr*g when momentum == 0.

    >>> import numpy as np, minigrad as mg
    >>> w = mg.Tensor(np.ones(1, np.float32), requires_grad=True)
    >>> opt = SGD(learning_rate=0.1, momentum=0.9)
    >>> for _ in range(2): opt.apply_gradients([(np.ones(1, np.float32), w)])
    >>> round(float(w.numpy()[0]), 6)     # 1 - 0.1 - (0.09 + 0.1)
    0.71
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False,
                 clipnorm=None, clipvalue=None, global_clipnorm=None):
        super().__init__(learning_rate, clipnorm, clipvalue, global_clipnorm)
        self.momentum = _number("SGD", "momentum", momentum, 0.0, 1.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"SGD: expected nesterov to be a bool, received {nesterov!r}")
        self.nesterov = bool(nesterov)
        # No velocity slot is needed (or allocated) without momentum.
        self._slot_names = ("momentum",) if self.momentum != 0.0 else ()

    _kernel_op = "sgd_update"

    def _update(self, params, step):
        kernels.sgd_update(params, None, None, self.learning_rate, self.momentum, self.nesterov)

    def __repr__(self):
        return _repr(self, [f"momentum={self.momentum}", f"nesterov={self.nesterov}"])


class Adam(Optimizer):
    """Keras 3 Adam: m += (g-m)(1-b1); v += (g^2-v)(1-b2);
    w -= lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + epsilon), t = 1, 2, ...
    With ``amsgrad=True`` a third slot keeps v_hat = max(v_hat, v), which
    replaces v in the denominator (so the step size never grows back).

    >>> import numpy as np, minigrad as mg
    >>> w = mg.Tensor(np.zeros(1, np.float32), requires_grad=True)
    >>> Adam(learning_rate=0.001).apply_gradients([(np.array([0.5], np.float32), w)])
    >>> round(float(w.numpy()[0]), 7)    # first step moves ~lr against the gradient's sign
    -0.001
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 clipnorm=None, clipvalue=None, global_clipnorm=None):
        super().__init__(learning_rate, clipnorm, clipvalue, global_clipnorm)
        cls = type(self).__name__
        self.beta_1 = _number(cls, "beta_1", beta_1, 0.0, 1.0, high_open=True)
        self.beta_2 = _number(cls, "beta_2", beta_2, 0.0, 1.0, high_open=True)
        self.epsilon = _number(cls, "epsilon", epsilon, 0.0)
        if not isinstance(amsgrad, (bool, np.bool_)):
            raise TypeError(f"{cls}: expected amsgrad to be a bool, received {amsgrad!r}")
        self.amsgrad = bool(amsgrad)
        self._slot_names = ("m", "v", "v_hat") if self.amsgrad else ("m", "v")

    @property
    def _kernel_op(self):
        return "adamw_update" if self.amsgrad else "adam_update"

    def _update(self, params, step):
        if self.amsgrad:
            kernels.adamw_update(params, None, None, None, None, self.learning_rate, self.beta_1,
                                 self.beta_2, self.epsilon, 0.0, step, amsgrad=True)
        else:
            kernels.adam_update(params, None, None, None, self.learning_rate, self.beta_1,
                                self.beta_2, self.epsilon, step)

    def _hyper_repr(self):
        extra = [f"beta_1={self.beta_1}", f"beta_2={self.beta_2}", f"epsilon={self.epsilon}"]
        return extra + (["amsgrad=True"] if self.amsgrad else [])

    def __repr__(self):
        return _repr(self, self._hyper_repr())


class AdamW(Adam):
    """Keras 3 AdamW: Adam with decoupled weight decay. Each update first shrinks
    the weights, w -= w * weight_decay * lr (lr of this step), then applies the
    Adam step to the gradient (clipped first, if clipping is set); the decay
    does not enter m or v. ``amsgrad`` as in Adam.

    >>> import numpy as np, minigrad as mg
    >>> w = mg.Tensor(np.ones(1, np.float32), requires_grad=True)
    >>> opt = AdamW(learning_rate=0.1, weight_decay=0.5)
    >>> opt.apply_gradients([(np.zeros(1, np.float32), w)])   # no gradient: decay only
    >>> round(float(w.numpy()[0]), 6)    # 1 - 1 * 0.5 * 0.1
    0.95
    """

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, clipnorm=None, clipvalue=None, global_clipnorm=None):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, clipnorm, clipvalue,
                         global_clipnorm)
        if weight_decay is None:  # Keras: "Argument `weight_decay` must be a float"
            raise ValueError("AdamW: expected weight_decay to be a finite number >= 0, received None")
        self.weight_decay = _number("AdamW", "weight_decay", weight_decay, 0.0)

    _kernel_op = "adamw_update"

    def _update(self, params, step):
        kernels.adamw_update(params, None, None, None, None, self.learning_rate, self.beta_1,
                             self.beta_2, self.epsilon, self.weight_decay, step,
                             amsgrad=self.amsgrad)

    def __repr__(self):
        return _repr(self, [f"weight_decay={self.weight_decay}"] + self._hyper_repr())


def _repr(opt, hyper):
    """Class(learning_rate=..., <hyperparameters>, <clipping>)."""
    parts = opt._config_repr()
    return f"{type(opt).__name__}({', '.join(parts[:1] + hyper + parts[1:])})"


_BY_NAME = {"rmsprop": RMSprop, "sgd": SGD, "adam": Adam, "adamw": AdamW}


def get(identifier):
    """An optimizer from a name (default hyperparameters) or an Optimizer instance.

    >>> get("rmsprop")
    RMSprop(learning_rate=0.001, rho=0.9, epsilon=1e-07, epsilon_inside=True)
    """
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Optimizer):
        return identifier()
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    if isinstance(identifier, str):
        raise ValueError(f"Unknown optimizer {identifier!r}; expected one of {sorted(_BY_NAME)} "
                         f"(or an Optimizer instance)")
    raise TypeError(f"Could not interpret optimizer {identifier!r}: expected a name or an Optimizer")
