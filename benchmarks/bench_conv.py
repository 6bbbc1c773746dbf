#!/usr/bin/env python
"""Forward + backward of the book's chapter-5 convnet layers, engine against engine.

    python benchmarks/bench_conv.py --threads 1 2 --repeats 7 [--steps 10] [--layers]

The stack (batch 64, NHWC for minigrad and NumPy, NCHW for PyTorch):
  28x28x1 -> Conv2D(32, 3x3, relu) -> MaxPool(2) -> Conv2D(64, 3x3, relu) -> MaxPool(2)
          -> Conv2D(64, 3x3, relu)  (-> 3x3x64)
One step is the forward pass and the backward pass from a fixed upstream gradient:
weight and bias gradients of the three convolutions, input gradients of conv2 and
conv3 and of both poolings (none for the input images), as in training.

Engines, each in its own worker process (started once) so that PyTorch's thread
pools and OpenMP runtime never share a process with minigrad's:
  minigrad       the autograd ops mg.ops.conv2d / max_pool2d (im2col + packed GEMM), eager:
                 a graph and fresh output arrays every step
  minigrad-tape  that step recorded once on a kernels.tape.Tape and replayed (the kernel
                 calls alone, into the recording's buffers: what a captured step runs)
  torch          PyTorch eager, F.conv2d(relu) / F.max_pool2d, torch.set_num_threads(n)
  numpy          a float32 NumPy im2col loop (sliding_window_view + matmul on NumPy's BLAS,
                 threads limited with threadpoolctl)
The input batch is the first 64 MNIST training images when --mnist-dir (default
$MINIGRAD_DATA or ../shared/mnist) has them (81% exact zeros), else uniform noise.

Runs are interleaved: for each repeat, for each thread count, every engine times
--steps steps (engine order rotating between repeats). Reported: the median ms per
step over the repeats, GFLOP/s (the convolutions' GEMM FLOPs only), the ratio to
PyTorch at the same thread count, the same from the minima (the least disturbed
runs on a shared machine), the time of one 60000-sample epoch of these layers
(938 steps), and the least CPU time per step (robust to other processes' load at
1 thread). --layers adds the time of each kernel call of the replayed step.
"""
import argparse
import math
import multiprocessing as mp
import os
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _benchlib as bl  # noqa: E402

BATCH = 64
# (name, H, W, cin, cout): 3x3 kernels, stride 1, 'valid'
CONVS = [("conv1", 28, 28, 1, 32), ("conv2", 13, 13, 32, 64), ("conv3", 5, 5, 64, 64)]
STEPS_PER_EPOCH = math.ceil(60000 / BATCH)


def conv_flops(batch=BATCH):
    """GEMM FLOPs of one step: forward, weight gradient, and input gradient (not conv1's)."""
    total = 0
    for i, (_, h, w, cin, cout) in enumerate(CONVS):
        fwd = 2 * batch * (h - 2) * (w - 2) * 9 * cin * cout
        total += fwd * (2 if i == 0 else 3)
    return total


def make_data(mnist_dir, seed=0):
    rng = np.random.default_rng(seed)
    try:
        x, _ = bl.real_mnist(mnist_dir, BATCH)
        source = "MNIST (first 64 training images)"
    except (OSError, ValueError):
        x = rng.random((BATCH, 784), dtype=np.float32)
        source = "uniform noise (MNIST not found)"
    x = x.reshape(BATCH, 28, 28, 1)
    params = []
    for _, _, _, cin, cout in CONVS:
        limit = np.sqrt(6.0 / (9 * cin + 9 * cout))
        params.append((rng.uniform(-limit, limit, (3, 3, cin, cout)).astype(np.float32),
                       np.zeros(cout, np.float32)))
    dy = rng.standard_normal((BATCH, 3, 3, 64)).astype(np.float32)
    return x, params, dy, source


# ---------------------------------------------------------------- engines

