"""LearningRateScheduler, ReduceLROnPlateau, CSVLogger and LambdaCallback: scripted log
sequences and real fits."""
import csv

import numpy as np
import pytest

import minigrad as mg
from minigrad import callbacks, layers, models, optimizers, utils

F32 = np.float32


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3)).astype(F32)
    return x, (x[:, 0] > 0).astype(np.int64)


def small_model(optimizer=None, seed=0):
    utils.set_random_seed(seed)
    model = models.Sequential([layers.Dense(4, activation="relu", input_shape=(3,)),
                               layers.Dense(2, activation="softmax")])
    model.compile(optimizer=optimizer or optimizers.SGD(learning_rate=0.1),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class FakeModel:
    def __init__(self, lr=0.1):
        self.optimizer = optimizers.SGD(learning_rate=lr)
        self.stop_training = False


# ---------------------------------------------------------------- ReduceLROnPlateau

def scripted_plateau(cb, values, key="val_loss", lr=0.1):
    """Feed cb one epoch's logs per value, as fit does; return (logged rates, final rate)."""
    model = FakeModel(lr)
    cb.set_model(model)
    cb.on_train_begin()
    logged = []
    for epoch, value in enumerate(values):
        logs = {key: value}
        cb.on_epoch_end(epoch, logs)
        logged.append(logs["learning_rate"])
    return logged, model.optimizer.learning_rate


def test_reduce_lr_on_plateau_scripted_sequence():
    # best 0.9 at epoch 1; no gain at 2, 3 -> reduce at 3 (patience 2), cooldown 1 at 4
    # (wait restarts, and counts again once the cooldown is over), reduce at 5, 7, 9
    # (0.1 -> 0.05 -> 0.025 -> 0.0125 -> max(0.00625, min_lr 0.01)); 0.5 improves at 10.
    cb = callbacks.ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.01)
    values = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0, 1.1, 1.2, 0.5, 0.6]
    logged, final = scripted_plateau(cb, values)
    assert logged == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125,
                                    0.01, 0.01])
    assert final == pytest.approx(0.01)
    assert cb.best == 0.5 and cb.wait == 1


def test_reduce_lr_on_plateau_min_delta_and_max_mode():
    # gains of 0.05 < min_delta 0.1 are not improvements: reduce after 2 epochs
    cb = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2, min_delta=0.1)
    _, final = scripted_plateau(cb, [1.0, 0.95, 0.9], key="loss")
    assert final == pytest.approx(0.05)
    # accuracy is maximised in auto mode: rising values never reduce, falling ones do
    cb = callbacks.ReduceLROnPlateau(monitor="val_accuracy", patience=1)
    assert cb.mode == "max"
    assert scripted_plateau(cb, [0.5, 0.6, 0.7], key="val_accuracy")[1] == pytest.approx(0.1)
    assert scripted_plateau(cb, [0.7, 0.6], key="val_accuracy")[1] == pytest.approx(0.01)


def test_reduce_lr_on_plateau_missing_monitor_warns_and_keeps_rate():
    cb = callbacks.ReduceLROnPlateau(patience=0)
    with pytest.warns(UserWarning, match="ReduceLROnPlateau: monitor 'val_loss' is not in the logs"):
        _, final = scripted_plateau(cb, [1.0, 2.0], key="loss")
    assert final == 0.1


def test_reduce_lr_on_plateau_in_fit_logs_the_rate():
    x, y = data()
    model = small_model()
    # epoch 0 sets the best; no later loss improves by 10.0, so the rate is reduced at the
    # end of epochs 2 and 4 (the logs hold the rate the epoch trained with)
    cb = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2, min_delta=10.0)
    history = model.fit(x, y, epochs=5, batch_size=32, verbose=0, callbacks=[cb])
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05])
    assert model.optimizer.learning_rate == pytest.approx(0.025)


# ---------------------------------------------------------------- LearningRateScheduler

