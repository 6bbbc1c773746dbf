"""Every differentiable op: forward against NumPy, gradients against a
hand-derived NumPy formula and against finite differences (mg.gradcheck)."""
import numpy as np
import pytest

import minigrad as mg
from minigrad import ops
from helpers import F32

RNG = np.random.default_rng(7)


def randn(*shape, low=None, high=None):
    if low is not None:
        return RNG.uniform(low, high, shape).astype(F32)
    return RNG.standard_normal(shape).astype(F32)


def away_from_zero(*shape):
    """Values with |x| in [0.2, 2]: relu-like kinks stay out of finite-difference reach."""
    return (RNG.choice([-1, 1], shape) * RNG.uniform(0.2, 2.0, shape)).astype(F32)


def check_op(fn, inputs, forward, grads, rtol=1e-5, atol=1e-5, gradcheck=True, gc_kw=None):
    """fn(*tensors) must equal forward(*arrays) (in float64) and, for an upstream
    gradient r, leave grads(r, *arrays) in the inputs' .grad; then gradcheck fn."""
    tensors = [mg.Tensor(x.copy(), requires_grad=True) for x in inputs]
    out = fn(*tensors)
    assert isinstance(out, mg.Tensor) and out.dtype == np.float32
    want = forward(*[x.astype(np.float64) for x in inputs])
    np.testing.assert_allclose(out.numpy(), want, rtol=rtol, atol=atol)
    r = RNG.standard_normal(out.shape).astype(F32)
    out.backward(r)
    expected = grads(r.astype(np.float64), *[x.astype(np.float64) for x in inputs])
    for i, (t, g) in enumerate(zip(tensors, expected)):
        assert t.grad is not None, f"input {i} got no gradient"
        assert t.grad.shape == t.shape and t.grad.dtype == np.float32, f"input {i}"
        np.testing.assert_allclose(t.grad, g, rtol=rtol, atol=atol, err_msg=f"grad of input {i}")
    if gradcheck:
        fresh = [mg.Tensor(x.copy(), requires_grad=True) for x in inputs]
        assert mg.gradcheck(fn, fresh, **(gc_kw or {})) is True
    return tensors, out


