"""Keras-style layers. ``Dense`` is one fused C op: activation(x @ kernel + bias).

>>> import numpy as np, minigrad as mg
>>> from minigrad import layers
>>> layer = layers.Dense(3, activation="relu", input_shape=(4,))
>>> layer.kernel.shape, layer.bias.shape, layer.count_params()
((4, 3), (3,), 15)
>>> layer(mg.Tensor(np.ones((2, 4), np.float32))).shape
(2, 3)
"""
import collections
import inspect
import math
import re

import numpy as np

from .. import activations, regularizers, utils
from ..function import no_grad
from ..kernels import tape
from ..ops import dense
from ..tensor import Tensor

_name_counts = collections.Counter()


def unique_name(base):
    """Keras naming: the first Dense is 'dense', then 'dense_1', 'dense_2', ..."""
    n = _name_counts[base]
    _name_counts[base] += 1
    return base if n == 0 else f"{base}_{n}"


def _snake(name):
    """Keras' snake case: Dense -> dense, Conv2D -> conv2d, MaxPooling2D -> max_pooling2d."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _positive_int(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x > 0


def normalize_input_shape(input_shape, where):
    """A per-sample shape as a tuple of positive ints; a leading None (batch) is dropped."""
    if isinstance(input_shape, (int, np.integer)) and not isinstance(input_shape, bool):
        input_shape = (input_shape,)
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError(f"{where}: expected input_shape to be a tuple such as (784,), "
                        f"received {input_shape!r}")
    shape = tuple(input_shape)
    if len(shape) > 1 and shape[0] is None:
        shape = shape[1:]
    if not shape or not all(_positive_int(d) for d in shape):
        raise ValueError(f"{where}: expected input_shape to be a tuple of positive integers "
                         f"such as (784,), received {input_shape!r}")
    return tuple(int(d) for d in shape)


# ---------------------------------------------------------------- initializers

def _fans(shape):
    """Keras' fans: a kernel (..., in, out) has receptive field prod(...)."""
    if len(shape) < 2:
        return (shape[0], shape[0]) if shape else (1, 1)
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def glorot_uniform(shape):
    """U(-l, l) with l = sqrt(6 / (fan_in + fan_out)), drawn from minigrad's seeded generator."""
    fan_in, fan_out = _fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return utils.rng().uniform(-limit, limit, size=shape).astype(np.float32)


def he_uniform(shape):
    """U(-l, l) with l = sqrt(6 / fan_in)."""
    limit = math.sqrt(6.0 / _fans(shape)[0])
    return utils.rng().uniform(-limit, limit, size=shape).astype(np.float32)


def zeros(shape):
    return np.zeros(shape, dtype=np.float32)


def ones(shape):
    return np.ones(shape, dtype=np.float32)


INITIALIZERS = {"glorot_uniform": glorot_uniform, "he_uniform": he_uniform, "zeros": zeros, "ones": ones}


def _initializer(identifier, where):
    if callable(identifier):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in INITIALIZERS:
        return INITIALIZERS[identifier.lower()]
    raise ValueError(f"{where}: unknown initializer {identifier!r}; expected one of "
                     f"{sorted(INITIALIZERS)} or a callable shape -> array")


def _initial_value(init, shape, where):
    value = np.asarray(init(shape))
    if value.shape != tuple(shape):
        raise ValueError(f"{where}: the initializer returned shape {value.shape}, expected {tuple(shape)}")
    return np.ascontiguousarray(value, dtype=np.float32)


# ---------------------------------------------------------------- Layer base

_TAKES_TRAINING = {}


def _call_takes_training(cls):
    """Whether cls.call accepts ``training`` (Keras layers may leave it out)."""
    takes = _TAKES_TRAINING.get(cls)
    if takes is None:
        try:
            params = inspect.signature(cls.call).parameters
            takes = "training" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
        except (TypeError, ValueError):
            takes = False
        _TAKES_TRAINING[cls] = takes
    return takes


