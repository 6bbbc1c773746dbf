"""Callbacks: hooks ``fit`` calls around training, epochs and batches (Keras semantics).

>>> class CountBatches(Callback):
...     def on_train_begin(self, logs=None): self.n = 0
...     def on_batch_end(self, batch, logs=None): self.n += 1
>>> cb = CountBatches()   # model.fit(x, y, callbacks=[cb]) -> cb.n == number of steps
"""
import math
import os
import string
import sys

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
