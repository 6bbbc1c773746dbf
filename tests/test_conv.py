"""Convolution and max pooling: the C kernels against hand-computed numbers and their
NumPy twins, gradients of the ops, thread invariance, bad input, tape replay, and
(when PyTorch is installed) PyTorch as an independent oracle."""
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minigrad as mg
from helpers import EPS32, F32, assert_bitwise_equal, check_kernel, rand, run_both
from minigrad import kernels, reference
from minigrad.kernels import tape
from minigrad.ops import Conv2D, MaxPool2D, conv2d, max_pool2d

HYP = dict(deadline=None, max_examples=60,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def raises(exc, text, fn, *args, **kwargs):
    with pytest.raises(exc, match=re.escape(text)):
        fn(*args, **kwargs)


def conv_tol(x, w, relu_free=True):
    """(rtol, atol) for float32 conv sums of K = kh*kw*cin terms against float64:
    like helpers.gemm_tol, the rounding error grows like sqrt(K) * max|x| * max|w|."""
    k = w.shape[0] * w.shape[1] * w.shape[2]
    amax = float(np.max(np.abs(x))) if x.size else 0.0
    bmax = float(np.max(np.abs(w))) if w.size else 0.0
    return 16 * EPS32 * np.sqrt(k), 16 * EPS32 * np.sqrt(k) * amax * bmax + 1e-30


def backward_input_tol(dy, w):
    """dx sums up to kh*kw dcols values, each a cout-term dot product."""
    kh, kw, _, cout = w.shape
    amax = float(np.max(np.abs(dy))) if dy.size else 0.0
    bmax = float(np.max(np.abs(w))) if w.size else 0.0
    return 16 * EPS32 * np.sqrt(cout * kh * kw), 16 * EPS32 * np.sqrt(cout) * kh * kw * amax * bmax + 1e-30


def pool_backward_tol(dy, pool, strides):
    """An element of dx sums dy over at most ceil(ph/sh) * ceil(pw/sw) windows,
    in float32 (the twin in float64)."""
    ph, pw = (pool, pool) if np.isscalar(pool) else pool
    sh, sw = (ph, pw) if strides is None else ((strides, strides) if np.isscalar(strides) else strides)
    terms = -(-ph // sh) * -(-pw // sw)
    return dict(rtol=4 * EPS32 * terms, atol=4 * EPS32 * terms * float(np.abs(dy).max(initial=0)) + 1e-30)


def weight_grad_tol(x, dy):
    """Each dW element sums N*OH*OW products of an x value and a dy value, in
    float32 partial sums per block of images (the twin in float64)."""
    rows = dy.size // dy.shape[-1] if dy.size else 0
    xmax = float(np.abs(x).max(initial=0)) if x.size else 0.0
    root = np.sqrt(max(rows, 1))
    return 16 * EPS32 * root, 16 * EPS32 * root * xmax * float(np.abs(dy).max(initial=0)) + 1e-30


def arr(rows):
    return np.array(rows, dtype=F32)


# ============================================================== geometry and golden values

@pytest.mark.parametrize("n,k,s,padding,expected", [
    (28, 3, 1, "valid", (26, 0)),
    (26, 2, 2, "valid", (13, 0)),
    (13, 2, 2, "valid", (6, 0)),     # the last row/column is dropped
    (2, 3, 1, "valid", (0, 0)),      # does not fit
    (28, 3, 1, "same", (28, 1)),     # total 2: 1 before, 1 after
    (28, 4, 1, "same", (28, 1)),     # total 3 (odd): 1 before, 2 after
    (5, 2, 2, "same", (3, 0)),       # total 1: 0 before, 1 after
    (6, 3, 2, "same", (3, 0)),       # total 1
    (7, 3, 2, "same", (4, 1)),       # total 2
    (4, 1, 3, "same", (2, 0)),       # total 0
    (3, 7, 1, "same", (3, 3)),       # kernel larger than the input
])
def test_conv_output_size(backend, n, k, s, padding, expected):
    assert backend.conv_output_size(n, k, s, padding) == expected


def test_conv2d_forward_golden(backend):
    x = np.arange(16, dtype=F32).reshape(1, 4, 4, 1)
    w = np.ones((2, 2, 1, 1), F32)
    y = backend.conv2d_forward(x, w, strides=2)
    np.testing.assert_array_equal(y[0, :, :, 0], [[10, 18], [42, 50]])
    # 'same' with a 2x2 kernel pads one row/column after (total 1, 0 before)
    y = backend.conv2d_forward(x, w, np.array([-20], F32), padding="same", relu=True)
    expected = np.array([[10, 14, 18, 10], [26, 30, 34, 18], [42, 46, 50, 26], [25, 27, 29, 15]], F32) - 20
    np.testing.assert_array_equal(y[0, :, :, 0], np.maximum(expected, 0))


def test_conv2d_channels_golden(backend):
    # 1x1 kernel: a per-pixel matrix product over channels, plus bias
    x = np.arange(12, dtype=F32).reshape(1, 2, 2, 3)
    w = arr([[1, 0], [0, 1], [1, 1]]).reshape(1, 1, 3, 2)
    y = backend.conv2d_forward(x, w, arr([0.5, -0.5]))
    np.testing.assert_array_equal(y.reshape(4, 2), x.reshape(4, 3) @ w.reshape(3, 2) + arr([0.5, -0.5]))


def test_conv2d_backward_golden(backend):
    x_shape = (1, 3, 3, 1)
    w = arr([[1, 2], [3, 4]]).reshape(2, 2, 1, 1)
    dy = np.ones((1, 2, 2, 1), F32)
    dx = backend.conv2d_backward_input(dy, w, x_shape)
    # each input pixel collects the kernel taps that read it
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1, 3, 2], [4, 10, 6], [3, 7, 4]])
    x = np.arange(9, dtype=F32).reshape(x_shape)
    dw = backend.conv2d_backward_weight(x, dy, w.shape)
    np.testing.assert_array_equal(dw[:, :, 0, 0], [[8, 12], [20, 24]])
    # strided, 'same': tap (0, 0) of output (0, 0) reads the padding, so only three
    # outputs reach x through it
    dw = backend.conv2d_backward_weight(x, dy, w.shape, strides=2, padding="same")
    # out 2x2 from 3x3 at stride 2: total pad 1, 0 before: taps read x[2oy+ky, 2ox+kx]
    np.testing.assert_array_equal(dw[:, :, 0, 0], [[0 + 2 + 6 + 8, 1 + 7], [3 + 5, 4]])


