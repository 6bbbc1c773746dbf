"""Sequential: batching, validation split, the training step against NumPy, evaluate/predict,
summary, weights I/O, reproducibility, errors that change nothing, progress output."""
import io
import re

import numpy as np
import pytest

import minigrad as mg
from minigrad import callbacks, layers, losses, metrics, models, optimizers, utils

F32 = np.float32


def toy_data(n=1000, features=20, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(F32)
    y = (x[:, :classes].argmax(axis=1)).astype(np.uint8)  # learnable
    return x, y


def toy_model(features=20, classes=3, hidden=16, loss="sparse_categorical_crossentropy",
              optimizer="rmsprop", metrics_=("accuracy",), seed=0):
    utils.set_random_seed(seed)
    model = models.Sequential([layers.Dense(hidden, activation="relu", input_shape=(features,)),
                               layers.Dense(classes, activation="softmax")])
    model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics_))
    return model


def spy_steps(model):
    """Record (x copy, y copy, loss) of every train_step (batches live in reused buffers)."""
    seen = []
    original = model.train_step

    def train_step(x, y):
        loss, out = original(x, y)
        seen.append((x.copy(), y.copy(), loss, out.copy()))
        return loss, out
    model.train_step = train_step
    return seen


class Recorder(callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.events = ["train_begin"]

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(("epoch_begin", epoch))

    def on_batch_end(self, batch, logs=None):
        self.events.append(("batch_end", batch))

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch_end", epoch, dict(logs)))

    def on_train_end(self, logs=None):
        self.events.append("train_end")


# ---------------------------------------------------------------- batching

@pytest.mark.parametrize("n, batch_size, steps, last", [(1000, 128, 8, 104), (60000, 128, 469, 96),
                                                       (100, None, 4, 4), (64, 64, 1, 64)])
def test_steps_per_epoch_and_last_batch(n, batch_size, steps, last):
    x, y = toy_data(n, features=2, classes=2)
    model = toy_model(features=2, classes=2, hidden=4)
    seen, rec = spy_steps(model), Recorder()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=[rec])
    sizes = [len(s[0]) for s in seen]
    assert len(sizes) == steps and sizes[-1] == last and sum(sizes) == n
    assert [e[1] for e in rec.events if e[0] == "batch_end"] == list(range(steps))


def test_shuffle_draws_a_fresh_permutation_each_epoch():
    x, y = toy_data(200, features=3)
    x[:, 0] = np.arange(200)  # sample id in feature 0
    model = toy_model(features=3)
    seen = spy_steps(model)
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    orders = [np.concatenate([s[0][:, 0] for s in seen[:4]]), np.concatenate([s[0][:, 0] for s in seen[4:]])]
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(200))
        ids = order.astype(int)
        np.testing.assert_array_equal(np.concatenate([s[1] for s in seen[:4]]) if order is orders[0]
                                      else np.concatenate([s[1] for s in seen[4:]]), y[ids])
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[0], np.arange(200))


def test_no_shuffle_keeps_order():
    x, y = toy_data(200, features=3)
    x[:, 0] = np.arange(200)
    model = toy_model(features=3)
    seen = spy_steps(model)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
    np.testing.assert_array_equal(np.concatenate([s[0][:, 0] for s in seen]), np.arange(200))


def test_validation_split_holds_out_the_last_fraction():
    x, y = toy_data(100, features=4)
    x[:, 3] = np.arange(100)
    model = toy_model(features=4)
    seen = spy_steps(model)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, validation_split=0.2)
    trained_on = np.concatenate([s[0][:, 3] for s in seen[:5]])
    np.testing.assert_array_equal(np.sort(trained_on), np.arange(80))  # never the last 20
    val_loss, val_acc = model.evaluate(x[80:], y[80:], batch_size=16, verbose=0)  # fit's batch size
    assert history.history["val_loss"][-1] == pytest.approx(val_loss, rel=1e-12)
    assert history.history["val_accuracy"][-1] == pytest.approx(val_acc, rel=1e-12)


