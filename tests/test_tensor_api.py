"""The PyTorch-style Tensor API: element-wise ops, reductions, shapes, joins, indexing,
in-place changes and the version counter, factories, NumPy interop, and replay under
mg.jit. Values are checked against NumPy (or formulas derived by hand), gradients
against finite differences (mg.gradcheck) and hand-derived formulas."""
import doctest
import warnings

import numpy as np
import pytest

import minigrad as mg
from helpers import F32, assert_bitwise_equal

RNG = np.random.default_rng(11)


def leaf(*shape, low=None):
    x = RNG.standard_normal(shape).astype(F32)
    if low is not None:
        x = np.abs(x) + F32(low)
    return mg.Tensor(x, requires_grad=True)


def grad_of(fn, x, upstream=None):
    x.grad = None
    y = fn(x)
    y.backward(upstream)
    return x.grad


# ---------------------------------------------------------------- element-wise

@pytest.mark.parametrize("name,fn,want,dwant", [
    ("sigmoid", mg.sigmoid, lambda x: 1 / (1 + np.exp(-x)),
     lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2),
    ("tanh", mg.tanh, np.tanh, lambda x: 1 / np.cosh(x) ** 2),
    ("abs", mg.abs, np.abs, np.sign),
    ("sqrt", mg.sqrt, np.sqrt, lambda x: 0.5 / np.sqrt(x)),
])
def test_unary_values_and_hand_derived_gradients(name, fn, want, dwant):
    x = leaf(3, 5, low=0.1 if name == "sqrt" else None)
    x64 = x.data.astype(np.float64)
    y = fn(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y.data, want(x64), rtol=2e-6, atol=1e-7)
    g = RNG.standard_normal(x.shape).astype(F32)
    y.backward(g)
    np.testing.assert_allclose(x.grad, g * dwant(x64), rtol=1e-5, atol=1e-6)
    assert mg.gradcheck(fn, [leaf(2, 3, low=0.5 if name in ("sqrt", "abs") else None)])


def test_sigmoid_and_tanh_are_the_c_kernels():
    x = leaf(4, 7)
    assert_bitwise_equal(mg.sigmoid(x).data, mg.kernels.sigmoid_forward(x.data), "sigmoid")
    assert_bitwise_equal(x.tanh().data, mg.kernels.tanh_forward(x.data), "tanh")
    y = x.sigmoid()
    y.backward(np.ones(x.shape, F32))
    assert_bitwise_equal(x.grad, mg.kernels.sigmoid_backward(y.data, np.ones(x.shape, F32)), "dsigmoid")


def test_abs_gradient_is_zero_at_zero():
    x = mg.Tensor([-2.0, 0.0, 3.0], requires_grad=True)
    x.abs().sum().backward()
    assert x.grad.tolist() == [-1.0, 0.0, 1.0]


def test_clip_values_bounds_and_gradient():
    x = mg.Tensor([-2.0, -1.0, 0.0, 1.0, 2.0], requires_grad=True)
    y = mg.clip(x, -1.0, 1.0)
    assert y.tolist() == [-1.0, -1.0, 0.0, 1.0, 1.0]
    y.backward(np.array([1, 2, 3, 4, 5], F32))
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 0.0]  # the bounds themselves pass, as in PyTorch
    assert x.clamp(min=0).tolist() == [0.0, 0.0, 0.0, 1.0, 2.0]
    assert x.clamp(max=0.5).tolist() == [-2.0, -1.0, 0.0, 0.5, 0.5]
    assert mg.clip(x, 1.0, -1.0).tolist() == [-1.0] * 5  # min > max: max wins (PyTorch)
    with pytest.raises(ValueError, match="clip: expected at least one of min and max"):
        mg.clip(x)
    with pytest.raises(TypeError, match="clip: expected min to be a real number or None, received str"):
        mg.clip(x, "0")


