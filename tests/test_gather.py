"""gather_rows (csrc/gather.c): out[i] = src[idx[i]] for rows of any dtype, copied as
bytes, on all threads above MG_PAR_MIN_ELEMS (32768) float-sized elements.

Every result is checked bit for bit against np.take(src, idx, axis=0), an independent
reference; float sources are filled with random bit patterns (NaN payloads, -0.0,
denormals) so a copy that went through a float register or skipped a byte would show.
Bad input must raise a TypeError/ValueError starting with "gather_rows:" and leave
`out` untouched."""
import re

import numpy as np
import pytest

from helpers import run_both
from minigrad import kernels, reference
from minigrad.kernels import ffi, lib

F32 = np.float32
PAR_MIN = 32768          # MG_PAR_MIN_ELEMS in csrc/internal.h
THREADS = (1, 2, 3)
SENTINEL = 77


def random_array(rng, shape, dtype):
    """Random values of any dtype; floats get arbitrary bit patterns (NaNs included)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = rng.integers(0, 256, nbytes, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def assert_same_bytes(got, want, what=""):
    """Same shape, dtype and bytes (np.array_equal on a byte view, so NaNs compare too)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    g = np.ascontiguousarray(got).reshape(-1).view(np.uint8)
    w = np.ascontiguousarray(want).reshape(-1).view(np.uint8)
    if not np.array_equal(g, w):
        row_bytes = max(got.nbytes // max(len(got), 1), 1)
        bad = np.flatnonzero(g != w)
        raise AssertionError(f"{what}: {bad.size} byte(s) differ, first in row {bad[0] // row_bytes}")


def check_gather(src, idx, what=""):
    """kernels.gather_rows(src, idx) == np.take(src, idx, axis=0), bytewise, and
    also with a sentinel-filled out=; src and idx are left unchanged."""
    src_before, idx_before = src.copy(), idx.copy()
    want = np.take(src, idx, axis=0)
    got = kernels.gather_rows(src, idx)
    assert isinstance(got, np.ndarray) and got.flags.c_contiguous
    assert not np.may_share_memory(got, src)
    assert_same_bytes(got, want, what)
    out = np.empty_like(want)
    out.reshape(-1).view(np.uint8)[...] = SENTINEL
    assert kernels.gather_rows(src, idx, out=out) is out
    assert_same_bytes(out, want, f"{what} (out=)")
    assert_same_bytes(src, src_before, f"{what}: src modified")
    assert_same_bytes(idx, idx_before, f"{what}: idx modified")
    return got


@pytest.fixture(scope="module", autouse=True)
def threads_at_start():
    """The thread count when this file's tests start (checked again by the last test)."""
    return kernels.get_num_threads()


@pytest.fixture(scope="module")
def big():
    """A 5000 x 784 float32 'training set' (15.7 MB: MNIST-like rows, modest memory)."""
    return random_array(np.random.default_rng(0), (5000, 784), F32)


# ================================================================ golden values

def test_golden_values(backend):
    src = np.arange(6, dtype=F32).reshape(3, 2)
    got = backend.gather_rows(src, np.array([2, 0, 2]))
    np.testing.assert_array_equal(got, np.array([[4, 5], [0, 1], [4, 5]], F32))
    out = np.full((2, 2), -1, F32)
    assert backend.gather_rows(src, np.array([1, 1]), out=out) is out
    np.testing.assert_array_equal(out, np.array([[2, 3], [2, 3]], F32))


# ================================================================ equality with np.take

def test_float32_2d_minibatches(big):
    rng = np.random.default_rng(1)
    for count in (1, 7, 128, 129, 1000):
        check_gather(big, rng.integers(0, len(big), count), f"5000x784 float32, {count} rows")


def test_float32_2d_permutation_covers_every_row(big):
    perm = np.random.default_rng(2).permutation(len(big))
    got = check_gather(big, perm, "full permutation")
    # every row came back exactly once: undo the permutation
    back = np.empty_like(got)
    back[perm] = got
    assert_same_bytes(back, big, "inverse permutation")


def test_first_and_last_rows(big):
    n = len(big)
    check_gather(big, np.array([n - 1, 0, n - 1, 0]), "first/last rows")
    check_gather(big, np.arange(n - 1, -1, -1), "reversed")


def test_repeated_indices():
    rng = np.random.default_rng(3)
    src = random_array(rng, (10, 33), F32)
    check_gather(src, np.array([4] * 50), "one row repeated")
    check_gather(src, rng.integers(0, 3, 200), "few rows, many repeats")


@pytest.mark.parametrize("shape", [(1, 1), (1, 784), (5, 1), (3, 0), (0, 4), (0,)])
def test_empty_idx(shape):
    src = np.ones(shape, F32)
    for dtype in (np.int64, np.int32, np.uint8):
        got = check_gather(src, np.array([], dtype), f"empty idx, src {shape}")
        assert got.shape == (0,) + shape[1:] and got.dtype == F32


def test_count_one():
    rng = np.random.default_rng(4)
    src = random_array(rng, (9, 5), F32)
    for i in range(9):
        check_gather(src, np.array([i]), f"row {i}")


def test_zero_width_rows():
    src = np.empty((6, 0), F32)
    got = kernels.gather_rows(src, np.array([5, 0, 3]))
    assert got.shape == (3, 0)


def test_one_dimensional():
    rng = np.random.default_rng(5)
    for dtype in (F32, np.float64, np.int64, np.uint8, np.bool_):
        src = random_array(rng, (257,), dtype)
        check_gather(src, rng.integers(0, 257, 300), f"1-d {np.dtype(dtype)}")


def test_three_dimensional():
    rng = np.random.default_rng(6)
    src = random_array(rng, (50, 28, 28), F32)
    check_gather(src, rng.integers(0, 50, 64), "50x28x28 float32")
    src = random_array(rng, (20, 3, 5, 2), np.int32)
    check_gather(src, rng.permutation(20), "4-d int32")


@pytest.mark.parametrize("dtype", [F32, np.float64, np.float16, np.int64, np.int32, np.int16,
                                   np.uint8, np.int8, np.bool_, np.complex64])
@pytest.mark.parametrize("cols", [1, 3, 784, 785])
def test_dtypes(dtype, cols):
    rng = np.random.default_rng(cols)
    src = random_array(rng, (40, cols), dtype)
    check_gather(src, rng.integers(0, 40, 25), f"{np.dtype(dtype)} x {cols} columns")


def test_any_element_type_is_copied_as_bytes():
    # "rows of any element type": structured, strings, datetimes, big-endian, void
    rng = np.random.default_rng(7)
    idx = np.array([3, 0, 3, 1])
    rec = np.zeros(4, dtype=[("a", "<i4"), ("b", ">f8"), ("c", "S3")])
    rec["a"], rec["b"], rec["c"] = [1, 2, 3, 4], [0.5, -1.0, 2.5, 8.0], [b"ab", b"cde", b"f", b""]
    check_gather(rec, idx, "structured")
    check_gather(np.array(["x", "yy", "zzz", "w"]), idx, "unicode")
    check_gather(np.arange(8, dtype=">f4").reshape(4, 2), idx, "big-endian float32")
    check_gather(np.array(["2020-01-01", "1999-12-31", "NaT", "2000-02-29"], "M8[D]"), idx, "datetime64")
    check_gather(random_array(rng, (4, 3), "V5"), idx, "void5")


@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32, np.uint8, np.int16, np.uint32,
                                       np.uint64, np.intp, ">i8", "<i4"])