def test_validation_data_and_history():
    x, y = toy_data(300)
    model = toy_model()
    history = model.fit(x[:200], y[:200], epochs=3, batch_size=50, verbose=0,
                        validation_data=(x[200:], y[200:]))
    assert model.history is history
    assert sorted(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert all(len(v) == 3 for v in history.history.values()) and history.epoch == [0, 1, 2]
    # validation runs with fit's batch size
    val_loss = model.evaluate(x[200:], y[200:], batch_size=50, verbose=0)[0]
    assert history.history["val_loss"][-1] == pytest.approx(val_loss, rel=1e-12)


def test_epoch_loss_and_accuracy_are_batch_size_weighted_means():
    x, y = toy_data(1000)
    model = toy_model()
    seen = spy_steps(model)
    history = model.fit(x, y, batch_size=128, epochs=1, verbose=0)
    sizes = np.array([len(s[0]) for s in seen])
    step_losses = np.array([s[2] for s in seen])
    correct = sum(int((s[3].argmax(axis=1) == s[1]).sum()) for s in seen)
    assert history.history["loss"][0] == pytest.approx((step_losses * sizes).sum() / sizes.sum(), rel=1e-12)
    assert history.history["accuracy"][0] == pytest.approx(correct / 1000, rel=1e-12)


# ---------------------------------------------------------------- the training step

def numpy_step(weights, x, y_onehot, lr=0.001, rho=0.9, eps=1e-7):
    """The book network's step in float64 NumPy: forward, softmax-CE, backward, RMSprop."""
    w1, b1, w2, b2 = [w.astype(np.float64) for w in weights]
    h = np.maximum(x @ w1 + b1, 0)
    z = h @ w2 + b2
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.mean(np.sum(y_onehot * np.log(p), axis=1))
    dz = (p - y_onehot) / len(x)
    dh = (dz @ w2.T) * (h > 0)
    grads = [x.T @ dh, dh.sum(axis=0), h.T @ dz, dz.sum(axis=0)]
    new = [w - lr * g / np.sqrt((1 - rho) * g * g + eps) for w, g in zip([w1, b1, w2, b2], grads)]
    return loss, new


@pytest.mark.parametrize("loss", ["categorical_crossentropy", "sparse_categorical_crossentropy"])
def test_one_fit_step_matches_numpy(loss):
    x, y = toy_data(64, features=5)
    model = toy_model(features=5, hidden=8, loss=loss)
    expected_loss, expected = numpy_step(model.get_weights(), x.astype(np.float64),
                                         utils.to_categorical(y, 3))
    targets = utils.to_categorical(y, 3) if loss == "categorical_crossentropy" else y
    history = model.fit(x, targets, batch_size=64, epochs=1, verbose=0, shuffle=False)
    assert history.history["loss"][0] == pytest.approx(expected_loss, rel=1e-5)
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_fit_is_bitwise_the_hand_written_loop():
    """One engine: fit == the same ops and optimizer driven by hand."""
    x, y = toy_data(300, features=6)
    fit_model = toy_model(features=6, seed=5)
    hand_model = toy_model(features=6, seed=5)
    fit_model.fit(x, y, batch_size=100, epochs=2, verbose=0, shuffle=False)

    (w1, b1), (w2, b2) = [(l.kernel, l.bias) for l in hand_model.layers]
    params = [w1, b1, w2, b2]
    opt = optimizers.RMSprop()
    for _ in range(2):
        for start in range(0, 300, 100):
            xb, yb = mg.Tensor(x[start:start + 100]), y[start:start + 100]
            logits = mg.dense(mg.dense(xb, w1, b1, "relu"), w2, b2)
            mg.softmax_cross_entropy(logits, yb).backward()
            opt.step(params)
            opt.zero_grad(params)
    for a, b in zip(fit_model.get_weights(), hand_model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_train_step_needs_no_input_gradient_and_clears_grads():
    x, y = toy_data(32)
    model = toy_model()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert all(w.grad is None for w in model.trainable_weights)


def test_custom_callable_loss_and_linear_output_from_logits():
    x, y = toy_data(500)
    utils.set_random_seed(1)
    model = models.Sequential([layers.Dense(16, activation="relu"), layers.Dense(3)])
    model.compile(optimizer=optimizers.Adam(0.01),
                  loss=losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[metrics.SparseCategoricalAccuracy()])
    h = model.fit(x, y, epochs=3, batch_size=50, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert "sparse_categorical_accuracy" in h.history

    custom = toy_model(loss=lambda yt, yp: losses.sparse_categorical_crossentropy(yt, yp))
    h = custom.fit(x, y, epochs=3, batch_size=50, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]


# ---------------------------------------------------------------- evaluate / predict

def test_evaluate_and_predict_match_numpy():
    x, y = toy_data(100)
    model = toy_model()
    model.fit(x, y, epochs=1, verbose=0)
    probs = model.predict(x, verbose=0)
    assert probs.dtype == np.float32 and probs.shape == (100, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)
    w1, b1, w2, b2 = [w.astype(np.float64) for w in model.get_weights()]
    z = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, p, rtol=1e-4, atol=1e-6)
    loss, acc = model.evaluate(x, y, verbose=0)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(100), y])), rel=1e-5)
    assert acc == np.mean(p.argmax(axis=1) == y)
    assert model.evaluate(x, y, verbose=0, return_dict=True) == {"accuracy": acc, "loss": loss}


