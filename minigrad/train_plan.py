"""The training step of ``fit`` for a stack of Dense layers, validated once.

``Sequential.train_step`` records a graph on every batch and calls nine C kernels,
each behind a wrapper that re-validates its arrays. At batch 128 on MNIST that
Python work took about 0.35 ms per step, a quarter of the step once the kernels
got fast. For the models ``fit`` mostly sees (Dense layers, a softmax
cross-entropy, a built-in optimizer), a ``DensePlan`` checks every array once,
hands them to ``kernels.DenseForwardBackward``, and per step makes two C calls:
the forward and backward pass (csrc/dense_step.c, which calls the same kernels
with the same arguments in the same order as the graph would) and the
optimizer's update. The
results are the autograd step's bit for bit (tests/test_train_plan.py trains
both side by side); Python's share of a step drops from about 16% to 6%
(benchmarks/bench_overhead.py).

A callback may change the model between steps (replace or reshape a weight,
freeze a layer, swap the optimizer or its state, turn on ``set_check_finite``).
``DensePlan.matches`` re-checks all of that before every step, in a few
microseconds; when it fails, ``fit`` builds a new plan or, if the model no longer
qualifies, runs the rest of that ``fit`` on the autograd path.

>>> import numpy as np, minigrad as mg
>>> from minigrad import layers, models
>>> model = models.Sequential([layers.Dense(4, activation="relu", input_shape=(3,)),
...                            layers.Dense(2, activation="softmax")])
>>> model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
>>> unsupported_reason(model, np.zeros((8, 3), np.float32), np.zeros(8, np.int64)) is None
True
"""
import math

import numpy as np

from . import function, kernels, losses
from . import optimizers as optimizers_module

_F32 = np.dtype(np.float32)
_I64 = np.dtype(np.int64)
_CROSSENTROPY = (losses.CategoricalCrossentropy, losses.SparseCategoricalCrossentropy)
_OPTIMIZERS = (optimizers_module.RMSprop, optimizers_module.SGD, optimizers_module.Adam)


_enabled = True
_planned_steps = 0


def set_enabled(on):
    """Let ``fit`` use planned steps (on by default). Off, every step runs the
    autograd graph; the numbers are the same bit for bit, only slower. For tests
    and benchmarks.

    >>> set_enabled(False); enabled()
    False
    >>> set_enabled(True)
    """
    global _enabled
    if not isinstance(on, (bool, np.bool_)):
        raise TypeError(f"set_enabled: expected True or False, received {on!r}")
    _enabled = bool(on)


def enabled():
    return _enabled


def planned_steps():
    """How many training steps planned steps have run so far (lets tests see the path taken)."""
    return _planned_steps


def _updatable(a):
    """A weight C and the optimizer can use in place: float32, C-contiguous, aligned, writeable."""
    return a.dtype == _F32 and kernels._usable_in_place(a) and a.flags.writeable


def unsupported_reason(model, x, y):
    """Why ``fit`` must train ``model`` on (x, y) with the autograd graph, or None
    if a ``DensePlan`` can run its steps. x and y are fit's validated arrays."""
    from .layers import Dense
    from .models import Sequential
    if not _enabled:
        return "planned steps are turned off (train_plan.set_enabled)"
    if getattr(model.train_step, "__func__", None) is not Sequential.train_step:
        return "train_step is overridden (in a subclass or on the instance)"
    if function.get_check_finite():
        return "set_check_finite is on (it checks every op of the graph)"
    layers = model._layers
    if not layers or any(type(layer) is not Dense or not layer.built for layer in layers):
        return "a layer is not a built Dense layer"
    if type(model.optimizer) not in _OPTIMIZERS:
        return "the optimizer is not a built-in RMSprop, SGD or Adam"
    loss, last = model.loss, layers[-1]
    if type(loss) not in _CROSSENTROPY:
        return "the loss is not a built-in cross-entropy"
    if not model._fused and not (loss.from_logits and last.activation in (None, "relu")):
        return "the loss is not a softmax cross-entropy on the last layer's output"
    if any(layer.activation not in (None, "relu") for layer in layers[:-1]):
        return "a hidden layer has a softmax activation"
    if not model.trainable_weights:
        return "the model has no trainable weights"
    # The C step trusts these shapes: a weight reshaped in place (by a callback)
    # must send the step to the graph, which reports the mismatch.
    width = x.shape[1] if x.ndim == 2 else None
    for layer in layers:
        kernel, bias = layer.kernel, layer.bias
        if kernel.data.ndim != 2 or kernel.data.shape[0] != width:
            return "the layers' shapes do not chain"
        width = kernel.data.shape[1]
        if bias is not None and bias.data.shape != (width,):
            return "a bias does not match its kernel"
        for t in layer.weights:
            if t.requires_grad != layer.trainable:
                return "a weight's requires_grad differs from its layer's trainable flag"
            if not _updatable(t.data):
                return "a weight is not a writeable, C-contiguous float32 array"
    if y.ndim not in (1, 2) or len(y) != len(x):
        return "the targets are neither one label nor one row per sample"
    if y.ndim == 1 and y.dtype != _I64 or y.ndim == 2 and (y.dtype != _F32 or y.shape[1] != width):
        return "the targets do not match the last layer"
    return None


