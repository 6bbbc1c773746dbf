"""sigmoid, tanh, dropout and the fused sigmoid + BCE: the C kernels against
hand-computed values (on both backends), against float64 math (accuracy in
ulps), and against their NumPy twins in minigrad.reference on
hypothesis-generated shapes and values; dropout's statistics and thread
invariance; replay of recorded calls; refusal of bad input."""
import doctest
import math
import re
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import EPS32, F32, assert_bitwise_equal, check_kernel, run_both
from minigrad import kernels, reference
from minigrad._C import ffi, lib
from minigrad.kernels import elementwise, tape

HYP = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FLT_MIN = float(np.finfo(F32).tiny)
SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=9)
# any float32 but subnormals (which the C kernels read as 0), with NaN, +-inf,
# -0.0 and +-1e4 drawn often
EDGES = st.sampled_from([np.nan, np.inf, -np.inf, -0.0, 1e4, -1e4])
SPECIAL = st.one_of(st.floats(width=32, allow_subnormal=False), EDGES)
# For bitwise comparisons of float32 arithmetic: magnitudes in [2^-40, 2^40] (and
# the specials), so that no product in these kernels can underflow into the
# subnormals that C flushes to zero and NumPy keeps.
MODERATE = st.one_of(st.floats(2.0**-40, 2.0**40, width=32), st.floats(-2.0**40, -2.0**-40, width=32),
                     st.sampled_from([0.0, 1.0, 0.5]), EDGES)
SEEDS = st.integers(0, 2**64 - 1)


def arr(*values):
    return np.array(values, dtype=F32)


def _ordered(x):
    """float32 bits as integers that increase with the value (so ulps subtract)."""
    i = np.ascontiguousarray(x, dtype=F32).view(np.int32).astype(np.int64)
    return np.where(i < 0, -(i & 0x7FFFFFFF), i)


def assert_within_ulps(got, exact, max_ulps, what):
    """got (float32) is within max_ulps of exact (float64) rounded to float32;
    where the exact value is below FLT_MIN, got may be 0 (flushed) instead."""
    got, exact = np.asarray(got), np.asarray(exact, dtype=np.float64)
    assert got.dtype == F32 and got.shape == exact.shape, what
    nan = np.isnan(exact)
    assert np.array_equal(np.isnan(got), nan), f"{what}: NaN in different places"
    tiny = np.abs(exact) < FLT_MIN
    assert np.all(np.abs(got[tiny & ~nan]) <= FLT_MIN), f"{what}: a value below FLT_MIN is not flushed"
    check = ~nan & ~tiny
    with np.errstate(over="ignore"):
        want = exact.astype(F32)
    ulps = np.abs(_ordered(got[check]) - _ordered(want[check]))
    if ulps.size and ulps.max() > max_ulps:
        i = int(np.argmax(ulps))
        raise AssertionError(f"{what}: {ulps.max()} ulps off at {got[check][i]!r} vs exact "
                             f"{exact[check][i]!r} (at most {max_ulps} allowed)")


def raises(exc, text, fn, *args, **kwargs):
    with pytest.raises(exc, match=re.escape(text)):
        fn(*args, **kwargs)


# ============================================================== golden values

def test_sigmoid_golden(backend):
    x = arr(0, -0.0, 1e4, -1e4, np.inf, -np.inf, 3.4e38, -3.4e38, 100, -100)
    y = backend.sigmoid_forward(x)
    np.testing.assert_array_equal(y[:8], arr(0.5, 0.5, 1, 0, 1, 0, 1, 0))
    assert y[8] == 1.0 and 0 <= y[9] < FLT_MIN  # e^-100 = 3.7e-44: 0 in C, a subnormal in NumPy
    assert np.isnan(backend.sigmoid_forward(arr(np.nan))[0])
    # 1 / (1 + e^-1) = 0.7310585786300049
    assert abs(float(backend.sigmoid_forward(arr(1))[0]) - 0.7310585786300049) <= 2 * EPS32
    assert backend.sigmoid_forward(x, out=x) is x  # in place
    np.testing.assert_array_equal(x[:4], arr(0.5, 0.5, 1, 0))