def test_index_dtypes(idx_dtype):
    rng = np.random.default_rng(8)
    src = random_array(rng, (200, 13), F32)
    idx = rng.integers(0, 200, 77).astype(idx_dtype)
    got = check_gather(src, idx, f"idx {np.dtype(idx_dtype)}")
    assert_same_bytes(got, check_gather(src, idx.astype(np.int64)), "same rows whatever idx dtype")


def test_uint8_index_reaches_row_255():
    src = random_array(np.random.default_rng(9), (256, 4), np.int64)
    check_gather(src, np.arange(256, dtype=np.uint8)[::-1].copy(), "all 256 uint8 indices")


def test_non_contiguous_idx():
    rng = np.random.default_rng(10)
    src = random_array(rng, (100, 8), F32)
    base = rng.integers(0, 100, 300)
    for idx in (base[::3], base[::-1], base.astype(np.int32)[1::2],
                np.asfortranarray(base.reshape(20, 15))[4, :]):
        assert not idx.flags.c_contiguous
        check_gather(src, idx, "strided idx")


# ================================================================ parallel and serial paths

# (rows gathered, row shape, dtype): floats copied = rows * row_bytes // 4 vs 32768
PATH_CASES = [
    (128, (784,), F32),         # 100352: parallel (an MNIST mini-batch)
    (41, (800,), F32),          # 32800: just above the threshold
    (32, (1024,), F32),         # 32768: exactly the threshold (parallel)
    (1, (32768,), F32),         # one huge row: parallel loop of one iteration
    (3, (40000,), F32),         # fewer rows than threads, each huge
    (39, (840,), F32),          # 32760: just below (serial)
    (10, (784,), F32),          # 7840: serial
    (5000, (3,), F32),          # 15000: many tiny rows, serial
    (20000, (3,), F32),         # 60000: many tiny rows, parallel
    (200, (785,), np.uint8),    # 39200 "floats" of odd-length byte rows: parallel
    (100, (28, 28), np.float64),  # 156800: parallel, 3-d
    (3000, (11,), np.int16),    # 16500: serial, rows not a multiple of 4 bytes
    (70000, (), np.uint8),      # 1-d bytes: row_bytes/4 = 0, always serial
    (40000, (), F32),           # 1-d float32, 40000 rows of 4 bytes: parallel
]


