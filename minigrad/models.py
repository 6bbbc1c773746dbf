"""Sequential: a stack of layers with Keras' compile / fit / evaluate / predict.

It runs on the same Tensor, ops and optimizers a hand-written loop uses: fit's
step is a plain function of the batch (forward, loss, backward, one optimizer
call) run through ``mg.jit``, so after the first batch of each shape it replays
the recorded kernel calls, for any model.

>>> import numpy as np
>>> from minigrad import models, layers, utils
>>> utils.set_random_seed(0)
>>> model = models.Sequential([layers.Dense(8, activation="relu"), layers.Dense(2, activation="softmax")])
>>> model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
>>> x = np.random.default_rng(0).random((64, 3), dtype=np.float32); y = (x[:, 0] > 0.5).astype(np.uint8)
>>> history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
>>> sorted(history.history)
['accuracy', 'loss']
>>> model.predict(x[:3], verbose=0).shape
(3, 2)
"""
import copy
import inspect
import json
import math
import numbers
import os
import sys
import warnings

import numpy as np

from . import activations, regularizers
from . import callbacks as callbacks_module
from . import losses as losses_module
from . import metrics as metrics_module
from . import optimizers as optimizers_module
from . import kernels, utils
from .function import no_grad
from .jit import Jitted, NonFiniteLoss, stop_if_not_finite
from .kernels import tape
from .layers import InputLayer, Layer, normalize_input_shape, unique_name
from .progress import Progbar
from .saving import (CONFIG_KEY as _CONFIG_KEY, OPT_ITERATIONS as _OPT_ITERATIONS,
                     OPT_PREFIX as _OPT_PREFIX, NpzReader as _NpzReader,
                     check_float_header as _check_float_header, write_npz)
from .tensor import Tensor

_F32 = np.dtype(np.float32)


def _positive_int(value, name, where):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{where}: expected {name} to be a positive integer, received {value!r}")
    return int(value)


def _verbose(value, where):
    if value == "auto":
        return 1
    if isinstance(value, bool) or value not in (0, 1, 2):
        raise ValueError(f"{where}: expected verbose to be 'auto', 0, 1 or 2, received {value!r}")
    return int(value)


def _path(filepath, where):
    try:
        return os.fspath(filepath)
    except TypeError:
        raise TypeError(f"{where}: expected a file path (str or os.PathLike), "
                        f"received {type(filepath).__name__}") from None


def _numeric(x, name, where):
    try:
        x = x.data if isinstance(x, Tensor) else np.asarray(kernels.plain_array(where, name, x))
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"{where}: expected {name} to be a rectangular numeric array, "
                         f"received {type(x).__name__} ({exc})") from None
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{where}: expected {name} to be numeric, received dtype {x.dtype}")
    return x


def _aligned(x, dtype):
    """x as a C-contiguous, aligned array of dtype (a copy only when it is not one):
    fit's batches are gathered by C, which reads the rows in place."""
    x = np.ascontiguousarray(x, dtype=dtype)
    return x if x.flags.aligned else x.copy()


