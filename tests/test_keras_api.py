"""The Keras-style API of the book's chapter 3-4 programs, checked against values computed by
hand, NumPy and finite differences: binary cross-entropy, mse and mae (ids, functions,
classes), the metrics and how 'accuracy' resolves, Dropout, Flatten, Activation, Input,
regularizers, model.save / load_model, the *_on_batch methods and fit's sample_weight,
class_weight and initial_epoch."""
import math
import os
import pickle
import zipfile

import numpy as np
import pytest

import minigrad as mg
from minigrad import activations, callbacks, layers, losses, metrics, models, optimizers
from minigrad import regularizers, utils

from helpers import assert_bitwise_equal, assert_same_state

F32 = np.float32


def f32(x):
    return np.asarray(x, dtype=F32)


def bce_numpy(y, p):
    """-(y ln p + (1-y) ln(1-p)) averaged over the last axis, then the batch (float64)."""
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    return float(np.mean(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)), axis=-1)))


def bce_logits_numpy(y, z):
    y, z = np.asarray(y, np.float64), np.asarray(z, np.float64)
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


# ================================================================ losses

Y_BIN = f32([[1.0], [0.0], [1.0]])
P_BIN = f32([[0.9], [0.2], [0.6]])
# -(ln 0.9 + ln 0.8 + ln 0.6) / 3
BCE_GOLDEN = -(math.log(0.9) + math.log(0.8) + math.log(0.6)) / 3          # 0.2797765


BCE_FORMS = [("id", lambda: losses.get("binary_crossentropy")),
             ("function", lambda: losses.binary_crossentropy),
             ("class", lambda: losses.BinaryCrossentropy())]


@pytest.mark.parametrize("form, make", BCE_FORMS, ids=[f[0] for f in BCE_FORMS])
def test_binary_crossentropy_on_probabilities_golden(form, make):
    assert BCE_GOLDEN == pytest.approx(0.2797765, rel=1e-6)
    loss = make()(Y_BIN, mg.Tensor(P_BIN))
    assert loss.shape == ()
    assert loss.item() == pytest.approx(BCE_GOLDEN, rel=1e-6)


def test_binary_crossentropy_from_logits_golden():
    z = f32([[2.0], [-1.0], [0.0]])
    # per sample: ln(1+e^-2) = 0.126928, ln(1+e^-1) = 0.313262, ln 2 = 0.693147
    want = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + math.log(2)) / 3
    assert want == pytest.approx(0.3777790, rel=1e-6)
    for loss in (losses.binary_crossentropy(Y_BIN, mg.Tensor(z), from_logits=True),
                 losses.BinaryCrossentropy(from_logits=True)(Y_BIN, mg.Tensor(z))):
        assert loss.item() == pytest.approx(want, rel=1e-6)
    # the same as the probability path on sigmoid(z) for moderate logits
    p = 1 / (1 + np.exp(-z.astype(np.float64)))
    assert want == pytest.approx(bce_numpy(Y_BIN, p), rel=1e-9)


def test_binary_crossentropy_probability_path_clips_to_epsilon():
    # y=0 with p=1, y=1 with p=0: clipped to [1e-7, 1 - 1e-7] (in float32, as Keras computes)
    y, p = f32([[0.0], [1.0]]), mg.Tensor(f32([[1.0], [0.0]]), requires_grad=True)
    loss = losses.binary_crossentropy(y, p)
    hi = F32(1 - 1e-7)                                   # 0.99999988 in float32
    want = (-math.log(float(F32(1) - hi)) - math.log(float(F32(1e-7)))) / 2  # (15.9424 + 16.1181) / 2
    assert want == pytest.approx(16.0302, abs=1e-3)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    loss.backward()
    assert np.all(np.isfinite(p.grad))
    assert np.all(p.grad == 0.0)  # both clipped: no gradient through the clip (tf.clip_by_value)


def test_binary_crossentropy_large_logits_stay_finite():
    y = f32([[0.0], [1.0], [1.0], [0.0]])
    z = mg.Tensor(f32([[100.0], [-100.0], [100.0], [-1000.0]]), requires_grad=True)
    loss = losses.binary_crossentropy(y, z, from_logits=True)
    assert loss.item() == pytest.approx((100 + 100 + 0 + 0) / 4, rel=1e-6)
    loss.backward()
    # d/dz = (sigmoid(z) - y) / B
    np.testing.assert_allclose(z.grad, f32([[1.0], [-1.0], [0.0], [0.0]]) / 4, atol=1e-7)


MSE_Y = f32([[1.0, 2.0], [3.0, 4.0]])
MSE_P = f32([[0.0, 4.0], [3.0, 3.0]])
# per sample: mse (1 + 4) / 2 = 2.5 and (0 + 1) / 2 = 0.5 -> 1.5; mae (1 + 2) / 2, (0 + 1) / 2 -> 1.0
REGRESSION = [("mse", 1.5), ("mean_squared_error", 1.5), (losses.mean_squared_error, 1.5),
              (losses.mse, 1.5), (losses.MeanSquaredError, 1.5), (losses.MeanSquaredError(), 1.5),
              ("mae", 1.0), ("mean_absolute_error", 1.0), (losses.mean_absolute_error, 1.0),
              (losses.mae, 1.0), (losses.MeanAbsoluteError, 1.0), (losses.MeanAbsoluteError(), 1.0)]


@pytest.mark.parametrize("ident, want", REGRESSION, ids=[str(i) for i, _ in enumerate(REGRESSION)])
def test_mse_mae_golden_as_ids_functions_classes(ident, want):
    loss = losses.get(ident)(MSE_Y, mg.Tensor(MSE_P))
    assert loss.item() == pytest.approx(want, rel=1e-7)


def test_regression_losses_take_flat_targets_for_one_output():
    y, p = f32([1.0, 2.0, 4.0]), mg.Tensor(f32([[2.0], [2.0], [1.0]]))
    assert losses.mse(y, p).item() == pytest.approx((1 + 0 + 9) / 3)
    assert losses.mae(y, p).item() == pytest.approx((1 + 0 + 3) / 3)


