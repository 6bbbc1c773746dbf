"""mg.jit and fit's recorded step: every captured/replayed run equals the eager run bit
for bit (weights, optimizer slots, iterations, returned values), at any thread count;
every guard in the jit contract recaptures instead of replaying stale calls; NaN
handling, check_finite, unrecordable ops and user layers/activations.

The reference is always an eager run of the same model (same seed) on the same
batches, written by hand: ``loss = ...; loss.backward(); opt.step(params);
opt.zero_grad(params)``.
"""
import doctest
import importlib
import warnings

import numpy as np
import pytest

import minigrad as mg
from minigrad import kernels, layers, losses, models, optimizers, utils
from minigrad.jit import NonFiniteLoss, jit, stop_if_not_finite
from minigrad.ops import nn

from helpers import assert_bitwise_equal, assert_same_state

jit_module = importlib.import_module("minigrad.jit")  # the module (mg.jit is the decorator)

F32 = np.float32
FEATURES, HIDDEN, CLASSES = 20, 16, 3


def toy_data(n=112, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, FEATURES)).astype(F32)
    y = x[:, :CLASSES].argmax(axis=1).astype(np.uint8)
    return x, y


def one_hot(y):
    return utils.to_categorical(y, CLASSES)


# ---------------------------------------------------------------- model configurations

def eager_forward(model, x, training=True, pre_activation=False):
    """The model's layers applied by hand; with pre_activation the last Dense's softmax
    is left out (the loss takes it fused, as fit does)."""
    h = x if isinstance(x, mg.Tensor) else mg.Tensor(x)
    for layer in model.layers[:-1]:
        h = layer(h, training=training)
    last = model.layers[-1]
    if pre_activation:
        return mg.dense(h, last.kernel, last.bias)
    return last(h, training=training)


def _sparse_fused(model, x, y):
    return losses.sparse_categorical_crossentropy(y, eager_forward(model, x, pre_activation=True),
                                                  from_logits=True)


def _categorical_fused(model, x, y):
    return losses.categorical_crossentropy(y, eager_forward(model, x, pre_activation=True),
                                           from_logits=True)


def _categorical_logits(model, x, y):
    return losses.categorical_crossentropy(y, eager_forward(model, x), from_logits=True)


def _sparse_logits(model, x, y):
    return losses.sparse_categorical_crossentropy(y, eager_forward(model, x), from_logits=True)


def _categorical_probabilities(model, x, y):
    return losses.categorical_crossentropy(y, eager_forward(model, x))


def _sparse_probabilities(model, x, y):
    return losses.sparse_categorical_crossentropy(y, eager_forward(model, x))


def _binary_fused(model, x, y):
    return losses.binary_crossentropy(y, eager_forward(model, x, pre_activation=True), from_logits=True)


def _binary_logits(model, x, y):
    return losses.binary_crossentropy(y, eager_forward(model, x), from_logits=True)


def _binary_probabilities(model, x, y):
    return losses.binary_crossentropy(y, eager_forward(model, x))


def _mse(model, x, y):
    return losses.mean_squared_error(y, eager_forward(model, x))


def _mae(model, x, y):
    return losses.mean_absolute_error(y, eager_forward(model, x))


def _with_penalties(base):
    """base loss + every layer's weight penalties, in layer order (as fit adds them)."""
    def loss(model, x, y):
        total = base(model, x, y)
        for layer in model.layers:
            for penalty in layer.regularization_losses():
                total = total + penalty
        return total
    return loss


def _dense_stack(last_activation, use_bias=True, frozen_first=False, depth=1, extra=(),
                 hidden_activation="relu", middle=(), **dense_kwargs):
    def make():
        stack = [layers.Dense(HIDDEN, activation=hidden_activation, input_shape=(FEATURES,),
                              use_bias=use_bias, trainable=not frozen_first, **dense_kwargs)]
        stack += [factory() for factory in middle]
        stack += [layers.Dense(HIDDEN, activation="relu", use_bias=use_bias) for _ in range(depth - 1)]
        stack.append(layers.Dense(CLASSES, activation=last_activation, use_bias=use_bias))
        return stack + [factory() for factory in extra]
    return make


# name -> (layers factory, loss factory, targets "sparse"/"onehot", eager loss)
LOSS_CASES = {
    "sparse_softmax_fused": (_dense_stack("softmax"), lambda: "sparse_categorical_crossentropy",
                             "sparse", _sparse_fused),
    "categorical_softmax_fused": (_dense_stack("softmax"), lambda: "categorical_crossentropy",
                                  "onehot", _categorical_fused),
    "categorical_from_logits_linear": (_dense_stack("linear"),
                                       lambda: losses.CategoricalCrossentropy(from_logits=True),
                                       "onehot", _categorical_logits),
    "sparse_from_logits_linear": (_dense_stack(None),
                                  lambda: losses.SparseCategoricalCrossentropy(from_logits=True),
                                  "sparse", _sparse_logits),
    "categorical_probabilities_callable": (
        _dense_stack("softmax"),
        lambda: (lambda y, p: mg.losses.categorical_crossentropy(y, p)),
        "onehot", _categorical_probabilities),
    "sparse_probabilities_activation_layer": (
        _dense_stack("linear", extra=(lambda: layers.Activation("softmax"),)),
        lambda: "sparse_categorical_crossentropy", "sparse", _sparse_probabilities),
    "binary_sigmoid_fused": (_dense_stack("sigmoid", hidden_activation="tanh"),
                             lambda: "binary_crossentropy", "onehot", _binary_fused),
    "binary_from_logits_linear": (_dense_stack("linear"),
                                  lambda: losses.BinaryCrossentropy(from_logits=True),
                                  "onehot", _binary_logits),
    "binary_probabilities_activation_layer": (
        _dense_stack("linear", extra=(lambda: layers.Activation("sigmoid"),)),
        lambda: "binary_crossentropy", "onehot", _binary_probabilities),
    "mse_sigmoid_output": (_dense_stack("sigmoid", hidden_activation="tanh"), lambda: "mse",
                           "onehot", _mse),
    "mae_linear_output": (_dense_stack("linear"), lambda: "mae", "onehot", _mae),
}

ARCH_CASES = {
    "no_bias": (_dense_stack("softmax", use_bias=False), lambda: "sparse_categorical_crossentropy",
                "sparse", _sparse_fused),
    "frozen_first_layer": (_dense_stack("softmax", frozen_first=True),
                           lambda: "sparse_categorical_crossentropy", "sparse", _sparse_fused),
    "deep_relu_output": (_dense_stack("relu", depth=3),
                         lambda: losses.SparseCategoricalCrossentropy(from_logits=True),
                         "sparse", _sparse_logits),
    "dropout": (_dense_stack("softmax", middle=(lambda: layers.Dropout(0.3, seed=5),)),
                lambda: "sparse_categorical_crossentropy", "sparse", _sparse_fused),
    "dropout_unseeded": (_dense_stack("softmax", middle=(lambda: layers.Dropout(0.5),)),
                         lambda: "sparse_categorical_crossentropy", "sparse", _sparse_fused),
    "regularized": (_dense_stack("softmax", kernel_regularizer=mg.regularizers.l2(0.01),
                                 bias_regularizer="l1"),
                    lambda: "sparse_categorical_crossentropy", "sparse",
                    _with_penalties(_sparse_fused)),
}