class Sequential:
    """A linear stack of layers.

    Build it from a list or with ``add``; it builds its weights as soon as the
    input shape is known (``input_shape`` on the first layer) or on the first data.

    >>> from minigrad import models, layers
    >>> model = models.Sequential()
    >>> model.add(layers.Dense(512, activation="relu", input_shape=(28 * 28,)))
    >>> model.add(layers.Dense(10, activation="softmax"))
    >>> model.count_params()
    407050
    """

    def __setattr__(self, name, value):
        # fit's recorded step read the model's optimizer, loss and layers when it was
        # captured (not stop_training, history...: those change while fit replays)
        if name in ("optimizer", "loss", "_layers", "_input_shape"):
            tape.changed()
        object.__setattr__(self, name, value)

    def __init__(self, layers=None, name=None):
        self.name = name or unique_name("sequential")
        self._layers = []
        self._input_shape = None
        self.optimizer = self.loss = None
        self._metric_ids = []
        self.compiled = False
        self.stop_training = False
        self.history = None
        if layers is not None and not isinstance(layers, (list, tuple)):
            raise TypeError(f"Sequential: expected layers to be a list of Layer instances, "
                            f"received {type(layers).__name__}")
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------ structure
    @property
    def layers(self):
        return list(self._layers)

    def add(self, layer):
        """Append a layer (and build it if the model's input shape is known)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a Layer instance, received {type(layer).__name__}")
        if isinstance(layer, InputLayer):
            if self._layers or self._input_shape is not None:
                raise ValueError("Sequential.add: Input(shape=...) can only be the first element")
            self._input_shape = layer.shape
            return
        if any(layer is other for other in self._layers):
            raise ValueError(f'Sequential.add: layer "{layer.name}" is already in the model')
        if any(layer.name == other.name for other in self._layers):
            raise ValueError(f'Sequential.add: all layer names should be unique; "{layer.name}" '
                             f"is already used")
        self._layers.append(layer)
        tape.changed()
        if len(self._layers) == 1 and layer.input_shape is not None:
            self._input_shape = layer.input_shape
        if self._input_shape is not None:
            self._build_layers(self._input_shape)

    def _build_layers(self, input_shape):
        shape = input_shape
        for layer in self._layers:
            if not layer.built:
                layer._ensure_built(shape)
            else:
                layer.check_input_shape((None,) + tuple(shape))
            shape = layer.compute_output_shape(shape)

    def build(self, input_shape):
        """Create all weights for per-sample ``input_shape`` ((784,) or (None, 784))."""
        if not self._layers:
            raise ValueError("Sequential.build: the model has no layers; add some first")
        self._input_shape = normalize_input_shape(input_shape, "Sequential.build")
        self._build_layers(self._input_shape)

    @property
    def built(self):
        return bool(self._layers) and all(layer.built for layer in self._layers)

    def _output_shapes(self):
        shapes, shape = [], self._input_shape
        for layer in self._layers:
            shape = None if shape is None else layer.compute_output_shape(shape)
            shapes.append(shape)
        return shapes

    @property
    def weights(self):
        return [t for layer in self._layers for t in layer.weights]

    @property
    def trainable_weights(self):
        return [t for layer in self._layers for t in layer.trainable_weights]

    @property
    def non_trainable_weights(self):
        return [t for layer in self._layers for t in layer.non_trainable_weights]

    def count_params(self):
        return sum(layer.count_params() for layer in self._layers)

    # ------------------------------------------------------------ forward
    def _forward(self, x, training=None, pre_activation=False):
        """The layers applied to Tensor x; with pre_activation=True the last layer's
        activation is left out (the loss takes it fused)."""
        for layer in self._layers[:-1]:
            x = layer(x, training=training)
        last = self._layers[-1]
        if pre_activation:
            last.check_input_shape(x.shape)
            return last.call_pre_activation(x)
        return last(x, training=training)

    def __call__(self, x, training=None):
        """Forward pass as a Tensor (graph recorded), for hand-written loops."""
        x = x if isinstance(x, Tensor) else Tensor(self._inputs(x, "Sequential.__call__"))
        if not self.built:
            self._check_ndim(x.shape)
            self.build(x.shape[1:])
        return self._forward(x, training=training)

    def _check_ndim(self, shape):
        expected = getattr(self._layers[0], "input_ndim", 2)
        if self._input_shape is not None:
            expected = len(self._input_shape) + 1
        if len(shape) != expected:
            raise ValueError(f'Input 0 of layer "{self._layers[0].name}" is incompatible with the '
                             f"layer: expected ndim={expected}, found ndim={len(shape)}. "
                             f"Full shape received: {tuple(shape)}")

    def _inputs(self, x, where):
        """x as C-contiguous float32, checked against (or building) the model's input shape."""
        if not self._layers:
            raise ValueError(f"{where}: the model has no layers; add some first")
        if x is None:
            raise ValueError(f"{where}: expected input data x, received None")
        x = _numeric(x, "x", where)
        self._check_ndim(x.shape)
        if not self.built or self._input_shape is None:
            self.build(x.shape[1:])
        self._layers[0].check_input_shape(x.shape)
        return _aligned(x, _F32)

    @property
    def _fused(self):
        """Train on the last layer's pre-activation output when the loss takes that
        activation fused (softmax + cross-entropy, as TensorFlow does)."""
        last = self._layers[-1] if self._layers else None
        fuses_with = getattr(self.loss, "fuses_with", None)
        return (fuses_with is not None and hasattr(last, "call_pre_activation")
                and activations.name_of(getattr(last, "activation", None)) == fuses_with)

    def _compute_loss(self, y, out, fused, sample_weight=None):
        """(loss with the layers' weight penalties, the model's prediction). With fused,
        out is the last layer's pre-activation output and the prediction is the
        activation the fused loss kernel computed."""
        probs = []
        if fused:
            loss = self.loss.on_pre_activation(y, out, sample_weight, probs)
            pred = Tensor._wrap(probs[0], False) if probs else out
        elif isinstance(self.loss, losses_module.Loss):
            loss, pred = self.loss(y, out, sample_weight), out
        else:
            loss, pred = self._user_loss(y, out, sample_weight), out
        for layer in self._layers:
            for penalty in layer.regularization_losses():
                loss = loss + penalty
        return loss, pred

    def _user_loss(self, y, out, sample_weight):
        name = getattr(self.loss, "__name__", repr(self.loss))
        loss = self.loss(y, out)
        if not isinstance(loss, Tensor):
            raise TypeError(f"loss {name!r} (given to compile): expected it to return a scalar "
                            f"Tensor (or one value per sample) computed with minigrad ops (so "
                            f"that it has a gradient), received {type(loss).__name__}")
        if loss.ndim == 0:
            if sample_weight is not None:
                raise ValueError(f"the loss {name!r} returned a scalar, so it cannot be "
                                 f"weighted per sample; return one value per sample")
            return loss
        if loss.shape[0] != out.shape[0]:
            raise ValueError(f"the loss {name!r} returned shape {loss.shape}; expected a "
                             f"scalar or one value per sample ({out.shape[0]})")
        per_sample = loss.mean(axis=tuple(range(1, loss.ndim))) if loss.ndim > 1 else loss
        return losses_module._reduce(per_sample, sample_weight)

    # ------------------------------------------------------------ compile
    def compile(self, optimizer="rmsprop", loss=None, metrics=None):
        """Choose the optimizer, loss and metrics (names or objects)."""
        if loss is None:
            raise ValueError("compile: expected a loss, e.g. loss='categorical_crossentropy'")
        optimizer = optimizers_module.get(optimizer)
        loss = losses_module.get(loss)
        if metrics is None:
            metrics = []
        elif isinstance(metrics, (str, metrics_module.Metric)):
            metrics = [metrics]
        elif not isinstance(metrics, (list, tuple)):
            raise TypeError(f"compile: expected metrics to be a list, received {type(metrics).__name__}")
        names = []
        for m in metrics:
            metrics_module.check(m)
            name = metrics_module.get(m, sparse_targets=False).name if not (
                isinstance(m, str) and m.lower() in ("accuracy", "acc")) else m
            if name in names or name == "loss":
                raise ValueError(f"compile: expected metrics with distinct names (they are the "
                                 f"keys of the logs and of History), received {name!r} twice"
                                 if name != "loss" else "compile: a metric may not be named 'loss'")
            names.append(name)
        self.optimizer, self.loss, self._metric_ids = optimizer, loss, list(metrics)
        self.compiled = True

    def _require_compiled(self, where):
        if not self.compiled:
            raise RuntimeError(f"You must call compile() on the model before {where}().")

    def _make_metrics(self, y, fresh=False):
        # "accuracy" as Keras resolves it: binary for one output unit or a binary
        # cross-entropy, sparse for integer labels, categorical for one-hot rows
        output = self._output_shapes()[-1]
        binary = (isinstance(self.loss, losses_module.BinaryCrossentropy)
                  or (output is not None and tuple(output[-1:]) == (1,)))
        sparse = y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1 and y.dtype.kind in "iu")
        out = []
        for ident in self._metric_ids:
            m = metrics_module.get(ident, sparse_targets=sparse, binary=binary)
            out.append(copy.copy(m) if fresh and m is ident else m)
        for m in out:
            m.reset_state()
        return out

    def _targets(self, y, where):
        """y validated once for the whole data set (range, width) and converted for the loss."""
        if y is None:
            raise ValueError(f"{where}: expected targets y, received None")
        y = _numeric(y, "y", where)
        if isinstance(self.loss, losses_module.Loss):
            return self.loss.targets(y, self._output_shapes()[-1])
        return _aligned(y, np.int64 if y.dtype.kind in "iub" else _F32)

    def _data(self, x, y, where):
        x = self._inputs(x, where)
        y = self._targets(y, where)
        if len(x) != len(y):
            raise ValueError(f"{where}: expected x and y to have the same number of samples, "
                             f"received x with {len(x)} and y with {len(y)}")
        return x, y

    # ------------------------------------------------------------ training
    def _train_batch(self, x, y, sample_weight=None):
        """One training step as a plain function of the batch (what mg.jit records):
        forward with training=True, the loss, a stop before backward if it is not
        finite, backward, ONE optimizer call for every trainable weight. Returns
        (loss, the model's prediction)."""
        fused = self._fused
        out = self._forward(Tensor(x), training=True, pre_activation=fused)
        loss, pred = self._compute_loss(y, out, fused, sample_weight)
        stop_if_not_finite(loss)
        loss.backward()
        params = self.trainable_weights
        self.optimizer.step(params)
        self.optimizer.zero_grad(params)
        return loss, pred

    def _test_batch(self, x, y, sample_weight=None):
        fused = self._fused
        out = self._forward(Tensor(x), training=False, pre_activation=fused)
        return self._compute_loss(y, out, fused, sample_weight)

    def _predict_batch(self, x):
        return self._forward(Tensor(x), training=False)

    def _step_function(self, kind):
        """The model's jitted step functions, made once: 'fit' borrows fit's batch
        buffers (their views are stable), the others copy their inputs."""
        functions = self.__dict__.get("_step_functions")
        if functions is None:
            functions = {"fit": Jitted(self._train_batch, name="fit", borrow_inputs=True),
                         "train": Jitted(self._train_batch, name="train_step"),
                         "test": Jitted(self._test_batch, name="evaluate"),
                         "predict": Jitted(self._predict_batch, name="predict")}
            object.__setattr__(self, "_step_functions", functions)
        return functions[kind]

    def train_step(self, x, y):
        """One optimisation step on a batch; returns (loss value, model output as an array).

        x: float32 (B, features); y: targets as prepared by fit. It runs the same Tensor
        graph a hand-written loop builds, through ``mg.jit`` (recorded on the first
        batch of each shape, replayed after); ONE optimizer call updates every
        trainable weight, so a step is applied completely or not at all. A NaN or
        infinite loss applies no update at all, sets ``stop_training`` and returns
        (loss, None). The output is the model's prediction (when the loss takes the
        last activation fused, the probabilities its kernel computed). Overriding
        train_step makes fit call the override (eagerly, as written).
        """
        return self._run_train_step(self._step_function("train"), x, y)

    def _run_train_step(self, function, x, y, sample_weight=None):
        try:
            if sample_weight is None:
                loss, out = function(x, y)
            else:
                loss, out = function(x, y, sample_weight)
        except NonFiniteLoss as exc:
            # Never apply an update computed from a NaN/inf loss: the model keeps
            # its last finite weights, and fit stops.
            self.stop_training = True
            return exc.value, None
        return float(loss.data), out.data

    def train_on_batch(self, x, y, sample_weight=None, class_weight=None, return_dict=False):
        """One training step on exactly this batch; returns the loss (and the metrics of
        this batch: ``[loss, metric, ...]``, or a dict with ``return_dict``)."""
        where = "train_on_batch"
        self._require_compiled(where)
        x, y = self._data(x, y, where)
        w = self._sample_weights(sample_weight, class_weight, y, where)
        loss, out = self._run_train_step(self._step_function("train"), x, y, w)
        return self._batch_logs(loss, y, out, return_dict)

    def test_on_batch(self, x, y, sample_weight=None, return_dict=False):
        """Loss (and metrics) of the model on exactly this batch, without training."""
        where = "test_on_batch"
        self._require_compiled(where)
        x, y = self._data(x, y, where)
        w = self._sample_weights(sample_weight, None, y, where)
        with no_grad():
            args = (x, y) if w is None else (x, y, w)
            loss, out = self._step_function("test")(*args)
        return self._batch_logs(float(loss.data), y, out.data, return_dict)

    def predict_on_batch(self, x):
        """The model's outputs for exactly this batch, as a float32 array."""
        x = self._inputs(x, "predict_on_batch")
        with no_grad():
            return np.array(self._step_function("predict")(x).data)

    def _batch_logs(self, loss, y, out, return_dict):
        metrics = self._make_metrics(y, fresh=True)
        if out is not None:
            for m in metrics:
                m.update_state(y, out)
        logs = {"loss": loss}
        logs.update({m.name: m.result() for m in metrics})
        if return_dict:
            return logs
        values = list(logs.values())
        return values if len(values) > 1 else values[0]

    def _overrides_train_step(self):
        return type(self).train_step is not Sequential.train_step or "train_step" in self.__dict__

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0):
        """Train for ``epochs`` passes over (x, y) in batches; returns a ``History``.

        ceil(N / batch_size) steps per epoch (the last batch may be smaller), a fresh
        permutation per epoch when ``shuffle``; ``validation_split`` holds out the LAST
        fraction of the samples (before shuffling). All arguments and data are
        checked before any weight changes. ``sample_weight`` (one weight per sample)
        and ``class_weight`` ({class index: weight}) weight each sample's loss as Keras
        does: sum(w * loss) / batch size. ``initial_epoch`` starts the epoch count
        there (to resume: epochs is the index of the last epoch, as in Keras).

        A batch whose loss is NaN or infinite stops training (Keras' TerminateOnNaN
        message is printed) WITHOUT applying that batch's update, so the model keeps
        the weights of the last finite step; ``history.invalid_loss`` then records
        ``{"epoch", "batch", "loss"}`` (0-based), and the epoch's logs show the
        invalid loss. With ``mg.set_check_finite(True)`` a NaN/inf anywhere in a
        step raises ``FloatingPointError`` naming the op, the epoch and the step.
        """
        where = "fit"
        self._require_compiled(where)
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size", where)
        epochs = _positive_int(epochs, "epochs", where)
        verbose = _verbose(verbose, where)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise ValueError(f"{where}: expected shuffle to be True or False, received {shuffle!r}")
        if (isinstance(validation_split, (bool, np.bool_))
                or not isinstance(validation_split, numbers.Real) or not 0.0 <= validation_split < 1.0):
            raise ValueError(f"{where}: expected 0 <= validation_split < 1, received {validation_split!r}")
        if callbacks is not None and not isinstance(callbacks, (list, tuple)):
            # as Keras: a list, even of one (a lone Callback is not iterable)
            raise TypeError(f"{where}: expected callbacks to be a list of Callback instances, "
                            f"received {type(callbacks).__name__}")
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, callbacks_module.Callback):
                raise TypeError(f"{where}: expected callbacks to be Callback instances, "
                                f"received {type(cb).__name__}")

        x, y = self._data(x, y, where)
        if (isinstance(initial_epoch, (bool, np.bool_)) or not isinstance(initial_epoch, (int, np.integer))
                or not 0 <= initial_epoch):
            raise ValueError(f"{where}: expected initial_epoch to be an integer >= 0, "
                             f"received {initial_epoch!r}")
        weights = self._sample_weights(sample_weight, class_weight, y, where)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError(f"{where}: expected validation_data to be a tuple (x_val, y_val)")
            val = self._data(*validation_data, "fit (validation_data)")
        elif validation_split:
            split = int(math.floor(len(x) * (1.0 - validation_split)))
            if split == 0 or split == len(x):
                raise ValueError(f"{where}: {len(x)} samples are not enough to split into training "
                                 f"and validation sets with validation_split={validation_split}")
            x, y, val = x[:split], y[:split], (x[split:], y[split:])
            weights = None if weights is None else weights[:split]
        if len(x) == 0:
            raise ValueError(f"{where}: expected at least one training sample, received none")

        return self._fit_loop(x, y, val, batch_size, epochs, verbose, callbacks, bool(shuffle),
                              weights, int(initial_epoch))

    def _sample_weights(self, sample_weight, class_weight, y, where):
        """One float32 weight per sample (or None): sample_weight times class_weight[label]."""
        weights = None
        if sample_weight is not None:
            w = _numeric(sample_weight, "sample_weight", where)
            if w.ndim == 2 and w.shape[1] == 1:
                w = w.reshape(-1)
            if w.shape != (len(y),):
                raise ValueError(f"{where}: expected sample_weight of shape ({len(y)},), "
                                 f"received {w.shape}")
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError(f"{where}: expected finite, non-negative sample weights")
            weights = np.array(w, dtype=_F32)
        if class_weight is not None:
            if not isinstance(class_weight, dict):
                raise TypeError(f"{where}: expected class_weight to be a dict {{class: weight}}, "
                                f"received {type(class_weight).__name__}")
            labels = (y.reshape(-1) if y.ndim == 1 or y.shape[1] == 1 else y.argmax(axis=1)).astype(np.int64)
            table = np.ones(int(labels.max()) + 1 if len(labels) else 1, dtype=_F32)
            for k, v in class_weight.items():
                if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 0:
                    raise ValueError(f"{where}: expected class_weight keys to be class indices, "
                                     f"received {k!r}")
                if not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v) or v < 0:
                    raise ValueError(f"{where}: expected class_weight values to be finite numbers "
                                     f">= 0, received {v!r} for class {k}")
                if k < len(table):
                    table[k] = v
            by_class = table[labels]
            weights = by_class if weights is None else weights * by_class
        return weights

    def _fit_loop(self, x, y, val, batch_size, epochs, verbose, user_callbacks, shuffle,
                  weights=None, initial_epoch=0):
        n = len(x)
        steps = math.ceil(n / batch_size)
        metrics = self._make_metrics(y)
        loss_mean = metrics_module.Mean(name="loss")
        history = callbacks_module.History()
        cbs = user_callbacks + [history]
        if verbose:
            cbs.append(callbacks_module.ProgbarLogger(verbose))
        # "metrics": the keys of the epoch logs (Keras' name), for callbacks to check up front
        keys = ["loss"] + [m.name for m in metrics]
        keys += ["val_" + k for k in keys] if val is not None else []
        cbs = callbacks_module.CallbackList(cbs, self, {"epochs": epochs, "steps": steps, "verbose": verbose,
                                                        "metrics": keys})
        batches = _Batches(x, y, batch_size, shuffle, weights)
        step_function = None if self._overrides_train_step() else self._step_function("fit")
        if weights is not None and step_function is None:
            raise ValueError("fit: sample_weight and class_weight need the built-in train_step "
                             "(this model overrides it)")
        if step_function is not None:
            step_function.reset()  # recordings of an earlier fit borrowed its batch buffers

        self.stop_training = False
        self.optimizer.zero_grad(self.trainable_weights)
        logs = {}
        cbs.on_train_begin()
        try:
            for epoch in range(initial_epoch, epochs):
                loss_mean.reset_state()
                for m in metrics:
                    m.reset_state()
                cbs.on_epoch_begin(epoch)
                batches.start_epoch(utils.rng().permutation(n) if shuffle else None)
                for step in range(steps):
                    cbs.on_train_batch_begin(step)
                    xb, yb, wb = batches.get(step)
                    try:
                        if step_function is not None:
                            loss_value, out = self._run_train_step(step_function, xb, yb, wb)
                        else:
                            loss_value, out = self.train_step(xb, yb)
                    except FloatingPointError as exc:
                        raise FloatingPointError(f"{exc} [in fit: epoch {epoch + 1}/{epochs}, "
                                                 f"step {step + 1}/{steps}]") from exc
                    if not math.isfinite(loss_value):
                        self.stop_training = True
                        history.invalid_loss = {"epoch": epoch, "batch": step, "loss": loss_value}
                        print(f"Batch {step}: Invalid loss, terminating training "
                              f"(epoch {epoch + 1}, loss {loss_value}; this batch's update "
                              f"was not applied)", flush=True)
                    loss_mean.update_state(loss_value, len(xb))
                    if out is not None:
                        for m in metrics:
                            m.update_state(yb, out)
                    logs = {m.name: m.result() for m in metrics}
                    logs["loss"] = loss_mean.result()
                    cbs.on_train_batch_end(step, logs)
                    if self.stop_training:
                        break
                logs = dict(logs)
                if val is not None:
                    try:
                        val_logs = self._test_loop(*val, batch_size,
                                                   self._make_metrics(val[1], fresh=True))
                    except FloatingPointError as exc:
                        raise FloatingPointError(f"{exc} [in fit: validation after epoch "
                                                 f"{epoch + 1}/{epochs}]") from exc
                    logs.update({"val_" + k: v for k, v in val_logs.items()})
                cbs.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
        except (KeyboardInterrupt, FloatingPointError):
            # Weights are consistent (the optimizer updates all or none, and a
            # FloatingPointError comes before the update); drop any gradients of
            # the interrupted step so a later fit starts clean.
            self.optimizer.zero_grad(self.trainable_weights)
            cbs.on_train_end(logs)
            raise
        cbs.on_train_end(logs)
        self.history = history
        return history

    # ------------------------------------------------------------ inference
    def _test_loop(self, x, y, batch_size, metrics, bar=None):
        """Loss (batch-size-weighted mean) and metrics over (x, y), without a graph."""
        loss_mean = metrics_module.Mean(name="loss")
        logs = {}
        test_batch = self._step_function("test")
        with no_grad():
            for step in range(math.ceil(len(x) / batch_size)):
                batch = slice(step * batch_size, (step + 1) * batch_size)
                xb, yb = x[batch], y[batch]
                loss, out = test_batch(xb, yb)
                loss_mean.update_state(float(loss.data), len(xb))
                for m in metrics:
                    m.update_state(yb, out.data)
                logs = {m.name: m.result() for m in metrics}
                logs["loss"] = loss_mean.result()
                if bar is not None:
                    bar.update(step + 1, callbacks_module._display_order(logs))
        return logs

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", return_dict=False):
        """Loss and metrics on (x, y): ``[loss, metric, ...]``, or the loss alone without metrics.

        >>> import numpy as np
        >>> from minigrad import models, layers
        >>> model = models.Sequential([layers.Dense(2, activation="softmax", input_shape=(2,))])
        >>> model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
        >>> loss, acc = model.evaluate(np.eye(2, dtype=np.float32), np.eye(2), verbose=0)
        >>> 0.0 <= acc <= 1.0
        True
        """
        where = "evaluate"
        self._require_compiled(where)
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size", where)
        if not isinstance(return_dict, (bool, np.bool_)):
            raise TypeError(f"{where}: expected return_dict to be True or False, received {return_dict!r}")
        verbose = _verbose(verbose, where)
        x, y = self._data(x, y, where)
        if len(x) == 0:
            raise ValueError(f"{where}: expected at least one sample, received none")
        bar = Progbar(math.ceil(len(x) / batch_size), verbose=verbose) if verbose else None
        logs = self._test_loop(x, y, batch_size, self._make_metrics(y, fresh=True), bar)
        if return_dict:
            return logs
        values = [logs["loss"]] + [v for k, v in logs.items() if k != "loss"]
        return values if len(values) > 1 else values[0]

    def predict(self, x, batch_size=None, verbose="auto"):
        """The model's outputs for x as a float32 NumPy array (probabilities for a softmax last layer)."""
        where = "predict"
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size", where)
        verbose = _verbose(verbose, where)
        x = self._inputs(x, where)
        out = np.empty((len(x),) + self._output_shapes()[-1], dtype=_F32)
        steps = math.ceil(len(x) / batch_size)
        bar = Progbar(steps, verbose=verbose) if verbose and steps else None
        predict_batch = self._step_function("predict")
        with no_grad():
            for step in range(steps):
                sl = slice(step * batch_size, (step + 1) * batch_size)
                out[sl] = predict_batch(x[sl]).data
                if bar is not None:
                    bar.update(step + 1)
        return out

    # ------------------------------------------------------------ weights
    def get_weights(self):
        """Copies of all weights, in layer order (kernel, bias, ...)."""
        return [t.data.copy() for t in self.weights]

    def set_weights(self, weights):
        """Set all weights from a list like ``get_weights()``'s; checked fully before any is set."""
        if not isinstance(weights, (list, tuple)):
            raise TypeError(f"set_weights: expected a list of arrays, received {type(weights).__name__}")
        weights, current = list(weights), self.weights
        if len(weights) != len(current):
            raise ValueError(f"set_weights: expected a list of {len(current)} arrays, "
                             f"received {len(weights)}")
        arrays = []
        for i, (t, w) in enumerate(zip(current, weights)):
            w = _numeric(w, f"weight {i}", "set_weights")
            if w.shape != t.shape:
                raise ValueError(f"set_weights: expected weight {i} of shape {t.shape}, received {w.shape}")
            arrays.append(w)
        for t, w in zip(current, arrays):
            np.copyto(t.data, w, casting="unsafe")  # in place: optimizer state stays attached

    def _weight_keys(self):
        return [(f"layer{i}/{attr}", layer, t)
                for i, layer in enumerate(self._layers) for attr, t in layer._weights]

    def save(self, filepath, include_optimizer=True):
        """Write the whole model to one file: its architecture (JSON: layers and their
        configuration, and the compile settings), its weights and, by default, the
        optimizer's state. ``models.load_model(filepath)`` rebuilds it; nothing in the
        file is ever unpickled. The file is an .npz archive, written atomically.

        >>> import os, tempfile, numpy as np
        >>> from minigrad import models, layers
        >>> model = models.Sequential([layers.Dense(2, activation="softmax", input_shape=(3,))])
        >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
        >>> model.save(path)
        >>> again = load_model(path)
        >>> again.layers[0].name == model.layers[0].name, type(again.optimizer).__name__
        (True, 'Adam')
        >>> bool(np.array_equal(again.predict(np.ones((1, 3), np.float32), verbose=0),
        ...                     model.predict(np.ones((1, 3), np.float32), verbose=0)))
        True
        """
        if not self.built:
            raise ValueError("save: the model is not built yet (no weights); call it on data or "
                             "give the first layer an input_shape")
        config = json.dumps(self._config(), sort_keys=True).encode()
        self.save_weights(filepath, include_optimizer=include_optimizer and self.optimizer is not None,
                          _extra={_CONFIG_KEY: np.frombuffer(config, dtype=np.uint8)})

    def _config(self):
        layers_config = []
        for layer in self._layers:
            cls = type(layer)
            layers_config.append({"class_name": cls.__name__, "module": cls.__module__,
                                  "config": layer.get_config()})
        config = {"format": "minigrad.Sequential", "version": 1, "name": self.name,
                  "input_shape": list(self._input_shape), "layers": layers_config}
        if self.compiled:
            loss = losses_module.serialize(self.loss)
            if loss is None:
                raise ValueError("save: the model's loss is a user callable, which cannot be "
                                 "saved as configuration (compile with a loss name or class)")
            metric_ids = [metrics_module.serialize(m) for m in self._metric_ids]
            config["compile"] = {"optimizer": _optimizer_config(self.optimizer), "loss": loss,
                                 "metrics": metric_ids}
        return config

    def save_weights(self, filepath, include_optimizer=False, _extra=None):
        """Write all weights to ``filepath`` as an .npz archive (exactly that path).

        The write is atomic: a temporary file in the same directory is written,
        flushed to disk and renamed over ``filepath``, so a reader (or a crash)
        never sees a half-written file. With ``include_optimizer=True`` the
        optimizer's state (its slots, e.g. RMSprop's ``v``, and ``iterations``)
        is saved too, under ``optimizer/...`` keys, so that ``load_weights``
        resumes training exactly; by default only the weights are saved (Keras).
        """
        if not self.built:
            raise ValueError("save_weights: the model is not built yet (no weights); call it on "
                             "data or give the first layer an input_shape")
        filepath = _path(filepath, "save_weights")
        if os.path.isdir(filepath):  # the temporary file would go to its parent, the rename fail
            raise IsADirectoryError(f"save_weights: expected a file path, received the directory "
                                    f"{filepath!r}")
        keys = self._weight_keys()
        arrays = {key: t.data for key, _, t in keys}
        if include_optimizer:
            if self.optimizer is None:
                raise ValueError("save_weights: include_optimizer=True needs a compiled model "
                                 "(there is no optimizer state to save)")
            arrays[_OPT_ITERATIONS] = np.array(self.optimizer.iterations, dtype=np.int64)
            names = self.optimizer._slot_names
            for key, _, t in keys:
                for name, slot in zip(names, self.optimizer._slots.get(t, ())):
                    arrays[f"{_OPT_PREFIX}{key}/{name}"] = slot
        arrays.update(_extra or {})
        write_npz(filepath, arrays)

    def load_weights(self, filepath):
        """Load weights saved by ``save_weights``; the file must match this architecture.

        The file is read without ever unpickling, and everything is checked before
        any weight changes; a bad file raises ValueError naming it and the problem:
        not an .npz (or truncated), missing or unexpected arrays, a wrong shape, or a
        dtype other than float16/32/64 (floats are cast to float32, as Keras does;
        float64 values outside the float32 range are rejected). Shapes and dtypes are
        read from each array's header first, so a forged header cannot make it
        allocate more than the model's own size. Optimizer state saved with
        ``include_optimizer=True`` is restored when the model is compiled with the
        same kind of optimizer (with a warning and skipped when it is not compiled).
        """
        filepath = _path(filepath, "load_weights")
        where = f"load_weights({filepath!r})"
        if not self._layers:
            raise ValueError(f"{where}: the model has no layers")
        with _NpzReader(filepath, where) as archive:
            opt_keys = [k for k in archive.keys if k.startswith(_OPT_PREFIX)]
            weight_keys = [k for k in archive.keys if not k.startswith(_OPT_PREFIX) and k != _CONFIG_KEY]
            if self.built:
                expected = [(key, t.shape) for key, _, t in self._weight_keys()]
            else:
                self._check_keys(where, weight_keys, [k for k, _ in self._expected_shapes((1,))])
                first = archive.header("layer0/kernel")[0]
                if len(first) != 2 or first[0] < 1:
                    raise ValueError(f"{where}: the model is not built and the file's layer0/kernel "
                                     f"has shape {first}, not (inputs, units)")
                expected = self._expected_shapes((first[0],))
            self._check_keys(where, weight_keys, [k for k, _ in expected])
            names = {f"layer{i}": layer.name for i, layer in enumerate(self._layers)}
            for key, shape in expected:
                _check_float_header(where, archive, key, shape,
                                    f'(layer "{names[key.split("/")[0]]}")')
            opt_state = self._check_optimizer_keys(where, archive, opt_keys, dict(expected))
            values = {key: archive.read_float32(key) for key, _ in expected}
            if opt_state is not None:
                opt_state = {k: (archive.read_float32(k) if k != _OPT_ITERATIONS
                                 else archive.read_iterations(k)) for k in opt_state}
        # Everything is read and checked: from here on nothing can fail half-way.
        if not self.built:
            self.build((expected[0][1][0],))
        for key, _, t in self._weight_keys():
            np.copyto(t.data, values[key])
        if opt_state is not None:
            self._restore_optimizer(opt_state)

    def _expected_shapes(self, input_shape):
        out, shape = [], input_shape
        for i, layer in enumerate(self._layers):
            out += [(f"layer{i}/{attr}", s) for attr, s in layer.weight_shapes(shape)]
            shape = layer.compute_output_shape(shape)
        return out

    @staticmethod
    def _check_keys(where, saved, expected):
        missing = [k for k in expected if k not in saved]
        extra = sorted(set(saved) - set(expected))
        if missing or extra:
            details = "".join([f"; missing: {missing}" if missing else "",
                               f"; unexpected: {extra}" if extra else ""])
            raise ValueError(f"{where}: the file holds weights of a different architecture: "
                             f"expected {len(expected)} arrays {list(expected)}, received "
                             f"{len(saved)} {sorted(saved)}{details}")

    def _check_optimizer_keys(self, where, archive, opt_keys, weight_shapes):
        """The optimizer keys to restore (checked), or None when there are none to restore."""
        if not opt_keys:
            return None
        if self.optimizer is None:
            warnings.warn(f"{where}: the file holds optimizer state but the model is not "
                          f"compiled; only the weights were loaded", stacklevel=3)
            return None
        names = self.optimizer._slot_names
        trainable = {id(t) for t in self.trainable_weights}
        allowed = {_OPT_ITERATIONS}
        groups = []
        for key, _, t in self._weight_keys():
            if id(t) in trainable:
                group = [f"{_OPT_PREFIX}{key}/{name}" for name in names]
                allowed.update(group)
                groups.append(group)
        unexpected = sorted(set(opt_keys) - allowed)
        partial = [g for g in groups if 0 < sum(k in opt_keys for k in g) < len(g)]
        if unexpected or partial or _OPT_ITERATIONS not in opt_keys:
            problem = (f"unexpected {unexpected}" if unexpected else
                       f"incomplete slots {partial[0]}" if partial else f"no {_OPT_ITERATIONS}")
            raise ValueError(f"{where}: the file's optimizer state does not fit this model's "
                             f"{type(self.optimizer).__name__} (slots {list(names)} per trainable "
                             f"weight): {problem}")
        for k in opt_keys:
            if k == _OPT_ITERATIONS:
                shape, _, dtype = archive.header(k)
                if shape != () or dtype.kind not in "iu" or dtype.hasobject:
                    raise ValueError(f"{where}: expected {k} to be an integer scalar, received "
                                     f"shape {shape} and dtype {dtype}")
            else:
                weight_key = k[len(_OPT_PREFIX):].rsplit("/", 1)[0]
                _check_float_header(where, archive, k, weight_shapes[weight_key], "")
        return opt_keys

    def _restore_optimizer(self, state):
        optimizer = self.optimizer
        for key, _, t in self._weight_keys():
            slots = [state.get(f"{_OPT_PREFIX}{key}/{name}") for name in optimizer._slot_names]
            if optimizer._slot_names and slots[0] is not None:
                optimizer._slots[t] = tuple(np.array(s, dtype=_F32, order="C") for s in slots)
            else:
                optimizer._slots.pop(t, None)
        optimizer.iterations = state[_OPT_ITERATIONS]

    # ------------------------------------------------------------ summary
    def summary(self, print_fn=None):
        """Print the layer table (Keras 3 style): output shapes and parameter counts."""
        if print_fn is not None and not callable(print_fn):
            raise TypeError(f"summary: expected print_fn to be callable, received {type(print_fn).__name__}")
        print_fn = print_fn or (lambda line: print(line, file=sys.stdout))
        widths = (33, 24, 15)
        shapes = self._output_shapes()
        rows = []
        for layer, shape in zip(self._layers, shapes):
            out = "?" if shape is None or not layer.built else str((None,) + tuple(shape)).replace(",)", ")")
            params = f"{layer.count_params():,}" if layer.built else "0 (unbuilt)"
            rows.append((f"{layer.name} ({type(layer).__name__})", out, params))

        def line(left, mid, right, fill):
            return left + mid.join(fill * w for w in widths) + right

        def cells(values, edge):
            texts = [f" {values[0]:<{widths[0] - 2}} ", f" {values[1]:<{widths[1] - 2}} ",
                     f" {values[2]:>{widths[2] - 2}} "]
            return edge + edge.join(texts) + edge

        lines = [f'Model: "{self.name}"', line("┏", "┳", "┓", "━"),
                 cells(("Layer (type)", "Output Shape", "Param #"), "┃"), line("┡", "╇", "┩", "━")]
        for i, row in enumerate(rows):
            if i:
                lines.append(line("├", "┼", "┤", "─"))
            lines.append(cells(row, "│"))
        lines.append(line("└", "┴", "┘", "─"))
        trainable = sum(t.size for t in self.trainable_weights)
        non_trainable = sum(t.size for t in self.non_trainable_weights)
        for label, count in (("Total", trainable + non_trainable), ("Trainable", trainable),
                             ("Non-trainable", non_trainable)):
            lines.append(f" {label} params: {count:,} ({_memory(count * 4)})")
        for text in lines:
            print_fn(text)