@pytest.mark.parametrize("name, fn, target, make_input", [
    ("bce_logits", lambda y, z: losses.binary_crossentropy(y, z, from_logits=True),
     f32([[1, 0], [0, 1], [1, 1]]), lambda r: r.standard_normal((3, 2)) * 2),
    ("bce_probs", losses.binary_crossentropy, f32([[1, 0], [0, 1], [1, 1]]),
     lambda r: r.uniform(0.1, 0.9, (3, 2))),
    ("mse", losses.mean_squared_error, f32([[1, -2], [0.5, 3], [2, 0]]),
     lambda r: r.standard_normal((3, 2))),
    # |diff| >= 0.4 everywhere: away from mae's kink at 0
    ("mae", losses.mean_absolute_error, f32([[1, -2], [0.5, 3], [2, 0]]),
     lambda r: f32([[1, -2], [0.5, 3], [2, 0]]) + r.choice([-1, 1], (3, 2)) * r.uniform(0.4, 1.0, (3, 2))),
])
def test_loss_gradients_match_finite_differences(name, fn, target, make_input):
    x = mg.Tensor(f32(make_input(np.random.default_rng(3))), requires_grad=True)
    assert mg.gradcheck(lambda t: fn(target, t), [x])


def test_loss_sample_weight_golden():
    w = f32([2.0, 0.0])
    # mse per sample 2.5 and 0.5 -> (2 * 2.5 + 0 * 0.5) / 2 (sum(w * l) / N, not / sum(w))
    assert losses.mean_squared_error(MSE_Y, mg.Tensor(MSE_P), sample_weight=w).item() == pytest.approx(2.5)
    assert losses.MeanAbsoluteError()(MSE_Y, mg.Tensor(MSE_P), sample_weight=w).item() == pytest.approx(1.5)
    wb = f32([1.0, 3.0, 0.5])
    per = [-math.log(0.9), -math.log(0.8), -math.log(0.6)]
    want = sum(a * b for a, b in zip(wb, per)) / 3
    assert losses.binary_crossentropy(Y_BIN, mg.Tensor(P_BIN), sample_weight=wb).item() == pytest.approx(want, rel=1e-6)
    z = np.log(P_BIN / (1 - P_BIN))  # logits of the same probabilities
    got = losses.binary_crossentropy(Y_BIN, mg.Tensor(f32(z)), from_logits=True, sample_weight=wb)
    assert got.item() == pytest.approx(want, rel=1e-5)


def one_unit_model(w=1.0, b=0.0, activation="sigmoid", loss="binary_crossentropy", metrics_=(),
                   optimizer=None, inputs=1):
    """Dense(1) on `inputs` features with a known kernel and bias."""
    model = models.Sequential([layers.Dense(1, activation=activation, input_shape=(inputs,))])
    model.set_weights([np.full((inputs, 1), w, F32), f32([b])])
    model.compile(optimizer=optimizer or optimizers.SGD(learning_rate=1e-30), loss=loss,
                  metrics=list(metrics_))
    return model


def test_sigmoid_output_trains_through_the_fused_op():
    rng = np.random.default_rng(0)
    x = f32(rng.uniform(-2, 2, (64, 1)))
    y = f32(rng.integers(0, 2, (64, 1)))
    model = one_unit_model(w=1.5, b=0.25)
    p = model.predict(x, verbose=0)
    z = 1.5 * x.astype(np.float64) + 0.25
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-z)), rtol=1e-6)
    # moderate logits: the fused loss equals the probability path within tolerance
    assert model.evaluate(x, y, verbose=0) == pytest.approx(bce_numpy(y, p), rel=1e-5)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(bce_logits_numpy(y, z), rel=1e-5)
    # large logits, wrong labels: fused gives the true 50 per sample (the clipped
    # probability path could never exceed -ln(1e-7) = 16.1)
    big = one_unit_model(w=50.0)
    xs, ys = f32([[1.0], [-1.0]]), f32([[0.0], [1.0]])
    assert big.evaluate(xs, ys, verbose=0) == pytest.approx(50.0, rel=1e-6)
    assert big.train_on_batch(xs, ys) == pytest.approx(50.0, rel=1e-6)
    # and its gradient is the fused one: (sigmoid(z) - y) / B through the Dense
    sgd = one_unit_model(w=0.5, b=0.0, optimizer=optimizers.SGD(learning_rate=1.0))
    xg, yg = f32([[1.0], [2.0]]), f32([[1.0], [0.0]])
    s = 1 / (1 + np.exp(-0.5 * xg.astype(np.float64)))
    dz = (s - yg) / 2
    sgd.train_on_batch(xg, yg)
    kernel, bias = sgd.get_weights()
    assert kernel[0, 0] == pytest.approx(0.5 - float((xg * dz).sum()), abs=1e-6)
    assert bias[0] == pytest.approx(-float(dz.sum()), rel=1e-6, abs=1e-7)


def _regression_data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = f32(rng.standard_normal((n, 4)))
    y = f32(x @ f32([[1.0], [-2.0], [0.5], [0.0]]) + 0.1)
    return x, y


def _small_regressor(loss, seed=0):
    utils.set_random_seed(seed)
    model = models.Sequential([layers.Dense(8, activation="relu", input_shape=(4,)), layers.Dense(1)])
    model.compile(optimizer="rmsprop", loss=loss)
    return model


def user_mse_scalar(y_true, y_pred):
    d = y_pred - mg.Tensor(y_true)
    return (d * d).mean()


def user_mse_per_sample(y_true, y_pred):
    d = y_pred - mg.Tensor(y_true)
    return (d * d).mean(axis=-1)


@pytest.mark.parametrize("user_loss", [user_mse_scalar, user_mse_per_sample])
def test_user_callable_loss_trains_like_the_builtin(user_loss):
    x, y = _regression_data()
    reference = _small_regressor("mse")
    utils.set_random_seed(5)
    want = reference.fit(x, y, epochs=3, batch_size=32, verbose=0).history["loss"]
    model = _small_regressor(user_loss)
    utils.set_random_seed(5)
    got = model.fit(x, y, epochs=3, batch_size=32, verbose=0).history["loss"]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got[-1] < got[0]
    np.testing.assert_allclose(model.predict(x, verbose=0), reference.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)


