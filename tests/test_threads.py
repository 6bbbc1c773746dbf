"""Thread invariance: 1, 2 and 3 threads give bit-for-bit the same results, for
every kernel at sizes that really run in parallel (>= 32768 elements, GEMMs of
millions of flops) and for whole training steps; plus the thread-count API."""
import numpy as np
import pytest

import minigrad as mg
from minigrad import kernels
from helpers import F32, assert_bitwise_equal, assert_snippet_ok, rand

THREADS = (1, 2, 3)


@pytest.fixture(autouse=True)
def fixed_team():
    """The team is exactly the configured count here (the machine may be busy:
    adaptation would shrink it and the tests would not exercise 2 or 3 threads)."""
    was = mg.get_adaptive_threads()
    mg.set_adaptive_threads(False)
    yield
    mg.set_adaptive_threads(was)


def same_at_all_thread_counts(compute, what):
    """Run compute() at 1, 2 and 3 threads; every output must be bitwise equal."""
    results = {}
    for n in THREADS:
        mg.set_num_threads(n)
        assert mg.get_num_threads() == n
        out = compute()
        results[n] = [np.array(x, dtype=F32, copy=True) for x in (out if isinstance(out, (list, tuple)) else [out])]
    for n in THREADS[1:]:
        for i, (a, b) in enumerate(zip(results[THREADS[0]], results[n])):
            assert_bitwise_equal(b, a, f"{what}, output {i}, {n} threads vs {THREADS[0]}")
    return results[THREADS[0]]


# ---------------------------------------------------------------- thread-count API

def test_set_get_round_trip(restore_threads):
    for n in (1, 2, 3, 5, np.int64(2)):
        mg.set_num_threads(n)
        assert mg.get_num_threads() == n
    assert kernels.get_num_threads is mg.get_num_threads


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None, 2.0])
def test_set_num_threads_rejects_non_positive_integers(bad, restore_threads):
    before = mg.get_num_threads()
    with pytest.raises(ValueError, match=f"set_num_threads: expected a positive integer, received {bad!r}"):
        mg.set_num_threads(bad)
    assert mg.get_num_threads() == before


# ---------------------------------------------------------------- kernels

GEMM_CASES = [  # (m, k, n, trans_a, trans_b)
    (128, 784, 512, False, False),
    (257, 300, 129, False, False),
    (784, 128, 512, True, False),   # dW = x.T @ dz
    (128, 512, 784, False, True),   # dx = dz @ W.T
    (257, 300, 129, True, True),
    (128, 784, 10, False, False),   # a 10-class output layer (narrow n)
    (10, 2053, 300, True, True),
]


@pytest.mark.parametrize("m,k,n,trans_a,trans_b", GEMM_CASES)
def test_gemm_thread_invariant(m, k, n, trans_a, trans_b, restore_threads):
    rng = np.random.default_rng(m * n + k)
    a = rand(rng, *((k, m) if trans_a else (m, k)))
    b = rand(rng, *((n, k) if trans_b else (k, n)))
    bias, c0 = rand(rng, n), rand(rng, m, n)

    def compute():
        plain = kernels.gemm(a, b, trans_a=trans_a, trans_b=trans_b)
        fused = kernels.gemm(a, b, c0.copy(), trans_a=trans_a, trans_b=trans_b, alpha=0.5, beta=-1.25,
                             bias=bias, relu=True)
        return plain, fused

    plain, _ = same_at_all_thread_counts(compute, f"gemm {m}x{k}x{n}")
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    np.testing.assert_allclose(plain, want, rtol=1e-4, atol=1e-4 * np.sqrt(k))  # and it is right


def test_elementwise_and_reduction_kernels_thread_invariant(restore_threads):
    rng = np.random.default_rng(5)
    rows, cols = 600, 257  # 154k elements
    x, b = rand(rng, rows, cols), rand(rng, cols)
    y = np.maximum(x, 0)
    dy = rand(rng, rows, cols)
    flat = rand(rng, 100_003)

    same_at_all_thread_counts(lambda: kernels.add_bias(x, b), "add_bias")
    same_at_all_thread_counts(lambda: kernels.bias_grad(dy), "bias_grad")
    same_at_all_thread_counts(lambda: kernels.relu_forward(flat), "relu_forward")
    same_at_all_thread_counts(lambda: kernels.relu_backward(y, dy), "relu_backward")
    same_at_all_thread_counts(lambda: kernels.relu_backward_bias_grad(y, dy), "relu_backward_bias_grad")


