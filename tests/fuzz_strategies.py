"""Building blocks for the fuzz suite (tests/test_fuzz_*.py): arbitrary arrays (any dtype, ndim,
layout, values), arbitrary non-arrays, scalars, class labels, output buffers
and aliases, and a short description of a call for reproducers.

Everything is drawn through hypothesis' ``st.data()`` so that shrinking works
and each choice is printed in a falsifying example. The draws are written so
that shrinking goes towards the simplest case: index 0 of every choice is the
plain valid one (a C-contiguous float32 array of zeros of the right shape).
Bulk values come from NumPy generators seeded from one integer drawn per case
(``begin_case``), which keeps the cost per example low (hypothesis costs about
0.1 ms per draw) for arrays of tens of thousands of elements.
"""
import functools
import math
import numbers

import numpy as np
from hypothesis import strategies as st

import minigrad as mg

F32 = np.dtype(np.float32)
TINY32 = float(np.finfo(np.float32).tiny)       # smallest normal float32
EPS32 = float(np.finfo(np.float32).eps)

INT_DTYPES = [np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64,
                                     np.uint8, np.uint16, np.uint32, np.uint64)]
BAD_DTYPES = ([np.dtype(t) for t in (np.float64, np.float16, np.bool_, object,
                                     np.complex64, np.complex128)]
              + INT_DTYPES
              + [np.dtype(">f4"), np.dtype("<U3"), np.dtype("S3"), np.dtype("M8[s]"),
                 np.dtype("m8[s]"), np.dtype([("x", "<f4")])])
ALL_DTYPES = [F32] + BAD_DTYPES

# Memory layouts with the same values. Index 0 is plain C order.
LAYOUTS = ["C", "F", "strided", "negative", "transposed", "readonly", "unaligned",
           "offset", "broadcast"]
# Layouts a kernel may write into (out, parameters, optimizer slots): C-contiguous,
# writeable and aligned (kernels.py rejects a misaligned destination).
WRITABLE_LAYOUTS = ["C", "offset"]

VALUE_PROFILES = ["zeros", "ints", "normal", "wide", "specials", "huge", "subnormal"]


# Hypothesis costs about 0.1 ms per draw, so strategies are built once and cached,
# an argument's kind, value profile and layout are one draw, and bulk values come
# from one seed per case (see begin_case).
_CACHE = {}
_BY_ID = {}  # id of a long constant tuple -> (the tuple, its strategy)
_CASE = {"seed": 0, "arrays": 0}


def begin_case(data):
    """Draw the seed every array of this case derives its values from."""
    _CASE["seed"] = integer(data, 0, 2**32 - 1, "seed")
    _CASE["arrays"] = 0


def _rng():
    _CASE["arrays"] += 1
    return np.random.default_rng([_CASE["seed"], _CASE["arrays"]])


def draw(data, strategy, label):
    return data.draw(strategy, label=label)


def pick(data, options, label):
    """One of `options` (shrinks towards the first)."""
    entry = _BY_ID.get(id(options))
    if entry is not None and entry[0] is options:
        return data.draw(entry[1], label=label)
    as_tuple = tuple(options)
    try:
        key = tuple((type(v), v) for v in as_tuple)
        hash(key)
    except TypeError:  # unhashable options (arrays): draw an index
        return as_tuple[integer(data, 0, len(as_tuple) - 1, label)]
    strategy = _CACHE.get(key)
    if strategy is None:
        strategy = _CACHE[key] = st.sampled_from(as_tuple)
    if type(options) is tuple and len(options) > 16:
        _BY_ID[id(options)] = (options, strategy)
    return data.draw(strategy, label=label)


def integer(data, lo, hi, label):
    key = ("int", lo, hi)
    strategy = _CACHE.get(key)
    if strategy is None:
        strategy = _CACHE[key] = st.integers(lo, hi)
    return data.draw(strategy, label=label)


def boolean(data, label):
    return pick(data, (False, True), label)


# ---------------------------------------------------------------- values

def float_values(shape, profile, **kw):
    """float64 values of `shape` for a value profile: zeros, small integers (ties,
    exact zeros), normal, a wide range of magnitudes (up to `mag`), NaN/inf/-0.0
    sprinkled in, huge (up to `huge`), or float32 subnormals mixed with normal values."""
    return np.array(_float_values(shape, profile, **kw), dtype=np.float64).reshape(shape)