def test_max_pool_golden_ties_and_padding(backend):
    x = arr([[1, 3, 3, 0],
             [3, 2, -1, -2],
             [0, 0, 5, 5],
             [0, 0, 5, 5]]).reshape(1, 4, 4, 1)
    y, argmax = backend.max_pool2d_forward(x, 2)
    np.testing.assert_array_equal(y[0, :, :, 0], [[3, 3], [0, 5]])
    # ties: the first maximum in row-major order
    np.testing.assert_array_equal(argmax.ravel(), [1, 2, 8, 10])
    dx = backend.max_pool2d_backward(arr([1, 2, 3, 4]).reshape(1, 2, 2, 1), argmax, x.shape, 2)
    np.testing.assert_array_equal(dx.ravel(), [0, 1, 2, 0, 0, 0, 0, 0, 3, 0, 4, 0, 0, 0, 0, 0])
    # 'same' padding never wins, even over negative values
    neg = -np.arange(1, 10, dtype=F32).reshape(1, 3, 3, 1)
    y, argmax = backend.max_pool2d_forward(neg, 2, padding="same")
    np.testing.assert_array_equal(y[0, :, :, 0], [[-1, -3], [-7, -9]])
    np.testing.assert_array_equal(argmax.ravel(), [0, 2, 6, 8])


def test_max_pool_overlapping_windows_sum(backend):
    # 3x3 windows, stride 1: the single maximum wins all four windows
    x = np.zeros((1, 4, 4, 1), F32)
    x[0, 1, 2, 0] = 1.0
    y, argmax = backend.max_pool2d_forward(x, 3, 1)
    np.testing.assert_array_equal(argmax.ravel(), [6, 6, 6, 6])
    dx = backend.max_pool2d_backward(arr([1, 2, 4, 8]).reshape(1, 2, 2, 1), argmax, x.shape, 3, 1)
    assert dx[0, 1, 2, 0] == 15 and np.count_nonzero(dx) == 1


def test_max_pool_nan_propagates_first_nan_wins(backend):
    x = arr([[1, np.nan], [np.inf, np.nan]]).reshape(1, 2, 2, 1)
    y, argmax = backend.max_pool2d_forward(x, 2)
    assert np.isnan(y.ravel()[0]) and argmax.ravel().tolist() == [1]
    x = arr([[np.nan, 7], [9, 8]]).reshape(1, 2, 2, 1)
    y, argmax = backend.max_pool2d_forward(x, 2)
    assert np.isnan(y.ravel()[0]) and argmax.ravel().tolist() == [0]
    x = arr([[-np.inf, -np.inf], [-np.inf, -np.inf]]).reshape(1, 2, 2, 1)
    y, argmax = backend.max_pool2d_forward(x, 2)
    assert y.ravel().tolist() == [-np.inf] and argmax.ravel().tolist() == [0]


# ============================================================== C against the NumPy twins

@pytest.mark.parametrize("name", ["conv_output_size", "conv2d_forward", "conv2d_backward_input",
                                  "conv2d_backward_weight", "conv2d_relu_backward_params", "conv2d_relu_backward",
                                  "max_pool2d_forward", "max_pool2d_backward"])
def test_twin_has_the_same_signature(name):
    import inspect
    assert name in kernels.conv.__all__
    assert inspect.signature(getattr(kernels, name)) == inspect.signature(getattr(reference, name))


CASES = [
    # (n, h, w, cin, kh, kw, cout, strides, padding)
    (1, 5, 5, 1, 3, 3, 1, (1, 1), "valid"),
    (2, 7, 6, 3, 3, 2, 5, (1, 1), "valid"),
    (2, 7, 6, 3, 3, 2, 5, (2, 3), "same"),
    (1, 28, 28, 1, 3, 3, 32, (1, 1), "valid"),   # the book's first layer, batch 1
    (3, 13, 13, 32, 3, 3, 64, (1, 1), "valid"),  # its second layer
    (2, 9, 8, 4, 4, 4, 3, (1, 1), "same"),       # odd total padding (3): 1 before, 2 after
    (2, 5, 5, 2, 4, 2, 3, (2, 2), "same"),
    (1, 3, 2, 2, 5, 4, 2, (1, 1), "same"),       # kernel larger than the image
    (2, 6, 6, 17, 1, 1, 19, (2, 1), "valid"),
    (1, 11, 10, 3, 3, 3, 7, (3, 2), "valid"),    # strides that skip the last rows
    # k = kh*kw*cin <= 16 with cout a multiple of 8: the direct small-k kernels,
    # with 1..5 groups of 8 columns and an odd k (a single last tap)
    (3, 9, 9, 1, 3, 3, 8, (1, 1), "same"),
    (2, 10, 7, 1, 4, 4, 24, (2, 1), "valid"),
    (2, 8, 8, 2, 1, 2, 40, (1, 1), "same"),
    (40, 12, 12, 1, 3, 3, 16, (1, 1), "valid"),  # several row chunks in the weight gradient
]


def _conv_data(rng, n, h, w, cin, kh, kw, cout):
    return rand(rng, n, h, w, cin), rand(rng, kh, kw, cin, cout, scale=0.5), rand(rng, cout, scale=0.1)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_conv2d_matches_twin(rng, case, relu):
    n, h, w_, cin, kh, kw, cout, strides, padding = case
    x, w, b = _conv_data(rng, n, h, w_, cin, kh, kw, cout)
    rtol, atol = conv_tol(x, w)
    got = check_kernel("conv2d_forward", x, w, b, strides, padding, relu, rtol=rtol, atol=atol)
    y = got[0]
    dy = rand(rng, *y.shape)
    rtol, atol = backward_input_tol(dy, w)
    check_kernel("conv2d_backward_input", dy, w, x.shape, strides, padding, rtol=rtol, atol=atol)
    rtol, atol = weight_grad_tol(x, dy)
    check_kernel("conv2d_backward_weight", x, dy, w.shape, strides, padding, rtol=rtol, atol=atol)
    if relu:  # the fused relu backward (y masks dy): parameters only, and everything
        atol_b = atol + 16 * EPS32 * np.sqrt(dy.size) * float(np.abs(dy).max())
        check_kernel("conv2d_relu_backward_params", x, y, dy, w.shape, strides, padding, rtol=rtol, atol=atol_b)
        got, want = run_both("conv2d_relu_backward", x, y, dy, w, strides, padding)
        np.testing.assert_allclose(got[0], want[0], *backward_input_tol(dy, w), err_msg="dx")
        np.testing.assert_allclose(got[1], want[1], rtol, atol_b, err_msg="dw")
        np.testing.assert_allclose(got[2], want[2], rtol, atol_b, err_msg="db")