def test_user_per_sample_loss_is_weighted_and_scalar_loss_refuses_weights():
    x, y = _regression_data(8)
    model = _small_regressor(user_mse_per_sample)
    w = f32([1, 0, 2, 0, 1, 1, 3, 0])
    per = ((model.predict(x, verbose=0).astype(np.float64) - y) ** 2).mean(axis=1)
    assert model.test_on_batch(x, y, sample_weight=w) == pytest.approx(float((w * per).sum() / 8), rel=1e-5)
    scalar = _small_regressor(user_mse_scalar)
    with pytest.raises(ValueError, match="user_mse_scalar.*scalar"):
        scalar.fit(x, y, sample_weight=w, verbose=0)


# ================================================================ metrics

def test_one_unit_sigmoid_reports_binary_accuracy_not_argmax():
    """The regression test: with one output unit, argmax is always 0, so an argmax-based
    'accuracy' would report the fraction of 0 labels (0.504 here) instead of 0.874."""
    n_pos, n_neg = 496, 504
    # x > 0 -> predicted 1. Ones: 433 predicted 1, 63 predicted 0; zeros: 441 predicted 0,
    # 63 predicted 1 -> (433 + 441) / 1000 = 0.874 correct.
    x = np.concatenate([np.full(433, 1.0), np.full(63, -1.0), np.full(441, -1.0), np.full(63, 1.0)])
    y = np.concatenate([np.ones(n_pos), np.zeros(n_neg)])
    x = f32(x * np.linspace(0.5, 2.0, 1000))[:, None]
    order = np.random.default_rng(0).permutation(1000)
    x, y = x[order], f32(y[order])
    assert float(((x[:, 0] > 0) == (y > 0.5)).mean()) == 0.874
    assert float((y == 0).mean()) == 0.504  # what argmax-based accuracy would say

    for ident in ("accuracy", "acc"):
        model = one_unit_model(metrics_=[ident])
        loss, acc = model.evaluate(x, y, verbose=0)
        assert acc == pytest.approx(0.874, abs=1e-12)
        history = model.fit(x, y, epochs=2, batch_size=100, verbose=0, validation_data=(x, y))
        assert sorted(history.history) == sorted([ident, "loss", "val_" + ident, "val_loss"])
        np.testing.assert_allclose(history.history[ident], [0.874, 0.874], atol=1e-12)
        np.testing.assert_allclose(history.history["val_" + ident], [0.874, 0.874], atol=1e-12)
        assert model.test_on_batch(x, y, return_dict=True)[ident] == pytest.approx(0.874, abs=1e-12)
    # one unit without binary cross-entropy (mse on a sigmoid): still binary accuracy
    model = one_unit_model(loss="mse", metrics_=["accuracy"])
    assert model.evaluate(x, y, verbose=0)[1] == pytest.approx(0.874, abs=1e-12)
    # integer labels of shape (N,) too
    model = one_unit_model(metrics_=["accuracy"])
    assert model.evaluate(x, y.astype(np.int64), verbose=0)[1] == pytest.approx(0.874, abs=1e-12)


def test_accuracy_resolves_categorical_for_one_hot_and_sparse_for_labels():
    x = f32(np.eye(3))
    probs_model = models.Sequential([layers.Dense(3, activation="softmax", input_shape=(3,))])
    # logits = x @ W: row i predicts class [0, 2, 2][i]
    probs_model.set_weights([f32([[5, 0, 0], [0, 0, 5], [0, 0, 5]]), f32([0, 0, 0])])
    labels = np.array([0, 1, 2])
    for loss, y in (("categorical_crossentropy", utils.to_categorical(labels, 3)),
                    ("sparse_categorical_crossentropy", labels)):
        probs_model.compile(loss=loss, metrics=["accuracy", "acc"])
        _, acc1, acc2 = probs_model.evaluate(x, y, verbose=0)
        assert acc1 == acc2 == pytest.approx(2 / 3)


# y_true / y_pred of 4 samples, 3 classes; hand-checked per sample
MC_TRUE = f32([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]])
MC_PRED = f32([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8]])
# argmax pred: 0, 0, 2, 2 vs true 0, 1, 2, 1 -> [1, 0, 1, 0]
# top-2: sample 2 (true 1 at 0.4, second largest) in; sample 4 (true 1 at 0.1 tied with 0.1
# for second place): in, as Keras' in_top_k counts ties -> [1, 1, 1, 1]
METRIC_CASES = [
    ("binary_accuracy", metrics.binary_accuracy, metrics.BinaryAccuracy,
     f32([[1], [0], [1], [0]]), f32([[0.7], [0.5], [0.4], [0.2]]), [1, 1, 0, 1]),
    ("categorical_accuracy", metrics.categorical_accuracy, metrics.CategoricalAccuracy,
     MC_TRUE, MC_PRED, [1, 0, 1, 0]),
    ("sparse_categorical_accuracy", metrics.sparse_categorical_accuracy,
     metrics.SparseCategoricalAccuracy, np.array([0, 1, 2, 1]), MC_PRED, [1, 0, 1, 0]),
    ("mae", metrics.mae, metrics.MeanAbsoluteError,
     f32([[1, 2], [0, 0], [3, 3], [1, 1]]), f32([[2, 2], [1, -1], [3, 3], [0, 3]]), [0.5, 1.0, 0.0, 1.5]),
    ("mse", metrics.mse, metrics.MeanSquaredError,
     f32([[1, 2], [0, 0], [3, 3], [1, 1]]), f32([[2, 2], [1, -1], [3, 3], [0, 3]]), [0.5, 1.0, 0.0, 2.5]),
]


@pytest.mark.parametrize("name, fn, cls, y_true, y_pred, per_sample", METRIC_CASES,
                         ids=[c[0] for c in METRIC_CASES])
def test_metrics_golden_as_ids_functions_classes(name, fn, cls, y_true, y_pred, per_sample):
    np.testing.assert_allclose(fn(y_true, y_pred), per_sample)
    for m in (metrics.get(name), metrics.get(fn), cls(), metrics.get(cls)):
        m.update_state(y_true[:3], y_pred[:3])
        m.update_state(y_true[3:], y_pred[3:])   # a running mean weighted by batch size
        assert m.result() == pytest.approx(np.mean(per_sample), rel=1e-12)
    assert metrics.get(name).name == name
    assert metrics.get(fn).name == fn.__name__


