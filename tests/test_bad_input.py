"""Bad input gets a clear exception naming the op, what it expected and what it
received; never a crash. Odd but valid input (non-contiguous, NaN/inf, empty
batches) gets the reference's answer. The calls most likely to reach C with wrong
sizes if validation slipped run in a subprocess, so a segfault fails one test
instead of killing pytest."""
import re

import numpy as np
import pytest

import minigrad as mg
from minigrad import kernels, reference
from helpers import F32, assert_snippet_ok, check_kernel, run_python

RNG = np.random.default_rng(21)


def f32(*shape):
    return RNG.standard_normal(shape).astype(F32)


def raises(exc, text, fn, *args, **kwargs):
    """fn(*args) raises exc whose message contains text (literally)."""
    with pytest.raises(exc, match=re.escape(text)):
        fn(*args, **kwargs)


# ================================================================ wrong shapes

def test_matmul_shape_mismatch_message():
    x, w = mg.Tensor(f32(128, 784)), mg.Tensor(f32(512, 10))
    msg = "matmul: expected (N, K) @ (K, M), received (128, 784) @ (512, 10)"
    raises(ValueError, msg, mg.matmul, x, w)
    raises(ValueError, msg, lambda: x @ w)
    raises(ValueError, "matmul: expected (N, K) @ (K, M), received (3,) @ (3, 2)",
           mg.matmul, mg.Tensor(f32(3)), mg.Tensor(f32(3, 2)))


@pytest.mark.parametrize("trans_a,trans_b,expected", [
    (False, False, "gemm: expected (N, K) @ (K, M), received (128, 784) @ (512, 10)"),
    (True, False, "gemm: expected (K, N).T @ (K, M), received (128, 784).T @ (512, 10)"),
    (False, True, "gemm: expected (N, K) @ (M, K).T, received (128, 784) @ (512, 10).T"),
    (True, True, "gemm: expected (K, N).T @ (M, K).T, received (128, 784).T @ (512, 10).T"),
])
def test_gemm_shape_mismatch_messages(trans_a, trans_b, expected):
    raises(ValueError, expected, kernels.gemm, f32(128, 784), f32(512, 10), trans_a=trans_a, trans_b=trans_b)


def test_gemm_other_shape_errors():
    a, b = f32(2, 3), f32(3, 4)
    raises(ValueError, "gemm: expected a with 2 dimension(s), received shape (3,)", kernels.gemm, f32(3), b)
    raises(ValueError, "gemm: expected b with 2 dimension(s), received shape (1, 3, 4)", kernels.gemm, a, f32(1, 3, 4))
    raises(ValueError, "gemm: expected bias of shape (4,), received (3,)", kernels.gemm, a, b, bias=f32(3))
    raises(ValueError, "gemm: expected bias with 1 dimension(s), received shape (1, 4)", kernels.gemm, a, b, bias=f32(1, 4))
    raises(ValueError, "gemm: expected out of shape (2, 4), received (4, 2)", kernels.gemm, a, b, f32(4, 2))
    raises(ValueError, "gemm: beta=1.0 reads out, so out must be given", kernels.gemm, a, b, beta=1)


def test_bias_and_relu_shape_errors():
    raises(ValueError, "add_bias: expected (N, C) + (C,), received (4, 3) + (4,)", kernels.add_bias, f32(4, 3), f32(4))
    raises(ValueError, "add_bias: expected out of shape (4, 3), received (3, 4)", kernels.add_bias, f32(4, 3), f32(3), f32(3, 4))
    raises(ValueError, "bias_grad: expected out of shape (3,), received (4,)", kernels.bias_grad, f32(4, 3), f32(4))
    raises(ValueError, "relu_forward: expected out of shape (5,), received (4,)", kernels.relu_forward, f32(5), f32(4))
    raises(ValueError, "relu_backward: expected y and dy of the same shape, received (3,) and (4,)",
           kernels.relu_backward, f32(3), f32(4))
    raises(ValueError, "relu_backward_bias_grad: expected y and dy of the same shape, received (2, 3) and (3, 2)",
           kernels.relu_backward_bias_grad, f32(2, 3), f32(3, 2))
    raises(ValueError, "relu_backward_bias_grad: expected db_out of shape (3,), received (2,)",
           kernels.relu_backward_bias_grad, f32(2, 3), f32(2, 3), None, f32(2))


def test_softmax_xent_shape_errors():
    logits = f32(4, 3)
    raises(ValueError, "softmax_xent_forward: expected labels of shape (4,), received (5,)",
           kernels.softmax_xent_forward, logits, np.zeros(5, np.int64))
    raises(ValueError, "softmax_xent_forward: expected target of shape (4, 3) (or class indices of shape (4,)), received (4, 2)",
           kernels.softmax_xent_forward, logits, f32(4, 2))
    raises(ValueError, "softmax_xent_forward: expected probs_out of shape (4, 3), received (3, 4)",
           kernels.softmax_xent_forward, logits, np.zeros(4, np.int64), f32(3, 4))
    raises(ValueError, "softmax_xent_backward: expected labels of shape (4,), received (3,)",
           kernels.softmax_xent_backward, logits, np.zeros(3, np.int32), 1.0)
    raises(ValueError, "softmax_xent_forward: expected at least one class, received logits of shape (4, 0)",
           kernels.softmax_xent_forward, np.zeros((4, 0), F32), np.zeros(4, np.int64))
    raises(ValueError, "softmax_xent_forward: expected at least one class",
           mg.softmax_cross_entropy, mg.Tensor(np.zeros((0, 0), F32)), np.zeros(0, np.int64))
    # labels of the wrong shape through the op: (N, 1) integer column
    raises(ValueError, "expected target of shape (4, 3) (or class indices of shape (4,)), received (4, 1)",
           mg.softmax_cross_entropy, mg.Tensor(logits), np.zeros((4, 1), np.int64))