POOLS = [
    # (n, h, w, c, pool, strides, padding)
    (1, 4, 4, 1, (2, 2), None, "valid"),
    (2, 26, 26, 32, (2, 2), None, "valid"),   # the book's first pooling
    (2, 11, 11, 64, (2, 2), None, "valid"),   # odd size: last row and column dropped
    (2, 11, 11, 3, (2, 2), None, "same"),     # odd size: padded after
    (1, 7, 9, 5, (3, 3), (2, 2), "same"),     # overlapping windows, padded both sides
    (2, 6, 5, 2, (3, 2), (1, 1), "same"),
    (1, 5, 5, 1, (2, 2), (3, 3), "valid"),    # gaps: some inputs in no window
    (1, 3, 3, 4, (4, 4), (1, 1), "same"),     # window larger than the image
]


@pytest.mark.parametrize("case", POOLS, ids=[str(c) for c in POOLS])
def test_max_pool_matches_twin(rng, case):
    n, h, w, c, pool, strides, padding = case
    # few distinct values: many ties, which must go to the first maximum
    x = rng.integers(-3, 4, (n, h, w, c)).astype(F32)
    y, argmax = check_kernel("max_pool2d_forward", x, pool, strides, padding, rtol=0, atol=0)[:2]
    assert argmax.dtype == np.int64
    dy = rand(rng, *y.shape)
    check_kernel("max_pool2d_backward", dy, argmax, x.shape, pool, strides, padding,
                 **pool_backward_tol(dy, pool, strides))


@st.composite
def conv_geometry(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    padding = draw(st.sampled_from(["valid", "same"]))
    low_h, low_w = (kh, kw) if padding == "valid" else (1, 1)
    h, w = draw(st.integers(low_h, 12)), draw(st.integers(low_w, 12))
    return (draw(st.integers(1, 3)), h, w, draw(st.integers(1, 9)), kh, kw, draw(st.integers(1, 20)),
            (draw(st.integers(1, 4)), draw(st.integers(1, 4))), padding)


@settings(**HYP)
@given(conv_geometry(), st.booleans(), st.integers(0, 2**32 - 1))
def test_conv2d_matches_twin_hypothesis(case, relu, seed):
    rng = np.random.default_rng(seed)
    n, h, w_, cin, kh, kw, cout, strides, padding = case
    x, w, b = _conv_data(rng, n, h, w_, cin, kh, kw, cout)
    rtol, atol = conv_tol(x, w)
    y = check_kernel("conv2d_forward", x, w, b, strides, padding, relu, rtol=rtol, atol=atol)[0]
    dy = rand(rng, *y.shape)
    rtol, atol = backward_input_tol(dy, w)
    check_kernel("conv2d_backward_input", dy, w, x.shape, strides, padding, rtol=rtol, atol=atol)
    rtol, atol = weight_grad_tol(x, dy)
    check_kernel("conv2d_backward_weight", x, dy, w.shape, strides, padding, rtol=rtol, atol=atol)


@settings(**HYP)
@given(st.integers(1, 3), st.integers(1, 10), st.integers(1, 10), st.integers(1, 9),
       st.tuples(st.integers(1, 4), st.integers(1, 4)),
       st.one_of(st.none(), st.tuples(st.integers(1, 4), st.integers(1, 4))),
       st.sampled_from(["valid", "same"]), st.integers(0, 2**32 - 1))
def test_max_pool_matches_twin_hypothesis(n, h, w, c, pool, strides, padding, seed):
    if padding == "valid" and (h < pool[0] or w < pool[1]):
        h, w = max(h, pool[0]), max(w, pool[1])
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, (n, h, w, c)).astype(F32)
    y, argmax = check_kernel("max_pool2d_forward", x, pool, strides, padding, rtol=0, atol=0)[:2]
    dy = rand(rng, *y.shape)
    check_kernel("max_pool2d_backward", dy, argmax, x.shape, pool, strides, padding,
                 **pool_backward_tol(dy, pool, strides))


def test_max_pool_backward_ignores_foreign_argmax(rng):
    # argmax entries that name no element of their own window (another image,
    # another channel, outside x) add nothing, in C as in the twin, and never crash
    x = rand(rng, 2, 4, 4, 3)
    y, argmax = kernels.max_pool2d_forward(x, 2)
    bad = argmax.copy()
    bad.ravel()[::3] = np.array([-1, 10**12, 5, 2**62, 95])[np.arange(bad.size)[::3] % 5]
    dy = rand(rng, *y.shape)
    got, want = kernels.max_pool2d_backward(dy, bad, x.shape), reference.max_pool2d_backward(dy, bad, x.shape)
    np.testing.assert_array_equal(got, want)
    assert np.count_nonzero(got) < np.count_nonzero(kernels.max_pool2d_backward(dy, argmax, x.shape))


def test_empty_batch(backend):
    x, w = np.zeros((0, 5, 5, 2), F32), np.ones((3, 3, 2, 4), F32)
    y = backend.conv2d_forward(x, w, padding="same")
    assert y.shape == (0, 5, 5, 4)
    assert backend.conv2d_backward_input(y, w, x.shape, padding="same").shape == x.shape
    np.testing.assert_array_equal(backend.conv2d_backward_weight(x, y, w.shape, padding="same"), np.zeros(w.shape))
    dw, db = backend.conv2d_relu_backward_params(x, y, y, w.shape, padding="same")
    np.testing.assert_array_equal(dw, np.zeros(w.shape))
    np.testing.assert_array_equal(db, np.zeros(4))
    p, argmax = backend.max_pool2d_forward(x, 2)
    assert p.shape == argmax.shape == (0, 2, 2, 2)


def test_outputs_written_in_place():
    rng = np.random.default_rng(3)
    x, w, b = _conv_data(rng, 2, 6, 6, 3, 3, 3, 4)
    out = np.full((2, 4, 4, 4), np.nan, F32)
    y = kernels.conv2d_forward(x, w, b, out=out)
    assert y is out
    assert_bitwise_equal(out, kernels.conv2d_forward(x, w, b), "conv2d_forward out=")
    dx_out = np.full(x.shape, np.nan, F32)
    assert kernels.conv2d_backward_input(y, w, x.shape, out=dx_out) is dx_out
    dw_out = np.full(w.shape, np.nan, F32)
    assert kernels.conv2d_backward_weight(x, y, w.shape, out=dw_out) is dw_out
    db_out = np.full(4, np.nan, F32)
    assert kernels.conv2d_relu_backward_params(x, y, y, w.shape, out=dw_out, db_out=db_out) == (dw_out, db_out)
    p_out, a_out = np.empty((2, 3, 3, 3), F32), np.empty((2, 3, 3, 3), np.int64)
    p, a = kernels.max_pool2d_forward(x, 2, out=p_out, argmax_out=a_out)
    assert p is p_out and a is a_out
    g_out = np.full(x.shape, np.nan, F32)
    assert kernels.max_pool2d_backward(p, a, x.shape, out=g_out) is g_out
    assert not np.isnan(g_out).any()


