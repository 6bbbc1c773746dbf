"""The PyTorch-named ops added to the Tensor API: element-wise (sin ... round, pow with a
Tensor exponent), reductions (var, std, prod, cumsum, norm, logsumexp), indexing (gather,
index_select, masked_fill), shapes (expand, repeat, split, chunk, flip) and the in-place
methods (zero_, fill_, copy_, add_, sub_, mul_, div_, clamp_). Values against NumPy (and
PyTorch when it is installed), gradients against finite differences (mg.gradcheck) and
hand-derived formulas, replay under mg.jit bit for bit, and the errors they raise."""
import doctest
import warnings

import numpy as np
import pytest

import minigrad as mg
from helpers import F32, assert_bitwise_equal

RNG = np.random.default_rng(23)


def leaf(*shape, low=None, values=None):
    x = RNG.standard_normal(shape).astype(F32) if values is None else np.asarray(values, F32)
    if low is not None:
        x = np.abs(x) + F32(low)
    return mg.Tensor(x, requires_grad=True)


def away_from_integers(*shape):
    """Values whose floor/ceil/round/sign do not change within gradcheck's eps."""
    return leaf(values=RNG.integers(-3, 3, shape) + RNG.uniform(0.1, 0.4, shape) * RNG.choice([1, 3], shape))


def torch_or_skip():
    return pytest.importorskip("torch")


# ---------------------------------------------------------------- element-wise

UNARY = [
    # name, reference value, hand-derived derivative, lowest input (for the domain)
    ("sin", np.sin, np.cos, None),
    ("cos", np.cos, lambda x: -np.sin(x), None),
    ("log1p", np.log1p, lambda x: 1 / (1 + x), 0.1),
    ("expm1", np.expm1, np.exp, None),
    ("square", np.square, lambda x: 2 * x, None),
    ("reciprocal", lambda x: 1 / x, lambda x: -1 / x ** 2, 0.5),
    ("rsqrt", lambda x: 1 / np.sqrt(x), lambda x: -0.5 * x ** -1.5, 0.5),
]


@pytest.mark.parametrize("name,want,dwant,low", UNARY, ids=[u[0] for u in UNARY])
def test_unary_values_gradients_and_methods(name, want, dwant, low):
    x = leaf(3, 4, low=low)
    x64 = x.data.astype(np.float64)
    y = getattr(mg, name)(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y.data, want(x64), rtol=3e-6, atol=1e-7)
    np.testing.assert_array_equal(getattr(x, name)().data, y.data)
    g = RNG.standard_normal(x.shape).astype(F32)
    y.backward(g)
    np.testing.assert_allclose(x.grad, g * dwant(x64), rtol=1e-5, atol=1e-6)
    for shape in [(5,), (2, 3)]:
        assert mg.gradcheck(getattr(mg, name), [leaf(*shape, low=low)])


@pytest.mark.parametrize("name,want", [("sign", np.sign), ("floor", np.floor), ("ceil", np.ceil),
                                       ("round", np.rint)])
def test_step_functions_have_zero_gradient(name, want):
    x = away_from_integers(3, 4)
    y = getattr(x, name)()
    np.testing.assert_array_equal(y.data, want(x.data))
    y.backward(np.full(x.shape, np.inf, F32))  # zero, not inf * 0
    assert x.grad.tolist() == np.zeros(x.shape).tolist()
    assert mg.gradcheck(getattr(mg, name), [away_from_integers(2, 3)])


def test_round_halves_to_even_and_sign_at_zero():
    assert mg.round(mg.Tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])).tolist() == [-2, -2, -0, 0, 2, 2]
    assert mg.sign(mg.Tensor([-0.0, 0.0, -3.0, 7.0])).tolist() == [0.0, 0.0, -1.0, 1.0]


def test_pow_with_tensor_exponent_values_and_gradients():
    a, b = leaf(3, 4, low=0.2), leaf(3, 4)
    y = a ** b
    np.testing.assert_allclose(y.data, np.power(a.data.astype(np.float64), b.data), rtol=1e-5)
    y.backward(np.ones(y.shape, F32))
    a64, b64 = a.data.astype(np.float64), b.data.astype(np.float64)
    np.testing.assert_allclose(a.grad, b64 * a64 ** (b64 - 1), rtol=1e-5)
    np.testing.assert_allclose(b.grad, a64 ** b64 * np.log(a64), rtol=1e-5, atol=1e-6)
    assert mg.gradcheck(lambda p, q: p ** q, [leaf(2, 3, low=0.5), leaf(2, 3)])
    assert mg.gradcheck(lambda p, q: mg.pow(p, q), [leaf(2, 3, low=0.5), leaf(3)])  # broadcast
    assert mg.gradcheck(lambda q: 2.0 ** q, [leaf(2, 3)])
    assert mg.gradcheck(lambda p: p.pow(mg.Tensor([2.0, 0.5, -1.0])), [leaf(2, 3, low=0.5)])