def _path_case(rows, row_shape, dtype, seed):
    rng = np.random.default_rng(seed)
    n_src = max(rows // 2, 50)          # fewer source rows than gathered: repeats too
    src = random_array(rng, (n_src,) + row_shape, dtype)
    return src, rng.integers(0, n_src, rows)


@pytest.mark.parametrize("rows,row_shape,dtype", PATH_CASES,
                         ids=[f"{r}x{'x'.join(map(str, s)) or '1'}-{np.dtype(d)}" for r, s, d in PATH_CASES])
def test_parallel_and_serial_paths_thread_invariant(rows, row_shape, dtype, restore_threads):
    src, idx = _path_case(rows, row_shape, dtype, rows)
    want = np.take(src, idx, axis=0)
    results = {}
    for n in THREADS:
        kernels.set_num_threads(n)
        assert kernels.get_num_threads() == n
        results[n] = check_gather(src, idx, f"{rows} x {row_shape} {np.dtype(dtype)}, {n} threads")
    for n in THREADS:
        assert_same_bytes(results[n], want, f"{n} threads")


# ================================================================ out=

def test_out_is_written_in_place_and_returned(big):
    idx = np.random.default_rng(11).integers(0, len(big), 128)
    out = np.full((128, 784), np.nan, F32)
    address = out.__array_interface__["data"][0]
    assert kernels.gather_rows(big, idx, out=out) is out
    assert out.__array_interface__["data"][0] == address
    assert_same_bytes(out, np.take(big, idx, axis=0), "out=")


def test_out_reused_across_calls(big):
    # a training loop: the same buffer every step, each call overwrites all of it
    rng = np.random.default_rng(12)
    out = np.empty((64, 784), F32)
    for _ in range(5):
        idx = rng.integers(0, len(big), 64)
        kernels.gather_rows(big, idx, out=out)
        assert_same_bytes(out, np.take(big, idx, axis=0), "reused out")


def test_out_leading_rows_of_a_larger_buffer(big):
    # the last, short batch of an epoch: written into buf[:k], the rest untouched
    rng = np.random.default_rng(13)
    buf = np.full((128, 784), 5.0, F32)
    for k in (100, 1, 0):
        buf[...] = 5.0
        idx = rng.integers(0, len(big), k)
        view = buf[:k]
        assert view.flags.c_contiguous and not view.flags.owndata
        assert kernels.gather_rows(big, idx, out=view) is view
        assert_same_bytes(buf[:k], np.take(big, idx, axis=0), f"buf[:{k}]")
        assert np.all(buf[k:] == 5.0), "rows past the view were written"


def test_out_row_block_in_the_middle_of_a_buffer():
    rng = np.random.default_rng(14)
    src = random_array(rng, (30, 6), np.int32)
    buf = np.full((10, 6), -9, np.int32)
    idx = np.array([29, 3, 3])
    kernels.gather_rows(src, idx, out=buf[4:7])
    assert_same_bytes(buf[4:7], src[idx], "buf[4:7]")
    assert np.all(buf[:4] == -9) and np.all(buf[7:] == -9)


# ================================================================ non-contiguous / odd src

def _odd_sources(rng):
    a = random_array(rng, (60, 40), F32)
    raw = np.zeros(60 * 40 * 4 + 1, np.uint8)
    raw[1:] = a.reshape(-1).view(np.uint8)
    unaligned = raw[1:].view(F32).reshape(60, 40)
    readonly = a.copy()
    readonly.setflags(write=False)
    return {
        "transposed": a.T,                       # (40, 60), F-ordered
        "column slice": a[:, 3:17],
        "strided columns": a[:, ::3],
        "strided rows": a[::4],
        "reversed rows": a[::-1],
        "reversed columns": a[:, ::-1],
        "fortran": np.asfortranarray(a),
        "3-d transposed": random_array(rng, (6, 7, 8), np.int64).transpose(2, 0, 1),
        "broadcast rows": np.broadcast_to(a[5], (25, 40)),   # stride 0, read-only
        "unaligned": unaligned,
        "read-only": readonly,
        "1-d strided": a[:, 7],
    }


@pytest.mark.parametrize("name", ["transposed", "column slice", "strided columns", "strided rows",
                                  "reversed rows", "reversed columns", "fortran", "3-d transposed",
                                  "broadcast rows", "unaligned", "read-only", "1-d strided"])
def test_non_contiguous_or_odd_src(name):
    rng = np.random.default_rng(15)
    src = _odd_sources(rng)[name]
    if name == "unaligned":
        assert not src.flags.aligned
    idx = rng.integers(0, len(src), 50)
    check_gather(src, idx, name)


def test_non_contiguous_src_parallel_path(big, restore_threads):
    src = big[:, ::2]                          # 392 floats a row, strided
    idx = np.random.default_rng(16).integers(0, len(big), 200)   # 78400 floats: parallel
    for n in THREADS:
        kernels.set_num_threads(n)
        check_gather(src, idx, f"strided src, {n} threads")


# ================================================================ bad input

def raises(exc, text, *args, **kwargs):
    """gather_rows(*args) raises exc with a message that starts with text (literally)."""
    with pytest.raises(exc, match="^" + re.escape(text)) as info:
        kernels.gather_rows(*args, **kwargs)
    return str(info.value)


def sentinel_out(shape, dtype=F32):
    out = np.empty(shape, dtype)
    out.reshape(-1).view(np.uint8)[...] = SENTINEL
    return out


def untouched(out):
    return bool(np.all(np.ascontiguousarray(out).reshape(-1).view(np.uint8) == SENTINEL))


SRC = np.arange(20, dtype=F32).reshape(5, 4)


@pytest.mark.parametrize("idx,received", [
    ([0, 1, 5], 5),                # one past the end
    ([5], 5),
    ([0, 1, 2, 3, 4, 1000], 1000),
    ([-1, 2], -1),                  # negative: refused, not wrapped as np.take would
    ([3, -5], -5),
    ([-6], -6),
    ([2**40], 2**40),
    ([-1, 9], -1),                  # both: the negative one is named
])
@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32, np.int16])
def test_index_out_of_range(idx, received, idx_dtype):
    idx = np.array(idx, dtype=np.int64)
    if np.any(np.abs(idx) > np.iinfo(idx_dtype).max):
        idx_dtype = np.int64        # only int64 holds the value
    idx = idx.astype(idx_dtype)
    out = sentinel_out((len(idx), 4))
    raises(ValueError, f"gather_rows: expected indices in [0, 5), received {received}", SRC, idx)
    raises(ValueError, f"gather_rows: expected indices in [0, 5), received {received}", SRC, idx, out=out)
    assert untouched(out), "out written although an index was out of range"