def test_portable_gemm_kernel_paths():
    # with the portable GEMM kernel (what CPUs without AVX2 run) the small-k
    # kernels step aside and every product goes through mg_gemm: same answers
    from helpers import assert_snippet_ok
    assert_snippet_ok("""
        import numpy as np
        from minigrad import kernels, reference
        assert kernels.gemm_kernel_name() == "portable"
        rng = np.random.default_rng(0)
        worst = 0.0
        for shape, wshape in [((3, 12, 12, 1), (3, 3, 1, 16)), ((2, 9, 9, 8), (3, 3, 8, 24))]:
            x = rng.standard_normal(shape).astype(np.float32)
            w = rng.standard_normal(wshape).astype(np.float32)
            b = rng.standard_normal(wshape[3]).astype(np.float32)
            y = kernels.conv2d_forward(x, w, b, relu=True, padding="same")
            dy = rng.standard_normal(y.shape).astype(np.float32)
            got = (y,) + kernels.conv2d_relu_backward(x, y, dy, w, padding="same")
            got += kernels.conv2d_relu_backward_params(x, y, dy, w.shape, padding="same")
            want = (reference.conv2d_forward(x, w, b, relu=True, padding="same"),)
            want += reference.conv2d_relu_backward(x, y, dy, w, padding="same")
            want += reference.conv2d_relu_backward_params(x, y, dy, w.shape, padding="same")
            for g, r in zip(got, want):
                worst = max(worst, float(np.abs(g - r).max() / max(np.abs(r).max(), 1.0)))
        print("worst", worst, "ok" if worst < 1e-5 else "BAD")
    """, "ok", env={"MINIGRAD_GEMM_KERNEL": "portable"})


# ============================================================== gradients of the ops

def _away_from_kinks(rng, shape_x, shape_w, margin, **conv):
    """Inputs for which no pre-activation lies within margin of 0 (a relu kink that
    finite differences would straddle)."""
    for _ in range(200):
        x = rng.standard_normal(shape_x).astype(F32)
        w = (rng.standard_normal(shape_w) * 0.5).astype(F32)
        b = (rng.standard_normal(shape_w[3]) * 0.1).astype(F32)
        z = reference.conv2d_forward(x, w, b, **conv)
        if np.abs(z).min() > margin:
            return x, w, b
    raise AssertionError("no kink-free sample found")


@pytest.mark.parametrize("strides,padding", [((1, 1), "valid"), ((1, 2), "same"), ((2, 2), "same"),
                                             ((2, 1), "valid")])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_conv2d_gradcheck(rng, strides, padding, activation):
    x, w, b = _away_from_kinks(rng, (2, 5, 6, 3), (3, 2, 3, 4), 0.05, strides=strides, padding=padding)
    tx, tw, tb = (mg.Tensor(a, requires_grad=True) for a in (x, w, b))
    assert mg.gradcheck(lambda x, w, b: conv2d(x, w, b, strides, padding, activation), [tx, tw, tb],
                        eps=1e-2, atol=2e-3, rtol=1e-2)


def test_conv2d_gradcheck_without_bias(rng):
    tx = mg.Tensor(rand(rng, 1, 4, 4, 2), requires_grad=True)
    tw = mg.Tensor(rand(rng, 2, 2, 2, 3), requires_grad=True)
    assert mg.gradcheck(lambda x, w: conv2d(x, w, padding="same"), [tx, tw], eps=1e-2, atol=2e-3, rtol=1e-2)


@pytest.mark.parametrize("pool,strides,padding", [(2, None, "valid"), (2, None, "same"), (3, 1, "same"),
                                                  ((2, 3), (1, 2), "valid")])
def test_max_pool_gradcheck(rng, pool, strides, padding):
    # distinct values 0.1 apart: no perturbation of 1e-2 changes a window's winner
    x = (rng.permutation(2 * 5 * 7 * 3).astype(F32) * 0.1).reshape(2, 5, 7, 3)
    tx = mg.Tensor(x, requires_grad=True)
    assert mg.gradcheck(lambda x: max_pool2d(x, pool, strides, padding), [tx], eps=1e-2, atol=1e-3, rtol=1e-2)


def test_conv_net_gradcheck(rng):
    # the book's stack in miniature: conv relu, pool, conv relu
    x = mg.Tensor(rand(rng, 2, 8, 8, 1))
    w1 = mg.Tensor(rand(rng, 3, 3, 1, 4, scale=0.5), requires_grad=True)
    w2 = mg.Tensor(rand(rng, 3, 3, 4, 3, scale=0.5), requires_grad=True)
    b1, b2 = (mg.Tensor(rand(rng, n, scale=0.1), requires_grad=True) for n in (4, 3))

    def net(w1, b1, w2, b2):
        return conv2d(max_pool2d(conv2d(x, w1, b1, activation="relu")), w2, b2, activation="relu")
    assert mg.gradcheck(net, [w1, b1, w2, b2], eps=1e-3, atol=5e-3, rtol=2e-2)


def test_frozen_kernel_keeps_no_input(rng):
    x = mg.Tensor(rand(rng, 2, 6, 6, 3), requires_grad=True)
    w = mg.Tensor(rand(rng, 3, 3, 3, 4))
    y = conv2d(x, w, activation="relu")
    assert y._node.ctx.saved[0] is None  # no weight gradient wanted: x is not kept
    y.sum().backward()
    assert x.grad.shape == x.shape
    w.requires_grad = True
    with mg.no_grad():
        assert conv2d(x, w).requires_grad is False