def _float_values(shape, profile, *, mag=1e3, huge=1e15):
    if profile == "zeros":
        return np.zeros(shape)
    rng = _rng()
    if profile == "ints":
        return rng.integers(-3, 4, shape).astype(np.float64)
    if profile == "normal":
        return rng.standard_normal(shape)
    if profile == "huge":
        return rng.uniform(-huge, huge, shape)
    sign = rng.choice([-1.0, 1.0], shape)
    if profile == "subnormal":
        tiny = sign * 10.0 ** rng.uniform(-45, -38, shape)  # float32 subnormals (and a few 0)
        return np.where(rng.random(shape) < 0.5, tiny, rng.standard_normal(shape))
    wide = sign * 10.0 ** rng.uniform(-6, np.log10(mag), shape)
    if profile == "wide":
        return wide
    special = rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0], shape)
    return np.where(rng.random(shape) < 0.3, special, wide)


def cast(values, dtype):
    """values (float64) as an array of `dtype`, whatever the dtype."""
    dtype = np.dtype(dtype)
    with np.errstate(all="ignore"):
        if dtype.fields:
            out = np.zeros(values.shape, dtype)
            out["x"] = values
            return out
        if dtype.kind in "USMm":
            return np.nan_to_num(values).astype(np.int64).astype(dtype)
        if dtype.kind in "iub":
            return np.nan_to_num(values, posinf=0, neginf=0).astype(dtype)
        return values.astype(dtype)


def lay_out(x, layout, axis=0):
    """x (C-contiguous) rearranged in memory as `layout`; same shape and, except
    for 'broadcast' (constant along `axis`), the same values."""
    if x.ndim == 0 and layout in ("F", "strided", "negative", "transposed", "broadcast"):
        layout = "C"
    axis = axis % max(x.ndim, 1)
    if layout == "C":
        return np.array(x, order="C", copy=True)
    if layout == "F":
        return np.asfortranarray(x)
    if layout == "strided":
        big_shape = list(x.shape)
        big_shape[axis] *= 2
        big = np.zeros(big_shape, x.dtype)
        index = [slice(None)] * x.ndim
        index[axis] = slice(None, None, 2)
        big[tuple(index)] = x
        return big[tuple(index)]
    if layout == "negative":
        return np.flip(np.flip(x, axis).copy(), axis)
    if layout == "transposed":
        return x.T.copy().T
    if layout == "readonly":
        y = x.copy()
        y.setflags(write=False)
        return y
    if layout == "unaligned":
        if x.dtype.hasobject or x.dtype.itemsize == 1:
            return x.copy()
        buf = np.zeros(x.nbytes + 1, np.uint8)
        y = buf[1:].view(x.dtype).reshape(x.shape)
        y[...] = x
        return y
    if layout == "offset":  # contiguous, inside a larger buffer it does not own
        buf = np.zeros(x.size + 3, x.dtype)
        y = buf[2:2 + x.size].reshape(x.shape)
        y[...] = x
        return y
    if layout == "broadcast":  # zero stride along axis, read-only
        return np.broadcast_to(x.take([0] if x.shape[axis] else [], axis=axis)
                               if x.shape[axis] else x, x.shape)
    raise AssertionError(layout)


@functools.lru_cache(maxsize=None)
def _specs(subnormal, specials, layouts, p_bad=0.0):
    """Every (value profile, layout, axis) combination, simplest first, then (for
    arguments) enough "bad" entries to make up p_bad of the choices."""
    profiles = [p for p in VALUE_PROFILES
                if (subnormal or p != "subnormal") and (specials or p != "specials")]
    specs = tuple((p, layout, axis) for p in profiles for layout in layouts
                  for axis in ((0, 1, 2, 3) if layout in ("strided", "negative", "broadcast") else (0,)))
    return specs + ("bad",) * int(round(len(specs) * p_bad / (1 - p_bad))) if p_bad < 1 else ("bad",)


