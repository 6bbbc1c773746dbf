"""Kernel benchmarks: each minigrad C kernel against the NumPy expression it
replaces (and PyTorch's CPU op, when torch is importable), at the shapes of the
book's MNIST MLP (784-512-10, batch 128), plus one large GEMM.

Run (from the repository root):
    /work/venv/bin/python -m pytest benchmarks/ --benchmark-only
Options (see conftest.py): --bench-threads 1,2  --bench-reps 3  --bench-ops gemm,relu
                           --bench-wait-quiet SECONDS  --bench-json PATH

Every row allocates its output, as the training step does (kernels.gemm(a, b),
a @ b, torch.mm(a, b)). The minigrad result is checked against NumPy once per op
before it is timed, so a fast but wrong kernel cannot produce a good number.
Rows of one op are run back to back (minigrad, numpy, torch), and the whole
trio is repeated --bench-reps times (interleaved), so that the ratio of each
trio is measured under the same machine load.
"""
import math
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import minigrad as mg
from minigrad import kernels

import _benchlib as bl

torch = bl.try_import_torch()
if torch is not None:
    import torch.nn.functional as F
    aten = torch.ops.aten

B, D_IN, D_HID, D_OUT = bl.BATCH, bl.D_IN, bl.D_HID, bl.D_OUT
IMPLS = ("minigrad", "numpy", "torch")
SETTLE_S = 0.15  # idle seconds before each row (see test_kernel)


def _rng():
    return np.random.default_rng(12345)