def test_learning_rate_scheduler_changes_the_rate_at_the_right_epochs():
    x, y = data()
    model = small_model()
    seen = []   # the rate each batch's update reads
    watch = callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: seen.append(model.optimizer.learning_rate))
    sched = callbacks.LearningRateScheduler(lambda epoch, lr: lr if epoch < 2 else lr * 0.5)
    history = model.fit(x, y, epochs=4, batch_size=32, verbose=0, callbacks=[sched, watch])
    assert seen == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05, 0.025])


def test_learning_rate_scheduler_rates_reach_the_replayed_step():
    """fit with a per-epoch rate == a hand-written loop using the same rates."""
    x, y = data(64)
    fit_model = small_model()
    rates = {0: 0.3, 1: 0.05, 2: 0.2}
    sched = callbacks.LearningRateScheduler(lambda epoch: rates[epoch], verbose=0)   # Keras' one-argument form
    fit_model.fit(x, y, epochs=3, batch_size=32, verbose=0, shuffle=False, callbacks=[sched])

    hand = small_model()
    (w1, b1), (w2, b2) = [(l.kernel, l.bias) for l in hand.layers]
    params, opt = [w1, b1, w2, b2], hand.optimizer
    for epoch in range(3):
        opt.learning_rate = rates[epoch]
        for start in (0, 32):
            logits = mg.dense(mg.dense(mg.Tensor(x[start:start + 32]), w1, b1, "relu"), w2, b2)
            mg.softmax_cross_entropy(logits, y[start:start + 32]).backward()
            opt.step(params)
            opt.zero_grad(params)
    for a, b in zip(fit_model.get_weights(), hand.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_learning_rate_scheduler_verbose_message(capsys):
    cb = callbacks.LearningRateScheduler(lambda epoch, lr: 0.02, verbose=1)
    cb.set_model(FakeModel())
    cb.on_epoch_begin(4)
    assert "Epoch 5: LearningRateScheduler setting learning rate to 0.02." in capsys.readouterr().out


@pytest.mark.parametrize("make, exc, match", [
    (lambda: callbacks.LearningRateScheduler(0.1), TypeError,
     r"LearningRateScheduler: expected schedule to be a callable .*received 0.1"),
    (lambda: callbacks.ReduceLROnPlateau(factor=1.0), ValueError,
     r"ReduceLROnPlateau: expected 0 < factor < 1, received 1.0"),
    (lambda: callbacks.ReduceLROnPlateau(patience=-1), ValueError,
     r"ReduceLROnPlateau: expected patience to be a non-negative integer, received -1"),
    (lambda: callbacks.ReduceLROnPlateau(cooldown=1.5), ValueError,
     r"ReduceLROnPlateau: expected cooldown to be a non-negative integer, received 1.5"),
    (lambda: callbacks.ReduceLROnPlateau(min_lr=-1.0), ValueError,
     r"ReduceLROnPlateau: expected min_lr to be a finite number >= 0, received -1.0"),
    (lambda: callbacks.ReduceLROnPlateau(mode="up"), ValueError,
     r"ReduceLROnPlateau: expected mode 'auto', 'min' or 'max', received 'up'"),
    (lambda: callbacks.CSVLogger("x.csv", separator=";;"), ValueError,
     r"CSVLogger: expected separator to be a one-character string, received ';;'"),
    (lambda: callbacks.LambdaCallback(on_epoch_end=3), TypeError,
     r"LambdaCallback: expected on_epoch_end to be callable, received 3"),
    (lambda: callbacks.LambdaCallback(on_epoch_ende=print), TypeError,
     r"LambdaCallback: expected hooks among .*received \['on_epoch_ende'\]"),
])
def test_bad_callback_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_learning_rate_scheduler_rejects_a_non_float_rate():
    cb = callbacks.LearningRateScheduler(lambda epoch, lr: 1)
    cb.set_model(FakeModel())
    with pytest.raises(ValueError, match=r"LearningRateScheduler: expected the schedule to return a "
                                         r"float, received 1 at epoch 0"):
        cb.on_epoch_begin(0)


def test_rate_of_a_schedule_optimizer_is_not_settable_by_callbacks():
    model = FakeModel()
    model.optimizer = optimizers.SGD(learning_rate=optimizers.schedules.ExponentialDecay(0.1, 10, 0.5))
    cb = callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    cb.set_model(model)
    with pytest.raises(TypeError, match="SGD: expected a LearningRateSchedule or callable"):
        cb.on_epoch_begin(0)


# ---------------------------------------------------------------- CSVLogger

def read_rows(path, sep=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=sep))


