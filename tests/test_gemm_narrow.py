"""GEMM with a narrow output (n <= 10 columns, csrc/gemm_narrow.c) against float64 NumPy.

Two kernels: a dot product along k for op(A) = A (h @ W2, the 10-class forward),
and an outer product over rows of C for op(A) = A^T (h.T @ dz2, its weight
gradient). Every width 1..10, both op(B) layouts, partial row tiles, long and
short k, the alpha/beta/bias/relu epilogue, non-finite values, thread
invariance, and the shapes that fall back to the blocked kernel.
"""
import numpy as np
import pytest

from minigrad import kernels
from helpers import assert_bitwise_equal, gemm_tol, rand

F32 = np.float32


def operands(rng, m, n, k, trans_a, trans_b, scale=1.0):
    a = rand(rng, *((k, m) if trans_a else (m, k)), scale=scale)
    b = rand(rng, *((n, k) if trans_b else (k, n)), scale=scale)
    return a, b


def reference(a, b, trans_a, trans_b, alpha=1.0, beta=0.0, out=None, bias=None, relu=False):
    opa = (a.T if trans_a else a).astype(np.float64)
    opb = (b.T if trans_b else b).astype(np.float64)
    r = alpha * (opa @ opb)
    if beta:
        r = r + beta * out.astype(np.float64)
    if bias is not None:
        r = r + bias.astype(np.float64)
    return np.maximum(r, 0.0) if relu else r


@pytest.mark.parametrize("trans_a", [True, False], ids=["A^T", "A"])
@pytest.mark.parametrize("trans_b", [False, True], ids=["B", "B^T"])
@pytest.mark.parametrize("n", range(1, 11))
@pytest.mark.parametrize("m,k", [(512, 128), (13, 5), (9, 300), (8, 1), (1, 2), (100, 1000), (7, 8)])
def test_every_width_matches_float64(rng, trans_a, trans_b, n, m, k):
    a, b = operands(rng, m, n, k, trans_a, trans_b)
    got = kernels.gemm(a, b, trans_a=trans_a, trans_b=trans_b)
    want = reference(a, b, trans_a, trans_b)
    rtol, atol = gemm_tol(a, b, k)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("trans_a", [True, False], ids=["A^T", "A"])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.5, 0.0), (1.0, 1.0), (-2.0, 0.25)])
@pytest.mark.parametrize("use_bias,relu", [(False, False), (True, False), (True, True), (False, True)])
def test_epilogue(rng, trans_a, alpha, beta, use_bias, relu):
    m, n, k = 37, 10, 64
    a, b = operands(rng, m, n, k, trans_a, False)
    out = rand(rng, m, n)
    bias = rand(rng, n) if use_bias else None
    want = reference(a, b, trans_a, False, alpha, beta, out, bias, relu)
    got = kernels.gemm(a, b, out.copy(), trans_a=trans_a, alpha=alpha, beta=beta, bias=bias,
                       relu=relu)
    rtol, atol = gemm_tol(a, b, k, alpha, beta, out, bias)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    if relu:
        assert (got >= 0).all()


def test_output_leading_dimension_and_neighbours_untouched(rng):
    # out is a (40, 10) array; C must be exactly it, no write past a row's 10 columns
    m, n, k = 40, 10, 33
    a, b = operands(rng, m, n, k, True, False)
    big = np.full((m + 2, n), 7.0, F32)
    out = big[1:-1]
    kernels.gemm(a, b, out, trans_a=True)
    assert (big[0] == 7.0).all() and (big[-1] == 7.0).all()
    np.testing.assert_allclose(out, reference(a, b, True, False), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("trans_a", [True, False], ids=["A^T", "A"])
def test_results_do_not_depend_on_threads(rng, restore_threads, trans_a):
    for m, n, k in [(512, 10, 128), (1000, 7, 64), (129, 3, 1000)]:
        a, b = operands(rng, m, n, k, trans_a, False)
        results = []
        for threads in (1, 2, 3):
            kernels.set_num_threads(threads)
            results.append(kernels.gemm(a, b, trans_a=trans_a))
        for r in results[1:]:
            assert_bitwise_equal(r, results[0], f"{(m, n, k)} threads")


@pytest.mark.parametrize("trans_a", [True, False], ids=["A^T", "A"])
def test_non_finite_values_spread_as_in_numpy(rng, trans_a):
    m, n, k = 24, 10, 40
    a, b = operands(rng, m, n, k, trans_a, False)
    opa = a.T if trans_a else a  # a view: writes go to a
    opa[3, 5] = np.inf
    opa[7, 0] = np.nan
    b[9, 4] = -np.inf
    got = kernels.gemm(a, b, trans_a=trans_a)
    with np.errstate(invalid="ignore", over="ignore"):
        want = (opa.astype(np.float64) @ b.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-4)


def test_exact_small_integers(rng):
    # integer-valued operands: every partial sum is exact, so C must equal A^T B exactly
    a = rng.integers(-8, 9, (300, 77)).astype(F32)
    b = rng.integers(-8, 9, (300, 10)).astype(F32)
    np.testing.assert_array_equal(kernels.gemm(a, b, trans_a=True), (a.T.astype(np.int64) @ b).astype(F32))
    np.testing.assert_array_equal(kernels.gemm(a.T.copy(), b), (a.T.astype(np.int64) @ b).astype(F32))


def test_shapes_past_the_packed_b_bound_use_the_blocked_kernel(rng):
    # k * n > 2**20 floats of packed op(B): declined, the 6x16 kernel computes it
    m, n, k = 9, 10, 110000
    a, b = operands(rng, m, n, k, True, False, scale=0.1)
    got = kernels.gemm(a, b, trans_a=True)
    rtol, atol = gemm_tol(a, b, k)
    np.testing.assert_allclose(got, reference(a, b, True, False), rtol=rtol, atol=atol)


def test_the_mlp_gradient_shapes(rng, restore_threads):
    # h.T @ dz2 and h @ W2 of the book's MLP at batch 128 and the last batch of 96
    for rows in (128, 96):
        h = np.maximum(rand(rng, rows, 512), 0)
        dz2 = rand(rng, rows, 10, scale=0.01)
        w2 = rand(rng, 512, 10, scale=0.05)
        np.testing.assert_allclose(kernels.gemm(h, dz2, trans_a=True), h.T.astype(np.float64) @ dz2,
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(kernels.gemm(h, w2), h.astype(np.float64) @ w2, rtol=1e-5, atol=1e-5)