def test_top_k_categorical_accuracy():
    np.testing.assert_allclose(metrics.top_k_categorical_accuracy(MC_TRUE, MC_PRED, k=2), [1, 1, 1, 1])
    np.testing.assert_allclose(metrics.top_k_categorical_accuracy(MC_TRUE, MC_PRED, k=1), [1, 0, 1, 0])
    m = metrics.TopKCategoricalAccuracy(k=1)
    m.update_state(MC_TRUE, MC_PRED)
    assert m.result() == 0.5
    m = metrics.get("top_k_categorical_accuracy")  # k=5 >= 3 classes: always in
    m.update_state(MC_TRUE, MC_PRED)
    assert m.result() == 1.0


def test_binary_accuracy_threshold():
    m = metrics.BinaryAccuracy(threshold=0.3)
    m.update_state(f32([[1], [0], [1], [0]]), f32([[0.7], [0.5], [0.4], [0.2]]))
    assert m.result() == 0.75  # 0.5 > 0.3 now predicts 1 for a 0


def test_compiled_metrics_match_numpy_and_name_the_history_keys():
    rng = np.random.default_rng(1)
    x = f32(rng.standard_normal((40, 3)))
    y = f32(rng.standard_normal((40, 2)))
    utils.set_random_seed(0)
    model = models.Sequential([layers.Dense(2, input_shape=(3,))])
    model.compile(optimizer=optimizers.SGD(learning_rate=1e-30), loss="mse",
                  metrics=["mae", metrics.mean_squared_error, metrics.MeanAbsoluteError(name="l1")])
    pred = model.predict(x, verbose=0).astype(np.float64)
    logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert sorted(logs) == ["l1", "loss", "mae", "mean_squared_error"]
    assert logs["mae"] == pytest.approx(np.abs(pred - y).mean(), rel=1e-6)
    assert logs["l1"] == pytest.approx(np.abs(pred - y).mean(), rel=1e-6)
    assert logs["mean_squared_error"] == pytest.approx(((pred - y) ** 2).mean(), rel=1e-6)
    assert logs["loss"] == pytest.approx(((pred - y) ** 2).mean(), rel=1e-5)
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0, validation_split=0.25)
    assert sorted(history.history) == ["l1", "loss", "mae", "mean_squared_error", "val_l1",
                                       "val_loss", "val_mae", "val_mean_squared_error"]


def test_binary_accuracy_function_and_class_in_compile():
    x = f32([[1.0], [-1.0], [2.0], [-2.0]])
    y = f32([1, 1, 1, 0])
    for metric, key in ((metrics.binary_accuracy, "binary_accuracy"),
                        (metrics.BinaryAccuracy(), "binary_accuracy"), ("binary_accuracy", "binary_accuracy")):
        model = one_unit_model(metrics_=[metric])
        assert model.evaluate(x, y, verbose=0, return_dict=True)[key] == 0.75


# ================================================================ layers

def test_dropout_is_inverted_and_identity_outside_training():
    layer = layers.Dropout(0.3, seed=7)
    x = mg.Tensor(np.ones((200, 100), F32))
    out = layer(x, training=True).numpy()
    kept = out != 0
    np.testing.assert_array_equal(out[kept], np.full(kept.sum(), F32(1) / F32(0.7)))
    assert kept.mean() == pytest.approx(0.7, abs=0.01)    # 20,000 draws: sd 0.0032
    assert out.mean() == pytest.approx(1.0, abs=0.02)
    for training in (False, None):
        np.testing.assert_array_equal(layer(x, training=training).numpy(), x.numpy())


def test_dropout_gradient_is_the_scaled_mask_and_masks_change_per_step():
    layer = layers.Dropout(0.5, seed=3)
    x = mg.Tensor(f32(np.random.default_rng(0).standard_normal((8, 16))), requires_grad=True)
    out = layer(x, training=True)
    out.sum().backward()
    mask = out.numpy() != 0
    np.testing.assert_array_equal(x.grad, np.where(mask, F32(2.0), F32(0.0)))
    np.testing.assert_array_equal(out.numpy()[mask], x.numpy()[mask] * 2)
    second = layer(x, training=True).numpy() != 0
    assert not np.array_equal(mask, second)  # the next step draws a new mask
    # same seed, same step: the same mask
    again = layers.Dropout(0.5, seed=3)(x, training=True).numpy() != 0
    np.testing.assert_array_equal(again, mask)


def _dropout_model(seed=0):
    utils.set_random_seed(seed)
    model = models.Sequential([layers.Input(shape=(12,)), layers.Dense(32, activation="relu"),
                               layers.Dropout(0.5), layers.Dense(3, activation="softmax")])
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _toy_classes(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = f32(rng.standard_normal((n, 12)))
    return x, x[:, :3].argmax(axis=1).astype(np.int64)


def test_dropout_fit_is_bitwise_identical_at_1_2_3_threads(restore_threads):
    x, y = _toy_classes()
    results = []
    for threads in (1, 2, 3):
        mg.set_num_threads(threads)
        model = _dropout_model(seed=4)
        history = model.fit(x, y, epochs=2, batch_size=64, verbose=0)
        results.append((model.get_weights(), history.history["loss"]))
    for weights, losses_ in results[1:]:
        for i, (a, b) in enumerate(zip(results[0][0], weights)):
            assert_bitwise_equal(a, b, f"weight {i}")
        assert losses_ == results[0][1]


def test_dropout_training_is_reproducible_with_set_random_seed():
    x, y = _toy_classes()
    runs = []
    for seed in (11, 11, 12):
        model = _dropout_model(seed)
        model.fit(x, y, epochs=1, batch_size=50, verbose=0)
        runs.append(model.get_weights())
    for a, b in zip(runs[0], runs[1]):
        assert_bitwise_equal(a, b, "same seed")
    assert not np.array_equal(runs[0][0], runs[2][0])


def test_dropout_model_predicts_and_evaluates_without_dropout():
    x, y = _toy_classes(50)
    model = _dropout_model(1)
    plain = models.Sequential([layers.Input(shape=(12,)), layers.Dense(32, activation="relu"),
                               layers.Dense(3, activation="softmax")])
    plain.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    plain.set_weights(model.get_weights())
    np.testing.assert_array_equal(model.predict(x, verbose=0), plain.predict(x, verbose=0))
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))
    assert model.evaluate(x, y, verbose=0) == plain.evaluate(x, y, verbose=0)