def array(data, shape, label, *, dtype=F32, layouts=LAYOUTS, subnormal=False, specials=True,
          spec=None, **value_kw):
    """An array of `shape` and `dtype` with drawn values and memory layout."""
    if spec is None:
        spec = pick(data, _specs(subnormal, specials, tuple(layouts)), f"{label}.spec")
    profile, layout, axis = spec
    values = float_values(shape, profile, **value_kw)
    return lay_out(cast(values, dtype), layout, axis)


# ---------------------------------------------------------------- wrong arguments

def wrong_shape(data, shape, label):
    """A shape that differs from `shape`: another ndim, or one dimension changed."""
    shape = list(shape)
    how = pick(data, ["dim", "add", "drop"] if shape else ["add"], f"{label}.wrong")
    if how == "add":
        pos = integer(data, 0, len(shape), f"{label}.pos")
        return tuple(shape[:pos] + [integer(data, 0, 3, f"{label}.new")] + shape[pos:])
    pos = integer(data, 0, len(shape) - 1, f"{label}.pos")
    if how == "drop":
        return tuple(shape[:pos] + shape[pos + 1:])
    new = pick(data, [0, 1, shape[pos] + 1, max(shape[pos] - 1, 0), 2 * shape[pos] + 3], f"{label}.new")
    if new == shape[pos]:
        new += 1
    shape[pos] = new
    return tuple(shape)


NON_ARRAYS = ["list", "float", "int", "None", "str", "bytes", "complex", "Tensor",
              "np.float32 scalar", "0-d float64", "dict", "memoryview", "bool", "nested ragged"]


def non_array(data, shape, label):
    """Something that is not a NumPy array (or a plainly wrong one)."""
    kind = pick(data, NON_ARRAYS, f"{label}.non_array")
    values = np.zeros(shape, np.float32)
    return {
        "list": lambda: values.tolist(),
        "float": lambda: 1.5,
        "int": lambda: 3,
        "None": lambda: None,
        "str": lambda: "1.0",
        "bytes": lambda: b"\x00\x00\x80?",
        "complex": lambda: 1 + 2j,
        "Tensor": lambda: mg.Tensor(values),
        "np.float32 scalar": lambda: np.float32(2.0),
        "0-d float64": lambda: np.array(2.0),
        "dict": lambda: {"x": values},
        "memoryview": lambda: memoryview(values.reshape(-1)),
        "bool": lambda: True,
        "nested ragged": lambda: [[1.0, 2.0], [3.0]],
    }[kind]()


# A broadcast view of HUGE_DIM**2 float32 would need 1 PiB: more than the address
# space, so a copy fails at once whatever the kernel's overcommit setting.
HUGE_DIM = 2**24


def arg(data, shape, label, *, p_bad=0.2, allow_huge=True, **array_kw):
    """An argument meant to be a float32 array of `shape`: usually one (any layout,
    any values), otherwise a wrong dtype, a wrong shape, a non-array or a huge
    broadcast view (whose contiguous copy cannot be allocated)."""
    layouts = tuple(array_kw.pop("layouts", LAYOUTS))
    spec = pick(data, _specs(array_kw.get("subnormal", False), array_kw.get("specials", True),
                             layouts, p_bad), f"{label}.spec")
    if spec != "bad":
        return array(data, shape, label, spec=spec, **array_kw)
    bad = pick(data, ["dtype", "shape", "non_array", "huge"] if allow_huge
                                     else ["dtype", "shape", "non_array"], f"{label}.bad")
    if bad == "dtype":
        dtype = pick(data, BAD_DTYPES, f"{label}.dtype")
        return array(data, shape, label, dtype=dtype, **array_kw)
    if bad == "shape":
        return array(data, wrong_shape(data, shape, label), label, **array_kw)
    if bad == "huge" and len(shape) >= 1:
        dims = (HUGE_DIM, HUGE_DIM) + (1,) * (len(shape) - 2) if len(shape) > 1 else (HUGE_DIM**2,)
        return np.broadcast_to(np.float32(1.0), dims)
    return non_array(data, shape, label)


