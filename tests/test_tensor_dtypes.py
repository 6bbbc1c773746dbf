"""int64 and bool Tensors: what comparisons, argmax, max(dim) and masks return, and
how they convert, index, join, reduce and format, against NumPy and PyTorch's rules."""
import warnings

import numpy as np
import pytest

import minigrad as mg

F32 = np.float32


def test_the_three_dtypes_and_their_names():
    assert mg.float32 == np.float32 and mg.int64 == np.int64 and mg.long == np.int64
    assert mg.bool == np.bool_
    for dtype, want in [(None, np.float32), (mg.int64, np.int64), ("int64", np.int64), ("long", np.int64),
                        (int, np.int64), (bool, np.bool_), ("bool", np.bool_), (np.float32, np.float32),
                        ("float", np.float32)]:
        t = mg.Tensor([0, 1, 2], dtype=dtype)
        assert t.dtype == want and t.tolist() == ([False, True, True] if want == np.bool_ else [0, 1, 2])
    with pytest.raises(TypeError, match=r"Tensor: expected dtype float32, int64 or bool, received 'float64'"):
        mg.Tensor([1.0], dtype="float64")
    with pytest.raises(TypeError, match="Tensor: expected dtype float32, int64 or bool"):
        mg.Tensor([1.0], dtype=np.int32)


def test_only_float32_tensors_require_grad():
    with pytest.raises(RuntimeError, match="Tensor: only float32 tensors can require gradients, "
                                           "received dtype int64"):
        mg.Tensor([1, 2], dtype=mg.int64, requires_grad=True)
    t = mg.Tensor([True], dtype=mg.bool)
    with pytest.raises(RuntimeError, match="requires_grad_: only float32 tensors"):
        t.requires_grad_()
    assert not (mg.Tensor([1.0], requires_grad=True) > 0).requires_grad


def test_int64_from_floats_truncates_and_refuses_nan():
    assert mg.Tensor([1.9, -1.9], dtype=mg.int64).tolist() == [1, -1]  # a C cast, as torch
    with pytest.raises(ValueError, match="Tensor: expected finite values for an int64 tensor"):
        mg.Tensor([1.0, np.nan], dtype=mg.int64)
    with pytest.raises(TypeError, match="Tensor: expected numeric data, received list"):
        mg.Tensor([1, [2]], dtype=mg.int64)  # ragged: named as for float32


def test_an_int64_array_is_shared_not_copied():
    a = np.arange(4, dtype=np.int64)
    t = mg.Tensor(a, dtype=mg.int64)
    assert t.data is a
    assert mg.Tensor(a[::2], dtype=mg.int64).data.flags.c_contiguous


# ---------------------------------------------------------------- comparisons and logic

@pytest.mark.parametrize("op", ["__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"])
def test_comparisons_give_bool_tensors_equal_to_numpy(op):
    rng = np.random.default_rng(1)
    a = rng.integers(-3, 3, (4, 5)).astype(F32)
    b = rng.integers(-3, 3, (5,)).astype(F32)
    want = getattr(a, op)(b)
    for left, right in [(mg.Tensor(a), mg.Tensor(b)), (mg.Tensor(a), b),
                        (mg.Tensor(a, dtype=mg.int64), mg.Tensor(b, dtype=mg.int64)),
                        (mg.Tensor(a, requires_grad=True), b.astype(np.int64))]:
        got = getattr(left, op)(right)
        assert isinstance(got, mg.Tensor) and got.dtype == np.bool_ and not got.requires_grad
        np.testing.assert_array_equal(got.data, want)
    named = getattr(mg.Tensor(a), op.strip("_"))(mg.Tensor(b))  # t.lt(u), t.eq(u) ...
    np.testing.assert_array_equal(named.data, want)


def test_int64_comparisons_are_exact_beyond_float32():
    big = mg.Tensor([2**40, 2**40 + 1], dtype=mg.int64)
    assert (big == np.array([2**40, 2**40], np.int64)).tolist() == [True, False]


def test_a_comparison_of_shapes_that_do_not_broadcast_names_itself():
    with pytest.raises(ValueError, match=r"eq: expected shapes that broadcast together, received \(2,\) and \(3,\)"):
        mg.Tensor([1.0, 2.0]) == mg.Tensor([1.0, 2.0, 3.0])
    assert (mg.Tensor([1.0]) == None) is False  # noqa: E711  (as for other objects)


