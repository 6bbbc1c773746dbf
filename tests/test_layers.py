import math

import numpy as np
import pytest

import minigrad as mg
from minigrad import layers, utils

F32 = np.float32


def test_dense_weights_shapes_and_init():
    utils.set_random_seed(0)
    layer = layers.Dense(512, activation="relu", input_shape=(784,))
    assert layer.built
    assert layer.kernel.shape == (784, 512) and layer.bias.shape == (512,)
    assert layer.kernel.requires_grad and layer.bias.requires_grad
    assert layer.kernel.dtype == np.float32
    limit = math.sqrt(6 / (784 + 512))
    k = layer.kernel.numpy()
    assert np.abs(k).max() <= limit and np.abs(k).max() > 0.99 * limit
    # U(-l, l) has mean 0 and variance l^2 / 3
    assert abs(k.mean()) < 0.01 * limit
    assert k.var() == pytest.approx(limit ** 2 / 3, rel=0.02)
    np.testing.assert_array_equal(layer.bias.numpy(), 0)
    assert layer.count_params() == 401_920


def test_dense_builds_lazily_on_first_input():
    layer = layers.Dense(3)
    assert not layer.built and layer.weights == []
    y = layer(mg.Tensor(np.ones((2, 5), F32)))
    assert layer.built and layer.kernel.shape == (5, 3) and y.shape == (2, 3)


@pytest.mark.parametrize("activation", [None, "linear", "relu", "softmax"])
def test_dense_forward_matches_numpy(activation):
    rng = np.random.default_rng(1)
    layer = layers.Dense(4, activation=activation, input_shape=(3,),
                         bias_initializer=lambda shape: rng.standard_normal(shape))
    x = rng.standard_normal((5, 3)).astype(F32)
    z = x.astype(np.float64) @ layer.kernel.numpy() + layer.bias.numpy()
    if activation == "relu":
        z = np.maximum(z, 0)
    elif activation == "softmax":
        z = np.exp(z - z.max(axis=1, keepdims=True))
        z /= z.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(layer(x).numpy(), z, rtol=1e-5, atol=1e-6)


def test_dense_backward_gives_kernel_and_bias_grads_but_not_input():
    layer = layers.Dense(2, activation="relu", input_shape=(3,), kernel_initializer="ones")
    x = mg.Tensor(np.array([[1.0, 2.0, 3.0], [-1.0, -1.0, -1.0]], F32))
    layer(x).sum().backward()
    # row 1: z = 6 > 0 passes; row 2: z = -3 is cut by relu
    np.testing.assert_array_equal(layer.kernel.grad, [[1, 1], [2, 2], [3, 3]])
    np.testing.assert_array_equal(layer.bias.grad, [1, 1])
    assert x.grad is None


def test_incompatible_input_error_names_layer_and_shapes():
    layer = layers.Dense(10, input_shape=(784,), name="dense_in")
    with pytest.raises(ValueError) as info:
        layer(np.ones((32, 100), F32))
    assert str(info.value) == ('Input 0 of layer "dense_in" is incompatible with the layer: expected axis -1 '
                               'of input shape to have value 784, but received input with shape (32, 100)')


@pytest.mark.parametrize("kwargs, match", [
    (dict(units=0), r"expected a positive integer, received units=0"),
    (dict(units=2.5), r"units=2.5"),
    (dict(units=True), r"units=True"),
    (dict(units=3, activation="swishy"), r"Dense: Unknown activation 'swishy'; expected one of \["),
    (dict(units=3, activation=3), r"Dense: Could not interpret activation 3"),
    (dict(units=3, input_shape=(0,)), r"input_shape"),
    (dict(units=3, input_shape="784"), r"input_shape"),
    (dict(units=3, kernel_initializer="orthogonal"), r"unknown initializer 'orthogonal'"),
])
def test_dense_validates_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        layers.Dense(**kwargs)


def test_layer_names_are_unique_keras_style():
    a, b = layers.Dense(1), layers.Dense(1)
    assert a.name.startswith("dense") and b.name.startswith("dense") and a.name != b.name
    assert layers.Dense(1, name="head").name == "head"


def test_frozen_layer_gets_no_gradient():
    layer = layers.Dense(2, input_shape=(3,))
    layer.trainable = False
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 2
    x = mg.Tensor(np.ones((1, 3), F32), requires_grad=True)
    layer(x).sum().backward()
    assert layer.kernel.grad is None and x.grad is not None