def test_maximum_minimum_broadcast_and_split_ties():
    a = mg.Tensor([[1.0, 5.0, 2.0], [4.0, 0.0, 2.0]], requires_grad=True)
    b = mg.Tensor([3.0, 1.0, 2.0], requires_grad=True)
    y = mg.maximum(a, b)
    np.testing.assert_array_equal(y.data, np.maximum(a.data, b.data))
    y.sum().backward()
    assert a.grad.tolist() == [[0.0, 1.0, 0.5], [1.0, 0.0, 0.5]]
    assert b.grad.tolist() == [1.0, 1.0, 1.0]  # 1 + 0, 0 + 1, 0.5 + 0.5
    a.grad = b.grad = None
    mg.minimum(a, b).sum().backward()
    assert a.grad.tolist() == [[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]]
    assert mg.gradcheck(lambda p, q: mg.maximum(p, q) * mg.minimum(q, p), [leaf(3, 4), leaf(4)])


def test_where_selects_and_routes_the_gradient():
    t = mg.Tensor([[-1.0, 2.0], [3.0, -4.0]], requires_grad=True)
    u = mg.Tensor([10.0, 20.0], requires_grad=True)
    y = mg.where(t > 0, t, u)
    assert y.tolist() == [[10.0, 2.0], [3.0, 20.0]]
    y.backward(np.array([[1, 2], [3, 4]], F32))
    assert t.grad.tolist() == [[0.0, 2.0], [3.0, 0.0]]
    assert u.grad.tolist() == [1.0, 4.0]
    assert mg.where(np.array([True, False]), 1.0, mg.Tensor([5.0, 6.0])).tolist() == [1.0, 6.0]
    assert mg.where(mg.Tensor([0.0, 2.0]), 1.0, 0.0).tolist() == [0.0, 1.0]  # nonzero is True
    with pytest.raises(TypeError, match="where: expected a boolean condition"):
        mg.where(np.array([0.5]), t, u)
    with pytest.raises(ValueError, match=r"where: expected cond, a and b shapes that broadcast"):
        mg.where(np.ones(3, bool), t, u)


def test_comparisons_are_bool_tensors():
    t = mg.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    for got, want in [(t < 2, [True, False, False]), (t <= 2, [True, True, False]),
                      (t > 2, [False, False, True]), (t >= 2, [False, True, True]),
                      (t == 2, [False, True, False]), (t != 2, [True, False, True]),
                      (t == mg.Tensor([1.0, 0.0, 3.0]), [True, False, True]),
                      (np.float32(2) < t, [False, False, True])]:
        assert isinstance(got, mg.Tensor) and got.dtype == np.bool_ and not got.requires_grad
        assert got.tolist() == want
    assert (t == None) is False  # noqa: E711  (not a comparison of values)
    assert t[t > 1.5].tolist() == [2.0, 3.0]


def test_tensors_stay_hashable_by_identity():
    a, b = mg.Tensor([1.0]), mg.Tensor([1.0])
    d = {a: "a", b: "b"}
    assert d[a] == "a" and d[b] == "b" and hash(a) == object.__hash__(a)


# ---------------------------------------------------------------- reductions

@pytest.mark.parametrize("spelling", [{}, {"axis": 1}, {"dim": 1}, {"axis": -1, "keepdims": True},
                                      {"dim": 0, "keepdim": True}, {"axis": None, "keepdims": True}])
def test_max_min_values_match_numpy(spelling):
    x = leaf(4, 5)
    axis = spelling.get("axis", spelling.get("dim"))
    keep = spelling.get("keepdims", spelling.get("keepdim", False))
    for fn, ref, arg in ((mg.max, np.max, np.argmax), (mg.min, np.min, np.argmin)):
        got = fn(x, **spelling)
        if "dim" in spelling:  # PyTorch's (values, indices)
            got, indices = got
            assert indices.dtype == np.int64
            np.testing.assert_array_equal(indices.data, arg(x.data, axis=axis, keepdims=keep))
        want = ref(x.data, axis=axis, keepdims=keep)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got.data, want)
    values = (lambda t: t.max(**spelling).values) if "dim" in spelling else (lambda t: t.max(**spelling))
    assert mg.gradcheck(values, [leaf(3, 4)])