def test_op_shape_errors():
    x = mg.Tensor(f32(2, 3), requires_grad=True)
    for op, fn in [("add", lambda a, b: a + b), ("sub", lambda a, b: a - b),
                   ("mul", lambda a, b: a * b), ("div", lambda a, b: a / b)]:
        raises(ValueError, f"{op}: expected shapes that broadcast together, received (2, 3) and (4,)",
               fn, x, mg.Tensor(f32(4)))
        raises(ValueError, f"{op}: expected shapes that broadcast together, received (2, 3) and (3, 2)",
               fn, x, f32(3, 2))
    raises(ValueError, "reshape: cannot reshape (2, 3) (6 elements) into (4, 2)", x.reshape, 4, 2)
    raises(ValueError, "sum: expected axis in [-2, 2), received 2", x.sum, 2)
    raises(ValueError, "mean: expected axis in [-2, 2), received (0, -3)", x.mean, (0, -3))
    raises(ValueError, "mean: expected at least one element along axis 1, received shape (2, 0)",
           mg.Tensor(np.zeros((2, 0), F32)).mean, 1)
    raises(ValueError, "dense: expected x (N, K) and kernel (K, M), received (2, 3) and (4, 5)",
           mg.dense, x, mg.Tensor(f32(4, 5)))
    raises(ValueError, "dense: expected bias of shape (5,), received (4,)",
           mg.dense, x, mg.Tensor(f32(3, 5)), mg.Tensor(f32(4)))
    assert x.grad is None


# ================================================================ wrong dtypes

BAD_DTYPES = [np.float64, np.float16, np.int32, np.int64, np.bool_, np.complex64, object]


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_kernels_reject_wrong_dtypes(dtype):
    bad = np.ones((4, 3), dtype)
    name = np.dtype(dtype).name
    raises(TypeError, f"gemm: expected a of dtype float32, received {name}", kernels.gemm, bad, f32(3, 2))
    raises(TypeError, f"gemm: expected b of dtype float32, received {name}", kernels.gemm, f32(2, 4), bad)
    raises(TypeError, f"gemm: expected bias of dtype float32, received {name}", kernels.gemm, f32(2, 4), f32(4, 3), bias=bad[0])
    raises(TypeError, "gemm: expected out to be a float32 array", kernels.gemm, f32(2, 4), f32(4, 3), bad[:2])
    raises(TypeError, f"add_bias: expected x of dtype float32, received {name}", kernels.add_bias, bad, f32(3))
    raises(TypeError, f"add_bias: expected b of dtype float32, received {name}", kernels.add_bias, f32(4, 3), bad[0])
    raises(TypeError, f"bias_grad: expected dy of dtype float32, received {name}", kernels.bias_grad, bad)
    raises(TypeError, f"relu_forward: expected x of dtype float32, received {name}", kernels.relu_forward, bad)
    raises(TypeError, f"relu_backward: expected dy of dtype float32, received {name}", kernels.relu_backward, f32(4, 3), bad)
    raises(TypeError, f"relu_backward_bias_grad: expected y of dtype float32, received {name}",
           kernels.relu_backward_bias_grad, bad, f32(4, 3))
    raises(TypeError, f"softmax_xent_forward: expected logits of dtype float32, received {name}",
           kernels.softmax_xent_forward, bad, np.zeros(4, np.int64))
    raises(TypeError, f"softmax_xent_backward: expected target of dtype float32, received {name}",
           kernels.softmax_xent_backward, f32(4, 3), bad, 1.0)
    raises(TypeError, "rmsprop_update: expected parameter 0 to be a float32 array", kernels.rmsprop_update,
           bad, f32(4, 3), f32(4, 3), 0.1, 0.9, 1e-7)
    raises(TypeError, f"rmsprop_update: expected grad 0 of dtype float32, received {name}", kernels.rmsprop_update,
           f32(4, 3), bad, f32(4, 3), 0.1, 0.9, 1e-7)
    raises(TypeError, "adam_update: expected slot 2 of parameter 0 to be a float32 array", kernels.adam_update,
           f32(4, 3), f32(4, 3), f32(4, 3), bad, 0.1, 0.9, 0.999, 1e-7, 1)


@pytest.mark.parametrize("value,received", [([[1.0]], "list"), (2.0, "float"), (None, "NoneType"),
                                            (mg.Tensor([[1.0]]), "Tensor")])
def test_kernels_reject_non_arrays(value, received):
    raises(TypeError, f"gemm: expected a to be a numpy float32 array, received {received}", kernels.gemm, value, f32(1, 1))
    raises(TypeError, f"relu_forward: expected x to be a numpy float32 array, received {received}",
           kernels.relu_forward, value)