def test_evaluate_without_metrics_returns_a_float():
    x, y = toy_data(50)
    model = toy_model(metrics_=())
    assert isinstance(model.evaluate(x, y, verbose=0), float)


def test_second_edition_form_builds_on_first_input():
    x, y = toy_data(256, features=12)
    model = models.Sequential([layers.Dense(32, activation="relu"), layers.Dense(3, activation="softmax")])
    assert not model.built
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y.astype(np.uint8), epochs=2, batch_size=64, verbose=0)
    assert model.built and model.count_params() == 12 * 32 + 32 + 32 * 3 + 3


# ---------------------------------------------------------------- summary

def test_summary_of_the_book_model(capsys):
    model = models.Sequential()
    model.add(layers.Dense(512, activation="relu", input_shape=(28 * 28,)))
    model.add(layers.Dense(10, activation="softmax"))
    model.summary()
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "(Dense)" in line]
    assert re.search(r"\(None, 512\)\s+│\s+401,920 │", rows[0])
    assert re.search(r"\(None, 10\)\s+│\s+5,130 │", rows[1])
    assert " Total params: 407,050 (1.55 MB)" in out
    assert " Trainable params: 407,050 (1.55 MB)" in out
    assert " Non-trainable params: 0 (0.00 B)" in out
    assert out.startswith(f'Model: "{model.name}"')


def test_summary_of_an_unbuilt_model(capsys):
    models.Sequential([layers.Dense(4)]).summary()
    assert "0 (unbuilt)" in capsys.readouterr().out


# ---------------------------------------------------------------- weights