def test_max_gradient_goes_to_the_first_maximum_only():
    x = mg.Tensor([[1.0, 7.0, 7.0, 2.0], [5.0, 5.0, 5.0, 5.0]], requires_grad=True)
    values, indices = x.max(dim=1)
    assert indices.tolist() == [1, 0]
    values.backward(np.array([2.0, 3.0], F32))
    assert x.grad.tolist() == [[0.0, 2.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]]
    x.grad = None
    x.max().backward()  # over all elements: the first 7 in row-major order
    assert x.grad.tolist() == [[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    x.grad = None
    x.min(axis=0).sum().backward()
    assert x.grad.tolist() == [[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]]


def test_max_propagates_nan_and_refuses_empty():
    assert np.isnan(mg.Tensor([1.0, np.nan, 3.0]).max().item())
    with pytest.raises(ValueError, match=r"max: expected at least one value along axis 0"):
        mg.zeros(0, 3).max(dim=0)
    with pytest.raises(ValueError, match=r"max: expected axis in \[-2, 2\), received 2"):
        mg.zeros(2, 3).max(dim=2)
    with pytest.raises(TypeError, match="max: expected axis= or dim=, received both"):
        mg.zeros(2, 3).max(axis=0, dim=0)


def test_argmax_argmin_are_int64_tensors_of_the_first_extremum():
    x = mg.Tensor([[1.0, 9.0, 9.0], [-4.0, -4.0, 0.0]])
    got = x.argmax(dim=1)
    assert isinstance(got, mg.Tensor) and got.dtype == np.int64 and got.tolist() == [1, 2]
    assert mg.argmin(x, axis=1).tolist() == [0, 0]
    assert int(x.argmax()) == 1 and int(x.argmin()) == 3  # flat indices, as torch
    assert x.argmax(dim=0, keepdim=True).tolist() == [[0, 0, 0]]
    with pytest.raises(ValueError, match="argmax: expected at least one value"):
        mg.zeros(0).argmax()


def test_sum_and_mean_take_both_spellings():
    x = leaf(3, 4)
    np.testing.assert_array_equal(x.sum(dim=0, keepdim=True).data, x.sum(axis=0, keepdims=True).data)
    np.testing.assert_array_equal(x.mean(dim=1).data, x.mean(1).data)
    with pytest.raises(TypeError, match="sum: expected keepdims= or keepdim=, received both"):
        x.sum(0, keepdims=True, keepdim=True)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_and_log_softmax_along_any_axis(axis):
    x = leaf(3, 4) * 10.0
    x64 = x.data.astype(np.float64)
    shifted = x64 - x64.max(axis=axis, keepdims=True)
    want = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    np.testing.assert_allclose(mg.log_softmax(x, dim=axis).data, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x.softmax(axis).data, np.exp(want), rtol=1e-5, atol=1e-7)
    assert mg.gradcheck(lambda t: mg.log_softmax(t, axis=axis), [leaf(3, 4)])
    assert mg.gradcheck(lambda t: mg.softmax(t, dim=axis), [leaf(3, 4)])


def test_log_softmax_is_stable_for_large_logits():
    y = mg.log_softmax(mg.Tensor([[1000.0, 0.0], [-1000.0, -1000.0]]))
    assert np.isfinite(y.data).all()
    np.testing.assert_allclose(y.data, [[0.0, -1000.0], [-np.log(2), -np.log(2)]], rtol=1e-6)
    x = mg.Tensor([[3.0, 1.0]], requires_grad=True)
    mg.log_softmax(x).backward(np.array([[1.0, 0.0]], F32))  # d/dx of log p0 = onehot - p
    p = np.exp([3.0, 1.0]) / np.exp([3.0, 1.0]).sum()
    np.testing.assert_allclose(x.grad, [[1 - p[0], -p[1]]], rtol=1e-6)


# ---------------------------------------------------------------- shapes and joins

def test_shape_ops_values_and_gradients():
    x = leaf(2, 3, 4)
    assert x.flatten().shape == (24,) and x.flatten(1).shape == (2, 12)
    assert mg.flatten(x, 0, 1).shape == (6, 4)
    assert x.view(4, -1).shape == (4, 6) and x.view((3, 8)).shape == (3, 8)
    assert x.unsqueeze(0).shape == (1, 2, 3, 4) and x.unsqueeze(-1).shape == (2, 3, 4, 1)
    assert mg.zeros(1, 3, 1).squeeze().shape == (3,)
    assert mg.zeros(1, 3, 1).squeeze(0).shape == (3, 1)
    assert mg.zeros(1, 3, 1).squeeze(1).shape == (1, 3, 1)  # not size 1: kept, as torch
    np.testing.assert_array_equal(x.transpose(0, 2).data, np.swapaxes(x.data, 0, 2))
    np.testing.assert_array_equal(x.permute(2, 0, 1).data, np.transpose(x.data, (2, 0, 1)))
    np.testing.assert_array_equal(x.T.data, x.data.T)
    np.testing.assert_array_equal(x.transpose().data, x.data.T)
    for fn in (lambda t: t.transpose(0, 2), lambda t: t.permute(1, 2, 0), lambda t: t.flatten(1),
               lambda t: t.unsqueeze(1).squeeze(1), lambda t: t.view(-1), lambda t: t.clone() * t):
        assert mg.gradcheck(fn, [leaf(2, 3, 2)])
    with pytest.raises(ValueError, match=r"permute: expected a permutation of the 3 axes, received \(0, 0, 1\)"):
        x.permute(0, 0, 1)
    with pytest.raises(ValueError, match="reshape: cannot reshape"):
        x.view(5, -1)
    with pytest.raises(TypeError, match="transpose: expected both dim0 and dim1 or neither"):
        x.transpose(0)


def test_clone_has_its_own_memory():
    x = leaf(3)
    y = x.clone()
    assert not np.shares_memory(x.data, y.data) and y.requires_grad
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


def test_cat_and_stack():
    a, b = leaf(2, 3), leaf(1, 3)
    y = mg.cat([a, b])
    np.testing.assert_array_equal(y.data, np.concatenate([a.data, b.data]))
    g = RNG.standard_normal(y.shape).astype(F32)
    y.backward(g)
    np.testing.assert_array_equal(a.grad, g[:2])
    np.testing.assert_array_equal(b.grad, g[2:])
    assert mg.concatenate([a, a], dim=1).shape == (2, 6)
    s = mg.stack([a, a * 2], dim=1)
    np.testing.assert_array_equal(s.data, np.stack([a.data, a.data * 2], axis=1))
    assert mg.gradcheck(lambda p, q: mg.cat([p, q, p], axis=1), [leaf(2, 2), leaf(2, 3)])
    assert mg.gradcheck(lambda p, q: mg.stack([p, q], axis=-1), [leaf(2, 2), leaf(2, 2)])
    with pytest.raises(ValueError, match=r"cat: expected shapes equal except along axis 0"):
        mg.cat([a, leaf(2, 2)])
    with pytest.raises(ValueError, match=r"stack: expected tensors of one shape"):
        mg.stack([a, b])
    with pytest.raises(TypeError, match="cat: expected a list or tuple of tensors, received Tensor"):
        mg.cat(a)
    with pytest.raises(ValueError, match="stack: expected at least one tensor"):
        mg.stack([])


# ---------------------------------------------------------------- indexing

KEYS = [1, -1, slice(1, 3), (slice(None), 2), (Ellipsis, 0), (None, 1), (1, None, slice(0, 2)),
        [0, 2, 2], np.array([3, 0]), (slice(None), [1, 1, 0]), ([0, 1], [2, 3]),
        np.array([True, False, True, False]), (np.array([[0], [2]]), np.array([1, 3])),
        (Ellipsis, None), (0, 3), (None, [0, 2]), ([1, 1], None, slice(0, 2)),
        (np.array([[True, False, False, True]] * 4),)]


@pytest.mark.parametrize("key", KEYS, ids=[repr(k) for k in KEYS])
def test_indexing_matches_numpy_with_gradient(key):
    x = leaf(4, 4)
    y = x[key]
    want = x.data[key]
    assert y.shape == np.shape(want)
    np.testing.assert_array_equal(y.data, want)
    g = RNG.standard_normal(y.shape).astype(F32)
    y.backward(g)
    # the oracle: which input element each output element came from, then sum per element
    source = np.arange(16).reshape(4, 4)[key if not isinstance(key, list) else np.array(key)]
    expected = np.bincount(np.ravel(source), weights=g.astype(np.float64).ravel(), minlength=16)
    expected = expected.reshape(4, 4)
    np.testing.assert_allclose(x.grad, expected, rtol=1e-6)


def test_repeated_indices_accumulate_in_backward():
    x = mg.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x[[0, 0, 2, 0]]
    y.backward(np.array([1.0, 10.0, 100.0, 1000.0], F32))
    assert x.grad.tolist() == [1011.0, 0.0, 100.0]
    assert mg.gradcheck(lambda t: t[[1, 1, 0]] * t[np.array([0, 1, 1])], [leaf(3)])


def test_repeated_index_accumulation_is_in_index_order():
    # float32 sums depend on order: 1e8 + 1 + 1 - 1e8 is 0 in order, 2 in another
    x = mg.Tensor([0.0], requires_grad=True)
    x[[0, 0, 0, 0]].backward(np.array([1e8, 1.0, 1.0, -1e8], F32))
    want = ((F32(1e8) + F32(1)) + F32(1)) + F32(-1e8)
    assert x.grad.tolist() == [float(want)]


def test_basic_index_is_a_view_sharing_the_version_counter():
    x = mg.Tensor(np.arange(6, dtype=F32).reshape(2, 3))
    row = x[1]
    assert np.shares_memory(row.data, x.data)
    with mg.no_grad():
        row += 1
    assert x.tolist() == [[0, 1, 2], [4, 5, 6]] and x._version == 1
    col = x[:, 1]  # not contiguous: a copy, as the kernels take C-contiguous arrays
    assert col.data.flags.c_contiguous and not np.shares_memory(col.data, x.data)


def test_index_refusals_name_the_problem():
    x = leaf(3, 2)
    with pytest.raises(TypeError, match="index: expected integer or boolean index arrays, received list"):
        x[[0.5, 1.0]]
    with pytest.raises(TypeError, match="index: expected index tensors of dtype int64 or bool "
                                        r"\(such as argmax's result or t > 0\), received a float32 tensor"):
        x[mg.Tensor([0.0])]
    with pytest.raises(IndexError, match=r"index: .*shape \(3, 2\)"):
        x[5]
    with pytest.raises(IndexError, match="index:"):
        x[[0, 7]]


def test_setitem_in_place_under_no_grad_and_on_plain_tensors():
    t = mg.zeros(2, 3)
    data = t.data
    t[0] = 5.0
    t[:, 2] = mg.Tensor([7.0, 8.0])
    t[np.array([False, True]), 0] = np.array([9.0])
    assert t.data is data and t._version == 3
    assert t.tolist() == [[5.0, 5.0, 7.0], [9.0, 0.0, 8.0]]
    w = mg.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="a leaf Tensor that requires grad is being used in an in-place"):
        w[0] = 3.0
    with mg.no_grad():
        w[0] = 3.0
    assert w.tolist() == [3.0, 1.0]
    with pytest.raises(ValueError, match="setitem: expected a value that broadcasts"):
        t[0] = np.ones(4, F32)


# ---------------------------------------------------------------- in place and versions

@pytest.mark.parametrize("op,ref", [("+=", np.add), ("-=", np.subtract), ("*=", np.multiply),
                                    ("/=", np.divide)])
def test_in_place_operators_keep_object_and_array(op, ref):
    t = mg.Tensor([[1.0, 2.0], [3.0, 4.0]])
    other = mg.Tensor([2.0, 4.0])
    obj, data, before = t, t.data, t.data.copy()
    namespace = {"t": t, "other": other}
    exec(f"t {op} other", namespace)
    assert namespace["t"] is obj and obj.data is data and obj._version == 1
    np.testing.assert_array_equal(obj.data, ref(before, other.data).astype(F32))


def test_in_place_refuses_an_operand_that_requires_grad():
    t = mg.zeros(2)
    w = mg.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="__iadd__: expected an operand that does not require grad"):
        t += w
    with pytest.raises(RuntimeError, match="setitem: expected an operand that does not require grad"):
        t[0] = w[1]
    t[0] = w.detach()[1]
    with mg.no_grad():
        t += w
    assert t.tolist() == [2.0, 1.0]