@pytest.mark.parametrize("cin", [1, 3])  # the small-k kernel, and the chunked GEMM
def test_first_layer_fused_backward_matches_unfused(rng, cin):
    # x needs no gradient: Conv2D takes conv2d_relu_backward_params; the same
    # gradients as masking first (relu_backward_bias_grad) and then the weight GEMM
    x = mg.Tensor(rand(rng, 9, 30, 30, cin))
    w = mg.Tensor(rand(rng, 3, 3, cin, 16, scale=0.5), requires_grad=True)
    b = mg.Tensor(rand(rng, 16, scale=0.1), requires_grad=True)
    y = conv2d(x, w, b, activation="relu")
    dy = rand(rng, *y.shape)
    y.backward(dy)
    dz, db = kernels.relu_backward_bias_grad(y.data.reshape(-1, 16), dy.reshape(-1, 16))
    dw = kernels.conv2d_backward_weight(x.data, dz.reshape(y.shape), w.shape)
    rtol, atol = weight_grad_tol(x.data, dy)
    np.testing.assert_allclose(w.grad, dw, rtol=rtol, atol=atol)
    np.testing.assert_allclose(b.grad, db, rtol=rtol, atol=rtol * float(np.abs(dy).max()) * 4)


def test_input_images_get_no_gradient(rng):
    x = mg.Tensor(rand(rng, 2, 6, 6, 1))
    w = mg.Tensor(rand(rng, 3, 3, 1, 2), requires_grad=True)
    y = conv2d(x, w, activation="relu")
    y.sum().backward()
    assert x.grad is None and w.grad.shape == (3, 3, 1, 2)
    ctx = y._node.ctx
    assert ctx.needs_input_grad == (False, True, False)


def test_op_errors():
    x, w = mg.Tensor(np.zeros((1, 5, 5, 2), F32)), mg.Tensor(np.zeros((3, 3, 2, 4), F32))
    raises(ValueError, "conv2d: expected activation None, 'linear' or 'relu', received 'tanh'",
           conv2d, x, w, activation="tanh")
    raises(ValueError, "conv2d_forward: expected padding 'valid' or 'same', received 'full'",
           conv2d, x, w, padding="full")
    assert Conv2D.name == "conv2d" and MaxPool2D.name == "max_pool2d"


# ============================================================== threads

def _at_thread_counts(compute, what):
    results = []
    for n in (1, 2, 3):
        mg.set_num_threads(n)
        results.append(compute())
    for n, result in zip((2, 3), results[1:]):
        for i, (a, b) in enumerate(zip(results[0], result)):
            if a.dtype == F32:
                assert_bitwise_equal(b, a, f"{what}, output {i}, {n} threads vs 1")
            else:
                np.testing.assert_array_equal(b, a, f"{what}, output {i}, {n} threads vs 1")


@pytest.mark.parametrize("case", [(16, 13, 13, 32, 3, 3, 64, (1, 1), "valid"),
                                  (8, 15, 14, 8, 4, 3, 16, (2, 1), "same"),
                                  (8, 28, 28, 1, 3, 3, 32, (1, 1), "valid")])
def test_conv_thread_invariant(rng, restore_threads, case):
    n, h, w_, cin, kh, kw, cout, strides, padding = case
    x, w, b = _conv_data(rng, n, h, w_, cin, kh, kw, cout)
    x[x < 0.5] = 0.0  # mostly zeros, like MNIST: the GEMM may take its zero-skipping path
    y0 = kernels.conv2d_forward(x, w, b, strides, padding, True)
    dy = rand(rng, *y0.shape)

    def compute():
        y = kernels.conv2d_forward(x, w, b, strides, padding, True)
        dx = kernels.conv2d_backward_input(dy, w, x.shape, strides, padding)
        dw = kernels.conv2d_backward_weight(x, dy, w.shape, strides, padding)
        return ((y, dx, dw) + kernels.conv2d_relu_backward_params(x, y, dy, w.shape, strides, padding)
                + kernels.conv2d_relu_backward(x, y, dy, w, strides, padding))
    _at_thread_counts(compute, f"conv {case}")


@pytest.mark.parametrize("zero_skipping", [True, False])
def test_conv_backward_sparse_gradient(rng, restore_threads, zero_skipping):
    # below a max pooling and a relu, dY is mostly exact zeros: mg_gemm may skip
    # them (dY is op(A) of both backward GEMMs); the results must not change
    # beyond the sign of a zero, and must stay thread-invariant
    x, w, b = _conv_data(rng, 16, 13, 13, 32, 3, 3, 64)
    dy = rand(rng, 16, 11, 11, 64)
    dy[rng.random(dy.shape) < 0.85] = 0.0
    try:
        kernels.set_zero_skipping(zero_skipping)
        calls = kernels.zero_skipping_calls()

        y = kernels.conv2d_forward(x, w, b, relu=True)

        def compute():
            return (kernels.conv2d_backward_input(dy, w, x.shape),
                    kernels.conv2d_backward_weight(x, dy, w.shape)) + kernels.conv2d_relu_backward(x, y, dy, w)
        _at_thread_counts(compute, f"sparse conv backward, zero skipping {zero_skipping}")
        assert (kernels.zero_skipping_calls() > calls) == (zero_skipping and kernels.gemm_kernel_name() == "avx2-fma")
        compute_result = compute()
        dx, dw = compute_result[:2]
    finally:
        kernels.set_zero_skipping(True)
    np.testing.assert_allclose(dx, reference.conv2d_backward_input(dy, w, x.shape), *backward_input_tol(dy, w))
    np.testing.assert_allclose(dw, reference.conv2d_backward_weight(x, dy, w.shape), *weight_grad_tol(x, dy))
    if zero_skipping:  # the same numbers as the dense path, up to the sign of zeros
        kernels.set_zero_skipping(False)
        try:
            dense = compute()
        finally:
            kernels.set_zero_skipping(True)
        for i, (a, b) in enumerate(zip(compute_result, dense)):
            np.testing.assert_array_equal(a, b, f"output {i}")


@pytest.mark.parametrize("pool,strides,padding", [(2, None, "valid"), (3, 1, "same")])
def test_pool_thread_invariant(rng, restore_threads, pool, strides, padding):
    x = rand(rng, 16, 26, 26, 32)
    y0, _ = kernels.max_pool2d_forward(x, pool, strides, padding)
    dy = rand(rng, *y0.shape)

    def compute():
        y, argmax = kernels.max_pool2d_forward(x, pool, strides, padding)
        return y, argmax, kernels.max_pool2d_backward(dy, argmax, x.shape, pool, strides, padding)
    _at_thread_counts(compute, f"max_pool {pool} {strides} {padding}")


# ============================================================== bad input