def alias_of(base, shape):
    """A float32 view of `shape` into the memory of `base` (or of the buffer `base`
    is a view of), overlapping it at least partly; None if there is none."""
    for buf in (base, getattr(base, "base", None)):
        if (isinstance(buf, np.ndarray) and buf.dtype == F32 and buf.flags.c_contiguous
                and buf.flags.writeable):
            flat = buf.reshape(-1)
            size = int(np.prod(shape))
            if size == 0 or flat.size < size:
                continue
            start = (flat.size - size) // 2
            return flat[start:start + size].reshape(shape)
    return None


def out_arg(data, shape, label, others=()):
    """An output buffer argument: None, a valid destination (any writable layout),
    a bad one (read-only, non-contiguous, wrong dtype/shape, non-array) or an
    alias of another argument (the same object, a view, a partial overlap)."""
    kind = pick(data, ["None", "fresh", "bad layout", "bad", "alias"], f"{label}.out")
    if kind == "None":
        return None
    if kind == "fresh":
        return array(data, shape, label, layouts=WRITABLE_LAYOUTS)
    if kind == "bad layout":
        layout = pick(data, [x for x in LAYOUTS if x not in WRITABLE_LAYOUTS], f"{label}.layout")
        return lay_out(np.zeros(shape, F32), layout, 0)
    if kind == "bad":
        return arg(data, shape, label, p_bad=1.0, allow_huge=False)
    candidates = [o for o in others if isinstance(o, np.ndarray)]
    if not candidates:
        return np.full(shape, np.nan, F32)
    other = pick(data, candidates, f"{label}.alias_of")
    how = pick(data, ["same", "view", "overlap"], f"{label}.alias")
    if how == "same" and other.shape == tuple(shape):
        return other
    if how == "view" and other.shape == tuple(shape):
        return other.view()
    view = alias_of(other, shape)
    return view if view is not None else np.full(shape, np.nan, F32)


# ---------------------------------------------------------------- scalars, flags, labels

_SCALARS_COMMON = (0.0, 1.0, 0.5, 0.9, 0.999, 1e-3, 2.0, -1.0, -0.5, 1e-7, 10.0,
                   float("nan"), float("inf"), float("-inf"), -0.0, 1e30, -1e30, 1e-30,
                   0, 1, -1, 3, 2**31, True, False,
                   np.float32(0.5), np.float64(0.1), np.int64(2), np.float16(1.0), np.uint8(1),
                   np.float32("nan"),
                   None, "0.1", 1 + 0j, np.array(0.5), [0.5], np.bool_(True), object())
_SCALARS_BEYOND_FLOAT32 = (1e39, -1e300, 1e-40, 1e-50, 5e-324)  # overflow / subnormal / 0 in float32
_SCALARS_HUGE_INT = (10**400, -10**400)                       # float(x) raises OverflowError
_SCALARS = _SCALARS_COMMON + _SCALARS_BEYOND_FLOAT32 + _SCALARS_HUGE_INT
_NO_DEFAULT = object()


def as_float(x):
    """float(x), or +-inf for an integer beyond float64 (float() raises OverflowError)."""
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def representable32(x):
    """x is a real number the kernels take as a hyper-parameter (kernels._scalar): NaN,
    +-inf, 0, or a finite value whose float32 rounding is a normal number."""
    if not isinstance(x, numbers.Real):
        return False
    try:
        v = float(x)
    except OverflowError:
        return False
    if not math.isfinite(v) or v == 0.0:
        return True
    with np.errstate(all="ignore"):
        m = abs(float(np.float32(v)))
    return TINY32 <= m <= float(np.finfo(np.float32).max)


def real_scalar(data, label, *, default=_NO_DEFAULT):
    """A hyper-parameter: `default` half the time, otherwise a sensible value, NaN,
    +-inf, huge, tiny, negative, an integer, a bool, a NumPy scalar, a value float32
    cannot represent (1e39, 1e-40: refused by the kernels), an integer beyond float64
    (10**400), or a non-number (None, str, complex, 0-d array, list, object)."""
    options = _SCALARS
    if default is not _NO_DEFAULT and boolean(data, f"{label}.default") is False:
        return default
    return options[integer(data, 0, len(options) - 1, label)]


FLAG_VALUES = (False, True, 0, 1, np.bool_(True), np.bool_(False), None, 2, np.array([True, False]))


def flag_ok(value):
    """value is a flag the kernels take (bool, integer or None)."""
    return not isinstance(value, np.ndarray)