def test_in_place_rules():
    w = mg.Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="__iadd__: a leaf Tensor that requires grad"):
        w += 1
    with mg.no_grad():
        w -= 0.5
    assert w.tolist() == [0.5, 1.5] and w._version == 1 and w.is_leaf and w.requires_grad
    y = w * 2
    with pytest.raises(RuntimeError, match="__imul__: in-place change of a Tensor that is part of a graph"):
        y *= 3
    t = mg.zeros(2, 2)
    with pytest.raises(ValueError, match=r"__iadd__: expected an operand that broadcasts to the tensor's shape \(2, 2\)"):
        t += np.ones((3, 2), F32)
    frozen = mg.Tensor(np.zeros(2, F32))
    frozen.data.flags.writeable = False
    with pytest.raises(ValueError, match="__iadd__: expected a writeable tensor"):
        frozen += 1


def test_backward_refuses_after_an_input_changed_in_place():
    w = mg.Tensor([1.0, 2.0], requires_grad=True)
    x = mg.Tensor([3.0, 4.0])
    loss = (w * x).sum()  # Mul saved x
    x += 1
    with pytest.raises(RuntimeError, match=r"one of the variables needed for gradient computation has "
                                           r"been modified by an inplace operation: a tensor of shape "
                                           r"\(2,\) that mul saved is at version 1; expected version 0"):
        loss.backward()
    assert w.grad is None