def test_pow_tensor_exponent_edge_gradients_follow_pytorch():
    a = mg.Tensor([0.0, 0.0, 2.0], requires_grad=True)
    b = mg.Tensor([0.0, 2.0, 0.0], requires_grad=True)
    y = a ** b
    assert y.tolist() == [1.0, 0.0, 1.0]
    y.sum().backward()
    # d/da = b a^(b-1), 0 where b == 0; d/db = a^b log a, 0 where a == 0 and b >= 0
    assert a.grad.tolist() == [0.0, 0.0, 0.0]
    assert b.grad.tolist() == [0.0, 0.0, float(np.float32(np.log(2.0)))]
    base = mg.Tensor(3.0)
    assert mg.pow(2.0, base).item() == 8.0 and (base ** 2).item() == 9.0
    with pytest.raises(TypeError, match="pow: expected a constant real exponent, received str"):
        base ** "2"
    with pytest.raises(TypeError, match="pow: expected a constant real exponent, received memoryview"):
        base ** memoryview(np.ones(2))  # NumPy calls a memoryview a scalar
    assert (base ** np.float32(2)).item() == 9.0 and (base ** np.int64(2)).item() == 9.0
    with pytest.raises(ValueError, match="pow: expected shapes that broadcast together"):
        mg.ones(2) ** mg.ones(3)


def test_elementwise_against_pytorch():
    torch = torch_or_skip()
    x = leaf(4, 5, low=0.3)
    for name in ("sin", "cos", "log1p", "expm1", "square", "reciprocal", "rsqrt", "sign", "floor",
                 "ceil", "round"):
        np.testing.assert_allclose(getattr(mg, name)(x).data,
                                   getattr(torch, name)(torch.from_numpy(x.data.copy())).numpy(),
                                   rtol=2e-6, atol=1e-7, err_msg=name)
    a, b = leaf(3, low=0.0), leaf(3)
    a.data[0] = 0.0
    b.data[0] = 1.5
    ta = torch.tensor(a.data, requires_grad=True)
    tb = torch.tensor(b.data, requires_grad=True)
    (ta ** tb).sum().backward()
    (a ** b).sum().backward()
    np.testing.assert_allclose(a.grad, ta.grad.numpy(), rtol=1e-5)
    np.testing.assert_allclose(b.grad, tb.grad.numpy(), rtol=1e-5)


# ---------------------------------------------------------------- reductions

@pytest.mark.parametrize("kwargs", [{}, {"dim": 1}, {"dim": 0, "keepdim": True}, {"axis": (0, 2)},
                                    {"dim": -1, "unbiased": False}, {"dim": 1, "correction": 0},
                                    {"dim": 2, "correction": 2, "keepdims": True}])
def test_var_std_match_numpy(kwargs):
    x = leaf(3, 4, 5)
    axis = kwargs.get("dim", kwargs.get("axis"))
    keep = kwargs.get("keepdim", kwargs.get("keepdims", False))
    ddof = kwargs.get("correction", 0 if kwargs.get("unbiased") is False else 1)
    want = np.var(x.data.astype(np.float64), axis=axis, ddof=ddof, keepdims=keep)
    np.testing.assert_allclose(x.var(**kwargs).data, want, rtol=1e-5)
    np.testing.assert_allclose(mg.std(x, **kwargs).data, np.sqrt(want), rtol=1e-5)
    assert mg.gradcheck(lambda t: t.var(**kwargs), [leaf(2, 3, 3)])
    assert mg.gradcheck(lambda t: t.std(**kwargs), [leaf(2, 3, 3)])