OPTIMIZERS = {
    "rmsprop_eps_inside": lambda: optimizers.RMSprop(0.01, epsilon_inside=True),
    "rmsprop_eps_outside": lambda: optimizers.RMSprop(0.01, epsilon_inside=False),
    "sgd": lambda: optimizers.SGD(0.1),
    "sgd_momentum": lambda: optimizers.SGD(0.1, momentum=0.9),
    "sgd_nesterov": lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True),
    "adam": lambda: optimizers.Adam(0.01),
}


def make_model(case, make_opt, seed=3):
    make_layers, make_loss, _, _ = case
    utils.set_random_seed(seed)
    model = models.Sequential(make_layers())
    model.compile(optimizer=make_opt(), loss=make_loss())
    return model


def targets(case, y):
    return y.astype(np.int64) if case[2] == "sparse" else one_hot(y)


def fit_model(case, make_opt, x, y, batch_size=32, epochs=2, shuffle=False, seed=3):
    model = make_model(case, make_opt, seed)
    model.fit(x, y if case[2] == "sparse" else one_hot(y), batch_size=batch_size, epochs=epochs,
              verbose=0, shuffle=shuffle)
    return model


def eager_model(case, make_opt, x, y, batch_size=32, epochs=2, shuffle=False, seed=3):
    """The same training, by hand, with the same permutations fit draws."""
    model = make_model(case, make_opt, seed)
    eager_loss, opt = case[3], model.optimizer
    yt, n = targets(case, y), len(x)
    for _ in range(epochs):
        order = utils.rng().permutation(n) if shuffle else np.arange(n)
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            params = model.trainable_weights
            loss = eager_loss(model, x[rows], yt[rows])
            loss.backward()
            opt.step(params)
            opt.zero_grad(params)
    return model


def assert_models_equal(a, b, what):
    assert_same_state(a, b, what)
    assert len(a.optimizer.variables()) == len(b.optimizer.variables()), what
    for i, (la, lb) in enumerate(zip(a.layers, b.layers)):  # the tensors the layers read now
        for attr in ("kernel", "bias", "scale"):
            ta, tb = getattr(la, attr, None), getattr(lb, attr, None)
            assert (ta is None) == (tb is None), (what, i, attr)
            if ta is not None:
                assert_bitwise_equal(ta.data, tb.data, f"{what}: layer {i} {attr}")


# ---------------------------------------------------------------- 1. fit == eager

@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("case_name", sorted(LOSS_CASES))
def test_fit_replays_equal_eager_bitwise(case_name, opt_name):
    case, make_opt = LOSS_CASES[case_name], OPTIMIZERS[opt_name]
    x, y = toy_data(112)  # 32, 32, 32, 16: two signatures per epoch
    fitted = fit_model(case, make_opt, x, y)
    stats = fitted._step_function("fit").stats()
    assert stats["captures"] == 2 and stats["replays"] == 6 and stats["eager"] == 0, stats
    reference = eager_model(case, make_opt, x, y)
    assert_models_equal(fitted, reference, f"{case_name}/{opt_name}")
    assert fitted.optimizer.iterations == 8
    initial = make_model(case, make_opt)
    assert any(not np.array_equal(a, b) for a, b in zip(fitted.get_weights(), initial.get_weights()))


@pytest.mark.parametrize("opt_name", ["adam", "sgd_momentum", "rmsprop_eps_outside"])
@pytest.mark.parametrize("case_name", sorted(ARCH_CASES))
def test_fit_architectures_equal_eager_bitwise(case_name, opt_name):
    case, make_opt = ARCH_CASES[case_name], OPTIMIZERS[opt_name]
    x, y = toy_data(112)
    fitted = fit_model(case, make_opt, x, y)
    reference = eager_model(case, make_opt, x, y)
    assert_models_equal(fitted, reference, f"{case_name}/{opt_name}")
    assert fitted._step_function("fit").stats()["replays"] == 6
    if case_name.startswith("dropout"):
        assert fitted.layers[1]._counter.value == reference.layers[1]._counter.value == 8
        x_eval = x[:16]
        assert_bitwise_equal(fitted.predict(x_eval, verbose=0),
                             eager_forward(reference, x_eval, training=False).data, "no dropout")
    if case_name == "frozen_first_layer":
        initial = make_model(case, make_opt)
        assert_bitwise_equal(fitted.layers[0].kernel.data, initial.layers[0].kernel.data, "frozen")
        assert_bitwise_equal(fitted.layers[0].bias.data, initial.layers[0].bias.data, "frozen")
        assert not np.array_equal(fitted.layers[1].kernel.data, initial.layers[1].kernel.data)


@pytest.mark.parametrize("case_name", ["sparse_softmax_fused", "categorical_probabilities_weighted",
                                       "binary_sigmoid_fused", "mse_sigmoid_output"])
def test_fit_sample_weight_equals_eager(case_name):
    if case_name == "categorical_probabilities_weighted":
        case = (_dense_stack("linear", extra=(lambda: layers.Activation("softmax"),)),
                lambda: "categorical_crossentropy", "onehot", None)
        function = losses.categorical_crossentropy
    else:
        case = LOSS_CASES[case_name]
        function = {"sparse_softmax_fused": losses.sparse_categorical_crossentropy,
                    "binary_sigmoid_fused": losses.binary_crossentropy,
                    "mse_sigmoid_output": losses.mean_squared_error}[case_name]
    fused = case_name.endswith("fused")
    x, y = toy_data(112)
    weights = np.random.default_rng(5).uniform(0.2, 2.0, len(x)).astype(F32)
    fitted = make_model(case, OPTIMIZERS["adam"])
    fitted.fit(x, y if case[2] == "sparse" else one_hot(y), batch_size=32, epochs=2, verbose=0,
               shuffle=False, sample_weight=weights)
    assert fitted._step_function("fit").stats()["replays"] == 6

    reference = make_model(case, OPTIMIZERS["adam"])
    yt = targets(case, y)
    for _ in range(2):
        for start in range(0, len(x), 32):
            rows = slice(start, start + 32)
            params = reference.trainable_weights
            out = eager_forward(reference, x[rows], pre_activation=fused)
            extra = {"from_logits": True} if fused else {}
            loss = function(yt[rows], out, sample_weight=weights[rows], **extra)
            loss.backward()
            reference.optimizer.step(params)
            reference.optimizer.zero_grad(params)
    assert_models_equal(fitted, reference, f"sample_weight/{case_name}")