def test_flatten_and_input_first_in_sequential():
    x = f32(np.random.default_rng(0).standard_normal((5, 3, 4)))
    t = mg.Tensor(x, requires_grad=True)
    out = layers.Flatten()(t)
    np.testing.assert_array_equal(out.numpy(), x.reshape(5, 12))
    (out * mg.Tensor(f32(np.arange(60).reshape(5, 12)))).sum().backward()
    np.testing.assert_array_equal(t.grad, f32(np.arange(60).reshape(5, 3, 4)))
    utils.set_random_seed(0)
    model = models.Sequential([layers.Input(shape=(3, 4)), layers.Flatten(), layers.Dense(2)])
    assert len(model.layers) == 2 and model.count_params() == 12 * 2 + 2
    kernel, bias = model.get_weights()
    np.testing.assert_allclose(model.predict(x, verbose=0), x.reshape(5, 12) @ kernel + bias, rtol=1e-5)
    with pytest.raises(ValueError, match="Input"):
        models.Sequential([layers.Dense(2, input_shape=(3,)), layers.Input(shape=(2,))])


@pytest.mark.parametrize("ident, fn, deriv", [
    ("relu", lambda v: np.maximum(v, 0), lambda v: (v > 0).astype(np.float64)),
    ("sigmoid", lambda v: 1 / (1 + np.exp(-v)), lambda v: np.exp(-v) / (1 + np.exp(-v)) ** 2),
    ("tanh", np.tanh, lambda v: 1 - np.tanh(v) ** 2),
    (lambda t: t * t, lambda v: v * v, lambda v: 2 * v),
], ids=["relu", "sigmoid", "tanh", "callable"])
def test_activation_layer_values_and_gradients(ident, fn, deriv):
    v = f32([[-3.0, -0.5, 0.25, 2.0], [0.75, -1.5, 4.0, -0.1]])
    t = mg.Tensor(v, requires_grad=True)
    out = layers.Activation(ident)(t)
    np.testing.assert_allclose(out.numpy(), fn(v.astype(np.float64)), rtol=1e-6, atol=1e-7)
    out.sum().backward()
    np.testing.assert_allclose(t.grad, deriv(v.astype(np.float64)), rtol=1e-5, atol=1e-7)
    assert mg.gradcheck(lambda a: layers.Activation(ident)(a), [mg.Tensor(v, requires_grad=True)])


def test_sigmoid_and_tanh_golden_and_extremes():
    v = f32([-1000.0, -100.0, -1.0, 0.0, 1.0, 100.0, 1000.0])
    s = activations.get("sigmoid")(mg.Tensor(v)).numpy()
    np.testing.assert_allclose(s[2:5], [0.26894142, 0.5, 0.73105858], rtol=1e-6)
    assert s[0] == 0.0 and s[-1] == 1.0 and np.all(np.isfinite(s))
    th = activations.tanh(mg.Tensor(v)).numpy()
    np.testing.assert_allclose(th, np.tanh(v.astype(np.float64)), rtol=1e-6)
    x = mg.Tensor(v, requires_grad=True)
    activations.sigmoid(x).sum().backward()
    assert np.all(np.isfinite(x.grad)) and x.grad[0] == 0.0 and x.grad[3] == pytest.approx(0.25)


# ================================================================ regularizers

REGS = [(lambda: regularizers.l2(0.01), lambda w: 0.01 * np.sum(w ** 2), lambda w: 0.02 * w),
        (lambda: regularizers.l1(0.05), lambda w: 0.05 * np.sum(np.abs(w)), lambda w: 0.05 * np.sign(w)),
        (lambda: regularizers.l1_l2(l1=0.05, l2=0.01),
         lambda w: 0.05 * np.sum(np.abs(w)) + 0.01 * np.sum(w ** 2),
         lambda w: 0.05 * np.sign(w) + 0.02 * w),
        (lambda: "l2", lambda w: 0.01 * np.sum(w ** 2), lambda w: 0.02 * w)]


def _reg_model(reg, lr=0.1, bias_reg=None):
    utils.set_random_seed(2)
    model = models.Sequential([layers.Dense(2, input_shape=(3,), kernel_regularizer=reg,
                                            bias_regularizer=bias_reg)])
    model.set_weights([f32([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]]), f32([0.1, -0.2])])
    model.compile(optimizer=optimizers.SGD(learning_rate=lr), loss="mse")
    return model


@pytest.mark.parametrize("make, penalty, grad", REGS, ids=["l2", "l1", "l1_l2", "l2_id"])
def test_regularizer_penalty_in_reported_loss_and_gradient_in_update(make, penalty, grad):
    x = f32([[1.0, 2.0, -1.0], [0.5, -1.0, 3.0], [2.0, 0.0, 1.0], [-1.0, 1.0, 0.5]])
    y = f32([[1.0, 0.0], [0.0, 1.0], [2.0, -1.0], [0.5, 0.5]])
    model = _reg_model(make())
    W, b = (w.astype(np.float64) for w in model.get_weights())
    err = x @ W + b - y
    want = float((err ** 2).mean()) + penalty(W)
    assert penalty(W) > 0.01
    assert model.evaluate(x, y, verbose=0) == pytest.approx(want, rel=1e-6)
    assert model.test_on_batch(x, y) == pytest.approx(want, rel=1e-6)
    # fit reports it too (one batch: the loss before the step's update)
    history = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert history.history["loss"][0] == pytest.approx(want, rel=1e-6)
    # one SGD step: W -= lr * (dmse/dW + dpenalty/dW)
    dW = 2 * x.T @ err / err.size + grad(W)
    db = 2 * err.sum(axis=0) / err.size
    W1, b1 = model.get_weights()
    np.testing.assert_allclose(W1, W - 0.1 * dW, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b1, b - 0.1 * db, rtol=1e-5, atol=1e-6)