def test_backward_refuses_after_a_saved_output_changed():
    w = mg.Tensor([0.5, -1.0], requires_grad=True)
    y = w.exp()  # Exp saves its output
    z = y + 1.0  # add saves nothing: only exp's own record can catch the change
    with mg.no_grad():
        y += 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation: .* that exp saved"):
        z.sum().backward()


def test_changes_through_detach_and_views_count():
    w = mg.Tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    loss = (w * w).sum()
    d = w.detach()
    d += 1  # shares w's memory (and counter)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    v = mg.Tensor(np.ones(4, F32))
    loss2 = (w * v).sum()
    r = v.view(2, 2)
    r *= 2
    assert v._version == 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss2.backward()


def test_unchanged_or_unsaved_inputs_backward_fine():
    w = mg.Tensor([1.0, 2.0], requires_grad=True)
    x = mg.Tensor([3.0, 4.0])
    loss = (w + x).sum()  # Add saves nothing: changing x cannot make its gradient wrong
    x += 1
    loss.backward()
    assert w.grad.tolist() == [1.0, 1.0]


def test_optimizer_step_bumps_versions():
    w = mg.Tensor([1.0, 2.0], requires_grad=True)
    opt = mg.optimizers.SGD(learning_rate=0.1)
    loss = (w * w).sum()
    loss.backward()
    opt.step([w])
    assert w._version == 1 and np.allclose(w.data, [0.8, 1.6])
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()  # the graph saw w before the update
    opt.zero_grad([w])
    (w * w).sum().backward()  # a fresh graph is fine
    np.testing.assert_allclose(w.grad, [1.6, 3.2], rtol=1e-6)