def test_index_out_of_range_unsigned_and_empty_src():
    out = sentinel_out((2, 4))
    raises(ValueError, "gather_rows: expected indices in [0, 5), received 200", SRC,
           np.array([1, 200], np.uint8), out=out)
    raises(ValueError, f"gather_rows: expected indices in [0, 5), received {2**64 - 1}", SRC,
           np.array([0, 2**64 - 1], np.uint64), out=out)
    assert untouched(out)
    raises(ValueError, "gather_rows: expected indices in [0, 0), received 0", np.empty((0, 4), F32),
           np.array([0]))


def test_index_range_checked_before_any_row_is_copied(big):
    # a bad index at the very end of a large (parallel-sized) gather
    idx = np.arange(1000)
    idx[-1] = len(big)
    out = sentinel_out((1000, 784))
    raises(ValueError, f"gather_rows: expected indices in [0, {len(big)}), received {len(big)}", big, idx, out=out)
    assert untouched(out)


def test_c_kernel_checks_indices_itself():
    # train_plan calls lib.mg_gather_rows directly, past the wrapper's checks: the C
    # kernel must refuse a bad index without writing anything (and never read outside src)
    src = np.arange(20, dtype=F32).reshape(5, 4)
    for bad in ([0, 1, 5], [-1, 0], [4, 4, 2**40]):
        idx = np.array(bad, np.int64)
        out = sentinel_out((len(bad), 4))
        status = lib.mg_gather_rows(ffi.from_buffer(src), 5, 16, ffi.from_buffer("int64_t[]", idx),
                                    len(bad), ffi.from_buffer(out))
        assert status == lib.MG_EINVAL
        assert untouched(out)
    idx = np.array([4, 0], np.int64)
    out = sentinel_out((2, 4))
    assert lib.mg_gather_rows(ffi.from_buffer(src), 5, 16, ffi.from_buffer("int64_t[]", idx),
                              2, ffi.from_buffer(out)) == lib.MG_OK
    assert_same_bytes(out, src[[4, 0]], "direct C call")
    for rows, row_bytes, count in ((-1, 16, 0), (5, -4, 0), (5, 16, -1)):
        assert lib.mg_gather_rows(ffi.from_buffer(src), rows, row_bytes, ffi.from_buffer("int64_t[]", idx),
                                  count, ffi.from_buffer(out)) == lib.MG_EINVAL