def _normal(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


def _rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    denom = np.linalg.norm(want)
    return np.linalg.norm(got - want) / (denom if denom else 1.0)


def _check_close(got, want, tol=1e-5):
    if not isinstance(got, tuple):
        got, want = (got,), (want,)
    for g, w in zip(got, want):
        err = _rel_err(g, w)
        assert err <= tol, f"minigrad differs from NumPy: relative error {err:.2e} > {tol:.0e}"


# ---------------------------------------------------------------- the ops
#
# Each op: a description, its FLOPs (GEMMs only, else None), rounds for slow ops
# (None: pytest-benchmark calibrates), and make(torch) -> (impls, check) where
# impls maps an implementation name to a zero-argument callable.

def _gemm(m, k, n, trans_a=False, trans_b=False):
    def make(torch):
        rng = _rng()
        a = _normal(rng, *((k, m) if trans_a else (m, k)))
        b = _normal(rng, *((n, k) if trans_b else (k, n)))
        op_a = a.T if trans_a else a  # NumPy passes the transpose flag to sgemm: no copy
        op_b = b.T if trans_b else b
        impls = {
            "minigrad": lambda: kernels.gemm(a, b, trans_a=trans_a, trans_b=trans_b),
            "numpy": lambda: op_a @ op_b,
        }
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            ta, tb = (ta.t() if trans_a else ta), (tb.t() if trans_b else tb)
            impls["torch"] = lambda: torch.mm(ta, tb)
        return impls, lambda: _check_close(impls["minigrad"](), impls["numpy"](), 1e-5)
    return make


def _dense_relu_on(make_x):
    """relu(x @ W1 + b1) on the batch make_x() returns (each impl's fused form)."""
    def make(torch):
        rng = _rng()
        x = make_x(rng)
        w, b = _normal(rng, D_IN, D_HID) * 0.05, _normal(rng, D_HID)
        impls = {
            "minigrad": lambda: kernels.gemm(x, w, bias=b, relu=True),
            "numpy": lambda: np.maximum(x @ w + b, 0),
        }
        if torch is not None:
            tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
            impls["torch"] = lambda: torch.relu(torch.addmm(tb, tx, tw))
        return impls, lambda: _check_close(impls["minigrad"](), impls["numpy"]())
    return make


_dense_relu = _dense_relu_on(lambda rng: _normal(rng, B, D_IN))


def _mnist_batch():
    """128 real MNIST images in [0, 1]: 81% exact zeros, which minigrad's GEMM skips."""
    try:
        x, _ = bl.real_mnist(bl.default_mnist_dir(), B)
    except (FileNotFoundError, ValueError) as exc:
        pytest.skip(f"no MNIST for the zero-skipping rows ({exc}); set MINIGRAD_DATA")
    return x


def _zero_skipping(make):
    """The op of `make`, whose check also requires that minigrad's call took the
    zero-skipping path (its counter moved by one)."""
    def made(torch):
        impls, check = make(torch)

        def check_skipped():
            before = kernels.zero_skipping_calls()
            check()
            assert kernels.zero_skipping_calls() == before + 1, "the zero-skipping path was not taken"
        return impls, check_skipped
    return made


def _mnist_dW1(torch):
    rng = _rng()
    x, dz = _mnist_batch(), _normal(rng, B, D_HID)
    impls = {
        "minigrad": lambda: kernels.gemm(x, dz, trans_a=True),
        "numpy": lambda: x.T @ dz,
    }
    if torch is not None:
        tx, tdz = torch.from_numpy(x), torch.from_numpy(dz)
        impls["torch"] = lambda: torch.mm(tx.t(), tdz)
    return impls, lambda: _check_close(impls["minigrad"](), impls["numpy"]())


def _gather_rows(torch):
    """A shuffled batch of 128 rows out of 60000x784 images. Each call takes the next
    batch of one permutation (as fit does), so the rows come from memory, not cache."""
    rng = _rng()
    x = rng.random((bl.N_TRAIN, D_IN), dtype=np.float32)
    order = rng.permutation(bl.N_TRAIN)
    batches = [order[i:i + B] for i in range(0, bl.N_TRAIN - B + 1, B)]
    out = {"minigrad": np.empty((B, D_IN), np.float32), "numpy": np.empty((B, D_IN), np.float32)}
    position = {"minigrad": 0, "numpy": 0, "torch": 0}

    def next_batch(impl):
        position[impl] = (position[impl] + 1) % len(batches)
        return batches[position[impl]]
    impls = {
        "minigrad": lambda: kernels.gather_rows(x, next_batch("minigrad"), out["minigrad"]),
        "numpy": lambda: np.take(x, next_batch("numpy"), axis=0, out=out["numpy"]),
    }
    if torch is not None:
        tx, tidx = torch.from_numpy(x), [torch.from_numpy(b) for b in batches]

        def torch_gather():
            next_batch("torch")
            return torch.index_select(tx, 0, tidx[position["torch"]])
        impls["torch"] = torch_gather

    def check():
        idx = batches[0]
        np.testing.assert_array_equal(kernels.gather_rows(x, idx), x[idx])
    return impls, check


def _add_bias(torch):
    rng = _rng()
    x, b = _normal(rng, B, D_HID), _normal(rng, D_HID)
    impls = {"minigrad": lambda: kernels.add_bias(x, b), "numpy": lambda: x + b}
    if torch is not None:
        tx, tb = torch.from_numpy(x), torch.from_numpy(b)
        impls["torch"] = lambda: tx + tb
    return impls, lambda: _check_close(impls["minigrad"](), impls["numpy"](), 1e-7)


def _relu_fwd(torch):
    z = _normal(_rng(), B, D_HID)
    impls = {"minigrad": lambda: kernels.relu_forward(z), "numpy": lambda: np.maximum(z, 0)}
    if torch is not None:
        tz = torch.from_numpy(z)
        impls["torch"] = lambda: torch.relu(tz)
    return impls, lambda: _check_close(impls["minigrad"](), impls["numpy"](), 0)


def _relu_inputs(torch):
    rng = _rng()
    y = np.maximum(_normal(rng, B, D_HID), 0)  # a forward output: about half zeros
    dy = _normal(rng, B, D_HID)
    t = (torch.from_numpy(y), torch.from_numpy(dy)) if torch is not None else None
    return y, dy, t


def _relu_bwd(torch):
    y, dy, t = _relu_inputs(torch)
    zero = np.float32(0)
    impls = {"minigrad": lambda: kernels.relu_backward(y, dy),
             "numpy": lambda: np.where(y > 0, dy, zero)}
    if t is not None:  # what PyTorch's autograd runs for relu
        impls["torch"] = lambda: aten.threshold_backward(t[1], t[0], 0)
    return impls, lambda: _check_close(impls["minigrad"](), impls["numpy"](), 0)


def _relu_bwd_bias_grad(torch):
    y, dy, t = _relu_inputs(torch)
    zero = np.float32(0)

    def numpy_impl():
        dx = np.where(y > 0, dy, zero)
        return dx, dx.sum(axis=0)

    def torch_impl():
        dx = aten.threshold_backward(t[1], t[0], 0)
        return dx, dx.sum(0)

    impls = {"minigrad": lambda: kernels.relu_backward_bias_grad(y, dy), "numpy": numpy_impl}
    if t is not None:
        impls["torch"] = torch_impl
    return impls, lambda: _check_close(tuple(impls["minigrad"]()), numpy_impl(), 1e-6)


def _bias_grad(torch):
    dy = _normal(_rng(), B, D_HID)
    impls = {"minigrad": lambda: kernels.bias_grad(dy), "numpy": lambda: dy.sum(axis=0)}
    if torch is not None:
        tdy = torch.from_numpy(dy)
        impls["torch"] = lambda: tdy.sum(0)
    return impls, lambda: _check_close(impls["minigrad"](), impls["numpy"](), 1e-6)


def _logits_labels():
    rng = _rng()
    return _normal(rng, B, D_OUT) * 3, rng.integers(0, D_OUT, B, dtype=np.int64)


def numpy_softmax_xent_forward(z, y):
    """Mean cross-entropy via a stable log-softmax; returns (loss, probs)."""
    s = z - z.max(axis=1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean(dtype=np.float64), np.exp(logp)


def numpy_softmax_xent_backward(probs, y, scale):
    g = probs.copy()
    g[np.arange(len(y)), y] -= 1
    g *= np.float32(scale)
    return g


def _softmax_xent_fwd(torch):
    z, y = _logits_labels()
    impls = {"minigrad": lambda: kernels.softmax_xent_forward(z, y),
             "numpy": lambda: numpy_softmax_xent_forward(z, y)}
    if torch is not None:
        tz, ty = torch.from_numpy(z), torch.from_numpy(y)
        impls["torch"] = lambda: F.cross_entropy(tz, ty)  # log_softmax + nll_loss

    def check():
        loss, probs, _ = impls["minigrad"]()
        ref_loss, ref_probs = numpy_softmax_xent_forward(z, y)
        _check_close((np.float64(loss), probs), (ref_loss, ref_probs), 1e-5)
    return impls, check


def _softmax_xent_bwd(torch):
    z, y = _logits_labels()
    _, probs = numpy_softmax_xent_forward(z, y)
    probs = probs.astype(np.float32)
    scale = 1.0 / B
    impls = {"minigrad": lambda: kernels.softmax_xent_backward(probs, y, scale),
             "numpy": lambda: numpy_softmax_xent_backward(probs, y, scale)}
    if torch is not None:  # the two backward kernels PyTorch's autograd runs for cross_entropy
        tz, ty = torch.from_numpy(z), torch.from_numpy(y)
        logp = torch.log_softmax(tz, 1)
        one = torch.tensor(1.0)
        total_weight = torch.tensor(float(B))

        def torch_impl():
            g = aten.nll_loss_backward(one, logp, ty, None, 1, -100, total_weight)
            return aten._log_softmax_backward_data(g, logp, 1, torch.float32)
        impls["torch"] = torch_impl
    return impls, lambda: _check_close(impls["minigrad"](), impls["numpy"](), 1e-6)


def _rmsprop(torch):
    rng = _rng()
    shapes = [(D_IN, D_HID), (D_HID,), (D_HID, D_OUT), (D_OUT,)]
    assert sum(math.prod(s) for s in shapes) == bl.N_PARAMS

    def state():
        ws = [_normal(rng, *s) * 0.05 for s in shapes]
        gs = [_normal(rng, *s) * 1e-2 for s in shapes]
        vs = [np.abs(_normal(rng, *s)) * 1e-4 for s in shapes]
        return ws, gs, vs

    mw, mg_, mv = state()
    nw, ng, nv = [w.copy() for w in mw], [g.copy() for g in mg_], [v.copy() for v in mv]
    one_minus_rho, lr, eps = np.float32(1 - bl.RHO), np.float32(bl.LR), np.float32(bl.EPS)
    rho = np.float32(bl.RHO)

    def numpy_impl():
        for w, g, v in zip(nw, ng, nv):
            v *= rho
            v += one_minus_rho * g * g
            w -= lr * g / np.sqrt(v + eps)

    impls = {"minigrad": lambda: kernels.rmsprop_update(mw, mg_, mv, bl.LR, bl.RHO, bl.EPS),
             "numpy": numpy_impl}
    if torch is not None:  # the optimizer's own step (eps outside the root: same cost)
        tw, tg, _ = state()
        params = [torch.nn.Parameter(torch.from_numpy(w)) for w in tw]
        for p, g in zip(params, tg):
            p.grad = torch.from_numpy(g)
        opt = torch.optim.RMSprop(params, lr=bl.LR, alpha=bl.RHO, eps=bl.EPS)
        impls["torch"] = opt.step

    def check():  # on copies: one step from the same state
        ws, gs, vs = state()
        w2, v2 = [w.copy() for w in ws], [v.copy() for v in vs]
        kernels.rmsprop_update(ws, gs, vs, bl.LR, bl.RHO, bl.EPS)
        for w, g, v in zip(w2, gs, v2):
            v *= rho
            v += one_minus_rho * g * g
            w -= lr * g / np.sqrt(v + eps)
        _check_close(tuple(ws + vs), tuple(w2 + v2), 1e-6)
    return impls, check


# name: (description, flops, pedantic rounds or None, factory)
OPS = {
    "gemm_fwd1": ("gemm x@W1 (128x784)@(784x512)", 2 * B * D_IN * D_HID, None,
                  _gemm(B, D_IN, D_HID)),
    "gemm_fwd2": ("gemm h@W2 (128x512)@(512x10)", 2 * B * D_HID * D_OUT, None,
                  _gemm(B, D_HID, D_OUT)),
    "gemm_dW1_tn": ("gemm x.T@dz (784x128)@(128x512) trans_a", 2 * B * D_IN * D_HID, None,
                    _gemm(D_IN, B, D_HID, trans_a=True)),
    "gemm_dh_nt": ("gemm dz@W2.T (128x10)@(10x512) trans_b", 2 * B * D_HID * D_OUT, None,
                   _gemm(B, D_OUT, D_HID, trans_b=True)),
    "gemm_dW2_tn": ("gemm h.T@dz2 (512x128)@(128x10) trans_a", 2 * B * D_HID * D_OUT, None,
                    _gemm(D_HID, B, D_OUT, trans_a=True)),
    "dense_relu": ("fused dense relu(x@W1+b1) 128x784x512", 2 * B * D_IN * D_HID, None,
                   _dense_relu),
    # Real MNIST images as op(a): minigrad skips their zero pixels, NumPy and
    # PyTorch multiply them. GFLOP/s count the dense FLOPs (same work done).
    "mnist_dense_relu": ("MNIST batch: relu(x@W1+b1) 128x784x512, zero-skipping",
                         2 * B * D_IN * D_HID, None,
                         _zero_skipping(_dense_relu_on(lambda rng: _mnist_batch()))),
    "mnist_dW1_tn": ("MNIST batch: x.T@dz (784x128)@(128x512), zero-skipping",
                     2 * B * D_IN * D_HID, None, _zero_skipping(_mnist_dW1)),
    "gather_rows": ("gather_rows: 128 shuffled rows of 60000x784", None, None, _gather_rows),
    "add_bias": ("add_bias 128x512", None, None, _add_bias),
    "relu_fwd": ("relu forward 128x512", None, None, _relu_fwd),
    "relu_bwd": ("relu backward 128x512", None, None, _relu_bwd),
    "relu_bwd_bias_grad": ("relu backward + bias grad 128x512", None, None, _relu_bwd_bias_grad),
    "bias_grad": ("bias_grad (column sums) 128x512", None, None, _bias_grad),
    "softmax_xent_fwd": ("softmax-xent forward 128x10, int labels", None, None, _softmax_xent_fwd),
    "softmax_xent_bwd": ("softmax-xent backward 128x10, int labels", None, None, _softmax_xent_bwd),
    "rmsprop_update": ("rmsprop_update 407,050 params (4 arrays)", None, None, _rmsprop),
    "gemm_2048": ("gemm 2048x2048x2048", 2 * 2048 ** 3, 3, _gemm(2048, 2048, 2048)),
}

_made = {}  # op name -> (impls, check); built once, shared by every row of the op
_checked = set()


def _impls(op):
    if op not in _made:
        _made[op] = OPS[op][3](torch)
    return _made[op]


@pytest.mark.parametrize("impl", [
    pytest.param(name, marks=pytest.mark.skipif(name == "torch" and torch is None,
                                                reason="PyTorch is not importable"))
    for name in IMPLS])
@pytest.mark.parametrize("op", list(OPS))
def test_kernel(benchmark, op, impl, threads, rep, request):
    description, flops, rounds, _ = OPS[op]
    impls, check = _impls(op)
    if op not in _checked:
        check()
        _checked.add(op)
    fn = impls[impl]
    benchmark.group = f"{op}: {description} | {threads} thread{'s' if threads > 1 else ''}"
    benchmark.extra_info.update(op=op, description=description, impl=impl,
                                threads=threads, rep=rep)
    if flops:
        benchmark.extra_info["flops"] = flops
    mg.set_num_threads(threads)
    mg.set_adaptive_threads(False)  # a row at n threads runs n (bench_load.py measures adaptation)
    if torch is not None:
        torch.set_num_threads(threads)
    # The row before may have been another library's: OpenBLAS's worker threads
    # keep spinning for ~0.1 s after a call (measured here: one core busy for
    # 0.10 s; libgomp's and PyTorch's for < 0.01 s), and at 2 threads they would
    # take a core from this row's first rounds.
    time.sleep(SETTLE_S)
    waited, _ = bl.wait_for_quiet(request.config.getoption("--bench-wait-quiet"))
    if waited > 0.5:
        benchmark.extra_info["waited_s"] = round(waited, 1)
    with threadpool_limits(limits=threads, user_api="blas"), bl.CpuMonitor() as load:
        if rounds:
            benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
        else:
            benchmark(fn)
    benchmark.extra_info["other_cores"] = round(load.other_cores, 2)  # other processes' load
    stats = getattr(benchmark, "stats", None)
    if flops and stats is not None:
        benchmark.extra_info["gflops"] = round(flops / stats.stats.median / 1e9, 2)