def test_var_hand_derived_gradient_and_degenerate_counts():
    x = mg.Tensor([1.0, 2.0, 6.0], requires_grad=True)
    v = x.var()  # mean 3, squares 4 + 1 + 9 = 14, / 2
    assert v.item() == 7.0
    v.backward()
    assert x.grad.tolist() == [-2.0, -1.0, 3.0]  # 2 (x - mean) / (n - 1)
    assert np.isnan(mg.Tensor([5.0]).var().item())  # 0 / 0, as torch
    assert mg.Tensor([5.0]).var(correction=0).item() == 0.0
    with pytest.raises(TypeError, match="var: expected correction= or unbiased=, received both"):
        x.var(correction=1, unbiased=True)
    with pytest.raises(ValueError, match="std: expected a finite correction >= 0, received -1"):
        x.std(correction=-1)
    with pytest.raises(ValueError, match=r"var: expected at least one element along axis 0, received shape \(0, 2\)"):
        mg.zeros(0, 2).var(dim=0)
    with pytest.raises(TypeError, match="var: expected dim= or axis=|var: expected axis= or dim=, received both"):
        x.var(dim=0, axis=0)


def test_prod_values_and_gradient_with_zeros():
    x = leaf(3, 4)
    np.testing.assert_allclose(x.prod().data, np.prod(x.data.astype(np.float64)), rtol=1e-5)
    np.testing.assert_allclose(mg.prod(x, dim=1, keepdim=True).data, np.prod(x.data, 1, keepdims=True), rtol=1e-6)
    z = mg.Tensor([[2.0, 0.0, 3.0], [0.0, 0.0, 5.0], [1.0, 2.0, 4.0]], requires_grad=True)
    z.prod(dim=1).backward(np.ones(3, F32))
    assert z.grad.tolist() == [[0.0, 6.0, 0.0], [0.0, 0.0, 0.0], [8.0, 4.0, 2.0]]
    for kwargs in ({}, {"dim": 0}, {"dim": 1}, {"axis": (0, 1), "keepdims": True}):
        assert mg.gradcheck(lambda t: t.prod(**kwargs), [leaf(3, 3)])
    zeros = leaf(2, 3)
    zeros.data[0, 1] = 0.0
    zeros.data[1, :2] = 0.0
    assert mg.gradcheck(lambda t: t.prod(dim=1), [zeros])


def test_cumsum_values_order_and_gradient():
    x = leaf(3, 4)
    for d in (0, 1, -1):
        np.testing.assert_array_equal(x.cumsum(d).data, np.cumsum(x.data, axis=d, dtype=F32))
        assert mg.gradcheck(lambda t: mg.cumsum(t, dim=d), [leaf(3, 4)])
    y = mg.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    y.cumsum(0).backward(np.array([1.0, 10.0, 100.0], F32))
    assert y.grad.tolist() == [111.0, 110.0, 100.0]
    # in index order: 1e8 + 1 + 1 - 1e8 is 0 in float32, not 2
    assert mg.Tensor([1e8, 1.0, 1.0, -1e8]).cumsum(0).tolist()[-1] == 0.0
    with pytest.raises(TypeError, match="cumsum: expected dim, received None"):
        x.cumsum()


@pytest.mark.parametrize("p", [1, 2, float("inf"), 3, 0.5, 1.5])
@pytest.mark.parametrize("kwargs", [{}, {"dim": 1}, {"dim": 0, "keepdim": True}, {"axis": (0, 1)}])
def test_norm_values_and_gradients(p, kwargs):
    x = leaf(3, 4)
    axis = kwargs.get("dim", kwargs.get("axis"))
    keep = kwargs.get("keepdim", False)
    a = np.abs(x.data.astype(np.float64))
    want = a.max(axis=axis, keepdims=keep) if p == np.inf else \
        (a ** p).sum(axis=axis, keepdims=keep) ** (1 / p)
    np.testing.assert_allclose(x.norm(p, **kwargs).data, want, rtol=2e-5)
    assert mg.gradcheck(lambda t: mg.norm(t, p, **kwargs), [leaf(2, 3, low=0.1)])


def test_norm_hand_values_zero_and_ties():
    x = mg.Tensor([[3.0, -4.0], [0.0, 0.0]], requires_grad=True)
    n = x.norm(dim=1)
    assert n.tolist() == [5.0, 0.0]
    n.sum().backward()
    assert x.grad.tolist() == [[0.6, -0.8], [0.0, 0.0]] or np.allclose(x.grad, [[0.6, -0.8], [0, 0]])
    assert np.isfinite(x.grad).all()  # 0 where the norm is 0, as PyTorch
    t = mg.Tensor([2.0, -2.0, 1.0], requires_grad=True)
    t.norm(float("inf")).backward()  # shared equally by the tied largest |x|
    assert t.grad.tolist() == [0.5, -0.5, 0.0]
    assert mg.Tensor([[1.0, 2.0], [2.0, 4.0]]).norm().item() == 5.0  # Frobenius
    with pytest.raises(ValueError, match=r"norm: expected p > 0 \(or inf\), received -1"):
        t.norm(-1)
    with pytest.raises(TypeError, match="norm: expected p to be a real number"):
        t.norm("nuc")


@pytest.mark.parametrize("kwargs", [{}, {"dim": 0}, {"dim": 1, "keepdim": True}, {"axis": (0, 1)}])
def test_logsumexp_values_stability_and_gradient(kwargs):
    x = leaf(3, 4)
    axis = kwargs.get("dim", kwargs.get("axis"))
    x64 = x.data.astype(np.float64)
    want = np.log(np.exp(x64).sum(axis=axis, keepdims=kwargs.get("keepdim", False)))
    np.testing.assert_allclose(x.logsumexp(**kwargs).data, want, rtol=1e-6)
    assert mg.gradcheck(lambda t: t.logsumexp(**kwargs), [leaf(2, 3)])
    big = mg.Tensor([[1000.0, 1000.0], [-1000.0, -np.inf]], requires_grad=True)
    y = mg.logsumexp(big, dim=1)
    np.testing.assert_allclose(y.data, [1000 + np.log(2), -1000.0], rtol=1e-6)
    y.sum().backward()  # the softmax (exp(x - y) with y rounded to float32, as PyTorch)
    np.testing.assert_allclose(big.grad, [[0.5, 0.5], [1.0, 0.0]], rtol=1e-4)
    assert mg.logsumexp(mg.Tensor([-np.inf, -np.inf]), dim=0).item() == -np.inf


def test_reductions_against_pytorch():
    torch = torch_or_skip()
    x = leaf(3, 4, 5)
    tx = torch.tensor(x.data, requires_grad=True)
    cases = [(lambda t: t.var(dim=1), lambda t: t.var(dim=1)),
             (lambda t: t.std(dim=(0, 2), keepdim=True), lambda t: t.std(dim=(0, 2), keepdim=True)),
             (lambda t: t.var(unbiased=False), lambda t: t.var(unbiased=False)),
             (lambda t: t.prod(dim=2), lambda t: t.prod(dim=2)),
             (lambda t: t.cumsum(1), lambda t: t.cumsum(1)),
             (lambda t: t.norm(), lambda t: t.norm()),
             (lambda t: t.norm(1, dim=0), lambda t: t.norm(1, dim=0)),
             (lambda t: t.norm(float("inf"), dim=2), lambda t: t.norm(float("inf"), dim=2)),
             (lambda t: t.norm(3, dim=1), lambda t: t.norm(3, dim=1)),
             (lambda t: t.logsumexp(2), lambda t: t.logsumexp(2))]
    for i, (ours, theirs) in enumerate(cases):
        x.grad, tx.grad = None, None
        y, ty = ours(x), theirs(tx)
        np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=2e-5, atol=1e-6, err_msg=str(i))
        g = RNG.standard_normal(y.shape).astype(F32)
        y.backward(g)
        ty.backward(torch.from_numpy(g))
        np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=str(i))


# ---------------------------------------------------------------- indexing

class IndexHolder:
    """Stands for the coming int64/bool Tensors: anything with .data holding the array."""
    def __init__(self, data):
        self.data = data


def test_gather_values_and_gradient_accumulate():
    x = leaf(3, 4)
    index = np.array([[0, 0, 3], [2, 1, 1]])
    y = x.gather(1, index)
    np.testing.assert_array_equal(y.data, np.take_along_axis(x.data[:2], index, axis=1))
    y.backward(np.array([[1, 10, 100], [1000, 10000, 100000]], F32))
    assert x.grad.tolist() == [[11, 0, 0, 100], [0, 110000, 1000, 0], [0, 0, 0, 0]]
    idx0 = np.array([[2, 0, 1, 2], [2, 2, 0, 0]])
    np.testing.assert_array_equal(mg.gather(x, 0, IndexHolder(idx0)).data, np.take_along_axis(x.data, idx0, 0))
    assert mg.gradcheck(lambda t: mg.gather(t, 0, idx0), [leaf(3, 4)])
    assert mg.gradcheck(lambda t: t.gather(-1, np.array([[1, 1], [0, 2]])), [leaf(2, 3)])
    idx3 = RNG.integers(0, 3, (2, 2, 3))
    assert mg.gradcheck(lambda t: t.gather(1, idx3), [leaf(2, 3, 4)])


def test_index_select_values_and_gradient_accumulate():
    x = leaf(3, 4)
    y = mg.index_select(x, 1, np.array([3, 0, 3]))
    np.testing.assert_array_equal(y.data, x.data[:, [3, 0, 3]])
    y.backward(np.ones(y.shape, F32))
    assert x.grad.tolist() == [[1, 0, 0, 2]] * 3
    assert mg.gradcheck(lambda t: t.index_select(0, IndexHolder(np.array([2, 2, 0]))), [leaf(3, 2)])
    assert x.index_select(0, np.array([], np.int64)).shape == (0, 4)


def test_masked_fill_values_and_gradient():
    x = leaf(2, 3)
    mask = np.array([True, False, True])
    y = x.masked_fill(mask, -np.inf)
    np.testing.assert_array_equal(y.data, np.where(mask, -np.inf, x.data))
    y.backward(np.full(y.shape, 2.0, F32))
    assert x.grad.tolist() == [[0.0, 2.0, 0.0]] * 2
    assert mg.gradcheck(lambda t: mg.masked_fill(t, IndexHolder(np.array([[True], [False]])), 1.5), [leaf(2, 3)])


def test_index_ops_name_bad_input():
    x = leaf(2, 3)
    with pytest.raises(ValueError, match=r"^gather: expected index of the same number of dimensions "
                                         r"as the input \(2\), received 1$"):
        x.gather(1, np.array([0, 1]))
    with pytest.raises(TypeError, match="gather: expected index of an integer dtype, received dtype float64"):
        x.gather(1, np.array([[0.0]]))
    with pytest.raises(TypeError, match="gather: expected index of an integer dtype, received dtype float32"):
        x.gather(1, mg.Tensor([[0.0]]))  # a float Tensor is not an index
    with pytest.raises(ValueError, match=r"gather: expected indices in \[0, 3\), received 3"):
        x.gather(1, np.array([[0, 3]]))
    with pytest.raises(ValueError, match=r"gather: expected indices in \[0, 3\), received -1"):
        x.gather(1, np.array([[-1]]))
    with pytest.raises(ValueError, match="gather: expected index no larger than the input"):
        x.gather(1, np.zeros((3, 1), np.int64))
    with pytest.raises(ValueError, match=r"gather: expected axis in \[-2, 2\), received 2"):
        x.gather(2, np.zeros((1, 1), np.int64))
    with pytest.raises(ValueError, match="index_select: expected index of 1 dimension, received 2"):
        x.index_select(0, np.zeros((1, 1), np.int64))
    with pytest.raises(ValueError, match=r"index_select: expected indices in \[0, 2\), received 2"):
        x.index_select(0, np.array([2]))
    with pytest.raises(TypeError, match="index_select: expected index of an integer dtype, received dtype bool"):
        x.index_select(0, np.array([True, False]))
    with pytest.raises(TypeError, match="masked_fill: expected mask of dtype bool, received dtype int64"):
        x.masked_fill(np.array([1, 0, 1]), 0.0)
    with pytest.raises(ValueError, match=r"masked_fill: expected a mask broadcastable to the input's "
                                         r"shape \(2, 3\), received shape \(2, 1, 3\)"):
        x.masked_fill(np.ones((2, 1, 3), bool), 0.0)
    with pytest.raises(TypeError, match="masked_fill: expected value to be a real number, received str"):
        x.masked_fill(np.ones(3, bool), "0")


def test_indexing_against_pytorch():
    torch = torch_or_skip()
    x = leaf(3, 4)
    tx = torch.tensor(x.data, requires_grad=True)
    idx = np.array([[0, 2, 2, 1], [1, 1, 0, 0]])
    mask = np.array([[True, False, False, True]])
    for ours, theirs in [(lambda t: t.gather(0, idx), lambda t: t.gather(0, torch.from_numpy(idx))),
                         (lambda t: t.index_select(1, np.array([3, 3, 0])),
                          lambda t: t.index_select(1, torch.tensor([3, 3, 0]))),
                         (lambda t: t.masked_fill(mask, 7.0), lambda t: t.masked_fill(torch.from_numpy(mask), 7.0))]:
        x.grad, tx.grad = None, None
        y, ty = ours(x), theirs(tx)
        np.testing.assert_array_equal(y.data, ty.detach().numpy())
        g = RNG.standard_normal(y.shape).astype(F32)
        y.backward(g)
        ty.backward(torch.from_numpy(g))
        np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-6)


