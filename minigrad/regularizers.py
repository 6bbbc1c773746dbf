"""Weight penalties added to the loss (Keras): ``l1``, ``l2``, ``l1_l2``.

A regularizer is a callable ``weight Tensor -> scalar Tensor``; ``Dense``'s
``kernel_regularizer`` / ``bias_regularizer`` (and ``Conv2D``'s) take one, or its
string id. The penalties are part of the loss that ``fit`` and ``evaluate``
report, and their gradient part of the update.

>>> import minigrad as mg
>>> w = mg.Tensor([[1.0, -2.0]])
>>> round(l2(0.01)(w).item(), 6), round(l1(0.5)(w).item(), 6), round(l1_l2(l1=0.5, l2=0.01)(w).item(), 6)
(0.05, 1.5, 1.55)
"""
import math

import numpy as np

from .kernels import tape
from .tensor import Tensor


def _factor(value, name, where):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or float(value) < 0:
        raise ValueError(f"{where}: expected {name} to be a finite number >= 0, received {value!r}")
    return float(value)


class Regularizer:
    """Base: ``__call__(weight) -> scalar Tensor``; ``get_config()`` for saving."""

    def __setattr__(self, name, value):
        tape.changed()  # a recorded step (mg.jit) computed the penalty with the old factor
        object.__setattr__(self, name, value)

    def __call__(self, weight):
        raise NotImplementedError

    def get_config(self):
        return {}


class L1L2(Regularizer):
    """l1 * sum(|w|) + l2 * sum(w ** 2)."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _factor(l1, "l1", type(self).__name__)
        self.l2 = _factor(l2, "l2", type(self).__name__)

    def __call__(self, weight):
        from .losses import _Abs  # |w| with sign(w) as its gradient
        penalty = None
        if self.l1:
            penalty = _Abs.apply(weight).sum() * self.l1
        if self.l2:
            term = (weight * weight).sum() * self.l2
            penalty = term if penalty is None else penalty + term
        return penalty if penalty is not None else (weight * 0.0).sum()

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}

    def __repr__(self):
        return f"{type(self).__name__}(l1={self.l1}, l2={self.l2})"


class L1(L1L2):
    """l1 * sum(|w|)."""

    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(L1L2):
    """l2 * sum(w ** 2) (Keras: no factor 1/2)."""

    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


def l1(l1=0.01):
    return L1(l1)


def l2(l2=0.01):
    return L2(l2)


def l1_l2(l1=0.01, l2=0.01):
    return L1L2(l1=l1, l2=l2)


_BY_NAME = {"l1": L1, "l2": L2, "l1_l2": L1L2, "l1l2": L1L2}


def get(identifier, where="regularizer"):
    """A regularizer from None, a name ('l1', 'l2', 'l1_l2'), or a callable."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    if callable(identifier) and not isinstance(identifier, (str, Tensor)):
        return identifier
    raise ValueError(f"{where}: expected a regularizer (l1, l2, l1_l2, a name or a callable), "
                     f"received {identifier!r}")


def serialize(regularizer):
    if regularizer is None:
        return None
    if isinstance(regularizer, Regularizer):
        return {"class_name": type(regularizer).__name__, "config": regularizer.get_config()}
    raise ValueError(f"save: a regularizer that is a plain callable ({regularizer!r}) cannot "
                     f"be saved as configuration")


def deserialize(config):
    if config is None:
        return None
    classes = {"L1": L1, "L2": L2, "L1L2": L1L2}
    cls = classes.get(config.get("class_name"))
    if cls is None:
        raise ValueError(f"load_model: unknown regularizer {config.get('class_name')!r}")
    return cls(**config.get("config", {}))