def test_label_dtype_and_scalar_errors():
    logits = f32(3, 4)
    for labels, name in [(np.array([0.0, 1.0, 2.0]), "float64"), (np.array([True, False, True]), "bool"),
                         (np.array([0, 1, 2], np.float32), "float32")]:
        raises(TypeError, f"softmax_xent_forward: expected integer class indices (int32/int64), received {name}",
               kernels.softmax_xent_forward, logits, labels)
        raises(TypeError, "expected integer class indices", mg.softmax_cross_entropy, mg.Tensor(logits), labels)
    raises(TypeError, "softmax_xent_forward: expected target to be a numpy array, received list",
           kernels.softmax_xent_forward, logits, [0, 1, 2])
    raises(TypeError, "softmax_cross_entropy: expected float target rows, received <U1",
           mg.softmax_cross_entropy, mg.Tensor(logits), np.full((3, 4), "a"))
    raises(TypeError, "gemm: expected alpha to be a real number, received str", kernels.gemm, f32(2, 2), f32(2, 2), alpha="one")
    raises(TypeError, "gemm: expected beta to be a real number, received list", kernels.gemm, f32(2, 2), f32(2, 2), beta=[1])
    raises(TypeError, "softmax_xent_backward: expected scale to be a real number, received NoneType",
           kernels.softmax_xent_backward, logits, np.zeros(3, np.int64), None)
    raises(TypeError, "rmsprop_update: expected lr to be a real number, received str",
           kernels.rmsprop_update, f32(3), f32(3), f32(3), "fast", 0.9, 1e-7)


def test_numeric_strings_are_not_real_numbers():
    with pytest.raises(TypeError, match="gemm: expected alpha to be a real number, received str"):
        kernels.gemm(f32(2, 2), f32(2, 2), alpha="2")


def test_op_operand_type_errors():
    x = mg.Tensor(f32(2, 3))
    raises(TypeError, "add: expected a Tensor, array or real number, received str", lambda: x + "a")
    raises(TypeError, "mul: expected a Tensor, array or real number, received NoneType", lambda: x * None)
    raises(TypeError, "sub: expected a Tensor, array or real number, received complex", lambda: x - 1j)
    raises(ValueError, "pow: expected shapes that broadcast together, received (2, 3) and (2,)",
           lambda: x ** mg.Tensor([2.0, 1.0]))  # a Tensor exponent broadcasts as the other operand
    raises(TypeError, "pow: expected a constant real exponent, received str", lambda: x ** "2")
    raises(TypeError, "pow: expected a constant real exponent, received ndarray", lambda: x ** np.ones(3))
    raises(TypeError, "matmul: expected a Tensor, array or real number, received str", mg.matmul, x, "w")


# ================================================================ non-contiguous inputs

def layouts(array):
    """The same values as strided, transposed, negative-stride and Fortran-order views."""
    big = np.zeros((array.shape[0] * 2,) + array.shape[1:], F32)
    big[::2] = array
    yield "strided", big[::2]
    yield "negative strides", np.ascontiguousarray(array[::-1])[::-1]
    yield "fortran", np.asfortranarray(array)
    if array.ndim == 2:
        yield "transposed view", np.ascontiguousarray(array.T).T


def _check_layouts(name, args, index, rtol=1e-5, atol=1e-6, **kwargs):
    """kernels.<name> with args[index] in every non-contiguous layout must equal the
    reference on contiguous args, and must not modify the input."""
    with np.errstate(all="ignore"):
        want = getattr(reference, name)(*[np.array(a, copy=True) for a in args], **kwargs)
    want = want if isinstance(want, tuple) else (want,)
    for label, view in layouts(args[index]):
        assert not view.flags.c_contiguous, label
        before = view.copy()
        call = list(args)
        call[index] = view
        got = getattr(kernels, name)(*call, **kwargs)
        got = got if isinstance(got, tuple) else (got,)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"{name}, {label}")
        np.testing.assert_array_equal(view, before)


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, True), (True, False)])
def test_gemm_non_contiguous_inputs_are_copied(trans_a, trans_b):
    a = f32(9, 13) if not trans_a else f32(13, 9)
    b = f32(13, 7) if not trans_b else f32(7, 13)
    kw = dict(trans_a=trans_a, trans_b=trans_b, bias=f32(7), relu=True)
    _check_layouts("gemm", [a, b], 0, **kw)
    _check_layouts("gemm", [a, b], 1, **kw)
    bias = f32(14)[::2]
    np.testing.assert_allclose(kernels.gemm(a, b, trans_a=trans_a, trans_b=trans_b, bias=bias),
                               reference.gemm(a, b, trans_a=trans_a, trans_b=trans_b, bias=bias.copy()),
                               rtol=1e-5, atol=1e-5)


def test_other_kernels_non_contiguous_inputs_are_copied():
    x, b = f32(6, 5), f32(5)
    y = np.maximum(f32(6, 5), 0)
    _check_layouts("add_bias", [x, b], 0)
    _check_layouts("bias_grad", [x], 0)
    _check_layouts("relu_forward", [x], 0)
    _check_layouts("relu_backward", [y, x], 0)
    _check_layouts("relu_backward", [y, x], 1)
    _check_layouts("relu_backward_bias_grad", [y, x], 1)
    labels = RNG.integers(0, 5, 6)
    _check_layouts("softmax_xent_forward", [x, labels], 0)
    onehot = np.eye(5, dtype=F32)[labels]
    _check_layouts("softmax_xent_forward", [x, onehot], 1)
    _check_layouts("softmax_xent_backward", [np.abs(x), onehot, 0.5], 1)
    strided_labels = np.repeat(labels, 2)[::2]  # non-contiguous int64 labels
    got = kernels.softmax_xent_forward(x, strided_labels)
    want = reference.softmax_xent_forward(x, labels)
    assert got[0] == pytest.approx(want[0], rel=1e-6)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-5)