def test_tanh_golden(backend):
    x = arr(0, -0.0, 1e4, -1e4, np.inf, -np.inf, 3.4e38, 20, -20)
    y = backend.tanh_forward(x)
    assert_bitwise_equal(y, arr(0, -0.0, 1, -1, 1, -1, 1, 1, -1), "tanh")  # -0.0 keeps its sign
    assert np.isnan(backend.tanh_forward(arr(np.nan))[0])
    assert abs(float(backend.tanh_forward(arr(0.5))[0]) - 0.46211715726000974) <= EPS32 * 0.5


def test_activation_backward_golden(backend):
    # exact in float32: 2 * 0.5 * (1 - 0.5) and 3 * (1 - 0.25)
    np.testing.assert_array_equal(backend.sigmoid_backward(arr(0.5, 0, 1), arr(2, 5, 5)), arr(0.5, 0, 0))
    np.testing.assert_array_equal(backend.tanh_backward(arr(0.5, 1, -1, 0), arr(3, 5, 5, 7)),
                                  arr(2.25, 0, 0, 7))
    dy = arr(2, 2)
    assert backend.sigmoid_backward(arr(0.5, 0.5), dy, out=dy) is dy  # in place over dy
    np.testing.assert_array_equal(dy, arr(0.5, 0.5))


def test_bce_golden(backend):
    # logit 0 gives p = 1/2 and a loss of ln 2 for either target
    loss, probs = backend.sigmoid_bce_forward(arr(0, 0), arr(1, 0))
    assert loss.shape == () and loss.dtype == F32
    assert float(loss) == np.float32(math.log(2.0))
    np.testing.assert_array_equal(probs, arr(0.5, 0.5))
    z = arr([0, 2], [-3, 100])
    t = arr([1, 0], [0, 1])
    by_hand = [math.log(2.0), 2 + math.log1p(math.exp(-2)), math.log1p(math.exp(-3)), math.log1p(math.exp(-100))]
    loss, _ = backend.sigmoid_bce_forward(z, t)
    assert abs(float(loss) - sum(by_hand) / 4) <= 2 * EPS32 * float(loss)
    # stable: huge logits give the exact |z| where log(sigmoid) would be log(0)
    loss, probs = backend.sigmoid_bce_forward(arr(1e4, -1e4, 1e4, -1e4), arr(0, 1, 1, 0))
    assert float(loss) == 5000.0
    np.testing.assert_array_equal(probs, arr(1, 0, 1, 0))


def test_bce_is_keras_mean_over_last_axis_then_batch(backend, rng):
    z, t = rng.standard_normal((7, 3)).astype(F32) * 4, (rng.random((7, 3)) < 0.5).astype(F32)
    z64, t64 = z.astype(np.float64), t.astype(np.float64)
    per_element = -(t64 * np.log(1 / (1 + np.exp(-z64))) + (1 - t64) * np.log(1 - 1 / (1 + np.exp(-z64))))
    keras = per_element.mean(axis=-1).mean()
    loss, _ = backend.sigmoid_bce_forward(z, t)
    assert abs(float(loss) - keras) <= 4 * EPS32 * keras


def test_bce_backward_golden(backend):
    got = backend.sigmoid_bce_backward(arr(0.5, 0.25, 1), arr(1, 0, 1), 0.5)
    np.testing.assert_array_equal(got, arr(-0.25, 0.125, 0))


def test_bce_empty_loss_is_zero(backend):
    loss, probs = backend.sigmoid_bce_forward(np.zeros((0, 1), F32), np.zeros((0, 1), F32))
    assert float(loss) == 0.0 and probs.shape == (0, 1)


# Random123's published known-answer vectors for Philox-4x32-10
PHILOX_KAT = [
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
]


@pytest.mark.parametrize("counter,key,expected", PHILOX_KAT)
def test_philox_known_answers(backend, counter, key, expected):
    assert backend.philox4x32_10(counter, key).tolist() == expected