class Minigrad:
    def __init__(self, x, params, dy):
        import minigrad as mg
        from minigrad.ops import conv2d, max_pool2d
        self.mg, self.conv2d, self.pool = mg, conv2d, max_pool2d
        self.x, self.dy = mg.Tensor(x), dy
        self.params = [(mg.Tensor(w, requires_grad=True), mg.Tensor(b, requires_grad=True))
                       for w, b in params]

    def set_threads(self, n):
        self.mg.set_num_threads(n)
        self.mg.set_adaptive_threads(False)  # a row at n threads runs n (bench_load.py measures adaptation)

    def step(self):
        for w, b in self.params:
            w.grad = b.grad = None
        (w1, b1), (w2, b2), (w3, b3) = self.params
        h = self.pool(self.conv2d(self.x, w1, b1, activation="relu"))
        h = self.pool(self.conv2d(h, w2, b2, activation="relu"))
        y = self.conv2d(h, w3, b3, activation="relu")
        y.backward(self.dy)


class MinigradTape(Minigrad):
    """The same step recorded once on a kernels.tape.Tape and replayed: the kernel
    calls alone, into the buffers of the recording (what a captured step runs,
    with no graph building and no allocation)."""

    def __init__(self, x, params, dy):
        super().__init__(x, params, dy)
        from minigrad.kernels import tape
        with tape.Tape() as self.tape:
            Minigrad.step(self)

    def step(self):
        self.tape.replay()

    def layers(self, reps):
        """Median ms of each recorded call over reps replays, labelled by the C
        function (or NumPy work) and its rank among calls of that name."""
        seen, labels = {}, []
        for function, _, _ in self.tape.calls:
            name = getattr(function, "__name__", type(function).__name__)
            seen[name] = seen.get(name, 0) + 1
            labels.append(f"{name} #{seen[name]}")
        times = [[] for _ in labels]
        for _ in range(reps):
            for i, (function, args, _) in enumerate(self.tape.calls):
                t = time.perf_counter()
                function(*args)
                times[i].append(time.perf_counter() - t)
        return {label: float(np.median(ts)) * 1e3 for label, ts in zip(labels, times)}


class Torch:
    def __init__(self, x, params, dy):
        import torch
        self.torch, self.F = torch, torch.nn.functional
        self.x = torch.tensor(x).permute(0, 3, 1, 2).contiguous()
        self.dy = torch.tensor(dy).permute(0, 3, 1, 2).contiguous()
        self.params = [(torch.tensor(w).permute(3, 2, 0, 1).contiguous().requires_grad_(),
                        torch.tensor(b).requires_grad_()) for w, b in params]

    def set_threads(self, n):
        self.torch.set_num_threads(n)

    def step(self):
        F = self.F
        for w, b in self.params:
            w.grad = b.grad = None
        (w1, b1), (w2, b2), (w3, b3) = self.params
        h = F.max_pool2d(F.relu(F.conv2d(self.x, w1, b1)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, w2, b2)), 2)
        y = F.relu(F.conv2d(h, w3, b3))
        y.backward(self.dy)


