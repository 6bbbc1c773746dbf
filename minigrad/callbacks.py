"""Callbacks: hooks ``fit`` calls around training, epochs and batches (Keras semantics).

>>> class CountBatches(Callback):
...     def on_train_begin(self, logs=None): self.n = 0
...     def on_batch_end(self, batch, logs=None): self.n += 1
>>> cb = CountBatches()   # model.fit(x, y, callbacks=[cb]) -> cb.n == number of steps
"""
import csv
import inspect
import math
import os
import string
import sys
import warnings

import numpy as np

from .progress import Progbar


class Callback:
    """Base class; override any hook. ``self.model`` is set by ``fit``; ``self.params``
    holds ``epochs``, ``steps`` and ``verbose``. Logs are dicts of floats.

    >>> class PrintLoss(Callback):
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         print(f"epoch {epoch + 1}: loss {logs['loss']:.2f}")
    >>> PrintLoss().on_epoch_end(0, {"loss": 0.123})
    epoch 1: loss 0.12
    """

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_batch_begin(self, batch, logs=None): pass
    def on_batch_end(self, batch, logs=None): pass

    # Keras 3 names; fit calls these, and by default they are the on_batch_* hooks.
    def on_train_batch_begin(self, batch, logs=None): self.on_batch_begin(batch, logs)
    def on_train_batch_end(self, batch, logs=None): self.on_batch_end(batch, logs)


class CallbackList:
    """Calls each hook on every callback, in order."""

    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_model(model)
            cb.set_params(params)

    def __getattr__(self, hook):
        if hook.startswith("__"):
            raise AttributeError(hook)
        def call_all(*args):
            for cb in self.callbacks:
                getattr(cb, hook)(*args)
        setattr(self, hook, call_all)  # built once per hook (fit calls two per step)
        return call_all


class History(Callback):
    """Records the epoch logs: ``history.history["loss"]`` is one value per epoch.

    ``fit`` returns it (and sets ``model.history``). If a batch's loss was NaN or
    infinite, ``invalid_loss`` is ``{"epoch", "batch", "loss"}`` (0-based) of that
    batch, whose update was not applied; otherwise None.

    >>> h = History()
    >>> h.on_epoch_end(0, {"loss": 0.5, "accuracy": 0.9}); h.on_epoch_end(1, {"loss": 0.25, "accuracy": 0.95})
    >>> h.history["loss"], h.epoch
    ([0.5, 0.25], [0, 1])
    """

    def __init__(self):
        super().__init__()
        self.history, self.epoch = {}, []
        self.invalid_loss = None

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


class ProgbarLogger(Callback):
    """Prints ``Epoch i/n`` and the progress bar (added by ``fit`` when verbose > 0)."""

    def __init__(self, verbose=1, stream=None):
        super().__init__()
        self.verbose, self.stream = verbose, stream
        self.bar = None

    def _out(self):
        return self.stream or sys.stdout

    def on_epoch_begin(self, epoch, logs=None):
        out = self._out()
        out.write(f"Epoch {epoch + 1}/{self.params['epochs']}\n")
        out.flush()
        self.bar = Progbar(self.params["steps"], verbose=self.verbose, stream=out)

    def on_train_batch_end(self, batch, logs=None):
        # Never final here: the epoch's line waits for the validation values.
        self.bar.update(batch + 1, _display_order(logs), finalize=False)

    def on_epoch_end(self, epoch, logs=None):
        self.bar.update(self.params["steps"], _display_order(logs), finalize=True)

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()


def _display_order(logs):
    """Keras 3 order: training values alphabetically, then the val_ ones."""
    logs = logs or {}
    keys = sorted(logs, key=lambda k: (k.startswith("val_"), k))
    return {k: logs[k] for k in keys}