def test_bad_dtype_and_ndim():
    x, w = np.zeros((8, 28, 28, 1), F32), np.zeros((3, 3, 1, 32), F32)
    raises(TypeError, "conv2d_forward: expected x of dtype float32, received float64",
           kernels.conv2d_forward, x.astype(np.float64), w)
    raises(TypeError, "conv2d_forward: expected w to be a numpy float32 array, received list",
           kernels.conv2d_forward, x, [[1.0]])
    raises(ValueError, "conv2d_forward: expected x with 4 dimension(s), received shape (8, 28, 28)",
           kernels.conv2d_forward, x[..., 0], w)
    raises(ValueError, "max_pool2d_forward: expected x with 4 dimension(s), received shape (28, 28)",
           kernels.max_pool2d_forward, x[0, :, :, 0], 2)
    raises(TypeError, "max_pool2d_backward: expected argmax to be an int64 array (from max_pool2d_forward), "
           "received array of shape (8, 14, 14, 1) and dtype int32",
           kernels.max_pool2d_backward, np.zeros((8, 14, 14, 1), F32), np.zeros((8, 14, 14, 1), np.int32),
           x.shape)


def test_bad_shapes():
    x, w = np.zeros((8, 28, 28, 1), F32), np.zeros((3, 3, 3, 32), F32)
    raises(ValueError, "conv2d_forward: expected x of shape (N, H, W, 3) for a kernel of shape "
           "(3, 3, 3, 32), received (8, 28, 28, 1)", kernels.conv2d_forward, x, w)
    w = np.zeros((3, 3, 1, 32), F32)
    raises(ValueError, "conv2d_forward: expected b of shape (32,), received (31,)",
           kernels.conv2d_forward, x, w, np.zeros(31, F32))
    raises(ValueError, "conv2d_forward: expected an input of at least 3x3 pixels for a 3x3 kernel with "
           "padding 'valid', received 2x28", kernels.conv2d_forward, x[:, :2], w)
    raises(ValueError, "conv2d_forward: expected a kernel (kh, kw, cin, cout) with no zero dimension, "
           "received (3, 3, 1, 0)", kernels.conv2d_forward, x, np.zeros((3, 3, 1, 0), F32))
    raises(ValueError, "conv2d_forward: expected strides to be a positive integer or a pair of them, "
           "received (1, 0)", kernels.conv2d_forward, x, w, strides=(1, 0))
    raises(ValueError, "conv2d_forward: expected strides to be a positive integer or a pair of them, "
           "received (1, 1, 1)", kernels.conv2d_forward, x, w, strides=(1, 1, 1))
    raises(ValueError, "conv2d_forward: expected padding 'valid' or 'same', received 'causal'",
           kernels.conv2d_forward, x, w, padding="causal")
    raises(ValueError, "conv2d_forward: expected out of shape (8, 26, 26, 32), received (8, 28, 28, 32)",
           kernels.conv2d_forward, x, w, out=np.zeros((8, 28, 28, 32), F32))
    raises(ValueError, "conv2d_backward_input: expected dy of shape (8, 26, 26, 32), received (8, 26, 26, 31)",
           kernels.conv2d_backward_input, np.zeros((8, 26, 26, 31), F32), w, x.shape)
    raises(ValueError, "conv2d_backward_input: expected x_shape to be a shape (N, H, W, C) of non-negative "
           "integers, received (8, 28, 28)", kernels.conv2d_backward_input, np.zeros((8, 26, 26, 32), F32),
           w, (8, 28, 28))
    raises(ValueError, "conv2d_backward_input: expected x_shape (N, H, W, 1) for a kernel of shape "
           "(3, 3, 1, 32), received (8, 28, 28, 2)", kernels.conv2d_backward_input,
           np.zeros((8, 26, 26, 32), F32), w, (8, 28, 28, 2))
    raises(ValueError, "conv2d_backward_weight: expected x of shape (N, H, W, 2) for a kernel of shape "
           "(3, 3, 2, 32), received (8, 28, 28, 1)", kernels.conv2d_backward_weight, x,
           np.zeros((8, 26, 26, 32), F32), (3, 3, 2, 32))
    raises(ValueError, "conv2d_backward_weight: expected dy of shape (8, 26, 26, 32), received (8, 26, 26, 31)",
           kernels.conv2d_backward_weight, x, np.zeros((8, 26, 26, 31), F32), w.shape)
    raises(ValueError, "conv2d_backward_weight: expected dy of shape (8, 14, 14, 32), received (8, 26, 26, 32)",
           kernels.conv2d_backward_weight, x, np.zeros((8, 26, 26, 32), F32), w.shape, strides=2, padding="same")
    raises(ValueError, "conv2d_relu_backward_params: expected y of shape (8, 26, 26, 32) (like dy), "
           "received (8, 26, 26, 31)", kernels.conv2d_relu_backward_params, x,
           np.zeros((8, 26, 26, 31), F32), np.zeros((8, 26, 26, 32), F32), w.shape)
    raises(ValueError, "conv2d_relu_backward: expected x of shape (N, H, W, 3) for a kernel of shape "
           "(3, 3, 3, 32), received (8, 28, 28, 1)", kernels.conv2d_relu_backward, x,
           np.zeros((8, 26, 26, 32), F32), np.zeros((8, 26, 26, 32), F32), np.zeros((3, 3, 3, 32), F32))
    raises(ValueError, "conv2d_relu_backward: expected y of shape (8, 26, 26, 32) (like dy), received "
           "(8, 26, 26, 31)", kernels.conv2d_relu_backward, x, np.zeros((8, 26, 26, 31), F32),
           np.zeros((8, 26, 26, 32), F32), w)
    raises(ValueError, "conv2d_relu_backward_params: expected w_shape to be (kh, kw, cin, cout) of positive "
           "integers, received (3, 3, 1)", kernels.conv2d_relu_backward_params, x,
           np.zeros((8, 26, 26, 32), F32), np.zeros((8, 26, 26, 32), F32), (3, 3, 1))
    raises(ValueError, "max_pool2d_forward: expected pool_size to be a positive integer or a pair of them, "
           "received 0", kernels.max_pool2d_forward, x, 0)
    raises(ValueError, "max_pool2d_forward: expected an input of at least 3x3 pixels for a 3x3 pool window "
           "with padding 'valid', received 2x2", kernels.max_pool2d_forward, x[:, :2, :2], 3)
    raises(ValueError, "max_pool2d_backward: expected dy of shape (8, 14, 14, 1), received (8, 13, 13, 1)",
           kernels.max_pool2d_backward, np.zeros((8, 13, 13, 1), F32), np.zeros((8, 13, 13, 1), np.int64),
           x.shape)
    raises(ValueError, "max_pool2d_backward: expected argmax of shape (8, 14, 14, 1) (like dy), "
           "received (8, 14, 14, 2)", kernels.max_pool2d_backward, np.zeros((8, 14, 14, 1), F32),
           np.zeros((8, 14, 14, 2), np.int64), x.shape)