def test_fit_class_weight_with_shuffle_equals_eager():
    case = LOSS_CASES["sparse_softmax_fused"]
    class_weight = {0: 1.0, 1: 2.5, 2: 0.5}
    x, y = toy_data(112)
    fitted = make_model(case, OPTIMIZERS["rmsprop_eps_inside"])
    fitted.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=True, class_weight=class_weight)
    reference = make_model(case, OPTIMIZERS["rmsprop_eps_inside"])
    yt = y.astype(np.int64)
    weights = np.array([class_weight[int(c)] for c in y], F32)
    for _ in range(2):
        order = utils.rng().permutation(len(x))
        for start in range(0, len(x), 32):
            rows = order[start:start + 32]
            params = reference.trainable_weights
            loss = losses.sparse_categorical_crossentropy(
                yt[rows], eager_forward(reference, x[rows], pre_activation=True), from_logits=True,
                sample_weight=weights[rows])
            loss.backward()
            reference.optimizer.step(params)
            reference.optimizer.zero_grad(params)
    assert_models_equal(fitted, reference, "class_weight")


def test_fit_with_shuffle_equals_eager_with_the_same_permutations():
    case, make_opt = LOSS_CASES["sparse_softmax_fused"], OPTIMIZERS["adam"]
    x, y = toy_data(112)
    fitted = fit_model(case, make_opt, x, y, epochs=3, shuffle=True)
    reference = eager_model(case, make_opt, x, y, epochs=3, shuffle=True)
    assert_models_equal(fitted, reference, "shuffled")
    unshuffled = fit_model(case, make_opt, x, y, epochs=3, shuffle=False)
    assert not np.array_equal(fitted.get_weights()[0], unshuffled.get_weights()[0])


def test_fit_bits_identical_at_1_2_3_threads(restore_threads):
    def wide():
        return [layers.Dense(64, activation="relu", input_shape=(FEATURES,)),
                layers.Dense(64, activation="relu"), layers.Dense(CLASSES, activation="softmax")]
    case = (wide, lambda: "sparse_categorical_crossentropy", "sparse", _sparse_fused)
    make_opt = OPTIMIZERS["adam"]
    x, y = toy_data(320)
    results = {}
    for threads in (1, 2, 3):
        mg.set_num_threads(threads)
        assert mg.get_num_threads() == threads
        results[threads] = fit_model(case, make_opt, x, y, batch_size=128, epochs=2)
        assert results[threads]._step_function("fit").stats()["replays"] == 4
        reference = eager_model(case, make_opt, x, y, batch_size=128, epochs=2)
        assert_models_equal(results[threads], reference, f"{threads} threads vs eager")
    assert_models_equal(results[2], results[1], "2 vs 1 threads")
    assert_models_equal(results[3], results[1], "3 vs 1 threads")


def test_convnet_fit_equals_eager(restore_threads):
    def convnet():
        return [layers.Input(shape=(8, 8, 2)),
                layers.Conv2D(4, (3, 3), activation="relu"),
                layers.MaxPooling2D((2, 2)),
                layers.Conv2D(3, 2, padding="same", activation="relu"),
                layers.Flatten(),
                layers.Dense(CLASSES, activation="softmax")]
    case = (convnet, lambda: "sparse_categorical_crossentropy", "sparse", _sparse_fused)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((96, 8, 8, 2)).astype(F32)
    y = (x[:, :3, :3, 0].sum(axis=(1, 2)) > 0).astype(np.uint8) + (x[:, 0, 0, 1] > 1)
    for threads in (1, 2):
        mg.set_num_threads(threads)
        for opt_name in ("adam", "sgd_nesterov"):
            fitted = fit_model(case, OPTIMIZERS[opt_name], x, y, batch_size=40)  # 40, 40, 16
            assert fitted._step_function("fit").stats()["replays"] == 4
            reference = eager_model(case, OPTIMIZERS[opt_name], x, y, batch_size=40)
            assert_models_equal(fitted, reference, f"convnet/{opt_name}/{threads} threads")
            assert_bitwise_equal(fitted.predict(x, verbose=0), eager_forward(reference, x, False).data,
                                 "convnet predict")


# ---------------------------------------------------------------- 2. mg.jit on a user step

