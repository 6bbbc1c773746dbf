"""Callbacks on scripted sequences of epoch logs, and inside fit."""
import numpy as np
import pytest

from minigrad import callbacks, layers, models, utils

F32 = np.float32


def small_model(seed=0):
    utils.set_random_seed(seed)
    model = models.Sequential([layers.Dense(4, activation="relu", input_shape=(3,)),
                               layers.Dense(2, activation="softmax")])
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def data(n=64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3)).astype(F32)
    return x, (x[:, 0] > 0).astype(np.int64)


class Script(callbacks.Callback):
    """Overwrites logs[key] with a scripted value each epoch (runs before the callbacks after it)."""

    def __init__(self, key, values):
        super().__init__()
        self.key, self.values = key, values

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


def run_scripted(cb, key, values):
    """Feed cb the scripted logs epoch by epoch, as fit would; return the epochs run."""
    model = small_model()
    cb.set_model(model)
    model.stop_training = False
    cb.on_train_begin()
    epochs = 0
    for epoch, value in enumerate(values):
        epochs += 1
        cb.on_epoch_end(epoch, {key: value})
        if model.stop_training:
            break
    cb.on_train_end()
    return epochs


@pytest.mark.parametrize("values, patience, min_delta, epochs_run", [
    ([1.0, 0.9, 0.95, 0.96, 0.5], 2, 0, 4),       # best at epoch 1, no gain at 2 and 3 -> stop after epoch 3
    ([1.0, 0.9, 0.95, 0.96, 0.5], 3, 0, 5),
    ([1.0, 0.9, 0.8, 0.7, 0.6], 1, 0, 5),           # always improving
    ([1.0, 0.97, 0.95, 0.9, 0.8], 2, 0.06, 3),      # gains under min_delta (0.03, 0.05) do not count
    ([1.0, 1.0, 1.0], 0, 0, 2),                     # patience 0: stop at the first non-improvement
])
def test_early_stopping_stops_at_the_right_epoch(values, patience, min_delta, epochs_run):
    es = callbacks.EarlyStopping(monitor="val_loss", patience=patience, min_delta=min_delta)
    assert run_scripted(es, "val_loss", values) == epochs_run
    assert es.stopped_epoch == (epochs_run - 1 if epochs_run < len(values) else 0)


def test_early_stopping_auto_mode_maximises_accuracy():
    es = callbacks.EarlyStopping(monitor="val_accuracy", patience=1)
    assert es.mode == "max"
    assert run_scripted(es, "val_accuracy", [0.5, 0.6, 0.55, 0.7]) == 3
    assert es.best == 0.6 and es.best_epoch == 1


def test_early_stopping_in_fit_restores_best_weights():
    x, y = data()
    model = small_model()
    snapshots = []

    class Snap(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(model.get_weights())

    es = callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    history = model.fit(x, y, epochs=10, batch_size=16, verbose=0,
                        callbacks=[Script("val_loss", [0.5, 0.3, 0.4, 0.45, 0.1, 0, 0, 0, 0, 0]), Snap(), es])
    assert len(history.history["loss"]) == 4 and es.stopped_epoch == 3
    assert history.history["val_loss"] == [0.5, 0.3, 0.4, 0.45]
    for a, b in zip(model.get_weights(), snapshots[1]):   # epoch 1 was the best
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(snapshots[1][0], snapshots[3][0])


def test_early_stopping_on_a_missing_key_does_not_stop(capsys):
    x, y = data()
    history = small_model().fit(x, y, epochs=3, verbose=0, callbacks=[callbacks.EarlyStopping(patience=0)])
    assert len(history.history["loss"]) == 3  # no val_loss without validation data
    assert "val_loss" in capsys.readouterr().err


def test_model_checkpoint_save_best_only_writes_on_improvement(tmp_path):
    x, y = data()
    model = small_model()
    saved = {}

    class Snap(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            saved[epoch + 1] = model.get_weights()

    ckpt = callbacks.ModelCheckpoint(str(tmp_path / "w_{epoch:02d}.npz"), monitor="val_loss",
                                     save_best_only=True)
    model.fit(x, y, epochs=5, batch_size=16, verbose=0,
              callbacks=[Script("val_loss", [1.0, 0.8, 0.9, 0.7, 0.7]), Snap(), ckpt])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w_01.npz", "w_02.npz", "w_04.npz"]
    restored = small_model(seed=1)
    restored.load_weights(tmp_path / "w_04.npz")
    for a, b in zip(restored.get_weights(), saved[4]):
        np.testing.assert_array_equal(a, b)


def test_model_checkpoint_every_epoch_with_log_values_in_the_name(tmp_path):
    x, y = data()
    ckpt = callbacks.ModelCheckpoint(tmp_path / "e{epoch:02d}-{loss:.2f}.npz")
    small_model().fit(x, y, epochs=3, verbose=0, callbacks=[ckpt])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert [n[:4] for n in names] == ["e01-", "e02-", "e03-"]


def test_terminate_on_nan_stops_after_the_bad_batch(capsys):
    x, y = data()
    x[0, 0] = np.inf  # the first (unshuffled) batch produces a NaN loss
    rec = []

    class Count(callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            rec.append(batch)

    history = small_model().fit(x, y, epochs=3, batch_size=16, verbose=0, shuffle=False,
                                callbacks=[Count(), callbacks.TerminateOnNaN()])
    assert rec == [0] and len(history.history["loss"]) == 1
    assert "Invalid loss" in capsys.readouterr().out


def test_callback_hooks_order_and_params():
    x, y = data(40)
    events = []

    class Log(callbacks.Callback):
        def on_train_begin(self, logs=None): events.append(("train_begin", self.params))
        def on_epoch_begin(self, epoch, logs=None): events.append(("epoch_begin", epoch))
        def on_batch_begin(self, batch, logs=None): events.append(("batch_begin", batch))
        def on_batch_end(self, batch, logs=None): events.append(("batch_end", batch, sorted(logs)))
        def on_epoch_end(self, epoch, logs=None): events.append(("epoch_end", epoch))
        def on_train_end(self, logs=None): events.append(("train_end",))

    model = small_model()
    cb = Log()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[cb])
    assert cb.model is model
    assert events == [("train_begin", {"epochs": 1, "steps": 2, "verbose": 0,
                                     "metrics": ["loss", "accuracy"]}), ("epoch_begin", 0),
                      ("batch_begin", 0), ("batch_end", 0, ["accuracy", "loss"]),
                      ("batch_begin", 1), ("batch_end", 1, ["accuracy", "loss"]),
                      ("epoch_end", 0), ("train_end",)]
