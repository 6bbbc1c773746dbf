"""AMSGrad, AdamW, gradient clipping and learning-rate schedules: golden values computed
by hand (float64 formulas below, compared at float32 precision), kernels against their
NumPy twins, thread invariance, and schedules read live by fit's replayed step."""
import math

import numpy as np
import pytest

import minigrad as mg
from minigrad import kernels, layers, models, optimizers, reference, utils
from minigrad.schedules import ExponentialDecay, LearningRateSchedule, PiecewiseConstantDecay

from helpers import assert_bitwise_equal, check_kernel, rand
from test_threads import same_at_all_thread_counts

F32 = np.float32


def param(values):
    return mg.Tensor(np.array(values, F32), requires_grad=True)


def grad(values):
    return np.array(values, F32)


def adam_by_hand(w, grads, lr=0.1, b1=0.9, b2=0.999, eps=1e-7, wd=0.0, amsgrad=False):
    """Keras 3 Adam / AdamW / AMSGrad on one scalar, in float64: the trajectory of w."""
    m = v = v_hat = 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        w = w - w * wd * lr
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        v_hat = max(v_hat, v)
        alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        w = w - alpha * m / (math.sqrt(v_hat if amsgrad else v) + eps)
        out.append(w)
    return out


# ---------------------------------------------------------------- AMSGrad

def test_amsgrad_two_steps_by_hand():
    # g = 1 then 0.01: v falls from 1e-3 to 0.0009991 at step 2, v_hat stays at 1e-3.
    # step 1: m = 0.1, v = v_hat = 1e-3, alpha = 0.1*sqrt(1e-3)/0.1 -> w = 1 - 0.0999997
    # step 2: m = 0.1 + (0.01 - 0.1)*0.1 = 0.091, alpha = 0.1*sqrt(1 - 0.999^2)/(1 - 0.81)
    alpha2 = 0.1 * math.sqrt(1 - 0.999 ** 2) / (1 - 0.9 ** 2)
    w1 = 1.0 - math.sqrt(1e-3) * 0.1 / (math.sqrt(1e-3) + 1e-7)
    want_ams = w1 - alpha2 * 0.091 / (math.sqrt(1e-3) + 1e-7)
    want_plain = w1 - alpha2 * 0.091 / (math.sqrt(0.0009991) + 1e-7)
    assert adam_by_hand(1.0, [1.0, 0.01], amsgrad=True)[1] == pytest.approx(want_ams, rel=1e-12)

    ams, plain = param([1.0]), param([1.0])
    opt_ams = optimizers.Adam(learning_rate=0.1, amsgrad=True)
    opt_plain = optimizers.Adam(learning_rate=0.1)
    for g in (1.0, 0.01):
        opt_ams.apply_gradients([(grad([g]), ams)])
        opt_plain.apply_gradients([(grad([g]), plain)])
    assert ams.numpy()[0] == pytest.approx(want_ams, rel=1e-6)
    assert plain.numpy()[0] == pytest.approx(want_plain, rel=1e-6)
    assert ams.numpy()[0] != plain.numpy()[0]  # v_hat really is used
    m, v, v_hat = opt_ams._slots[ams]
    assert (m[0], v[0], v_hat[0]) == pytest.approx((0.091, 0.0009991, 1e-3), rel=1e-6)
    assert opt_ams._slot_names == ("m", "v", "v_hat") and opt_plain._slot_names == ("m", "v")


# ---------------------------------------------------------------- AdamW

def test_adamw_two_steps_by_hand():
    # Keras 3 order: w -= w*wd*lr first, then the Adam step (the decay is not in m or v).
    # step 1: w = 2 - 2*0.5*0.1 = 1.9; then -alpha1*m/(sqrt(v)+eps) with g = 1
    alpha1 = 0.1 * math.sqrt(1 - 0.999) / (1 - 0.9)
    w1 = 1.9 - alpha1 * 0.1 / (math.sqrt(1e-3) + 1e-7)
    # step 2, g = -2: decay w1*0.95, m = 0.1 + (-2 - 0.1)*0.1 = -0.11, v = 1e-3 + (4 - 1e-3)*1e-3
    alpha2 = 0.1 * math.sqrt(1 - 0.999 ** 2) / (1 - 0.9 ** 2)
    v2 = 1e-3 + (4 - 1e-3) * 1e-3
    w2 = w1 * 0.95 - alpha2 * -0.11 / (math.sqrt(v2) + 1e-7)
    assert adam_by_hand(2.0, [1.0, -2.0], wd=0.5) == pytest.approx([w1, w2], rel=1e-12)

    w = param([2.0])
    opt = optimizers.AdamW(learning_rate=0.1, weight_decay=0.5)
    opt.apply_gradients([(grad([1.0]), w)])
    assert w.numpy()[0] == pytest.approx(w1, rel=1e-6)
    opt.apply_gradients([(grad([-2.0]), w)])
    assert w.numpy()[0] == pytest.approx(w2, rel=1e-6)
    assert opt.iterations == 2


