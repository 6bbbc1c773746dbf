#!/usr/bin/env python
"""The element-wise kernels (sigmoid, tanh, dropout, sigmoid + BCE) against the
NumPy expressions they replace.

    python benchmarks/bench_elementwise.py [--threads 1 2] [--repeats 7] [--shapes 128x512 60000x10]
                                           [--ops sigmoid,tanh,...] [--min-time 0.05]

For every shape, thread count and op, each repeat times the C kernel and then
its NumPy equivalent, side by side, so that load from other processes on a
shared machine hits both alike; a sample is the median time of the calls that
fill --min-time seconds, and the table shows the median over repeats (and the
ratio of the medians). The C kernels write into preallocated outputs (``out=``), as a
captured training step does; the NumPy expressions allocate, as written in
NumPy code. NumPy runs these on one thread whatever --threads says.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

F32 = np.float32


def _cases(rows, cols, seed=0):
    """{op: (minigrad callable, NumPy callable)} for one shape, with inputs and outputs ready."""
    from minigrad import kernels
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, cols)) * 3).astype(F32)
    dy = rng.standard_normal((rows, cols)).astype(F32)
    t = (rng.random((rows, cols)) < 0.5).astype(F32)
    y_sig, y_tanh = kernels.sigmoid_forward(x), kernels.tanh_forward(x)
    out, out2 = np.empty_like(x), np.empty_like(x)
    loss = np.empty((), F32)
    counter, rate = kernels.DropoutCounter(), 0.5
    _, mask = kernels.dropout_forward(x, rate, 1, kernels.DropoutCounter())
    scale, np_rng, keep_scale = 1.0 / x.size, np.random.default_rng(1), F32(1 / (1 - rate))

    def np_dropout():
        keep = np_rng.random(x.shape, dtype=F32) >= rate
        return np.where(keep, x * keep_scale, F32(0)), np.where(keep, keep_scale, F32(0))

    def np_bce():
        probs = F32(1) / (F32(1) + np.exp(-x))
        return np.mean(np.maximum(x, F32(0)) - x * t + np.log1p(np.exp(-np.abs(x)))), probs

    return {
        "sigmoid_forward": (lambda: kernels.sigmoid_forward(x, out),
                            lambda: F32(1) / (F32(1) + np.exp(-x))),
        "sigmoid_backward": (lambda: kernels.sigmoid_backward(y_sig, dy, out),
                             lambda: dy * y_sig * (F32(1) - y_sig)),
        "tanh_forward": (lambda: kernels.tanh_forward(x, out), lambda: np.tanh(x)),
        "tanh_backward": (lambda: kernels.tanh_backward(y_tanh, dy, out),
                          lambda: dy * (F32(1) - y_tanh * y_tanh)),
        "dropout_forward": (lambda: kernels.dropout_forward(x, rate, 1, counter, out, out2), np_dropout),
        "dropout_backward": (lambda: kernels.dropout_backward(dy, mask, out),
                             lambda: np.where(mask != 0, dy * mask, F32(0))),
        "sigmoid_bce_forward": (lambda: kernels.sigmoid_bce_forward(x, t, out, loss), np_bce),
        "sigmoid_bce_backward": (lambda: kernels.sigmoid_bce_backward(y_sig, t, scale, out),
                                 lambda: F32(scale) * (y_sig - t)),
    }


def _sample(fn, min_time):
    """Seconds per call: the median over as many calls as take min_time (at least 3).

    A median, not total time / calls: on a shared machine the scheduler takes
    the core away for whole milliseconds now and then, and a mean would charge
    those to whichever call they hit."""
    fn()  # warm caches and any lazy setup
    clock, times = time.perf_counter, []
    start = clock()
    while True:
        t = clock()
        fn()
        end = clock()
        times.append(end - t)
        if end - start >= min_time and len(times) >= 3:
            return statistics.median(times)


def _shape(text):
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS such as 128x512, received {text!r}") from None
    if rows < 1 or cols < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, received {text!r}")
    return rows, cols


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--shapes", type=_shape, nargs="+", default=[(128, 512), (60000, 10)])
    parser.add_argument("--ops", default="", help="comma-separated words; run the ops whose name contains one")
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per timing sample")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.threads) or args.repeats < 1 or args.min_time <= 0:
        parser.error("--threads and --repeats must be positive, --min-time above 0")

    import minigrad as mg
    from minigrad import kernels
    words = [w for w in args.ops.split(",") if w]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"minigrad element-wise kernels vs NumPy {np.__version__}; {os.cpu_count()} CPUs, "
          f"load average {load:.2f}; OpenMP: {kernels.has_openmp()}; "
          f"median of {args.repeats} interleaved repeats, {args.min_time:g} s per sample")
    rows_out = []
    original = mg.get_num_threads()
    try:
        for rows, cols in args.shapes:
            cases = _cases(rows, cols)
            ops = [op for op in cases if not words or any(w in op for w in words)]
            for threads in args.threads:
                mg.set_num_threads(threads)
                times = {op: ([], []) for op in ops}
                for _ in range(args.repeats):
                    for op in ops:
                        ours, numpy_fn = cases[op]
                        times[op][0].append(_sample(ours, args.min_time))
                        times[op][1].append(_sample(numpy_fn, args.min_time))
                for op in ops:
                    c, n = (statistics.median(v) for v in times[op])
                    rows_out.append((op, f"{rows}x{cols}", threads, c * 1e6, n * 1e6, n / c))
    finally:
        mg.set_num_threads(original)

    header = ("op", "shape", "threads", "minigrad us", "NumPy us", "speed-up")
    cells = [header] + [(op, shape, str(t), f"{c:,.1f}", f"{n:,.1f}", f"{r:.2f}x")
                        for op, shape, t, c, n, r in rows_out]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for k, row in enumerate(cells):
        print(" | ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
        if k == 0:
            print("-|-".join("-" * w for w in widths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