def _monitor_mode(mode, monitor, who):
    if not isinstance(monitor, str):
        raise TypeError(f"{who}: expected monitor to be the name of a log key such as 'val_loss', "
                        f"received {type(monitor).__name__}")
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{who}: expected mode 'auto', 'min' or 'max', received {mode!r}")
    if mode == "auto":
        mode = "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"
    return mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights=True`` the weights of the best epoch are put back
    when training ends. After training, ``stopped_epoch`` is the (0-based) epoch
    at which it stopped (0 if it did not), ``best_epoch`` the best one.

    >>> es = EarlyStopping(monitor="val_loss", patience=2)
    >>> es.mode
    'min'
    """

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
                 restore_best_weights=False):
        super().__init__()
        if not isinstance(patience, (int, np.integer)) or isinstance(patience, bool) or patience < 0:
            raise ValueError(f"EarlyStopping: expected patience to be a non-negative integer, "
                             f"received {patience!r}")
        self.monitor, self.patience, self.verbose = monitor, int(patience), verbose
        self.min_delta = abs(float(min_delta))
        self.mode = _monitor_mode(mode, monitor, "EarlyStopping")
        self.restore_best_weights = bool(restore_best_weights)
        self._reset()

    def _reset(self):
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights = None

    def _improved(self, current):
        if self.mode == "min":
            return current + self.min_delta < self.best
        return current - self.min_delta > self.best

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            print(f"EarlyStopping: monitor {self.monitor!r} is not in the logs "
                  f"(available: {sorted(logs or {})}); not stopping", file=sys.stderr)
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()  # so there is always something to restore
        self.wait += 1
        if self._improved(current):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model's weights (``.npz``, via ``save_weights``) after each epoch.

    ``filepath`` may hold ``{epoch:02d}`` and any log key (``{val_loss:.4f}``);
    epochs count from 1. With ``save_best_only=True`` a file is written only
    when ``monitor`` improves. ``include_optimizer=True`` also saves the
    optimizer's state, so that ``load_weights`` of a checkpoint resumes training
    exactly (see ``Sequential.save_weights``).

    >>> ckpt = ModelCheckpoint("weights_{epoch:02d}.npz", monitor="val_accuracy", save_best_only=True)
    >>> ckpt.mode
    'max'
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, mode="auto",
                 include_optimizer=False):
        super().__init__()
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(f"ModelCheckpoint: expected filepath to be a str or os.PathLike, "
                            f"received {type(filepath).__name__}")
        self.filepath = os.fspath(filepath)
        self.include_optimizer = bool(include_optimizer)
        self.monitor, self.verbose = monitor, verbose
        self.save_best_only = bool(save_best_only)
        self.mode = _monitor_mode(mode, monitor, "ModelCheckpoint")
        self.best = math.inf if self.mode == "min" else -math.inf
        try:
            self._fields = {f.split(".")[0].split("[")[0]
                            for _, f, _, _ in string.Formatter().parse(self.filepath) if f is not None}
        except ValueError as exc:
            raise ValueError(f"ModelCheckpoint: expected filepath to be a format pattern such as "
                             f"'weights_{{epoch:02d}}.npz', received {self.filepath!r} ({exc})") from None

    def on_train_begin(self, logs=None):
        # A pattern naming a key the logs will not have would fail only after the first
        # epoch's work; fit says which keys there will be (params["metrics"]).
        keys = self.params.get("metrics") if isinstance(self.params, dict) else None
        if keys is None:
            return
        available = {"epoch": 1, **{k: 0.5 for k in keys}}
        missing = sorted(f for f in self._fields if f not in available)
        if missing:
            raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r} names "
                             f"{', '.join(map(repr, missing))}, which the logs will not have; "
                             f"expected keys among {sorted(available)}")
        try:
            self.filepath.format(**available)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise ValueError(f"ModelCheckpoint: cannot format filepath {self.filepath!r} with "
                             f"the logs' values ({type(exc).__name__}: {exc})") from None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                print(f"ModelCheckpoint: can save best model only with {self.monitor!r} available "
                      f"in the logs (available: {sorted(logs)}); skipping", file=sys.stderr)
                return
            better = current < self.best if self.mode == "min" else current > self.best
            if not better:
                return
            if self.verbose > 0:
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                      f"{current:.5f}, saving model to {path}")
            self.best = current
        elif self.verbose > 0:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        self.model.save_weights(path, include_optimizer=self.include_optimizer)


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch's loss is NaN or infinite.

    ``fit`` itself already stops on such a batch (and, unlike Keras, does not apply
    its update); this callback stays for Keras compatibility and for custom
    ``train_step``s. It prints nothing when training is already stopping.

    >>> class Model: stop_training = False
    >>> cb = TerminateOnNaN(); cb.set_model(Model())
    >>> cb.on_batch_end(7, {"loss": float("nan")})
    Batch 7: Invalid loss, terminating training
    >>> cb.model.stop_training
    True
    """

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            if not getattr(self.model, "stop_training", False):
                print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