def test_logical_and_bitwise_operators():
    a = mg.Tensor([True, True, False, False], dtype=mg.bool)
    b = np.array([True, False, True, False])
    assert (a & b).tolist() == [True, False, False, False]
    assert (a | b).tolist() == [True, True, True, False]
    assert (a ^ b).tolist() == [False, True, True, False]
    assert (b & a).dtype == np.bool_ and (~a).tolist() == [False, False, True, True]
    assert a.logical_not().tolist() == [False, False, True, True]
    i = mg.Tensor([12, 10], dtype=mg.int64)
    assert (i & 6).tolist() == [4, 2] and (i | 1).tolist() == [13, 11] and (~i).tolist() == [-13, -11]
    with pytest.raises(TypeError, match="__and__: expected bool or integer tensors, received dtype float32"):
        mg.Tensor([1.0]) & a[:1]
    with pytest.raises(TypeError, match="__invert__: expected a bool or int64 tensor, received dtype float32"):
        ~mg.Tensor([1.0])


def test_any_all_sum_of_masks():
    m = mg.Tensor([[True, False, True], [False, False, False]], dtype=mg.bool)
    assert m.any().item() is True and m.all().item() is False
    assert m.any(dim=1).tolist() == [True, False] and m.all(dim=0, keepdim=True).shape == (1, 3)
    total = m.sum()
    assert total.dtype == np.int64 and total.item() == 2 and m.sum(dim=1).tolist() == [2, 0]
    with pytest.raises(TypeError, match=r"mean: expected a float32 tensor, received dtype bool "
                                        r"\(use t.float\(\).mean\(\)\)"):
        m.mean()
    assert m.float().mean().item() == pytest.approx(2 / 6)


# ---------------------------------------------------------------- argmax, max(dim)

def test_argmax_gives_int64_tensors_that_index():
    x = mg.Tensor([[1.0, 9.0, 3.0], [7.0, 2.0, 2.0]], requires_grad=True)
    idx = x.argmax(dim=1)
    assert idx.dtype == np.int64 and idx.tolist() == [1, 0] and not idx.requires_grad
    picked = x[mg.arange(2).long(), idx]
    assert picked.tolist() == [9.0, 7.0]
    picked.sum().backward()
    assert x.grad.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


def test_max_with_dim_is_torch_values_and_indices():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 4)).astype(F32)
    x = mg.Tensor(a, requires_grad=True)
    for call in (lambda: x.max(1), lambda: x.max(dim=1), lambda: mg.max(x, 1)):
        values, indices = call()
        np.testing.assert_array_equal(values.data, a.max(axis=1))
        np.testing.assert_array_equal(indices.data, a.argmax(axis=1))
    result = x.min(0, keepdim=True)
    assert result.values.shape == (1, 4) and result.indices.tolist() == [a.argmin(axis=0).tolist()]
    assert isinstance(x.max(axis=1), mg.Tensor)  # NumPy's spelling: the values only
    assert x.max().item() == a.max()
    np.testing.assert_array_equal(mg.max(x, mg.Tensor(np.zeros(4, F32))).data, np.maximum(a, 0))
    assert mg.gradcheck(lambda t: t.max(dim=0).values, [mg.Tensor(a, requires_grad=True)])


def test_max_of_int_tensors_keeps_the_dtype():
    t = mg.Tensor([[3, 9], [4, 1]], dtype=mg.int64)
    assert t.max().item() == 9 and t.max().dtype == np.int64
    values, indices = t.min(dim=1)
    assert values.tolist() == [3, 1] and indices.tolist() == [0, 1]


# ---------------------------------------------------------------- indexing with tensors

def test_int64_and_bool_tensors_index_as_numpy_arrays():
    a = np.arange(12, dtype=F32).reshape(3, 4)
    x = mg.Tensor(a, requires_grad=True)
    rows = mg.Tensor([2, 0, 2], dtype=mg.int64)
    np.testing.assert_array_equal(x[rows].data, a[[2, 0, 2]])
    x[rows].sum().backward()
    assert x.grad[:, 0].tolist() == [1.0, 0.0, 2.0]  # repeated rows accumulate
    mask = x > 5
    np.testing.assert_array_equal(x[mask].data, a[a > 5])
    with pytest.raises(IndexError, match=r"index: .*shape \(3, 4\)"):
        x[mg.Tensor([3], dtype=mg.int64)]


