"""Optimizers against golden numbers computed by hand (in float64 below, compared at float32 precision)."""
import math

import numpy as np
import pytest

import minigrad as mg
from minigrad import kernels, optimizers

F32 = np.float32


def param(values):
    return mg.Tensor(np.array(values, F32), requires_grad=True)


def grad(values):
    return np.array(values, F32)


# ---------------------------------------------------------------- RMSprop

def test_rmsprop_first_step_epsilon_inside_vs_outside():
    # g = 1e-4, lr = 1e-3, rho = 0.9, eps = 1e-7: v = 0.1 * g^2 = 1e-9.
    # Keras 3 (inside):  dw = lr*g / sqrt(1e-9 + 1e-7)  = 3.14658e-4
    # Keras 2 / PyTorch: dw = lr*g / (sqrt(1e-9) + 1e-7) = 3.15231e-3   (~10x more)
    inside, outside = param([0.0]), param([0.0])
    optimizers.RMSprop(epsilon_inside=True).apply_gradients([(grad([1e-4]), inside)])
    optimizers.RMSprop(epsilon_inside=False).apply_gradients([(grad([1e-4]), outside)])
    assert inside.numpy()[0] == pytest.approx(-1e-7 / math.sqrt(1e-9 + 1e-7), rel=1e-5)
    assert inside.numpy()[0] == pytest.approx(-3.14658e-4, rel=1e-5)
    assert outside.numpy()[0] == pytest.approx(-1e-7 / (math.sqrt(1e-9) + 1e-7), rel=1e-5)
    assert outside.numpy()[0] == pytest.approx(-3.15231e-3, rel=1e-5)


def test_rmsprop_epsilon_outside_with_large_epsilon():
    # With eps = 1e-4 outside the root: dw = 1e-7 / (3.16228e-5 + 1e-4) = 7.5975e-4.
    w = param([0.0])
    optimizers.RMSprop(epsilon=1e-4, epsilon_inside=False).apply_gradients([(grad([1e-4]), w)])
    assert w.numpy()[0] == pytest.approx(-7.5975e-4, rel=1e-4)


def test_rmsprop_two_steps_by_hand():
    w = param([1.0, -2.0])
    opt = optimizers.RMSprop(learning_rate=0.01, rho=0.5, epsilon=1e-7)
    g1, g2 = np.array([0.5, -1.0]), np.array([0.25, 2.0])
    v = 0.5 * g1 ** 2                        # [0.125, 0.5]
    expected = np.array([1.0, -2.0]) - 0.01 * g1 / np.sqrt(v + 1e-7)
    v = 0.5 * v + 0.5 * g2 ** 2              # [0.09375, 2.25]
    expected -= 0.01 * g2 / np.sqrt(v + 1e-7)
    opt.apply_gradients([(grad(g1), w)])
    opt.apply_gradients([(grad(g2), w)])
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(opt._slots[w][0], v, rtol=1e-6)
    assert opt.iterations == 2


# ---------------------------------------------------------------- SGD

def test_sgd_plain():
    w = param([1.0, 2.0])
    optimizers.SGD(learning_rate=0.1).apply_gradients([(grad([1.0, -3.0]), w)])
    np.testing.assert_allclose(w.numpy(), [0.9, 2.3], rtol=1e-6)


def test_sgd_momentum_two_steps():
    # v1 = -lr*g1 = -0.1; w = 0.9.  v2 = 0.9*(-0.1) - 0.1*0.5 = -0.14; w = 0.76
    w = param([1.0])
    opt = optimizers.SGD(learning_rate=0.1, momentum=0.9)
    opt.apply_gradients([(grad([1.0]), w)])
    opt.apply_gradients([(grad([0.5]), w)])
    assert w.numpy()[0] == pytest.approx(0.76, rel=1e-6)


def test_sgd_nesterov_two_steps():
    # v1 = -0.1; w += 0.9*v1 - 0.1*1 = -0.19 -> 0.81
    # v2 = 0.9*v1 - 0.1*0.5 = -0.14; w += 0.9*v2 - 0.05 = -0.176 -> 0.634
    w = param([1.0])
    opt = optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True)
    opt.apply_gradients([(grad([1.0]), w)])
    assert w.numpy()[0] == pytest.approx(0.81, rel=1e-6)
    opt.apply_gradients([(grad([0.5]), w)])
    assert w.numpy()[0] == pytest.approx(0.634, rel=1e-6)


def test_sgd_without_momentum_allocates_no_state():
    w = param([1.0])
    opt = optimizers.SGD()
    opt.apply_gradients([(grad([1.0]), w)])
    assert opt.variables() == []