def test_adamw_defaults_and_amsgrad():
    opt = optimizers.get("adamw")
    assert isinstance(opt, optimizers.AdamW)
    assert (opt.learning_rate, opt.weight_decay, opt.beta_1, opt.beta_2, opt.epsilon, opt.amsgrad) == \
        (0.001, 0.004, 0.9, 0.999, 1e-7, False)
    w = param([1.5])
    opt = optimizers.AdamW(learning_rate=0.1, weight_decay=0.2, amsgrad=True)
    for g in (1.0, 0.01, 0.5):
        opt.apply_gradients([(grad([g]), w)])
    want = adam_by_hand(1.5, [1.0, 0.01, 0.5], wd=0.2, amsgrad=True)[-1]
    assert w.numpy()[0] == pytest.approx(want, rel=1e-6)


def test_adamw_with_zero_decay_is_adam_bitwise():
    rng = np.random.default_rng(3)
    w0, gs = rand(rng, 50), [rand(rng, 50) for _ in range(3)]
    a, b = mg.Tensor(w0.copy(), requires_grad=True), mg.Tensor(w0.copy(), requires_grad=True)
    opt_a, opt_b = optimizers.Adam(learning_rate=0.01), optimizers.AdamW(learning_rate=0.01, weight_decay=0.0)
    for g in gs:
        opt_a.apply_gradients([(g, a)])
        opt_b.apply_gradients([(g, b)])
    assert_bitwise_equal(a.numpy(), b.numpy(), "AdamW(weight_decay=0) vs Adam")


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.004])
def test_adamw_kernel_matches_twin(amsgrad, wd):
    rng = np.random.default_rng(4)
    sizes = [1000, 17, 1]
    w = [rand(rng, n) for n in sizes]
    g = [rand(rng, n, scale=0.1) for n in sizes]
    m = [rand(rng, n, scale=0.01) for n in sizes]
    v = [rand(rng, n, scale=0.01, low=0.0) for n in sizes]
    v_hat = [x * F32(rng.uniform(0.5, 1.5)) for x in v] if amsgrad else None
    for step in (1, 7):
        check_kernel("adamw_update", w, g, m, v, v_hat, 0.003, 0.9, 0.999, 1e-7, wd, step, bitwise=True)


def test_amsgrad_propagates_nan():
    w, g = np.zeros(2, F32), grad([np.nan, 1.0])
    m, v, v_hat = np.zeros(2, F32), np.zeros(2, F32), np.ones(2, F32)
    kernels.adamw_update(w, g, m, v, v_hat, 0.1, 0.9, 0.999, 1e-7, 0.0, 1)
    assert np.isnan(v_hat[0]) and v_hat[1] == 1.0 and np.isnan(w[0]) and np.isfinite(w[1])


# ---------------------------------------------------------------- clipping

def test_clipnorm_two_steps_by_hand():
    # per parameter: g * c / max(|g|, c). Step 1: [3, 4] (norm 5) -> [0.6, 0.8]; [0.3, 0.4]
    # (norm 0.5 <= 1) unchanged. Step 2: [0, -2] -> [0, -1]; [6, 8] -> [0.6, 0.8].
    a, b = param([1.0, 1.0]), param([1.0, 1.0])
    opt = optimizers.SGD(learning_rate=1.0, clipnorm=1.0)
    g_a, g_b = grad([3.0, 4.0]), grad([0.3, 0.4])
    opt.apply_gradients([(g_a, a), (g_b, b)])
    np.testing.assert_allclose(a.numpy(), [0.4, 0.2], rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), [0.7, 0.6], rtol=1e-6)
    np.testing.assert_array_equal(g_a, [3.0, 4.0])  # the caller's gradients are not touched
    opt.apply_gradients([(grad([0.0, -2.0]), a), (grad([6.0, 8.0]), b)])
    np.testing.assert_allclose(a.numpy(), [0.4, 1.2], rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), [0.1, -0.2], rtol=1e-5)