def test_optimizer_non_contiguous_grad_is_copied():
    w, v = f32(4, 3), np.zeros((4, 3), F32)
    g = f32(3, 4).T  # a transposed view
    w2, v2 = w.copy(), v.copy()
    kernels.rmsprop_update(w, g, v, 0.01, 0.9, 1e-7)
    reference.rmsprop_update(w2, np.ascontiguousarray(g), v2, 0.01, 0.9, 1e-7)
    np.testing.assert_allclose(w, w2, rtol=1e-6)
    np.testing.assert_allclose(v, v2, rtol=1e-6)


def test_ops_accept_non_contiguous_arrays():
    x = f32(10, 8)[::2, ::2]
    w = f32(4, 6).T.T[:, :3]
    out = mg.dense(x, w, activation="relu")
    np.testing.assert_allclose(out.numpy(), np.maximum(x.astype(np.float64) @ w, 0), rtol=1e-5, atol=1e-6)


# ================================================================ bad outputs

def _bad_outs(shape):
    non_contig = np.zeros(shape + (2,), F32)[..., 0]
    fortran = np.asfortranarray(np.zeros(shape, F32)) if len(shape) == 2 else None
    read_only = np.zeros(shape, F32)
    read_only.setflags(write=False)
    cases = [("non-contiguous", non_contig), ("read-only", read_only)]
    if fortran is not None and shape[0] > 1 and shape[1] > 1:
        cases.append(("non-contiguous", fortran))
    return cases


OUT_CALLS = [  # (op, call taking out)
    ("gemm", lambda out: kernels.gemm(f32(3, 4), f32(4, 5), out), (3, 5), "out"),
    ("add_bias", lambda out: kernels.add_bias(f32(3, 5), f32(5), out), (3, 5), "out"),
    ("bias_grad", lambda out: kernels.bias_grad(f32(3, 5), out), (5,), "out"),
    ("relu_forward", lambda out: kernels.relu_forward(f32(3, 5), out), (3, 5), "out"),
    ("relu_backward", lambda out: kernels.relu_backward(f32(3, 5), f32(3, 5), out), (3, 5), "out"),
    ("relu_backward_bias_grad", lambda out: kernels.relu_backward_bias_grad(f32(3, 5), f32(3, 5), out), (3, 5), "out"),
    ("relu_backward_bias_grad", lambda out: kernels.relu_backward_bias_grad(f32(3, 5), f32(3, 5), None, out), (5,), "db_out"),
    ("softmax_xent_forward", lambda out: kernels.softmax_xent_forward(f32(3, 5), np.zeros(3, np.int64), out), (3, 5), "probs_out"),
    ("softmax_xent_forward", lambda out: kernels.softmax_xent_forward(f32(3, 5), np.zeros(3, np.int64), None, out), (3,), "row_loss_out"),
    ("softmax_xent_backward", lambda out: kernels.softmax_xent_backward(f32(3, 5), np.zeros(3, np.int64), 1.0, out), (3, 5), "out"),
    ("rmsprop_update", lambda out: kernels.rmsprop_update(out, f32(3, 5), np.zeros((3, 5), F32), 0.1, 0.9, 1e-7), (3, 5), "parameter 0"),
    ("rmsprop_update", lambda out: kernels.rmsprop_update(f32(3, 5), f32(3, 5), out, 0.1, 0.9, 1e-7), (3, 5), "slot 1 of parameter 0"),
    ("sgd_update", lambda out: kernels.sgd_update(f32(3, 5), f32(3, 5), out, 0.1, 0.9), (3, 5), "slot 1 of parameter 0"),
    ("adam_update", lambda out: kernels.adam_update(f32(3, 5), f32(3, 5), np.zeros((3, 5), F32), out, 0.1, 0.9, 0.999, 1e-7, 1), (3, 5), "slot 2 of parameter 0"),
]


@pytest.mark.parametrize("op,call,shape,name", OUT_CALLS, ids=[f"{c[0]}-{c[3]}" for c in OUT_CALLS])
def test_bad_out_arrays_raise_value_error(op, call, shape, name):
    for kind, out in _bad_outs(shape):
        before = out.copy()
        raises(ValueError, f"{op}: expected {name} to be writeable, C-contiguous and aligned (it is written "
               f"in place), received a {kind} array", call, out)
        np.testing.assert_array_equal(out, before)  # untouched


def test_in_place_forms_reject_read_only_arrays():
    x = f32(3, 4)
    x.setflags(write=False)
    raises(ValueError, "relu_forward: expected out to be writeable, received a read-only array",
           kernels.relu_forward, x, x)
    raises(ValueError, "add_bias: expected out to be writeable, received a read-only array",
           kernels.add_bias, x, f32(4), x)


@pytest.mark.parametrize("fn", ["relu_backward", "relu_backward_bias_grad"])
def test_relu_backward_in_place_rejects_read_only_dy(fn):
    y, dy = f32(3, 4), f32(3, 4)
    dy.setflags(write=False)
    before = dy.copy()
    try:
        with pytest.raises(ValueError, match="writeable"):
            getattr(kernels, fn)(y, dy, dy)
    finally:
        np.testing.assert_array_equal(dy, before)