@pytest.mark.parametrize("rate", [0.5, 0.3, 0.9, 1e-9, 1 - 1e-10])  # the last keeps no word
def test_dropout_uses_philox_words_as_documented(backend, rate):
    # element i of (seed, step) is kept iff u = (word i % 4 of block (i // 4, step)) / 2**32 >= rate,
    # compared here as exact fractions
    seed, step = 0x0123456789ABCDEF, 2**33 + 5
    blocks = 64
    words = [int(w) for b in range(blocks) for w in
             reference.philox4x32_10([b, 0, step & 0xFFFFFFFF, step >> 32], [seed & 0xFFFFFFFF, seed >> 32])]
    keep = np.array([Fraction(w, 2**32) >= Fraction(rate) for w in words])
    y, mask = backend.dropout_forward(np.ones(4 * blocks, F32), rate, seed, backend.DropoutCounter(step))
    scale = F32(1 / (1 - rate))
    np.testing.assert_array_equal(mask, np.where(keep, scale, F32(0)))
    np.testing.assert_array_equal(y, mask)


def test_dropout_rate_zero_is_identity(backend):
    x = arr(1.5, -2, np.inf, 0)
    y, mask = backend.dropout_forward(x, 0.0, 7, backend.DropoutCounter())
    assert_bitwise_equal(y, x, "y")
    np.testing.assert_array_equal(mask, np.ones(4, F32))


def test_dropout_backward_golden(backend):
    mask = arr(2, 0, 2, 0)
    np.testing.assert_array_equal(backend.dropout_backward(arr(1, 1, -3, np.nan), mask), arr(2, 0, -6, 0))


# ============================================================== accuracy against float64

def _grid(lo, hi, n, rng):
    return np.concatenate([np.linspace(lo, hi, n), rng.uniform(lo, hi, n)]).astype(F32)


def test_sigmoid_within_2_ulps(rng):
    # every float32 around the FLT_MIN cut-off (-87.3365), where exp leaves the normal range
    edge = np.arange(np.float32(-87.32).view(np.int32), np.float32(-87.35).view(np.int32),
                     dtype=np.int32).view(F32)
    x = np.concatenate([_grid(-90, 90, 500_000, rng), _grid(-1, 1, 100_000, rng), edge,
                        arr(-87.33654, -87.33655, 17, 16.6, 1e-20, -1e-20, 3e38, -3e38)])
    assert edge.size > 3000
    assert_within_ulps(kernels.sigmoid_forward(x), reference.sigmoid_forward(x.astype(np.float64)), 2,
                       "sigmoid")


def test_tanh_within_1_ulp(rng):
    x = np.concatenate([_grid(-12, 12, 500_000, rng), _grid(-0.7, 0.7, 100_000, rng),
                        arr(0.625, -0.625, 0.62499997, 1e-20, -1e-30, 3e38, 9.01, 8.9)])
    assert_within_ulps(kernels.tanh_forward(x), np.tanh(x.astype(np.float64)), 1, "tanh")


def test_finite_inputs_never_give_nan_or_inf():
    big = np.finfo(F32).max
    x = arr(big, -big, 1e30, -1e30, 88.8, -88.8, 87.4, -87.4, -103.9, 17.1, -17.1, 1e-38, -1e-38)
    for fn in (kernels.sigmoid_forward, kernels.tanh_forward):
        assert np.all(np.isfinite(fn(x))), fn.__name__
    loss, probs = kernels.sigmoid_bce_forward(x, np.tile(arr(0, 1), 7)[:x.size])
    assert np.isfinite(loss) and np.all(np.isfinite(probs))


# ============================================================== against the twins

@settings(max_examples=60, **HYP)
@given(x=hnp.arrays(F32, SHAPES, elements=SPECIAL))
def test_activations_match_reference(x):
    (got,), (want,) = [r[:1] for r in run_both("sigmoid_forward", x)]
    assert_within_ulps(got, want.astype(np.float64), 2, "sigmoid vs twin")
    (got,), (want,) = [r[:1] for r in run_both("tanh_forward", x)]
    assert_within_ulps(got, want.astype(np.float64), 1, "tanh vs twin")
    y = x.copy()
    assert kernels.sigmoid_forward(y, out=y) is y  # in place, same bits as out of place
    assert_bitwise_equal(y, kernels.sigmoid_forward(x), "in-place sigmoid")