def _nonneg_int(cls, name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{cls}: expected {name} to be a non-negative integer, received {value!r}")
    return int(value)


def _positional_arity(fn):
    """How many positional arguments fn accepts (a large number for *args; 2 when unknown)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 1 << 30
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def _current_lr(optimizer):
    return float(optimizer.learning_rate)


class LearningRateScheduler(Callback):
    """At the start of each epoch, set the optimizer's learning rate to
    ``schedule(epoch, lr)`` (epoch from 0, lr the current rate; a one-argument
    ``schedule(epoch)`` is called as such). The value must be a float. At the
    end of each epoch, ``logs["learning_rate"]`` holds the rate (so History and
    CSVLogger record it, as in Keras 3). The optimizer must have a float
    learning rate (one built with a schedule refuses to be set: TypeError).

    >>> def halve_after_2(epoch, lr):
    ...     return lr if epoch < 2 else lr * 0.5
    >>> class Model: pass
    >>> from minigrad import optimizers
    >>> m = Model(); m.optimizer = optimizers.SGD(learning_rate=0.1)
    >>> cb = LearningRateScheduler(halve_after_2); cb.set_model(m)
    >>> for epoch in range(4): cb.on_epoch_begin(epoch)
    >>> m.optimizer.learning_rate    # halved at epochs 2 and 3
    0.025
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: expected schedule to be a callable "
                            f"schedule(epoch, lr) -> float, received {schedule!r}")
        self.schedule, self.verbose = schedule, verbose
        self._two_args = _positional_arity(schedule) >= 2

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        lr = self.schedule(epoch, _current_lr(optimizer)) if self._two_args else self.schedule(epoch)
        if not isinstance(lr, (float, np.floating)):
            raise ValueError(f"LearningRateScheduler: expected the schedule to return a float, "
                             f"received {lr!r} at epoch {epoch}")
        optimizer.learning_rate = float(lr)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(lr)}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = _current_lr(self.model.optimizer)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved
    (by more than ``min_delta``) for ``patience`` epochs, never going below
    ``min_lr``; then wait ``cooldown`` epochs before counting again. Keras 3
    semantics; ``logs["learning_rate"]`` holds the rate at each epoch's end
    (before any reduction made at that epoch).

    >>> class Model: pass
    >>> from minigrad import optimizers
    >>> m = Model(); m.optimizer = optimizers.SGD(learning_rate=0.1)
    >>> cb = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1); cb.set_model(m)
    >>> cb.on_train_begin()
    >>> for epoch, loss in enumerate([1.0, 0.5, 0.5]): cb.on_epoch_end(epoch, {"loss": loss})
    >>> m.optimizer.learning_rate
    0.05
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):
        super().__init__()
        cls = "ReduceLROnPlateau"
        ok = isinstance(factor, (int, float, np.integer, np.floating)) and not isinstance(factor, bool)
        if not ok or not 0.0 < float(factor) < 1.0:
            raise ValueError(f"{cls}: expected 0 < factor < 1, received {factor!r}")
        for name, value in (("min_delta", min_delta), ("min_lr", min_lr)):
            ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            if not ok or not math.isfinite(float(value)) or (name == "min_lr" and value < 0):
                raise ValueError(f"{cls}: expected {name} to be a finite number"
                                 f"{' >= 0' if name == 'min_lr' else ''}, received {value!r}")
        self.monitor, self.factor, self.verbose = monitor, float(factor), verbose
        self.patience = _nonneg_int(cls, "patience", patience)
        self.cooldown = _nonneg_int(cls, "cooldown", cooldown)
        self.min_delta, self.min_lr = abs(float(min_delta)), float(min_lr)
        self.mode = _monitor_mode(mode, monitor, cls)
        self._reset()

    def _reset(self):
        self.best, self.wait, self.cooldown_counter = None, 0, 0

    def _improved(self, current):
        if self.best is None:
            return True
        if self.mode == "min":
            return current + self.min_delta < self.best
        return current - self.min_delta > self.best

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        optimizer = self.model.optimizer
        logs["learning_rate"] = _current_lr(optimizer)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"ReduceLROnPlateau: monitor {self.monitor!r} is not in the logs "
                          f"(available: {sorted(logs)}); not reducing", stacklevel=2)
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(current):
            self.best, self.wait = current, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                old_lr = _current_lr(optimizer)
                # Keras compares against min_lr rounded to float32 (the rate's own precision)
                if old_lr > float(np.float32(self.min_lr)):
                    new_lr = max(old_lr * self.factor, self.min_lr)
                    optimizer.learning_rate = new_lr
                    if self.verbose > 0:
                        print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}.")
                    self.cooldown_counter, self.wait = self.cooldown, 0


