"""The zero-skipping GEMM path (csrc/gemm_sparse.c).

When the AVX2 kernel is in use, op(b) is not transposed, n >= 32, the product
has >= 2e6 flops, m*k <= 2**28 and op(a) has at most floor(0.4*m*k) non-zero
entries (NaN counts as non-zero, -0.0 as zero), kernels.gemm multiplies only
the non-zero entries of op(a). Claimed: the same numbers as the dense path
(bit for bit, except possibly the sign of a zero result or which NaN is kept
where two NaNs meet), inf/NaN in b spread exactly as in the dense product, bitwise thread invariance, a threshold that
does not depend on the thread count, and a workspace that stays flat.

Every test that exercises the path checks kernels.zero_skipping_calls(), so a
test of the sparse path that silently ran the dense one fails.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import F32, assert_snippet_ok, bits, gemm_tol, mnist_dir, rand
from minigrad import kernels
from minigrad.datasets import mnist

KERNEL = kernels.gemm_kernel_name()
AVX2 = KERNEL == "avx2-fma"
needs_avx2 = pytest.mark.skipif(
    not AVX2, reason=f"zero-skipping runs only with the AVX2 GEMM kernel; this CPU uses {KERNEL!r}, "
                     "so zero_skipping_calls() never moves")

# The path's conditions, as documented in csrc/gemm_sparse.c.
MAX_DENSITY = 0.4
MIN_N = 32
MIN_FLOPS = 2e6

THREADS = (1, 2, 3)


@pytest.fixture(autouse=True)
def sparse_state(restore_threads):
    """Zero-skipping on at the start; back on (and the thread count back as it
    was, by conftest's restore_threads) whatever the test did."""
    kernels.set_zero_skipping(True)
    try:
        yield restore_threads
    finally:
        kernels.set_zero_skipping(True)


# ============================================================== helpers

def limit(m, k):
    """The most non-zeros op(a) may hold for the path: floor(0.4*m*k), computed
    the way the C code does ((int64_t)(0.4 * (double)(m*k)))."""
    return int(MAX_DENSITY * float(m * k))


def path_expected(m, n, k, op_a, trans_b=False):
    """Whether the sparse path must be taken for this product (AVX2 kernel, on)."""
    nnz = int(np.count_nonzero(op_a != 0))  # NaN != 0, -0.0 == 0: as in the C code
    return (AVX2 and not trans_b and n >= MIN_N and 2.0 * m * n * k >= MIN_FLOPS
            and m * k <= 2**28 and nnz <= limit(m, k))


def stored(op_a, trans_a):
    """The array to pass as `a` so that op(a) is op_a."""
    return np.ascontiguousarray(op_a.T) if trans_a else np.ascontiguousarray(op_a)


def sparse_op_a(rng, m, k, density, scale=1.0, zero=0.0):
    """op(a) (m x k): normal values, each entry kept with probability `density`,
    the others set to `zero` (0.0 or -0.0)."""
    x = rand(rng, m, k, scale=scale)
    x[rng.random((m, k)) >= density] = zero
    return x


def mnist_like_op_a(rng, m, k):
    """Rows shaped like MNIST images: zero outside a central block of columns
    (for k = 784: a central 20x20 square of the 28x28 image), pixel values in
    (0, 1] at about 45% inside the block, so about 20% non-zero overall."""
    x = np.zeros((m, k), F32)
    if k == 784:
        inside = np.zeros((28, 28), bool)
        inside[4:24, 4:24] = True
        inside = inside.ravel()
    else:
        inside = np.zeros(k, bool)
        inside[k // 4: k // 4 + max(1, k // 2)] = True
    keep = (rng.random((m, k)) < 0.45) & inside
    x[keep] = rng.uniform(1 / 255, 1.0, int(keep.sum())).astype(F32)
    return x


def make_op_a(rng, m, k, pattern):
    if pattern == "mnist":
        return mnist_like_op_a(rng, m, k)
    return sparse_op_a(rng, m, k, pattern)


def gemm_counted(a, b, out=None, *, zero_skipping=True, **kw):
    """kernels.gemm(a, b, copy of out, **kw) with zero-skipping on or off;
    returns (result, how many calls took the zero-skipping path)."""
    kernels.set_zero_skipping(zero_skipping)
    try:
        before = kernels.zero_skipping_calls()
        got = kernels.gemm(a, b, None if out is None else out.copy(), **kw)
        return got, kernels.zero_skipping_calls() - before
    finally:
        kernels.set_zero_skipping(True)


def assert_same_as_dense(got, want, what=""):
    """Equal as numbers (NaN where NaN; a zero may differ in sign) and, for every
    element that is neither a zero nor a NaN, bit for bit. Which NaN is kept
    where two NaNs meet in an add is up to the compiler's operand order (see
    test_two_nans_meeting_stay_nan), so NaN payloads are not compared."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    nonzero = ~(want == 0) & ~np.isnan(want)
    ok = (np.array_equal(got, want, equal_nan=True)
          and np.array_equal(bits(got)[nonzero], bits(want)[nonzero]))
    if ok:
        return
    g, w = got.astype(np.float64), want.astype(np.float64)
    with np.errstate(invalid="ignore"):
        differ = ~((g == w) | (np.isnan(g) & np.isnan(w))) | (nonzero & (bits(got) != bits(want)))
        both = np.isfinite(g) & np.isfinite(w)
        maxdiff = float(np.max(np.abs(g - w)[both])) if both.any() else float("nan")
    i = np.argwhere(differ)[0]
    raise AssertionError(f"{what}: sparse path differs from the dense path in {int(differ.sum())} of "
                         f"{got.size} elements, max |diff| {maxdiff:.3g}; first at {tuple(i)}: "
                         f"{got[tuple(i)]!r} (sparse) vs {want[tuple(i)]!r} (dense)")


def sparse_vs_dense(a, b, out=None, what="", **kw):
    """Runs the product with zero-skipping on and off; the two must agree
    (assert_same_as_dense). Returns (sparse result, calls that took the path)."""
    got, taken = gemm_counted(a, b, out, zero_skipping=True, **kw)
    dense, dense_taken = gemm_counted(a, b, out, zero_skipping=False, **kw)
    assert dense_taken == 0, f"{what}: set_zero_skipping(False) still took the sparse path"
    assert_same_as_dense(got, dense, what)
    return got, taken


def reference_f64(op_a, op_b, out=None, *, alpha=1.0, beta=0.0, bias=None, relu=False, ieee=False,
                  product=None):
    """An independent float64 NumPy reference. ieee=True sums explicit outer
    products, so 0 * inf is NaN term by term whatever the BLAS under np.matmul
    does with zeros; `product` reuses an already computed op_a @ op_b."""
    A, B = op_a.astype(np.float64), op_b.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if product is not None:
            c = product.copy()
        elif ieee:
            c = np.zeros((A.shape[0], B.shape[1]))
            for p in range(A.shape[1]):
                c += np.multiply.outer(A[:, p], B[p])
        else:
            c = A @ B
        c = alpha * c
        if beta:
            c = c + beta * out.astype(np.float64)
        if bias is not None:
            c = c + bias.astype(np.float64)
        if relu:
            c = np.maximum(c, 0.0)  # keeps NaN, like the kernel's max(0, v)
    return c


def assert_matches_reference(got, op_a, op_b, out=None, *, alpha=1.0, beta=0.0, bias=None, relu=False,
                             ieee=False, product=None, what=""):
    """got against reference_f64, with helpers.gemm_tol: rounding error of a
    float32 dot product of length k grows like sqrt(k)*max|a|*max|b|; measured
    worst case about 2*eps times that, gemm_tol allows 16x (plus eps-sized terms
    for beta*out and bias). That is ~1e-3 absolute at k=784 with |a|,|b| ~ 4,
    while a skipped, repeated or misplaced non-zero term changes an element by
    about |a_ip * b_pj| ~ 1: far outside it. Non-finite values must sit exactly
    where NumPy has them (tolerances are computed on the finite entries)."""
    want = reference_f64(op_a, op_b, out, alpha=alpha, beta=beta, bias=bias, relu=relu, ieee=ieee,
                         product=product)
    assert np.array_equal(np.isnan(got), np.isnan(want)), (
        f"{what}: NaN pattern differs from NumPy's: {int((np.isnan(got) != np.isnan(want)).sum())} elements")
    assert np.array_equal(np.isposinf(got), np.isposinf(want)), f"{what}: +inf pattern differs from NumPy's"
    assert np.array_equal(np.isneginf(got), np.isneginf(want)), f"{what}: -inf pattern differs from NumPy's"

    def finite(x):
        return None if x is None else np.where(np.isfinite(x), x, 0).astype(F32)
    rtol, atol = gemm_tol(finite(op_a), finite(op_b), op_a.shape[1], alpha, beta, finite(out), finite(bias))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


# The epilogues of claim 1: (name, alpha, beta, use_out, use_bias, relu).
EPILOGUES = [
    ("plain", 1.0, 0.0, False, False, False),
    ("alpha", -1.75, 0.0, False, False, False),
    ("beta0-out-nan", 2.5, 0.0, True, False, False),   # beta 0: out holds NaN that must be ignored
    ("beta1", 1.0, 1.0, True, False, False),
    ("beta0.5", 0.75, 0.5, True, False, False),
    ("bias", 1.0, 0.0, False, True, False),
    ("relu", 1.0, 0.0, False, False, True),
    ("bias+relu", 1.0, 0.0, False, True, True),
    ("all", -0.5, 0.5, True, True, True),
]


def check_all_epilogues(rng, op_a, op_b, trans_a, what):
    """Every epilogue: sparse == dense, sparse ~ NumPy, and the sparse path taken."""
    m, k = op_a.shape
    n = op_b.shape[1]
    a = stored(op_a, trans_a)
    product = reference_f64(op_a, op_b)  # op_a @ op_b in float64, once
    for name, alpha, beta, use_out, use_bias, relu in EPILOGUES:
        out = None
        if use_out:
            out = rand(rng, m, n) if beta else np.full((m, n), np.nan, F32)
        bias = rand(rng, n) if use_bias else None
        tag = f"{what}, {name}"
        got, taken = sparse_vs_dense(a, op_b, out, what=tag, trans_a=trans_a, alpha=alpha, beta=beta,
                                     bias=bias, relu=relu)
        assert taken == 1, f"{tag}: zero_skipping_calls moved by {taken}, expected 1"
        assert_matches_reference(got, op_a, op_b, out, alpha=alpha, beta=beta, bias=bias, relu=relu,
                                 product=product, what=tag)


# ============================================================== the API

def test_set_zero_skipping_round_trip_and_type_check():
    kernels.set_zero_skipping(False)
    assert kernels.zero_skipping() is False
    for bad in (1, 0, None, "yes", 1.0, [True]):
        with pytest.raises(TypeError, match="set_zero_skipping"):
            kernels.set_zero_skipping(bad)
        assert kernels.zero_skipping() is False  # unchanged by the rejected call
    kernels.set_zero_skipping(np.bool_(True))
    assert kernels.zero_skipping() is True
    assert isinstance(kernels.zero_skipping_calls(), int)


# ============================================================== 1 + 2: same numbers as dense, and as NumPy

# (m, k, n, trans_a): several KC slices (k = 784, 600, 1000), k < 256, n a
# multiple of 64, n with an edge column group (70, 33, 100), n = 32, m in row
# blocks of 32 and past them (128, 784, 100, 200), small m (3, 17).
SHAPES = [
    (128, 784, 512, False),   # MNIST forward, x @ W1
    (784, 128, 512, True),    # MNIST weight gradient, x.T @ dz
    (100, 600, 70, False),
    (100, 600, 70, True),
    (17, 784, 512, False),
    (3, 784, 512, True),      # 2.4e6 flops
    (200, 200, 33, False),    # 2.6e6 flops
    (64, 250, 100, True),
    (160, 300, 32, False),    # n = 32, the narrowest that may take the path
    (33, 1000, 64, False),
]
PATTERNS = [0.05, 0.19, 0.35, "mnist"]


@needs_avx2
@pytest.mark.parametrize("m,k,n,trans_a", SHAPES, ids=[f"{m}x{k}x{n}{'-ta' if t else ''}" for m, k, n, t in SHAPES])
@pytest.mark.parametrize("pattern", PATTERNS, ids=[str(p) for p in PATTERNS])
def test_same_as_dense_and_numpy(m, k, n, trans_a, pattern):
    rng = np.random.default_rng([m, k, n, trans_a, PATTERNS.index(pattern)])
    op_a = make_op_a(rng, m, k, pattern)
    assert path_expected(m, n, k, op_a)  # the case is meant for the sparse path
    op_b = rand(rng, k, n)
    check_all_epilogues(rng, op_a, op_b, trans_a, f"{m}x{k}x{n} trans_a={trans_a} pattern={pattern}")


@needs_avx2
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("n", [70, 512])
def test_zero_rows_and_columns_of_op_a(trans_a, n):
    rng = np.random.default_rng(n + trans_a)
    m, k = 130, 300
    op_a = sparse_op_a(rng, m, k, 0.3)
    op_a[::2] = 0.0            # every other row entirely zero
    op_a[:, ::3] = 0.0         # a third of the columns entirely zero
    op_a[-1] = 0.0             # the last row (in the last, partial row block)
    op_a[:, -1] = 0.0
    check_all_epilogues(rng, op_a, rand(rng, k, n), trans_a, f"zero rows/columns n={n} trans_a={trans_a}")


@needs_avx2
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("zero", [0.0, -0.0], ids=["+0", "-0"])
def test_entirely_zero_op_a(trans_a, zero):
    rng = np.random.default_rng(7)
    m, k, n = 96, 400, 100
    op_a = np.full((m, k), zero, F32)
    op_b = rand(rng, k, n)
    check_all_epilogues(rng, op_a, op_b, trans_a, f"all-zero op(a) ({zero!r}) trans_a={trans_a}")
    # the values themselves: relu(0.5 * out + bias) and plain zeros
    out, bias = rand(rng, m, n), rand(rng, n)
    got, taken = gemm_counted(stored(op_a, trans_a), op_b, out, trans_a=trans_a, beta=0.5, bias=bias, relu=True)
    assert taken == 1
    np.testing.assert_array_equal(got, np.maximum(np.float32(0.5) * out + bias, 0))
    got, taken = gemm_counted(stored(op_a, trans_a), op_b, trans_a=trans_a)
    assert taken == 1 and np.array_equal(got, np.zeros((m, n), F32))


# ============================================================== 3: inf / NaN in b

def poison_b(rng, op_a, op_b, cols):
    """Puts inf, -inf and NaN into op_b at rows p where op(a)[:, p] has zeros
    (so 0 * inf = NaN terms exist), in the given columns; plus one row p where
    op(a)[:, p] is entirely zero (a whole NaN column in the dense product)."""
    b = op_b.copy()
    zero_somewhere = np.flatnonzero((op_a == 0).any(axis=0) & (op_a != 0).any(axis=0))
    assert zero_somewhere.size >= 3
    for col, value in zip(cols, [np.inf, -np.inf, np.nan, np.inf]):
        b[rng.choice(zero_somewhere), col] = value
    return b


@needs_avx2
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("m,k,n,cols", [
    (96, 300, 100, [3, 70, 99, 64]),     # edge column group (64..99) and a full one
    (128, 784, 512, [0, 200, 511, 300]),
    (64, 600, 33, [32, 1, 5, 20]),        # a single, edge group; 3 KC slices
])
def test_non_finite_b_spreads_like_dense(trans_a, m, k, n, cols):
    rng = np.random.default_rng(m + k + n + trans_a)
    op_a = sparse_op_a(rng, m, k, 0.2)
    op_a[:, 5] = 0.0  # op(a)[:, 5] entirely zero: b[5, j] = inf makes column j all NaN
    op_b = poison_b(rng, op_a, rand(rng, k, n), cols)
    op_b[5, cols[0]] = np.inf
    assert path_expected(m, n, k, op_a)
    for alpha, beta, use_bias, relu in [(1.0, 0.0, False, False), (-0.5, 0.5, True, True)]:
        out = rand(rng, m, n)
        bias = rand(rng, n) if use_bias else None
        what = f"{m}x{k}x{n} trans_a={trans_a} alpha={alpha} beta={beta} relu={relu}"
        got, taken = sparse_vs_dense(stored(op_a, trans_a), op_b, out, what=what, trans_a=trans_a,
                                     alpha=alpha, beta=beta, bias=bias, relu=relu)
        assert taken == 1, f"{what}: the zero-skipping path was not taken"
        assert np.isnan(got[:, cols[0]]).all()  # 0 * inf in every row
        assert np.isnan(got).any() and np.isinf(got).any()
        assert_matches_reference(got, op_a, op_b, out, alpha=alpha, beta=beta, bias=bias, relu=relu,
                                 ieee=True, what=what)


@needs_avx2
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("source", ["earlier KC slice", "out, beta=1", "out, beta=0.5"])
def test_two_nans_meeting_stay_nan(source, trans_a):
    """A C element that gets a NaN from its product and a *different* NaN from
    elsewhere: the NaN an earlier KC slice left in C, or a NaN in out read
    through beta. x86 keeps one operand's NaN when both are NaN, and the
    compiler may order an add's operands either way, so the two paths were
    found to keep different NaNs here (0x7fc00000, NumPy's, vs 0xffc00000, the
    default NaN 0 * inf produces). IEEE 754 leaves that choice open, and the
    documented claim allows it; what must hold is NaN in the same places and
    every other element bit for bit."""
    m, n = 128, 64
    k = 600 if source == "earlier KC slice" else 200  # 600: KC slices [0,200) [200,400) [400,600)
    op_a = np.zeros((m, k), F32)
    op_a[:, ::7] = 1.0  # 14% non-zero; columns p with p % 7 != 0 entirely zero
    op_b = np.ones((k, n), F32)
    out = np.ones((m, n), F32)
    beta = 0.0
    if source == "earlier KC slice":
        op_b[105, 1] = np.nan  # op(a)[:, 105] = 1: slice 0 ends in NaN 0x7fc00000
        op_b[451, 1] = np.inf  # op(a)[:, 451] = 0: 0 * inf, slice 2 ends in NaN 0xffc00000
        col = 1
    else:
        op_b[1, 3] = np.inf    # op(a)[:, 1] = 0: the product is NaN 0xffc00000
        out[:, 3] = np.nan     # out holds NaN 0x7fc00000
        beta = 1.0 if source == "out, beta=1" else 0.5
        col = 3
    a = stored(op_a, trans_a)
    got, taken = gemm_counted(a, op_b, out, trans_a=trans_a, beta=beta)
    dense, _ = gemm_counted(a, op_b, out, zero_skipping=False, trans_a=trans_a, beta=beta)
    assert taken == 1
    assert np.isnan(got[:, col]).all() and np.isnan(dense[:, col]).all()
    assert_matches_reference(got, op_a, op_b, out, beta=beta, ieee=True, what=source)  # as numbers: right
    assert_same_as_dense(got, dense, f"{source}, trans_a={trans_a}")


@needs_avx2
@pytest.mark.parametrize("trans_a", [False, True])
def test_non_finite_b_with_all_zero_op_a(trans_a):
    rng = np.random.default_rng(11)
    m, k, n = 64, 300, 130
    op_a = np.zeros((m, k), F32)
    op_b = rand(rng, k, n)
    op_b[17, 129] = np.nan    # last (edge) group
    op_b[250, 64] = -np.inf   # middle group; group 0 stays finite
    got, taken = sparse_vs_dense(stored(op_a, trans_a), op_b, what="all-zero op(a), non-finite b",
                                 trans_a=trans_a)
    assert taken == 1
    assert np.isnan(got[:, [64, 129]]).all()
    rest = np.delete(got, [64, 129], axis=1)
    assert np.array_equal(rest, np.zeros_like(rest))
    assert_matches_reference(got, op_a, op_b, ieee=True)


# ============================================================== 4: inf / NaN in a

@needs_avx2
@pytest.mark.parametrize("trans_a", [False, True])
def test_non_finite_a_counts_as_non_zero(trans_a):
    rng = np.random.default_rng(21 + trans_a)
    m, k, n = 100, 300, 100
    op_a = sparse_op_a(rng, m, k, 0.2)
    op_a[3, 10], op_a[50, 299], op_a[99, 0] = np.nan, np.inf, -np.inf
    op_a[60, :] = 0.0
    op_a[60, 7] = np.inf
    op_b = rand(rng, k, n)
    op_b[7, 40] = 0.0     # inf * 0 = NaN at (60, 40)
    op_b[7, 90] = -0.0    # and at (60, 90), in the edge group
    assert path_expected(m, n, k, op_a)
    for relu, bias in ((False, None), (True, rand(rng, n))):
        what = f"non-finite a, trans_a={trans_a} relu={relu}"
        got, taken = sparse_vs_dense(stored(op_a, trans_a), op_b, what=what, trans_a=trans_a, relu=relu,
                                     bias=bias)
        assert taken == 1
        assert np.isnan(got[3]).all() and np.isnan(got[60, [40, 90]]).all()
        assert np.isinf(got[50]).any() and np.isinf(got[99]).any()
        assert_matches_reference(got, op_a, op_b, bias=bias, relu=relu, ieee=True, what=what)


@needs_avx2
@pytest.mark.parametrize("trans_a", [False, True])
def test_overflow_and_subnormals_same_as_dense(trans_a):
    """Products that overflow float32 (inf - inf = NaN partial sums) and
    subnormal entries (flushed by the kernels' DAZ): the sparse chain must
    still give the dense path's bits."""
    rng = np.random.default_rng(31)
    m, k, n = 90, 400, 96
    op_a = sparse_op_a(rng, m, k, 0.25, scale=1e20)
    op_a[:, :40] = np.where(op_a[:, :40] != 0, np.float32(1e-40), 0)  # subnormal
    op_b = rand(rng, k, n, scale=1e19)
    got, taken = sparse_vs_dense(stored(op_a, trans_a), op_b, what="overflow/subnormal", trans_a=trans_a)
    assert taken == 1
    assert np.isinf(got).any() and np.isnan(got).any()  # the case really overflows


# ============================================================== 5: thread invariance

def at_thread_counts(compute):
    """compute() at 1, 2 and 3 threads: the results as bytes, and the calls
    that took the sparse path at each count."""
    results, taken = [], []
    for t in THREADS:
        kernels.set_num_threads(t)
        assert kernels.get_num_threads() == t
        before = kernels.zero_skipping_calls()
        results.append(compute())
        taken.append(kernels.zero_skipping_calls() - before)
    return results, taken


THREAD_SHAPES = [  # (m, k, n, trans_a)
    (128, 784, 512, False),
    (784, 128, 512, True),
    (200, 300, 64, False),   # one column group for 2-3 threads: rows are split
    (300, 200, 40, True),    # one, edge, group
    (100, 600, 130, False),  # three groups, the last an edge one
    (5, 4000, 64, False),    # fewer rows than the row split wants
    (1, 16000, 64, True),    # a single row
    (2, 8000, 70, False),
]


@needs_avx2
@pytest.mark.parametrize("m,k,n,trans_a", THREAD_SHAPES)
def test_thread_invariant(m, k, n, trans_a):
    rng = np.random.default_rng(m * 7 + k + n)
    op_a = sparse_op_a(rng, m, k, 0.19)
    op_b, bias, out = rand(rng, k, n), rand(rng, n), rand(rng, m, n)
    a = stored(op_a, trans_a)
    assert path_expected(m, n, k, op_a)

    # non-finite values too: NaN in a, inf and NaN in b where op(a) has zeros (full chains)
    a_bad = op_a.copy()
    a_bad[m // 2, k // 3] = np.nan
    b_bad = op_b.copy()
    b_bad[np.flatnonzero(op_a[0] == 0)[:2], [0, n - 1]] = [np.inf, np.nan]
    a_bad = stored(a_bad, trans_a)

    def compute():
        plain = kernels.gemm(a, op_b, trans_a=trans_a)
        fused = kernels.gemm(a, op_b, out.copy(), trans_a=trans_a, alpha=0.5, beta=-1.25, bias=bias, relu=True)
        poisoned = kernels.gemm(a_bad, b_bad, out.copy(), trans_a=trans_a, beta=0.5, bias=bias)
        return [x.tobytes() for x in (plain, fused, poisoned)]

    results, taken = at_thread_counts(compute)
    assert taken == [3, 3, 3], f"calls on the sparse path at {THREADS} threads: {taken}"
    for t, r in zip(THREADS[1:], results[1:]):
        for what, x, y in zip(("plain", "fused", "non-finite"), r, results[0]):
            assert x == y, f"{m}x{k}x{n} trans_a={trans_a}, {what}: {t} threads differ from 1 thread"
    kernels.set_num_threads(1)
    got, _ = sparse_vs_dense(a, op_b, out, what="thread shape", trans_a=trans_a, alpha=0.5, beta=-1.25,
                             bias=bias, relu=True)
    assert got.tobytes() == results[0][1]
    assert_matches_reference(got, op_a, op_b, out, alpha=0.5, beta=-1.25, bias=bias, relu=True)


@needs_avx2
@pytest.mark.parametrize("trans_a", [False, True])
def test_thread_invariant_with_skewed_density(trans_a):
    """First half of the rows 70% non-zero, second half 5%: 37.5% in all, so
    the path is taken at every thread count though one thread's rows alone are
    far denser than the threshold."""
    rng = np.random.default_rng(41)
    m, k, n = 128, 300, 100
    op_a = rand(rng, m, k)
    mask = np.zeros((m, k), bool)
    for r in range(m):  # exact counts per row: 210 of 300 (70%), then 15 (5%)
        mask[r, rng.choice(k, 210 if r < m // 2 else 15, replace=False)] = True
    op_a[~mask] = 0.0
    assert np.count_nonzero(op_a) == int(0.375 * m * k) <= limit(m, k)
    a, op_b, bias = stored(op_a, trans_a), rand(rng, k, n), rand(rng, n)
    results, taken = at_thread_counts(lambda: kernels.gemm(a, op_b, trans_a=trans_a, bias=bias, relu=True).tobytes())
    assert taken == [1, 1, 1], f"calls on the sparse path at {THREADS} threads: {taken}"
    assert results[1] == results[0] and results[2] == results[0]
    for t in THREADS:
        kernels.set_num_threads(t)
        got, taken = sparse_vs_dense(a, op_b, what=f"skewed, {t} threads", trans_a=trans_a, bias=bias, relu=True)
        assert taken == 1
    assert_matches_reference(got, op_a, op_b, bias=bias, relu=True)


# ============================================================== 6: the exact 40% threshold

def with_exactly(rng, m, k, nnz, where=None, zero=0.0):
    """An m x k op(a) with exactly nnz non-zero entries (values of magnitude
    0.5..2, so none is 0), at random positions or at the flat positions `where`."""
    x = np.full(m * k, zero, F32)
    pos = rng.choice(m * k, nnz, replace=False) if where is None else where
    x[pos] = (rng.uniform(0.5, 2.0, len(pos)) * rng.choice([-1, 1], len(pos))).astype(F32)
    return x.reshape(m, k)


@needs_avx2
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("m,k,n,trans_a", [(101, 333, 64, False), (100, 300, 96, True), (37, 611, 100, False)])
def test_threshold_is_exact(m, k, n, trans_a, threads):
    kernels.set_num_threads(threads)
    rng = np.random.default_rng(m + k + threads)
    lim = limit(m, k)
    op_b = rand(rng, k, n)
    at = with_exactly(rng, m, k, lim)
    got, taken = sparse_vs_dense(stored(at, trans_a), op_b, what="at the limit", trans_a=trans_a)
    assert taken == 1, f"{lim} non-zeros of {m * k} (floor(0.4*m*k)) must take the path at {threads} threads"
    assert_matches_reference(got, at, op_b)

    over = at.copy()
    zeros = np.flatnonzero(over.ravel() == 0)
    over.ravel()[rng.choice(zeros)] = 1.5
    assert np.count_nonzero(over) == lim + 1
    got, taken = gemm_counted(stored(over, trans_a), op_b, trans_a=trans_a)
    assert taken == 0, f"{lim + 1} non-zeros must decline at {threads} threads"
    assert_matches_reference(got, over, op_b, what="one over the limit (dense path)")

    # NaN counts as a non-zero: the limit plus one NaN declines too
    nan_over = at.copy()
    nan_over.ravel()[rng.choice(zeros)] = np.nan
    got, taken = gemm_counted(stored(nan_over, trans_a), op_b, trans_a=trans_a)
    assert taken == 0, "a NaN must count as a non-zero entry"
    assert_matches_reference(got, nan_over, op_b, ieee=True, what="limit + one NaN")

    # -0.0 counts as zero: the limit with every other entry -0.0 takes the path
    neg = np.where(at == 0, np.float32(-0.0), at)
    assert np.signbit(neg[neg == 0]).all()
    got, taken = sparse_vs_dense(stored(neg, trans_a), op_b, what="limit with -0.0 zeros", trans_a=trans_a)
    assert taken == 1, "-0.0 must count as zero"
    assert_matches_reference(got, neg, op_b)


@needs_avx2
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("dense_rows", ["first", "last", "middle"])
def test_threshold_with_concentrated_non_zeros(dense_rows, trans_a, threads):
    """40 of 100 rows entirely non-zero (exactly the limit), the others zero:
    one thread's rows hold every non-zero."""
    kernels.set_num_threads(threads)
    rng = np.random.default_rng(threads * 10 + trans_a)
    m, k, n = 100, 300, 80
    start = {"first": 0, "last": 60, "middle": 30}[dense_rows]
    op_a = np.zeros((m, k), F32)
    op_a[start:start + 40] = rng.uniform(0.5, 2.0, (40, k)).astype(F32)
    assert np.count_nonzero(op_a) == limit(m, k)
    op_b, bias = rand(rng, k, n), rand(rng, n)
    got, taken = sparse_vs_dense(stored(op_a, trans_a), op_b, what=f"{dense_rows} rows dense", trans_a=trans_a,
                                 bias=bias, relu=True)
    assert taken == 1
    assert_matches_reference(got, op_a, op_b, bias=bias, relu=True)
    # one more non-zero, in a zero row: declines, still right
    op_a[(start + 50) % m, 0] = 1.0
    got, taken = gemm_counted(stored(op_a, trans_a), op_b, trans_a=trans_a, bias=bias, relu=True)
    assert taken == 0
    assert_matches_reference(got, op_a, op_b, bias=bias, relu=True)


# ============================================================== 7: shapes that decline

@needs_avx2
@pytest.mark.parametrize("case", ["trans_b", "n=31", "tiny", "density 0.6", "switched off", "alpha=0"])
def test_declines(case):
    rng = np.random.default_rng(51)
    m, k, n, trans_a, trans_b, density, alpha = 128, 300, 100, False, False, 0.1, 1.0
    if case == "n=31":
        n = 31
    elif case == "tiny":
        m, k, n = 4, 8, 40
    elif case == "density 0.6":
        density = 0.6
    elif case == "trans_b":
        trans_b = True
    elif case == "alpha=0":
        alpha = 0.0
    op_a = sparse_op_a(rng, m, k, density)
    op_b = rand(rng, k, n)
    b = np.ascontiguousarray(op_b.T) if trans_b else op_b
    bias, out = rand(rng, n), rand(rng, m, n)
    for trans_a in (False, True):
        got, taken = gemm_counted(stored(op_a, trans_a), b, out, zero_skipping=case != "switched off",
                                  trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=0.5, bias=bias, relu=True)
        assert taken == 0, f"{case}: the zero-skipping path must decline"
        assert_matches_reference(got, op_a, op_b, out, alpha=alpha, beta=0.5, bias=bias, relu=True, what=case)
    # the control: the same data with the declining feature removed is taken
    if case in ("trans_b", "switched off", "alpha=0"):
        got, taken = gemm_counted(op_a, op_b, out, beta=0.5, bias=bias, relu=True)
        assert taken == 1


def test_portable_kernel_never_takes_the_sparse_path():
    """With the portable micro-kernel (forced by an environment variable read
    once per process) the zero-skipping path never runs, and results are right."""
    assert_snippet_ok("""
        import numpy as np
        from minigrad import kernels
        assert kernels.gemm_kernel_name() == "portable", kernels.gemm_kernel_name()
        rng = np.random.default_rng(0)
        x = rng.standard_normal((128, 784)).astype(np.float32)
        x[rng.random(x.shape) > 0.19] = 0
        w = rng.standard_normal((784, 512)).astype(np.float32)
        dz = rng.standard_normal((128, 512)).astype(np.float32)
        y = kernels.gemm(x, w)
        dw = kernels.gemm(x, dz, trans_a=True)
        assert kernels.zero_skipping() and kernels.zero_skipping_calls() == 0, kernels.zero_skipping_calls()
        ref = x.astype(np.float64) @ w
        assert np.allclose(y, ref, rtol=1e-4, atol=1e-3), abs(y - ref).max()
        ref = x.T.astype(np.float64) @ dz
        assert np.allclose(dw, ref, rtol=1e-4, atol=1e-3), abs(dw - ref).max()
        print("portable ok")
        """, "portable ok", env={"MINIGRAD_GEMM_KERNEL": "portable"})


# ============================================================== 8: the workspace stays flat

@needs_avx2
def test_workspace_stays_flat():
    rng = np.random.default_rng(61)
    x = mnist_like_op_a(rng, 128, 784)
    w, bias = rand(rng, 784, 512, scale=0.05), rand(rng, 512)
    dz = rand(rng, 128, 512)
    dense_x = rand(rng, 128, 784)
    small = x[:96].copy()
    dz_small = dz[:96].copy()
    # grow-only buffers: one warm-up of each full-batch kind
    kinds = [
        ("forward", lambda: kernels.gemm(x, w, bias=bias, relu=True), 1),
        ("weight grad", lambda: kernels.gemm(x, dz, trans_a=True), 1),
        ("dense (declined)", lambda: kernels.gemm(dense_x, w, bias=bias, relu=True), 0),
        ("batch of 96", lambda: (kernels.gemm(small, w, bias=bias, relu=True),
                                 kernels.gemm(small, dz_small, trans_a=True)), 2),
    ]
    for _, call, _ in kinds[:3]:
        call()
    before = kernels.gemm_workspace_allocations()
    for i in range(20):
        name, call, expect = kinds[i % 4]
        calls = kernels.zero_skipping_calls()
        call()
        assert kernels.zero_skipping_calls() - calls == expect, name
        assert kernels.gemm_workspace_allocations() == before, f"call {i} ({name}) allocated"


# ============================================================== 9: real MNIST

@needs_avx2
def test_real_mnist_batch():
    (train_images, _), _ = mnist.load_data(str(mnist_dir()))
    x = train_images[:128].reshape(128, 784).astype(F32) / 255
    assert 0.1 < np.count_nonzero(x) / x.size < 0.3  # MNIST: ~19% non-zero
    rng = np.random.default_rng(71)
    w1 = rand(rng, 784, 512, scale=0.05)
    b1 = rand(rng, 512, scale=0.1)
    y, taken = sparse_vs_dense(x, w1, what="MNIST x @ W1 + b1, relu", bias=b1, relu=True)
    assert taken == 1
    assert_matches_reference(y, x, w1, bias=b1, relu=True, what="MNIST forward")
    dz = rand(rng, 128, 512, scale=0.01)
    dw, taken = sparse_vs_dense(x, dz, what="MNIST x.T @ dz", trans_a=True)
    assert taken == 1
    assert_matches_reference(dw, np.ascontiguousarray(x.T), dz, what="MNIST weight gradient")


# ============================================================== property test

# Densities 0..0.45, mostly under the 40% threshold (hypothesis favours the
# bounds of a float range, so most draws come from a list).
DENSITY = st.one_of(st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.19, 0.25, 0.3, 0.35, 0.38, 0.42]),
                    st.floats(0.0, 0.45))
HYP = dict(deadline=None, derandomize=True, database=None,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


def test_property_sparse_equals_dense_and_numpy():
    """Random shapes, densities and epilogues: sparse == dense (bitwise up to
    the sign of a zero), ~ NumPy, and the counter moves exactly when the path's
    conditions hold. Shapes are drawn so that most cases have >= 2e6 flops."""
    seen = {"examples": 0, "taken": 0, "tiny": 0, "dense": 0}

    @settings(max_examples=80, **HYP)
    @given(m=st.integers(1, 200), n=st.integers(32, 150), density=DENSITY,
           trans_a=st.booleans(), alpha=st.sampled_from([1.0, -0.5, 3.25]),
           beta=st.sampled_from([0.0, 0.0, 1.0, -1.5]), use_bias=st.booleans(), relu=st.booleans(),
           neg_zero=st.booleans(), threads=st.sampled_from(THREADS), seed=st.integers(0, 2**32 - 1),
           data=st.data())
    def prop(m, n, density, trans_a, alpha, beta, use_bias, relu, neg_zero, threads, seed, data):
        if data.draw(st.integers(0, 7), label="kind") != 3:  # not a boundary value: hypothesis favours those
            # ~7 in 8 cases: enough flops for the path (m raised if even k = 700 is too few)
            m = max(m, -(-1_000_000 // (700 * n)))
            k = data.draw(st.integers(-(-1_000_000 // (m * n)), 700), label="k")
        else:
            k = data.draw(st.integers(1, 700), label="k (any)")
        kernels.set_num_threads(threads)
        rng = np.random.default_rng(seed)
        op_a = sparse_op_a(rng, m, k, density, zero=-0.0 if neg_zero else 0.0)
        op_b = rand(rng, k, n)
        out = rand(rng, m, n) if beta else np.full((m, n), np.nan, F32)
        bias = rand(rng, n) if use_bias else None
        kw = dict(trans_a=trans_a, alpha=alpha, beta=beta, bias=bias, relu=relu)
        what = f"m={m} k={k} n={n} density={density:.3f} threads={threads} {kw}"
        got, taken = sparse_vs_dense(stored(op_a, trans_a), op_b, out, what=what, **kw)
        expected = path_expected(m, n, k, op_a)
        assert taken == int(expected), f"{what}: path taken {taken}, expected {int(expected)}"
        assert_matches_reference(got, op_a, op_b, out, alpha=alpha, beta=beta, bias=bias, relu=relu, what=what)
        seen["examples"] += 1
        seen["taken"] += taken
        seen["tiny"] += 2.0 * m * n * k < MIN_FLOPS
        seen["dense"] += np.count_nonzero(op_a) > limit(m, k)

    prop()
    assert seen["examples"] >= 80
    if AVX2:
        assert seen["taken"] >= 0.6 * seen["examples"], seen
