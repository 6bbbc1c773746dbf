"""The Function contract every differentiable op follows, and grad mode.

An op is a subclass of Function with two static methods on NumPy arrays:
``forward(ctx, *inputs, **options) -> array`` and
``backward(ctx, grad) -> one gradient (or None) per positional input``.
``ctx.needs_input_grad[i]`` tells backward which gradients anyone needs, so an
op skips the rest (no gradient for input images, for example).
"""
import threading

_grad_mode = threading.local()


def is_grad_enabled():
    """True unless inside ``with mg.no_grad():`` (per Python thread, as in PyTorch)."""
    return getattr(_grad_mode, "enabled", True)


class no_grad:
    """Context manager (and decorator) under which ops build no graph.

    >>> import minigrad as mg
    >>> w = mg.Tensor([1.0, 2.0], requires_grad=True)
    >>> with mg.no_grad():
    ...     y = w * 2
    >>> y.requires_grad
    False
    """

    def __enter__(self):
        self._previous = is_grad_enabled()
        _grad_mode.enabled = False

    def __exit__(self, *exc_info):
        _grad_mode.enabled = self._previous
        return False

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)
        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        return wrapper


class Context:
    """What forward leaves for backward: saved arrays and any attributes it sets."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved = ()

    def save_for_backward(self, *arrays):
        self.saved = arrays


class Node:
    """The graph edge of a computed Tensor: the op, its context and its inputs."""
    __slots__ = ("function", "ctx", "inputs")

    def __init__(self, function, ctx, inputs):
        self.function, self.ctx, self.inputs = function, ctx, inputs


class Function:
    @staticmethod
    def forward(ctx, *inputs, **options):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **options):
        """Run forward on the inputs' data and, when needed, record the graph edge."""
        Tensor = _tensor_module.Tensor
        needs = tuple(isinstance(x, Tensor) and x.requires_grad for x in inputs)
        record = any(needs) and is_grad_enabled()
        ctx = Context(needs)
        raw = [x.data if isinstance(x, Tensor) else x for x in inputs]
        out = Tensor._wrap(cls.forward(ctx, *raw, **options), record)
        if record:
            out._node = Node(cls, ctx, inputs)
        return out


from . import tensor as _tensor_module  # noqa: E402  (tensor imports this module too)
