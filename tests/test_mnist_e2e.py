"""End to end on the real MNIST: the book's program (1st and 2nd edition forms) on a subset."""
import numpy as np
import pytest

import minigrad as mg
from helpers import mnist_dir
from minigrad import layers, models, utils
from minigrad.datasets import mnist
from minigrad.utils import to_categorical


@pytest.fixture(scope="module")
def data():
    (train_images, train_labels), (test_images, test_labels) = mnist.load_data(str(mnist_dir()))
    assert train_labels.dtype == np.uint8
    # A third of the training set for 2 epochs (313 steps) keeps this test at about a second.
    train_images = train_images[:20000].reshape((20000, 28 * 28)).astype("float32") / 255
    test_images = test_images.reshape((10000, 28 * 28)).astype("float32") / 255
    return train_images, train_labels[:20000], test_images, test_labels


def test_book_program_first_edition(data):
    train_images, train_labels, test_images, test_labels = data
    utils.set_random_seed(0)
    network = models.Sequential()
    network.add(layers.Dense(512, activation="relu", input_shape=(28 * 28,)))
    network.add(layers.Dense(10, activation="softmax"))
    network.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    history = network.fit(train_images, to_categorical(train_labels), epochs=2, batch_size=128, verbose=0)
    test_loss, test_acc = network.evaluate(test_images, to_categorical(test_labels), verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]
    # Measured over seeds 0-5: 0.92-0.95 (RMSprop's last steps make it noisy); chance is 0.1.
    assert test_acc > 0.90, test_acc
    assert test_loss < 0.35


def test_book_program_second_edition_sparse_uint8(data):
    train_images, train_labels, test_images, test_labels = data
    utils.set_random_seed(1)
    model = mg.Sequential([layers.Dense(512, activation="relu"), layers.Dense(10, activation="softmax")])
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train_images, train_labels, epochs=2, batch_size=128, verbose=0)
    test_loss, test_acc = model.evaluate(test_images, test_labels, verbose=0)
    assert test_acc > 0.90, test_acc
    predictions = model.predict(test_images[:10], verbose=0)
    assert predictions.shape == (10, 10)
    np.testing.assert_allclose(predictions.sum(axis=1), 1, rtol=1e-5)
    assert (predictions.argmax(axis=1) == test_labels[:10]).mean() >= 0.8


def test_zero_skipping_trains_the_same_weights_bit_for_bit(data):
    """MNIST's zero pixels are skipped in x @ W1 and x.T @ dZ (csrc/gemm_sparse.c); the
    claim is that this changes nothing but speed: 60 steps with and without it must give
    identical weights, and the zero-skipping path must really have run."""
    from minigrad import kernels
    if kernels.gemm_kernel_name() != "avx2-fma":
        pytest.skip("zero-skipping runs with the AVX2 GEMM kernel only")
    train_images, train_labels, _, _ = data
    x, y = train_images[:7680], train_labels[:7680]  # 60 steps of 128
    weights = []
    try:
        for on in (True, False):
            kernels.set_zero_skipping(on)
            before = kernels.zero_skipping_calls()
            utils.set_random_seed(3)
            model = mg.Sequential([layers.Dense(512, activation="relu"), layers.Dense(10, activation="softmax")])
            model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
            model.fit(x, y, epochs=1, batch_size=128, verbose=0)
            calls = kernels.zero_skipping_calls() - before
            # forward x @ W1 and backward x.T @ dZ1 per step; none when switched off
            assert calls == (120 if on else 0), calls
            weights.append([w.copy() for w in model.get_weights()])
    finally:
        kernels.set_zero_skipping(True)
    for with_skip, without in zip(*weights):
        assert np.array_equal(with_skip, without)