@settings(max_examples=60, **HYP)
@given(y=hnp.arrays(F32, SHAPES, elements=MODERATE), data=st.data())
def test_backwards_bitwise_equal_reference(y, data):
    dy = data.draw(hnp.arrays(F32, y.shape, elements=MODERATE))
    check_kernel("sigmoid_backward", y, dy, bitwise=True)
    check_kernel("tanh_backward", y, dy, bitwise=True)
    check_kernel("tanh_backward", y, dy, dy, bitwise=True)  # in place over dy
    mask = np.where(data.draw(hnp.arrays(np.bool_, y.shape)), F32(1.25), F32(0))
    check_kernel("dropout_backward", dy, mask, bitwise=True)
    check_kernel("sigmoid_bce_backward", y, dy, data.draw(st.floats(1e-6, 1e3)), bitwise=True)


@settings(max_examples=50, **HYP)
@given(z=hnp.arrays(F32, SHAPES, elements=st.one_of(st.floats(-1e4, 1e4, width=32),
                                                   st.sampled_from([np.nan, np.inf, -np.inf, -0.0]))),
       data=st.data())
def test_bce_forward_matches_reference(z, data):
    t = data.draw(hnp.arrays(F32, z.shape, elements=st.sampled_from([0.0, 1.0, 0.25])))
    (loss, probs, *_), (rloss, rprobs, *_) = run_both("sigmoid_bce_forward", z, t)
    np.testing.assert_allclose(loss, rloss, rtol=4 * EPS32, atol=0, equal_nan=True)
    assert_within_ulps(probs, rprobs.astype(np.float64), 2, "probs vs twin")
    assert_bitwise_equal(probs, kernels.sigmoid_forward(z), "probs vs sigmoid_forward")


@settings(max_examples=50, **HYP)
@given(x=hnp.arrays(F32, SHAPES, elements=SPECIAL), rate=st.one_of(st.floats(0, 0.999), st.just(0.5)),
       seed=SEEDS, step=st.one_of(st.integers(0, 2**63 - 2), st.integers(0, 5)))
def test_dropout_bitwise_equals_reference(x, rate, seed, step):
    counter, rcounter = kernels.DropoutCounter(step), reference.DropoutCounter(step)
    y, mask = kernels.dropout_forward(x, rate, seed, counter)
    with np.errstate(over="ignore"):  # x * scale may overflow to inf, in C as well
        ry, rmask = reference.dropout_forward(x, rate, seed, rcounter)
    assert_bitwise_equal(y, ry, "y")
    assert_bitwise_equal(mask, rmask, "mask")
    assert counter.value == rcounter.value == step + 1


@pytest.mark.parametrize("n", [1, 5, 8191, 8193, 70001])
def test_large_arrays_match_reference(n, rng):
    x = (rng.standard_normal(n) * 10).astype(F32)
    x[rng.integers(0, n, 3)] = [np.nan, -np.inf, -0.0]
    assert_within_ulps(kernels.sigmoid_forward(x), reference.sigmoid_forward(x).astype(np.float64), 2, "sigmoid")
    assert_within_ulps(kernels.tanh_forward(x), reference.tanh_forward(x).astype(np.float64), 1, "tanh")
    t = (rng.random(n) < 0.5).astype(F32)
    (loss, *_), (rloss, *_) = run_both("sigmoid_bce_forward", np.nan_to_num(x, nan=1.0, neginf=-5.0), t)
    np.testing.assert_allclose(loss, rloss, rtol=4 * EPS32)
    check_kernel("dropout_forward", x, 0.3, 11, kernels.DropoutCounter(3), bitwise=True)


def test_non_contiguous_input_is_accepted(rng):
    x = rng.standard_normal((6, 8)).astype(F32)[:, ::2]
    assert_bitwise_equal(kernels.tanh_forward(x), kernels.tanh_forward(np.ascontiguousarray(x)), "tanh")
    y, _ = kernels.dropout_forward(x, 0.5, 3, kernels.DropoutCounter())
    ry, _ = reference.dropout_forward(x, 0.5, 3, reference.DropoutCounter())
    assert_bitwise_equal(y, ry, "dropout")


# ============================================================== dropout statistics and determinism

