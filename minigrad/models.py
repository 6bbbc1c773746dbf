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
import math
import numbers
import os
import sys
import tempfile
import warnings
import zipfile
import zlib

import numpy as np

from . import activations
from . import callbacks as callbacks_module
from . import losses as losses_module
from . import metrics as metrics_module
from . import optimizers as optimizers_module
from . import kernels, utils
from ._files import open_regular
from .function import no_grad
from .jit import Jitted, NonFiniteLoss, stop_if_not_finite
from .kernels import tape
from .layers import InputLayer, Layer, normalize_input_shape, unique_name
from .progress import Progbar
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
        # fit's recorded step read the model's optimizer and loss when it was captured
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

    def _compute_loss(self, y, out, fused):
        if fused:
            return self.loss.on_pre_activation(y, out)
        loss = self.loss(y, out)
        if not isinstance(loss, Tensor):
            raise TypeError(f"loss {getattr(self.loss, '__name__', self.loss)!r} (given to compile): "
                            f"expected it to return a scalar Tensor computed with minigrad ops "
                            f"(so that it has a gradient), received {type(loss).__name__}")
        return loss

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
        for m in metrics:
            metrics_module.check(m)
        self.optimizer, self.loss, self._metric_ids = optimizer, loss, list(metrics)
        self.compiled = True

    def _require_compiled(self, where):
        if not self.compiled:
            raise RuntimeError(f"You must call compile() on the model before {where}().")

    def _make_metrics(self, y, fresh=False):
        sparse = y.ndim == 1
        out = []
        for ident in self._metric_ids:
            m = metrics_module.get(ident, sparse_targets=sparse)
            out.append(copy.copy(m) if fresh and m is ident else m)
        for m in out:
            m.reset_state()
        return out

    def _targets(self, y, where):
        """y validated once for the whole data set (range, width) and converted for the loss."""
        if y is None:
            raise ValueError(f"{where}: expected targets y, received None")
        y = _numeric(y, "y", where)
        units = self._output_shapes()[-1][-1]
        if isinstance(self.loss, losses_module.Loss):
            return self.loss.targets(y, units)
        return _aligned(y, np.int64 if y.dtype.kind in "iub" else _F32)

    def _data(self, x, y, where):
        x = self._inputs(x, where)
        y = self._targets(y, where)
        if len(x) != len(y):
            raise ValueError(f"{where}: expected x and y to have the same number of samples, "
                             f"received x with {len(x)} and y with {len(y)}")
        return x, y

    # ------------------------------------------------------------ training
    def _train_batch(self, x, y):
        """One training step as a plain function of the batch (what mg.jit records):
        forward with training=True, the loss, a stop before backward if it is not
        finite, backward, ONE optimizer call for every trainable weight. Returns
        (loss, model output; the pre-activation output when the loss is fused)."""
        fused = self._fused
        out = self._forward(Tensor(x), training=True, pre_activation=fused)
        loss = self._compute_loss(y, out, fused)
        stop_if_not_finite(loss)
        loss.backward()
        params = self.trainable_weights
        self.optimizer.step(params)
        self.optimizer.zero_grad(params)
        return loss, out

    def _test_batch(self, x, y):
        fused = self._fused
        out = self._forward(Tensor(x), training=False, pre_activation=fused)
        return self._compute_loss(y, out, fused), out

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
        (loss, None). The output is the pre-activation one when the loss takes the
        last activation fused (same argmax). Overriding train_step makes fit call the
        override (eagerly, as written).
        """
        return self._run_train_step(self._step_function("train"), x, y)

    def _run_train_step(self, function, x, y):
        try:
            loss, out = function(x, y)
        except NonFiniteLoss as exc:
            # Never apply an update computed from a NaN/inf loss: the model keeps
            # its last finite weights, and fit stops.
            self.stop_training = True
            return exc.value, None
        return float(loss.data), out.data

    def _overrides_train_step(self):
        return type(self).train_step is not Sequential.train_step or "train_step" in self.__dict__

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True):
        """Train for ``epochs`` passes over (x, y) in batches; returns a ``History``.

        ceil(N / batch_size) steps per epoch (the last batch may be smaller), a fresh
        permutation per epoch when ``shuffle``; ``validation_split`` holds out the LAST
        fraction of the samples (before shuffling). All arguments and data are
        checked before any weight changes.

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
        if len(x) == 0:
            raise ValueError(f"{where}: expected at least one training sample, received none")

        return self._fit_loop(x, y, val, batch_size, epochs, verbose, callbacks, bool(shuffle))

    def _fit_loop(self, x, y, val, batch_size, epochs, verbose, user_callbacks, shuffle):
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
        batches = _Batches(x, y, batch_size, shuffle)
        step_function = None if self._overrides_train_step() else self._step_function("fit")
        if step_function is not None:
            step_function.reset()  # recordings of an earlier fit borrowed its batch buffers

        self.stop_training = False
        self.optimizer.zero_grad(self.trainable_weights)
        logs = {}
        cbs.on_train_begin()
        try:
            for epoch in range(epochs):
                loss_mean.reset_state()
                for m in metrics:
                    m.reset_state()
                cbs.on_epoch_begin(epoch)
                batches.start_epoch(utils.rng().permutation(n) if shuffle else None)
                for step in range(steps):
                    cbs.on_train_batch_begin(step)
                    xb, yb = batches.get(step)
                    try:
                        if step_function is not None:
                            loss_value, out = self._run_train_step(step_function, xb, yb)
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

    def save_weights(self, filepath, include_optimizer=False):
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
        directory = os.path.dirname(os.path.abspath(filepath))
        fd, tmp = tempfile.mkstemp(prefix=".tmp_weights_", suffix=".npz", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; a plain open would not
            os.replace(tmp, filepath)  # a reader never sees a half-written file
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

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
            weight_keys = [k for k in archive.keys if not k.startswith(_OPT_PREFIX)]
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


def _memory(nbytes):
    """Keras' readable size: 1.55 MB for 407,050 float32 parameters."""
    size, unit = float(nbytes), "B"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            break
        size /= 1024
    return f"{size:.2f} {unit}"


# ---------------------------------------------------------------- weights files

_OPT_PREFIX = "optimizer/"
_OPT_ITERATIONS = "optimizer/iterations"
_FLOAT_SIZES = (2, 4, 8)  # float16, float32, float64


def _umask():
    """The process umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _check_float_header(where, archive, key, shape, what):
    shape_got, _, dtype = archive.header(key)
    if shape_got != tuple(shape):
        raise ValueError(f"{where}: the file holds weights of a different architecture: expected "
                         f"{key} {what}{' ' if what else ''}of shape {tuple(shape)}, received "
                         f"shape {shape_got} and dtype {dtype}")
    if dtype.kind != "f" or dtype.itemsize not in _FLOAT_SIZES or dtype.hasobject:
        raise ValueError(f"{where}: expected {key} to hold floats (float16/32/64, cast to "
                         f"float32), received dtype {dtype}")


class _NpzReader:
    """An .npz archive read member by member through zipfile, never unpickling.

    ``header(key)`` parses only the .npy header (shape, order, dtype), so shapes can
    be checked before a byte of data is read or allocated; ``read_*`` reads exactly
    the bytes the header declares and rejects short or trailing data.
    """
    _ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError,
               RuntimeError, NotImplementedError, zlib.error, SyntaxError, TypeError)

    def __init__(self, path, where):
        self.path, self.where = path, where
        self._file = open_regular(path, where)  # /dev/zero or a FIFO would be read forever
        try:
            self.zip = zipfile.ZipFile(self._file)
        except self._ERRORS as exc:
            self._file.seek(0)
            magic = self._file.read(6)
            self._file.close()
            if magic == b"\x93NUMPY":
                raise ValueError(f"{where}: expected an .npz archive written by save_weights, "
                                 f"received a single .npy array") from None
            raise ValueError(f"{where}: not a readable .npz archive (not a zip file, or "
                             f"truncated or corrupted): {exc}") from None
        try:
            names = self.zip.namelist()
            self.members, self.keys = {}, []
            for name in names:
                if not name.endswith(".npy"):
                    raise ValueError(f"{where}: unexpected member {name!r} in the archive "
                                     f"(an .npz written by save_weights holds only .npy arrays)")
                key = name[:-4]
                if key in self.members:
                    raise ValueError(f"{where}: the archive holds {name!r} twice")
                self.members[key] = self.zip.getinfo(name)
                self.keys.append(key)
        except BaseException:
            self.zip.close()
            self._file.close()
            raise
        self._headers = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.zip.close()
        self._file.close()
        return False

    def _fail(self, key, exc):
        return ValueError(f"{self.where}: {key} is not a readable .npy array (truncated or "
                          f"corrupted file?): {type(exc).__name__}: {exc}")

    @staticmethod
    def _read_header(fp):
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(fp)
        if version in ((2, 0), (3, 0)):  # 3.0 differs only in allowing utf-8 names
            return np.lib.format.read_array_header_2_0(fp)
        raise ValueError(f"unsupported .npy format version {version}")

    def header(self, key):
        """(shape, fortran_order, dtype) from the member's .npy header alone."""
        if key not in self._headers:
            try:
                with self.zip.open(self.members[key]) as fp:
                    shape, fortran, dtype = self._read_header(fp)
                    self._headers[key] = (shape, fortran, dtype, fp.tell())
            except self._ERRORS as exc:
                raise self._fail(key, exc) from None
        return self._headers[key][:3]

    def _read(self, key):
        shape, fortran, dtype = self.header(key)
        nbytes = math.prod(shape) * dtype.itemsize
        # The shape was checked against the model, but an unbuilt model takes its
        # input size from the file: the header must also agree with the member's size
        # (zipfile never yields more than that), and data is read in chunks, so memory
        # follows the bytes really present, never a size a forged header declares.
        held = self.members[key].file_size - self._headers[key][3]
        if nbytes != held:
            raise ValueError(f"{self.where}: {key}'s header declares shape {shape} of {dtype} "
                             f"({nbytes} bytes) but the archive member holds {held} bytes of data")
        try:
            with self.zip.open(self.members[key]) as fp:
                self._read_header(fp)
                chunks, remaining = [], nbytes
                while remaining:
                    chunk = fp.read(min(remaining, 1 << 22))
                    if not chunk:
                        raise EOFError(f"the data ends {remaining} bytes short of the "
                                       f"{nbytes} its header declares")
                    chunks.append(chunk)
                    remaining -= len(chunk)
                if fp.read(1):  # also makes zipfile verify the member's CRC
                    raise ValueError(f"more data than the {nbytes} bytes its header declares")
        except self._ERRORS as exc:
            raise self._fail(key, exc) from None
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return np.frombuffer(data, dtype=dtype, count=math.prod(shape)).reshape(
            shape, order="F" if fortran else "C")

    def read_float32(self, key):
        array = self._read(key)
        if array.dtype == _F32:
            return array
        with np.errstate(over="ignore", invalid="ignore"):
            cast = array.astype(_F32)
        if array.dtype.itemsize > 4 and not np.array_equal(np.isfinite(array), np.isfinite(cast)):
            raise ValueError(f"{self.where}: {key} holds float64 values outside the float32 range")
        return cast

    def read_iterations(self, key):
        value = int(self._read(key)[()])
        if value < 0:
            raise ValueError(f"{self.where}: expected {key} >= 0, received {value}")
        return value


class _Batches:
    """An epoch's mini-batches: rows of (x, y) gathered in C into two buffers."""

    def __init__(self, x, y, batch_size, shuffle):
        self.x, self.y, self.batch_size, self.n = x, y, batch_size, len(x)
        rows = min(batch_size, self.n)
        # Batches are always gathered into two buffers reused every step, in order
        # when not shuffling: fit's recorded step reads those same buffers, and no
        # other thread can change a batch while C reads it.
        self._gathers = (kernels.RowGather(x, rows), kernels.RowGather(y, rows))
        self._in_order = np.arange(self.n)

    def start_epoch(self, order):
        """order: a permutation of the samples (shuffle) or None (in order)."""
        for gather in self._gathers:
            gather.set_order(self._in_order if order is None else order)

    def get(self, step):
        """(xb, yb) of batch `step`."""
        start = step * self.batch_size
        stop = min(start + self.batch_size, self.n)
        return self._gathers[0].take(start, stop), self._gathers[1].take(start, stop)
