"""Finite-difference gradient checking.

>>> import minigrad as mg
>>> x = mg.Tensor([[0.5, -1.0], [2.0, 0.25]], requires_grad=True)
>>> mg.gradcheck(lambda t: (t * t).exp().sum(), [x])
True
"""
import math
import numbers

import numpy as np

from .function import no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with its finite-difference estimate."""


def gradcheck(fn, inputs, eps=1e-3, atol=1e-3, rtol=1e-2, seed=0):
    """Compare the gradients of ``fn(*inputs)`` with central finite differences.

    A non-scalar output y is reduced to sum(y * r) for a fixed random r, which
    checks the vector-Jacobian product backward computes. Differences are taken
    in float32 (the engine's precision) and accumulated in float64, so eps must
    not be too small. Raises GradcheckError naming the input and the element
    that disagree; returns True otherwise.
    """
    for name, value, low in (("eps", eps, "> 0"), ("atol", atol, ">= 0"), ("rtol", rtol, ">= 0")):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"gradcheck: expected {name} to be a real number, "
                            f"received {type(value).__name__}")
        if not (math.isfinite(value) and (value > 0 if name == "eps" else value >= 0)):
            raise ValueError(f"gradcheck: expected a finite {name} {low}, received {value!r}")
    if not callable(fn):
        raise TypeError(f"gradcheck: expected fn to be callable, received {type(fn).__name__}")
    if not isinstance(inputs, (list, tuple)):
        raise TypeError(f"gradcheck: expected inputs to be a list of Tensors, received {type(inputs).__name__}")
    inputs = list(inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: expected at least one input Tensor with requires_grad=True")
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: expected fn to return a Tensor, received {type(out).__name__}")
    weights = np.random.default_rng(seed).standard_normal(out.shape).astype(np.float32)
    for i in checked:
        inputs[i].grad = None
    out.backward(weights)

    def objective():
        with no_grad():
            y = fn(*inputs)
        return float(np.sum(y.data.astype(np.float64) * weights))

    for i in checked:
        x = inputs[i]
        analytic = np.zeros(x.shape, np.float32) if x.grad is None else x.grad
        flat = x.data.reshape(-1)  # a view: perturbations reach fn
        for j in range(flat.size):
            original = flat[j]
            flat[j] = original + np.float32(eps)
            plus = objective()
            flat[j] = original - np.float32(eps)
            minus = objective()
            flat[j] = original
            # the step actually taken in float32, not the nominal eps
            step = float(np.float32(original + np.float32(eps))) - float(np.float32(original - np.float32(eps)))
            if not step > 0:  # eps below float32 resolution at this value (or a NaN/inf input)
                index = tuple(int(k) for k in np.unravel_index(j, x.shape))
                raise ValueError(f"gradcheck: eps={eps} does not change input {i} at element "
                                 f"{index} (value {float(original)!r}) in float32; use a larger eps")
            numeric = (plus - minus) / step
            got = float(analytic.reshape(-1)[j])
            if not abs(got - numeric) <= atol + rtol * abs(numeric):
                index = np.unravel_index(j, x.shape)
                raise GradcheckError(
                    f"gradcheck: input {i} (shape {x.shape}), element {tuple(int(k) for k in index)}: "
                    f"analytic gradient {got:.6g}, finite difference {numeric:.6g} "
                    f"(atol={atol}, rtol={rtol})")
    return True