def test_aliasing_outputs_refused():
    x, w = np.zeros((2, 6, 6, 4), F32), np.zeros((1, 1, 4, 4), F32)
    raises(ValueError, "conv2d_forward: out must not share memory with x",
           kernels.conv2d_forward, x, w, out=x)
    buf = np.zeros(2 * 6 * 6 * 4, F32)
    raises(ValueError, "conv2d_forward: out must not share memory with w",
           kernels.conv2d_forward, x, buf[:16].reshape(w.shape), out=buf.reshape(2, 6, 6, 4))
    raises(ValueError, "conv2d_backward_input: out must not share memory with dy",
           kernels.conv2d_backward_input, x, w, x.shape, out=x)
    dy = np.zeros_like(x)
    raises(ValueError, "conv2d_backward_weight: out must not share memory with x",
           kernels.conv2d_backward_weight, x, dy, w.shape, out=x.reshape(-1)[:16].reshape(w.shape))
    raises(ValueError, "conv2d_backward_weight: out must not share memory with dy",
           kernels.conv2d_backward_weight, x, dy, w.shape, out=dy.reshape(-1)[:16].reshape(w.shape))
    raises(ValueError, "conv2d_relu_backward: out must not share memory with dy",
           kernels.conv2d_relu_backward, x, np.zeros_like(x), dy, w, out=dy)
    dw = np.zeros(w.shape, F32)
    raises(ValueError, "conv2d_relu_backward: db_out must not share memory with dw_out",
           kernels.conv2d_relu_backward, x, dy, dy, w, dw_out=dw, db_out=dw[0, 0, 0])
    raises(ValueError, "conv2d_relu_backward_params: db_out must not share memory with out",
           kernels.conv2d_relu_backward_params, x, dy, dy, w.shape, out=dw, db_out=dw[0, 0, 0])
    buf = np.zeros(2 * 3 * 3 * 4 * 3, np.int64)
    raises(ValueError, "max_pool2d_forward: out must not share memory with x",
           kernels.max_pool2d_forward, x, 2, out=x.reshape(-1)[:72].reshape(2, 3, 3, 4))
    raises(ValueError, "max_pool2d_forward: argmax_out must not share memory with x",
           kernels.max_pool2d_forward, x, 2, argmax_out=x.view(np.int64).reshape(-1)[:72].reshape(2, 3, 3, 4))
    raises(ValueError, "expected out to be writeable", kernels.max_pool2d_backward, np.zeros((2, 3, 3, 4), F32),
           buf[:72].reshape(2, 3, 3, 4), x.shape, out=np.lib.stride_tricks.as_strided(x, writeable=False))


def test_non_contiguous_inputs_are_copied(rng):
    x = rand(rng, 2, 8, 10, 3)[:, :, ::2]           # strided view
    w = np.asfortranarray(rand(rng, 3, 3, 3, 4))    # Fortran order
    y = kernels.conv2d_forward(x, w, padding="same")
    want_y = reference.conv2d_forward(np.ascontiguousarray(x), np.ascontiguousarray(w), padding="same")
    np.testing.assert_allclose(y, want_y, *conv_tol(x, w))
    dy = rand(rng, *y.shape)[::-1]  # a reversed view
    np.testing.assert_allclose(kernels.conv2d_backward_weight(x, dy, w.shape, padding="same"),
                               reference.conv2d_backward_weight(np.ascontiguousarray(x), np.ascontiguousarray(dy),
                                                                w.shape, padding="same"), *weight_grad_tol(x, dy))
    dy = rand(rng, 2, 8, 5, 8)[..., ::2]
    np.testing.assert_allclose(kernels.conv2d_backward_input(dy, w, x.shape, padding="same"),
                               reference.conv2d_backward_input(np.ascontiguousarray(dy), w, x.shape, padding="same"),
                               *backward_input_tol(dy, w))
    p, argmax = kernels.max_pool2d_forward(x, 2)
    np.testing.assert_array_equal(p, reference.max_pool2d_forward(np.ascontiguousarray(x), 2)[0])
    g = kernels.max_pool2d_backward(rand(rng, 2, 4, 2, 6)[..., ::2], argmax[..., ::-1].copy()[..., ::-1], x.shape)
    assert g.shape == x.shape


# ============================================================== tape replay

def test_conv_forward_backward_replays_bitwise(rng):
    x, w, b = _conv_data(rng, 4, 13, 13, 8, 3, 3, 16)
    dloss = rand(rng, 4, 6, 6, 16)
    tx = mg.Tensor(x)
    tw, tb = mg.Tensor(w, requires_grad=True), mg.Tensor(b, requires_grad=True)
    with tape.Tape() as t:
        h = conv2d(tx, tw, tb, activation="relu", padding="same")
        y = max_pool2d(h, 3, 2)
        y.backward(dloss)
    dw, db = tw.grad, tb.grad
    assert t.knows(y.data) and t.knows(dw) and t.knows(db)
    x[...] = rand(rng, *x.shape)  # new input, same buffer
    t.replay()
    # a fresh eager run on the new input
    fw, fb = mg.Tensor(w.copy(), requires_grad=True), mg.Tensor(b.copy(), requires_grad=True)
    fy = max_pool2d(conv2d(mg.Tensor(x.copy()), fw, fb, activation="relu", padding="same"), 3, 2)
    fy.backward(dloss)
    assert_bitwise_equal(y.data, fy.data, "replayed forward")
    assert_bitwise_equal(dw, fw.grad, "replayed weight gradient")
    assert_bitwise_equal(db, fb.grad, "replayed bias gradient")


def test_conv_input_gradient_replays_bitwise(rng):
    x, w, b = _conv_data(rng, 2, 9, 9, 3, 3, 3, 5)
    tx = mg.Tensor(x, requires_grad=True)
    with tape.Tape() as t:
        y = max_pool2d(conv2d(tx, mg.Tensor(w), mg.Tensor(b), strides=2, padding="same"), 2, 1, "same")
        y.sum().backward()
    dx = tx.grad
    x[...] = rand(rng, *x.shape)
    t.replay()
    fx = mg.Tensor(x.copy(), requires_grad=True)
    max_pool2d(conv2d(fx, mg.Tensor(w), mg.Tensor(b), strides=2, padding="same"), 2, 1, "same").sum().backward()
    assert_bitwise_equal(dx, fx.grad, "replayed input gradient")


# ============================================================== PyTorch as an oracle
# PyTorch runs in a child process that never imports minigrad (two OpenMP
# runtimes in one process are best avoided); it reads the inputs from an .npz
# file and writes its float64 results to another.