def truth(value):
    """What a flag the kernels take means (False for a refused one)."""
    return flag_ok(value) and bool(value)


def flag(data, label, *, arrays=True):
    """A boolean option: bools, integers and None, or (with arrays) an array, which
    kernels._flag refuses."""
    return pick(data, FLAG_VALUES if arrays else FLAG_VALUES[:-1], label)


def labels(data, rows, cols, label):
    """Class indices for `rows` rows of `cols` classes: usually valid, else of any
    dtype, shape or value (negative, >= cols, huge int64, uint64 > 2**63)."""
    kind = integer(data, 0, 9, f"{label}.kind")
    rng = _rng()
    valid = rng.integers(0, max(cols, 1), rows)
    dtype = pick(data, INT_DTYPES if kind < 9 else ALL_DTYPES, f"{label}.dtype")
    if kind < 6:  # valid values (if cols > 0 and they fit the dtype)
        values = valid
    elif kind < 8:  # one bad value
        bad = pick(data, [-1, cols, cols + 1, 2**31 - 1, 2**62, 2**63 - 1, -2**63,
                                          2**63, 2**64 - 1, -2**31], f"{label}.bad")
        values = valid.astype(object)
        if rows:
            values[integer(data, 0, rows - 1, f"{label}.at")] = bad
    else:  # wrong shape
        values = rng.integers(0, max(cols, 1), wrong_shape(data, (rows,), label))
    with np.errstate(all="ignore"):
        try:
            out = np.array(values, dtype=dtype) if dtype.kind in "iub" else cast(
                np.asarray(values, dtype=np.float64), dtype)
        except OverflowError:  # the bad value does not fit this dtype: wrap it
            out = np.array([int(v) % 2**(8 * dtype.itemsize) for v in np.ravel(values)],
                           dtype=np.uint64).astype(dtype).reshape(np.shape(values))
    layout = pick(data, LAYOUTS, f"{label}.layout")
    return lay_out(out, layout, 0)


DIM_CHOICES = tuple(list(range(10)) * 8 + list(range(10, 41)) + [48, 63, 64, 65, 97, 128, 130, 145])


def dims(data, label):
    """One dimension: mostly small (0..9, with 0 and 1 common), sometimes medium,
    rarely big enough for the blocked and multi-threaded paths (one draw)."""
    return pick(data, DIM_CHOICES, label)


LONG_DIM_CHOICES = DIM_CHOICES + (8191, 8192, 8193, 40_000)  # element-wise kernels chunk by 8192


def shape(data, label, *, min_ndim=0, max_ndim=4, max_size=50_000):
    ndim = integer(data, min_ndim, max_ndim, f"{label}.ndim")
    result = [pick(data, LONG_DIM_CHOICES if ndim == 1 else DIM_CHOICES, f"{label}[{i}]")
              for i in range(ndim)]
    while np.prod(result, dtype=np.int64) > max_size:
        result[int(np.argmax(result))] //= 2
    return tuple(result)


# ---------------------------------------------------------------- describing a call

def describe(x):
    """A short, exact enough description of an argument for a reproducer."""
    if isinstance(x, np.ndarray):
        flags = []
        if not x.flags.c_contiguous:
            flags.append("non-C-contiguous")
        if not x.flags.writeable:
            flags.append("read-only")
        if not x.flags.aligned:
            flags.append("unaligned")
        text = f"array(shape={x.shape}, dtype={x.dtype}, strides={x.strides}{', ' if flags else ''}{', '.join(flags)}"
        if x.size <= 12 and not x.dtype.fields:
            try:  # the bytes of an uninitialised str array need not be valid characters
                text += f", values={x.tolist()!r}"
            except (SystemError, UnicodeDecodeError, ValueError):
                text += ", values=<not printable>"
        return text + f", id=0x{id(x):x})"
    if isinstance(x, (list, tuple)) and any(isinstance(y, np.ndarray) for y in x):
        inner = ", ".join(describe(y) for y in x)
        return f"[{inner}]" if isinstance(x, list) else f"({inner})"
    text = repr(x)
    return text if len(text) < 120 else text[:117] + "..."