def test_bias_regularizer_and_penalty_values():
    w = mg.Tensor(f32([[1.0, -2.0], [0.5, 0.0]]))
    assert regularizers.l2(0.1)(w).item() == pytest.approx(0.1 * 5.25)
    assert regularizers.l1(0.1)(w).item() == pytest.approx(0.1 * 3.5)
    assert regularizers.l1_l2(l1=0.1, l2=0.2)(w).item() == pytest.approx(0.35 + 1.05)
    x, y = f32([[1.0, 1.0, 1.0]]), f32([[0.0, 0.0]])
    model = _reg_model(None, bias_reg=regularizers.l2(1.0))
    W, b = (v.astype(np.float64) for v in model.get_weights())
    assert model.evaluate(x, y, verbose=0) == pytest.approx(float(((x @ W + b) ** 2).mean()) + 0.05,
                                                            rel=1e-6)


# ================================================================ save / load_model

def _trained(model_fn, x, y, seed=0):
    model = model_fn(seed)
    utils.set_random_seed(seed + 100)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return model


def _plain_model(seed=0):
    utils.set_random_seed(seed)
    model = models.Sequential([layers.Dense(16, activation="relu", input_shape=(12,),
                                            kernel_regularizer=regularizers.l2(0.001)),
                               layers.Dense(3, activation="softmax")])
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["acc"])
    return model


@pytest.mark.parametrize("model_fn", [_plain_model, _dropout_model], ids=["plain", "dropout"])
def test_save_load_same_predictions_state_and_bitwise_resume(tmp_path, model_fn):
    x, y = _toy_classes(200)
    model = _trained(model_fn, x, y)
    path = tmp_path / "model.npz"
    model.save(path)
    again = models.load_model(path)
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))
    assert_same_state(model, again, "after load")
    assert again.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    for m in (model, again):
        utils.set_random_seed(99)   # the same shuffles
        m.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert_same_state(model, again, "after resuming")
    if model_fn is _dropout_model:
        assert again.layers[1]._counter.value == model.layers[1]._counter.value > 0


def _write_npz(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _npy_bytes(array, allow_pickle=False):
    import io
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


class _Boom:
    """Unpickling this writes a file: the proof that a loader unpickled."""
    target = None

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_load_model_refuses_garbage_and_never_unpickles(tmp_path):
    x, y = _toy_classes(40)
    good = tmp_path / "good.npz"
    _trained(_plain_model, x, y).save(good)
    with zipfile.ZipFile(good) as z:
        members = {name: z.read(name) for name in z.namelist()}
    sentinel = tmp_path / "UNPICKLED"
    _Boom.target = str(sentinel)
    evil = np.empty(1, dtype=object)
    evil[0] = _Boom()
    payload = _npy_bytes(evil, allow_pickle=True)
    assert b"UNPICKLED" in payload
    cases = {
        "random_bytes": os.urandom(300),
        "truncated": good.read_bytes()[: good.stat().st_size // 2],
        "npy_not_npz": _npy_bytes(f32([1, 2, 3])),
    }
    for name, data in cases.items():
        (tmp_path / f"{name}.npz").write_bytes(data)
    # an object array in place of the configuration, and in place of a weight
    _write_npz(tmp_path / "object_config.npz", dict(members, **{"model_config.json.npy": payload}))
    _write_npz(tmp_path / "object_weight.npz", dict(members, **{"layer0/kernel.npy": payload}))
    _write_npz(tmp_path / "no_config.npz", {k: v for k, v in members.items()
                                            if not k.startswith("model_config")})
    _write_npz(tmp_path / "bad_json.npz", dict(members, **{"model_config.json.npy":
                                                          _npy_bytes(np.frombuffer(b"{nope", np.uint8))}))
    for name in list(cases) + ["object_config", "object_weight", "no_config", "bad_json"]:
        with pytest.raises(ValueError, match="load_model|load_weights"):
            models.load_model(tmp_path / f"{name}.npz")
    assert not sentinel.exists(), "a loader unpickled an object array"


class Scale(layers.Layer):
    """A user layer: x * scale (a weight) + offset (configuration)."""

    def __init__(self, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.offset = float(offset)

    def build(self, input_shape):
        self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x, training=None):
        return x * self.scale + self.offset

    def get_config(self):
        return dict(super().get_config(), offset=self.offset)


def test_load_model_with_custom_objects(tmp_path):
    x, y = _toy_classes(60)
    utils.set_random_seed(0)
    model = models.Sequential([layers.Input(shape=(12,)), Scale(offset=0.5),
                               layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=20, verbose=0)
    assert not np.array_equal(model.layers[0].scale.numpy(), np.ones(12, F32))
    path = tmp_path / "custom.npz"
    model.save(path)
    with pytest.raises(ValueError, match="Scale.*custom_objects"):
        models.load_model(path)
    again = models.load_model(path, custom_objects={"Scale": Scale})
    assert again.layers[0].offset == 0.5
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))
    assert_same_state(model, again, "custom layer")


# ================================================================ *_on_batch, fit options

def test_train_test_predict_on_batch():
    x, y = _toy_classes(64)
    a, b = _plain_model(3), _plain_model(3)
    before = a.test_on_batch(x, y, return_dict=True)
    assert sorted(before) == ["acc", "loss"]
    assert a.test_on_batch(x, y) == [before["loss"], before["acc"]]
    pred = a.predict(x, verbose=0)
    np.testing.assert_array_equal(a.predict_on_batch(x), pred)
    assert before["acc"] == pytest.approx(float((pred.argmax(1) == y).mean()))
    assert_same_state(a, b, "test_on_batch changes nothing")
    loss, acc = a.train_on_batch(x, y)
    assert loss == pytest.approx(before["loss"], rel=1e-6)   # the loss before the update
    assert acc == before["acc"]
    b.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)   # the same one step
    assert_same_state(a, b, "train_on_batch == one fit step")
    assert a.test_on_batch(x, y)[0] < before["loss"]


def test_fit_class_weight_equals_the_sample_weight_it_implies():
    x, y = _toy_classes(120)
    weights = {0: 1.0, 1: 3.0, 2: 0.5}
    a, b = _plain_model(1), _plain_model(1)
    utils.set_random_seed(7)
    ha = a.fit(x, y, epochs=2, batch_size=32, verbose=0, class_weight=weights)
    utils.set_random_seed(7)
    hb = b.fit(x, y, epochs=2, batch_size=32, verbose=0,
               sample_weight=np.array([weights[int(c)] for c in y], F32))
    assert ha.history == hb.history
    assert_same_state(a, b, "class_weight vs sample_weight")