def test_indexing_and_views_of_int_tensors_keep_the_dtype_and_share_memory():
    t = mg.Tensor(np.arange(6), dtype=mg.int64)
    row = t.view(2, 3)[1]
    assert row.dtype == np.int64 and row.tolist() == [3, 4, 5]
    t[4] = 40  # item assignment on a plain tensor
    assert row.tolist() == [3, 40, 5] and row._version == t._version == 1
    assert t[t > 3].tolist() == [40, 5]
    for shaped in (t.reshape(3, 2).T, t.flatten(), t.unsqueeze(0).squeeze(0), t.view(2, 3).permute(1, 0),
                   t.view(2, 3).transpose(0, 1), t.clone(), mg.cat([t, t]), mg.stack([t, t], dim=1)):
        assert shaped.dtype == np.int64
    assert mg.cat([t, t.float()]).dtype == np.float32  # mixed: float32, as torch promotes


def test_mg_where_takes_a_bool_tensor():
    x = mg.Tensor([-1.0, 2.0, -3.0], requires_grad=True)
    y = mg.where(x > 0, x, x * 0.5)
    assert y.tolist() == [-0.5, 2.0, -1.5]
    y.sum().backward()
    assert x.grad.tolist() == [0.5, 1.0, 0.5]


# ---------------------------------------------------------------- conversions and arithmetic

def test_conversions():
    t = mg.Tensor([1.7, -0.2, 0.0])
    assert t.float() is t and t.to("cpu") is t and t.to(mg.float32) is t
    assert t.long().tolist() == [1, 0, 0] and t.to(dtype=mg.int64).dtype == np.int64
    assert t.bool().tolist() == [True, True, False] and t.to("cpu", mg.bool).dtype == np.bool_
    assert mg.Tensor([2], dtype=mg.int64).float().dtype == np.float32
    assert t.is_floating_point() and not t.long().is_floating_point()
    with pytest.raises(TypeError, match="to: expected dtype float32, int64 or bool"):
        t.to("cuda")


def test_arithmetic_on_int_and_bool_tensors_is_float32():
    i = mg.Tensor([1, 2, 3], dtype=mg.int64)
    for got, want in [(i * 2.5, [2.5, 5.0, 7.5]), (i + i, [2.0, 4.0, 6.0]), ((i > 1) * 3.0, [0.0, 3.0, 3.0]),
                      (mg.sqrt(i * i), [1.0, 2.0, 3.0]), (i.sum() / 2, 3.0)]:
        assert got.dtype == np.float32 and got.tolist() == want
    x = mg.Tensor([1.0, 1.0, 1.0], requires_grad=True)
    (x * i).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(TypeError, match=r"__iadd__: expected a float32 tensor, received dtype int64"):
        i += 1


def test_item_tolist_repr_and_format():
    assert mg.Tensor(3, dtype=mg.int64).item() == 3 and type(mg.Tensor(3, dtype=mg.int64).item()) is int
    assert mg.Tensor(True, dtype=mg.bool).item() is True
    assert type(mg.Tensor(2.5).item()) is float
    assert repr(mg.Tensor([1, 2], dtype=mg.int64)) == "Tensor([1, 2], dtype=int64)"
    assert repr(mg.Tensor([1.0], requires_grad=True)) == "Tensor([1.], requires_grad=True)"
    acc = (mg.Tensor([0, 1, 1], dtype=mg.int64) == np.array([0, 1, 0])).float().mean()
    assert f"{acc:.4f}" == "0.6667" and f"{mg.Tensor([0.5]):.2f}" == "0.50"
    assert f"{mg.Tensor([1.0, 2.0])}" == "Tensor([1., 2.])"


def test_size_is_the_count_and_called_the_shape():
    t = mg.zeros(2, 3)
    assert t.size == 6 and t.size() == (2, 3) and t.size(1) == 3 and t.size(-2) == 2
    with pytest.raises(IndexError, match=r"size: expected dim in \[-2, 2\), received 2"):
        t.size(2)
    import copy
    import pickle
    assert pickle.loads(pickle.dumps(t.size)) == 6 and copy.deepcopy(t.size) == 6


# ---------------------------------------------------------------- with the rest of minigrad

def test_int64_label_tensors_train_as_label_arrays():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((5, 4)).astype(F32)
    labels = rng.integers(0, 4, 5)
    grads = []
    for y in (labels, mg.Tensor(labels, dtype=mg.int64)):
        z = mg.Tensor(logits, requires_grad=True)
        loss = mg.softmax_cross_entropy(z, y)
        loss.backward()
        grads.append((loss.item(), z.grad))
    assert grads[0][0] == grads[1][0]
    np.testing.assert_array_equal(grads[0][1], grads[1][1])