class Layer:
    """Base class: owns weights (Tensors), builds them lazily from the first input shape.

    A subclass defines ``call(self, x, training=None)`` (``training`` may be left
    out) and, when it has weights, ``build(self, input_shape)`` creating them with
    ``add_weight``; that is all Sequential, fit, evaluate, predict and ``mg.jit``
    need. ``input_shape`` is per sample (no batch axis).

    >>> import numpy as np, minigrad as mg
    >>> class Scale(Layer):
    ...     def build(self, input_shape):
    ...         self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")
    ...     def call(self, x, training=None):
    ...         return x * self.scale
    >>> Scale()(mg.Tensor(np.full((2, 3), 2.0, np.float32))).numpy().tolist()
    [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]
    """

    def __init__(self, name=None, input_shape=None, trainable=True, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) "
                            f"{sorted(kwargs)}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"{type(self).__name__}: expected name to be a non-empty string, "
                             f"received {name!r}")
        self.name = name or unique_name(_snake(type(self).__name__))
        self.input_shape = (None if input_shape is None
                            else normalize_input_shape(input_shape, type(self).__name__))
        self.built = False
        self._trainable = bool(trainable)
        self._weights = []  # (attribute name, Tensor), in creation order
        self._regularizers = {}  # attribute name -> regularizer (Dense, Conv2D)

    def __setattr__(self, name, value):
        # A recorded training step (mg.jit) read this layer's attributes when it was
        # captured: changing one afterwards (a weight, trainable, the activation)
        # makes every recording stale.
        if not name.startswith("_") and self.__dict__.get("built"):
            tape.changed()
            # a weight attribute given a new Tensor: that Tensor is the weight now
            # (trained, saved and counted), as the forward pass reads the attribute
            weights = self.__dict__.get("_weights", [])
            for i, (attr, _) in enumerate(weights):
                if attr == name and isinstance(value, Tensor):
                    weights[i] = (attr, value)
        object.__setattr__(self, name, value)

    # -------------------------------------------------------- weights
    def add_weight(self, name=None, shape=None, initializer="glorot_uniform", trainable=None,
                   attr=None):
        """A new weight Tensor of ``shape``, also set as attribute ``name`` (Keras order
        ``add_weight(shape=..., initializer=..., name=...)`` or ``add_weight(name, shape,
        initializer)``)."""
        if not isinstance(name, str) and shape is None:  # add_weight((3, 4), ...)
            name, shape = None, name
        attr = attr or name or f"weight_{len(self._weights)}"
        where = f'layer "{self.name}"'
        if shape is None:
            raise ValueError(f"{where}: add_weight needs a shape")
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        init = _initializer(initializer, where)
        trainable = self._trainable if trainable is None else bool(trainable)
        t = Tensor(_initial_value(init, shape, where), requires_grad=trainable)
        self._weights.append((attr, t))
        if attr.isidentifier() and not hasattr(type(self), attr):
            object.__setattr__(self, attr, t)
        return t

    @property
    def weights(self):
        return [t for _, t in self._weights]

    @property
    def trainable_weights(self):
        return self.weights if self._trainable else []

    @property
    def non_trainable_weights(self):
        return [] if self._trainable else self.weights

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        # A frozen layer's weights get no gradient at all (nothing computed for them).
        self._trainable = bool(value)
        for t in self.weights:
            t.requires_grad = self._trainable
        tape.changed()

    def weight_names(self):
        return [name for name, _ in self._weights]

    def regularization_losses(self):
        """The penalties of this layer's regularized weights, as scalar Tensors
        computed from the current weights (fit adds them to the loss)."""
        weights = dict(self._weights)
        return [reg(weights[attr]) for attr, reg in self._regularizers.items() if attr in weights]

    def get_config(self):
        """The constructor arguments that rebuild this layer (model.save)."""
        config = {"name": self.name, "trainable": self._trainable}
        if self.input_shape is not None and not self.built:
            config["input_shape"] = list(self.input_shape)
        return config

    def count_params(self):
        return int(sum(t.size for t in self.weights))

    # -------------------------------------------------------- building and calling
    def build(self, input_shape):
        """Create the weights for per-sample input shape ``input_shape`` (no batch axis)."""

    def _ensure_built(self, input_shape):
        if not self.built:
            self.build(tuple(input_shape))
            self.input_shape = tuple(input_shape)
            self.built = True

    def weight_shapes(self, input_shape):
        """[(name, shape)] the weights would have when built for ``input_shape``."""
        return [(name, t.shape) for name, t in self._weights]

    def compute_output_shape(self, input_shape):
        """The per-sample output shape; by default found by calling the layer on one
        sample of zeros (nothing recorded, no graph)."""
        with no_grad(), tape.paused():
            out = self.call(Tensor(np.zeros((1,) + tuple(input_shape), np.float32)),
                            **({"training": False} if _call_takes_training(type(self)) else {}))
        return tuple(out.shape[1:])

    def check_input_shape(self, shape):
        """Raise Keras' incompatible-input error unless ``shape`` (with batch axis) fits."""

    def __call__(self, x, training=None):
        """Forward pass; ``training`` is True inside fit's steps, False in evaluate/predict."""
        if not isinstance(x, Tensor):
            x = Tensor(x)
        self._ensure_built(x.shape[1:])
        self.check_input_shape(x.shape)
        if _call_takes_training(type(self)):
            return self.call(x, training=training)
        return self.call(x)

    def call(self, x, training=None):
        raise NotImplementedError(f"{type(self).__name__}: a Layer subclass must define "
                                  f"call(self, x, training=None)")

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r}, built={self.built}>"