class NumPy:
    """The loop a NumPy user would write: im2col by sliding_window_view, one matmul
    per GEMM, col2im by adding the nine kernel offsets, pooling by reshapes."""

    def __init__(self, x, params, dy):
        from threadpoolctl import threadpool_limits
        self.limits = threadpool_limits
        self.x, self.params, self.dy = x, params, dy
        self._limit = None

    def set_threads(self, n):
        self._limit = self.limits(limits=n, user_api="blas")

    @staticmethod
    def conv(x, w, b):
        cols = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))  # N,OH,OW,C,3,3
        n, oh, ow, c = cols.shape[:4]
        cols = cols.transpose(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, 9 * c)
        y = cols @ w.reshape(9 * c, -1) + b
        np.maximum(y, 0, out=y)
        return y.reshape(n, oh, ow, -1), cols

    @staticmethod
    def pool(x):
        n, h, w, c = x.shape
        v = x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
        y = v.max(axis=(2, 4))
        return y, v

    @staticmethod
    def pool_back(g, v, y, shape):
        n, oh, ow, c = y.shape
        hit = (v == y[:, :, None, :, None, :]).transpose(0, 1, 3, 5, 2, 4).reshape(n, oh, ow, c, 4)
        first = hit & (np.cumsum(hit, axis=-1) == 1)  # the first maximum (row-major) only
        dx = np.zeros(shape, np.float32)
        dx[:, :oh * 2, :ow * 2] = (first * g[..., None]).reshape(n, oh, ow, c, 2, 2).transpose(
            0, 1, 4, 2, 5, 3).reshape(n, oh * 2, ow * 2, c)
        return dx

    @staticmethod
    def conv_back(d, cols, w, x_shape, need_x):
        cout = w.shape[3]
        d2 = d.reshape(-1, cout)
        dw = (cols.T @ d2).reshape(w.shape)
        db = d2.sum(axis=0)
        if not need_x:
            return None, dw, db
        dcols = (d2 @ w.reshape(-1, cout).T).reshape(*d.shape[:3], 3, 3, w.shape[2])
        dx = np.zeros(x_shape, np.float32)
        oh, ow = d.shape[1:3]
        for ky in range(3):
            for kx in range(3):
                dx[:, ky:ky + oh, kx:kx + ow] += dcols[:, :, :, ky, kx]
        return dx, dw, db

    def step(self):
        (w1, b1), (w2, b2), (w3, b3) = self.params
        y1, c1 = self.conv(self.x, w1, b1)
        p1, v1 = self.pool(y1)
        y2, c2 = self.conv(p1, w2, b2)
        p2, v2 = self.pool(y2)
        y3, c3 = self.conv(p2, w3, b3)
        d = self.dy * (y3 > 0)
        g, _, _ = self.conv_back(d, c3, w3, p2.shape, True)
        g = self.pool_back(g, v2, p2, y2.shape) * (y2 > 0)
        g, _, _ = self.conv_back(g, c2, w2, p1.shape, True)
        g = self.pool_back(g, v1, p1, y1.shape) * (y1 > 0)
        self.conv_back(g, c1, w1, self.x.shape, False)


ENGINES = {"minigrad": Minigrad, "minigrad-tape": MinigradTape, "torch": Torch, "numpy": NumPy}


def worker(conn, name, mnist_dir):
    try:
        x, params, dy, _ = make_data(mnist_dir)
        engine = ENGINES[name](x, params, dy)
        engine.step()  # warm-up: first-call allocations, lazy initialisation
        conn.send(("ready", None))
        while True:
            msg = conn.recv()
            if msg[0] == "quit":
                break
            if msg[0] == "layers":
                engine.set_threads(msg[1])
                engine.step()
                conn.send(("result", engine.layers(msg[2])))
                continue
            _, threads, steps = msg
            engine.set_threads(threads)
            engine.step()  # the first step at a new thread count wakes the team
            times, cpu = [], []
            with bl.CpuMonitor() as mon:
                for _ in range(steps):
                    t, c = time.perf_counter(), time.process_time()
                    engine.step()
                    times.append(time.perf_counter() - t)
                    cpu.append(time.process_time() - c)
            conn.send(("result", (float(np.median(times)), mon.other_cores, float(np.median(cpu)))))
    except Exception:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def start(name, mnist_dir):
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=worker, args=(child, name, mnist_dir), daemon=True)
    proc.start()
    kind, payload = parent.recv()
    if kind == "error":
        raise RuntimeError(f"{name} worker failed:\n{payload}")
    return proc, parent