def test_a_jitted_step_returning_an_accuracy_replays_eager_bits():
    rng = np.random.default_rng(4)
    x_all = rng.standard_normal((40, 6)).astype(F32)
    y_all = rng.integers(0, 3, 40)

    def run(use_jit):
        mg.utils.set_random_seed(5)
        w = mg.randn(6, 3, requires_grad=True)
        opt = mg.optimizers.SGD(learning_rate=0.5)

        def step(x, y):
            z = x @ w
            loss = mg.softmax_cross_entropy(z, y)
            loss.backward()
            opt.step([w])
            opt.zero_grad([w])
            hits = z.argmax(dim=1) == y
            return loss, hits.float().mean(), hits.sum()

        f = mg.jit(step) if use_jit else step
        out = []
        for k in range(4):
            x = mg.Tensor(x_all[10 * k:10 * k + 10])
            y = mg.Tensor(y_all[10 * k:10 * k + 10], dtype=mg.int64)
            loss, acc, count = f(x, y)
            out.append((loss.item(), acc.item(), count.item(), count.dtype))
        return out, w.data.copy(), (f.stats() if use_jit else None)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eager, replayed = run(False), run(True)
    assert eager[0] == replayed[0]
    np.testing.assert_array_equal(eager[1], replayed[1])
    assert replayed[2]["captures"] == 1 and replayed[2]["replays"] == 3
    assert eager[0][0][3] == np.int64


def test_a_boolean_mask_inside_a_jitted_step_runs_eagerly_with_a_warning():
    w = mg.Tensor([1.0, -2.0, 3.0], requires_grad=True)

    @mg.jit
    def positive_sum(x):
        return (x * w)[x * w > 0].sum()

    with pytest.warns(RuntimeWarning, match="boolean mask"):
        first = positive_sum(mg.Tensor([1.0, 1.0, 1.0]))
    second = positive_sum(mg.Tensor([-1.0, -1.0, 1.0]))  # a different number of elements
    assert first.item() == 4.0 and second.item() == 5.0
    assert positive_sum.stats()["replays"] == 0


def test_the_readme_accuracy_idiom():
    mg.utils.set_random_seed(0)
    model = mg.Sequential([mg.layers.Dense(3)])
    model.build((4,))
    x = mg.Tensor(np.eye(4, dtype=F32))
    y = np.array([0, 1, 2, 0], np.uint8)
    with mg.no_grad():
        accuracy = (model(x).argmax(dim=1) == y).float().mean()
    want = (model.predict(np.eye(4, dtype=F32), verbose=0).argmax(axis=1) == y).mean()
    assert f"{accuracy:.4f}" == f"{want:.4f}"


def test_against_pytorch_when_installed():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    a = rng.integers(-2, 3, (3, 4)).astype(F32)
    t, m = torch.tensor(a), mg.Tensor(a)
    assert str((t > 0).dtype) == "torch.bool" and (m > 0).dtype == np.bool_
    np.testing.assert_array_equal((m > 0).sum(dim=1).data, (t > 0).sum(dim=1).numpy())
    assert str((t > 0).sum().dtype) == "torch.int64" and (m > 0).sum().dtype == np.int64
    tv, ti = t.max(dim=1)
    mv, mi = m.max(dim=1)
    np.testing.assert_array_equal(mv.data, tv.numpy())
    np.testing.assert_array_equal(mi.data, ti.numpy())
    np.testing.assert_array_equal(m.argmax(dim=0).data, t.argmax(dim=0).numpy())
    np.testing.assert_array_equal(m.long().data, t.long().numpy())
    np.testing.assert_array_equal((~(m > 0)).data, (~(t > 0)).numpy())
    np.testing.assert_array_equal(m[m > 0].data, t[t > 0].numpy())
    idx = torch.tensor([2, 0])
    np.testing.assert_array_equal(m[mg.Tensor([2, 0], dtype=mg.int64)].data, t[idx].numpy())
    assert f"{(m > 0).float().mean():.4f}" == f"{(t > 0).float().mean():.4f}"


def test_mg_tensor_infers_dtypes_as_torch_tensor_and_copies():
    assert mg.tensor([1, 2]).dtype == np.int64 and mg.tensor([True, False]).dtype == np.bool_
    assert mg.tensor([1, 2.5]).dtype == np.float32 and mg.tensor(np.arange(3, dtype=np.uint8)).dtype == np.int64
    assert mg.tensor([1, 2], dtype=mg.float32).dtype == np.float32
    a = np.ones(2, F32)
    t = mg.tensor(a, requires_grad=True)
    assert t.requires_grad and t.data is not a and np.shares_memory(mg.Tensor(a).data, a)
    with pytest.raises(RuntimeError, match="only float32 tensors can require gradients"):
        mg.tensor([1, 2], requires_grad=True)
    x = mg.zeros(2, 2)
    assert x.contiguous() is x and x.cpu() is x