# ---------------------------------------------------------------- shapes

def test_expand_values_gradient_and_errors():
    x = leaf(3, 1)
    y = x.expand(2, 3, 4)
    np.testing.assert_array_equal(y.data, np.broadcast_to(x.data, (2, 3, 4)))
    y.backward(np.ones(y.shape, F32))
    assert x.grad.tolist() == [[8.0]] * 3
    assert x.expand(-1, 5).shape == (3, 5) and x.expand((3, 2)).shape == (3, 2)
    assert mg.gradcheck(lambda t: t.expand(2, -1, 3), [leaf(2, 1)])
    with pytest.raises(ValueError, match=r"expand: expected sizes equal to the tensor's \(3, 1\)"):
        x.expand(2, 4)
    with pytest.raises(ValueError, match="expand: expected at least 2 sizes"):
        x.expand(3)
    with pytest.raises(ValueError, match="expand: expected sizes equal"):
        x.expand(-1, 3, 1)  # -1 only for an existing axis


def test_repeat_is_tile_and_sums_the_tiles():
    x = leaf(2, 3)
    for reps in [(1, 1), (2, 1), (2, 3), (2, 1, 2)]:
        np.testing.assert_array_equal(x.repeat(*reps).data, np.tile(x.data, reps))
        assert mg.gradcheck(lambda t: t.repeat(reps), [leaf(2, 3)])
    y = mg.Tensor([1.0, 2.0], requires_grad=True)
    y.repeat(3).backward(np.arange(6, dtype=F32))
    assert y.grad.tolist() == [0 + 2 + 4, 1 + 3 + 5]
    with pytest.raises(ValueError, match=r"repeat: expected at least 2 repeats .* received \(2,\)"):
        x.repeat(2)


def test_split_and_chunk():
    x = leaf(5, 3)
    parts = x.split(2)
    assert [p.shape for p in parts] == [(2, 3), (2, 3), (1, 3)] and isinstance(parts, tuple)
    np.testing.assert_array_equal(np.concatenate([p.data for p in parts]), x.data)
    assert [p.shape for p in mg.split(x, [1, 2], dim=1)] == [(5, 1), (5, 2)]
    assert [p.shape for p in x.chunk(3)] == [(2, 3), (2, 3), (1, 3)]
    assert [p.shape for p in mg.chunk(mg.zeros(6), 4)] == [(2,), (2,), (2,)]  # fewer, as torch
    (parts[0].sum() * 2 + parts[2].sum()).backward()
    assert x.grad.tolist() == [[2.0] * 3] * 2 + [[0.0] * 3] * 2 + [[1.0] * 3]
    assert mg.gradcheck(lambda t: t.split([2, 1], dim=1)[1] * t.chunk(3, dim=1)[0], [leaf(2, 3)])
    with pytest.raises(ValueError, match=r"split: expected sections >= 0 that sum to the size of dim 0 \(5\)"):
        x.split([2, 2])
    with pytest.raises(ValueError, match="split: expected a split size > 0, received 0"):
        x.split(0)
    with pytest.raises(ValueError, match="chunk: expected chunks > 0, received 0"):
        x.chunk(0)
    with pytest.raises(TypeError, match="split: expected split_size_or_sections to be an integer"):
        x.split(1.5)


def test_flip_values_and_gradient():
    x = leaf(2, 3, 4)
    for dims in [(0,), (1, 2), (-1,), (0, 1, 2)]:
        np.testing.assert_array_equal(x.flip(*dims).data, np.flip(x.data, dims))
        np.testing.assert_array_equal(mg.flip(x, list(dims)).data, np.flip(x.data, dims))
        assert mg.gradcheck(lambda t: t.flip(dims), [leaf(2, 3)]) if max(dims) < 2 else True
    with pytest.raises(ValueError, match=r"flip: expected distinct dims, received \(0, -3\)"):
        x.flip(0, -3)


def test_T_reverses_all_axes():
    x = leaf(2, 3)
    np.testing.assert_array_equal(x.T.data, x.data.T)
    assert mg.gradcheck(lambda t: t.T, [leaf(2, 3, 2)])