# ================================================================ aliasing

def test_out_aliasing_an_input_is_rejected():
    a = f32(4, 4)
    raises(ValueError, "gemm: out must not share memory with a", kernels.gemm, a, f32(4, 4), a)
    b = f32(4, 4)
    raises(ValueError, "gemm: out must not share memory with b", kernels.gemm, f32(4, 4), b, b)
    both = f32(4, 4)
    raises(ValueError, "gemm: out must not share memory with a", kernels.gemm, both, both, both)
    flat = np.zeros(20, F32)
    raises(ValueError, "gemm: out must not share memory with bias",
           kernels.gemm, f32(4, 4), f32(4, 4), flat[:16].reshape(4, 4), bias=flat[12:16])
    x = f32(4, 4)
    raises(ValueError, "add_bias: out must not share memory with x", kernels.add_bias, x, f32(4), x.view())
    raises(ValueError, "add_bias: out must not share memory with b", kernels.add_bias, f32(4, 4), x[0], x)
    raises(ValueError, "relu_backward: out must not share memory with y", kernels.relu_backward, x, f32(4, 4), x.view())
    dx = np.zeros((4, 4), F32)
    raises(ValueError, "relu_backward_bias_grad: db_out must not share memory with out",
           kernels.relu_backward_bias_grad, f32(4, 4), f32(4, 4), dx, dx[0])
    logits = f32(4, 4)
    raises(ValueError, "softmax_xent_forward: probs_out must not share memory with logits",
           kernels.softmax_xent_forward, logits, np.zeros(4, np.int64), logits.view())
    probs = np.zeros((4, 4), F32)
    raises(ValueError, "softmax_xent_forward: row_loss_out must not share memory with probs_out",
           kernels.softmax_xent_forward, logits, np.zeros(4, np.int64), probs, probs[1])
    raises(ValueError, "softmax_xent_backward: out must not share memory with probs",
           kernels.softmax_xent_backward, probs, np.zeros(4, np.int64), 1.0, probs.view())


def test_add_bias_in_place_with_bias_inside_x():
    x = np.arange(12, dtype=F32).reshape(3, 4)
    want = x + x[0]
    try:
        kernels.add_bias(x, x[0], x)
    except ValueError as exc:  # rejecting it is fine too
        assert "add_bias" in str(exc) and "share memory" in str(exc)
        return
    np.testing.assert_array_equal(x, want)


def test_optimizer_aliasing_is_rejected():
    w, g, v = f32(3), f32(3), np.zeros(3, F32)
    raises(ValueError, "rmsprop_update: arrays written in place must not share memory (parameter 0 and an array of parameter 0)",
           kernels.rmsprop_update, w, g, w, 0.1, 0.9, 1e-7)  # slot is the parameter
    raises(ValueError, "rmsprop_update: arrays written in place must not share memory (parameter 0 and grad 0)",
           kernels.rmsprop_update, w, w, v, 0.1, 0.9, 1e-7)
    raises(ValueError, "must not share memory (parameter 1 and an array of parameter 0)",
           kernels.sgd_update, [w, w], [g, g], [v, np.zeros(3, F32)], 0.1, 0.9)  # a parameter twice
    w1 = f32(3)
    raises(ValueError, "must not share memory (parameter 1 and an array of parameter 0)",
           kernels.adam_update, [w, w1], [g, g], [v, np.zeros(3, F32)], [np.zeros(3, F32), v], 0.1, 0.9, 0.999, 1e-7, 1)
    buf = np.zeros(6, F32)
    raises(ValueError, "must not share memory",
           kernels.rmsprop_update, [buf[:4], buf[3:]], [f32(4), f32(3)], [np.zeros(4, F32), np.zeros(3, F32)], 0.1, 0.9, 1e-7)


def test_optimizer_grad_aliasing_another_parameter_is_rejected():
    w0, w1 = f32(3), f32(3)
    with pytest.raises(ValueError, match="must not share memory"):
        kernels.sgd_update([w0, w1], [w1, f32(3)], None, 0.1)


# ================================================================ NaN / inf inputs

def _sprinkle(a, rng, values=(np.nan, np.inf, -np.inf)):
    a = a.copy()
    flat = a.reshape(-1)
    idx = rng.choice(flat.size, size=min(len(values) * 2, flat.size), replace=False)
    flat[idx] = np.resize(np.array(values, F32), idx.size)
    return a


