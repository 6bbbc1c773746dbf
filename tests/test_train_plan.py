"""Planned training steps (minigrad/train_plan.py) against the autograd graph.

The plan must give the autograd step's numbers bit for bit: weights, optimizer
state, iteration count and every logged loss/metric, over whole fits with
shuffling and a short last batch, for every model shape it accepts, and after
any change a callback can make between steps. Models it does not accept must
run on the graph (planned_steps() tells which path ran).
"""
import re

import numpy as np
import pytest

import minigrad as mg
from minigrad import callbacks, kernels, layers, losses, models, optimizers, reference, train_plan, utils
from minigrad.datasets import mnist
from helpers import assert_bitwise_equal, assert_same_state, mnist_dir

F32 = np.float32


def data(n=1000, features=30, classes=10, seed=0, zeros=0.0, sparse=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(F32)
    if zeros:
        x[rng.random(x.shape) < zeros] = 0.0
    labels = (x[:, :classes] + 0.5 * rng.standard_normal((n, classes))).argmax(axis=1)
    return x, (labels.astype(np.int64) if sparse else utils.to_categorical(labels, classes))


def book(features=30, classes=10, optimizer="rmsprop", sparse=False):
    model = models.Sequential([layers.Dense(64, activation="relu", input_shape=(features,)),
                               layers.Dense(classes, activation="softmax")])
    loss = "sparse_categorical_crossentropy" if sparse else "categorical_crossentropy"
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model


def from_logits(last_activation=None):
    model = models.Sequential([layers.Dense(32, activation="relu", input_shape=(30,)),
                               layers.Dense(10, activation=last_activation)])
    model.compile(optimizer=optimizers.RMSprop(learning_rate=0.003),
                  loss=losses.CategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def deep(optimizer=None, frozen=()):
    model = models.Sequential([layers.Dense(32, activation="relu", input_shape=(30,)),
                               layers.Dense(16, use_bias=False),
                               layers.Dense(24, activation="relu"),
                               layers.Dense(10, activation="softmax")])
    for i in frozen:
        model.layers[i].trainable = False
    model.compile(optimizer=optimizer or optimizers.Adam(learning_rate=0.002),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def fit(build, x, y, planned, seed=0, threads=None, **kwargs):
    """(model, history, planned steps) of a fit from the same seed on one path."""
    previous_enabled, previous_threads = train_plan.enabled(), kernels.get_num_threads()
    train_plan.set_enabled(planned)
    if threads:
        kernels.set_num_threads(threads)
    try:
        utils.set_random_seed(seed)
        model = build()
        before = train_plan.planned_steps()
        kwargs.setdefault("epochs", 2)
        kwargs.setdefault("batch_size", 128)
        history = model.fit(x, y, verbose=0, **kwargs)
        return model, history, train_plan.planned_steps() - before
    finally:
        train_plan.set_enabled(previous_enabled)
        kernels.set_num_threads(previous_threads)


def assert_same_training(a, b, what):
    (ma, ha, _), (mb, hb, _) = a, b
    assert_same_state(ma, mb, what)
    assert ha.history.keys() == hb.history.keys(), what
    for key in ha.history:  # every logged float, exactly (NaN equal to NaN)
        np.testing.assert_array_equal(ha.history[key], hb.history[key], err_msg=f"{what}: {key}")
    assert repr(ha.invalid_loss) == repr(hb.invalid_loss), what
    assert all(w.grad is None for w in ma.weights), what


def steps_of(n, batch_size, epochs=2):
    return epochs * -(-n // batch_size)


CASES = {
    "book one-hot": (lambda: book(), {}),
    "book sparse labels": (lambda: book(sparse=True), {"sparse": True}),
    "from logits": (lambda: from_logits(), {}),
    "from logits, relu output": (lambda: from_logits("relu"), {}),
    "deep, no bias, adam": (lambda: deep(), {}),
    "first layer frozen, nesterov": (lambda: deep(optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                                                  frozen=(0,)), {}),
    "middle frozen, plain sgd": (lambda: deep(optimizers.SGD(0.05), frozen=(1, 2)), {}),
    "last frozen": (lambda: deep(frozen=(3,)), {}),
    "mostly-zero inputs": (lambda: book(), {"zeros": 0.8}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_planned_fit_equals_the_autograd_fit_bitwise(case):
    build, data_kwargs = CASES[case]
    x, y = data(**data_kwargs)  # 1000 samples: the last batch of 128 has 104
    planned, autograd = fit(build, x, y, True), fit(build, x, y, False)
    assert planned[2] == steps_of(1000, 128) and autograd[2] == 0
    assert_same_training(planned, autograd, case)
    assert planned[1].history["loss"][1] < planned[1].history["loss"][0]  # it did learn


@pytest.mark.parametrize("fit_kwargs", [{"shuffle": False}, {"batch_size": 4096}, {"batch_size": 1},
                                        {"validation_split": 0.2}],
                         ids=["in order", "one batch", "batch of 1", "validation split"])
def test_batching_options_equal_autograd(fit_kwargs):
    x, y = data(n=300)
    kwargs = dict(fit_kwargs, epochs=1 if fit_kwargs.get("batch_size") == 1 else 2)
    planned, autograd = fit(book, x, y, True, **kwargs), fit(book, x, y, False, **kwargs)
    assert planned[2] > 0
    assert_same_training(planned, autograd, str(fit_kwargs))


def test_real_mnist_steps_equal_autograd_and_do_not_depend_on_threads():
    (x, y), _ = mnist.load_data(mnist_dir())
    x = x[:2560].reshape(-1, 784).astype(F32) / 255  # 81% exact zeros: the zero-skipping GEMM runs
    y = utils.to_categorical(y[:2560], 10)
    build = lambda: book(features=784)  # noqa: E731
    skipped = kernels.zero_skipping_calls()
    runs = [fit(build, x, y, True, threads=1, epochs=1), fit(build, x, y, True, threads=3, epochs=1),
            fit(build, x, y, False, threads=2, epochs=1)]
    assert kernels.zero_skipping_calls() - skipped >= 2 * 3 * 20  # x @ W1 and x.T @ dz, 20 steps, 3 runs
    assert runs[0][2] == runs[1][2] == 20
    assert_same_training(runs[0], runs[1], "1 vs 3 threads")
    assert_same_training(runs[0], runs[2], "planned vs autograd")


def test_nan_loss_stops_without_the_update_like_autograd(capsys):
    x, y = data(n=512)
    x[300] = np.inf  # in the third batch of the in-order epoch
    planned = fit(book, x, y, True, shuffle=False, batch_size=128)
    autograd = fit(book, x, y, False, shuffle=False, batch_size=128)
    assert planned[1].invalid_loss is not None and planned[1].invalid_loss["batch"] == 2
    assert planned[0].optimizer.iterations == 2
    assert_same_training(planned, autograd, "NaN loss")


# ------------------------------------------------------------ changes between steps

class AtBatch(callbacks.Callback):
    """Calls change(model) at the end of the given batches of the first epoch."""

    def __init__(self, batches, change):
        super().__init__()
        self.batches, self.change, self.epoch = set(batches), change, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 0 and batch in self.batches:
            self.change(self.model)


def replace_kernel(model):
    layer = model.layers[0]
    layer.kernel.data = np.ascontiguousarray(layer.kernel.data[:, ::-1] * F32(0.5))


def swap_optimizer(model):
    model.optimizer = optimizers.SGD(0.02, momentum=0.5)


def restore_optimizer_state(model):
    # what load_weights(include_optimizer=True) does: fresh slot arrays
    opt = model.optimizer
    for t in list(opt._slots):
        opt._slots[t] = tuple(np.array(s * F32(0.5)) for s in opt._slots[t])


def unfreeze_all(model):
    for layer in model.layers:
        layer.trainable = True


CHANGES = {
    "kernel replaced": ([2], replace_kernel, 16),
    "layer frozen": ([2], lambda m: setattr(m.layers[0], "trainable", False), 16),
    "layers unfrozen": ([1], unfreeze_all, 16),
    "learning rate decayed every step": (range(8), lambda m: setattr(
        m.optimizer, "learning_rate", m.optimizer.learning_rate * 0.8), 16),
    "optimizer swapped": ([3], swap_optimizer, 16),
    "optimizer state replaced": ([3], restore_optimizer_state, 16),
    "weights set in place": ([3], lambda m: m.set_weights([w * 0.9 for w in m.get_weights()]), 16),
    "check_finite turned on": ([2], lambda m: mg.set_check_finite(True), 3),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_callback_changing_the_model_gives_the_autograd_result(change):
    batches, action, expected_planned = CHANGES[change]
    x, y = data(n=1000)
    build = (lambda: deep(frozen=(0,))) if change == "layers unfrozen" else deep
    try:
        planned = fit(build, x, y, True, callbacks=[AtBatch(batches, action)])
    finally:
        mg.set_check_finite(False)
    try:
        autograd = fit(build, x, y, False, callbacks=[AtBatch(batches, action)])
    finally:
        mg.set_check_finite(False)
    assert planned[2] == expected_planned  # 16 = every step; check_finite: the graph after batch 2
    assert_same_training(planned, autograd, change)


@pytest.mark.parametrize("break_it", [
    lambda m: setattr(m.layers[0].kernel.data, "shape", (16, 30)),  # (30, 32) reshaped in place
    lambda m: setattr(m.layers[1].kernel.data, "shape", (-1,)),
    lambda m: setattr(m.layers[0].bias.data.flags, "writeable", False),
    lambda m: setattr(m.layers[0], "kernel", mg.Tensor(np.zeros((5, 32), F32), requires_grad=True)),
], ids=["kernel reshaped", "kernel flattened", "bias read-only", "kernel of the wrong shape"])
def test_a_callback_breaking_a_weight_gets_the_autograd_error_not_a_crash(break_it):
    x, y = data(n=1000)
    errors = []
    for planned in (True, False):
        with pytest.raises((ValueError, TypeError)) as info:
            fit(deep, x, y, planned, callbacks=[AtBatch([2], break_it)])
        errors.append((type(info.value), re.sub(r"dense_\d+", "dense_N", str(info.value))))
    assert errors[0] == errors[1]


# ------------------------------------------------------------ what the plan declines

class MyDense(layers.Dense):
    pass


class MyRMSprop(optimizers.RMSprop):
    pass


def compiled(layer_list, loss="categorical_crossentropy", optimizer="rmsprop"):
    model = models.Sequential(layer_list)
    model.compile(optimizer=optimizer, loss=loss)
    return model


def softmax_hidden():
    return compiled([layers.Dense(8, activation="softmax", input_shape=(30,)),
                     layers.Dense(10, activation="softmax")])


def custom_loss(y_true, y_pred):
    return losses.categorical_crossentropy(y_true, y_pred)


class OwnStep(models.Sequential):
    def train_step(self, x, y):
        return super().train_step(x, y)


DECLINED = {
    "Dense subclass": lambda: compiled([MyDense(10, activation="softmax", input_shape=(30,))]),
    "hidden softmax": softmax_hidden,
    "loss function": lambda: compiled([layers.Dense(10, activation="softmax", input_shape=(30,))],
                                      loss=custom_loss),
    "probabilities from a linear layer": lambda: compiled(
        [layers.Dense(10, input_shape=(30,))], loss="categorical_crossentropy"),
    "optimizer subclass": lambda: compiled([layers.Dense(10, activation="softmax", input_shape=(30,))],
                                           optimizer=MyRMSprop()),
    "train_step overridden": lambda: OwnStep([layers.Dense(10, activation="softmax", input_shape=(30,))]),
}


@pytest.mark.parametrize("case", list(DECLINED))
def test_models_the_plan_does_not_cover_train_on_the_graph(case):
    x, y = data(n=200)
    model = DECLINED[case]()
    if not model.compiled:
        model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
    model.build((30,))
    assert isinstance(train_plan.unsupported_reason(model, x, y), str)
    before = train_plan.planned_steps()
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert train_plan.planned_steps() == before


def test_check_finite_and_the_switch_send_fit_to_the_graph():
    x, y = data(n=200)
    for setting in (lambda: mg.set_check_finite(True), lambda: train_plan.set_enabled(False)):
        model = book()
        setting()
        try:
            before = train_plan.planned_steps()
            model.fit(x, y, batch_size=64, epochs=1, verbose=0)
            assert train_plan.planned_steps() == before
        finally:
            mg.set_check_finite(False)
            train_plan.set_enabled(True)
    with pytest.raises(TypeError, match="set_enabled: expected True or False"):
        train_plan.set_enabled("yes")


def test_planned_fit_allocates_nothing_after_the_first_epoch():
    x, y = data(n=1000)
    model = book()
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)
    stats = mg.workspace_stats()
    before = train_plan.planned_steps()
    model.fit(x, y, batch_size=128, epochs=2, verbose=0)
    assert train_plan.planned_steps() - before == 16
    assert mg.workspace_stats() == stats


# ------------------------------------------------------------ the kernels-level objects

def step_arrays(rng, rows=8, sizes=(6, 5, 3), relu=(True, False)):
    """Specs for a DenseForwardBackward of len(sizes)-1 layers, fresh buffers."""
    specs = []
    for i, (k, units) in enumerate(zip(sizes, sizes[1:])):
        specs.append({"w": rng.standard_normal((k, units)).astype(F32), "b": np.zeros(units, F32),
                      "y": np.empty((rows, units), F32), "db": np.empty(units, F32),
                      "dw": np.empty((k, units), F32),
                      "dz": np.empty((rows, units), F32) if relu[i] else None,
                      "dx": np.empty((rows, k), F32) if i else None,
                      "relu": relu[i], "need_w": True, "need_b": True, "need_x": i > 0})
    c = sizes[-1]
    return specs, np.empty((rows, c), F32), np.empty(rows, F32), np.empty((rows, c), F32)


def test_dense_forward_backward_equals_the_separate_kernels(rng):
    specs, probs, row_loss, dlogits = step_arrays(rng)
    step = kernels.DenseForwardBackward(specs, probs, row_loss, dlogits, sparse_targets=True)
    x, labels = rng.standard_normal((5, 6)).astype(F32), np.array([0, 2, 1, 1, 0])
    loss = step.run(x, labels)
    (w1, b1), (w2, b2) = (specs[0]["w"], specs[0]["b"]), (specs[1]["w"], specs[1]["b"])
    h = kernels.gemm(x, w1, bias=b1, relu=True)
    z = kernels.gemm(h, w2, bias=b2)
    want_loss, p, _ = kernels.softmax_xent_forward(z, labels)
    dz2 = kernels.softmax_xent_backward(p, labels, 1.0 / 5)
    dh = kernels.gemm(dz2, w2, trans_b=True)
    dz1, db1 = kernels.relu_backward_bias_grad(h, dh)
    assert loss == want_loss
    assert_bitwise_equal(specs[1]["dw"], kernels.gemm(h, dz2, trans_a=True), "dW2")
    assert_bitwise_equal(specs[1]["db"], kernels.bias_grad(dz2), "db2")
    assert_bitwise_equal(specs[0]["dw"], kernels.gemm(x, dz1, trans_a=True), "dW1")
    assert_bitwise_equal(specs[0]["db"], db1, "db1")
    assert_bitwise_equal(specs[0]["y"][:5], h, "h")


@pytest.mark.parametrize("sparse", [True, False], ids=["labels", "rows"])
@pytest.mark.parametrize("flags", ["all", "first frozen", "last frozen"])
def test_dense_forward_backward_matches_its_numpy_twin(rng, sparse, flags):
    sizes, relu = (30, 17, 9, 4), (True, False, False)
    made = []
    for backend in (kernels, reference):
        r = np.random.default_rng(7)
        specs, probs, row_loss, dlogits = step_arrays(r, rows=12, sizes=sizes, relu=relu)
        frozen = {"first frozen": 0, "last frozen": 2}.get(flags)
        if frozen is not None:
            specs[frozen].update(need_w=False, need_b=False)
            for i in range(len(specs)):  # dx only above a trainable layer
                specs[i]["need_x"] = any(specs[j]["need_w"] for j in range(i))
        x = r.standard_normal((10, sizes[0])).astype(F32)
        labels = r.integers(0, sizes[-1], 10)
        target = labels if sparse else utils.to_categorical(labels, sizes[-1])
        for spec in specs:  # sentinels: what is not written must stay as it was
            for name in ("y", "dz", "db", "dw", "dx"):
                if spec[name] is not None:
                    spec[name][...] = 7.0
        step = backend.DenseForwardBackward(specs, probs, row_loss, dlogits, sparse_targets=sparse)
        made.append((step.run(x, target), specs, dlogits))
    (loss_c, specs_c, dl_c), (loss_n, specs_n, dl_n) = made
    assert loss_c == pytest.approx(loss_n, rel=1e-5)
    np.testing.assert_allclose(dl_c[:10], dl_n[:10], rtol=1e-5, atol=1e-7)
    for i, (sc, sn) in enumerate(zip(specs_c, specs_n)):
        for name in ("y", "dz", "db", "dw", "dx"):
            if sc[name] is not None:
                np.testing.assert_allclose(sc[name], sn[name], rtol=1e-4, atol=1e-5,
                                           err_msg=f"layer {i} {name} ({flags})")


def test_row_gather_matches_its_numpy_twin(rng):
    src = rng.standard_normal((40, 3)).astype(F32)
    order = rng.permutation(40)
    got = []
    for backend in (kernels, reference):
        g = backend.RowGather(src, 16)
        g.set_order(order)
        got.append([g.take(a, b).copy() for a, b in ((0, 16), (16, 32), (32, 40))])
    for a, b in zip(*got):
        assert_bitwise_equal(a, b, "batch")


def test_dense_forward_backward_refuses_bad_arrays(rng):
    def build(change):
        specs, probs, row_loss, dlogits = step_arrays(rng)
        args = {"probs": probs, "row_loss": row_loss, "dlogits": dlogits}
        change(specs, args)
        return kernels.DenseForwardBackward(specs, args["probs"], args["row_loss"], args["dlogits"], True)
    bad = [
        (lambda s, a: s[1].update(w=np.zeros((4, 3), F32)), "layer 1 expects 4 inputs, layer 0 gives 5"),
        (lambda s, a: s[0].update(w=s[0]["w"].astype(np.float64)), "expected layer 0 w to be a float32 array"),
        (lambda s, a: s[0].update(dw=np.empty((5, 6), F32)), "expected layer 0 dw of shape (6, 5)"),
        (lambda s, a: s[0].update(dz=None), "expected layer 0 dz to be a float32 array"),
        (lambda s, a: s[1].update(dx=s[0]["y"]), "must not share memory"),
        (lambda s, a: a.update(probs=a["dlogits"]), "probs must not share memory with dlogits"),
        (lambda s, a: s[0]["dw"].setflags(write=False), "writeable"),
        (lambda s, a: s[1].update(b=None), "layer 1 has need_b but no bias"),
    ]
    for change, message in bad:
        with pytest.raises((TypeError, ValueError), match=re.escape(message)):
            build(change)


def test_dense_forward_backward_refuses_bad_batches(rng):
    specs, probs, row_loss, dlogits = step_arrays(rng, rows=8)
    step = kernels.DenseForwardBackward(specs, probs, row_loss, dlogits, sparse_targets=True)
    x, labels = rng.standard_normal((5, 6)).astype(F32), np.zeros(5, np.int64)
    bad = [
        ((np.zeros((9, 6), F32), np.zeros(9, np.int64)), "expected x to be a C-contiguous float32 array of shape (1..8, 6)"),
        ((x[:, :5], labels), "shape (1..8, 6)"),
        ((x.T.copy().T, labels), "shape (1..8, 6)"),
        ((x, labels.astype(np.int32)), "expected target to be C-contiguous int64 labels of shape (5,)"),
        ((x, np.array([0, 1, 2, 3, 0])), "a class index is outside"),
    ]
    for args, message in bad:
        with pytest.raises((TypeError, ValueError), match=re.escape(message)):
            step.run(*args)
    square = kernels.DenseForwardBackward(*step_arrays(rng, sizes=(5, 5, 3)), sparse_targets=True)
    clean = rng.standard_normal((5, 5)).astype(F32)
    assert np.isfinite(square.run(clean, labels))  # remembered as clear of the step's buffers
    for _ in range(2):  # ... which must not let an overlapping batch through
        with pytest.raises(ValueError, match="x and target must not share memory with the step's buffers"):
            square.run(square._keep[2][:5], labels)  # x = the first layer's own output buffer
        assert np.isfinite(square.run(clean, labels))
    specs[0]["w"].shape = (5, 6)  # reshaped in place after it was checked
    with pytest.raises(ValueError, match="a weight changed shape"):
        step.run(x, labels)


def test_row_gather(rng):
    src = rng.standard_normal((50, 7)).astype(F32)
    g = kernels.RowGather(src, max_rows=16)
    order = rng.permutation(50)
    g.set_order(order)
    assert_bitwise_equal(g.take(0, 16), src[order[:16]], "first batch")
    assert_bitwise_equal(g.take(48, 50), src[order[48:]], "last batch")
    with pytest.raises(ValueError, match=r"gather_rows: expected 0 <= start <= stop <= 50 and at most 16 rows"):
        g.take(0, 17)
    with pytest.raises(ValueError, match="expected indices in \\[0, 50\\), received 50"):
        g.set_order(np.array([0, 50]))
    with pytest.raises(ValueError, match="C-contiguous, aligned src"):
        kernels.RowGather(src[:, ::2], 4)
    with pytest.raises(TypeError, match="numeric array"):
        kernels.RowGather(np.array([[None]]), 4)
    with pytest.raises(ValueError, match=re.escape("expected set_order() before take()")):
        kernels.RowGather(src, 4).take(0, 0)  # no order yet