class Dense(Layer):
    """A densely connected layer: ``activation(x @ kernel + bias)``, kernel of shape (in, units).

    activation: a name ('relu', 'softmax', 'linear', ...), None or a callable. 'relu'
    and linear run in the GEMM's epilogue (``mg.dense``, one C call); any other
    activation is applied to the result, unless the model fuses it into the loss
    (a softmax before a cross-entropy, see ``call_pre_activation``).

    >>> import numpy as np, minigrad as mg
    >>> layer = Dense(2, activation="softmax", input_shape=(3,))
    >>> probs = layer(mg.Tensor(np.ones((4, 3), np.float32))).numpy()
    >>> probs.shape, bool(np.allclose(probs.sum(axis=1), 1.0))
    ((4, 2), True)
    """

    def __init__(self, units, activation=None, use_bias=True, input_shape=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", name=None,
                 trainable=True, kernel_regularizer=None, bias_regularizer=None, **kwargs):
        if not _positive_int(units):
            raise ValueError(f"Dense: received an invalid value for `units`, expected a positive "
                             f"integer, received units={units!r}")
        try:
            activation = activations.get(activation)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Dense: {exc}") from None
        super().__init__(name=name, input_shape=input_shape, trainable=trainable, **kwargs)
        self.units = int(units)
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializer(kernel_initializer, "Dense")
        self.bias_initializer = _initializer(bias_initializer, "Dense")
        self._regularizers = _regularizers(kernel_regularizer, bias_regularizer, "Dense")
        self.kernel = self.bias = None
        if self.input_shape is not None:
            self._ensure_built(self.input_shape)

    def weight_shapes(self, input_shape):
        shapes = [("kernel", (input_shape[-1], self.units))]
        return shapes + ([("bias", (self.units,))] if self.use_bias else [])

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 1:
            raise ValueError(f'Input 0 of layer "{self.name}" is incompatible with the layer: '
                             f"expected ndim=2, found ndim={len(input_shape) + 1}. "
                             f"Full shape received: (None, {', '.join(map(str, input_shape))})")
        for attr, shape in self.weight_shapes(input_shape):
            init = self.kernel_initializer if attr == "kernel" else self.bias_initializer
            self.add_weight(attr, shape, init)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def check_input_shape(self, shape):
        expected = self.kernel.shape[0]
        if len(shape) != 2:
            raise ValueError(f'Input 0 of layer "{self.name}" is incompatible with the layer: '
                             f"expected ndim=2, found ndim={len(shape)}. Full shape received: {tuple(shape)}")
        if shape[-1] != expected:
            raise ValueError(f'Input 0 of layer "{self.name}" is incompatible with the layer: '
                             f"expected axis -1 of input shape to have value {expected}, "
                             f"but received input with shape {tuple(shape)}")

    @property
    def activation_name(self):
        return activations.name_of(self.activation)

    def get_config(self):
        return dict(super().get_config(), units=self.units,
                    activation=_activation_config(self.activation), use_bias=self.use_bias,
                    **_regularizer_config(self._regularizers))

    def call_pre_activation(self, x):
        """x @ kernel + bias [+ relu when fused], before any other activation: what a loss
        fused with that activation (softmax + cross-entropy) takes."""
        fused = activations.fused(self.activation)
        return dense(x, self.kernel, self.bias, "relu" if fused == "relu" else None)

    def call(self, x, training=None):
        y = self.call_pre_activation(x)
        return y if activations.fused(self.activation) else self.activation(y)

    def __repr__(self):
        return f"<Dense name={self.name!r}, units={self.units}, activation={self.activation_name!r}>"


