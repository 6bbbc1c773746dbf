"""Tensor construction and autograd graph semantics."""
import gc
import threading

import numpy as np
import pytest

import minigrad as mg
from minigrad import kernels
from helpers import F32, assert_bitwise_equal

RNG = np.random.default_rng(3)


def leaf(*shape):
    return mg.Tensor(RNG.standard_normal(shape).astype(F32), requires_grad=True)


# ---------------------------------------------------------------- construction

def test_float32_contiguous_input_is_shared_not_copied():
    data = np.arange(6, dtype=F32).reshape(2, 3)
    t = mg.Tensor(data)
    assert t.numpy() is data and np.shares_memory(t.numpy(), data)
    data[0, 0] = 42.0
    assert t.numpy()[0, 0] == 42.0
    assert mg.Tensor(t).numpy() is data  # a Tensor of a Tensor shares too


@pytest.mark.parametrize("data,expected", [
    ([[1, 2], [3, 4]], [[1, 2], [3, 4]]),
    ([1.5, -2.25], [1.5, -2.25]),
    (np.array([1.0, 2.0], np.float64), [1, 2]),
    (np.array([1, 2, 3], np.int64), [1, 2, 3]),
    (np.array([True, False]), [1, 0]),
    (np.array([1, 2], np.uint8), [1, 2]),
    (np.array([0.5], np.float16), [0.5]),
    (np.float64(2.5), [2.5]),
    (7, [7]),
])
def test_numeric_inputs_are_converted_to_float32(data, expected):
    t = mg.Tensor(data)
    assert t.dtype == np.float32 and t.numpy().dtype == np.float32
    assert t.numpy().flags.c_contiguous
    np.testing.assert_array_equal(t.numpy().ravel(), np.ravel(expected))
    if isinstance(data, np.ndarray):
        assert not np.shares_memory(t.numpy(), data)


def test_non_contiguous_float32_input_is_copied_to_contiguous():
    base = np.arange(24, dtype=F32).reshape(4, 6)
    for view in (base[:, ::2], base.T, base[::-1], np.asfortranarray(base)):
        t = mg.Tensor(view)
        assert t.numpy().flags.c_contiguous
        np.testing.assert_array_equal(t.numpy(), view)


@pytest.mark.parametrize("data", ["abc", ["a", "b"], None, object(), np.array([1, None], dtype=object),
                                  1 + 2j, np.array([1 + 1j]), [[1, 2], [3]], {"a": 1},
                                  np.array(["1.0"]), np.array([b"x"])],
                         ids=repr)
def test_non_numeric_inputs_raise_type_error(data):
    with pytest.raises(TypeError, match="Tensor: expected"):
        mg.Tensor(data)


@pytest.mark.parametrize("data", [2.0, 7, np.float64(2.5), np.float32(1.0)])
def test_python_scalar_gives_zero_dim_tensor(data):
    assert mg.Tensor(data).shape == np.shape(data) == ()


def test_attributes():
    data = np.arange(6, dtype=F32).reshape(2, 3)
    t = mg.Tensor(data, requires_grad=True)
    assert (t.shape, t.ndim, t.dtype, t.size, len(t)) == ((2, 3), 2, np.float32, 6, 2)
    assert t.numpy() is data
    assert t.requires_grad and t.is_leaf and t.grad is None
    assert "requires_grad=True" in repr(t)
    assert mg.Tensor([[3.5]]).item() == 3.5 and isinstance(mg.Tensor([[3.5]]).item(), float)
    with pytest.raises(ValueError, match=r"item: expected a tensor with one element, received shape \(2, 3\)"):
        t.item()


def test_detach_shares_data_and_leaves_the_graph():
    x = leaf(3)
    y = x * 2
    d = y.detach()
    assert np.shares_memory(d.numpy(), y.numpy())
    assert not d.requires_grad and d.is_leaf
    z = (d * x).sum()  # only x's path carries a gradient
    z.backward()
    np.testing.assert_allclose(x.grad, d.numpy(), rtol=1e-7)