def test_global_clipnorm_two_steps_by_hand():
    # Step 1: joint norm sqrt(3^2 + 4^2 + 12^2) = 13 > 2.6: everything * 0.2.
    # Step 2: joint norm sqrt(1^2 + 1^2 + 1^2) = 1.73 <= 2.6: unchanged (bit for bit).
    a, b = param([0.0, 0.0]), param([0.0])
    opt = optimizers.SGD(learning_rate=1.0, global_clipnorm=2.6)
    opt.apply_gradients([(grad([3.0, 4.0]), a), (grad([12.0]), b)])
    np.testing.assert_allclose(a.numpy(), [-0.6, -0.8], rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), [-2.4], rtol=1e-6)
    opt.apply_gradients([(grad([1.0, -1.0]), a), (grad([1.0]), b)])
    np.testing.assert_allclose(a.numpy(), [-1.6, 0.2], rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), [-3.4], rtol=1e-6)
    # per-variable clipnorm would have treated [3, 4] and [12] separately
    c = param([0.0])
    optimizers.SGD(learning_rate=1.0, clipnorm=2.6).apply_gradients([(grad([12.0]), c)])
    np.testing.assert_allclose(c.numpy(), [-2.6], rtol=1e-6)


def test_clipvalue_two_steps_by_hand():
    w = param([0.0, 0.0, 0.0])
    opt = optimizers.SGD(learning_rate=0.5, clipvalue=0.5)
    opt.apply_gradients([(grad([-3.0, 0.2, 5.0]), w)])      # -> [-0.5, 0.2, 0.5]
    np.testing.assert_allclose(w.numpy(), [0.25, -0.1, -0.25], rtol=1e-6)
    opt.apply_gradients([(grad([0.5, -0.7, 0.0]), w)])      # -> [0.5, -0.5, 0.0]
    np.testing.assert_allclose(w.numpy(), [0.0, 0.15, -0.25], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make", [
    lambda **kw: optimizers.RMSprop(learning_rate=0.01, **kw),
    lambda **kw: optimizers.SGD(learning_rate=0.1, momentum=0.9, **kw),
    lambda **kw: optimizers.Adam(learning_rate=0.01, **kw),
    lambda **kw: optimizers.AdamW(learning_rate=0.01, amsgrad=True, **kw),
])
@pytest.mark.parametrize("mode, clip", [("clipnorm", 0.5), ("global_clipnorm", 0.7), ("clipvalue", 0.05)])
def test_every_optimizer_clips_before_its_update(make, mode, clip):
    """Clipping inside the optimizer == the same optimizer fed the clipped gradients."""
    rng = np.random.default_rng(5)
    w0 = [rand(rng, 30), rand(rng, 4)]
    steps = [[rand(rng, 30), rand(rng, 4, scale=0.01)] for _ in range(3)]
    clipped_ws, plain_ws, raw_ws = ([mg.Tensor(w.copy(), requires_grad=True) for w in w0] for _ in range(3))
    clipping, plain, raw = make(**{mode: clip}), make(), make()
    for gs in steps:
        clipping.apply(gs, clipped_ws)
        pre = [np.empty_like(g) for g in gs]
        reference.clip_gradients(gs, pre, mode, clip)
        plain.apply(pre, plain_ws)
        raw.apply(gs, raw_ws)
    for a, b in zip(clipped_ws, plain_ws):
        assert_bitwise_equal(a.numpy(), b.numpy(), f"{type(clipping).__name__} {mode}")
    assert not np.array_equal(clipped_ws[0].numpy(), raw_ws[0].numpy())  # the clip did bite


@pytest.mark.parametrize("mode, clip", [("clipnorm", 3.0), ("global_clipnorm", 30.0), ("clipvalue", 0.5)])
def test_clip_kernel_matches_twin(mode, clip):
    rng = np.random.default_rng(6)
    gs = [rand(rng, n) for n in (20_000, 100, 3, 0)]
    gs[2][1] = np.nan if mode == "clipvalue" else gs[2][1]
    outs = [np.empty_like(g) for g in gs]
    got = check_kernel("clip_gradients", gs, outs, mode, clip, bitwise=True)
    assert any(not np.array_equal(o, g, equal_nan=True) for o, g in zip(got[len(gs):], gs))