def test_csv_logger_columns_and_values_in_fit(tmp_path):
    x, y = data(80)
    path = tmp_path / "log.csv"
    model = small_model()
    rows_at_epoch_end = []
    # after the logger in the list: the row of this epoch must already be on disk
    peek = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: rows_at_epoch_end.append(len(read_rows(path))))
    history = model.fit(x[:64], y[:64], epochs=3, batch_size=32, verbose=0,
                        validation_data=(x[64:], y[64:]), callbacks=[callbacks.CSVLogger(path), peek])
    rows = read_rows(path)
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    for key in ("accuracy", "loss", "val_accuracy", "val_loss"):
        col = rows[0].index(key)
        assert [float(r[col]) for r in rows[1:]] == history.history[key]   # written exactly (repr)
    assert rows_at_epoch_end == [2, 3, 4]


def test_csv_logger_without_validation_and_append(tmp_path):
    path = tmp_path / "log.csv"
    cb = callbacks.CSVLogger(path, separator=";")
    cb.on_train_begin()
    cb.on_epoch_end(0, {"loss": 0.5, "learning_rate": 0.01})
    cb.on_train_end()
    assert read_rows(path, ";") == [["epoch", "learning_rate", "loss", "val_learning_rate", "val_loss"],
                                    ["0", "0.01", "0.5", "NA", "NA"]]
    again = callbacks.CSVLogger(path, separator=";", append=True)
    again.on_train_begin()
    again.on_epoch_end(0, {"loss": 0.25, "learning_rate": 0.01})
    again.on_train_end()
    rows = read_rows(path, ";")
    assert len(rows) == 3 and rows[2] == ["0", "0.01", "0.25", "NA", "NA"]   # no second header
    fresh = callbacks.CSVLogger(path)   # append=False starts the file over
    fresh.on_train_begin()
    fresh.on_epoch_end(0, {"loss": 1.0})
    fresh.on_train_end()
    assert read_rows(path) == [["epoch", "loss", "val_loss"], ["0", "1.0", "NA"]]


# ---------------------------------------------------------------- LambdaCallback

def test_lambda_callback_calls_every_hook_with_keras_signatures():
    x, y = data(40)
    events = []
    cb = callbacks.LambdaCallback(
        on_train_begin=lambda logs: events.append(("train_begin", logs)),
        on_epoch_begin=lambda epoch, logs: events.append(("epoch_begin", epoch, logs)),
        on_train_batch_begin=lambda batch, logs: events.append(("batch_begin", batch)),
        on_train_batch_end=lambda batch, logs: events.append(("batch_end", batch, sorted(logs))),
        on_epoch_end=lambda epoch, logs: events.append(("epoch_end", epoch, sorted(logs))),
        on_train_end=lambda logs: events.append(("train_end", sorted(logs))))
    small_model().fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[cb])
    batch = [("batch_begin", 0), ("batch_end", 0, ["accuracy", "loss"]),
             ("batch_begin", 1), ("batch_end", 1, ["accuracy", "loss"])]
    assert events == ([("train_begin", {}), ("epoch_begin", 0, {})] + batch
                      + [("epoch_end", 0, ["accuracy", "loss"]), ("epoch_begin", 1, {})] + batch
                      + [("epoch_end", 1, ["accuracy", "loss"]), ("train_end", ["accuracy", "loss"])])


def test_lambda_callback_can_stop_training_and_leaves_other_hooks_alone():
    x, y = data(40)
    model = small_model()

    def stop(epoch, logs):
        model.stop_training = epoch == 1
    history = model.fit(x, y, epochs=5, batch_size=32, verbose=0,
                        callbacks=[callbacks.LambdaCallback(on_epoch_end=stop)])
    assert history.epoch == [0, 1]
    batches = []
    cb = callbacks.LambdaCallback(on_batch_end=lambda batch, logs: batches.append(batch))
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[cb])   # Keras' older hook name
    assert batches == [0, 1]