@pytest.mark.parametrize("src", [
    np.array([None, 1, "a"], dtype=object),
    np.array([[1, 2], [3, 4]], dtype=object),
    np.zeros(3, dtype=[("a", F32), ("b", object)]),    # an object field counts too
])
def test_object_dtype_src(src):
    out = np.empty((1,) + src.shape[1:], src.dtype)
    raises(TypeError, f"gather_rows: expected src of a numeric dtype, received {src.dtype}", src, np.array([0]))
    raises(TypeError, f"gather_rows: expected src of a numeric dtype, received {src.dtype}", src, np.array([0]),
           out=out)


@pytest.mark.parametrize("idx,received", [
    (np.array([[0, 1]]), "2-d int64 array"),
    (np.array(1), "0-d int64 array"),
    (np.array([0.0, 1.0]), "1-d float64 array"),
    (np.array([0, 1], F32), "1-d float32 array"),
    (np.array([True, False]), "1-d bool array"),      # a mask is not a list of rows
    (np.array(["0"]), "1-d <U1 array"),
    ([0, 1], "list"),
    ((0, 1), "tuple"),
    (3, "int"),
    (None, "NoneType"),
    (range(2), "range"),
])
def test_idx_not_a_1d_integer_array(idx, received):
    out = sentinel_out((2, 4))
    raises(TypeError, f"gather_rows: expected idx to be a 1-d integer array, received {received}",
           SRC, idx, out=out)
    assert untouched(out)