TORCH_CONV_CASES = CASES[:8]
TORCH_POOL_CASES = [(2, 2), (3, 2), (3, 1), ((2, 3), (1, 2))]

_TORCH_SNIPPET = r"""
import os
import numpy as np
import torch
F = torch.nn.functional
src = np.load(os.environ["MG_ORACLE_IN"])
res = {}
nchw = lambda a: torch.tensor(a, dtype=torch.float64).permute(0, 3, 1, 2)
nhwc = lambda t: t.detach().permute(0, 2, 3, 1).numpy()
for i in range(int(src["conv_count"])):
    pt, pb, pl, pr, sh, sw = (int(v) for v in src[f"conv{i}_geom"])
    x = nchw(src[f"conv{i}_x"]).requires_grad_()
    w = torch.tensor(src[f"conv{i}_w"], dtype=torch.float64).permute(3, 2, 0, 1).contiguous().requires_grad_()
    b = torch.tensor(src[f"conv{i}_b"], dtype=torch.float64).requires_grad_()
    y = torch.relu(F.conv2d(F.pad(x, (pl, pr, pt, pb)), w, b, stride=(sh, sw)))
    y.backward(nchw(src[f"conv{i}_dy"]))
    res[f"conv{i}_y"], res[f"conv{i}_dx"] = nhwc(y), nhwc(x.grad)
    res[f"conv{i}_dw"] = w.grad.permute(2, 3, 1, 0).numpy()
    res[f"conv{i}_db"] = b.grad.numpy()
for i in range(int(src["pool_count"])):
    ph, pw, sh, sw = (int(v) for v in src[f"pool{i}_geom"])
    x = torch.tensor(src[f"pool{i}_x"]).permute(0, 3, 1, 2).requires_grad_()
    y = F.max_pool2d(x, (ph, pw), (sh, sw))
    y.backward(torch.tensor(src[f"pool{i}_dy"]).permute(0, 3, 1, 2))
    res[f"pool{i}_y"], res[f"pool{i}_dx"] = nhwc(y), nhwc(x.grad)
np.savez(os.environ["MG_ORACLE_OUT"], **res)
print("oracle ok")
"""


@pytest.fixture(scope="module")
def torch_oracle(tmp_path_factory):
    """(inputs, PyTorch's results) for TORCH_CONV_CASES and TORCH_POOL_CASES."""
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        pytest.skip("PyTorch is not installed (pip install torch==2.13.0 for this oracle)")
    from helpers import run_python
    rng = np.random.default_rng(77)
    src = {"conv_count": len(TORCH_CONV_CASES), "pool_count": len(TORCH_POOL_CASES)}
    for i, (n, h, w_, cin, kh, kw, cout, (sh, sw), padding) in enumerate(TORCH_CONV_CASES):
        x, w, b = _conv_data(rng, n, h, w_, cin, kh, kw, cout)
        oh, pt = kernels.conv_output_size(h, kh, sh, padding)
        ow, pl = kernels.conv_output_size(w_, kw, sw, padding)
        # torch pads symmetrically: pad TensorFlow-style by hand (bottom/right get the rest)
        pb, pr = max((oh - 1) * sh + kh - h - pt, 0), max((ow - 1) * sw + kw - w_ - pl, 0)
        src.update({f"conv{i}_x": x, f"conv{i}_w": w, f"conv{i}_b": b, f"conv{i}_dy": rand(rng, n, oh, ow, cout),
                    f"conv{i}_geom": np.array([pt, pb, pl, pr, sh, sw])})
    for i, (pool, strides) in enumerate(TORCH_POOL_CASES):
        ph, pw = (pool, pool) if isinstance(pool, int) else pool
        sh, sw = (strides, strides) if isinstance(strides, int) else strides
        x = rng.permutation(2 * 9 * 8 * 3).astype(F32).reshape(2, 9, 8, 3)  # distinct: no ties
        oh, ow = (9 - ph) // sh + 1, (8 - pw) // sw + 1
        src.update({f"pool{i}_x": x, f"pool{i}_dy": rand(rng, 2, oh, ow, 3),
                    f"pool{i}_geom": np.array([ph, pw, sh, sw])})
    folder = tmp_path_factory.mktemp("torch_oracle")
    np.savez(folder / "in.npz", **src)
    proc = run_python(_TORCH_SNIPPET, env={"MG_ORACLE_IN": str(folder / "in.npz"),
                                           "MG_ORACLE_OUT": str(folder / "out.npz")}, timeout=300)
    assert proc.returncode == 0 and "oracle ok" in proc.stdout, proc.stderr
    with np.load(folder / "out.npz") as out:
        return src, dict(out)


@pytest.mark.parametrize("i", range(len(TORCH_CONV_CASES)), ids=[str(c) for c in TORCH_CONV_CASES])
def test_conv2d_against_torch(torch_oracle, i):
    src, want = torch_oracle
    _, _, _, _, _, _, _, strides, padding = TORCH_CONV_CASES[i]
    x, w, b, dy = (src[f"conv{i}_{k}"] for k in ("x", "w", "b", "dy"))
    tx, tw, tb = mg.Tensor(x, requires_grad=True), mg.Tensor(w, requires_grad=True), mg.Tensor(b, requires_grad=True)
    y = conv2d(tx, tw, tb, strides, padding, "relu")
    y.backward(dy)
    np.testing.assert_allclose(y.data, want[f"conv{i}_y"], *conv_tol(x, w))
    np.testing.assert_allclose(tx.grad, want[f"conv{i}_dx"], *backward_input_tol(dy, w))
    np.testing.assert_allclose(tw.grad, want[f"conv{i}_dw"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tb.grad, want[f"conv{i}_db"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("i", range(len(TORCH_POOL_CASES)), ids=[str(c) for c in TORCH_POOL_CASES])
def test_max_pool_against_torch(torch_oracle, i):
    src, want = torch_oracle
    pool, strides = TORCH_POOL_CASES[i]
    t = mg.Tensor(src[f"pool{i}_x"], requires_grad=True)
    y = max_pool2d(t, pool, strides)
    y.backward(src[f"pool{i}_dy"])
    np.testing.assert_array_equal(y.data, want[f"pool{i}_y"])
    # PyTorch adds in float32 too, in its own order
    tol = pool_backward_tol(src[f"pool{i}_dy"], pool, strides)
    np.testing.assert_allclose(t.grad, want[f"pool{i}_dx"], rtol=2 * tol["rtol"], atol=2 * tol["atol"])
