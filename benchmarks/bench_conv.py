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
  minigrad  the autograd ops mg.ops.conv2d / max_pool2d (im2col + packed GEMM)
  torch     PyTorch eager, F.conv2d(relu) / F.max_pool2d, torch.set_num_threads(n)
  numpy     a float32 NumPy im2col loop (sliding_window_view + matmul on NumPy's BLAS,
            threads limited with threadpoolctl)
The input batch is the first 64 MNIST training images when --mnist-dir (default
$MINIGRAD_DATA or ../shared/mnist) has them (81% exact zeros), else uniform noise.

Runs are interleaved: for each repeat, for each thread count, every engine times
--steps steps (engine order rotating between repeats). Reported: the median ms per
step over the repeats, GFLOP/s (the convolutions' GEMM FLOPs only), the ratio to
PyTorch at the same thread count, and the time of one 60000-sample epoch of these
layers (938 steps). --layers adds minigrad's per-layer breakdown.
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

    def layers(self, reps):
        """Median ms of each kernel call of one step, over reps steps."""
        from minigrad import kernels as K
        (w1, b1), (w2, b2), (w3, b3) = [(w.data, b.data) for w, b in self.params]
        x = self.x.data
        steps = []

        def timed(name, fn, *args, **kw):
            t = time.perf_counter()
            out = fn(*args, **kw)
            step[name] = step.get(name, 0.0) + time.perf_counter() - t
            return out
        for _ in range(reps):
            step = {}
            y1, c1 = timed("conv1 fwd", K.conv2d_forward, x, w1, b1, relu=True)
            p1, a1 = timed("pool1 fwd", K.max_pool2d_forward, y1, 2)
            y2, c2 = timed("conv2 fwd", K.conv2d_forward, p1, w2, b2, relu=True)
            p2, a2 = timed("pool2 fwd", K.max_pool2d_forward, y2, 2)
            y3, c3 = timed("conv3 fwd", K.conv2d_forward, p2, w3, b3, relu=True)
            d3, _ = timed("relu+bias bwd (x3)", K.relu_backward_bias_grad, y3.reshape(-1, 64),
                          self.dy.reshape(-1, 64))
            d3 = d3.reshape(y3.shape)
            timed("conv3 dW", K.conv2d_backward_weight, c3, d3, w3.shape)
            g = timed("conv3 dx", K.conv2d_backward_input, d3, w3, p2.shape)
            g = timed("pool2 bwd", K.max_pool2d_backward, g, a2, y2.shape, 2)
            d2, _ = timed("relu+bias bwd (x3)", K.relu_backward_bias_grad, y2.reshape(-1, 64),
                          g.reshape(-1, 64))
            d2 = d2.reshape(y2.shape)
            timed("conv2 dW", K.conv2d_backward_weight, c2, d2, w2.shape)
            g = timed("conv2 dx", K.conv2d_backward_input, d2, w2, p1.shape)
            g = timed("pool1 bwd", K.max_pool2d_backward, g, a1, y1.shape, 2)
            d1, _ = timed("relu+bias bwd (x3)", K.relu_backward_bias_grad, y1.reshape(-1, 32),
                          g.reshape(-1, 32))
            timed("conv1 dW", K.conv2d_backward_weight, c1, d1.reshape(y1.shape), w1.shape)
            steps.append(step)
        return {k: float(np.median([s[k] for s in steps])) * 1e3 for k in steps[0]}


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


ENGINES = {"minigrad": Minigrad, "torch": Torch, "numpy": NumPy}


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
            times = []
            for _ in range(steps):
                t = time.perf_counter()
                engine.step()
                times.append(time.perf_counter() - t)
            conn.send(("result", float(np.median(times))))
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
    parser.add_argument("--layers", action="store_true", help="minigrad's per-kernel breakdown too")
    args = parser.parse_args(argv)

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

    workers = {name: start(name, args.mnist_dir) for name in engines}
    results = {(name, n): [] for name in engines for n in args.threads}
    try:
        for rep in range(args.repeats):
            order = engines[rep % len(engines):] + engines[:rep % len(engines)]
            for n in args.threads:
                for name in order:
                    results[name, n].append(ask(workers[name][1], "time", n, args.steps))
        layer_rows = {}
        if args.layers and "minigrad" in workers:
            for n in args.threads:
                layer_rows[n] = ask(workers["minigrad"][1], "layers", n, max(args.steps, 5))
    finally:
        for proc, conn in workers.values():
            conn.send(("quit",))
            proc.join(timeout=10)

    flops = conv_flops()
    print()
    print(f"{'engine':<10} {'threads':>7} {'ms/step':>9} {'spread':>7} {'GFLOP/s':>8} "
          f"{'vs torch':>9} {'epoch s':>8}")
    for n in args.threads:
        base = bl.median(results["torch", n]) if "torch" in engines else None
        for name in engines:
            t = bl.median(results[name, n])
            ratio = f"{t / base:.2f}x" if base else "-"
            print(f"{name:<10} {n:>7} {t * 1e3:>9.2f} {bl.spread(results[name, n]):>6.0%} "
                  f"{flops / t / 1e9:>8.1f} {ratio:>9} {t * STEPS_PER_EPOCH:>8.2f}")
    if layer_rows:
        print()
        print("minigrad per kernel call, ms (median over steps):")
        names = list(next(iter(layer_rows.values())))
        print(f"{'kernel':<22}" + "".join(f"{f'{n} thr':>9}" for n in layer_rows))
        for k in names:
            print(f"{k:<22}" + "".join(f"{layer_rows[n][k]:>9.3f}" for n in layer_rows))
    print("\n'epoch s': these layers' forward + backward over 60000 samples (938 steps of 64); "
          "'spread': (max - min) / median over the repeats.")


if __name__ == "__main__":
    main()