def test_fit_sample_weight_scales_the_loss_and_the_step():
    x, y = _regression_data(32)
    # a loss scaled by 2 with SGD(lr) is the same step as SGD(2 lr)
    a = models.Sequential([layers.Dense(1, input_shape=(4,))])
    b = models.Sequential([layers.Dense(1, input_shape=(4,))])
    for m in (a, b):
        m.set_weights([f32([[0.1], [0.2], [-0.3], [0.4]]), f32([0.0])])
    a.compile(optimizer=optimizers.SGD(learning_rate=0.01), loss="mse")
    b.compile(optimizer=optimizers.SGD(learning_rate=0.02), loss="mse")
    w = np.full(32, 2.0, F32)
    loss0 = float(((a.predict(x, verbose=0).astype(np.float64) - y) ** 2).mean())
    ha = a.fit(x, y, sample_weight=w, batch_size=32, epochs=1, shuffle=False, verbose=0)
    b.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert ha.history["loss"][0] == pytest.approx(2 * loss0, rel=1e-5)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-7)
    # zero weights: those samples do not count, and the mean is still over all N
    half = np.where(np.arange(32) < 16, 1.0, 0.0).astype(F32)
    per = ((b.predict(x, verbose=0).astype(np.float64) - y) ** 2).mean(axis=1)
    assert b.test_on_batch(x, y, sample_weight=half) == pytest.approx(per[:16].sum() / 32, rel=1e-5)