# ---------------------------------------------------------------- no_grad

def test_no_grad_builds_no_graph_and_restores_mode():
    x = leaf(2, 2)
    assert mg.is_grad_enabled()
    with mg.no_grad():
        assert not mg.is_grad_enabled()
        y = x * 2 + 1
        z = mg.dense(x, x, activation="relu")
    assert mg.is_grad_enabled()
    for t in (y, z):
        assert not t.requires_grad and t.is_leaf
        with pytest.raises(RuntimeError, match="does not require grad"):
            t.sum().backward()
    np.testing.assert_allclose(y.numpy(), x.numpy() * 2 + 1)
    assert (x * 2).requires_grad  # restored


def test_no_grad_restored_after_exception_and_nesting():
    with pytest.raises(KeyError):
        with mg.no_grad():
            raise KeyError("boom")
    assert mg.is_grad_enabled()
    with mg.no_grad():
        with mg.no_grad():
            pass
        assert not mg.is_grad_enabled()  # the outer block is still in force
    assert mg.is_grad_enabled()


def test_no_grad_as_decorator():
    @mg.no_grad()
    def predict(t):
        """Doc."""
        assert not mg.is_grad_enabled()
        return t * 3

    x = leaf(3)
    y = predict(x)
    assert not y.requires_grad and mg.is_grad_enabled()
    assert predict.__name__ == "predict" and predict.__doc__ == "Doc."


def test_no_grad_is_per_python_thread():
    seen = {}

    def other():
        seen["enabled"] = mg.is_grad_enabled()
        seen["requires"] = (leaf(2) * 2).requires_grad

    with mg.no_grad():
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert seen == {"enabled": True, "requires": True}


# ---------------------------------------------------------------- backward

def test_backward_twice_accumulates_and_intermediates_keep_no_grad():
    x, w = leaf(3, 4), leaf(4, 2)
    h = x @ w
    loss = (h * h).sum()
    loss.backward()
    first = x.grad.copy(), w.grad.copy()
    np.testing.assert_allclose(first[1], x.numpy().T.astype(np.float64) @ (2 * h.numpy()), rtol=1e-5)
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * first[0], rtol=1e-6)
    np.testing.assert_allclose(w.grad, 2 * first[1], rtol=1e-6)
    assert h.grad is None and loss.grad is None and not h.is_leaf


def test_backward_on_a_leaf_root():
    x = mg.Tensor([[3.0]], requires_grad=True)
    x.backward()
    np.testing.assert_array_equal(x.grad, [[1.0]])
    x.backward(np.array([[2.0]]))
    np.testing.assert_array_equal(x.grad, [[3.0]])


def test_backward_copies_the_upstream_gradient():
    x = leaf(2, 3)
    r = np.ones((2, 3), F32)
    (x + 0.0).backward(r)
    r[...] = 100.0  # the caller's array must not be the leaf's .grad
    np.testing.assert_array_equal(x.grad, np.ones((2, 3)))
    (x + 0.0).backward(mg.Tensor(np.full((2, 3), 2.0, F32)))  # a Tensor as grad
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 3.0))


def test_deep_chain_of_100000_ops():
    x = leaf(3)
    y = x
    for _ in range(100_000):
        y = -y
    y.sum().backward()  # no RecursionError: the walk is iterative
    np.testing.assert_array_equal(x.grad, np.ones(3))  # an even number of negations
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    del y
    gc.collect()  # freeing the chain must not overflow the C stack either


def test_shared_subexpression_gets_the_sum_of_both_gradients():
    x = leaf(5)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.numpy() + 1, rtol=1e-6)
    x.grad = None
    (x + x).sum().backward()
    np.testing.assert_array_equal(x.grad, np.full(5, 2.0))


