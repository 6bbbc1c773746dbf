"""Sequential: a stack of layers with Keras' compile / fit / evaluate / predict.

It runs on the same Tensor, ops and optimizers a hand-written loop uses; the
whole training step is ``Sequential.train_step``.

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
import os
import sys
import tempfile

import numpy as np

from . import callbacks as callbacks_module
from . import losses as losses_module
from . import metrics as metrics_module
from . import optimizers as optimizers_module
from . import utils
from .function import no_grad
from .layers import Dense, Layer, normalize_input_shape, unique_name
from .ops import softmax_cross_entropy
from .progress import Progbar
from .tensor import Tensor
from .workspace import Workspace

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


def _numeric(x, name, where):
    x = x.data if isinstance(x, Tensor) else np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{where}: expected {name} to be numeric, received dtype {x.dtype}")
    return x


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

    def __init__(self, layers=None, name=None):
        self.name = name or unique_name("sequential")
        self._layers = []
        self._input_shape = None
        self.optimizer = self.loss = None
        self._metric_ids = []
        self.compiled = False
        self.stop_training = False
        self.history = None
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
        if any(layer is other for other in self._layers):
            raise ValueError(f'Sequential.add: layer "{layer.name}" is already in the model')
        if any(layer.name == other.name for other in self._layers):
            raise ValueError(f'Sequential.add: all layer names should be unique; "{layer.name}" '
                             f"is already used")
        self._layers.append(layer)
        if len(self._layers) == 1 and layer.input_shape is not None:
            self._input_shape = layer.input_shape
        if self._input_shape is not None:
            self._build_layers(self._input_shape)

    def _build_layers(self, input_shape):
        shape = input_shape
        for layer in self._layers:
            if not layer.built:
                layer.build(shape)
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
    def _forward(self, x, logits=False, reuse_buffers=False):
        """The layers applied to Tensor x; with logits=True the last softmax is left out.

        reuse_buffers: write every output into per-layer workspaces (train_step only:
        the previous step's graph must be dead)."""
        workspaces = self._workspaces() if reuse_buffers else [None] * len(self._layers)
        for layer, ws in zip(self._layers[:-1], workspaces):
            x = layer(x, workspace=ws)
        last = self._layers[-1]
        if logits and isinstance(last, Dense):
            last.check_input_shape(x.shape)
            return last.call_logits(x, workspaces[-1])
        return last(x, workspace=workspaces[-1])

    def _workspaces(self):
        """One Workspace per layer plus one for the loss, created on first use."""
        if getattr(self, "_workspace_list", None) is None or len(self._workspace_list) != len(self._layers) + 1:
            self._workspace_list = [Workspace() for _ in range(len(self._layers) + 1)]
        return self._workspace_list

    def __call__(self, x):
        """Forward pass as a Tensor (graph recorded), for hand-written loops."""
        x = x if isinstance(x, Tensor) else Tensor(self._inputs(x, "Sequential.__call__"))
        if not self.built:
            self._check_ndim(x.shape)
            self.build(x.shape[1:])
        return self._forward(x)

    def _check_ndim(self, shape):
        if len(shape) != 2:
            raise ValueError(f'Input 0 of layer "{self._layers[0].name}" is incompatible with the '
                             f"layer: expected ndim=2, found ndim={len(shape)}. "
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
        return np.ascontiguousarray(x, dtype=_F32)

    @property
    def _fused(self):
        """Train on the logits with the fused softmax-CE (what TensorFlow does)."""
        last = self._layers[-1] if self._layers else None
        return (isinstance(self.loss, (losses_module.CategoricalCrossentropy,
                                       losses_module.SparseCategoricalCrossentropy))
                and not self.loss.from_logits
                and isinstance(last, Dense) and last.activation == "softmax")

    def _compute_loss(self, y, out, reuse_buffers=False):
        if self._fused:
            return softmax_cross_entropy(out, y, self._workspaces()[-1] if reuse_buffers else None)
        return self.loss(y, out)

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
        return np.ascontiguousarray(y, dtype=np.int64 if y.dtype.kind in "iub" else _F32)

    def _data(self, x, y, where):
        x = self._inputs(x, where)
        y = self._targets(y, where)
        if len(x) != len(y):
            raise ValueError(f"{where}: expected x and y to have the same number of samples, "
                             f"received x with {len(x)} and y with {len(y)}")
        return x, y

    # ------------------------------------------------------------ training
    def train_step(self, x, y):
        """One optimisation step on a batch; returns (loss value, model output as an array).

        x: float32 (B, features); y: targets as prepared by fit. The graph is built
        with the same Tensor ops a hand-written loop uses, then ONE optimizer call
        updates every trainable weight, so a step is applied completely or not at all.
        The output is the logits when the softmax is fused into the loss (same argmax).
        """
        # ---------------- the training step ----------------
        # images need no gradient; outputs go into buffers reused every step
        out = self._forward(Tensor(x), logits=self._fused, reuse_buffers=True)
        loss = self._compute_loss(y, out, reuse_buffers=True)
        loss.backward()
        params = self.trainable_weights
        self.optimizer.step(params)
        self.optimizer.zero_grad(params)
        return loss.item(), out.data
        # ----------------------------------------------------

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True):
        """Train for ``epochs`` passes over (x, y) in batches; returns a ``History``.

        ceil(N / batch_size) steps per epoch (the last batch may be smaller), a fresh
        permutation per epoch when ``shuffle``; ``validation_split`` holds out the LAST
        fraction of the samples (before shuffling). All arguments and data are
        checked before any weight changes.
        """
        where = "fit"
        self._require_compiled(where)
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size", where)
        epochs = _positive_int(epochs, "epochs", where)
        verbose = _verbose(verbose, where)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise ValueError(f"{where}: expected shuffle to be True or False, received {shuffle!r}")
        if (isinstance(validation_split, bool) or not isinstance(validation_split, (int, float))
                or not 0.0 <= validation_split < 1.0):
            raise ValueError(f"{where}: expected 0 <= validation_split < 1, received {validation_split!r}")
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
        cbs = callbacks_module.CallbackList(cbs, self, {"epochs": epochs, "steps": steps, "verbose": verbose})
        if shuffle:  # batches are gathered into these, reused every step
            rows = min(batch_size, n)
            xbuf = np.empty((rows,) + x.shape[1:], dtype=x.dtype)
            ybuf = np.empty((rows,) + y.shape[1:], dtype=y.dtype)

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
                order = utils.rng().permutation(n) if shuffle else None
                for step in range(steps):
                    start, stop = step * batch_size, min((step + 1) * batch_size, n)
                    cbs.on_train_batch_begin(step)
                    if order is None:
                        xb, yb = x[start:stop], y[start:stop]
                    else:
                        # mode="clip" lets take write straight into out (no hidden buffer)
                        idx, k = order[start:stop], stop - start
                        xb = np.take(x, idx, axis=0, out=xbuf[:k], mode="clip")
                        yb = np.take(y, idx, axis=0, out=ybuf[:k], mode="clip")
                    loss_value, out = self.train_step(xb, yb)
                    loss_mean.update_state(loss_value, stop - start)
                    for m in metrics:
                        m.update_state(yb, out)
                    logs = {m.name: m.result() for m in metrics}
                    logs["loss"] = loss_mean.result()
                    cbs.on_train_batch_end(step, logs)
                    if self.stop_training:
                        break
                logs = dict(logs)
                if val is not None:
                    val_logs = self._test_loop(*val, batch_size, self._make_metrics(val[1], fresh=True))
                    logs.update({"val_" + k: v for k, v in val_logs.items()})
                cbs.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
        except KeyboardInterrupt:
            # Weights are consistent (the optimizer updates all or none); drop any
            # gradients of the interrupted step so a later fit starts clean.
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
        with no_grad():
            for step in range(math.ceil(len(x) / batch_size)):
                batch = slice(step * batch_size, (step + 1) * batch_size)
                xb, yb = x[batch], y[batch]
                out = self._forward(Tensor(xb), logits=self._fused)
                loss_mean.update_state(self._compute_loss(yb, out).item(), len(xb))
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
        with no_grad():
            for step in range(steps):
                sl = slice(step * batch_size, (step + 1) * batch_size)
                out[sl] = self._forward(Tensor(x[sl])).data
                if bar is not None:
                    bar.update(step + 1)
        return out

    # ------------------------------------------------------------ weights
    def get_weights(self):
        """Copies of all weights, in layer order (kernel, bias, ...)."""
        return [t.data.copy() for t in self.weights]

    def set_weights(self, weights):
        """Set all weights from a list like ``get_weights()``'s; checked fully before any is set."""
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

    def save_weights(self, filepath):
        """Write all weights to ``filepath`` as an .npz archive (exactly that path; atomic)."""
        if not self.built:
            raise ValueError("save_weights: the model is not built yet (no weights); call it on "
                             "data or give the first layer an input_shape")
        filepath = os.fspath(filepath)
        arrays = {key: t.data for key, _, t in self._weight_keys()}
        directory = os.path.dirname(os.path.abspath(filepath))
        fd, tmp = tempfile.mkstemp(prefix=".tmp_weights_", suffix=".npz", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, filepath)  # a reader never sees a half-written file
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def load_weights(self, filepath):
        """Load weights saved by ``save_weights``. The file must match this architecture;
        every array is checked before any weight is changed."""
        where = f"load_weights({os.fspath(filepath)!r})"
        archive = np.load(filepath, allow_pickle=False)  # never unpickles
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"{where}: expected an .npz archive written by save_weights, "
                             f"received a single .npy array")
        with archive:
            saved = {k: archive[k] for k in archive.files}
        if not self._layers:
            raise ValueError(f"{where}: the model has no layers")
        if self.built:
            expected = [(key, t.shape) for key, _, t in self._weight_keys()]
        else:  # build from the saved first kernel's input size, if all shapes agree
            first = saved.get("layer0/kernel")
            if first is None or first.ndim != 2:
                raise ValueError(f"{where}: the model is not built and the file has no first-layer "
                                 f"kernel to infer the input shape from")
            expected = self._expected_shapes((first.shape[0],))
        self._check_saved(where, saved, expected)
        if not self.built:
            self.build((saved["layer0/kernel"].shape[0],))
        for key, _, t in self._weight_keys():
            np.copyto(t.data, saved[key], casting="unsafe")

    def _expected_shapes(self, input_shape):
        out, shape = [], input_shape
        for i, layer in enumerate(self._layers):
            out += [(f"layer{i}/{attr}", s) for attr, s in layer.weight_shapes(shape)]
            shape = layer.compute_output_shape(shape)
        return out

    def _check_saved(self, where, saved, expected):
        names = {f"layer{i}": layer.name for i, layer in enumerate(self._layers)}
        missing = [k for k, _ in expected if k not in saved]
        extra = sorted(set(saved) - {k for k, _ in expected})
        msg = f"{where}: the file holds weights of a different architecture"
        if missing or extra:
            raise ValueError(f"{msg}: expected {len(expected)} arrays {[k for k, _ in expected]}, "
                             f"received {len(saved)} {sorted(saved)}")
        for key, shape in expected:
            if saved[key].shape != tuple(shape) or saved[key].dtype.kind != "f":
                layer = names[key.split("/")[0]]
                raise ValueError(f'{msg}: expected {key} (layer "{layer}") of shape {tuple(shape)}, '
                                 f"received shape {saved[key].shape} and dtype {saved[key].dtype}")

    # ------------------------------------------------------------ summary
    def summary(self, print_fn=None):
        """Print the layer table (Keras 3 style): output shapes and parameter counts."""
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
