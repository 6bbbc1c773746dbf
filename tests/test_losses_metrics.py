"""Losses and metrics on 2x3 examples computed by hand."""
import math

import numpy as np
import pytest

import minigrad as mg
from minigrad import losses, metrics

F32 = np.float32
PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], F32)
ONE_HOT = np.array([[1, 0, 0], [0, 0, 1]], F32)
LABELS = np.array([0, 2], np.uint8)
# -(ln 0.7 + ln 0.6) / 2
PROBS_LOSS = (-math.log(0.7) - math.log(0.6)) / 2          # 0.4337503
LOGITS = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0]], F32)
# row 1: ln(e^2+e+1) - 2 = 0.407606; row 2: ln(1+e+e^3) - 3 = 0.169846
LOGITS_LOSS = (math.log(math.e ** 2 + math.e + 1) - 2 + math.log(1 + math.e + math.e ** 3) - 3) / 2


@pytest.mark.parametrize("fn, target", [(losses.categorical_crossentropy, ONE_HOT),
                                        (losses.sparse_categorical_crossentropy, LABELS)])
def test_crossentropy_on_probabilities(fn, target):
    p = mg.Tensor(PROBS, requires_grad=True)
    loss = fn(target, p)
    assert loss.shape == () and loss.item() == pytest.approx(PROBS_LOSS, rel=1e-6)
    assert PROBS_LOSS == pytest.approx(0.4337503, rel=1e-6)
    loss.backward()
    # d/dp_j of -ln(p_c / sum p) = -[j == c]/p_c + 1/sum p, halved by the batch mean
    np.testing.assert_allclose(p.grad, [[(1 - 1 / 0.7) / 2, 0.5, 0.5], [0.5, 0.5, (1 - 1 / 0.6) / 2]],
                               rtol=1e-5)


@pytest.mark.parametrize("fn, target", [(losses.categorical_crossentropy, ONE_HOT),
                                        (losses.sparse_categorical_crossentropy, LABELS)])
def test_crossentropy_from_logits(fn, target):
    z = mg.Tensor(LOGITS, requires_grad=True)
    loss = fn(target, z, from_logits=True)
    assert loss.item() == pytest.approx(LOGITS_LOSS, rel=1e-6)
    assert LOGITS_LOSS == pytest.approx(0.288726, rel=1e-5)
    loss.backward()
    e = np.exp(LOGITS - LOGITS.max(axis=1, keepdims=True))
    np.testing.assert_allclose(z.grad, (e / e.sum(axis=1, keepdims=True) - ONE_HOT) / 2, rtol=1e-5, atol=1e-7)


def test_probabilities_are_renormalised_like_keras():
    # Rows scaled by 2: Keras divides by the row sum first, so the loss is unchanged.
    loss = losses.categorical_crossentropy(ONE_HOT, mg.Tensor(PROBS * 2))
    assert loss.item() == pytest.approx(PROBS_LOSS, rel=1e-6)


def test_probabilities_are_clipped_to_epsilon():
    # Row 1 predicts class 0 with certainty (clipped to 1 - 1e-7): loss ~1e-7.
    # Row 2 gives its true class probability 0, clipped to 1e-7: loss -ln(1e-7) = 16.1181.
    p = mg.Tensor(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], F32), requires_grad=True)
    loss = losses.categorical_crossentropy(ONE_HOT, p)
    assert loss.item() == pytest.approx((1e-7 - math.log(1e-7)) / 2, rel=1e-5)
    loss.backward()
    assert np.isfinite(p.grad).all()
    assert p.grad[1, 2] == 0.0  # clipped: no gradient flows through the clip (as tf.clip_by_value)


def test_loss_classes_and_get():
    loss = losses.CategoricalCrossentropy()(ONE_HOT, mg.Tensor(PROBS))
    assert loss.item() == pytest.approx(PROBS_LOSS, rel=1e-6)
    sparse = losses.SparseCategoricalCrossentropy(from_logits=True)
    assert sparse(LABELS, mg.Tensor(LOGITS)).item() == pytest.approx(LOGITS_LOSS, rel=1e-6)
    assert isinstance(losses.get("categorical_crossentropy"), losses.CategoricalCrossentropy)
    assert isinstance(losses.get(losses.sparse_categorical_crossentropy),
                      losses.SparseCategoricalCrossentropy)
    assert losses.get(sparse) is sparse
    with pytest.raises(ValueError, match=r"Unknown loss 'hinge'.*'categorical_crossentropy'"):
        losses.get("hinge")


@pytest.mark.parametrize("fn, target, match", [
    (losses.sparse_categorical_crossentropy, np.array([0, 3]), r"expected labels in \[0, 3\).*received 3"),
    (losses.sparse_categorical_crossentropy, np.array([0, -1]), r"received -1"),
    (losses.sparse_categorical_crossentropy, ONE_HOT, r"one-hot targets\? use categorical_crossentropy"),
    (losses.categorical_crossentropy, np.eye(2, 4, dtype=F32), r"shape \(N, 3\).*received shape \(2, 4\)"),
    (losses.categorical_crossentropy, LABELS, r"use sparse_categorical_crossentropy or to_categorical"),
    (losses.categorical_crossentropy, np.eye(3, dtype=F32),
     r"as many targets as predictions \(2\), received 3"),
])
def test_bad_targets_are_rejected(fn, target, match):
    with pytest.raises(ValueError, match=match):
        fn(target, mg.Tensor(PROBS))


def test_categorical_accuracy_running_mean_weighted_by_samples():
    m = metrics.CategoricalAccuracy()
    m.update_state(ONE_HOT, PROBS)                                    # 2 of 2
    m.update_state(np.eye(3, dtype=F32), np.tile([0.9, 0.1, 0.0], (3, 1)))  # 1 of 3
    assert m.result() == pytest.approx(3 / 5)
    m.reset_state()
    assert m.result() == 0.0


def test_sparse_categorical_accuracy():
    m = metrics.SparseCategoricalAccuracy()
    m.update_state(np.array([0, 1], np.uint8), PROBS)                 # row 2 predicts 2, not 1
    assert m.result() == 0.5


def test_accuracy_resolves_by_target_shape_and_keeps_its_name():
    sparse = metrics.get("accuracy", sparse_targets=True)
    dense = metrics.get("accuracy", sparse_targets=False)
    assert isinstance(sparse, metrics.SparseCategoricalAccuracy) and sparse.name == "accuracy"
    assert isinstance(dense, metrics.CategoricalAccuracy) and dense.name == "accuracy"
    with pytest.raises(ValueError, match=r"Unknown metric 'auc'.*'accuracy'"):
        metrics.get("auc")


def test_mean_metric_is_weighted():
    m = metrics.Mean()
    m.update_state(0.5, weight=128)
    m.update_state(2.0, weight=32)
    assert m.result() == pytest.approx((0.5 * 128 + 2.0 * 32) / 160)