def test_diamond_graph():
    x = leaf(4)
    a = x * 2.0
    b = x * 3.0
    c = (a * b).sum()  # 6 x^2 -> 12 x
    c.backward()
    np.testing.assert_allclose(x.grad, 12 * x.numpy(), rtol=1e-6)
    # a diamond whose branches are intermediates used by several ops
    x.grad = None
    h = x.exp()
    out = (h * h + h.log() + h).sum()  # exp(2x) + x + exp(x)
    out.backward()
    xv = x.numpy().astype(np.float64)
    np.testing.assert_allclose(x.grad, 2 * np.exp(2 * xv) + 1 + np.exp(xv), rtol=1e-5)


def test_one_tensor_as_two_inputs_of_one_op():
    x = leaf(4, 4)
    r = RNG.standard_normal((4, 4)).astype(F32)
    xv, rv = x.numpy().astype(np.float64), r.astype(np.float64)
    for y in (x @ x, mg.matmul(x, x), mg.dense(x, x), mg.dense(x, x, None, "linear")):
        x.grad = None
        y.backward(r)  # d(x @ x) = r @ x.T + x.T @ r
        np.testing.assert_allclose(x.grad, rv @ xv.T + xv.T @ rv, rtol=1e-5, atol=1e-5)
    b = leaf(4)
    assert mg.gradcheck(lambda t: mg.dense(t, t, b).sum(), [mg.Tensor(x.numpy().copy(), requires_grad=True)])


def test_gradients_of_two_leaves_from_one_add_do_not_alias():
    # Add hands the same gradient array to both inputs: each leaf needs its own copy
    x, w = leaf(2, 3), leaf(2, 3)
    out = x + w
    out.backward(np.ones((2, 3), F32))
    assert not np.shares_memory(x.grad, w.grad)
    out.backward(np.ones((2, 3), F32))
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 2.0))
    np.testing.assert_array_equal(w.grad, np.full((2, 3), 2.0))
    # the bias-add path (C kernel) passes the gradient through to x as well
    x, b = leaf(4, 3), leaf(3)
    y = x + b
    y2 = (y + x).sum()
    y2.backward()
    np.testing.assert_array_equal(x.grad, np.full((4, 3), 2.0))
    np.testing.assert_array_equal(b.grad, np.full(3, 4.0))


def test_backward_errors():
    x = leaf(2, 3)
    y = x * 2
    with pytest.raises(RuntimeError, match=r"grad can be omitted only for a one-element tensor, this one has shape \(2, 3\)"):
        y.backward()
    with pytest.raises(ValueError, match=r"backward: expected grad of shape \(2, 3\), received \(3, 2\)"):
        y.backward(np.ones((3, 2), F32))
    with pytest.raises(RuntimeError, match="backward: this tensor does not require grad"):
        mg.Tensor([1.0]).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        (mg.Tensor([[1.0]]) * 2).backward()
    assert x.grad is None  # nothing half-done


def test_backward_is_deterministic():
    def grads():
        rng = np.random.default_rng(11)
        x = mg.Tensor(rng.standard_normal((64, 300)).astype(F32), requires_grad=True)
        w = mg.Tensor(rng.standard_normal((300, 70)).astype(F32) * 0.1, requires_grad=True)
        b = mg.Tensor(np.zeros(70, F32), requires_grad=True)
        h = mg.dense(x, w, b, "relu")
        loss = mg.softmax_cross_entropy(h @ w.T @ w, rng.integers(0, 70, 64)) + (h * h).mean()
        loss.backward()
        return [t.grad.copy() for t in (x, w, b)]

    for g1, g2 in zip(grads(), grads()):
        assert_bitwise_equal(g1, g2, "gradient")


# ---------------------------------------------------------------- only the gradients needed