def test_nan_inf_inputs_give_the_reference_ieee_results():
    rng = np.random.default_rng(2)
    a, b = _sprinkle(f32(7, 19), rng), _sprinkle(f32(19, 33), rng)
    check_kernel("gemm", a, b, rtol=1e-4, atol=1e-4)
    check_kernel("gemm", a, b, trans_a=False, bias=_sprinkle(f32(33), rng), relu=True, rtol=1e-4, atol=1e-4)
    x = _sprinkle(f32(9, 70), rng)
    check_kernel("add_bias", x, _sprinkle(f32(70), rng), bitwise=True)
    check_kernel("bias_grad", x, rtol=1e-5, atol=1e-5)
    check_kernel("relu_forward", x, bitwise=True)
    check_kernel("relu_backward", x, _sprinkle(f32(9, 70), rng), bitwise=True)
    check_kernel("relu_backward_bias_grad", x, _sprinkle(f32(9, 70), rng), rtol=1e-5, atol=1e-5)
    labels = rng.integers(0, 70, 9)
    got = check_kernel("softmax_xent_forward", x, labels, rtol=1e-5, atol=1e-5)
    assert np.isnan(got[0])  # a NaN logit makes the mean loss NaN, in both
    check_kernel("softmax_xent_backward", np.abs(x), labels, 0.5, rtol=1e-5, atol=1e-6)
    check_kernel("rmsprop_update", f32(20), _sprinkle(f32(20), rng), np.zeros(20, F32), 0.1, 0.9, 1e-7)
    check_kernel("adam_update", f32(20), _sprinkle(f32(20), rng), np.zeros(20, F32), np.zeros(20, F32),
                 0.1, 0.9, 0.999, 1e-7, 1, rtol=1e-4)
    check_kernel("sgd_update", f32(20), _sprinkle(f32(20), rng), np.zeros(20, F32), 0.1, 0.9)


def test_inf_logits_golden():
    # one +inf logit: softmax is NaN (inf - inf), in both; no crash
    for backend in (kernels, reference):
        with np.errstate(all="ignore"):
            loss, probs, row_loss = backend.softmax_xent_forward(np.array([[np.inf, 0.0]], F32), np.array([0]))
        assert np.isnan(loss) and np.isnan(probs).all()


def test_gemm_alpha_zero_with_nan_matches_reference():
    a = np.array([[np.inf, 1.0], [np.nan, 2.0]], F32)
    check_kernel("gemm", a, f32(2, 3), alpha=0.0)


# ================================================================ labels out of range

@pytest.mark.parametrize("bad,dtype", [(-1, np.int64), (-1, np.int32), (10, np.int64), (10, np.uint8),
                                       (2**62, np.int64), (-2**63, np.int64), (2**64 - 1, np.uint64),
                                       (2**31 - 1, np.int32)])
def test_out_of_range_labels_name_the_value(bad, dtype):
    logits = f32(4, 10)
    labels = np.array([0, 9, bad, 3], dtype)
    msg = f"expected class indices in [0, 10), received {bad}"
    raises(ValueError, f"softmax_xent_forward: {msg}", kernels.softmax_xent_forward, logits, labels)
    raises(ValueError, f"softmax_xent_backward: {msg}", kernels.softmax_xent_backward, logits, labels, 1.0)
    raises(ValueError, msg, mg.softmax_cross_entropy, mg.Tensor(logits, requires_grad=True), labels)


# ================================================================ empty batches

@pytest.mark.parametrize("m,k,n", [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)])
def test_gemm_with_empty_dimensions(m, k, n):
    a, b = f32(m, k), f32(k, n)
    got = kernels.gemm(a, b)
    assert got.shape == (m, n)
    np.testing.assert_array_equal(got, np.zeros((m, n)))
    np.testing.assert_array_equal(kernels.gemm(a.T.copy(), b.T.copy(), trans_a=True, trans_b=True), np.zeros((m, n)))
    bias, out = f32(n), f32(m, n)
    want = np.maximum(2.0 * out + bias, 0)
    got = kernels.gemm(a, b, out.copy(), beta=2.0, bias=bias, relu=True)  # k = 0: beta*out + bias
    if k == 0:
        np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got, reference.gemm(a, b, out.copy(), beta=2.0, bias=bias, relu=True), rtol=1e-6)


def test_empty_batch_through_the_kernels_and_ops():
    logits = np.zeros((0, 10), F32)
    for target in (np.zeros(0, np.int64), np.zeros((0, 10), F32)):
        loss, probs, row_loss = kernels.softmax_xent_forward(logits, target)
        assert loss == 0.0 and probs.shape == (0, 10) and row_loss.shape == (0,)
        assert kernels.softmax_xent_backward(probs, target, 1.0).shape == (0, 10)
        assert reference.softmax_xent_forward(logits, target)[0] == 0.0
    z = mg.Tensor(logits, requires_grad=True)
    loss = mg.softmax_cross_entropy(z, np.zeros(0, np.int64))
    assert loss.item() == 0.0
    loss.backward()
    assert z.grad.shape == (0, 10)
    # a dense layer on an empty batch: empty output, zero weight and bias gradients
    x = mg.Tensor(np.zeros((0, 5), F32))
    w, b = mg.Tensor(f32(5, 3), requires_grad=True), mg.Tensor(f32(3), requires_grad=True)
    y = mg.dense(x, w, b, "relu")
    assert y.shape == (0, 3)
    y.sum().backward()
    np.testing.assert_array_equal(w.grad, np.zeros((5, 3)))
    np.testing.assert_array_equal(b.grad, np.zeros(3))
    assert kernels.bias_grad(np.zeros((0, 4), F32)).tolist() == [0, 0, 0, 0]
    assert kernels.relu_forward(np.zeros(0, F32)).shape == (0,)


# ================================================================ optimizer argument errors

