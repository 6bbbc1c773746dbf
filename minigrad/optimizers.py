"""Optimizers: RMSprop, SGD and Adam, each updating ALL parameters in one C call.

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
import math

import numpy as np

from . import kernels
from .kernels import tape
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


class Optimizer:
    """Base class. Subclasses set ``_slot_names`` and implement ``_update(ws, gs, slots)``."""
    _slot_names = ()

    def __init__(self, learning_rate):
        self.learning_rate = learning_rate
        self.iterations = 0  # steps applied, as Keras' optimizer.iterations
        self._slots = {}     # parameter Tensor -> tuple of state arrays

    @property
    def learning_rate(self):
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self._learning_rate = _number(type(self).__name__, "learning_rate", value, 0.0, low_open=True)

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
            self._apply_update(ws, gs, slots)
        if recording is not None:
            for v, _ in pairs:
                recording.note_leaf(v)
            recording.add(self._apply_update, (ws, gs, slots))
            variables = [v for v, _ in pairs]
            recording.guards.append(functools.partial(
                self._same_state, variables, [self._slots.get(v) for v in variables]))

    def _apply_update(self, ws, gs, slots):
        """The update of one step: one C call for every parameter, then the step count.
        Both happen or neither: weights and slots updated without their count would
        give Adam's next step the wrong t. A KeyboardInterrupt can arrive between any
        two bytecodes, also right after the C call returned, so the count goes first
        and is taken back only if the C call did not complete (its per-thread count
        of applied updates says so)."""
        before, done = self.iterations, kernels.optimizer_updates_done()
        try:
            self.iterations = before + 1
            self._update(ws, gs, slots, before + 1)
        except BaseException:
            if kernels.optimizer_updates_done() == done:
                self.iterations = before
            raise

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

    def _update(self, ws, gs, slots, step):
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

    def __init__(self, learning_rate=0.001, rho=0.9, epsilon=1e-7, epsilon_inside=True):
        super().__init__(learning_rate)
        self.rho = _number("RMSprop", "rho", rho, 0.0, 1.0, high_open=True)
        self.epsilon = _number("RMSprop", "epsilon", epsilon, 0.0)
        if not isinstance(epsilon_inside, (bool, np.bool_)):
            raise TypeError(f"RMSprop: expected epsilon_inside to be a bool, received {epsilon_inside!r}")
        self.epsilon_inside = bool(epsilon_inside)

    def _update(self, ws, gs, slots, step):
        kernels.rmsprop_update(ws, gs, slots[0], self.learning_rate, self.rho, self.epsilon,
                               self.epsilon_inside)

    def __repr__(self):
        return (f"RMSprop(learning_rate={self.learning_rate}, rho={self.rho}, "
                f"epsilon={self.epsilon}, epsilon_inside={self.epsilon_inside})")


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

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False):
        super().__init__(learning_rate)
        self.momentum = _number("SGD", "momentum", momentum, 0.0, 1.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"SGD: expected nesterov to be a bool, received {nesterov!r}")
        self.nesterov = bool(nesterov)
        # No velocity slot is needed (or allocated) without momentum.
        self._slot_names = ("momentum",) if self.momentum != 0.0 else ()

    def _update(self, ws, gs, slots, step):
        kernels.sgd_update(ws, gs, slots[0] if slots else None, self.learning_rate,
                           self.momentum, self.nesterov)

    def __repr__(self):
        return f"SGD(learning_rate={self.learning_rate}, momentum={self.momentum}, nesterov={self.nesterov})"


class Adam(Optimizer):
    """Keras 3 Adam: m += (g-m)(1-b1); v += (g^2-v)(1-b2);
    w -= lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + epsilon), t = 1, 2, ...

    >>> import numpy as np, minigrad as mg
    >>> w = mg.Tensor(np.zeros(1, np.float32), requires_grad=True)
    >>> Adam(learning_rate=0.001).apply_gradients([(np.array([0.5], np.float32), w)])
    >>> round(float(w.numpy()[0]), 7)    # first step moves ~lr against the gradient's sign
    -0.001
    """
    _slot_names = ("m", "v")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        super().__init__(learning_rate)
        self.beta_1 = _number("Adam", "beta_1", beta_1, 0.0, 1.0, high_open=True)
        self.beta_2 = _number("Adam", "beta_2", beta_2, 0.0, 1.0, high_open=True)
        self.epsilon = _number("Adam", "epsilon", epsilon, 0.0)

    def _update(self, ws, gs, slots, step):
        kernels.adam_update(ws, gs, slots[0], slots[1], self.learning_rate, self.beta_1,
                            self.beta_2, self.epsilon, step)

    def __repr__(self):
        return (f"Adam(learning_rate={self.learning_rate}, beta_1={self.beta_1}, "
                f"beta_2={self.beta_2}, epsilon={self.epsilon})")


_BY_NAME = {"rmsprop": RMSprop, "sgd": SGD, "adam": Adam}


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