def test_clip_non_finite_norms_follow_keras():
    # clipnorm: an inf norm scales by c / inf = 0 (inf * 0 = NaN); a NaN norm gives NaN
    g = [grad([np.inf, 1.0]), grad([np.nan, 1.0]), grad([3.0, 4.0])]
    out = [np.empty(2, F32) for _ in g]
    kernels.clip_gradients(g, out, "clipnorm", 1.0)
    assert np.isnan(out[0][0]) and out[0][1] == 0.0
    assert np.isnan(out[1]).all()
    np.testing.assert_allclose(out[2], [0.6, 0.8], rtol=1e-6)
    # global_clipnorm: any non-finite joint norm makes every gradient NaN
    kernels.clip_gradients(g, out, "global_clipnorm", 1.0)
    assert all(np.isnan(o).all() for o in out)


def test_norm_within_the_limit_leaves_gradients_bitwise():
    rng = np.random.default_rng(7)
    gs = [rand(rng, 1000), rand(rng, 5)]
    outs = [np.empty_like(g) for g in gs]
    kernels.clip_gradients(gs, outs, "global_clipnorm", 1e6)
    for o, g in zip(outs, gs):
        assert_bitwise_equal(o, g, "global_clipnorm above the norm")


def test_only_one_clipping_argument():
    with pytest.raises(ValueError, match=r"Adam: expected at most one of clipnorm, clipvalue and "
                                         r"global_clipnorm, received clipnorm=1.0, clipvalue=0.5"):
        optimizers.Adam(clipnorm=1.0, clipvalue=0.5)


@pytest.mark.parametrize("make, exc, match", [
    (lambda: optimizers.SGD(clipnorm=0.0), ValueError, r"SGD: expected 0.0 < clipnorm .*received 0.0"),
    (lambda: optimizers.RMSprop(clipvalue=-1), ValueError, r"RMSprop: expected 0.0 < clipvalue .*received -1"),
    (lambda: optimizers.Adam(global_clipnorm="1"), ValueError, r"Adam: expected 0.0 < global_clipnorm .*received '1'"),
    (lambda: optimizers.Adam(amsgrad=1), TypeError, r"Adam: expected amsgrad to be a bool, received 1"),
    (lambda: optimizers.AdamW(weight_decay=-0.1), ValueError, r"AdamW: expected 0.0 <= weight_decay .*received -0.1"),
    (lambda: optimizers.AdamW(weight_decay=None), ValueError, r"AdamW: expected weight_decay .*received None"),
    (lambda: optimizers.AdamW(beta_1=1.0), ValueError, r"AdamW: expected 0.0 <= beta_1 < 1.0 .*received 1.0"),
    (lambda: optimizers.SGD(learning_rate="0.1"), ValueError, r"SGD: expected 0.0 < learning_rate .*received '0.1'"),
    (lambda: ExponentialDecay(0.1, decay_steps=0, decay_rate=0.5), ValueError,
     r"ExponentialDecay: expected decay_steps to be a finite number > 0, received 0"),
    (lambda: ExponentialDecay(0.1, 10, decay_rate=-0.5), ValueError,
     r"ExponentialDecay: expected decay_rate to be a finite number >= 0, received -0.5"),
    (lambda: ExponentialDecay(0.1, 10, 0.5, staircase="yes"), TypeError,
     r"ExponentialDecay: expected staircase to be a bool, received 'yes'"),
    (lambda: PiecewiseConstantDecay([10, 20], [1.0, 0.5]), ValueError,
     r"PiecewiseConstantDecay: expected len\(values\) == len\(boundaries\) \+ 1, received 2 boundaries and 2 values"),
    (lambda: PiecewiseConstantDecay([20, 10], [1.0, 0.5, 0.1]), ValueError,
     r"PiecewiseConstantDecay: expected strictly increasing boundaries, received \[20, 10\]"),
    (lambda: PiecewiseConstantDecay(10, [1.0, 0.5]), TypeError,
     r"PiecewiseConstantDecay: expected boundaries and values to be lists, received int and list"),
])
def test_bad_arguments_name_class_expected_received(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


# ---------------------------------------------------------------- thread invariance

@pytest.mark.parametrize("update", ["adamw", "adamw_amsgrad", "clipnorm", "global_clipnorm", "clipvalue"])
def test_new_kernels_thread_invariant(update, restore_threads):
    rng = np.random.default_rng(8)
    sizes = [100_000, 40_000, 10]
    w0 = [rand(rng, n) for n in sizes]
    g = [rand(rng, n, scale=0.01) for n in sizes]

    def compute():
        w = [x.copy() for x in w0]
        slots = [[np.zeros(n, F32) for n in sizes] for _ in range(3)]
        if update.startswith("adamw"):
            for step in (1, 2, 3):
                kernels.adamw_update(w, g, slots[0], slots[1], slots[2] if update.endswith("amsgrad") else None,
                                     0.001, 0.9, 0.999, 1e-7, 0.004, step)
            return w + slots[0] + slots[1] + slots[2]
        out = [np.empty(n, F32) for n in sizes]
        clip = {"clipnorm": 0.5, "global_clipnorm": 1.0, "clipvalue": 0.01}[update]
        kernels.clip_gradients(g, out, update, clip)
        return out

    same_at_all_thread_counts(compute, update)


# ---------------------------------------------------------------- schedules

def test_exponential_decay_by_hand():
    s = ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    for step in (0, 1, 5, 10, 15, 25):
        assert s(step) == pytest.approx(0.1 * 0.5 ** (step / 10), rel=1e-15)
    assert s(5) == pytest.approx(0.1 / math.sqrt(2), rel=1e-15)
    st = ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5, staircase=True)
    assert [st(k) for k in (0, 9, 10, 19, 20, 31)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.0125])
    assert ExponentialDecay.from_config(st.get_config())(20) == pytest.approx(0.025)