def _optimizer_config(optimizer):
    """{'class_name', 'config'} from the constructor arguments the optimizer keeps as
    attributes (a learning-rate schedule is saved as its current value)."""
    config = {}
    for name in inspect.signature(type(optimizer).__init__).parameters:
        if name == "self" or not hasattr(optimizer, name):
            continue
        value = getattr(optimizer, name)
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        if value is None or isinstance(value, (bool, int, float, str)):
            config[name] = value
    return {"class_name": type(optimizer).__name__, "config": config}


def load_model(filepath, custom_objects=None, compile=True):
    """Rebuild a model written by ``Sequential.save``: architecture, weights and (when
    saved and ``compile``) the compiled optimizer, loss, metrics and optimizer state.

    Layers are looked up in minigrad.layers, then in ``custom_objects`` ({class name:
    class}) for a user's own Layer subclasses (their constructor takes the keyword
    arguments of their ``get_config()``). The file is read as save_weights' files are:
    member by member, headers checked first, nothing unpickled.
    """
    from . import layers as layers_module
    filepath = os.fspath(filepath)
    where = f"load_model({filepath!r})"
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise TypeError(f"{where}: expected custom_objects to be a dict {{name: class}}, "
                        f"received {type(custom_objects).__name__}")
    with _NpzReader(filepath, where) as archive:
        if _CONFIG_KEY not in archive.keys:
            raise ValueError(f"{where}: the file holds no model configuration (a file written "
                             f"by save_weights? load it with model.load_weights)")
        shape, _, dtype = archive.header(_CONFIG_KEY)
        if dtype != np.uint8 or len(shape) != 1 or shape[0] > 16 << 20:
            raise ValueError(f"{where}: {_CONFIG_KEY} is not a JSON text of at most 16 MB")
        try:
            config = json.loads(bytes(archive._read(_CONFIG_KEY)).decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{where}: {_CONFIG_KEY} is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != "minigrad.Sequential":
        raise ValueError(f"{where}: not a minigrad model file (format "
                         f"{config.get('format') if isinstance(config, dict) else None!r})")
    known = {name: getattr(layers_module, name) for name in dir(layers_module)
             if isinstance(getattr(layers_module, name), type)
             and issubclass(getattr(layers_module, name), Layer)}
    known.update(custom_objects or {})
    model = Sequential(name=config.get("name"))
    try:
        model.add(layers_module.InputLayer(tuple(config["input_shape"])))
        for entry in config["layers"]:
            cls = known.get(entry["class_name"])
            if cls is None:
                raise ValueError(f"{where}: unknown layer class {entry['class_name']!r}; pass it "
                                 f"in custom_objects={{'{entry['class_name']}': TheClass}}")
            layer_config = dict(entry["config"])
            for key in ("kernel_regularizer", "bias_regularizer"):
                if key in layer_config:
                    layer_config[key] = regularizers.deserialize(layer_config[key])
            model.add(cls(**layer_config))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{where}: the model configuration is malformed: {exc!r}") from None
    if compile and "compile" in config:
        spec = config["compile"]
        classes = {"RMSprop": optimizers_module.RMSprop, "SGD": optimizers_module.SGD,
                   "Adam": optimizers_module.Adam}
        classes.update({c.__name__: c for c in vars(optimizers_module).values()
                        if isinstance(c, type) and issubclass(c, optimizers_module.Optimizer)})
        opt_cls = classes.get(spec["optimizer"]["class_name"])
        if opt_cls is None:
            raise ValueError(f"{where}: unknown optimizer {spec['optimizer']['class_name']!r}")
        model.compile(optimizer=opt_cls(**spec["optimizer"]["config"]),
                      loss=losses_module.deserialize(spec["loss"]),
                      metrics=[metrics_module.deserialize(m) for m in spec["metrics"]])
    model.load_weights(filepath)
    return model


def _memory(nbytes):
    """Keras' readable size: 1.55 MB for 407,050 float32 parameters."""
    size, unit = float(nbytes), "B"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            break
        size /= 1024
    return f"{size:.2f} {unit}"


# ---------------------------------------------------------------- weights files

class _Batches:
    """An epoch's mini-batches: rows of (x, y[, sample weights]) gathered in C into
    buffers reused every step."""

    def __init__(self, x, y, batch_size, shuffle, weights=None):
        self.x, self.y, self.batch_size, self.n = x, y, batch_size, len(x)
        rows = min(batch_size, self.n)
        # Batches are always gathered into buffers reused every step, in order when
        # not shuffling: fit's recorded step reads those same buffers, and no other
        # thread can change a batch while C reads it.
        self._gathers = (kernels.RowGather(x, rows), kernels.RowGather(y, rows))
        if weights is not None:
            self._gathers += (kernels.RowGather(weights, rows),)
        self._in_order = np.arange(self.n)

    def start_epoch(self, order):
        """order: a permutation of the samples (shuffle) or None (in order)."""
        for gather in self._gathers:
            gather.set_order(self._in_order if order is None else order)

    def get(self, step):
        """(xb, yb, wb) of batch `step` (wb None without sample weights)."""
        start = step * self.batch_size
        stop = min(start + self.batch_size, self.n)
        taken = [g.take(start, stop) for g in self._gathers]
        return taken[0], taken[1], (taken[2] if len(taken) > 2 else None)