# ---------------------------------------------------------------- factories

def test_factories_shapes_values_and_requires_grad():
    assert mg.zeros(2, 3).tolist() == [[0.0] * 3] * 2 and mg.zeros((2, 3)).shape == (2, 3)
    assert mg.ones(3, requires_grad=True).requires_grad
    assert mg.full((2,), 1.5).tolist() == [1.5, 1.5] and mg.full(3, 2).shape == (3,)
    assert mg.arange(4).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert mg.arange(1, 2, 0.25).tolist() == [1.0, 1.25, 1.5, 1.75]
    assert mg.eye(2, 3).tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert mg.zeros_like(mg.ones(2, 2)).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert mg.ones_like(np.zeros((1, 2))).tolist() == [[1.0, 1.0]]
    for t in (mg.zeros(1), mg.randn(2), mg.rand(2), mg.arange(2), mg.eye(2), mg.full(1, 3)):
        assert t.dtype == np.float32 and t.data.flags.c_contiguous
    with pytest.raises(TypeError, match=r"zeros: expected integer sizes, received \(2.5,\)"):
        mg.zeros(2.5)
    with pytest.raises(ValueError, match=r"ones: expected sizes >= 0, received \(-1,\)"):
        mg.ones(-1)
    with pytest.raises(ValueError, match="arange: expected a non-zero step"):
        mg.arange(0, 1, 0)


