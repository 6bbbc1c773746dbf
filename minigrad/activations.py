"""Activations: names resolve to callables on Tensors (Keras' string ids).

Each activation is a plain function ``Tensor -> Tensor``. ``fused`` names what
``Dense``'s GEMM epilogue can apply in the same pass ('linear' and 'relu'); a
function without it runs after the layer's product. A user's callable works
anywhere a name does.

>>> import minigrad as mg
>>> get("relu").fused, get(None) is linear, name_of(get("softmax"))
('relu', True, 'softmax')
>>> get(lambda x: x * 2.0)(mg.Tensor([1.5])).numpy()
array([3.], dtype=float32)
"""
from . import ops


def linear(x):
    """The identity (Keras' 'linear', also what ``activation=None`` means)."""
    return x


linear.fused = "linear"


def relu(x):
    """max(x, 0), with relu'(0) = 0."""
    return ops.relu(x)


relu.fused = "relu"


def softmax(x):
    """Softmax over the last axis."""
    return ops.softmax(x)


def sigmoid(x):
    """1 / (1 + exp(-x)), in C; stable for any |x|."""
    return ops.sigmoid(x)


def tanh(x):
    """tanh(x), in C."""
    return ops.tanh(x)


_REGISTRY = {"linear": linear, "relu": relu, "softmax": softmax, "sigmoid": sigmoid, "tanh": tanh}


def register(name, function, fused=None):
    """Make ``name`` resolve to ``function`` (a callable Tensor -> Tensor)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"activations.register: expected a non-empty name, received {name!r}")
    if not callable(function):
        raise TypeError(f"activations.register: expected a callable, received "
                        f"{type(function).__name__}")
    if fused is not None:
        function.fused = fused
    _REGISTRY[name.lower()] = function


def get(identifier):
    """The activation function for a name, None (linear) or a callable."""
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        function = _REGISTRY.get(identifier.lower())
        if function is None:
            raise ValueError(f"Unknown activation {identifier!r}; expected one of "
                             f"{sorted(_REGISTRY)}, None or a callable")
        return function
    if callable(identifier):
        return identifier
    raise TypeError(f"Could not interpret activation {identifier!r}: expected a name, None or "
                    f"a callable")


def registered(name):
    """The function registered under ``name``, or None."""
    return _REGISTRY.get(name.lower()) if isinstance(name, str) else None


def name_of(function):
    """The registry name of an activation function, else its __name__."""
    for name, f in _REGISTRY.items():
        if f is function:
            return name
    return getattr(function, "__name__", type(function).__name__)


def fused(function):
    """What Dense's epilogue can apply for this activation ('linear', 'relu'), or None."""
    return getattr(function, "fused", None)
