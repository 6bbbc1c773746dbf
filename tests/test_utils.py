import doctest
import importlib

import numpy as np
import pytest

from minigrad import layers, utils


def test_to_categorical_values_and_dtype():
    out = utils.to_categorical(np.array([2, 0, 1], np.uint8))
    assert out.dtype.kind == "f"
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])


def test_to_categorical_num_classes_and_trailing_axis():
    out = utils.to_categorical([[1], [3]], num_classes=5)
    assert out.shape == (2, 5)
    np.testing.assert_array_equal(out.argmax(axis=1), [1, 3])
    assert out.sum() == 2


def test_to_categorical_accepts_integral_floats():
    np.testing.assert_array_equal(utils.to_categorical(np.array([1.0, 0.0])), [[0, 1], [1, 0]])


@pytest.mark.parametrize("labels, num_classes, match", [
    ([0, 10], 10, r"expected labels in \[0, 10\), received 10"),
    ([-1, 2], None, r"received -1"),
    ([0.5], None, "non-integral"),
    ([1], 0, "positive integer"),
])
def test_to_categorical_rejects_bad_labels(labels, num_classes, match):
    with pytest.raises(ValueError, match=match):
        utils.to_categorical(labels, num_classes)


def test_set_random_seed_makes_init_reproducible():
    utils.set_random_seed(123)
    a = layers.Dense(7, input_shape=(5,)).kernel.numpy().copy()
    utils.set_random_seed(123)
    b = layers.Dense(7, input_shape=(5,)).kernel.numpy().copy()
    utils.set_random_seed(124)
    c = layers.Dense(7, input_shape=(5,)).kernel.numpy().copy()
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("seed", [-1, 1.5, "1", True])
def test_set_random_seed_validates(seed):
    with pytest.raises(ValueError, match="non-negative integer seed"):
        utils.set_random_seed(seed)


@pytest.mark.parametrize("module", ["utils", "layers", "layers.conv", "models", "optimizers", "losses",
                                    "metrics", "callbacks", "progress", "kernels", "kernels.tape",
                                    "kernels.elementwise", "kernels.gather", "reference", "tensor", "function", "ops",
                                    "ops.nn", "gradcheck", "jit", "activations", "regularizers",
                                    "saving", "grad_mode", ""])
def test_docstring_examples_run(module):
    """Every example in the public modules' docstrings is real, runnable code."""
    name = f"minigrad.{module}" if module else "minigrad"
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