@pytest.mark.parametrize("src,received", [
    ([[1.0, 2.0], [3.0, 4.0]], "list"),
    ((1, 2), "tuple"),
    (3.0, "float"),
    (None, "NoneType"),
    (np.array(3.0, F32), "array of shape () and dtype float32"),
    (np.float32(3.0), "float32"),
])
def test_src_not_an_array_or_0d(src, received):
    raises(TypeError, "gather_rows: expected src to be a numpy array with at least 1 dimension, "
                      f"received {received}", src, np.array([0]))


@pytest.mark.parametrize("shape", [(3, 5), (4, 4), (2, 4), (12,), (3, 4, 1), (1, 3, 4)])
def test_out_of_wrong_shape(shape):
    out = sentinel_out(shape)
    raises(ValueError, f"gather_rows: expected out of shape (3, 4), received {shape}",
           SRC, np.array([0, 1, 2]), out=out)
    assert untouched(out)


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.float16, ">f4"])
def test_out_of_wrong_dtype(dtype):
    out = sentinel_out((3, 4), dtype)
    raises(TypeError, "gather_rows: expected out to be an array of dtype float32, received array of "
                      f"shape (3, 4) and dtype {np.dtype(dtype)}", SRC, np.array([0, 1, 2]), out=out)
    assert untouched(out)


def test_out_not_an_array():
    out = [[0.0] * 4] * 3
    raises(TypeError, "gather_rows: expected out to be an array of dtype float32, received list",
           SRC, np.array([0, 1, 2]), out=out)
    assert out == [[0.0] * 4] * 3


def test_out_dtype_follows_src_not_float32():
    src = np.arange(10, dtype=np.int64).reshape(5, 2)
    raises(TypeError, "gather_rows: expected out to be an array of dtype int64, received array of "
                      "shape (1, 2) and dtype float32", src, np.array([1]), out=np.zeros((1, 2), F32))


def test_read_only_out():
    out = sentinel_out((3, 4))
    out.setflags(write=False)
    raises(ValueError, "gather_rows: expected out to be writeable, C-contiguous and aligned",
           SRC, np.array([0, 1, 2]), out=out)
    assert untouched(out)


@pytest.mark.parametrize("make", [
    lambda buf: buf[:3, :4],             # leading columns of wider rows
    lambda buf: buf[::2, :4],
    lambda buf: buf[:4, :3].T,           # right shape, transposed
    lambda buf: np.asfortranarray(buf[:3, :4]),
], ids=["column-slice", "strided", "transposed", "fortran"])
def test_non_contiguous_out(make):
    buf = sentinel_out((6, 8))
    out = make(buf)
    assert out.shape == (3, 4) and not out.flags.c_contiguous
    raises(ValueError, "gather_rows: expected out to be writeable, C-contiguous and aligned",
           SRC, np.array([0, 1, 2]), out=out)
    assert untouched(out) and untouched(buf)


def test_unaligned_out():
    raw = np.zeros(3 * 4 * 4 + 1, np.uint8)
    out = raw[1:].view(F32).reshape(3, 4)
    assert not out.flags.aligned and out.flags.writeable and out.flags.c_contiguous
    raises(ValueError, "gather_rows: expected out to be writeable, C-contiguous and aligned",
           SRC, np.array([0, 1, 2]), out=out)