def test_save_load_round_trip_is_bit_exact(tmp_path):
    x, y = toy_data(200)
    model = toy_model()
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "w.npz"
    model.save_weights(path)
    with np.load(path, allow_pickle=False) as f:
        assert sorted(f.files) == ["layer0/bias", "layer0/kernel", "layer1/bias", "layer1/kernel"]
    fresh = models.Sequential([layers.Dense(16, activation="relu"), layers.Dense(3, activation="softmax")])
    fresh.load_weights(path)  # unbuilt: builds from the file's shapes
    for a, b in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    other = toy_model(seed=9)
    other.load_weights(str(path))
    np.testing.assert_array_equal(other.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("make, match", [
    (lambda: models.Sequential([layers.Dense(17, activation="relu", input_shape=(20,)),
                                layers.Dense(3, activation="softmax")]),
     r'expected layer0/kernel \(layer "\w+"\) of shape \(20, 17\), received shape \(20, 16\)'),
    (lambda: models.Sequential([layers.Dense(3, activation="softmax", input_shape=(20,))]),
     r"different architecture: expected 2 arrays"),
])
def test_loading_another_architecture_fails_before_changing_weights(tmp_path, make, match):
    toy_model().save_weights(tmp_path / "w.npz")
    model = make()
    before = model.get_weights()
    with pytest.raises(ValueError, match=match):
        model.load_weights(tmp_path / "w.npz")
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_load_weights_rejects_a_plain_npy_file(tmp_path):
    np.save(tmp_path / "w.npy", np.zeros(3, F32))
    with pytest.raises(ValueError, match=r"expected an \.npz archive"):
        toy_model().load_weights(tmp_path / "w.npy")


def test_set_weights_checks_everything_first():
    model = toy_model()
    before = model.get_weights()
    bad = [w + 1 for w in before[:-1]] + [np.zeros(7, F32)]
    with pytest.raises(ValueError, match=r"weight 3 of shape \(3,\), received \(7,\)"):
        model.set_weights(bad)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.set_weights([w + 1 for w in before])
    np.testing.assert_array_equal(model.get_weights()[0], before[0] + 1)


def test_same_seed_gives_bitwise_identical_training():
    x, y = toy_data(500)
    runs = []
    for _ in range(2):
        model = toy_model(seed=42)
        h = model.fit(x, y, epochs=2, batch_size=64, verbose=0, validation_split=0.1)
        runs.append((model.get_weights(), h.history))
    for a, b in zip(runs[0][0], runs[1][0]):
        np.testing.assert_array_equal(a, b)
    assert runs[0][1] == runs[1][1]


def test_training_is_bitwise_identical_whatever_the_number_of_threads():
    x, y = toy_data(400)
    previous = mg.get_num_threads()
    weights = []
    try:
        for threads in (1, 2, 3):
            mg.set_num_threads(threads)
            model = toy_model(hidden=64, seed=7)
            model.fit(x, y, epochs=1, batch_size=64, verbose=0)
            weights.append(model.get_weights())
    finally:
        mg.set_num_threads(previous)
    for other in weights[1:]:
        for a, b in zip(weights[0], other):
            np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- errors

X, Y = toy_data(100)


@pytest.mark.parametrize("call, error, match", [
    (lambda m: m.fit(X, Y[:-1], verbose=0), ValueError, r"same number of samples.*100.*99"),
    (lambda m: m.fit(X[:, :5], Y, verbose=0), ValueError,
     r'Input 0 of layer "\w+" is incompatible with the layer: expected axis -1 of input shape to have '
     r"value 20, but received input with shape \(100, 5\)"),
    (lambda m: m.fit(X, np.where(Y == 0, 3, Y), verbose=0), ValueError, r"labels in \[0, 3\).*received 3"),
    (lambda m: m.fit(X, utils.to_categorical(Y, 3), verbose=0), ValueError, r"categorical_crossentropy"),
    (lambda m: m.fit(X, Y, epochs=0, verbose=0), ValueError, r"epochs to be a positive integer, received 0"),
    (lambda m: m.fit(X, Y, batch_size=-1, verbose=0), ValueError, r"batch_size.*received -1"),
    (lambda m: m.fit(X, Y, verbose=3), ValueError, r"verbose"),
    (lambda m: m.fit(X, Y, validation_split=1.0, verbose=0), ValueError, r"validation_split"),
    (lambda m: m.fit(X, Y, validation_data=(X, Y[:5]), verbose=0), ValueError,
     r"validation_data.*same number"),
    (lambda m: m.fit(X, Y, callbacks=[print], verbose=0), TypeError, r"Callback instances"),
    (lambda m: m.fit(X.astype(str), Y, verbose=0), TypeError, r"numeric"),
    (lambda m: m.evaluate(X[:, :3], Y, verbose=0), ValueError, r"expected axis -1"),
    (lambda m: m.compile(optimizer="adagrad", loss="sparse_categorical_crossentropy"), ValueError,
     r"Unknown optimizer 'adagrad'; expected one of \['adam', 'adamw', 'rmsprop', 'sgd'\]"),
    (lambda m: m.compile(loss="hinge"), ValueError,
     r"Unknown loss.*sparse_categorical_crossentropy"),
    (lambda m: m.compile(loss="categorical_crossentropy", metrics=["precision"]), ValueError,
     r"Unknown metric"),
])
def test_bad_calls_raise_before_any_weight_changes(call, error, match):
    model = toy_model()
    before = model.get_weights()
    with pytest.raises(error, match=match):
        call(model)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == 0


def test_fit_before_compile():
    model = models.Sequential([layers.Dense(2)])
    with pytest.raises(RuntimeError, match=r"compile\(\).*before fit\(\)"):
        model.fit(X, Y)


def test_nan_inputs_are_data_not_errors(capsys):
    # No exception: the NaN loss stops training and its update is not applied
    # (tests/test_hardening.py checks the exact weights).
    x = X.copy()
    x[3, 4] = np.nan
    model = toy_model()
    history = model.fit(x, Y, epochs=1, batch_size=50, verbose=0)
    assert history.invalid_loss is not None and "Invalid loss" in capsys.readouterr().out
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_keyboard_interrupt_leaves_whole_steps_and_propagates():
    x, y = toy_data(640)

    class Interrupt(Recorder):
        def on_batch_end(self, batch, logs=None):
            super().on_batch_end(batch, logs)
            if batch == 3:
                raise KeyboardInterrupt

    model, rec = toy_model(seed=3), Interrupt()
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=64, epochs=2, verbose=0, shuffle=False, callbacks=[rec])
    assert rec.events[-1] == "train_end"
    assert all(w.grad is None for w in model.trainable_weights)
    reference = toy_model(seed=3)  # exactly the 4 completed steps
    reference.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)  # and the model still trains