def _regularizers(kernel, bias, where):
    out = {}
    for attr, value in (("kernel", kernel), ("bias", bias)):
        reg = regularizers.get(value, f"{where}: {attr}_regularizer")
        if reg is not None:
            out[attr] = reg
    return out


def _regularizer_config(regs):
    return {f"{attr}_regularizer": regularizers.serialize(reg) for attr, reg in regs.items()}


def _activation_config(function):
    name = activations.name_of(function)
    if activations.registered(name) is not function:
        raise ValueError(f"save: the activation {name!r} is a user callable; register it with "
                         f"activations.register to save the model")
    return name


class Activation(Layer):
    """Applies an activation (a name or a callable) to its input.

    >>> import minigrad as mg
    >>> Activation("relu")(mg.Tensor([[-1.0, 2.0]])).numpy().tolist()
    [[0.0, 2.0]]
    """

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def call(self, x, training=None):
        return self.activation(x)

    def get_config(self):
        return dict(super().get_config(), activation=_activation_config(self.activation))


class Dropout(Layer):
    """Inverted dropout: while training, each value is zeroed with probability ``rate``
    and the kept ones are scaled by 1 / (1 - rate); outside training it is the identity.

    The mask comes from a counter-based generator (Philox) keyed by the layer's seed,
    the step number and the element, so training gives the same bits at any thread
    count, and ``utils.set_random_seed`` (which draws the seed when none is given)
    makes it reproducible. A replayed step (mg.jit) draws a new mask every time.

    >>> import numpy as np, minigrad as mg
    >>> layer = Dropout(0.5, seed=1)
    >>> x = mg.Tensor(np.ones((2, 4), np.float32))
    >>> layer(x, training=False).numpy().tolist()
    [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    >>> sorted(set(layer(x, training=True).numpy().ravel().tolist()))
    [0.0, 2.0]
    """

    def __init__(self, rate, seed=None, step=0, **kwargs):
        from ..kernels import DropoutCounter
        if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, float, np.integer, np.floating)) \
                or not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout: expected rate in [0, 1), received {rate!r}")
        if seed is None:
            seed = int(utils.rng().integers(0, 2**63))
        elif isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"Dropout: expected seed to be a non-negative integer, received {seed!r}")
        super().__init__(**kwargs)
        self.rate, self.seed = float(rate), int(seed)
        self._counter = DropoutCounter(step)  # the step of the next mask (saved models resume it)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        from ..ops import dropout
        return dropout(x, self.rate, self.seed, self._counter)

    def get_config(self):
        return dict(super().get_config(), rate=self.rate, seed=self.seed, step=self._counter.value)


class Flatten(Layer):
    """Flattens each sample to one axis: (N, d1, d2, ...) -> (N, d1*d2*...).

    >>> import numpy as np, minigrad as mg
    >>> Flatten()(mg.Tensor(np.zeros((2, 3, 4), np.float32))).shape
    (2, 12)
    """

    def compute_output_shape(self, input_shape):
        return (int(math.prod(input_shape)),)

    def call(self, x, training=None):
        return x.reshape(x.shape[0], -1)

    def get_config(self):
        return super().get_config()


class InputLayer(Layer):
    """What ``Input(shape=...)`` makes: the per-sample input shape of a Sequential,
    given as its first element (Keras 3 style). It computes nothing and holds no weights.

    >>> from minigrad import models
    >>> model = models.Sequential([Input(shape=(4,)), Dense(2)])
    >>> model.count_params(), len(model.layers)
    (10, 1)
    """

    def __init__(self, shape, name=None):
        super().__init__(name=name, input_shape=shape)
        self.shape = self.input_shape

    def call(self, x, training=None):
        return x


def Input(shape, name=None):
    """The input of a model: ``Sequential([Input(shape=(28, 28, 1)), ...])``."""
    return InputLayer(shape, name=name)


from .conv import Conv2D, MaxPooling2D  # noqa: E402,F401  (conv.py builds on Layer above)
