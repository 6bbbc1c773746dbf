"""Convolution and pooling layers (Keras layout: NHWC inputs, kernel (kh, kw, in, out)).

>>> import numpy as np, minigrad as mg
>>> from minigrad import layers, models
>>> model = models.Sequential([layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
...                            layers.MaxPooling2D((2, 2))])
>>> model.layers[0].kernel.shape, model.predict(np.zeros((2, 28, 28, 1), np.float32), verbose=0).shape
((3, 3, 1, 32), (2, 13, 13, 32))
"""
import math

import numpy as np

from .. import activations
from ..ops import conv2d, max_pool2d
from . import (Layer, _activation_config, _initializer, _positive_int, _regularizer_config,
               _regularizers)


def _pair(value, what, where):
    """An int or a pair of positive ints as a tuple (a, b)."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(_positive_int(v) for v in pair)):
        raise ValueError(f"{where}: expected {what} to be a positive integer or a pair of them, "
                         f"received {value!r}")
    return int(pair[0]), int(pair[1])


def _padding(value, where):
    padding = value.lower() if isinstance(value, str) else value
    if padding not in ("valid", "same"):
        raise ValueError(f"{where}: expected padding 'valid' or 'same', received {value!r}")
    return padding


def _output_size(n, k, s, padding):
    """TensorFlow's sizes: 'valid' floor((n - k) / s) + 1, 'same' ceil(n / s)."""
    if padding == "same":
        return math.ceil(n / s)
    return (n - k) // s + 1


def _check_image(layer, shape, channels=None):
    if len(shape) != 4:
        raise ValueError(f'Input 0 of layer "{layer.name}" is incompatible with the layer: '
                         f"expected ndim=4 (batch, height, width, channels), found ndim="
                         f"{len(shape)}. Full shape received: {tuple(shape)}")
    if channels is not None and shape[-1] != channels:
        raise ValueError(f'Input 0 of layer "{layer.name}" is incompatible with the layer: '
                         f"expected axis -1 of input shape to have value {channels}, but "
                         f"received input with shape {tuple(shape)}")


class Conv2D(Layer):
    """2-D convolution: ``activation(conv(x, kernel) + bias)`` on NHWC images.

    kernel shape (kh, kw, in_channels, filters); 'same' padding is TensorFlow's (an odd
    total padding puts the extra row/column at the bottom/right). relu and linear run in
    the GEMM's epilogue (one C call after the unfold); other activations follow it.
    """
    input_ndim = 4

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", activation=None,
                 use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 input_shape=None, name=None, trainable=True, kernel_regularizer=None,
                 bias_regularizer=None, **kwargs):
        if not _positive_int(filters):
            raise ValueError(f"Conv2D: expected filters to be a positive integer, received {filters!r}")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size", "Conv2D")
        self.strides = _pair(strides, "strides", "Conv2D")
        self.padding = _padding(padding, "Conv2D")
        try:
            self.activation = activations.get(activation)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Conv2D: {exc}") from None
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializer(kernel_initializer, "Conv2D")
        self.bias_initializer = _initializer(bias_initializer, "Conv2D")
        self.kernel = self.bias = None
        super().__init__(name=name, input_shape=input_shape, trainable=trainable, **kwargs)
        self._regularizers = _regularizers(kernel_regularizer, bias_regularizer, "Conv2D")
        if self.input_shape is not None:
            self._ensure_built(self.input_shape)

    def weight_shapes(self, input_shape):
        shapes = [("kernel", self.kernel_size + (input_shape[-1], self.filters))]
        return shapes + ([("bias", (self.filters,))] if self.use_bias else [])

    def build(self, input_shape):
        _check_image(self, (None,) + tuple(input_shape))
        for attr, shape in self.weight_shapes(input_shape):
            init = self.kernel_initializer if attr == "kernel" else self.bias_initializer
            self.add_weight(attr, shape, init)

    def compute_output_shape(self, input_shape):
        h, w = input_shape[0], input_shape[1]
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        return (_output_size(h, kh, sh, self.padding), _output_size(w, kw, sw, self.padding),
                self.filters)

    def check_input_shape(self, shape):
        _check_image(self, shape, self.kernel.shape[2])
        out = self.compute_output_shape(tuple(shape[1:]))
        if out[0] < 1 or out[1] < 1:
            raise ValueError(f'Input 0 of layer "{self.name}" is incompatible with the layer: '
                             f"a {self.kernel_size} kernel with 'valid' padding needs images of "
                             f"at least that size, received shape {tuple(shape)}")

    def get_config(self):
        return dict(super().get_config(), filters=self.filters, kernel_size=list(self.kernel_size),
                    strides=list(self.strides), padding=self.padding,
                    activation=_activation_config(self.activation), use_bias=self.use_bias,
                    **_regularizer_config(self._regularizers))

    def call_pre_activation(self, x):
        fused = activations.fused(self.activation)
        return conv2d(x, self.kernel, self.bias, strides=self.strides, padding=self.padding,
                      activation="relu" if fused == "relu" else None)

    def call(self, x, training=None):
        y = self.call_pre_activation(x)
        return y if activations.fused(self.activation) else self.activation(y)


class MaxPooling2D(Layer):
    """Max-pooling over (pool_h, pool_w) windows; strides default to the pool size.
    The gradient goes to the first maximum of each window in row-major order."""
    input_ndim = 4

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", input_shape=None,
                 name=None, **kwargs):
        self.pool_size = _pair(pool_size, "pool_size", "MaxPooling2D")
        self.strides = self.pool_size if strides is None else _pair(strides, "strides", "MaxPooling2D")
        self.padding = _padding(padding, "MaxPooling2D")
        super().__init__(name=name, input_shape=input_shape, **kwargs)

    def compute_output_shape(self, input_shape):
        h, w = input_shape[0], input_shape[1]
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        return (_output_size(h, ph, sh, self.padding), _output_size(w, pw, sw, self.padding),
                input_shape[2])

    def check_input_shape(self, shape):
        _check_image(self, shape)
        out = self.compute_output_shape(tuple(shape[1:]))
        if out[0] < 1 or out[1] < 1:
            raise ValueError(f'Input 0 of layer "{self.name}" is incompatible with the layer: '
                             f"a {self.pool_size} pool with 'valid' padding needs images of at "
                             f"least that size, received shape {tuple(shape)}")

    def call(self, x, training=None):
        return max_pool2d(x, pool_size=self.pool_size, strides=self.strides, padding=self.padding)

    def get_config(self):
        return dict(super().get_config(), pool_size=list(self.pool_size),
                    strides=list(self.strides), padding=self.padding)