# ---------------------------------------------------------------- progress output

LINE_V2 = r"\d+/\d+ - \d+s - \d+(us|ms|s)/step - accuracy: \d\.\d{4} - loss: \d\.\d{4}"


def test_verbose_2_prints_one_line_per_epoch(capsys):
    x, y = toy_data(1000)
    toy_model().fit(x, y, batch_size=128, epochs=2, verbose=2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2"
    for line in (lines[1], lines[3]):
        assert re.fullmatch(r"8/8 - " + LINE_V2[len(r"\d+/\d+ - "):], line), line


def test_verbose_1_off_a_terminal_prints_only_the_final_bar(capsys):
    x, y = toy_data(1000)
    toy_model().fit(x, y, batch_size=128, epochs=2, verbose=1, validation_split=0.2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    bar = (r"7/7 ━{20} \d+s \d+(us|ms|s)/step - accuracy: \d\.\d{4} - loss: \d\.\d{4}"
           r" - val_accuracy: \d\.\d{4} - val_loss: \d\.\d{4}")
    assert re.fullmatch(bar, lines[1]), lines[1]
    assert "\r" not in lines[1]


def test_verbose_0_is_silent(capsys):
    x, y = toy_data(100)
    model = toy_model()
    model.fit(x, y, verbose=0)
    model.evaluate(x, y, verbose=0)
    model.predict(x, verbose=0)
    assert capsys.readouterr().out == ""


def test_evaluate_verbose_prints_a_bar(capsys):
    x, y = toy_data(100)
    toy_model().evaluate(x, y)  # verbose='auto' = 1; 100 / 32 -> 4 steps
    out = capsys.readouterr().out
    assert re.fullmatch(r"4/4 ━{20} \d+s \d+(us|ms|s)/step - accuracy: \d\.\d{4} - loss: \d\.\d{4}\n", out)


def test_progress_bar_on_a_terminal_redraws_in_place():
    from minigrad.progress import Progbar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    bar = Progbar(4, verbose=1, stream=out, interval=0.0)
    for step in range(1, 5):
        bar.update(step, {"loss": 1.0 / step})
    text = out.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n") and text.count("\n") == 1
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert re.search(r"\r1/4 ━{5}━{15} \d+s - loss: 1\.0000", plain)       # ETA while running
    assert re.search(r"\r4/4 ━{20} \d+s \d+(us|ms|s)/step - loss: 0\.2500 *\n$", plain)
