"""Learning-rate schedules (Keras 3): the learning rate as a function of the step.

A schedule is passed as an optimizer's ``learning_rate``; the optimizer calls
it with its ``iterations`` (0 for the first update, 1 for the second, ...) at
every update, including the updates a recorded training step (``mg.jit``,
``fit``) replays. ``optimizer.learning_rate`` then reads the value the next
update will use. Also reachable as ``minigrad.optimizers.schedules``.

Values are computed in float64; the update kernels round them to float32
(Keras computes a schedule in float32: the two agree to float32 rounding).

>>> from minigrad import optimizers
>>> sched = optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
>>> opt = optimizers.SGD(learning_rate=sched)
>>> opt.learning_rate                 # iterations == 0
0.1
>>> opt.iterations = 20; opt.learning_rate   # 0.1 * 0.5 ** (20 / 10)
0.025
"""
import math
import numbers


def _real(cls, name, value, positive=False, allow_zero=True):
    """A finite real (a ValueError naming the class, the expected and the received otherwise)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok and positive:
        ok = float(value) > 0 or (allow_zero and float(value) == 0)
    if not ok:
        what = "a finite number" + (" >= 0" if positive and allow_zero else " > 0" if positive else "")
        raise ValueError(f"{cls}: expected {name} to be {what}, received {value!r}")
    return float(value)


def _step(cls, step):
    if isinstance(step, bool) or not isinstance(step, numbers.Real) or not math.isfinite(float(step)) \
            or float(step) < 0:
        raise ValueError(f"{cls}: expected step to be a number >= 0, received {step!r}")
    return float(step)


class LearningRateSchedule:
    """Base class: subclasses implement ``__call__(step) -> learning rate`` and
    ``get_config()``; ``from_config(config)`` rebuilds one.

    >>> class Halving(LearningRateSchedule):
    ...     def __call__(self, step): return 0.1 / 2 ** (step // 100)
    ...     def get_config(self): return {}
    >>> Halving()(250)
    0.025
    """

    def __call__(self, step):
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(step)")

    def get_config(self):
        raise NotImplementedError(f"{type(self).__name__} must implement get_config()")

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``; with
    ``staircase=True`` the exponent is ``floor(step / decay_steps)`` (the rate
    changes every ``decay_steps`` steps).

    >>> s = ExponentialDecay(1.0, decay_steps=4, decay_rate=0.5, staircase=True)
    >>> [s(step) for step in (0, 3, 4, 9)]
    [1.0, 1.0, 0.5, 0.25]
    """

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False,
                 name="ExponentialDecay"):
        cls = type(self).__name__
        self.initial_learning_rate = _real(cls, "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _real(cls, "decay_steps", decay_steps, positive=True, allow_zero=False)
        self.decay_rate = _real(cls, "decay_rate", decay_rate, positive=True)
        if not isinstance(staircase, bool):
            raise TypeError(f"{cls}: expected staircase to be a bool, received {staircase!r}")
        self.staircase = staircase
        self.name = name

    def __call__(self, step):
        p = _step(type(self).__name__, step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate ** p

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < step <= boundaries[i]``, ``values[-1]`` after the last
    boundary (boundaries increasing; one more value than boundaries).

    >>> s = PiecewiseConstantDecay(boundaries=[100, 200], values=[1.0, 0.5, 0.1])
    >>> [s(step) for step in (0, 100, 101, 200, 201)]
    [1.0, 1.0, 0.5, 0.5, 0.1]
    """

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        cls = type(self).__name__
        if not isinstance(boundaries, (list, tuple)) or not isinstance(values, (list, tuple)):
            raise TypeError(f"{cls}: expected boundaries and values to be lists, received "
                            f"{type(boundaries).__name__} and {type(values).__name__}")
        if len(boundaries) != len(values) - 1:
            raise ValueError(f"{cls}: expected len(values) == len(boundaries) + 1, received "
                             f"{len(boundaries)} boundaries and {len(values)} values")
        self.boundaries = [_real(cls, f"boundaries[{i}]", b) for i, b in enumerate(boundaries)]
        if any(a >= b for a, b in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"{cls}: expected strictly increasing boundaries, received {list(boundaries)}")
        self.values = [_real(cls, f"values[{i}]", v) for i, v in enumerate(values)]
        self.name = name

    def __call__(self, step):
        step = _step(type(self).__name__, step)
        for boundary, value in zip(self.boundaries, self.values):
            if step <= boundary:
                return value
        return self.values[-1]

    def get_config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values), "name": self.name}