def simple_model(seed=0, opt=None, hidden=HIDDEN):
    utils.set_random_seed(seed)
    model = models.Sequential([layers.Dense(hidden, activation="relu", input_shape=(FEATURES,)),
                               layers.Dense(CLASSES)])
    model.compile(optimizer=opt or optimizers.RMSprop(0.01),
                  loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def user_step(model):
    """The docstring pattern; reads the model's optimizer and weights on each (re)capture."""
    def step(x, y):
        params = model.trainable_weights
        loss = mg.softmax_cross_entropy(model(x, training=True), y)
        loss.backward()
        model.optimizer.step(params)
        model.optimizer.zero_grad(params)
        return loss
    return step


def batches(sizes, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        x = rng.standard_normal((n, FEATURES)).astype(F32)
        out.append((x, x[:, :CLASSES].argmax(axis=1).astype(np.int64)))
    return out


class Pair:
    """The same model twice (same seed): one trained through mg.jit, one eagerly."""

    def __init__(self, seed=0, opt=lambda: optimizers.RMSprop(0.01), model=simple_model):
        self.jm, self.em = model(seed, opt()), model(seed, opt())
        self.jstep, self.estep = jit(user_step(self.jm)), user_step(self.em)

    def run(self, data, what=""):
        for i, (x, y) in enumerate(data):
            got = self.jstep(x, y).data.copy()
            want = self.estep(x, y).data.copy()
            assert_bitwise_equal(got, want, f"{what} loss of call {i}")
        assert_models_equal(self.jm, self.em, what)

    def both(self, change):
        change(self.jm)
        change(self.em)

    @property
    def stats(self):
        return self.jstep.stats()


def test_mg_jit_is_the_decorator_of_the_docstring():
    assert callable(mg.jit), f"mg.jit is {mg.jit!r}, not the jit decorator"
    failures, _ = doctest.testmod(jit_module, verbose=False, report=False)
    assert failures == 0, "the example in minigrad/jit.py's docstring fails"
    assert mg.jit.stop_if_not_finite is stop_if_not_finite
    assert mg.jit.NonFiniteLoss is NonFiniteLoss


def test_set_enabled_false_runs_eagerly_with_the_same_bits():
    pair = Pair(opt=lambda: optimizers.Adam(0.01))
    pair.run(batches([8, 8]), "enabled")
    mg.jit.set_enabled(False)
    try:
        assert mg.jit.enabled() is False
        pair.run(batches([8, 8], seed=2), "disabled")
        assert pair.stats["eager"] == 2 and pair.stats["replays"] == 1
    finally:
        mg.jit.set_enabled(True)
    pair.run(batches([8], seed=3), "enabled again")
    assert pair.stats["replays"] == 2 and pair.stats["captures"] == 1


def test_jitted_step_equals_eager_for_n_calls():
    pair = Pair(opt=lambda: optimizers.Adam(0.01))
    data = batches([8] * 6)
    for i, (x, y) in enumerate(data):
        got = pair.jstep(x, y)
        assert isinstance(got, mg.Tensor) and not got.requires_grad
        got = got.data.copy()
        want = pair.estep(x, y).data.copy()
        assert_bitwise_equal(got, want, f"loss {i}")
        assert_models_equal(pair.jm, pair.em, f"after call {i}")
    assert pair.stats["captures"] == 1 and pair.stats["replays"] == 5 and pair.stats["eager"] == 0
    assert pair.stats["recordings"] == 1 and pair.stats["last_recapture"] is None
    assert pair.jm.optimizer.iterations == 6


def test_returned_tensor_is_overwritten_by_the_next_call():
    pair = Pair()
    (x1, y1), (x2, y2) = batches([8, 8])
    first = pair.jstep(x1, y1)
    pair.jstep(x2, y2)  # replay: the returned tensor shares the recording's memory
    pair.estep(x1, y1)
    want_second = pair.estep(x2, y2).data.copy()
    assert_bitwise_equal(first.data, want_second, "documented: the next call overwrites")


def test_new_signature_recaptures_and_both_replay():
    pair = Pair(opt=lambda: optimizers.SGD(0.1, momentum=0.9))
    pair.run(batches([8, 5]), "first of each shape")
    assert pair.stats["captures"] == 2 and pair.stats["replays"] == 0
    pair.run(batches([8, 5, 8, 5, 5], seed=2), "replays")
    assert pair.stats["captures"] == 2 and pair.stats["replays"] == 5
    assert pair.stats["recordings"] == 2


def test_dtype_and_grad_mode_are_part_of_the_signature():
    model = simple_model()

    @jit
    def forward(x):
        return model(x)
    x = np.random.default_rng(0).standard_normal((4, FEATURES))
    a = forward(x.astype(F32)).data.copy()
    b = forward(x).data.copy()  # float64: another signature
    with mg.no_grad():
        c = forward(x.astype(F32)).data.copy()
    assert forward.stats()["captures"] == 3
    want = model(x.astype(F32)).data
    for got in (a, b, c):
        assert_bitwise_equal(got, want, "forward")


def test_nested_jit_keyword_tensors_and_methods():
    model = simple_model()

    @jit
    def inner(x):
        return model(x) * 2.0

    @jit
    def outer(x, *, shift):
        return inner(x) + shift

    class Net:
        @jit
        def forward(self, x):
            return model(x)
    nets = Net(), Net()
    for i, (x, _) in enumerate(batches([4, 4, 4])):
        want = model(x).data
        assert_bitwise_equal(outer(mg.Tensor(x), shift=1.5).data, (model(x) * 2.0 + 1.5).data, "outer")
        for net in nets:
            assert_bitwise_equal(net.forward(x).data, want, f"method, call {i}")
    assert outer.stats()["captures"] == 1 and outer.stats()["replays"] == 2
    assert inner.stats()["eager"] == 1  # runs inside the outer capture only
    x, _ = batches([4], seed=8)[0]
    assert_bitwise_equal(outer(x, shift=2.5).data, (model(x) * 2.0 + 2.5).data, "another shift")
    assert outer.stats()["captures"] == 2


def test_public_train_step_equals_eager():
    case, make_opt = LOSS_CASES["sparse_softmax_fused"], OPTIMIZERS["rmsprop_eps_outside"]
    jm, em = make_model(case, make_opt), make_model(case, make_opt)
    for i, (x, y) in enumerate(batches([8, 8, 5, 8, 5])):
        loss, out = jm.train_step(x, y)
        probs = []
        want = losses.sparse_categorical_crossentropy(y, eager_forward(em, x, pre_activation=True),
                                                      from_logits=True, probs=probs)
        assert loss == float(want.data), i
        assert_bitwise_equal(out, probs[0], f"output {i} (the fused kernel's softmax)")
        want.backward()
        em.optimizer.step(em.trainable_weights)
        em.optimizer.zero_grad(em.trainable_weights)
    assert_models_equal(jm, em, "train_step")
    assert jm._step_function("train").stats()["replays"] == 3


# ---------------------------------------------------------------- 3. guards

def _replace_data(m):
    m.layers[0].kernel.data = m.layers[0].kernel.data * F32(0.5)


def _replace_data_same_values(m):
    m.layers[0].kernel.data = m.layers[0].kernel.data.copy()  # a replay would write the old array


def _reassign_tensor(m):
    m.layers[1].kernel = mg.Tensor(m.layers[1].kernel.data * F32(-1.0), requires_grad=True)


def _freeze(m):
    m.layers[0].trainable = False


def _compile_new_optimizer(m):
    m.compile(optimizer=optimizers.SGD(0.05, momentum=0.9), loss=m.loss)


def _assign_optimizer(m):
    m.optimizer = optimizers.Adam(0.02)


def _replace_state(m):
    opt = m.optimizer
    for p, slots in list(opt._slots.items()):
        opt._slots[p] = tuple(s * F32(0.5) for s in slots)


def _set_grads(m):
    for p in m.trainable_weights:
        p.grad = np.full(p.shape, 0.01, F32)


GUARDS = {
    "data_replaced": (_replace_data, "a parameter's data was replaced"),
    "data_replaced_same_values": (_replace_data_same_values, "a parameter's data was replaced"),
    "tensor_reassigned": (_reassign_tensor, "a layer, model or loss changed"),
    "layer_frozen": (_freeze, "a layer, model or loss changed"),
    "compile_new_optimizer": (_compile_new_optimizer, "a layer, model or loss changed"),
    "optimizer_assigned": (_assign_optimizer, "a layer, model or loss changed"),
    "optimizer_state_replaced": (_replace_state, "RMSprop's state was replaced"),
    "grad_set_outside": (_set_grads, "a .grad the step reads was changed outside it"),
}


@pytest.mark.parametrize("name", sorted(GUARDS))
def test_guard_recaptures_and_equals_eager(name):
    change, reason = GUARDS[name]
    pair = Pair()
    pair.run(batches([8, 8, 8]), "before")
    assert pair.stats["captures"] == 1 and pair.stats["replays"] == 2
    frozen_before = pair.jm.layers[0].kernel.data.copy()
    pair.both(change)
    pair.run(batches([8], seed=5), f"{name}: first call after the change")
    assert pair.stats["captures"] >= 2, pair.stats
    assert pair.stats["last_recapture"] == reason, pair.stats
    pair.run(batches([8, 8, 8], seed=6), f"{name}: later calls")
    replays = pair.stats["replays"]
    pair.run(batches([8], seed=7), f"{name}: last call")
    assert pair.stats["replays"] == replays + 1, f"{name}: the new recording never replays"
    if name == "layer_frozen":
        assert_bitwise_equal(pair.jm.layers[0].kernel.data, frozen_before, "frozen kernel")
        assert pair.jm.layers[0].kernel.grad is None


@pytest.mark.parametrize("opt", [lambda: optimizers.SGD(0.1, momentum=0.9),
                                 lambda: optimizers.RMSprop(0.01), lambda: optimizers.Adam(0.01)],
                         ids=["sgd", "rmsprop", "adam"])
def test_learning_rate_is_read_live_without_recapture(opt):
    pair = Pair(opt=opt)
    pair.run(batches([8, 8]), "before")
    for rate in (0.003, 0.05):
        pair.both(lambda m: setattr(m.optimizer, "learning_rate", rate))
        pair.run(batches([8, 8], seed=int(rate * 1000)), f"learning_rate={rate}")
    assert pair.stats["captures"] == 1 and pair.stats["replays"] == 5
    # the new rate is really used: a replay at the old rate would differ
    stale = Pair(opt=opt)
    stale.run(batches([8, 8]) + batches([8, 8], seed=3) + batches([8, 8], seed=50), "stale")
    assert not np.array_equal(stale.jm.get_weights()[0], pair.jm.get_weights()[0])


def test_parameter_reshaped_in_place_raises_like_eager_then_recovers():
    pair = Pair()
    pair.run(batches([8, 8]), "before")
    before = pair.jm.get_weights()
    kernels_ = [m.layers[1].kernel.data for m in (pair.jm, pair.em)]
    for k in kernels_:
        k.shape = (CLASSES, HIDDEN)  # (16, 3) -> (3, 16): the layer no longer fits
    (x, y), = batches([8], seed=9)
    with pytest.raises(ValueError) as eager_error:
        pair.estep(x, y)
    with pytest.raises(type(eager_error.value)):
        pair.jstep(x, y)
    assert pair.stats["last_recapture"] == "a parameter changed shape or dtype"
    for k in kernels_:
        k.shape = (HIDDEN, CLASSES)
    for i, (a, b) in enumerate(zip(pair.jm.get_weights(), before)):
        assert_bitwise_equal(a, b, f"weight {i} after the failed step")
    for m in (pair.jm, pair.em):
        m.optimizer.zero_grad(m.trainable_weights)
    pair.run(batches([8, 8, 8], seed=10), "after restoring the shape")


class Scale(layers.Layer):
    """x * scale, scale of shape (features,) made in build."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), name="scale",
                                     initializer=lambda s: utils.rng().uniform(0.5, 1.5, s))

    def call(self, x, training=None):
        return x * self.scale


class TrainingFlag(layers.Layer):
    def call(self, x, training=None):
        return x * 1.0 if training else x * 2.0


def scaled_model(seed=0, opt=None):
    utils.set_random_seed(seed)
    model = models.Sequential([layers.Dense(8, activation=lambda x: x * 0.5, input_shape=(FEATURES,)),
                               TrainingFlag(), Scale(), layers.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer=opt or optimizers.RMSprop(0.01), loss="sparse_categorical_crossentropy")
    return model


def test_parameter_reshaped_in_place_that_still_broadcasts_recaptures():
    pair = Pair(model=scaled_model)
    pair.run(batches([8, 8]), "before")
    for m in (pair.jm, pair.em):
        m.layers[2].scale.data.shape = (1, 8)
    pair.run(batches([8], seed=4), "first call after the reshape")
    assert pair.stats["last_recapture"] == "a parameter changed shape or dtype"
    assert pair.jm.layers[2].scale.shape == (1, 8)
    pair.run(batches([8, 8], seed=5), "later calls")


def test_loss_changed_in_a_callback_recaptures_in_fit():
    """The contract: no layer, model or LOSS changed, else recapture. Here the compiled
    loss object switches to from_logits=True at batch 2 (so it no longer fuses with the
    softmax): fit must then train on softmax outputs treated as logits, as eager does."""
    class FromLogits(mg.callbacks.Callback):
        def on_train_batch_begin(self, b, logs=None):
            if b == 2:
                self.model.loss.from_logits = True
    case = LOSS_CASES["sparse_softmax_fused"]
    make_opt = OPTIMIZERS["sgd"]
    x, y = toy_data(128)
    fitted = make_model(case, make_opt)
    fitted.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False, callbacks=[FromLogits()])

    reference = make_model(case, make_opt)
    yt = y.astype(np.int64)
    for b, start in enumerate(range(0, 128, 32)):
        params = reference.trainable_weights
        xb, yb = x[start:start + 32], yt[start:start + 32]
        if b < 2:
            loss = _sparse_fused(reference, xb, yb)
        else:  # no longer fused: the softmax output is taken as logits
            loss = losses.sparse_categorical_crossentropy(yb, eager_forward(reference, xb),
                                                          from_logits=True)
        loss.backward()
        reference.optimizer.step(params)
        reference.optimizer.zero_grad(params)
    assert_models_equal(fitted, reference, "loss changed at batch 2")


def test_unhashable_argument_changed_in_place_is_not_replayed_stale():
    """Contract: a call replays only when the other arguments are equal. A list that
    now holds another array is not equal to what was captured."""
    model = simple_model()

    @jit
    def forward(batch):
        return model(batch[0])
    x1, x2 = (x for x, _ in batches([4, 4]))
    holder = [x1]
    assert_bitwise_equal(forward(holder).data, model(x1).data, "first call")
    holder[0] = x2
    assert_bitwise_equal(forward(holder).data, model(x2).data, "same list, new array")


def test_invalid_labels_on_a_replay_raise_and_change_nothing():
    pair = Pair(opt=lambda: optimizers.Adam(0.01))
    pair.run(batches([8, 8]), "before")
    (x, y), = batches([8], seed=4)
    y = y.copy()
    y[3] = CLASSES + 4
    with pytest.raises(ValueError):
        pair.estep(x, y)
    with pytest.raises(Exception):
        pair.jstep(x, y)
    for m in (pair.jm, pair.em):
        m.optimizer.zero_grad(m.trainable_weights)
    assert_models_equal(pair.jm, pair.em, "after the bad labels")
    pair.run(batches([8, 8], seed=5), "after")


def test_thread_count_changed_between_capture_and_replay(restore_threads):
    def wide(seed, opt):
        return simple_model(seed, opt, hidden=96)
    mg.set_num_threads(1)
    pair = Pair(model=wide, opt=lambda: optimizers.Adam(0.01))
    pair.run(batches([64]), "captured at 1 thread")
    for threads in (3, 2, 1, 3):
        mg.set_num_threads(threads)
        pair.run(batches([64], seed=threads), f"replayed at {threads} threads")
    assert pair.stats["captures"] == 1 and pair.stats["replays"] == 4


def test_load_weights_with_optimizer_state_between_steps(tmp_path):
    path = tmp_path / "w.npz"
    pair = Pair()
    pair.run(batches([8, 8]), "before")
    pair.jm.save_weights(path, include_optimizer=True)
    pair.run(batches([8, 8], seed=2), "after saving")
    pair.both(lambda m: m.load_weights(path))
    assert pair.jm.optimizer.iterations == 2
    pair.run(batches([8], seed=3), "after loading")
    assert pair.stats["last_recapture"] == "RMSprop's state was replaced"
    pair.run(batches([8, 8], seed=4), "later")


def test_evicted_signature_recaptures():
    model = simple_model()

    @jit
    def forward(x):
        return model(x)
    sizes = list(range(1, jit_module.MAX_RECORDINGS + 2))
    for n, (x, _) in zip(sizes + sizes[:1], batches(sizes + sizes[:1])):
        assert_bitwise_equal(forward(x).data, model(x).data, f"{n} rows")
    stats = forward.stats()
    assert stats["recordings"] == jit_module.MAX_RECORDINGS
    assert stats["captures"] == len(sizes) + 1 and stats["replays"] == 0


def _swap_optimizer_at(batch, make):
    class Swap(mg.callbacks.Callback):
        def on_train_batch_begin(self, b, logs=None):
            if b == batch:
                self.model.optimizer = make()
    return Swap()


def test_optimizer_swapped_in_a_callback_recaptures_in_fit():
    case = LOSS_CASES["sparse_softmax_fused"]
    make_opt = OPTIMIZERS["rmsprop_eps_inside"]
    x, y = toy_data(128)
    fitted = make_model(case, make_opt)
    fitted.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False,
               callbacks=[_swap_optimizer_at(2, lambda: optimizers.Adam(0.02))])
    stats = fitted._step_function("fit").stats()
    assert stats["captures"] == 2 and stats["replays"] == 2, stats
    assert stats["last_recapture"] == "a layer, model or loss changed"
    assert isinstance(fitted.optimizer, optimizers.Adam) and fitted.optimizer.iterations == 2

    reference = make_model(case, make_opt)
    yt = y.astype(np.int64)
    for b, start in enumerate(range(0, 128, 32)):
        if b == 2:
            reference.optimizer = optimizers.Adam(0.02)
        params = reference.trainable_weights
        loss = _sparse_fused(reference, x[start:start + 32], yt[start:start + 32])
        loss.backward()
        reference.optimizer.step(params)
        reference.optimizer.zero_grad(params)
    assert_models_equal(fitted, reference, "optimizer swapped at batch 2")


def test_compile_between_fits_uses_the_new_optimizer():
    case = LOSS_CASES["sparse_softmax_fused"]
    x, y = toy_data(96)
    fitted = make_model(case, OPTIMIZERS["sgd"])
    fitted.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    fitted.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    fitted.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)

    reference = make_model(case, OPTIMIZERS["sgd"])
    yt = y.astype(np.int64)
    for epoch in range(2):
        if epoch == 1:
            reference.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        for start in range(0, 96, 32):
            params = reference.trainable_weights
            loss = _sparse_fused(reference, x[start:start + 32], yt[start:start + 32])
            loss.backward()
            reference.optimizer.step(params)
            reference.optimizer.zero_grad(params)
    assert_models_equal(fitted, reference, "recompiled")


def test_layer_frozen_between_fits():
    case = LOSS_CASES["sparse_softmax_fused"]
    x, y = toy_data(96)
    fitted = make_model(case, OPTIMIZERS["adam"])
    fitted.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    fitted.layers[0].trainable = False
    frozen = [w.copy() for w in fitted.get_weights()[:2]]
    fitted.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(fitted.get_weights()[:2], frozen):
        assert_bitwise_equal(a, b, "frozen layer")

    reference = make_model(case, OPTIMIZERS["adam"])
    yt = y.astype(np.int64)
    for epoch in range(2):
        if epoch == 1:
            reference.layers[0].trainable = False
        for start in range(0, 96, 32):
            params = reference.trainable_weights
            loss = _sparse_fused(reference, x[start:start + 32], yt[start:start + 32])
            loss.backward()
            reference.optimizer.step(params)
            reference.optimizer.zero_grad(params)
    assert_models_equal(fitted, reference, "frozen between fits")


# ---------------------------------------------------------------- 4. check_finite

def test_check_finite_runs_jitted_steps_eagerly_and_names_the_op():
    pair = Pair()
    data = batches([8, 8, 8, 8])
    pair.run(data[:2], "before")
    eager_before = pair.stats["eager"]
    mg.set_check_finite(True)
    try:
        pair.run(data[2:3], "with check_finite")
        assert pair.stats["eager"] == eager_before + 1
        assert pair.stats["replays"] == 1
        x, y = data[3]
        x = x.copy()
        x[2, 5] = np.nan
        for step in (pair.jstep, pair.estep):
            with pytest.raises(FloatingPointError, match=r"dense \(forward\) produced NaN/inf"):
                step(x, y)
        assert pair.stats["eager"] == eager_before + 2
    finally:
        mg.set_check_finite(False)
    assert_models_equal(pair.jm, pair.em, "after the NaN")
    pair.run(data[3:], "after check_finite is off")
    assert pair.stats["replays"] == 2


def test_check_finite_in_fit_names_op_and_step():
    case = LOSS_CASES["sparse_softmax_fused"]
    x, y = toy_data(96)
    x[70, 0] = np.inf
    model = make_model(case, OPTIMIZERS["adam"])
    mg.set_check_finite(True)
    try:
        with pytest.raises(FloatingPointError, match=r"dense \(forward\).*step 3/3"):
            model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    finally:
        mg.set_check_finite(False)
    assert model.optimizer.iterations == 2
    assert model._step_function("fit").stats()["eager"] == 3


# ---------------------------------------------------------------- 5. NaN stop

@pytest.mark.parametrize("bad_batch", [0, 2])
def test_nan_batch_stops_fit_without_its_update(bad_batch, capsys):
    case, make_opt = LOSS_CASES["sparse_softmax_fused"], OPTIMIZERS["adam"]
    x, y = toy_data(128)
    x[bad_batch * 32 + 7, 3] = np.nan
    fitted = make_model(case, make_opt)
    history = fitted.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
    assert f"Batch {bad_batch}: Invalid loss" in capsys.readouterr().out
    assert history.invalid_loss["epoch"] == 0 and history.invalid_loss["batch"] == bad_batch
    assert np.isnan(history.invalid_loss["loss"])
    stats = fitted._step_function("fit").stats()
    if bad_batch:
        assert stats["captures"] == 1 and stats["replays"] == bad_batch, stats  # stopped in a replay
    assert fitted.optimizer.iterations == bad_batch
    assert all(p.grad is None for p in fitted.trainable_weights)
    reference = eager_model(case, make_opt, x[:bad_batch * 32], y[:bad_batch * 32], epochs=1) \
        if bad_batch else make_model(case, make_opt)
    assert_models_equal(fitted, reference, f"NaN in batch {bad_batch}")
    for w in fitted.get_weights():
        assert np.isfinite(w).all()


def test_nan_in_the_short_last_batch_stops_fit(capsys):
    case, make_opt = LOSS_CASES["sparse_softmax_fused"], OPTIMIZERS["sgd_momentum"]
    x, y = toy_data(112)  # 32, 32, 32, 16: the NaN is in the 16-row step, stopping its capture
    x[100, 0] = np.nan
    x_clean, y_clean = x[:96], y[:96]
    fitted = make_model(case, make_opt)
    history = fitted.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
    assert history.invalid_loss["epoch"] == 0 and history.invalid_loss["batch"] == 3
    assert "Invalid loss" in capsys.readouterr().out
    reference = eager_model(case, make_opt, x_clean, y_clean, epochs=1)
    assert_models_equal(fitted, reference, "NaN in the short batch")


def test_stop_if_not_finite_in_a_replayed_user_step():
    def make(model):
        def step(x, y):
            params = model.trainable_weights
            loss = mg.softmax_cross_entropy(model(x, training=True), y)
            stop_if_not_finite(loss)
            loss.backward()
            model.optimizer.step(params)
            model.optimizer.zero_grad(params)
            return loss
        return step
    jm, em = simple_model(opt=optimizers.Adam(0.01)), simple_model(opt=optimizers.Adam(0.01))
    jstep, estep = jit(make(jm)), make(em)
    data = batches([8, 8, 8, 8])
    for x, y in data[:2]:
        assert_bitwise_equal(jstep(x, y).data, estep(x, y).data, "loss")
    x, y = data[2]
    x = x.copy()
    x[0, 0] = np.inf
    for step in (jstep, estep):
        with pytest.raises(NonFiniteLoss):
            step(x, y)
    assert jstep.stats()["replays"] == 2
    assert jm.optimizer.iterations == 2
    assert_models_equal(jm, em, "after the stop")
    x, y = data[3]
    assert_bitwise_equal(jstep(x, y).data, estep(x, y).data, "loss after the stop")
    assert jstep.stats()["captures"] == 1 and jstep.stats()["replays"] == 3
    assert_models_equal(jm, em, "after the stop and one more step")
    assert isinstance(NonFiniteLoss(1.0), FloatingPointError)


# ---------------------------------------------------------------- 6. user activations and layers

@pytest.mark.parametrize("opt_name", ["rmsprop_eps_inside", "sgd_nesterov", "adam"])
def test_user_activation_and_layers_fit_equals_eager(opt_name):
    make_opt = OPTIMIZERS[opt_name]
    x, y = toy_data(112)
    fitted = scaled_model(3, make_opt())
    assert [w.shape for w in fitted.layers[2].weights] == [(8,)]
    assert fitted.layers[2].weight_names() == ["scale"]
    fitted.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
    assert fitted._step_function("fit").stats()["replays"] == 6

    reference = scaled_model(3, make_opt())
    yt = y.astype(np.int64)
    for _ in range(2):
        for start in range(0, 112, 32):
            params = reference.trainable_weights
            loss = _sparse_fused(reference, x[start:start + 32], yt[start:start + 32])
            loss.backward()
            reference.optimizer.step(params)
            reference.optimizer.zero_grad(params)
    assert_models_equal(fitted, reference, f"user layers / {opt_name}")
    assert not np.array_equal(fitted.layers[2].scale.data, scaled_model(3, make_opt()).layers[2].scale.data)

    # predict and evaluate run with training=False (x * 2.0), fit ran with training=True
    want = eager_forward(reference, x, training=False).data
    assert_bitwise_equal(fitted.predict(x, batch_size=len(x), verbose=0), want, "predict")
    assert not np.array_equal(want, eager_forward(reference, x, training=True).data)
    want_loss = _sparse_fused_eval(reference, x, yt)
    assert fitted.evaluate(x, y, batch_size=len(x), verbose=0) == pytest.approx(want_loss, rel=1e-6)
    # and again (replayed inference)
    assert_bitwise_equal(fitted.predict(x, batch_size=len(x), verbose=0), want, "predict replay")
    assert fitted._step_function("predict").stats()["replays"] >= 1


def _sparse_fused_eval(model, x, y):
    with mg.no_grad():
        z = eager_forward(model, x, training=False, pre_activation=True)
        return float(losses.sparse_categorical_crossentropy(y, z, from_logits=True).item())


def test_training_flag_reaches_user_layer_in_fit_and_not_in_predict():
    seen = []

    class Spy(layers.Layer):
        def call(self, x, training=None):
            if x.shape[0] > 1:  # not the one-row shape inference (compute_output_shape)
                seen.append(training)
            return x * 1.0 if training else x * 2.0
    utils.set_random_seed(0)
    model = models.Sequential([layers.Dense(4, input_shape=(FEATURES,)), Spy(),
                               layers.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = toy_data(64)
    seen.clear()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    assert seen and all(t is True for t in seen), seen
    seen.clear()
    model.predict(x, verbose=0)
    model.evaluate(x, y, verbose=0)
    assert seen and all(t is False for t in seen), seen


def test_user_layers_under_jit_equal_eager():
    pair = Pair(model=scaled_model, opt=lambda: optimizers.Adam(0.01))
    pair.run(batches([8, 8, 8, 5, 5]), "user layers under jit")
    assert pair.stats["captures"] == 2 and pair.stats["replays"] == 3 and pair.stats["eager"] == 0


def test_layer_without_training_argument_and_user_initializer():
    class Double(layers.Layer):
        def call(self, x):
            return x * 2.0
    utils.set_random_seed(0)
    model = models.Sequential([layers.Dense(4, input_shape=(FEATURES,)), Double(),
                               layers.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
    x, y = toy_data(64)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
    assert model._step_function("fit").stats()["replays"] == 3
    want = eager_forward(model, x, training=False).data
    assert_bitwise_equal(model.predict(x, batch_size=64, verbose=0), want, "predict")


class UserDropout(layers.Layer):
    """Dropout written by a user with the element-wise ops: a new mask every step."""

    def __init__(self, rate, seed, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.seed = rate, seed
        self.counter = kernels.DropoutCounter()

    def call(self, x, training=None):
        return nn.dropout(x, self.rate, self.seed, self.counter) if training else x


def test_user_dropout_layer_in_fit_draws_fresh_masks_like_eager():
    def stack():
        return [layers.Dense(HIDDEN, activation="relu", input_shape=(FEATURES,)),
                UserDropout(0.4, seed=11), layers.Dense(CLASSES, activation="softmax")]
    case = (stack, lambda: "sparse_categorical_crossentropy", "sparse", _sparse_fused)
    x, y = toy_data(112)
    fitted = fit_model(case, OPTIMIZERS["adam"], x, y)
    assert fitted._step_function("fit").stats()["replays"] == 6
    assert fitted.layers[1].counter.value == 8  # one mask per step, replays included
    reference = eager_model(case, OPTIMIZERS["adam"], x, y)
    assert reference.layers[1].counter.value == 8
    assert_models_equal(fitted, reference, "dropout")
    # predict does not drop (training=False) and does not advance the counter
    assert_bitwise_equal(fitted.predict(x, verbose=0), eager_forward(reference, x, False).data, "predict")
    assert fitted.layers[1].counter.value == 8


def test_elementwise_ops_dropout_and_weighted_losses_under_jit():
    def make():
        utils.set_random_seed(2)
        w1 = mg.Tensor(utils.rng().standard_normal((FEATURES, HIDDEN)).astype(F32) * F32(0.3),
                       requires_grad=True)
        w2 = mg.Tensor(utils.rng().standard_normal((HIDDEN, CLASSES)).astype(F32) * F32(0.3),
                       requires_grad=True)
        counter = kernels.DropoutCounter(5)
        opt = optimizers.Adam(0.01)

        def step(x, y, weights):
            h = nn.dropout(mg.tanh(mg.Tensor(x) @ w1), 0.25, 7, counter)
            z = h @ w2
            labels = mg.Tensor(utils.to_categorical(np.zeros(1, np.int64), CLASSES))  # constant
            loss = nn.sigmoid_binary_cross_entropy(z, y) + \
                nn.softmax_cross_entropy_weighted(mg.sigmoid(z), labels.data.repeat(len(y), 0), weights)
            loss.backward()
            opt.step([w1, w2])
            opt.zero_grad([w1, w2])
            return loss, h
        return step, (w1, w2), counter, opt
    jstep, jw, jcounter, jopt = make()
    jstep = jit(jstep)
    estep, ew, ecounter, eopt = make()
    rng = np.random.default_rng(3)
    masks = []
    for i in range(5):
        x = rng.standard_normal((8, FEATURES)).astype(F32)
        y = (rng.random((8, CLASSES)) > 0.5).astype(F32)
        weights = rng.random(8).astype(F32)
        if i == 3:
            jcounter.value = ecounter.value = 100  # read live
        (jl, jh), (el, eh) = jstep(x, y, weights), estep(x, y, weights)
        assert_bitwise_equal(jl.data, el.data, f"loss {i}")
        assert_bitwise_equal(jh.data, eh.data, f"hidden {i}")
        masks.append(jh.data == 0)
        for a, b in zip(jw, ew):
            assert_bitwise_equal(a.data, b.data, f"weights after call {i}")
    assert jcounter.value == ecounter.value == 102
    assert not np.array_equal(masks[1], masks[2])  # fresh masks on replay
    assert jstep.stats()["captures"] == 1 and jstep.stats()["replays"] == 4
    for a, b in zip(jopt.variables(), eopt.variables()):
        assert_bitwise_equal(a, b, "adam slots")


# ---------------------------------------------------------------- 7. unrecordable ops

class NumpyDouble(mg.Function):
    """Does its NumPy work outside minigrad.kernels: cannot be recorded."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


def test_unrecordable_forward_runs_eagerly_every_call_never_stale():
    @jit
    def f(x):
        return NumpyDouble.apply(x) + 1.0
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((4, 3)).astype(F32) for _ in range(4)]
    with pytest.warns(RuntimeWarning, match="runs eagerly on every call"):
        first = f(mg.Tensor(inputs[0])).data.copy()
    assert_bitwise_equal(first, inputs[0] * 2 + F32(1.0), "call 0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning only
        for i, x in enumerate(inputs[1:], 1):
            assert_bitwise_equal(f(mg.Tensor(x)).data, x * 2 + F32(1.0), f"call {i}")
    stats = f.stats()
    assert stats["captures"] == 0 and stats["replays"] == 0 and stats["eager"] == 4, stats


def test_unrecordable_op_in_a_training_step_equals_eager():
    def make():
        utils.set_random_seed(0)
        w = mg.Tensor(utils.rng().standard_normal((FEATURES, CLASSES)).astype(F32), requires_grad=True)
        opt = optimizers.SGD(0.05, momentum=0.9)

        def step(x, y):
            loss = mg.softmax_cross_entropy(NumpyDouble.apply(mg.Tensor(x) @ w), y)
            loss.backward()
            opt.step([w])
            opt.zero_grad([w])
            return loss
        return step, w, opt
    jstep, jw, jopt = make()
    jstep = jit(jstep)
    estep, ew, eopt = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for i, (x, y) in enumerate(batches([8, 8, 8, 8])):
            assert_bitwise_equal(jstep(x, y).data, estep(x, y).data, f"loss {i}")
            assert_bitwise_equal(jw.data, ew.data, f"weights after call {i}")
    assert jstep.stats()["eager"] == 4 and jstep.stats()["replays"] == 0
    assert jopt.iterations == eopt.iterations == 4
    assert_bitwise_equal(jopt.variables()[0], eopt.variables()[0], "momentum")


# ---------------------------------------------------------------- 8. refused uses

def test_returning_a_python_float_raises_type_error():
    @jit
    def f(x):
        return (x * 2.0).sum().item()
    with pytest.raises(TypeError, match="Python number"):
        f(mg.Tensor(np.ones((2, 2), F32)))


def test_input_requiring_grad_raises_value_error():
    @jit
    def f(x):
        return x * 2.0
    with pytest.raises(ValueError, match="require grad"):
        f(mg.Tensor(np.ones((2, 2), F32), requires_grad=True))
    assert f.stats()["captures"] == 0


def test_jit_rejects_a_non_callable():
    with pytest.raises(TypeError):
        jit(3)


# ---------------------------------------------------------------- 9. memory

def test_fit_allocates_no_gemm_workspace_after_the_first_step_of_each_shape():
    counts = []

    class Count(mg.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            counts.append(kernels.gemm_workspace_allocations())
    case, make_opt = LOSS_CASES["sparse_softmax_fused"], OPTIMIZERS["rmsprop_eps_inside"]
    x, y = toy_data(112)  # 32, 32, 32, 16
    model = make_model(case, make_opt)
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=True, callbacks=[Count()])
    assert len(counts) == 12
    assert len(set(counts[4:])) == 1, counts  # every shape was seen in epoch 1
    assert counts[1] == counts[2] == counts[0], counts


# ---------------------------------------------------------------- borrow_inputs=True

def test_borrowed_inputs_are_read_in_place_and_equal_eager_bits():
    """A loop that refills the same arrays: the recording reads them where they are."""
    data = batches([16] * 6, seed=7)
    jm, em = simple_model(5), simple_model(5)
    jstep, estep = jit(user_step(jm), borrow_inputs=True), user_step(em)
    xb, yb = np.empty((16, FEATURES), F32), np.empty(16, np.int64)
    for x, y in data:
        xb[...], yb[...] = x, y
        got, want = jstep(xb, yb).item(), estep(x, y).item()
        assert got == want
    assert_models_equal(jm, em, "borrowed inputs")
    assert jstep.stats()["captures"] == 1 and jstep.stats()["replays"] == 5


def test_borrowed_inputs_recapture_for_another_array_or_an_in_place_reshape():
    model = simple_model(6)
    step = jit(user_step(model), borrow_inputs=True)
    (x, y), (x2, y2) = batches([8, 8], seed=8)
    step(x, y)
    step(x, y)
    assert step.stats()["captures"] == 1
    step(x2, y2)  # other arrays of the same shape: a signature of their own
    assert step.stats()["captures"] == 2
    x.shape = (4, 2 * FEATURES)  # the same object, reshaped in place
    with pytest.raises(ValueError, match="is incompatible with the layer"):
        step(x, y)  # not replayed with stale dimensions: captured, and the layer refuses


def test_borrowed_tensor_arguments_follow_a_replaced_data_array():
    w = mg.Tensor(np.ones(3, F32))

    @jit(borrow_inputs=True)
    def scaled(t):
        return t * w

    t = mg.Tensor(np.array([1.0, 2.0, 3.0], F32))
    assert scaled(t).tolist() == [1.0, 2.0, 3.0]
    t.data = np.array([5.0, 6.0, 7.0], F32)  # the same Tensor, another array
    assert scaled(t).tolist() == [5.0, 6.0, 7.0]
    t.data[0] = 9.0  # in place: read live
    assert scaled(t).tolist() == [9.0, 6.0, 7.0]