def test_shapes_against_pytorch():
    torch = torch_or_skip()
    x = leaf(2, 1, 3)
    tx = torch.tensor(x.data)
    np.testing.assert_array_equal(x.expand(4, 2, 5, 3).data, tx.expand(4, 2, 5, 3).numpy())
    np.testing.assert_array_equal(x.repeat(2, 1, 3, 2).data, tx.repeat(2, 1, 3, 2).numpy())
    np.testing.assert_array_equal(x.flip(0, 2).data, tx.flip(0, 2).numpy())
    for n in range(1, 8):
        y = mg.arange(n * 2 + 1)
        ty = torch.arange(n * 2 + 1, dtype=torch.float32)
        for k in (1, 2, 3, 5):
            assert [p.tolist() for p in y.chunk(k)] == [p.tolist() for p in ty.chunk(k)]
            assert [p.tolist() for p in y.split(k)] == [p.tolist() for p in ty.split(k)]


# ---------------------------------------------------------------- in-place methods

def test_in_place_methods_values_identity_and_versions():
    t = mg.Tensor([[1.0, -2.0], [3.0, 4.0]])
    data = t.data
    assert t.add_(mg.Tensor([1.0, 1.0])) is t and t.tolist() == [[2.0, -1.0], [4.0, 5.0]]
    assert t.sub_(np.ones(2, F32), alpha=2) is t and t.tolist() == [[0.0, -3.0], [2.0, 3.0]]
    assert t.add_(1.0, alpha=0.5).tolist() == [[0.5, -2.5], [2.5, 3.5]]
    assert t.mul_(2).tolist() == [[1.0, -5.0], [5.0, 7.0]]
    assert t.div_(mg.Tensor([[1.0], [5.0]])).tolist() == [[1.0, -5.0], [1.0, float(F32(1.4))]]
    assert t.clamp_(-1, 1).tolist() == [[1.0, -1.0], [1.0, 1.0]]
    assert t.clamp_(max=0).tolist() == [[0.0, -1.0], [0.0, 0.0]]
    assert t.fill_(2.5).tolist() == [[2.5, 2.5], [2.5, 2.5]]
    assert t.copy_(mg.Tensor([7.0, 8.0])).tolist() == [[7.0, 8.0], [7.0, 8.0]]
    assert t.zero_().tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert t.data is data and t._version == 10
    nan = mg.Tensor([np.nan, 1.0]).fill_(3.0)
    assert nan.tolist() == [3.0, 3.0]  # fill_, not multiply: NaN is overwritten


def test_in_place_methods_follow_the_leaf_and_graph_rules():
    for call in (lambda w: w.zero_(), lambda w: w.fill_(1.0), lambda w: w.copy_(np.ones(2, F32)),
                 lambda w: w.add_(1.0), lambda w: w.sub_(1.0, alpha=2), lambda w: w.mul_(2.0),
                 lambda w: w.div_(2.0), lambda w: w.clamp_(0, 1)):
        w = mg.Tensor([1.0, 2.0], requires_grad=True)
        with pytest.raises(RuntimeError, match=r"^\w+_: a leaf Tensor that requires grad is being used in an in-place"):
            call(w)
        assert w._version == 0 and w.tolist() == [1.0, 2.0]
        with mg.no_grad():
            assert call(w) is w
        assert w._version == 1
        y = w * 2
        with pytest.raises(RuntimeError, match="in-place change of a Tensor that is part of a graph"):
            call(y)


def test_in_place_methods_invalidate_saved_tensors():
    for call in (lambda x: x.zero_(), lambda x: x.fill_(1.0), lambda x: x.copy_(np.ones(2, F32)),
                 lambda x: x.add_(1.0), lambda x: x.sub_(1.0), lambda x: x.mul_(2.0),
                 lambda x: x.div_(2.0), lambda x: x.clamp_(min=0)):
        w = mg.Tensor([1.0, 2.0], requires_grad=True)
        x = mg.Tensor([3.0, 4.0])
        loss = (w * x).sum()  # mul saved x
        call(x)
        with pytest.raises(RuntimeError, match="modified by an inplace operation: .* that mul saved is at version 1"):
            loss.backward()
        y = mg.Tensor([3.0, 4.0])
        loss2 = (w * y.view(2, 1).view(2)).sum()  # a view shares the counter
        call(y.view(1, 2))
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss2.backward()