@pytest.mark.parametrize("kind", ["index", "dense"])
def test_softmax_xent_thread_invariant(kind, restore_threads):
    rng = np.random.default_rng(6)
    rows, cols = 4001, 10  # rows * cols >= 32768 for the backward too
    logits = rand(rng, rows, cols, scale=5.0)
    labels = rng.integers(0, cols, rows)
    target = labels if kind == "index" else np.eye(cols, dtype=F32)[labels] * 0.9 + 0.01

    def compute():
        loss, probs, row_loss = kernels.softmax_xent_forward(logits, target)
        return np.float32(loss), probs, row_loss, kernels.softmax_xent_backward(probs, target, 1.0 / rows)

    same_at_all_thread_counts(compute, f"softmax_xent ({kind})")


@pytest.mark.parametrize("update", ["rmsprop", "rmsprop_outside", "sgd", "momentum", "nesterov", "adam"])
def test_optimizers_thread_invariant(update, restore_threads):
    rng = np.random.default_rng(8)
    sizes = [100_000, 40_000, 10]
    w0 = [rand(rng, n) for n in sizes]
    g = [rand(rng, n, scale=0.01) for n in sizes]

    def compute():
        w = [x.copy() for x in w0]
        s1 = [np.zeros(n, F32) for n in sizes]
        s2 = [np.zeros(n, F32) for n in sizes]
        for step in (1, 2, 3):
            if update.startswith("rmsprop"):
                kernels.rmsprop_update(w, g, s1, 0.001, 0.9, 1e-7, eps_inside=update == "rmsprop")
            elif update == "sgd":
                kernels.sgd_update(w, g, None, 0.01)
            elif update in ("momentum", "nesterov"):
                kernels.sgd_update(w, g, s1, 0.01, 0.9, nesterov=update == "nesterov")
            else:
                kernels.adam_update(w, g, s1, s2, 0.001, 0.9, 0.999, 1e-7, step)
        return w + s1

    same_at_all_thread_counts(compute, update)


# ---------------------------------------------------------------- whole training steps

# The same code runs here and in subprocesses (exec'd), so both compute the same thing.
TRAIN_CODE = """
import hashlib
import numpy as np
import minigrad as mg
from minigrad import kernels

def train(steps=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((128, 784)).astype(np.float32)
    y = rng.integers(0, 10, 128)
    w1 = mg.Tensor((rng.standard_normal((784, 64)) * 0.05).astype(np.float32), requires_grad=True)
    b1 = mg.Tensor(np.zeros(64, np.float32), requires_grad=True)
    w2 = mg.Tensor((rng.standard_normal((64, 10)) * 0.1).astype(np.float32), requires_grad=True)
    b2 = mg.Tensor(np.zeros(10, np.float32), requires_grad=True)
    params = [w1, b1, w2, b2]
    slots = [np.zeros(p.shape, np.float32) for p in params]
    losses = []
    for _ in range(steps):
        for p in params:
            p.grad = None
        h = mg.dense(mg.Tensor(x), w1, b1, "relu")
        loss = mg.softmax_cross_entropy(mg.dense(h, w2, b2), y)
        loss.backward()
        kernels.rmsprop_update([p.numpy() for p in params], [p.grad for p in params], slots,
                               0.001, 0.9, 1e-7)
        losses.append(loss.item())
    return [p.numpy() for p in params] + slots, losses

def digest():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((128, 784)).astype(np.float32)
    b = rng.standard_normal((784, 512)).astype(np.float32)
    arrays, _ = train()
    h = hashlib.sha256(kernels.gemm(a, b).tobytes())
    for arr in arrays:
        h.update(arr.tobytes())
    return h.hexdigest()
"""


def test_training_steps_thread_invariant(restore_threads):
    ns = {}
    exec(TRAIN_CODE, ns)
    results = {}
    for n in THREADS:
        mg.set_num_threads(n)
        results[n] = ns["train"]()
    arrays1, losses1 = results[1]
    assert losses1[-1] < losses1[0]  # it trains
    for n in THREADS[1:]:
        arrays, losses = results[n]
        assert losses == losses1
        for i, (a, b) in enumerate(zip(arrays, arrays1)):
            assert_bitwise_equal(a, b, f"parameter/slot {i} after 3 steps at {n} threads")