@pytest.mark.parametrize("rate", [0.1, 0.3, 0.9])
def test_dropout_keep_fraction_and_exact_scale(rate):
    n = 1_000_000
    x = np.random.default_rng(5).standard_normal(n).astype(F32)
    y, mask = kernels.dropout_forward(x, rate, 2024, kernels.DropoutCounter())
    kept = mask != 0
    sigma = math.sqrt(rate * (1 - rate) / n)
    assert abs(kept.mean() - (1 - rate)) < 5 * sigma, kept.mean()
    scale = F32(1 / (1 - rate))
    assert np.all(mask[kept] == scale)
    assert_bitwise_equal(y[kept], x[kept] * scale, "kept values")
    assert np.all(y[~kept] == 0) and not np.any(np.signbit(y[~kept]))
    # each word position of a Philox block keeps its share on its own
    # (n / 4 samples: twice the standard deviation)
    for j in range(4):
        assert abs(kept[j::4].mean() - (1 - rate)) < 5 * 2 * sigma, j


def test_dropout_drops_inf_and_nan_to_exact_zero():
    x = np.full(4096, np.inf, F32)
    x[::2] = np.nan
    y, mask = kernels.dropout_forward(x, 0.5, 1, kernels.DropoutCounter())
    assert np.all(y[mask == 0] == 0)
    assert np.array_equal(np.isnan(y), np.isnan(x) & (mask != 0))


def test_dropout_same_bits_for_1_2_3_threads(restore_threads):
    x = np.random.default_rng(9).standard_normal(300_007).astype(F32)
    runs = []
    for threads in (1, 2, 3):
        kernels.set_num_threads(threads)
        runs.append(kernels.dropout_forward(x, 0.45, 77, kernels.DropoutCounter(12)))
        runs.append(kernels.sigmoid_bce_forward(x, (x > 0.3).astype(F32)))
        runs.append((kernels.sigmoid_forward(x), kernels.tanh_forward(x)))
    for i in range(3, 9):
        for a, b in zip(runs[i], runs[i % 3]):
            assert_bitwise_equal(a, b, f"run {i} at {1 + i // 3} threads")


def test_dropout_masks_depend_on_seed_and_step_only():
    x = np.ones(10_000, F32)
    counter = kernels.DropoutCounter(40)
    _, m40 = kernels.dropout_forward(x, 0.5, 1, counter)
    _, m41 = kernels.dropout_forward(x, 0.5, 1, counter)
    assert counter.value == 42
    _, again = kernels.dropout_forward(x, 0.5, 1, kernels.DropoutCounter(40))
    _, other_seed = kernels.dropout_forward(x, 0.5, 2, kernels.DropoutCounter(40))
    _, prefix = kernels.dropout_forward(x[:777], 0.5, 1, kernels.DropoutCounter(40))
    assert_bitwise_equal(again, m40, "same seed and step")
    assert_bitwise_equal(prefix, m40[:777], "element i does not depend on the array size")
    for other in (m41, other_seed):  # independent masks agree on about half the elements
        assert 0.45 < np.mean(other == m40) < 0.55


# ============================================================== recording and replay

def test_replay_of_recorded_calls_equals_eager(rng):
    x = rng.standard_normal((64, 33)).astype(F32)
    t = (rng.random((64, 33)) < 0.5).astype(F32)
    counter = kernels.DropoutCounter(100)
    with tape.Tape() as recording:
        s = kernels.sigmoid_forward(x)
        h = kernels.tanh_forward(s)
        d, mask = kernels.dropout_forward(h, 0.25, 5, counter)
        loss, probs = kernels.sigmoid_bce_forward(d, t)
        grad = kernels.sigmoid_bce_backward(probs, t, 1.0 / t.size)
        dd = kernels.dropout_backward(grad, mask)
        dh = kernels.tanh_backward(h, dd)
        ds = kernels.sigmoid_backward(s, dh)
    assert counter.value == 101
    for step in (101, 102, 103):
        x[...] = rng.standard_normal(x.shape)  # new inputs in the same buffers
        recording.replay()
        assert counter.value == step + 1  # each replay draws the next step's mask
        es = kernels.sigmoid_forward(x)
        eh = kernels.tanh_forward(es)
        ed, emask = kernels.dropout_forward(eh, 0.25, 5, kernels.DropoutCounter(step))
        eloss, eprobs = kernels.sigmoid_bce_forward(ed, t)
        egrad = kernels.sigmoid_bce_backward(eprobs, t, 1.0 / t.size)
        eds = kernels.sigmoid_backward(es, kernels.tanh_backward(eh, kernels.dropout_backward(egrad, emask)))
        for name, got, want in [("sigmoid", s, es), ("tanh", h, eh), ("dropout", d, ed), ("mask", mask, emask),
                                ("loss", loss, eloss), ("probs", probs, eprobs), ("grad", grad, egrad),
                                ("dx", ds, eds)]:
            assert_bitwise_equal(got, want, f"replay at step {step}: {name}")