def test_fit_initial_epoch_runs_the_remaining_epochs():
    x, y = _toy_classes(64)
    model = _plain_model()
    seen = []

    class Epochs(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    history = model.fit(x, y, epochs=4, initial_epoch=2, batch_size=32, verbose=0, callbacks=[Epochs()])
    assert seen == [2, 3]
    assert history.epoch == [2, 3]
    assert all(len(v) == 2 for v in history.history.values())
    assert model.optimizer.iterations == 2 * 2
    history = model.fit(x, y, epochs=4, initial_epoch=4, batch_size=32, verbose=0)
    assert history.history == {} or all(len(v) == 0 for v in history.history.values())


@pytest.mark.parametrize("call, exc, match", [
    (lambda m, x, y: m.fit(x, y, epochs=0, verbose=0), ValueError, r"fit: .*epochs"),
    (lambda m, x, y: m.fit(x, y, batch_size=-3, verbose=0), ValueError, r"fit: .*batch_size"),
    (lambda m, x, y: m.fit(x, y, initial_epoch=-1, verbose=0), ValueError, r"fit: .*initial_epoch"),
    (lambda m, x, y: m.fit(x, y, initial_epoch=1.5, verbose=0), ValueError, r"fit: .*initial_epoch"),
    (lambda m, x, y: m.fit(x, y, sample_weight=np.ones(3), verbose=0), ValueError, r"fit: .*sample_weight"),
    (lambda m, x, y: m.fit(x, y, sample_weight=-np.ones(len(y)), verbose=0), ValueError,
     r"fit: .*non-negative"),
    (lambda m, x, y: m.fit(x, y, class_weight=[1.0, 2.0], verbose=0), TypeError, r"fit: .*class_weight"),
    (lambda m, x, y: m.fit(x, y, class_weight={0: float("nan")}, verbose=0), ValueError,
     r"fit: .*class_weight"),
    (lambda m, x, y: m.fit(x, y[:-1], verbose=0), ValueError, r"fit: .*same number of samples"),
    (lambda m, x, y: m.evaluate(x, y, batch_size=0, verbose=0), ValueError, r"evaluate: .*batch_size"),
    (lambda m, x, y: m.train_on_batch(x, y[:5]), ValueError, r"train_on_batch: "),
    (lambda m, x, y: m.train_on_batch(x, y, sample_weight=np.ones(2)), ValueError, r"train_on_batch: "),
    (lambda m, x, y: m.test_on_batch(x, y[:5]), ValueError, r"test_on_batch: "),
    (lambda m, x, y: m.predict_on_batch(x[:, :5]), ValueError, r"incompatible"),
    (lambda m, x, y: m.fit(x, np.full(len(y), 7), verbose=0), ValueError, r"sparse_categorical_crossentropy.*\[0, 3\)"),
])
def test_bad_arguments_raise_and_change_nothing(call, exc, match):
    x, y = _toy_classes(20)
    model, reference = _plain_model(), _plain_model()
    with pytest.raises(exc, match=match):
        call(model, x, y)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        assert_bitwise_equal(a, b, "weights after a refused call")


@pytest.mark.parametrize("make, exc, match", [
    (lambda: losses.BinaryCrossentropy(from_logits="yes"), TypeError, r"BinaryCrossentropy: .*from_logits"),
    (lambda: losses.get("hinge_loss"), ValueError, r"Unknown loss 'hinge_loss'"),
    (lambda: metrics.get("auc"), ValueError, r"Unknown metric 'auc'"),
    (lambda: layers.Dropout(1.0), ValueError, r"Dropout: .*rate"),
    (lambda: layers.Dropout(0.5, seed=-1), ValueError, r"Dropout: .*seed"),
    (lambda: layers.Activation("swishy"), ValueError, r"Unknown activation 'swishy'"),
    (lambda: regularizers.l2(-0.1), ValueError, r"L2: .*l2"),
    (lambda: regularizers.l1(float("inf")), ValueError, r"L1: .*l1"),
    (lambda: layers.Dense(4, kernel_regularizer="l3"), ValueError, r"Dense: kernel_regularizer"),
    (lambda: models.Sequential([layers.Dense(1, input_shape=(2,))]).compile(loss=None), ValueError,
     r"compile: .*loss"),
    (lambda: losses.binary_crossentropy(f32([[1.0], [0.0]]), mg.Tensor(f32([[0.5], [0.5], [0.5]]))),
     ValueError, r"binary_crossentropy: .*as many targets"),
    (lambda: losses.mean_squared_error(f32([[1.0, 2.0]]), mg.Tensor(f32([[0.5]]))), ValueError,
     r"mean_squared_error: expected targets of shape \(N, 1\)"),
])
def test_bad_constructor_arguments_name_the_function(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_top_k_and_categorical_accuracy_compiled_on_a_softmax_model():
    rng = np.random.default_rng(4)
    x = f32(rng.standard_normal((50, 6)))
    labels = rng.integers(0, 5, 50)
    y = utils.to_categorical(labels, 5)
    utils.set_random_seed(0)
    model = models.Sequential([layers.Dense(5, activation="softmax", input_shape=(6,))])
    model.compile(loss="categorical_crossentropy",
                  metrics=[metrics.top_k_categorical_accuracy,
                           metrics.TopKCategoricalAccuracy(k=2, name="top2"),
                           "categorical_accuracy", "accuracy"])
    p = model.predict(x, verbose=0)
    logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert sorted(logs) == ["accuracy", "categorical_accuracy", "loss", "top2",
                            "top_k_categorical_accuracy"]
    rank = (p > p[np.arange(50), labels][:, None]).sum(axis=1)   # classes scored above the true one
    assert logs["top_k_categorical_accuracy"] == 1.0             # k=5 of 5 classes
    assert 0 < float((rank < 2).mean()) < 1
    assert logs["top2"] == pytest.approx(float((rank < 2).mean()))
    assert logs["categorical_accuracy"] == logs["accuracy"] == pytest.approx(float((rank == 0).mean()))


def test_sample_weight_on_the_fused_softmax_loss_golden():
    x = f32(np.eye(3))
    model = models.Sequential([layers.Dense(3, activation="softmax", input_shape=(3,))])
    model.set_weights([f32([[2, 1, 0], [0, 1, 3], [1, 1, 1]]), f32([0, 0, 0])])
    model.compile(loss="sparse_categorical_crossentropy")
    labels, w = np.array([0, 2, 1]), f32([1.0, 2.0, 0.5])
    z = np.array([[2, 1, 0], [0, 1, 3], [1, 1, 1]], np.float64)
    per = np.log(np.exp(z).sum(axis=1)) - z[np.arange(3), labels]   # 0.4076, 0.1698, 1.0986
    assert model.test_on_batch(x, labels, sample_weight=w) == pytest.approx(float((w * per).sum() / 3),
                                                                            rel=1e-6)
    assert model.test_on_batch(x, labels) == pytest.approx(float(per.mean()), rel=1e-6)


def test_evaluate_and_predict_do_not_advance_the_dropout_masks():
    x, y = _toy_classes(96)
    a, b = _dropout_model(8), _dropout_model(8)
    for m, interleave in ((a, True), (b, False)):
        utils.set_random_seed(1)
        m.fit(x, y, epochs=1, batch_size=32, verbose=0)
        if interleave:
            m.evaluate(x, y, verbose=0)
            m.predict(x, verbose=0)
            m.test_on_batch(x, y)
            m.predict_on_batch(x)
        m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert_same_state(a, b, "evaluate/predict between fits")


@pytest.mark.parametrize("metric", [metrics.binary_accuracy, metrics.BinaryAccuracy(),
                                    metrics.MeanAbsoluteError(name="l1")],
                         ids=["function", "instance", "named_instance"])
def test_save_load_model_compiled_with_metric_functions_and_objects(tmp_path, metric):
    """The book's listing 3.6 compiles with metrics=[metrics.binary_accuracy]: such a model
    must load again, with the same metric names and values."""
    x, y = f32([[1.0], [-1.0], [2.0], [-2.0]]), f32([1, 1, 1, 0])
    model = one_unit_model(metrics_=[metric])
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    path = tmp_path / "metric.npz"
    model.save(path)
    again = models.load_model(path)
    assert again.evaluate(x, y, verbose=0, return_dict=True) == before


def test_two_metrics_with_the_same_name_are_not_silently_merged():
    """Either compile refuses the duplicate name, or both metrics are reported:
    evaluate's list has one value per compiled metric after the loss."""
    x, y = f32(np.eye(3)), np.eye(3)[[0, 1, 2]]
    model = models.Sequential([layers.Dense(3, activation="softmax", input_shape=(3,))])
    try:
        model.compile(loss="categorical_crossentropy",
                      metrics=[metrics.TopKCategoricalAccuracy(k=1), metrics.TopKCategoricalAccuracy(k=3)])
    except ValueError as exc:
        assert "top_k_categorical_accuracy" in str(exc)
        return
    values = model.evaluate(x, y, verbose=0)
    assert len(values) == 3, f"evaluate returned {values} for a loss and two metrics"


def test_flatten_model_fit_is_recorded_without_warnings():
    """Flatten as the first layer (Tensor.reshape of the input batch) inside fit's recorded
    step (mg.jit): no 'this step runs eagerly on every call' RuntimeWarning. (After a Conv2D
    it records fine; on the input it does not: every step then runs eagerly.)"""
    import warnings
    x = f32(np.random.default_rng(0).standard_normal((32, 3, 4)))
    y = f32(x.reshape(32, 12).sum(axis=1, keepdims=True))
    utils.set_random_seed(0)
    model = models.Sequential([layers.Input(shape=(3, 4)), layers.Flatten(), layers.Dense(1)])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.01), loss="mse")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        history = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_chapter4_models_on_multi_hot_input_are_bitwise_identical_at_1_2_3_threads(restore_threads):
    """The book's IMDB models take sparse 0/1 rows (the zero-skipping GEMM path), with an l2
    penalty and dropout: the same bits at any thread count."""
    rng = np.random.default_rng(5)
    x = f32(rng.random((300, 800)) < 0.03)
    y = f32(x[:, :400].sum(axis=1) > x[:, 400:].sum(axis=1))
    results = []
    for threads in (1, 2, 3):
        mg.set_num_threads(threads)
        utils.set_random_seed(21)
        model = models.Sequential([
            layers.Dense(16, activation="relu", input_shape=(800,), kernel_regularizer=regularizers.l2(0.001)),
            layers.Dropout(0.5),
            layers.Dense(16, activation="relu", kernel_regularizer=regularizers.l1_l2(l1=0.001, l2=0.001)),
            layers.Dropout(0.5),
            layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["acc"])
        history = model.fit(x, y, epochs=3, batch_size=64, verbose=0, validation_split=0.2)
        results.append((model.get_weights(), history.history))
    for weights, hist in results[1:]:
        for i, (a, b) in enumerate(zip(results[0][0], weights)):
            assert_bitwise_equal(a, b, f"weight {i}")
        assert hist == results[0][1]
    assert results[0][1]["acc"][-1] > 0.5