def test_piecewise_constant_decay_by_hand():
    s = PiecewiseConstantDecay([100, 200], [1.0, 0.5, 0.1])
    # values[0] up to and including the first boundary, as Keras (step <= boundary)
    assert [s(k) for k in (0, 99, 100, 101, 200, 201, 10**6)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.1, 0.1]
    assert PiecewiseConstantDecay([5], [0.3, 0.2])(5.5) == 0.2


@pytest.mark.parametrize("rate", [
    ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5),
    PiecewiseConstantDecay([0, 2], [0.3, 0.2, 0.1]),
    lambda step: 0.1 / (1 + step),
])
def test_optimizer_uses_schedule_of_iterations_from_zero(rate):
    """SGD with g = 1: step k (from 0) moves w by exactly schedule(k)."""
    w = param([0.0])
    opt = optimizers.SGD(learning_rate=rate)
    expected = 0.0
    for k in range(5):
        assert opt.learning_rate == pytest.approx(rate(k))   # the rate the next update uses
        opt.apply_gradients([(grad([1.0]), w)])
        expected -= rate(k)
        assert w.numpy()[0] == pytest.approx(expected, rel=1e-6)
    assert opt.learning_rate_schedule is rate


def test_zero_argument_callable_is_called_without_the_step():
    lr = {"value": 0.5}
    w = param([0.0])
    opt = optimizers.SGD(learning_rate=lambda: lr["value"])
    opt.apply_gradients([(grad([1.0]), w)])
    lr["value"] = 0.25
    opt.apply_gradients([(grad([1.0]), w)])
    assert w.numpy()[0] == pytest.approx(-0.75)


def test_schedule_learning_rate_is_not_settable_to_a_float():
    opt = optimizers.Adam(learning_rate=ExponentialDecay(0.1, 10, 0.5))
    with pytest.raises(TypeError, match=r"Adam: expected a LearningRateSchedule or callable for "
                                        r"learning_rate .*received 0.01"):
        opt.learning_rate = 0.01
    opt.learning_rate = PiecewiseConstantDecay([1], [0.2, 0.1])   # a new schedule is fine
    assert opt.learning_rate == 0.2
    flt = optimizers.Adam(learning_rate=0.1)
    flt.learning_rate = 0.05
    assert flt.learning_rate == 0.05 and flt.learning_rate_schedule is None


def test_bad_schedule_value_is_reported():
    opt = optimizers.SGD(learning_rate=lambda step: -1.0 if step else 0.1)
    w = param([0.0])
    opt.apply_gradients([(grad([1.0]), w)])
    with pytest.raises(ValueError, match=r"SGD: expected the learning-rate schedule .* to return a "
                                         r"finite number >= 0 at step 1, received -1.0"):
        opt.apply_gradients([(grad([1.0]), w)])
    assert w.numpy()[0] == pytest.approx(-0.1)   # the refused step changed nothing
    assert opt.iterations == 1