def test_replay_reads_the_counter_as_it_is_now():
    x = np.ones(1000, F32)
    counter = kernels.DropoutCounter()
    with tape.Tape() as recording:
        _, mask = kernels.dropout_forward(x, 0.5, 9, counter)
    counter.value = 500  # e.g. a restored checkpoint: the recording follows it
    recording.replay()
    assert counter.value == 501
    _, want = kernels.dropout_forward(x, 0.5, 9, kernels.DropoutCounter(500))
    assert_bitwise_equal(mask, want, "mask after the counter was set")


# ============================================================== bad input

def test_wrong_dtype_is_refused():
    x64 = np.zeros(4)
    raises(TypeError, "sigmoid_forward: expected x of dtype float32, received float64", kernels.sigmoid_forward, x64)
    raises(TypeError, "tanh_backward: expected dy of dtype float32, received float64",
           kernels.tanh_backward, np.zeros(4, F32), x64)
    raises(TypeError, "dropout_forward: expected x of dtype float32, received float64",
           kernels.dropout_forward, x64, 0.5, 1, kernels.DropoutCounter())
    raises(TypeError, "sigmoid_bce_forward: expected target of dtype float32, received int64",
           kernels.sigmoid_bce_forward, np.zeros(4, F32), np.zeros(4, np.int64))
    raises(TypeError, "sigmoid_forward: expected x to be a numpy float32 array, received list",
           kernels.sigmoid_forward, [1.0])
    raises(TypeError, "sigmoid_forward: expected out to be a float32 array, received array of shape (4,) "
           "and dtype float64", kernels.sigmoid_forward, np.zeros(4, F32), x64)


def test_shape_mismatch_is_refused():
    a, b = np.zeros(3, F32), np.zeros(4, F32)
    raises(ValueError, "sigmoid_backward: expected y and dy of the same shape, received (3,) and (4,)",
           kernels.sigmoid_backward, a, b)
    raises(ValueError, "dropout_backward: expected mask and dy of the same shape, received (4,) and (3,)",
           kernels.dropout_backward, a, b)
    raises(ValueError, "sigmoid_bce_forward: expected target of the logits' shape (3, 1), received (3,)",
           kernels.sigmoid_bce_forward, np.zeros((3, 1), F32), a)
    raises(ValueError, "sigmoid_bce_backward: expected target of the probs' shape (3,), received (4,)",
           kernels.sigmoid_bce_backward, a, b, 1.0)
    raises(ValueError, "sigmoid_bce_forward: expected loss_out of shape (), received (1,)",
           kernels.sigmoid_bce_forward, a, a, None, np.zeros(1, F32))
    raises(ValueError, "dropout_forward: expected mask_out of shape (3,), received (4,)",
           kernels.dropout_forward, a, 0.5, 1, kernels.DropoutCounter(), None, b)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), float("inf")])
def test_dropout_rate_outside_0_1_is_refused(rate):
    counter = kernels.DropoutCounter(3)
    raises(ValueError, f"dropout_forward: expected rate in [0, 1), received {rate!r}",
           kernels.dropout_forward, np.zeros(4, F32), rate, 1, counter)
    assert counter.value == 3  # a refused call draws nothing