def unbroadcast(g, shape):
    """Reference: sum g over broadcast axes to reach shape."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    return g.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True)


# ---------------------------------------------------------------- matmul

@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((1, 7), (7, 1)), ((5, 1), (1, 3))])
def test_matmul(shapes):
    a, b = randn(*shapes[0]), randn(*shapes[1])
    check_op(lambda x, y: x @ y, [a, b], lambda x, y: x @ y, lambda r, x, y: (r @ y.T, x.T @ r))
    check_op(mg.matmul, [a, b], lambda x, y: x @ y, lambda r, x, y: (r @ y.T, x.T @ r))


def test_matmul_with_constant_operands():
    a, b = randn(3, 4), randn(4, 2)
    tb = mg.Tensor(b, requires_grad=True)
    out = a @ tb  # ndarray @ Tensor -> __rmatmul__
    assert isinstance(out, mg.Tensor)
    out.sum().backward()
    np.testing.assert_allclose(tb.grad, a.T.astype(np.float64) @ np.ones((3, 2)), rtol=1e-5)
    ta = mg.Tensor(a, requires_grad=True)
    (ta @ b).sum().backward()
    np.testing.assert_allclose(ta.grad, np.ones((3, 2)) @ b.T.astype(np.float64), rtol=1e-5)


# ---------------------------------------------------------------- add / sub / mul / div

BROADCAST_SHAPES = [((2, 3), (2, 3)), ((4, 3), (3,)), ((3, 1), (1, 4)), ((2, 3, 4), (3, 1)),
                    ((5,), (1,)), ((1, 3), (2, 1))]


@pytest.mark.parametrize("sa,sb", BROADCAST_SHAPES)
def test_add(sa, sb):
    check_op(lambda x, y: x + y, [randn(*sa), randn(*sb)], lambda x, y: x + y,
             lambda r, x, y: (unbroadcast(r, x.shape), unbroadcast(r, y.shape)))


def test_add_bias_over_rows_uses_the_c_kernel():
    x, b = randn(6, 5), randn(5)
    tensors, out = check_op(lambda x, y: x + y, [x, b], lambda x, y: x + y,
                            lambda r, x, y: (r, r.sum(axis=0)))
    assert out._node.function is ops.AddBias
    tensors, out = check_op(lambda x, y: y + x, [x, b], lambda x, y: y + x,
                            lambda r, x, y: (r, r.sum(axis=0)))
    assert out._node.function is ops.Add  # (C,) + (N, C) is the general path


@pytest.mark.parametrize("sa,sb", BROADCAST_SHAPES)
def test_sub(sa, sb):
    check_op(lambda x, y: x - y, [randn(*sa), randn(*sb)], lambda x, y: x - y,
             lambda r, x, y: (unbroadcast(r, x.shape), unbroadcast(-r, y.shape)))


@pytest.mark.parametrize("sa,sb", BROADCAST_SHAPES)
def test_mul(sa, sb):
    check_op(lambda x, y: x * y, [randn(*sa), randn(*sb)], lambda x, y: x * y,
             lambda r, x, y: (unbroadcast(r * y, x.shape), unbroadcast(r * x, y.shape)))


@pytest.mark.parametrize("sa,sb", BROADCAST_SHAPES)
def test_div(sa, sb):
    check_op(lambda x, y: x / y, [randn(*sa), away_from_zero(*sb)], lambda x, y: x / y,
             lambda r, x, y: (unbroadcast(r / y, x.shape), unbroadcast(-r * x / y**2, y.shape)),
             rtol=1e-4)


CONSTANTS = [2.5, -3, np.float64(0.5), np.array(1.5), np.array([1.0, -2.0, 3.0]),
             np.array([[2.0], [0.5]], np.float64), [1.0, 2.0, 4.0]]


@pytest.mark.parametrize("c", CONSTANTS, ids=lambda c: type(c).__name__ + str(np.shape(c)))
def test_binary_ops_with_constants_on_either_side(c):
    x = away_from_zero(2, 3)
    cc = np.asarray(c, np.float64)
    cases = [
        (lambda t: t + c, lambda x: x + cc, lambda r, x: r),
        (lambda t: c + t, lambda x: cc + x, lambda r, x: r),
        (lambda t: t - c, lambda x: x - cc, lambda r, x: r),
        (lambda t: c - t, lambda x: cc - x, lambda r, x: -r),
        (lambda t: t * c, lambda x: x * cc, lambda r, x: r * cc),
        (lambda t: c * t, lambda x: cc * x, lambda r, x: r * cc),
        (lambda t: t / c, lambda x: x / cc, lambda r, x: r / cc),
        (lambda t: c / t, lambda x: cc / x, lambda r, x: -r * cc / x**2),
    ]
    for fn, fwd, grad in cases:
        tensors, out = check_op(fn, [x], fwd, lambda r, x: (grad(r, x) * np.ones_like(x),),
                                rtol=1e-4, gradcheck=False)
        assert out.shape == np.broadcast_shapes(x.shape, np.shape(c))
        assert out.dtype == np.float32  # float64 constants do not promote


def test_neg():
    check_op(lambda x: -x, [randn(3, 4)], lambda x: -x, lambda r, x: (-r,))


# ---------------------------------------------------------------- pow, exp, log

@pytest.mark.parametrize("p", [2, 3, 0.5, -1, 1.5, 0])
def test_pow(p):
    x = randn(3, 4, low=0.5, high=2.0)  # positive: fractional powers stay real
    check_op(lambda t: t ** p, [x], lambda x: x ** p, lambda r, x: (r * p * x ** (p - 1),), rtol=1e-4)


def test_pow_negative_base_integer_exponent():
    x = away_from_zero(5)
    check_op(lambda t: t ** 3, [x], lambda x: x ** 3, lambda r, x: (3 * r * x ** 2,), rtol=1e-4)


def test_exp():
    check_op(lambda t: t.exp(), [randn(4, 3)], np.exp, lambda r, x: (r * np.exp(x),))


def test_log():
    check_op(lambda t: t.log(), [randn(4, 3, low=0.3, high=3.0)], np.log, lambda r, x: (r / x,),
             rtol=1e-4)


# ---------------------------------------------------------------- reductions and shapes

AXES = [None, 0, 1, -1, (0, 2), (2, 0), (0, 1, 2)]


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_sum(axis, keepdims):
    x = randn(2, 3, 4)

    def grad(r, x):
        kept = np.sum(np.zeros_like(x), axis=axis, keepdims=True).shape
        return (np.broadcast_to(r.reshape(kept), x.shape),)
    check_op(lambda t: t.sum(axis=axis, keepdims=keepdims), [x],
             lambda x: np.sum(x, axis=axis, keepdims=keepdims), grad)


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_mean(axis, keepdims):
    x = randn(2, 3, 4)

    def grad(r, x):
        kept = np.sum(np.zeros_like(x), axis=axis, keepdims=True).shape
        count = x.size // int(np.prod(kept))
        return (np.broadcast_to(r.reshape(kept), x.shape) / count,)
    check_op(lambda t: t.mean(axis=axis, keepdims=keepdims), [x],
             lambda x: np.mean(x, axis=axis, keepdims=keepdims), grad)


@pytest.mark.parametrize("shape", [(12,), (3, 4), (2, -1), ((4, 3),), (1, 12, 1)])
def test_reshape(shape):
    check_op(lambda t: t.reshape(*shape), [randn(2, 6)], lambda x: x.reshape(*shape),
             lambda r, x: (r.reshape(x.shape),))


@pytest.mark.parametrize("shape", [(3, 5), (1, 4), (2, 3, 4)])
def test_transpose(shape):
    check_op(lambda t: t.T, [randn(*shape)], lambda x: x.T, lambda r, x: (r.T,))
    t = mg.Tensor(randn(*shape)).T
    assert t.numpy().flags.c_contiguous  # kernels can take it without a copy


# ---------------------------------------------------------------- relu, softmax

def test_relu():
    x = away_from_zero(5, 7)
    check_op(mg.relu, [x], lambda x: np.maximum(x, 0), lambda r, x: (r * (x > 0),))
    check_op(lambda t: t.relu(), [x], lambda x: np.maximum(x, 0), lambda r, x: (r * (x > 0),))


def test_relu_gradient_at_zero_is_zero():
    x = mg.Tensor(np.array([0.0, -0.0, 1.0, -1.0], F32), requires_grad=True)
    mg.relu(x).backward(np.ones(4, F32))
    np.testing.assert_array_equal(x.grad, [0, 0, 1, 0])


def _np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("shape", [(4, 5), (1, 1), (2, 3, 6)])
def test_softmax(shape):
    def grad(r, x):
        y = _np_softmax(x)
        return (y * (r - (r * y).sum(axis=-1, keepdims=True)),)
    check_op(mg.softmax, [randn(*shape) * 3], _np_softmax, grad)
    check_op(lambda t: t.softmax(), [randn(*shape)], _np_softmax, grad)


def test_softmax_large_logits_stable():
    y = mg.softmax(mg.Tensor(np.array([[1e4, -1e4, 1e4]], F32))).numpy()
    np.testing.assert_allclose(y, [[0.5, 0, 0.5]])


# ---------------------------------------------------------------- dense

@pytest.mark.parametrize("activation", [None, "linear", "relu"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_dense(activation, with_bias):
    relu = activation == "relu"
    while True:  # keep pre-activations away from the relu kink (finite differences)
        x, w, b = randn(6, 5), randn(5, 4), randn(4)
        if np.abs(x @ w + (b if with_bias else 0)).min() > 0.05:
            break

    def forward(x, w, b=None):
        z = x @ w + (0 if b is None else b)
        return np.maximum(z, 0) if relu else z

    def grads(r, x, w, b=None):
        dz = r * (forward(x, w, b) > 0) if relu else r
        return (dz @ w.T, x.T @ dz) + ((dz.sum(axis=0),) if b is not None else ())

    if with_bias:
        fn, inputs = (lambda x, w, b: mg.dense(x, w, b, activation)), [x, w, b]
    else:
        fn, inputs = (lambda x, w: mg.dense(x, w, None, activation)), [x, w]
    tensors, out = check_op(fn, inputs, forward, grads, rtol=1e-4, atol=1e-4)
    assert out._node.function is ops.Dense  # one fused op, not matmul + add + relu
    if relu:
        assert (out.numpy() >= 0).all() and (out.numpy() == 0).any()


def test_dense_rejects_unknown_activation():
    with pytest.raises(ValueError, match="dense: expected activation None, 'linear' or 'relu', received 'tanh'"):
        mg.dense(mg.Tensor(randn(2, 3)), mg.Tensor(randn(3, 2)), activation="tanh")


# ---------------------------------------------------------------- softmax cross-entropy

def _np_xent(z, t):
    logp = z - z.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    return -(t * logp).sum(axis=1).mean()


@pytest.mark.parametrize("target_kind", ["int64", "int32", "list", "onehot_f32", "onehot_f64", "prob"])
def test_softmax_cross_entropy(target_kind):
    n, c = 5, 4
    logits = randn(n, c) * 2
    labels = RNG.integers(0, c, n)
    dense_t = np.eye(c)[labels]
    if target_kind == "prob":
        dense_t = RNG.random((n, c))
        dense_t /= dense_t.sum(axis=1, keepdims=True)
    target = {"int64": labels, "int32": labels.astype(np.int32), "list": labels.tolist(),
              "onehot_f32": dense_t.astype(F32), "onehot_f64": dense_t, "prob": dense_t.astype(F32)}[target_kind]
    t64 = dense_t.astype(F32).astype(np.float64)

    check_op(lambda z: mg.softmax_cross_entropy(z, target), [logits], lambda z: _np_xent(z, t64),
             lambda r, z: (r * (_np_softmax(z) * t64.sum(axis=1, keepdims=True) - t64) / n,),
             rtol=1e-5, atol=1e-6)


def test_softmax_cross_entropy_doc_example_values():
    z = mg.Tensor(np.array([[0.0, 0.0], [1e4, -1e4]], F32), requires_grad=True)
    loss = mg.softmax_cross_entropy(z, np.array([1, 1]))
    assert loss.item() == pytest.approx((np.log(2) + 2e4) / 2, rel=1e-6)
    loss.backward()
    np.testing.assert_allclose(z.grad, [[0.25, -0.25], [0.5, -0.5]], rtol=1e-6)


# ---------------------------------------------------------------- gradcheck itself

class WrongGradForB(mg.Function):
    """a * b whose gradient for b is off by one at element (1, 2)."""
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        wrong = grad * a
        wrong[1, 2] += 1.0
        return grad * b, wrong


def test_gradcheck_catches_a_wrong_gradient():
    a = mg.Tensor(randn(2, 3), requires_grad=True)
    b = mg.Tensor(randn(2, 3), requires_grad=True)
    with pytest.raises(mg.GradcheckError) as info:
        mg.gradcheck(lambda x, y: WrongGradForB.apply(x, y).sum(), [a, b])
    message = str(info.value)
    assert "input 1" in message and "element (1, 2)" in message, message
    assert isinstance(info.value, AssertionError)


def test_gradcheck_catches_a_wrong_gradient_for_a_non_scalar_output():
    class DoubleWrong(mg.Function):
        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, grad):
            return grad  # should be 2 * grad

    x = mg.Tensor(randn(4), requires_grad=True)
    with pytest.raises(mg.GradcheckError, match=r"input 0 \(shape \(4,\)\), element \(0,\)"):
        mg.gradcheck(DoubleWrong.apply, [x])


def test_gradcheck_passes_correct_gradient_and_checks_only_grad_inputs():
    a = mg.Tensor(randn(2, 3), requires_grad=True)
    const = mg.Tensor(randn(2, 3))
    assert mg.gradcheck(lambda x, y: (x * y).exp().sum(), [a, const]) is True
    with pytest.raises(ValueError, match="at least one input Tensor with requires_grad=True"):
        mg.gradcheck(lambda y: y.sum(), [const])