def ask(conn, *msg):
    conn.send(msg)
    kind, payload = conn.recv()
    if kind == "error":
        raise RuntimeError(payload)
    return payload


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10, help="steps per timing (their median is one sample)")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--mnist-dir", default=bl.default_mnist_dir())
    parser.add_argument("--layers", action="store_true", help="minigrad-tape's per-call breakdown too")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each timing, wait up to this long for other processes to use "
                             "< 0.3 cores")
    parser.add_argument("--malloc-keep", action="store_true",
                        help="start every worker with glibc's MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ "
                             "raised, so freed arrays stay mapped and are reused without page faults")
    args = parser.parse_args(argv)
    if args.malloc_keep:  # read by glibc when each spawned worker starts
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 30)
        os.environ["MALLOC_TRIM_THRESHOLD_"] = str(1 << 31)

    _, _, _, source = make_data(args.mnist_dir)
    env = bl.environment(with_torch=False)
    for line in bl.describe_environment(env)[:4]:
        print(line)
    engines = list(args.engines)
    if "torch" in engines and bl.try_import_torch() is None:
        print("PyTorch: not importable, its rows are skipped")
        engines.remove("torch")
    elif "torch" in engines:
        import torch
        print(f"PyTorch {torch.__version__} (oneDNN {torch.backends.mkldnn.is_available()}), "
              f"in its own worker process")
    print(f"input: {source}; batch {BATCH}; {conv_flops() / 1e9:.3f} GFLOP of convolution GEMMs per step")
    print("allocator: " + ("glibc thresholds raised for every engine (--malloc-keep): freed memory is reused"
                           if args.malloc_keep else "glibc defaults (large arrays are fresh, zeroed pages)"))

    workers = {name: start(name, args.mnist_dir) for name in engines}
    results = {(name, n): [] for name in engines for n in args.threads}
    loads = {(name, n): [] for name in engines for n in args.threads}
    cpus = {(name, n): [] for name in engines for n in args.threads}
    try:
        for rep in range(args.repeats):
            order = engines[rep % len(engines):] + engines[:rep % len(engines)]
            for n in args.threads:
                for name in order:
                    bl.wait_for_quiet(args.wait_quiet)
                    seconds, load, cpu = ask(workers[name][1], "time", n, args.steps)
                    results[name, n].append(seconds)
                    loads[name, n].append(load)
                    cpus[name, n].append(cpu)
        layer_rows = {}
        if args.layers and "minigrad-tape" in workers:
            for n in args.threads:
                layer_rows[n] = ask(workers["minigrad-tape"][1], "layers", n, max(args.steps, 5))
    finally:
        for proc, conn in workers.values():
            conn.send(("quit",))
            proc.join(timeout=10)

    flops = conv_flops()
    print()
    print(f"{'engine':<14} {'threads':>7} {'ms/step':>9} {'best':>8} {'spread':>7} {'GFLOP/s':>8} "
          f"{'vs torch':>9} {'best vs':>8} {'epoch s':>8} {'cpu ms':>7} {'cpu vs':>7} {'load':>5}")
    for n in args.threads:
        have_torch = "torch" in engines
        base = bl.median(results["torch", n]) if have_torch else None
        base_min = min(results["torch", n]) if have_torch else None
        base_cpu = min(cpus["torch", n]) if have_torch else None
        for name in engines:
            t, best = bl.median(results[name, n]), min(results[name, n])
            ratio = f"{t / base:.2f}x" if base else "-"
            ratio_min = f"{best / base_min:.2f}x" if base_min else "-"
            print(f"{name:<14} {n:>7} {t * 1e3:>9.2f} {best * 1e3:>8.2f} {bl.spread(results[name, n]):>6.0%} "
                  f"{flops / t / 1e9:>8.1f} {ratio:>9} {ratio_min:>8} {t * STEPS_PER_EPOCH:>8.2f} "
                  f"{min(cpus[name, n]) * 1e3:>7.2f} "
                  f"{(f'{min(cpus[name, n]) / base_cpu:.2f}x' if base_cpu else '-'):>7} "
                  f"{bl.median(loads[name, n]):>5.2f}")
    if layer_rows:
        print()
        print("minigrad-tape per recorded call, ms (median over replays), in step order:")
        names = list(next(iter(layer_rows.values())))
        print(f"{'call':<34}" + "".join(f"{f'{n} thr':>9}" for n in layer_rows))
        for k in names:
            print(f"{k:<34}" + "".join(f"{layer_rows[n][k]:>9.3f}" for n in layer_rows))
        print(f"{'sum':<34}" + "".join(f"{sum(layer_rows[n].values()):>9.3f}" for n in layer_rows))
    print("\n'ms/step': median over the repeats (each the median of --steps steps); 'best': their "
          "minimum (the machine may be shared: the minimum is the least disturbed); 'spread': "
          "(max - min) / median; 'vs torch' / 'best vs': ratios of medians / minima to PyTorch at the "
          "same thread count; 'epoch s': these layers' forward + backward over 60000 samples "
          "(938 steps of 64), from the median; 'cpu ms': the least CPU time (all of the process's "
          "threads) of a step, which other processes' load barely changes (at 1 thread the best "
          "guide on a busy machine), 'cpu vs' its ratio to PyTorch's; 'load': cores other processes "
          "used during the timings (median), to be read first on a shared machine.")


if __name__ == "__main__":
    main()