def test_dropout_bad_arguments_are_refused():
    x = np.zeros(4, F32)
    raises(TypeError, "dropout_forward: expected rate to be a real number, received str",
           kernels.dropout_forward, x, "0.5", 1, kernels.DropoutCounter())
    raises(TypeError, "dropout_forward: expected rate to be a real number, received bool",
           kernels.dropout_forward, x, True, 1, kernels.DropoutCounter())
    raises(ValueError, "dropout_forward: expected seed in [0, 2**64), received -1",
           kernels.dropout_forward, x, 0.5, -1, kernels.DropoutCounter())
    raises(ValueError, f"dropout_forward: expected seed in [0, 2**64), received {2**64}",
           kernels.dropout_forward, x, 0.5, 2**64, kernels.DropoutCounter())
    raises(TypeError, "dropout_forward: expected seed to be an integer, received float",
           kernels.dropout_forward, x, 0.5, 1.0, kernels.DropoutCounter())
    raises(TypeError, "dropout_forward: expected counter to be a DropoutCounter, received int",
           kernels.dropout_forward, x, 0.5, 1, 0)
    raises(ValueError, "DropoutCounter: expected a step in [0, 2**63 - 1), received -1", kernels.DropoutCounter, -1)
    raises(ValueError, "DropoutCounter: expected a step in [0, 2**63 - 1), received 1.5", kernels.DropoutCounter, 1.5)
    raises(ValueError, "philox4x32_10: expected key to be 2 integers in [0, 2**32), received [0, 4294967296]",
           kernels.philox4x32_10, [0, 0, 0, 0], [0, 2**32])


def test_aliasing_is_refused():
    buf = np.zeros(9, F32)
    raises(ValueError, "sigmoid_forward: out must not share memory with x",
           kernels.sigmoid_forward, buf[:8], buf[1:])
    raises(ValueError, "tanh_backward: out must not share memory with y",
           kernels.tanh_backward, buf[1:], buf[:8], buf[:8].view())
    dy = buf[:8]
    raises(ValueError, "tanh_backward: out is written in place, so it must not share memory with y",
           kernels.tanh_backward, buf[1:], dy, dy)
    raises(ValueError, "dropout_backward: out is written in place, so it must not share memory with mask",
           kernels.dropout_backward, dy, buf[1:], dy)
    raises(ValueError, "dropout_forward: mask_out must not share memory with out",
           kernels.dropout_forward, np.zeros(8, F32), 0.5, 1, kernels.DropoutCounter(), buf[:8], buf[1:])
    raises(ValueError, "dropout_forward: mask_out must not share memory with x",
           kernels.dropout_forward, buf[:8], 0.5, 1, kernels.DropoutCounter(), None, buf[:8])
    raises(ValueError, "sigmoid_bce_forward: probs_out must not share memory with target",
           kernels.sigmoid_bce_forward, np.zeros(9, F32), buf, buf)
    raises(ValueError, "sigmoid_bce_backward: out must not share memory with probs",
           kernels.sigmoid_bce_backward, buf, np.zeros(9, F32), 1.0, buf)
    raises(ValueError, "sigmoid_bce_backward: expected scale to be 0 or a float32-representable magnitude",
           kernels.sigmoid_bce_backward, buf, buf, 1e-40)


def test_c_refuses_impossible_arguments():
    # the wrappers never pass these; the C side still checks what it is given
    x = np.zeros(4, F32)
    px, py, pm = (ffi.from_buffer("float[]", a) for a in (x, np.zeros(4, F32), np.zeros(4, F32)))
    step = np.zeros(1, np.int64)
    pstep = ffi.from_buffer("int64_t[]", step)
    assert lib.mg_dropout_forward(px, py, pm, 4, 1.0, 0, pstep) == lib.MG_EINVAL
    assert lib.mg_dropout_forward(px, py, pm, 4, float("nan"), 0, pstep) == lib.MG_EINVAL
    assert lib.mg_dropout_forward(px, py, pm, -1, 0.5, 0, pstep) == lib.MG_EINVAL
    step[0] = -1
    assert lib.mg_dropout_forward(px, py, pm, 4, 0.5, 0, pstep) == lib.MG_EINVAL
    step[0] = 2**63 - 1  # could not be incremented
    assert lib.mg_dropout_forward(px, py, pm, 4, 0.5, 0, pstep) == lib.MG_EINVAL
    assert step[0] == 2**63 - 1
    assert lib.mg_dropout_forward(px, py, pm, 4, 0.5, 0, ffi.NULL) == lib.MG_EINVAL
    for fn in (lib.mg_sigmoid_forward, lib.mg_tanh_forward):
        assert fn(px, py, -1) == lib.MG_EINVAL
    assert lib.mg_sigmoid_bce_forward(px, px, py, pm, -1) == lib.MG_EINVAL


def test_docstring_examples_run():
    result = doctest.testmod(elementwise)
    assert result.failed == 0 and result.attempted >= 3