class Batches:
    """An epoch's mini-batches: views of (x, y), or rows gathered in C into two
    buffers reused every step when the epoch is shuffled.

    x and y are the arrays ``fit`` validated (C-contiguous; float32 images,
    int64 labels or float32 target rows) and hold the same number of samples.
    """

    def __init__(self, x, y, batch_size, shuffle):
        self.x, self.y, self.batch_size, self.n = x, y, batch_size, len(x)
        self._gathers = None
        if shuffle:
            rows = min(batch_size, self.n)
            self._gathers = (kernels.RowGather(x, rows), kernels.RowGather(y, rows))

    def start_epoch(self, order):
        """order: a permutation of the samples (shuffle) or None (in order)."""
        if self._gathers is not None:
            for gather in self._gathers:
                gather.set_order(order)

    def get(self, step):
        """(xb, yb) of batch `step`."""
        start = step * self.batch_size
        stop = min(start + self.batch_size, self.n)
        if self._gathers is None:
            return self.x[start:stop], self.y[start:stop]
        return self._gathers[0].take(start, stop), self._gathers[1].take(start, stop)


class DensePlan:
    """The planned training step of one model (see the module docstring)."""

    def __init__(self, model, rows, sparse_targets):
        self.model, self.optimizer, self.loss = model, model.optimizer, model.loss
        self.from_logits = model.loss.from_logits
        self.layers = list(model._layers)
        self.rows = rows
        workspaces = model._workspaces()
        self._weights = []   # (Tensor, its array, shape, requires_grad): re-checked every step
        self._layer_state = []  # (layer, kernel, bias, activation, trainable): likewise
        self._grads = []     # gradient buffers in trainable_weights order
        specs = []
        upstream_trainable = False
        for layer, ws in zip(self.layers, workspaces):
            kernel, bias, trainable = layer.kernel, layer.bias, layer.trainable
            k, units = kernel.shape
            relu = layer.activation == "relu"
            # the workspace buffers (same roles and shapes) the autograd step uses
            spec = {"w": kernel.data, "b": None if bias is None else bias.data,
                    "y": ws.get("y", (rows, units)), "db": ws.get("db", (units,)),
                    "dw": ws.get("dw", (k, units)),
                    "dz": ws.get("dz", (rows, units)) if relu else None,
                    "dx": ws.get("dx", (rows, k)) if upstream_trainable else None,
                    "relu": relu, "need_w": trainable, "need_b": trainable and bias is not None,
                    # only a trainable layer below needs this layer's dx
                    "need_x": upstream_trainable}
            specs.append(spec)
            upstream_trainable = upstream_trainable or trainable
            for t in (kernel, bias):
                if t is not None:
                    self._weights.append((t, t.data, t.data.shape, t.requires_grad))
            self._layer_state.append((layer, kernel, bias, layer.activation, trainable))
            if trainable:
                self._grads += [spec["dw"], spec["db"]] if bias is not None else [spec["dw"]]
        loss_ws, units = workspaces[-1], specs[-1]["y"].shape[1]
        self._step = kernels.DenseForwardBackward(
            specs, loss_ws.get("probs", (rows, units)), loss_ws.get("row_loss", (rows,)),
            loss_ws.get("dlogits", (rows, units)), sparse_targets)
        self.logits = specs[-1]["y"]
        self._params = model.trainable_weights
        self._slots = None  # the optimizer's state, taken at the first update (as autograd does)

    def matches(self, model):
        """Whether this plan still computes what the autograd step would for `model`."""
        if (model.optimizer is not self.optimizer or model.loss is not self.loss
                or model._layers != self.layers or function._check_finite
                or model.loss.from_logits != self.from_logits):
            return False
        for layer, kernel, bias, activation, trainable in self._layer_state:
            if (layer.kernel is not kernel or layer.bias is not bias
                    or layer.activation != activation or layer.trainable != trainable):
                return False
        for t, array, shape, requires_grad in self._weights:
            if (t.data is not array or array.shape != shape or t.requires_grad != requires_grad
                    or not _updatable(array)):
                return False
        if self._slots is not None:
            state = self.optimizer._slots
            for t, slots in zip(self._params, self._slot_tuples):
                if state.get(t) is not slots:
                    return False
        return True

    def step(self, xb, yb):
        """One training step on the batch (xb, yb); returns (loss value, the batch's
        logits). Like ``train_step``, a NaN or infinite loss applies no update and
        sets ``model.stop_training``."""
        global _planned_steps
        value = self._step.run(xb, yb)
        _planned_steps += 1
        if not math.isfinite(value):
            self.model.stop_training = True
        else:
            self._update()
        return value, self.logits[:len(xb)]

    def _update(self):
        """What ``optimizer.step(trainable_weights)`` does, with the lists built once."""
        opt = self.optimizer
        if self._slots is None:
            self._slot_tuples = [opt._slot(t) for t in self._params]
            self._slots = [[s[k] for s in self._slot_tuples] for k in range(len(opt._slot_names))]
            self._param_arrays = [t.data for t in self._params]
        opt._update(self._param_arrays, self._grads, self._slots, opt.iterations + 1)
        opt.iterations += 1