def test_random_factories_follow_the_seed():
    mg.utils.set_random_seed(5)
    a, b = mg.randn(3, 4), mg.rand(5)
    mg.utils.set_random_seed(5)
    assert_bitwise_equal(mg.randn(3, 4).data, a.data, "randn")
    assert_bitwise_equal(mg.rand(5).data, b.data, "rand")
    mg.utils.set_random_seed(5)
    assert_bitwise_equal(mg.utils.rng().standard_normal((3, 4), dtype=np.float32), a.data, "generator")
    assert ((b.data >= 0) & (b.data < 1)).all()
    big = mg.randn(20000).data
    assert abs(big.mean()) < 0.05 and abs(big.std() - 1) < 0.05


# ---------------------------------------------------------------- interop

def test_numpy_interop_and_python_scalars():
    t = mg.Tensor([[1.5, -2.0], [3.0, 4.0]])
    a = np.asarray(t)
    assert a is t.data and a.dtype == np.float32
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    assert not np.shares_memory(np.array(t, copy=True), t.data)
    with pytest.raises(ValueError, match="__array__: converting float32 to float64 needs a copy"):
        t.__array__(np.float64, copy=False)
    assert t.tolist() == [[1.5, -2.0], [3.0, 4.0]] and len(t) == 2
    one = t[0, 0]
    assert float(one) == 1.5 and int(one) == 1 and bool(one) is True and not bool(mg.zeros(1))
    assert t.float() is t
    with pytest.raises(ValueError, match=r"float: expected a tensor with one element, received shape \(2, 2\)"):
        float(t)
    with pytest.raises(RuntimeError, match="bool: the truth value of a tensor with more than one element"):
        bool(t)
    with pytest.raises(TypeError, match="len: expected a tensor with at least one axis"):
        len(mg.Tensor(1.0))
    assert [row.tolist() for row in t] == [[1.5, -2.0], [3.0, 4.0]]  # iteration by rows
    assert (np.ones(2, F32) + mg.Tensor([1.0, 2.0])).tolist() == [2.0, 3.0]


def test_grad_is_a_float32_array():
    x = leaf(2)
    (x * 3).sum().backward()
    assert type(x.grad) is np.ndarray and x.grad.dtype == np.float32