def test_optimizer_argument_errors_leave_everything_untouched():
    w = [f32(3), f32(2)]
    g = [f32(3), f32(2)]
    v = [np.zeros(3, F32), np.zeros(2, F32)]
    saved = [x.copy() for x in w + v]
    raises(ValueError, "rmsprop_update: expected as many grads as parameters (2), received 1",
           kernels.rmsprop_update, w, g[:1], v, 0.1, 0.9, 1e-7)
    raises(ValueError, "rmsprop_update: expected as many slot 1 as parameters (2), received 3",
           kernels.rmsprop_update, w, g, v + [np.zeros(1, F32)], 0.1, 0.9, 1e-7)
    raises(ValueError, "adam_update: expected as many slot 2 as parameters (2), received 1",
           kernels.adam_update, w, g, v, v[:1], 0.1, 0.9, 0.999, 1e-7, 1)
    # the second parameter is bad: the first must not have been updated
    raises(ValueError, "sgd_update: expected grad 1 of shape (2,) (like its parameter), received (3,)",
           kernels.sgd_update, w, [g[0], f32(3)], None, 0.1)
    raises(ValueError, "rmsprop_update: expected slot 1 of parameter 1 of shape (2,), received (3,)",
           kernels.rmsprop_update, w, g, [v[0], np.zeros(3, F32)], 0.1, 0.9, 1e-7)
    raises(TypeError, "sgd_update: expected slot 1 of parameter 0 to be a float32 array of shape (3,), received None",
           kernels.sgd_update, w[0], g[0], None, 0.1, 0.9)  # momentum needs a velocity
    raises(TypeError, "sgd_update: expected slot 1 of parameter 1 to be a float32 array of shape (2,), received None",
           kernels.sgd_update, w, g, [v[0], None], 0.1, 0.9)
    raises(ValueError, "sgd_update: expected as many slot 1 as parameters (2), received 1",
           kernels.sgd_update, w, g, None, 0.1, 0.9)
    for step in (0, -1, 1.5, True, "1", 2**62):
        raises(ValueError, f"adam_update: expected step to be an integer >= 1, received {step!r}",
               kernels.adam_update, w, g, v, [np.zeros(3, F32), np.zeros(2, F32)], 0.1, 0.9, 0.999, 1e-7, step)
    for a, b in zip(w + v, saved):
        np.testing.assert_array_equal(a, b)


# ================================================================ crash-prone cases, in a subprocess

CRASH_CASES = {
    "gemm K mismatch": ("kernels.gemm(a(128, 784), a(512, 10))",
                        "ValueError: gemm: expected (N, K) @ (K, M), received (128, 784) @ (512, 10)"),
    "gemm trans K mismatch": ("kernels.gemm(a(784, 128), a(10, 512), trans_a=True, trans_b=True)",
                              "ValueError: gemm: expected (K, N).T @ (M, K).T, received (784, 128).T @ (10, 512).T"),
    "gemm out too small": ("kernels.gemm(a(64, 64), a(64, 64), a(8, 8))",
                           "ValueError: gemm: expected out of shape (64, 64), received (8, 8)"),
    "gemm bias too short": ("kernels.gemm(a(64, 64), a(64, 512), bias=a(3))",
                            "ValueError: gemm: expected bias of shape (512,), received (3,)"),
    "gemm empty vs mismatched": ("kernels.gemm(a(0, 5), a(4, 3))",
                                 "ValueError: gemm: expected (N, K) @ (K, M), received (0, 5) @ (4, 3)"),
    "add_bias b too long": ("kernels.add_bias(a(100, 10), a(100_000))",
                            "ValueError: add_bias: expected (N, C) + (C,), received (100, 10) + (100000,)"),
    "bias_grad out too small": ("kernels.bias_grad(a(1000, 1000), a(1))",
                                "ValueError: bias_grad: expected out of shape (1000,), received (1,)"),
    "relu_backward dy short": ("kernels.relu_backward(a(100_000), a(10))",
                               "ValueError: relu_backward: expected y and dy of the same shape, received (100000,) and (10,)"),
    "relu_backward_bias_grad db short": ("kernels.relu_backward_bias_grad(a(100, 1000), a(100, 1000), None, a(1))",
                                         "ValueError: relu_backward_bias_grad: expected db_out of shape (1000,), received (1,)"),
    "huge int64 label": ("kernels.softmax_xent_forward(a(4, 10), np.array([0, 1, 2**62, 3]))",
                         "ValueError: softmax_xent_forward: expected class indices in [0, 10), received 4611686018427387904"),
    "huge uint64 label": ("kernels.softmax_xent_backward(a(2, 10), np.array([2**64 - 1, 0], np.uint64), 1.0)",
                          "ValueError: softmax_xent_backward: expected class indices in [0, 10), received 18446744073709551615"),
    "negative int32 label": ("mg.softmax_cross_entropy(mg.Tensor(a(3, 10)), np.array([0, -7, 1], np.int32))",
                             "ValueError: softmax_cross_entropy: expected class indices in [0, 10), received -7"),
    "labels too short": ("kernels.softmax_xent_backward(a(1000, 10), np.zeros(3, np.int64), 1.0)",
                         "ValueError: softmax_xent_backward: expected labels of shape (1000,), received (3,)"),
    "row_loss_out too small": ("kernels.softmax_xent_forward(a(1000, 10), np.zeros(1000, np.int64), None, a(1))",
                               "ValueError: softmax_xent_forward: expected row_loss_out of shape (1000,), received (1,)"),
    "rmsprop slot too small": ("kernels.rmsprop_update(a(100_000), a(100_000), a(10), 0.1, 0.9, 1e-7)",
                               "ValueError: rmsprop_update: expected slot 1 of parameter 0 of shape (100000,), received (10,)"),
    "adam grad too large": ("kernels.adam_update(a(10), a(100_000), a(10), a(10), 0.1, 0.9, 0.999, 1e-7, 1)",
                            "ValueError: adam_update: expected grad 0 of shape (10,) (like its parameter), received (100000,)"),
    "sgd mismatched lists": ("kernels.sgd_update([a(10), a(20)], [a(10)], None, 0.1)",
                             "ValueError: sgd_update: expected as many grads as parameters (2), received 1"),
    "dense wrong kernel": ("mg.dense(mg.Tensor(a(128, 784)), mg.Tensor(a(512, 10)), mg.Tensor(a(10)), 'relu')",
                           "ValueError: dense: expected x (N, K) and kernel (K, M), received (128, 784) and (512, 10)"),
}