def test_repr_shows_schedule_and_clipping():
    opt = optimizers.AdamW(learning_rate=ExponentialDecay(0.1, 10, 0.5), clipnorm=1.0)
    assert repr(opt) == ("AdamW(learning_rate=ExponentialDecay(initial_learning_rate=0.1, decay_steps=10.0, "
                         "decay_rate=0.5, staircase=False), weight_decay=0.004, beta_1=0.9, beta_2=0.999, "
                         "epsilon=1e-07, clipnorm=1.0)")


def test_schedules_reachable_from_optimizers():
    assert optimizers.schedules.ExponentialDecay is ExponentialDecay
    assert issubclass(optimizers.schedules.PiecewiseConstantDecay, LearningRateSchedule)


# ---------------------------------------------------------------- fit replays read the rate live

def toy(n=120, features=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(F32)
    return x, x[:, :3].argmax(axis=1).astype(np.int64)


def toy_model(optimizer, seed=3):
    utils.set_random_seed(seed)
    model = models.Sequential([layers.Dense(8, activation="relu", input_shape=(5,)),
                               layers.Dense(3, activation="softmax")])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("make", [
    lambda lr: optimizers.SGD(learning_rate=lr, momentum=0.9, clipnorm=0.3),
    lambda lr: optimizers.AdamW(learning_rate=lr, amsgrad=True, global_clipnorm=0.5),
    lambda lr: optimizers.RMSprop(learning_rate=lr, clipvalue=0.01),
])
def test_schedule_in_fit_equals_eager_loop_setting_the_rate(make):
    x, y = toy()
    schedule = ExponentialDecay(0.05, decay_steps=3, decay_rate=0.5)
    fit_model = toy_model(make(schedule))
    fit_model.fit(x, y, batch_size=40, epochs=3, verbose=0, shuffle=False)   # 9 steps, 1 capture
    assert fit_model.optimizer.iterations == 9

    hand_model = toy_model(make(0.05))
    (w1, b1), (w2, b2) = [(l.kernel, l.bias) for l in hand_model.layers]
    params, opt = [w1, b1, w2, b2], hand_model.optimizer
    for step in range(9):   # eager: nothing here is recorded or replayed
        opt.learning_rate = schedule(step)   # by hand, before each update
        start = (step % 3) * 40
        logits = mg.dense(mg.dense(mg.Tensor(x[start:start + 40]), w1, b1, "relu"), w2, b2)
        mg.softmax_cross_entropy(logits, y[start:start + 40]).backward()
        opt.step(params)
        opt.zero_grad(params)
    for a, b in zip(fit_model.get_weights(), hand_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # a constant rate gives different weights: the schedule was really applied on replays
    const = toy_model(make(0.05))
    const.fit(x, y, batch_size=40, epochs=3, verbose=0, shuffle=False)
    assert not np.array_equal(const.get_weights()[0], fit_model.get_weights()[0])


def test_amsgrad_schedule_state_saves_and_resumes_bitwise(tmp_path):
    """v_hat is saved with m and v; iterations restore the schedule's position."""
    x, y = toy()

    def make():
        return optimizers.AdamW(learning_rate=ExponentialDecay(0.01, 2, 0.5), amsgrad=True, clipnorm=0.5)
    straight = toy_model(make())
    straight.fit(x, y, batch_size=40, epochs=2, verbose=0, shuffle=False)

    first = toy_model(make())
    first.fit(x, y, batch_size=40, epochs=1, verbose=0, shuffle=False)
    first.save_weights(tmp_path / "ckpt.npz", include_optimizer=True)
    with np.load(tmp_path / "ckpt.npz") as f:
        assert sum(k.endswith("/v_hat") for k in f.files) == 4
    resumed = toy_model(make(), seed=9)
    resumed.load_weights(tmp_path / "ckpt.npz")
    assert resumed.optimizer.iterations == 3
    assert resumed.optimizer.learning_rate == pytest.approx(0.01 * 0.5 ** 1.5)
    resumed.fit(x, y, batch_size=40, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(straight.get_weights() + straight.optimizer.variables(),
                    resumed.get_weights() + resumed.optimizer.variables()):
        assert_bitwise_equal(b, a, "resumed vs straight")


@pytest.mark.parametrize("call, exc, match", [
    (lambda: kernels.clip_gradients([grad([1.0])], [np.empty(1, F32)], "norm", 1.0), ValueError,
     r"clip_gradients: expected mode to be one of \['clipnorm', 'clipvalue', 'global_clipnorm'\], received 'norm'"),
    (lambda: kernels.clip_gradients([grad([1.0])], [np.empty(1, F32)], "clipnorm", 0.0), ValueError,
     r"clip_gradients: expected clip > 0, received 0.0"),
    (lambda: kernels.clip_gradients([grad([1.0]), grad([2.0])], [np.empty(1, F32)], "clipvalue", 1.0), ValueError,
     r"clip_gradients: expected as many grads as parameters \(1\), received 2"),
    (lambda: kernels.clip_gradients([grad([1.0])], [np.empty(2, F32)], "clipvalue", 1.0), ValueError,
     r"clip_gradients: expected grad 0 of shape \(2,\)"),
    (lambda: kernels.adamw_update(np.zeros(2, F32), grad([1.0, 2.0]), np.zeros(2, F32), np.zeros(2, F32),
                                  np.zeros(3, F32), 0.1, 0.9, 0.999, 1e-7, 0.0, 1), ValueError,
     r"adamw_update: expected slot 3 of parameter 0 .*\(2,\)"),
    (lambda: kernels.adamw_update(np.zeros(1, F32), grad([1.0]), np.zeros(1, F32), np.zeros(1, F32), None,
                                  0.1, 0.9, 0.999, 1e-7, 0.0, 0), ValueError,
     r"adamw_update: expected step to be an integer >= 1, received 0"),
])
def test_new_kernels_reject_bad_arguments_before_writing(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_clip_output_may_not_alias_its_gradient():
    g = grad([3.0, 4.0])
    with pytest.raises(ValueError, match=r"clip_gradients: arrays written in place must not share memory \(parameter 0 and grad 0\)"):
        kernels.clip_gradients([g], [g], "clipnorm", 1.0)
    np.testing.assert_array_equal(g, [3.0, 4.0])


# ---------------------------------------------------------------- ParamTable (what replays pass)

def test_param_table_is_checked_against_the_update_that_uses_it():
    w, g, v = (np.zeros(4, np.float32) for _ in range(3))
    sgd_table = kernels.param_table("sgd_update", w, g, [])
    with pytest.raises(ValueError, match=r"rmsprop_update: expected a ParamTable made for rmsprop_update "
                                         r"with 1 slot\(s\), received one made for sgd_update with 0"):
        kernels.rmsprop_update(sgd_table, None, None, 0.1, 0.9, 1e-7)
    with pytest.raises(ValueError, match="sgd_update: expected None for the gradients and slots"):
        kernels.sgd_update(sgd_table, g, None, 0.1)
    adam_table = kernels.param_table("adamw_update", [w], [g], [[v], [np.zeros(4, np.float32)]])
    with pytest.raises(ValueError, match=r"with 3 slot\(s\), received one made for adamw_update with 2"):
        kernels.adamw_update(adam_table, None, None, None, None, 0.1, 0.9, 0.999, 1e-7, 0.0, 1, amsgrad=True)
    assert len(adam_table) == 1 and np.all(w == 0)  # nothing ran


def test_switching_clipping_on_between_replays_remakes_the_tables():
    """The replayed update reads clipnorm live: turned on after capture, it clips."""
    def run(use_jit):
        utils.set_random_seed(3)
        w = mg.randn(5, 3, requires_grad=True)
        opt = optimizers.SGD(learning_rate=0.1)

        def step(x):
            loss = ((x @ w) ** 2).sum()
            loss.backward()
            opt.step([w])
            opt.zero_grad([w])
            return loss
        f = mg.jit(step) if use_jit else step
        x = mg.Tensor(np.full((4, 5), 3.0, np.float32))
        for k in range(4):
            if k == 2:
                opt.clipnorm = 0.5
            f(x)
        return w.data.copy(), (f.stats() if use_jit else None)

    (eager, _), (replayed, stats) = run(False), run(True)
    np.testing.assert_array_equal(eager, replayed)
    assert stats["replays"] == 3