# ---------------------------------------------------------------- Adam

def test_adam_two_steps_by_hand():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    w = param([0.5])
    opt = optimizers.Adam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps)
    expected, m, v = 0.5, 0.0, 0.0
    for t, g in enumerate([0.2, -0.4], start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        expected -= alpha * m / (math.sqrt(v) + eps)
        opt.apply_gradients([(grad([g]), w)])
        assert w.numpy()[0] == pytest.approx(expected, rel=1e-5)
    # Worked by hand: step 1, m = 0.02, v = 4e-5, alpha = 0.01*sqrt(0.001)/0.1 -> w = 0.5 - 0.01 = 0.49.
    # Step 2, m = -0.022, v = 1.9996e-4, alpha = 0.01*sqrt(0.001999)/0.19 = 2.35317e-3
    # -> w = 0.49 + 2.35317e-3 * 0.022 / 0.0141407 = 0.493661.
    assert w.numpy()[0] == pytest.approx(0.493661, abs=2e-6)


# ---------------------------------------------------------------- hand-loop API

def test_step_uses_grads_and_skips_params_without_grad():
    a, b = param([1.0, 1.0]), param([5.0])
    (a * a).sum().backward()  # a.grad = 2a; b has no grad
    opt = optimizers.SGD(learning_rate=0.25)
    opt.step([a, b])
    np.testing.assert_allclose(a.numpy(), [0.5, 0.5])
    assert b.numpy()[0] == 5.0
    opt.zero_grad([a, b])
    assert a.grad is None and b.grad is None


def test_all_parameters_update_in_one_kernel_call(monkeypatch):
    calls = []
    real = kernels.rmsprop_update
    monkeypatch.setattr(kernels, "rmsprop_update",
                        lambda *args, **kw: (calls.append(args), real(*args, **kw)))
    params = [param(np.ones((3, 2))), param(np.ones(2))]
    opt = optimizers.RMSprop()
    opt.apply_gradients([(np.ones((3, 2), F32), params[0]), (np.ones(2, F32), params[1])])
    assert len(calls) == 1 and len(calls[0][0]) == 2


def test_a_bad_gradient_leaves_every_parameter_unchanged():
    a, b = param([1.0, 2.0]), param([3.0])
    opt = optimizers.RMSprop()
    with pytest.raises(ValueError, match="grad 1"):
        opt.apply_gradients([(grad([1.0, 1.0]), a), (grad([1.0, 1.0]), b)])  # b's grad has the wrong shape
    np.testing.assert_array_equal(a.numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(b.numpy(), [3.0])
    assert opt.iterations == 0


def test_slots_are_created_lazily_per_parameter():
    a, b = param([1.0]), param([1.0, 2.0])
    opt = optimizers.Adam()
    opt.apply_gradients([(grad([1.0]), a)])
    assert list(opt._slots) == [a]
    opt.apply_gradients([(grad([1.0]), a), (grad([1.0, 1.0]), b)])
    assert list(opt._slots) == [a, b]
    assert all(s.dtype == np.float32 for s in opt.variables())


# ---------------------------------------------------------------- construction

@pytest.mark.parametrize("make, match", [
    (lambda: optimizers.RMSprop(learning_rate=0), "learning_rate"),
    (lambda: optimizers.RMSprop(learning_rate=float("nan")), "learning_rate"),
    (lambda: optimizers.RMSprop(rho=1.0), "rho"),
    (lambda: optimizers.RMSprop(epsilon=-1), "epsilon"),
    (lambda: optimizers.SGD(momentum=-0.1), "momentum"),
    (lambda: optimizers.SGD(learning_rate="0.1"), "learning_rate"),
    (lambda: optimizers.Adam(beta_1=1.0), "beta_1"),
    (lambda: optimizers.Adam(beta_2=-0.5), "beta_2"),
])
def test_hyperparameters_are_validated(make, match):
    with pytest.raises(ValueError, match=f"expected .*{match}.*received"):
        make()


def test_get_by_name_and_instance():
    assert isinstance(optimizers.get("rmsprop"), optimizers.RMSprop)
    assert isinstance(optimizers.get("SGD"), optimizers.SGD)
    assert isinstance(optimizers.get("adam"), optimizers.Adam)
    assert isinstance(optimizers.get("AdamW"), optimizers.AdamW)
    opt = optimizers.Adam(learning_rate=0.1)
    assert optimizers.get(opt) is opt
    with pytest.raises(ValueError, match=r"Unknown optimizer 'adagrad'.*'adam', 'adamw', 'rmsprop', 'sgd'"):
        optimizers.get("adagrad")