def describe_call(name, args, kwargs):
    parts = [describe(a) for a in args] + [f"{k}={describe(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


# ---------------------------------------------------------------- gather_rows: rows, indices, outputs

# src dtypes beyond ALL_DTYPES: byte-swapped integers/complex, odd item sizes and
# packed structured rows (a row is copied as bytes, whatever it holds). No padded
# structured dtype: NumPy's own copies (np.array, tobytes) leave padding bytes undefined.
GATHER_DTYPES = ALL_DTYPES + [np.dtype(">i8"), np.dtype(">c8"), np.dtype("<U2"),
                              np.dtype([("x", "<f4"), ("y", "i1")]),
                              np.dtype([("x", ">f8"), ("t", "<M8[s]")])]
GATHER_COUNTS = DIM_CHOICES + (0, 1) + (255, 256, 300, 1000) * 4  # len(idx)
GATHER_BATCHES = (64, 128, 256, 1000, 0, 1, 7)  # len(idx) for wide rows: mostly mini-batches
IN_PLACE_LAYOUTS = ("C", "offset", "readonly")  # C-contiguous and aligned
GATHER_WIDTHS = (130, 784, 1000, 3, 1)  # wide rows: count * row >= 32768 floats is a parallel copy


def _bits_ok(dtype):
    """Any bit pattern is a value of this dtype that NumPy can print and copy
    (not object, bool, strings or unstructured voids)."""
    return not dtype.hasobject and (dtype.kind in "iufcmM" or dtype.fields is not None)


def raw_bits(shape, dtype):
    """An array of `shape` and `dtype` filled with random bytes: NaN payloads
    (signalling ones too), -0.0, subnormals, NaT, anything."""
    dtype = np.dtype(dtype)
    raw = _rng().integers(0, 256, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def overlapping_view(base, shape, dtype):
    """A C-contiguous, aligned view of `dtype` and `shape` into the memory of
    `base` (or of the buffer `base` is a view of), overlapping it at least partly;
    None if there is none. Bytes are reinterpreted: dtypes need not match."""
    dtype = np.dtype(dtype)
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if dtype.hasobject or need == 0:
        return None
    for buf in (base, getattr(base, "base", None)):
        if (isinstance(buf, np.ndarray) and not buf.dtype.hasobject and buf.flags.c_contiguous
                and buf.flags.writeable and buf.nbytes >= need):
            flat = buf.reshape(-1).view(np.uint8)
            start = (flat.size - need) // 2 // dtype.alignment * dtype.alignment
            return flat[start:start + need].view(dtype).reshape(shape)
    return None


def gather_src(data, label):
    """The rows for gather_rows: usually an array of any dtype (float32 half the
    time), 1 to 4 dimensions, any layout, float-profile values or random bytes;
    else a 0-d array, a non-array, or a broadcast view of 1 PiB."""
    kind = integer(data, 0, 19, f"{label}.kind")
    dtype = F32 if boolean(data, f"{label}.f32") else pick(data, GATHER_DTYPES, f"{label}.dtype")
    if kind == 16:
        return array(data, (), label, dtype=dtype)
    if kind == 17:
        return non_array(data, (3, 2), label)
    if kind >= 11:  # MNIST-like wide rows
        s = (dims(data, f"{label}.rows"), pick(data, GATHER_WIDTHS, f"{label}.width"))
    else:
        s = shape(data, label, min_ndim=1, max_ndim=4, max_size=20_000)
    if kind == 18:  # a broadcast view whose copy is 1 PiB, beyond the address space
        row = array(data, (1,) + s[1:3], label, dtype=dtype, layouts=["C"])
        return np.broadcast_to(row, (max(2**50 // max(row.nbytes, 1), 1),) + row.shape[1:])
    # half the time a layout the C kernel reads in place, else any (NumPy's take)
    layouts = IN_PLACE_LAYOUTS if boolean(data, f"{label}.in_place") else LAYOUTS
    if _bits_ok(dtype) and boolean(data, f"{label}.bits"):
        layout = pick(data, layouts, f"{label}.layout")
        return lay_out(raw_bits(s, dtype), layout, integer(data, 0, 3, f"{label}.axis"))
    return array(data, s, label, dtype=dtype, subnormal=True, layouts=layouts)


INDEX_SCALARS = (0, 1, -1, 2**63, np.int64(0), np.uint8(1), np.array(0), np.array([[0]]), 0.0, True,
                 None, "0", b"\x00", [0, 1.5], (0,), [], [[0]], range(2), slice(0, 1))


def gather_idx(data, count, rows, label):
    """Row indices: usually `count` integers in [0, rows) of any integer dtype and
    layout (fs.labels: also bad values, wrong shapes, every dtype); else
    byte-swapped, bool/float arrays of valid values, a list/tuple, a scalar or
    other non-array, or a masked array (whose masked entries may be out of range)."""
    kind = integer(data, 0, 24, f"{label}.kind")
    idx = labels(data, count, rows, label)
    if kind < 13 or kind > 19:
        return idx
    if kind == 13 and idx.dtype.kind in "iu" and idx.dtype.itemsize > 1:  # byte-swapped
        return idx.astype(idx.dtype.newbyteorder())
    if kind == 14:
        dtype = pick(data, [np.dtype(t) for t in (np.bool_, np.float64, np.float32, np.float16, ">f8")],
                     f"{label}.dtype")
        return idx.astype(dtype)
    if kind == 15:
        as_list = np.atleast_1d(idx).tolist()
        return as_list if boolean(data, f"{label}.list") else tuple(as_list)
    if kind == 16:
        return pick(data, INDEX_SCALARS, f"{label}.scalar")
    if kind == 17 and idx.ndim == 1 and idx.dtype.kind in "iu" and idx.size:
        mask = _rng().random(idx.shape) < 0.5
        hidden = np.array(idx)
        if boolean(data, f"{label}.hide_bad"):  # out-of-range data under the mask
            with np.errstate(all="ignore"):
                hidden[mask] = np.array(rows + 7).astype(idx.dtype)
        if boolean(data, f"{label}.all_masked"):
            mask[:] = True
        return np.ma.array(hidden, mask=mask)
    return idx


def sharing_buffer(data, shape, dtype, x, label):
    """(out, y): out a C-contiguous array of `shape` and `dtype`, y a C-contiguous
    copy of the array x, both in one buffer, y starting at the start, the middle or
    the end of out (so they overlap unless one is empty); (None, x) if x or dtype
    holds objects, or x is over 64 MiB."""
    dtype = np.dtype(dtype)
    if dtype.hasobject or x.dtype.hasobject or x.nbytes > 2**26:
        return None, x
    out_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.zeros(out_bytes + x.nbytes + 64, np.uint8)
    step = max(x.dtype.alignment, 1)
    start = integer(data, 0, 2, f"{label}.start") * out_bytes // 2 // step * step
    y = buf[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    y[...] = x
    return buf[:out_bytes].view(dtype).reshape(shape), y


GATHER_OUTS = ("None", "fresh", "fresh", "fresh", "dtype", "shape", "bad layout", "non_array", "src", "idx")


def gather_out(data, shape, dtype, src, idx, label):
    """(out, src, idx) for gather_rows: out None, a valid destination (sentinel
    bytes), of a wrong dtype/shape/layout, read-only, a non-array, src itself or
    a view of it, or overlapping src or idx; for the last, src or idx may be
    replaced by a copy (same values) in a buffer that out shares."""
    kind = pick(data, GATHER_OUTS, f"{label}.out")
    dtype = np.dtype(dtype)
    if kind == "None":
        return None, src, idx
    if kind == "dtype":
        wrong = pick(data, GATHER_DTYPES, f"{label}.dtype")
        if boolean(data, f"{label}.swapped") and dtype.kind in "iufc" and dtype.itemsize > 1:
            wrong = dtype.newbyteorder()
        if wrong == dtype:
            wrong = F32 if dtype != F32 else np.dtype(np.int32)
        return np.zeros(shape, wrong), src, idx
    if kind == "shape":
        return np.zeros(wrong_shape(data, shape, label), dtype), src, idx
    if kind == "bad layout":
        layout = pick(data, [x for x in LAYOUTS if x not in WRITABLE_LAYOUTS], f"{label}.layout")
        return lay_out(np.zeros(shape, dtype), layout, integer(data, 0, 3, f"{label}.axis")), src, idx
    if kind == "non_array":
        return non_array(data, shape, label), src, idx
    if kind == "src" and isinstance(src, np.ndarray):
        how = pick(data, ["same", "view", "overlap", "shared"], f"{label}.alias")
        if how == "same" and src.shape == tuple(shape):
            return src, src, idx
        if how == "view" and src.shape == tuple(shape):
            return src.view(), src, idx
        view = overlapping_view(src, shape, dtype) if how == "overlap" else None
        if view is not None:
            return view, src, idx
        out, shared = sharing_buffer(data, shape, dtype, src, label)
        if out is not None:
            return out, shared, idx
    if kind == "idx" and isinstance(idx, np.ndarray) and not isinstance(idx, np.ma.MaskedArray):
        out, shared = sharing_buffer(data, shape, dtype, idx, label)
        if out is not None:
            return out, src, shared
    out = lay_out(np.empty(shape, dtype), pick(data, WRITABLE_LAYOUTS, f"{label}.layout"))
    if not dtype.hasobject and dtype.kind != "U":  # (0x4D4D4D4D is no code point)
        out.reshape(-1).view(np.uint8)[...] = 0x4D  # sentinel bytes: an unwritten row shows
    return out, src, idx


# ---------------------------------------------------------------- planned steps: RowGather

# max_rows for RowGather: positive integers (plain, NumPy), else refused (0,
# negative, bool, float, None, str, an array), and sizes whose buffer NumPy cannot
# allocate (a MemoryError naming gather_rows).
MAX_ROWS = (1, 2, 3, 4, 7, 8, 16, 64, 200, np.int64(5), np.uint8(3), np.int32(1)) * 2 + (
            0, -1, -2**63, True, False, np.bool_(True), 2.0, 4.5, float("nan"), None, "4",
            np.array(4), np.array([4]), 1 + 0j)
MAX_ROWS_HUGE = (2**40, 2**62, 2**63 - 1, 2**64, np.uint64(2**64 - 1))


def max_rows(data, label):
    return pick(data, MAX_ROWS + MAX_ROWS_HUGE, label)


def row_order(data, rows, label):
    """An order for RowGather.set_order: usually a permutation or a sample with
    repeats of [0, rows) (any integer dtype and layout), else whatever gather_idx
    draws (bad values, dtypes, shapes, lists, scalars, masked arrays)."""
    kind = integer(data, 0, 4, f"{label}.kind")
    if kind < 3 and rows:
        n = pick(data, (rows, max(rows - 1, 0), 2 * rows + 1, 1, 0), f"{label}.len")
        perm = np.concatenate([_rng().permutation(rows) for _ in range(n // rows + 1)])[:n]
        dtype = pick(data, INT_DTYPES, f"{label}.dtype")
        if rows - 1 > np.iinfo(dtype).max:
            dtype = np.dtype(np.int64)
        return lay_out(perm.astype(dtype), pick(data, LAYOUTS, f"{label}.layout"))
    return gather_idx(data, pick(data, (rows, 0, 1, 5, 17, 2 * rows + 3), f"{label}.count"), rows, label)


# start/stop for RowGather.take: ints of any kind around the interesting bounds,
# bools, NumPy integers (unsigned too), floats, None, strings
TAKE_BOUND_ODD = (-1, -2**63, 2**63, 2**70, True, False, np.int64(1), np.uint64(0), np.int8(-1),
                  np.int64(2**62), 0.0, 1.0, 0.5, np.float64(1.0), float("nan"), None, "1", np.bool_(True))


def _take_bound(data, n_order, cap, label):
    kind = integer(data, 0, 9, f"{label}.kind")
    if kind < 6:
        return integer(data, 0, max(n_order, 0), label)
    if kind < 8:
        return pick(data, (cap, cap + 1, n_order + 1, max(n_order - cap, 0)), f"{label}.near")
    return pick(data, TAKE_BOUND_ODD, f"{label}.odd")


def take_bounds(data, n_order, cap, label):
    """(start, stop) for take: mostly in [0, n_order] or near cap (the buffer's
    rows), else odd (negative, huge, bool, NumPy, float, None, str)."""
    return _take_bound(data, n_order, cap, f"{label}.start"), _take_bound(data, n_order, cap, f"{label}.stop")