@pytest.mark.parametrize("omp_threads", ["1", "3"])
def test_default_thread_count_from_environment_and_bitwise_equal(omp_threads, restore_threads):
    ns = {}
    exec(TRAIN_CODE, ns)
    mg.set_num_threads(2)
    expected = ns["digest"]()
    out = assert_snippet_ok(TRAIN_CODE + "\nprint('threads', mg.get_num_threads())\nprint('digest', digest())\n",
                            f"threads {omp_threads}\n",
                            env={"OMP_NUM_THREADS": omp_threads, "MINIGRAD_ADAPTIVE_THREADS": "0"})
    assert f"digest {expected}" in out


# ---------------------------------------------------------------- the sizes above really go parallel

PARALLEL_CALLS = {
    "gemm": ("kernels.gemm(a(8, 8), a(8, 8))", "kernels.gemm(a(128, 784), a(784, 512))"),
    "relu_forward": ("kernels.relu_forward(a(1000))", "kernels.relu_forward(a(100_003))"),
    "bias_grad": ("kernels.bias_grad(a(10, 10))", "kernels.bias_grad(a(600, 257))"),
    "softmax_xent_forward": ("kernels.softmax_xent_forward(a(10, 10), np.zeros(10, np.int64))",
                             "kernels.softmax_xent_forward(a(4001, 10), np.zeros(4001, np.int64))"),
    "rmsprop_update": ("kernels.rmsprop_update(a(10), a(10), a(10) ** 2, 0.1, 0.9, 1e-7)",
                       "kernels.rmsprop_update(a(100_000), a(100_000), a(100_000) ** 2, 0.1, 0.9, 1e-7)"),
    "adamw_update": ("kernels.adamw_update(a(10), a(10), a(10), a(10), a(10), 0.1, 0.9, 0.999, 1e-7, 0.004, 1)",
                     "kernels.adamw_update(a(100_000), a(100_000), a(100_000), a(100_000), a(100_000), "
                     "0.1, 0.9, 0.999, 1e-7, 0.004, 1)"),
    # the norm's partial sums: the first parallel region of a clipnorm call
    "clip_gradients": ("kernels.clip_gradients(a(10), a(10), 'clipnorm', 0.5)",
                       "kernels.clip_gradients(a(100_000), a(100_000), 'clipnorm', 0.5)"),
}


@pytest.mark.skipif(not kernels.has_openmp(), reason="serial build")
@pytest.mark.parametrize("name", sorted(PARALLEL_CALLS))
def test_large_inputs_start_worker_threads(name):
    """In a fresh process at 3 threads: a small call runs on the calling thread only,
    the sizes used above start 2 OpenMP workers (OS threads in /proc/self/task)."""
    small, large = PARALLEL_CALLS[name]
    assert_snippet_ok(f"""
        import os
        import numpy as np
        import minigrad as mg
        from minigrad import kernels
        if not os.path.isdir("/proc/self/task"):
            print("no /proc: ok"); raise SystemExit
        rng = np.random.default_rng(0)
        a = lambda *s: rng.random(s).astype(np.float32)
        mg.set_num_threads(3)
        mg.set_adaptive_threads(False)
        {small}
        before = len(os.listdir("/proc/self/task"))
        {large}
        after = len(os.listdir("/proc/self/task"))
        print("workers started", after - before >= 2, before, after)
        """, "workers started True")


def test_kernels_called_from_several_python_threads_at_once():
    """cffi releases the GIL, so Python threads run kernels concurrently (each with
    its own GEMM workspace): results must not change. In a subprocess, so that a
    crash fails this test only."""
    out = assert_snippet_ok(TRAIN_CODE + """
import threading
rng = np.random.default_rng(0)
cases = [(rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32))
         for m, k, n in [(128, 784, 512), (257, 300, 129), (128, 784, 10), (64, 64, 64)]]
mg.set_num_threads(2)
want = [kernels.gemm(a, b) for a, b in cases]
want_train = digest()
errors = []

def work(i):
    for rep in range(3):
        for j, (a, b) in enumerate(cases):
            if not np.array_equal(kernels.gemm(a, b).view(np.uint32), want[j].view(np.uint32)):
                errors.append(("gemm", i, rep, j))
    if digest() != want_train:
        errors.append(("training", i))

threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("errors", errors)
""")
    assert "errors []" in out, out