def test_in_place_methods_name_bad_input():
    t = mg.zeros(2, 2)
    with pytest.raises(ValueError, match=r"add_: expected an operand that broadcasts to the tensor's shape \(2, 2\)"):
        t.add_(np.ones(3, F32))
    with pytest.raises(ValueError, match=r"copy_: expected a source that broadcasts to the tensor's shape"):
        t.copy_(np.ones((3, 2), F32))
    with pytest.raises(TypeError, match="fill_: expected value to be a real number, received str"):
        t.fill_("1")
    with pytest.raises(TypeError, match="sub_: expected alpha to be a real number, received str"):
        t.sub_(1.0, alpha="2")
    with pytest.raises(ValueError, match="clamp_: expected at least one of min and max"):
        t.clamp_()
    with pytest.raises(RuntimeError, match="copy_: expected an operand that does not require grad"):
        t.copy_(mg.ones(2, requires_grad=True))
    assert t._version == 0 and t.tolist() == [[0.0, 0.0], [0.0, 0.0]]


# ---------------------------------------------------------------- mg.jit replays

def _training_run(use_jit, batches, x_all):
    mg.utils.set_random_seed(4)
    w = mg.randn(6, 4, requires_grad=True)
    scale = mg.ones(4, requires_grad=True)
    opt = mg.optimizers.SGD(learning_rate=0.05)

    def step(x, idx, cols, mask):
        h = mg.Tensor(x).index_select(0, idx)                # rows picked by an input index array
        h = mg.cat([h, h.flip(1)[:, :2].sin()], dim=1)       # (B, 6)
        z = (h @ w) * scale.expand(len(idx), 4)
        z = z.masked_fill(mask, 0.0)
        a, b = z.chunk(2, dim=1)
        picked = mg.gather(z - z.logsumexp(dim=1, keepdim=True), 1, cols)
        loss = (-picked.mean() + a.square().mean() * 0.01 + b.norm() * 0.01 + z.std(dim=0).sum() * 0.01
                + (scale ** mg.Tensor([2.0, 1.0, 0.5, 1.0]).abs()).cumsum(0).prod() * 1e-3)
        loss.backward()
        opt.step([w, scale])
        opt.zero_grad([w, scale])
        with mg.no_grad():
            scale.clamp_(0.5, 2.0)
        return loss

    f = mg.jit(step) if use_jit else step
    losses = [f(x_all, idx, cols, mask).item() for idx, cols, mask in batches]
    return losses, w.data.copy(), scale.data.copy(), (f.stats() if use_jit else None)


def test_jit_step_with_the_new_ops_replays_eager_bits():
    rng = np.random.default_rng(3)
    x_all = rng.standard_normal((20, 4)).astype(F32)
    batches = [(rng.integers(0, 20, 6), rng.integers(0, 4, (6, 1)), rng.random((6, 4)) < 0.2)
               for _ in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a refused (eager) step would warn
        eager = _training_run(False, batches, x_all)
        replayed = _training_run(True, batches, x_all)
    assert replayed[3]["captures"] == 1 and replayed[3]["replays"] == 3
    assert replayed[0] == eager[0] and len(set(eager[0])) == 4
    assert_bitwise_equal(replayed[1], eager[1], "w")
    assert_bitwise_equal(replayed[2], eager[2], "scale")


def test_jit_replay_checks_gather_indices_again():
    x = mg.Tensor(np.arange(6, dtype=F32).reshape(2, 3))
    f = mg.jit(lambda idx: mg.gather(x, 1, idx) * 2.0)
    assert f(np.array([[0], [2]])).tolist() == [[0.0], [10.0]]
    assert f(np.array([[1], [1]])).tolist() == [[2.0], [8.0]]  # a replay reads the new indices
    with pytest.raises(ValueError, match=r"gather: expected indices in \[0, 3\)"):
        f(np.array([[0], [-1]]))


def test_jit_replays_the_in_place_methods():
    def run(use_jit):
        t = mg.zeros(3)

        def step(x):
            t.mul_(0.5).add_(mg.Tensor(x), alpha=2).clamp_(max=5.0)
            return t * 1.0
        f = mg.jit(step) if use_jit else step
        return [f(np.full(3, k, F32)).tolist() for k in range(4)]
    assert run(True) == run(False)


@pytest.mark.parametrize("module", ["minigrad.ops.elementwise", "minigrad.ops.reduce",
                                    "minigrad.ops.shape", "minigrad.ops.index", "minigrad.ops"])
def test_docstring_examples_run(module):
    import importlib
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