def test_out_overlapping_src():
    src = np.arange(40, dtype=F32).reshape(10, 4)
    before = src.copy()
    raises(ValueError, "gather_rows: out must not share memory with src", src, np.array([3, 1]), out=src[:2])
    raises(ValueError, "gather_rows: out must not share memory with src", src, np.array([0, 9]), out=src[8:])
    raises(ValueError, "gather_rows: out must not share memory with src", src[2:], np.array([0]), out=src[:3][2:3])
    assert_same_bytes(src, before, "src written through an overlapping out")


def test_out_overlapping_a_non_contiguous_src():
    # src is copied to C order inside the wrapper: the overlap with the caller's
    # array must still be refused (and nothing written into it)
    buf = np.arange(80, dtype=F32).reshape(10, 8)
    before = buf.copy()
    src = buf[:, ::2]                               # (10, 4), non-contiguous
    out = buf.reshape(-1)[:12].reshape(3, 4)        # C-contiguous, inside src's span
    raises(ValueError, "gather_rows: out must not share memory with src", src, np.array([9, 8, 7]), out=out)
    assert_same_bytes(buf, before, "buf written")


def test_out_overlapping_idx():
    buf = np.array([2, 0, 1, 7, 7, 7], np.int64)
    src = np.arange(6, dtype=np.int64) * 10
    raises(ValueError, "gather_rows: out must not share memory with idx", src, buf[:3], out=buf[:3])
    np.testing.assert_array_equal(buf, [2, 0, 1, 7, 7, 7])
    # disjoint parts of one buffer are fine
    assert kernels.gather_rows(src, buf[:3], out=buf[3:]) is not None
    np.testing.assert_array_equal(buf, [2, 0, 1, 20, 0, 10])


def test_rejected_call_then_valid_call_with_same_out():
    out = sentinel_out((2, 4))
    raises(ValueError, "gather_rows: expected indices in [0, 5)", SRC, np.array([1, 5]), out=out)
    assert untouched(out)
    assert kernels.gather_rows(SRC, np.array([1, 4]), out=out) is out
    assert_same_bytes(out, SRC[[1, 4]], "after a rejected call")


# ================================================================ the NumPy twin

@pytest.mark.parametrize("case", ["2d", "3d-int", "1d-uint8", "strided", "empty", "out"])
def test_numpy_twin_agrees(case):
    rng = np.random.default_rng(17)
    if case == "2d":
        args = (random_array(rng, (300, 50), F32), rng.integers(0, 300, 128))
    elif case == "3d-int":
        args = (random_array(rng, (20, 4, 3), np.int32), rng.permutation(20).astype(np.int32))
    elif case == "1d-uint8":
        args = (random_array(rng, (256,), np.uint8), rng.integers(0, 256, 1000).astype(np.uint8))
    elif case == "strided":
        args = (random_array(rng, (40, 30), np.float64)[::2, 1::3], rng.integers(0, 20, 33))
    elif case == "empty":
        args = (random_array(rng, (7, 5), F32), np.array([], np.int64))
    else:
        args = (random_array(rng, (30, 9), F32), np.array([29, 0, 29, 3]), sentinel_out((4, 9)))
    got, want = run_both("gather_rows", *args)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_same_bytes(g, w, f"{case}: output {i}")
    assert_same_bytes(got[0], np.take(args[0], args[1], axis=0), f"{case}: vs np.take")


def test_numpy_twin_refuses_out_of_range_too():
    for bad in ([0, 5], [-1]):
        with pytest.raises(ValueError, match="^gather_rows: "):
            reference.gather_rows(SRC, np.array(bad))


def test_thread_count_restored_at_the_end(threads_at_start):
    # runs last in this file: the thread tests put the caller's thread count back
    assert kernels.get_num_threads() == threads_at_start