# ---------------------------------------------------------------- mg.jit replays

def _training_run(use_jit, batches, x_all):
    mg.utils.set_random_seed(21)
    w = mg.randn(6, 4, requires_grad=True)
    b = mg.zeros(4, requires_grad=True)
    opt = mg.optimizers.SGD(learning_rate=0.1)

    def step(x, idx, y):
        h = mg.Tensor(x)[idx]                          # rows picked by an input index array
        h = mg.cat([h, h[:, :2] * 0.5], dim=1)
        z = mg.sigmoid(h) @ w + b
        z = mg.where(z > 0, z, z * 0.1)
        picked = mg.log_softmax(z, dim=1)[np.arange(len(y)), y]
        loss = -picked.mean() + z.max(dim=1).values.mean() * 0.01 + z.abs().clamp(max=3).mean() * 0.01
        loss.backward()
        opt.step([w, b])
        opt.zero_grad([w, b])
        return loss

    f = mg.jit(step) if use_jit else step
    losses = [f(x_all, idx, y).item() for idx, y in batches]
    return losses, w.data.copy(), b.data.copy(), (f.stats() if use_jit else None)


def test_jit_step_with_the_new_ops_replays_eager_bits():
    rng = np.random.default_rng(0)
    x_all = rng.standard_normal((20, 4)).astype(F32)
    batches = [(rng.integers(0, 20, 5), rng.integers(0, 4, 5)) for _ in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a refused (eager) step would warn
        eager = _training_run(False, batches, x_all)
        replayed = _training_run(True, batches, x_all)
    assert replayed[3]["captures"] == 1 and replayed[3]["replays"] == 3
    assert replayed[0] == eager[0]
    assert_bitwise_equal(replayed[1], eager[1], "w")
    assert_bitwise_equal(replayed[2], eager[2], "b")


def test_step_with_the_new_ops_is_thread_invariant(restore_threads):
    rng = np.random.default_rng(1)
    x_all = rng.standard_normal((300, 4)).astype(F32)
    batches = [(rng.integers(0, 300, 200), rng.integers(0, 4, 200)) for _ in range(2)]
    mg.set_num_threads(1)
    one = _training_run(False, batches, x_all)
    mg.set_num_threads(3)
    three = _training_run(False, batches, x_all)
    assert one[0] == three[0]
    assert_bitwise_equal(three[1], one[1], "w at 1 vs 3 threads")


def test_jit_replays_in_place_updates_and_random_factories():
    def run(use_jit):
        mg.utils.set_random_seed(2)
        w = mg.Tensor(np.ones(3, F32), requires_grad=True)

        def step(x, w=w):  # w: the parameter, read by the step (w -= ... would make it local)
            noise = mg.randn(3)
            loss = ((w * mg.Tensor(x) + noise) ** 2).sum()
            loss.backward()
            with mg.no_grad():
                w -= mg.Tensor(w.grad) * 0.01
                w[0] = 1.0
            w.grad = None
            return loss
        f = mg.jit(step) if use_jit else step
        return [f(np.full(3, k, F32)).item() for k in range(4)], w.data.copy()
    eager, replayed = run(False), run(True)
    assert replayed[0] == eager[0] and len(set(eager[0])) == 4
    assert_bitwise_equal(replayed[1], eager[1], "w")


def test_small_torch_methods():
    t = mg.zeros(2, 3)
    assert t.dim() == 2 and t.numel() == 6
    assert t.requires_grad_() is t and t.requires_grad
    y = t * 2
    with pytest.raises(RuntimeError, match="requires_grad_: expected a leaf tensor"):
        y.requires_grad_(False)


@pytest.mark.parametrize("module", ["minigrad.ops.elementwise", "minigrad.ops.reduce",
                                    "minigrad.ops.shape", "minigrad.ops.index", "minigrad.factories"])
def test_docstring_examples_run(module):
    import importlib
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
