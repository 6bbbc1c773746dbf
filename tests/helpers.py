"""Shared test helpers: kernel-vs-twin comparison, bitwise checks, subprocess runs.

Imported by the test files as ``helpers`` (pytest puts tests/ on sys.path).
"""
import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from minigrad import kernels, reference

F32 = np.float32
EPS32 = float(np.finfo(np.float32).eps)


def mnist_dir():
    """A folder holding the four MNIST .gz files, found as the loader looks (MINIGRAD_DATA,
    then the cache), plus shared/mnist beside the repository. When none has them the test
    skips with a one-line reason, except under CI (CI set), where it fails."""
    from minigrad.datasets import _fetch
    candidates = [os.environ.get("MINIGRAD_DATA"),
                  Path(__file__).resolve().parents[2] / "shared" / "mnist", _fetch.cache_dir()]
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    for candidate in candidates:
        if candidate and all((Path(candidate) / n).is_file() for n in names):
            return Path(candidate)
    reason = ("MNIST not found: set MINIGRAD_DATA to a folder with the four MNIST .gz files, or "
              "run `python -c 'from minigrad.datasets import mnist; mnist.load_data()'` once online")
    if os.environ.get("CI"):
        raise AssertionError(reason + " (CI never skips these tests)")
    import pytest
    pytest.skip(reason)


def rand(rng, *shape, scale=1.0, low=None):
    """float32 normal(0, scale) values, or uniform(low, scale) when low is given."""
    if low is not None:
        return rng.uniform(low, scale, shape).astype(F32)
    return (rng.standard_normal(shape) * scale).astype(F32)


def bits(x):
    """The raw bits of a float32 array (NaN payloads, -0.0 and all)."""
    x = np.ascontiguousarray(x)
    assert x.dtype == F32, x.dtype
    return x.view(np.uint32)


def assert_bitwise_equal(got, want, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if not np.array_equal(bits(got), bits(want)):
        diff = np.flatnonzero(bits(got).ravel() != bits(want).ravel())
        i = diff[0]
        raise AssertionError(f"{what}: {diff.size} element(s) differ bitwise, first at flat "
                             f"index {i}: {got.ravel()[i]!r} vs {want.ravel()[i]!r}")


def assert_same_state(a, b, what):
    """Two models' weights, optimizer slots and step count bitwise equal."""
    for i, (wa, wb) in enumerate(zip(a.get_weights(), b.get_weights())):
        assert_bitwise_equal(wa, wb, f"{what}: weight {i}")
    va, vb = a.optimizer.variables(), b.optimizer.variables()
    assert len(va) == len(vb), what
    for i, (sa, sb) in enumerate(zip(va, vb)):
        assert_bitwise_equal(sa, sb, f"{what}: optimizer slot {i}")
    assert a.optimizer.iterations == b.optimizer.iterations, what


def _outputs(result, args):
    """Everything a kernel produced: its return value(s) and every array argument
    (so in-place updates are compared too)."""
    out = []

    def walk(x):
        if isinstance(x, (tuple, list)):
            for y in x:
                walk(y)
        elif isinstance(x, np.ndarray) or isinstance(x, float):
            out.append(np.asarray(x))
    walk(result)
    walk(args)
    return out


def run_both(name, *args, **kwargs):
    """Call kernels.<name> and reference.<name> on independent deep copies of the
    arguments; return (kernel outputs, reference outputs) as flat lists of arrays."""
    kargs, rargs = copy.deepcopy(args), copy.deepcopy(args)
    kkw, rkw = copy.deepcopy(kwargs), copy.deepcopy(kwargs)
    got = getattr(kernels, name)(*kargs, **kkw)
    with np.errstate(all="ignore"):
        want = getattr(reference, name)(*rargs, **rkw)
    return _outputs(got, (kargs, kkw)), _outputs(want, (rargs, rkw))


def check_kernel(name, *args, rtol=1e-5, atol=1e-6, bitwise=False, **kwargs):
    """kernels.<name>(*args) must match reference.<name>(*args): every output and
    every argument it modifies, to rtol/atol (or bit for bit). NaNs must match NaNs."""
    got, want = run_both(name, *args, **kwargs)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"{name} output {i}: shape {g.shape} != {w.shape}"
        if bitwise:
            assert_bitwise_equal(g.astype(F32), w.astype(F32), f"{name} output {i}")
        else:
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True,
                                       err_msg=f"{name} output {i}")
    return got


def gemm_tol(a, b, k, alpha=1.0, beta=0.0, out=None, bias=None):
    """(rtol, atol) for a float32 GEMM against a float64 reference. The rounding
    error of a length-K dot product grows like sqrt(K) * max|a| * max|b| (measured
    worst case on random data: about 2 * eps * that; we allow 16x)."""
    amax = float(np.max(np.abs(a))) if a.size else 0.0
    bmax = float(np.max(np.abs(b))) if b.size else 0.0
    root_k = np.sqrt(max(k, 1))
    atol = 16 * EPS32 * root_k * amax * bmax * abs(alpha)
    if beta and out is not None and out.size:
        atol += 4 * EPS32 * abs(beta) * float(np.max(np.abs(out)))
    if bias is not None and bias.size:
        atol += 4 * EPS32 * float(np.max(np.abs(bias)))
    return 16 * EPS32 * root_k, atol + 1e-30


# ---------------------------------------------------------------- subprocesses

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(snippet, env=None, timeout=120):
    """Run a Python snippet in a fresh interpreter; return the CompletedProcess.
    A segfault there fails the test instead of killing pytest."""
    full_env = dict(os.environ)
    # .ci/sanitize's leak pass checks the pytest process itself; a child gets these
    # options instead (LeakSanitizer off: its tracer crashes in short-lived children)
    if "MINIGRAD_CHILD_ASAN_OPTIONS" in full_env:
        full_env["ASAN_OPTIONS"] = full_env["MINIGRAD_CHILD_ASAN_OPTIONS"]
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(snippet)], cwd=REPO,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def assert_snippet_ok(snippet, *expected, env=None):
    """The snippet must exit with status 0 (no crash) and print every expected string."""
    proc = run_python(snippet, env=env)
    assert proc.returncode == 0, (f"subprocess exited with {proc.returncode} "
                                  f"(negative = killed by signal)\nstdout:\n{proc.stdout}\n"
                                  f"stderr:\n{proc.stderr}")
    for text in expected:
        assert text in proc.stdout, f"expected {text!r} in subprocess output:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout
