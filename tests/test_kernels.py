"""Every C kernel against hand-computed golden numbers (on both backends: the C
kernels and their NumPy twins) and against its twin in minigrad.reference on
hypothesis-generated shapes and values."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import EPS32, F32, assert_bitwise_equal, assert_snippet_ok, check_kernel, gemm_tol, rand, run_both
from minigrad import kernels, reference

HYP = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Sizes that catch edge handling: 1, odd, primes, just off multiples of 6/8/16.
SIZES = st.sampled_from([1, 2, 3, 5, 6, 7, 13, 16, 17, 31, 33, 47, 64, 97, 131, 257])
BIG_K = st.sampled_from([1000, 1031, 2053])
SEEDS = st.integers(0, 2**32 - 1)


def arr(*rows):
    return np.array(rows, dtype=F32)


# ============================================================== golden values
# A (2x3) @ B (3x2) = [[4, 5], [10, 11]], stored transposed or not.
A = arr([1, 2, 3], [4, 5, 6])
B = arr([1, 0], [0, 1], [1, 1])
AB = arr([4, 5], [10, 11])


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_golden_transposes(backend, trans_a, trans_b):
    a = np.ascontiguousarray(A.T) if trans_a else A
    b = np.ascontiguousarray(B.T) if trans_b else B
    np.testing.assert_array_equal(backend.gemm(a, b, trans_a=trans_a, trans_b=trans_b), AB)


def test_gemm_golden_alpha_beta_reads_out(backend):
    out = arr([1, 1], [1, -1])
    got = backend.gemm(A, B, out, alpha=2.0, beta=-1.0)
    assert got is out
    np.testing.assert_array_equal(out, arr([7, 9], [19, 23]))  # 2*AB - out


def test_gemm_golden_epilogue_order(backend):
    # relu(0.5 * AB + 2 * out + bias): the bias and relu come after alpha/beta
    out = np.ones((2, 2), F32)
    got = backend.gemm(A, B, out, alpha=0.5, beta=2.0, bias=arr(1, -20), relu=True)
    np.testing.assert_array_equal(got, arr([5, 0], [8, 0]))
    got = backend.gemm(A, B, bias=arr(-5, -10))
    np.testing.assert_array_equal(got, arr([-1, -5], [5, 1]))
    got = backend.gemm(A, B, bias=arr(-5, -10), relu=True)
    np.testing.assert_array_equal(got, arr([0, 0], [5, 1]))


def test_gemm_beta_zero_ignores_nan_in_out(backend):
    out = np.full((2, 2), np.nan, F32)
    got = backend.gemm(A, B, out, beta=0.0)
    assert got is out
    np.testing.assert_array_equal(out, AB)
    out = np.full((2, 2), np.inf, F32)
    np.testing.assert_array_equal(backend.gemm(A, B, out, alpha=2.0, bias=arr(1, 1)), 2 * AB + 1)


def test_gemm_beta_nonzero_propagates_nan_in_out(backend):
    out = arr([np.nan, 0], [0, 0])
    got = backend.gemm(A, B, out, beta=1.0)
    assert np.isnan(got[0, 0]) and np.array_equal(got.ravel()[1:], AB.ravel()[1:])


def test_gemm_large_k_golden():
    # ones(1, K) @ ones(K, 1) = K exactly (every partial sum is an integer < 2**24)
    for k in (1, 1000, 1031, 4099):
        a, b = np.ones((3, k), F32), np.ones((k, 5), F32)
        np.testing.assert_array_equal(kernels.gemm(a, b), np.full((3, 5), k, F32))
        np.testing.assert_array_equal(kernels.gemm(b, a, trans_a=True, trans_b=True),
                                      np.full((5, 3), k, F32))


def test_add_bias_golden(backend):
    x = arr([1, 2], [3, 4])
    np.testing.assert_array_equal(backend.add_bias(x, arr(10, 20)), arr([11, 22], [13, 24]))
    assert backend.add_bias(x, arr(10, 20), out=x) is x
    np.testing.assert_array_equal(x, arr([11, 22], [13, 24]))


def test_bias_grad_golden(backend):
    np.testing.assert_array_equal(backend.bias_grad(arr([1, 2], [3, 4], [5, 6])), arr(9, 12))
    out = np.full(2, np.nan, F32)
    assert backend.bias_grad(arr([1, 2]), out=out) is out
    np.testing.assert_array_equal(out, arr(1, 2))


def test_relu_forward_golden(backend):
    x = arr(-2, -0.5, 0, 0.5, 3)
    np.testing.assert_array_equal(backend.relu_forward(x), arr(0, 0, 0, 0.5, 3))
    assert backend.relu_forward(x, out=x) is x  # in place
    np.testing.assert_array_equal(x, arr(0, 0, 0, 0.5, 3))
    np.testing.assert_array_equal(backend.relu_forward(arr([-1, 2], [3, -4])), arr([0, 2], [3, 0]))


def test_relu_forward_special_values_match_reference():
    x = arr(-0.0, 0.0, np.nan, -np.nan, np.inf, -np.inf, -1e-30, 1e30, -3.4e38)
    assert_bitwise_equal(kernels.relu_forward(x), reference.relu_forward(x), "relu_forward")
    assert np.isnan(kernels.relu_forward(x)[2])  # NaN propagates


def test_relu_forward_output_never_negative_for_subnormals():
    x = arr(-1e-40, -1e-45, -1.1e-38)
    y = kernels.relu_forward(x)
    assert np.all(y >= 0), y


def test_relu_backward_golden(backend):
    y = arr(0, 1, 0, 2, 0.5)
    dy = arr(5, 6, 7, 8, -9)
    np.testing.assert_array_equal(backend.relu_backward(y, dy), arr(0, 6, 0, 8, -9))  # relu'(0) = 0
    assert backend.relu_backward(y, dy, out=dy) is dy  # in place over dy
    np.testing.assert_array_equal(dy, arr(0, 6, 0, 8, -9))


def test_relu_backward_bias_grad_golden(backend):
    y = arr([0, 1], [2, 0], [3, 3])
    dy = arr([1, 2], [3, 4], [5, 6])
    dx, db = backend.relu_backward_bias_grad(y, dy)
    np.testing.assert_array_equal(dx, arr([0, 2], [3, 0], [5, 6]))
    np.testing.assert_array_equal(db, arr(8, 8))


# ---------------------------------------------------------------- softmax + cross-entropy

LN2 = math.log(2.0)


@pytest.mark.parametrize("label_dtype", [np.int32, np.int64, np.uint8])
def test_softmax_xent_golden_index(backend, label_dtype):
    logits = arr([0, 0], [1e4, -1e4], [1e4, -1e4], [-1e4, 1e4])
    labels = np.array([0, 1, 0, 1], label_dtype)
    loss, probs, row_loss = backend.softmax_xent_forward(logits, labels)
    # ln 2; -log softmax = 2e4 (no overflow, no NaN); 0; 0
    np.testing.assert_allclose(row_loss, [LN2, 2e4, 0, 0], rtol=1e-6, atol=0)
    np.testing.assert_allclose(loss, (LN2 + 2e4) / 4, rtol=1e-6)
    np.testing.assert_array_equal(probs, arr([0.5, 0.5], [1, 0], [1, 0], [0, 1]))
    assert isinstance(loss, np.ndarray) and loss.shape == () and loss.dtype == np.float32


def test_softmax_xent_golden_one_hot_equals_index(backend):
    logits = arr([0, 0], [1e4, -1e4])
    loss_i, p_i, r_i = backend.softmax_xent_forward(logits, np.array([0, 1]))
    loss_d, p_d, r_d = backend.softmax_xent_forward(logits, arr([1, 0], [0, 1]))
    assert loss_i == pytest.approx((LN2 + 2e4) / 2, rel=1e-6)
    assert loss_d == pytest.approx(loss_i, rel=1e-6)
    np.testing.assert_array_equal(p_d, p_i)
    np.testing.assert_allclose(r_d, r_i, rtol=1e-6)


def test_softmax_xent_golden_probability_target(backend):
    logits = arr([0, math.log(3.0)])  # softmax = [1/4, 3/4]
    loss, probs, _ = backend.softmax_xent_forward(logits, arr([0.5, 0.5]))
    want = 0.5 * math.log(4.0) + 0.5 * math.log(4.0 / 3.0)
    assert loss == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(probs, [[0.25, 0.75]], rtol=1e-6)


def test_softmax_xent_zero_target_times_log_zero(backend):
    # softmax underflows to exactly 0 for class 1; its target is 0: 0 * log 0 must not be NaN
    logits = arr([0, -1e4], [-1e4, 0])
    loss, probs, row_loss = backend.softmax_xent_forward(logits, arr([1, 0], [0, 1]))
    assert probs[0, 1] == 0.0 and probs[1, 0] == 0.0
    assert loss == 0.0 and np.all(row_loss == 0.0)
    # a non-zero target on an underflowed class gives a large finite loss, not inf
    loss, _, row_loss = backend.softmax_xent_forward(arr([0, -1e4]), arr([0.5, 0.5]))
    assert np.isfinite(loss) and loss == pytest.approx(5e3, rel=1e-6)


def test_softmax_xent_extreme_logits_are_stable(backend):
    logits = arr([3e4, 2e4, -3e4], [-1e4, -1e4, -1e4], [1e30, 0, -1e30])
    loss, probs, row_loss = backend.softmax_xent_forward(logits, np.array([1, 2, 0]))
    assert np.all(np.isfinite(probs)) and np.all(np.isfinite(row_loss)) and math.isfinite(loss)
    np.testing.assert_allclose(row_loss, [1e4, math.log(3.0), 0.0], rtol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_softmax_xent_backward_golden(backend):
    probs = arr([0.25, 0.75], [0.5, 0.5])
    got = backend.softmax_xent_backward(probs, np.array([1, 0], np.int32), 0.5)
    np.testing.assert_allclose(got, [[0.125, -0.125], [-0.25, 0.25]], rtol=1e-7)
    got = backend.softmax_xent_backward(probs, arr([0.5, 0.5], [0, 1]), 1.0)
    np.testing.assert_allclose(got, [[-0.25, 0.25], [0.5, -0.5]], rtol=1e-7)
    # target rows that do not sum to 1: scale * (probs * sum(t) - t)
    got = backend.softmax_xent_backward(arr([0.25, 0.75]), arr([1, 1]), 1.0)
    np.testing.assert_allclose(got, [[-0.5, 0.5]], rtol=1e-7)
    out = np.full((1, 2), np.nan, F32)
    assert backend.softmax_xent_backward(arr([0.25, 0.75]), np.array([0]), 2.0, out=out) is out
    np.testing.assert_allclose(out, [[-1.5, 1.5]], rtol=1e-7)


# ---------------------------------------------------------------- optimizers

def _rmsprop_step(g, lr, rho, eps, inside, v=0.0):
    """Exact (double) RMSprop step size for a scalar, from the formulas in DESIGN.md."""
    v = rho * v + (1 - rho) * g * g
    return lr * g / (math.sqrt(v + eps) if inside else math.sqrt(v) + eps), v


@pytest.mark.parametrize("inside", [True, False])
def test_rmsprop_golden_first_step(backend, inside):
    w, g, v = arr(0.0, 1.0), arr(1e-4, 1e-4), np.zeros(2, F32)
    backend.rmsprop_update(w, g, v, lr=0.001, rho=0.9, eps=1e-7, eps_inside=inside)
    # v = 0.1 * 1e-8 = 1e-9; inside: 1e-7 / sqrt(1.01e-7) = 3.1465839e-4,
    # outside: 1e-7 / (sqrt(1e-9) + 1e-7) = 3.1523092e-3
    step = 3.1465838776e-4 if inside else 3.1523091833e-3
    assert step == pytest.approx(_rmsprop_step(1e-4, 0.001, 0.9, 1e-7, inside)[0], rel=1e-9)
    np.testing.assert_allclose(v, [1e-9, 1e-9], rtol=1e-6)
    np.testing.assert_allclose(w[0], -step, rtol=2e-6)
    np.testing.assert_allclose(w[1], 1.0 - step, rtol=0, atol=1.2e-7)  # float32 spacing at 1


def test_rmsprop_eps_inside_vs_outside_differ_tenfold():
    steps = {}
    for inside in (True, False):
        w = np.zeros(1, F32)
        kernels.rmsprop_update(w, arr(1e-4), np.zeros(1, F32), 0.001, 0.9, 1e-7, eps_inside=inside)
        steps[inside] = -float(w[0])
    assert steps[False] / steps[True] == pytest.approx(10.0184, rel=1e-4)


def test_rmsprop_golden_second_step(backend):
    w, v = np.zeros(1, F32), np.zeros(1, F32)
    expect_w, expect_v = 0.0, 0.0
    for g in (0.5, -0.25):
        backend.rmsprop_update(w, arr(g), v, 0.01, 0.9, 1e-7, eps_inside=True)
        step, expect_v = _rmsprop_step(g, 0.01, 0.9, 1e-7, True, expect_v)
        expect_w -= step
    np.testing.assert_allclose(v, [expect_v], rtol=1e-6)
    np.testing.assert_allclose(w, [expect_w], rtol=1e-5)


def test_sgd_golden(backend):
    w = arr(1.0)
    backend.sgd_update(w, arr(0.5), None, lr=0.1)
    np.testing.assert_allclose(w, [0.95], rtol=1e-7)
    # momentum: velocity = 0.9 * 0.2 - 0.1 * 0.5 = 0.13; w += 0.13
    w, vel = arr(1.0), arr(0.2)
    backend.sgd_update(w, arr(0.5), vel, lr=0.1, momentum=0.9)
    np.testing.assert_allclose([w[0], vel[0]], [1.13, 0.13], rtol=1e-6)
    # nesterov: w += 0.9 * 0.13 - 0.1 * 0.5 = 0.067
    w, vel = arr(1.0), arr(0.2)
    backend.sgd_update(w, arr(0.5), vel, lr=0.1, momentum=0.9, nesterov=True)
    np.testing.assert_allclose([w[0], vel[0]], [1.067, 0.13], rtol=1e-6)


def _adam_steps(grads, lr, b1, b2, eps):
    """Keras 3 Adam in double precision, one scalar weight starting at 0."""
    w = m = v = 0.0
    for t, g in enumerate(grads, start=1):
        m += (g - m) * (1 - b1)
        v += (g * g - v) * (1 - b2)
        w -= lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (math.sqrt(v) + eps)
    return w, m, v


def test_adam_golden_first_step_moves_by_lr_times_sign(backend):
    w, g = arr(0, 0, 1), arr(0.5, -3.0, 1e-3)
    m, v = np.zeros(3, F32), np.zeros(3, F32)
    backend.adam_update(w, g, m, v, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-7, step=1)
    np.testing.assert_allclose(w, [-0.01, 0.01, 0.99], rtol=1e-4)
    np.testing.assert_allclose(w[0], _adam_steps([0.5], 0.01, 0.9, 0.999, 1e-7)[0], rtol=1e-6)
    np.testing.assert_allclose(m, 0.1 * g, rtol=1e-6)
    # the C kernel forms 1 - beta2 in float32 (1 - 0.999f = 0.000999987): 1.3e-5 relative
    np.testing.assert_allclose(v, 0.001 * g * g, rtol=5e-5)


def test_adam_golden_three_steps(backend):
    grads = [0.5, -0.2, 0.1]
    w, m, v = np.zeros(1, F32), np.zeros(1, F32), np.zeros(1, F32)
    for t, g in enumerate(grads, start=1):
        backend.adam_update(w, arr(g), m, v, 0.01, 0.9, 0.999, 1e-7, step=t)
    ew, em, ev = _adam_steps(grads, 0.01, 0.9, 0.999, 1e-7)
    np.testing.assert_allclose([w[0], m[0]], [ew, em], rtol=1e-5)
    np.testing.assert_allclose(v[0], ev, rtol=5e-5)  # 1 - beta2 in float32, see above


@pytest.mark.parametrize("update", ["rmsprop", "sgd", "sgd_nesterov", "adam"])
def test_list_of_parameters_equals_one_call_each(update, rng):
    sizes = [(3, 4), (7,), (1,)]
    w = [rand(rng, *s) for s in sizes]
    g = [rand(rng, *s) for s in sizes]
    s1 = [np.abs(rand(rng, *s)) for s in sizes]
    s2 = [np.abs(rand(rng, *s)) for s in sizes]

    def call(w, g, s1, s2):
        if update == "rmsprop":
            kernels.rmsprop_update(w, g, s1, 0.01, 0.9, 1e-7)
        elif update.startswith("sgd"):
            kernels.sgd_update(w, g, s1, 0.1, momentum=0.9, nesterov=update == "sgd_nesterov")
        else:
            kernels.adam_update(w, g, s1, s2, 0.01, 0.9, 0.999, 1e-7, step=3)

    lw, ls1, ls2 = [x.copy() for x in w], [x.copy() for x in s1], [x.copy() for x in s2]
    call(lw, g, ls1, ls2)  # lists (one C call)
    for i in range(len(sizes)):
        one = [w[i].copy(), s1[i].copy(), s2[i].copy()]
        call(one[0], g[i], one[1], one[2])  # single arrays
        assert_bitwise_equal(lw[i], one[0], f"{update} parameter {i}")
        assert_bitwise_equal(ls1[i], one[1], f"{update} slot 1 of parameter {i}")
        assert not np.array_equal(lw[i], w[i])  # it did move
    # and the list form matches the NumPy twin
    check_list = dict(rmsprop=("rmsprop_update", (w, g, s1, 0.01, 0.9, 1e-7)),
                      sgd=("sgd_update", (w, g, s1, 0.1, 0.9)),
                      sgd_nesterov=("sgd_update", (w, g, s1, 0.1, 0.9, True)),
                      adam=("adam_update", (w, g, s1, s2, 0.01, 0.9, 0.999, 1e-7, 3)))
    name, args = check_list[update]
    check_kernel(name, *args, rtol=1e-5, atol=1e-6)


def test_optimizer_with_tuple_and_empty_list():
    w, g, v = (arr(1.0), arr(2.0)), (arr(1.0), arr(1.0)), (np.zeros(1, F32), np.zeros(1, F32))
    kernels.sgd_update(w, g, None, lr=0.5)
    np.testing.assert_array_equal(np.concatenate(w), [0.5, 1.5])
    kernels.rmsprop_update([], [], [], 0.1, 0.9, 1e-7)  # nothing to do, no error
    kernels.adam_update([], [], [], [], 0.1, 0.9, 0.99, 1e-7, 1)


# ============================================================== kernels vs reference (hypothesis)

@settings(max_examples=60, **HYP)
@given(m=SIZES, n=SIZES, k=st.one_of(SIZES, BIG_K), trans_a=st.booleans(), trans_b=st.booleans(),
       alpha=st.sampled_from([1.0, -0.5, 3.25]), beta=st.sampled_from([0.0, 0.0, 1.0, -1.5]),
       use_bias=st.booleans(), relu=st.booleans(), scale=st.sampled_from([1.0, 1e-3, 50.0]),
       seed=SEEDS)
def test_gemm_matches_reference(m, n, k, trans_a, trans_b, alpha, beta, use_bias, relu, scale, seed):
    rng = np.random.default_rng(seed)
    a = rand(rng, *((k, m) if trans_a else (m, k)), scale=scale)
    b = rand(rng, *((n, k) if trans_b else (k, n)))
    bias = rand(rng, n, scale=scale) if use_bias else None
    # beta == 0: out holds NaN garbage that must be ignored
    out = rand(rng, m, n, scale=scale) if beta else np.full((m, n), np.nan, F32)
    rtol, atol = gemm_tol(a, b, k, alpha, beta, out, bias)
    got = check_kernel("gemm", a, b, out, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta,
                       bias=bias, relu=relu, rtol=rtol, atol=atol)
    assert not np.isnan(got[0]).any()
    if relu:
        assert (got[0] >= 0).all()


@settings(max_examples=25, **HYP)
@given(m=SIZES, n=SIZES, k=SIZES, trans_a=st.booleans(), trans_b=st.booleans(), data=st.data())
def test_gemm_hypothesis_values(m, n, k, trans_a, trans_b, data):
    """Values drawn element by element by hypothesis (small shapes)."""
    floats = st.floats(-1e3, 1e3, width=32)
    m, n, k = min(m, 17), min(n, 17), min(k, 33)
    a = data.draw(hnp.arrays(F32, (k, m) if trans_a else (m, k), elements=floats))
    b = data.draw(hnp.arrays(F32, (n, k) if trans_b else (k, n), elements=floats))
    rtol, atol = gemm_tol(a, b, k)
    check_kernel("gemm", a, b, trans_a=trans_a, trans_b=trans_b, rtol=rtol, atol=atol)


@settings(max_examples=30, **HYP)
@given(rows=st.one_of(SIZES, st.sampled_from([0, 1000, 4099])), cols=SIZES, seed=SEEDS,
       scale=st.sampled_from([1.0, 1e-20, 1e20]))
def test_add_bias_and_bias_grad_match_reference(rows, cols, seed, scale):
    rng = np.random.default_rng(seed)
    x, b = rand(rng, rows, cols, scale=scale), rand(rng, cols, scale=scale)
    check_kernel("add_bias", x, b, bitwise=True)  # one float32 add per element: exact
    check_kernel("add_bias", x, b, x)  # in place
    bmax = float(np.abs(x).max()) if x.size else 0.0
    check_kernel("bias_grad", x, rtol=1e-5, atol=4 * EPS32 * max(rows, 1) * bmax)


SPECIAL_F32 = st.floats(width=32, allow_subnormal=False)  # NaN, +-inf, -0.0, huge


@settings(max_examples=60, **HYP)
@given(x=hnp.arrays(F32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=9), elements=SPECIAL_F32))
def test_relu_forward_bitwise_equals_reference(x):
    check_kernel("relu_forward", x, bitwise=True)


@settings(max_examples=60, **HYP)
@given(y=hnp.arrays(F32, st.integers(1, 60), elements=SPECIAL_F32), data=st.data())
def test_relu_backward_bitwise_equals_reference(y, data):
    dy = data.draw(hnp.arrays(F32, y.shape, elements=SPECIAL_F32))
    check_kernel("relu_backward", y, dy, bitwise=True)
    check_kernel("relu_backward", y, dy, dy, bitwise=True)  # in place over dy


@settings(max_examples=30, **HYP)
@given(rows=st.one_of(SIZES, st.sampled_from([0, 1000])), cols=st.one_of(SIZES, st.just(130)),
       seed=SEEDS)
def test_relu_backward_bias_grad_matches_reference(rows, cols, seed):
    rng = np.random.default_rng(seed)
    y = np.maximum(rand(rng, rows, cols), 0)
    y[rng.random(y.shape) < 0.1] = 0.0
    dy = rand(rng, rows, cols)
    (dx, db, *_), (rdx, rdb, *_) = run_both("relu_backward_bias_grad", y, dy)
    assert_bitwise_equal(dx, rdx, "dx")
    np.testing.assert_allclose(db, rdb, rtol=1e-5, atol=4 * EPS32 * max(rows, 1) * 5)


@settings(max_examples=20, **HYP)
@given(n=st.sampled_from([1, 7, 33, 40000, 65537]), seed=SEEDS)
def test_relu_large_arrays_match_reference(n, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, n)
    x[rng.integers(0, n, 3)] = [np.nan, -np.inf, -0.0]
    check_kernel("relu_forward", x, bitwise=True)
    check_kernel("relu_backward", x, rand(rng, n), bitwise=True)


def _targets(rng, kind, rows, cols, label_dtype):
    labels = rng.integers(0, cols, rows).astype(label_dtype)
    if kind == "index":
        return labels
    if kind == "onehot":
        return np.eye(cols, dtype=F32)[labels]
    t = rng.random((rows, cols)).astype(F32)
    t[rng.random((rows, cols)) < 0.3] = 0.0  # zero targets where 0*log(p) must vanish
    return (t / np.maximum(t.sum(axis=1, keepdims=True), 1e-3)).astype(F32)


@settings(max_examples=50, **HYP)
@given(rows=st.one_of(SIZES, st.sampled_from([0, 500])), cols=st.sampled_from([1, 2, 3, 10, 17, 100, 1001]),
       kind=st.sampled_from(["index", "onehot", "prob"]), label_dtype=st.sampled_from([np.int32, np.int64]),
       scale=st.sampled_from([1.0, 10.0, 1e4]), upstream=st.sampled_from([1.0, -2.5]), seed=SEEDS)
def test_softmax_xent_matches_reference(rows, cols, kind, label_dtype, scale, upstream, seed):
    rng = np.random.default_rng(seed)
    logits = rand(rng, rows, cols, scale=scale)
    target = _targets(rng, kind, rows, cols, label_dtype)
    zmax = float(np.abs(logits).max()) if logits.size else 0.0
    loss_tol = 8 * EPS32 * (2 * zmax + math.log(cols) + 1)
    (loss, probs, row_loss, *_), (rloss, rprobs, rrow, *_) = run_both("softmax_xent_forward", logits, target)
    assert np.isfinite(loss) and np.isfinite(probs).all() and np.isfinite(row_loss).all()
    np.testing.assert_allclose(probs, rprobs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(row_loss, rrow, rtol=1e-5, atol=loss_tol)
    np.testing.assert_allclose(loss, rloss, rtol=1e-5, atol=loss_tol)
    if rows:
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    scale_arg = upstream / max(rows, 1)
    check_kernel("softmax_xent_backward", probs, target, scale_arg, rtol=1e-5, atol=1e-6 * abs(scale_arg))


@settings(max_examples=30, **HYP)
@given(sizes=st.lists(st.sampled_from([1, 7, 100, 40000]), min_size=1, max_size=3),
       update=st.sampled_from(["rmsprop_in", "rmsprop_out", "sgd", "momentum", "nesterov", "adam"]),
       lr=st.sampled_from([1e-3, 0.1]), step=st.integers(1, 1000), seed=SEEDS)
def test_optimizers_match_reference(sizes, update, lr, step, seed):
    rng = np.random.default_rng(seed)
    w = [rand(rng, n) for n in sizes]
    g = [rand(rng, n, scale=0.1) for n in sizes]
    s1 = [np.abs(rand(rng, n, scale=0.01)) for n in sizes]
    s2 = [np.abs(rand(rng, n, scale=0.01)) for n in sizes]
    tol = dict(rtol=1e-5, atol=1e-6)
    if update.startswith("rmsprop"):
        check_kernel("rmsprop_update", w, g, s1, lr, 0.9, 1e-7, update == "rmsprop_in", **tol)
    elif update == "sgd":
        check_kernel("sgd_update", w, g, None, lr, **tol)
    elif update in ("momentum", "nesterov"):
        check_kernel("sgd_update", w, g, s1, lr, 0.9, update == "nesterov", **tol)
    else:
        # the kernel forms 1 - beta2 in float32 (1.3e-5 relative off): allow that much of a step
        _, want = run_both("adam_update", w, g, s1, s2, lr, 0.9, 0.999, 1e-7, step)
        step_size = max(float(np.abs(after - before).max()) for after, before in zip(want, w))
        check_kernel("adam_update", w, g, s1, s2, lr, 0.9, 0.999, 1e-7, step,
                     rtol=5e-5, atol=1e-6 + 3e-5 * step_size)


def test_portable_gemm_kernel_matches_reference():
    """The portable micro-kernel (for CPUs without AVX2, forced by an environment
    variable read once per process) on the edge shapes, all transposes and epilogues,
    and bitwise thread-invariant too."""
    out = assert_snippet_ok("""
        import itertools, sys
        import numpy as np
        sys.path.insert(0, "tests")
        import minigrad as mg
        from minigrad import kernels, reference
        from helpers import gemm_tol
        print("kernel", kernels.gemm_kernel_name())
        rng = np.random.default_rng(0)
        bad = 0
        for (m, n, k), ta, tb in itertools.product(
                [(1, 1, 1), (7, 5, 13), (17, 33, 1031), (131, 10, 300), (64, 129, 257)], [False, True], [False, True]):
            a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
            b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
            bias, c = rng.standard_normal(n).astype(np.float32), rng.standard_normal((m, n)).astype(np.float32)
            results = []
            for threads in (1, 3):
                mg.set_num_threads(threads)
                results.append(kernels.gemm(a, b, c.copy(), trans_a=ta, trans_b=tb, alpha=0.5, beta=2.0,
                                            bias=bias, relu=True))
            want = reference.gemm(a, b, c.copy(), trans_a=ta, trans_b=tb, alpha=0.5, beta=2.0, bias=bias, relu=True)
            rtol, atol = gemm_tol(a, b, k, 0.5, 2.0, c, bias)
            if not np.allclose(results[0], want, rtol=rtol, atol=atol):
                bad += 1; print("wrong", m, n, k, ta, tb)
            if not np.array_equal(results[0].view(np.uint32), results[1].view(np.uint32)):
                bad += 1; print("thread-dependent", m, n, k, ta, tb)
        print("bad", bad)
        """, env={"MINIGRAD_GEMM_KERNEL": "portable"})
    assert "kernel portable" in out and "bad 0" in out, out


def test_zero_dim_relu_kernel():
    y = kernels.relu_forward(np.array(-2.0, F32))
    assert y.shape == () and y == 0.0
    assert kernels.relu_backward(np.array(1.0, F32), np.array(3.0, F32)) == 3.0


def test_zero_dim_relu_reference_matches_kernel():
    check_kernel("relu_forward", np.array(-2.0, F32), bitwise=True)