class Recorder(mg.Function):
    """a * b + c, recording what backward was asked for."""
    calls = []

    @staticmethod
    def forward(ctx, a, b, c):
        ctx.save_for_backward(a, b)
        return a * b + c

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        Recorder.calls.append(ctx.needs_input_grad)
        return (grad * b if ctx.needs_input_grad[0] else None,
                grad * a if ctx.needs_input_grad[1] else None,
                grad if ctx.needs_input_grad[2] else None)


def test_needs_input_grad_tells_backward_what_is_needed():
    Recorder.calls = []
    a, b = leaf(3), mg.Tensor(np.arange(3, dtype=F32))
    out = Recorder.apply(a, b, np.ones(3, F32))  # a constant array as third input
    out.sum().backward()
    assert Recorder.calls == [(True, False, False)]
    np.testing.assert_array_equal(a.grad, np.arange(3))
    assert b.grad is None
    Recorder.calls = []
    a2 = leaf(3)
    Recorder.apply(b, a2, leaf(3)).sum().backward()
    assert Recorder.calls == [(False, True, True)]


def test_no_gradient_work_on_paths_without_grad_leaves():
    Recorder.calls = []
    const = mg.Tensor(np.ones(3, F32))
    side = Recorder.apply(const, const, const)  # no leaf needs grad: no graph at all
    assert not side.requires_grad and side.is_leaf
    x = leaf(3)
    (x * side).sum().backward()
    assert Recorder.calls == []
    np.testing.assert_array_equal(x.grad, side.numpy())


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_dense_backward_skips_dx_when_input_needs_no_grad(monkeypatch, activation, with_bias):
    calls = []
    real_gemm = kernels.gemm

    def counting_gemm(*args, **kwargs):
        calls.append(kwargs)
        return real_gemm(*args, **kwargs)

    rng = np.random.default_rng(0)
    w = mg.Tensor(rng.standard_normal((5, 4)).astype(F32), requires_grad=True)
    b = mg.Tensor(np.full(4, 0.1, F32), requires_grad=True) if with_bias else None
    for x_needs_grad, expected in ((False, 1), (True, 2)):
        x = mg.Tensor(rng.standard_normal((6, 5)).astype(F32), requires_grad=x_needs_grad)
        y = mg.dense(x, w, b, activation)
        monkeypatch.setattr(kernels, "gemm", counting_gemm)
        calls.clear()
        y.sum().backward()
        monkeypatch.setattr(kernels, "gemm", real_gemm)
        assert len(calls) == expected, calls  # dW (and dx only when x needs it)
        assert (x.grad is not None) == x_needs_grad
        dz = (y.numpy() > 0) if activation == "relu" else np.ones_like(y.numpy())
        np.testing.assert_allclose(w.grad, x.numpy().T.astype(np.float64) @ dz, rtol=1e-5, atol=1e-5)
        w.grad = None
        if with_bias:
            np.testing.assert_allclose(b.grad, dz.sum(axis=0), rtol=1e-6)
            b.grad = None


# ---------------------------------------------------------------- 0-d tensors (bugs)

def test_zero_dim_leaf_gradient_keeps_its_shape():
    x = mg.Tensor(np.array(2.0, F32), requires_grad=True)
    y = mg.Tensor(np.ones((2, 3), F32))
    (x * y).sum().backward()
    assert x.grad.shape == x.shape == ()
    assert float(x.grad) == 6.0


def test_zero_dim_leaf_used_directly_and_through_broadcasting():
    x = mg.Tensor(np.array(2.0, F32), requires_grad=True)
    y = mg.Tensor(np.ones((2, 3), F32))
    out = x + (x * y).sum()  # d/dx = 1 + 6
    out.backward()
    assert float(x.grad) == 7.0


def test_zero_dim_op_results_are_arrays():
    x = mg.Tensor(np.array(2.0, F32), requires_grad=True)
    for t in (x + x, x * 3.0, x.exp(), -x, x ** 2):
        assert isinstance(t.numpy(), np.ndarray), type(t.numpy())