SNIPPET = """
import numpy as np
import minigrad as mg
from minigrad import kernels
rng = np.random.default_rng(0)
a = lambda *s: rng.random(s).astype(np.float32)
try:
    {call}
except Exception as exc:
    print(f"{{type(exc).__name__}}: {{exc}}")
else:
    print("no error")
"""


@pytest.mark.parametrize("case", sorted(CRASH_CASES))
def test_crash_prone_calls_raise_in_a_subprocess(case):
    call, expected = CRASH_CASES[case]
    assert_snippet_ok(SNIPPET.format(call=call), expected)


def test_relu_backward_into_read_only_memmap_does_not_crash(tmp_path):
    path = tmp_path / "grad.f32"
    np.arange(16, dtype=F32).tofile(path)
    proc = run_python(f"""
        import numpy as np
        from minigrad import kernels
        m = np.memmap({str(path)!r}, dtype=np.float32, mode="r")
        try:
            kernels.relu_backward(np.ones(16, np.float32), m, out=m)
        except ValueError as exc:
            print("ValueError:", exc)
        """)
    assert proc.returncode == 0, f"exit status {proc.returncode} (-11 = SIGSEGV)\n{proc.stderr}"
    assert "ValueError: relu_backward" in proc.stdout


def _misaligned_f32(n):
    """A C-contiguous float32 array whose data starts one byte past alignment."""
    return np.zeros(n * 4 + 1, np.uint8)[1:].view(np.float32)


def test_misaligned_output_is_rejected_and_misaligned_input_is_copied():
    # Found by the sanitizer stage: a misaligned float load/store is undefined
    # behaviour in C even where x86 tolerates it, so C only ever sees aligned data.
    out = _misaligned_f32(3)
    assert out.flags.c_contiguous and not out.flags.aligned
    raises(ValueError, "bias_grad: expected out to be writeable, C-contiguous and aligned (it is written "
           "in place), received a misaligned array", kernels.bias_grad, np.ones((4, 3), F32), out)
    x = _misaligned_f32(12).reshape(4, 3)
    x[:] = np.arange(12, dtype=F32).reshape(4, 3)
    np.testing.assert_array_equal(kernels.bias_grad(x), [18.0, 22.0, 26.0])
    labels = np.zeros(3 * 8 + 1, np.uint8)[1:].view(np.int64)
    labels[:] = [0, 1, 2]
    loss, probs, _ = kernels.softmax_xent_forward(np.zeros((3, 3), F32), labels)
    assert abs(loss - np.log(3.0)) < 1e-6


def test_optimizer_table_cache_keys_on_the_grouping_of_arrays():
    # Found by fuzzing: the same arrays regrouped (w, g as two parameters with no
    # gradients) once hit the cached one-parameter table and overflowed it in C.
    w, g = np.ones(3, F32), np.ones(3, F32)
    kernels.sgd_update(w, g, None, 0.01)
    raises(ValueError, "sgd_update: expected as many grads as parameters (2), received 0",
           kernels.sgd_update, [w, g], [], None, 0.01)



def test_gemm_flags_must_be_bools():
    a = np.ones((2, 2), F32)
    raises(TypeError, "gemm: expected trans_a to be a bool, received str", kernels.gemm, a, a, trans_a="yes")
    raises(TypeError, "gemm: expected relu to be a bool, received ndarray", kernels.gemm, a, a,
           relu=np.array([True, False]))
    np.testing.assert_array_equal(kernels.gemm(a, a, trans_b=None), np.full((2, 2), 2.0, F32))


def test_out_overlapping_a_non_contiguous_input_is_refused():
    # Found by fuzzing: the overlap check used to see only the contiguous copy of
    # the input, so the caller's array was silently overwritten where out lay.
    base = np.arange(16, dtype=F32).reshape(4, 4)
    before = base.copy()
    a = base[:, ::2]                                  # non-contiguous: copied before C runs
    out = base.reshape(-1)[:8].reshape(4, 2)          # contiguous, overlaps a's memory
    raises(ValueError, "gemm: out must not share memory with a", kernels.gemm, a, np.ones((2, 2), F32), out)
    raises(ValueError, "relu_forward: out must not share memory with x", kernels.relu_forward, base.T,
           base.reshape(4, 4))
    np.testing.assert_array_equal(base, before)


@pytest.mark.parametrize("shape", [(3, 0), (0,)])
def test_softmax_needs_values_along_the_last_axis(shape):
    raises(ValueError, f"softmax: expected at least one value along the last axis, received shape {shape}",
           mg.softmax, mg.Tensor(np.zeros(shape, F32)))