class CSVLogger(Callback):
    """Write each epoch's logs as a CSV row (Keras 3 format): the columns are
    ``epoch`` (from 0), then the log keys in sorted order; without any ``val_``
    key, ``val_<key>`` columns follow (filled with ``NA`` while there is no
    validation), so a file keeps one header. The file is flushed after every
    row. ``append=True`` adds to an existing file (its header is kept).

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "log.csv")
    >>> cb = CSVLogger(path); cb.on_train_begin()
    >>> cb.on_epoch_end(0, {"loss": 0.5, "accuracy": 0.75}); cb.on_train_end()
    >>> print(open(path).read().strip())
    epoch,accuracy,loss,val_accuracy,val_loss
    0,0.75,0.5,NA,NA
    """

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename = os.fspath(filename)
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"CSVLogger: expected separator to be a one-character string, "
                             f"received {separator!r}")
        self.sep, self.append = separator, bool(append)
        self.keys = self.writer = self.csv_file = None
        self.append_header = True

    def on_train_begin(self, logs=None):
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                self.append_header = not f.readline()
        else:
            self.append_header = True
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        self.csv_file = open(self.filename, "a" if self.append else "w", newline="")
        self.keys = self.writer = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys += [f"val_{k}" for k in self.keys]
        if self.writer is None:
            dialect = type("MinigradCSV", (csv.excel,), {"delimiter": self.sep})
            self.writer = csv.DictWriter(self.csv_file, fieldnames=["epoch"] + self.keys, dialect=dialect)
            if self.append_header:
                self.writer.writeheader()
        row = {"epoch": epoch}
        row.update((k, _csv_value(logs.get(k, "NA"))) for k in self.keys)
        self.writer.writerow(row)
        self.csv_file.flush()

    def on_train_end(self, logs=None):
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        self.writer = None


def _csv_value(v):
    """A log value as Keras writes it: lists in brackets, scalars as they are."""
    if isinstance(v, str) or (isinstance(v, np.ndarray) and v.ndim == 0):
        return v
    if isinstance(v, (list, tuple, np.ndarray)):
        return f'"[{", ".join(map(str, v))}]"'
    return v


_LAMBDA_HOOKS = ("on_epoch_begin", "on_epoch_end", "on_train_begin", "on_train_end",
                 "on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")


class LambdaCallback(Callback):
    """A callback from plain functions, with Keras' signatures:
    ``on_epoch_begin(epoch, logs)``, ``on_epoch_end(epoch, logs)``,
    ``on_train_begin(logs)``, ``on_train_end(logs)``,
    ``on_train_batch_begin(batch, logs)``, ``on_train_batch_end(batch, logs)``
    (also ``on_batch_begin`` / ``on_batch_end``). ``logs`` is always a dict.

    >>> seen = []
    >>> cb = LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append((epoch, logs["loss"])))
    >>> cb.on_epoch_end(0, {"loss": 0.5}); seen
    [(0, 0.5)]
    """

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None,
                 on_train_batch_begin=None, on_train_batch_end=None, **kwargs):
        super().__init__()
        unknown = sorted(set(kwargs) - set(_LAMBDA_HOOKS))
        if unknown:
            raise TypeError(f"LambdaCallback: expected hooks among {list(_LAMBDA_HOOKS)}, "
                            f"received {unknown}")
        given = dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end,
                     on_train_begin=on_train_begin, on_train_end=on_train_end,
                     on_train_batch_begin=on_train_batch_begin, on_train_batch_end=on_train_batch_end,
                     **kwargs)
        for name, fn in given.items():
            if fn is None:
                continue
            if not callable(fn):
                raise TypeError(f"LambdaCallback: expected {name} to be callable, received {fn!r}")
            # bound per instance: fit calls some hooks without logs; the functions always get a dict
            if name in ("on_train_begin", "on_train_end"):
                setattr(self, name, lambda logs=None, _fn=fn: _fn(logs if logs is not None else {}))
            else:
                setattr(self, name, lambda i, logs=None, _fn=fn: _fn(i, logs if logs is not None else {}))
