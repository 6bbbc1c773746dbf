#!/usr/bin/env python
"""How much of a training step of ``fit`` is spent outside the C kernels.

    python benchmarks/bench_overhead.py --threads 1 2 --repeats 3 [--data mnist|synthetic] [--json PATH]

Trains the book's MLP (Dense(512, relu) -> Dense(10, softmax), RMSprop, batch 128,
categorical cross-entropy, accuracy metric, verbose=0) for one epoch per run and,
for every step, measures its wall time and the time spent inside ``lib.mg_*``
calls (each C call is timed by a thin wrapper around the cffi library, which adds
about 0.3 us per call to the "outside" side). Outside = wall - inside: Python
work in fit, the step, metrics and callbacks. Each run is done twice, side by
side: with fit's recorded step replayed (``mg.jit``, the default) and with every
step run eagerly on the autograd graph (``mg.jit.set_enabled(False)``).

Reported per thread count and path: the median over repeats of the median step,
of the median outside time per step, and of their ratio, plus the outside share
of the whole epoch (sum over steps).
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
import _benchlib as bl  # noqa: E402


class _TimedLib:
    """The cffi lib with every mg_* call timed into `inside` (seconds)."""

    def __init__(self, lib):
        self._lib, self.inside = lib, 0.0

    def __getattr__(self, name):
        f = getattr(self._lib, name)
        if not name.startswith("mg_") or not callable(f):
            return f
        clock = time.perf_counter

        def timed(*args):
            t = clock()
            try:
                return f(*args)
            finally:
                self.inside += clock() - t
        setattr(self, name, timed)
        return timed


def run(x, y, threads, planned, seed):
    import minigrad as mg
    from minigrad import callbacks, kernels, layers, models, optimizers, utils
    mg.set_num_threads(threads)
    mg.set_adaptive_threads(False)  # a row at n threads runs n (bench_load.py measures adaptation)
    mg.jit.set_enabled(planned)
    utils.set_random_seed(seed)
    model = models.Sequential([layers.Dense(bl.D_HID, activation="relu", input_shape=(bl.D_IN,)),
                               layers.Dense(bl.D_OUT, activation="softmax")])
    model.compile(optimizer=optimizers.RMSprop(learning_rate=bl.LR, rho=bl.RHO, epsilon=bl.EPS),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:4096], y[:4096], batch_size=bl.BATCH, epochs=1, verbose=0)  # warm: buffers, caches
    timed = _TimedLib(kernels.lib)
    marks = []

    class Marks(callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            marks.append((time.perf_counter(), timed.inside))

        def on_epoch_end(self, epoch, logs=None):
            marks.append((time.perf_counter(), timed.inside))
    modules = (kernels, kernels.dense, kernels.gather, kernels.optim, kernels.conv, kernels.elementwise)
    for module in modules:  # each family module binds lib
        module.lib = timed
    fit_step = model._step_function("fit")
    try:
        model.fit(x, y, batch_size=bl.BATCH, epochs=1, verbose=0, callbacks=[Marks()])
    finally:
        for module in modules:
            module.lib = timed._lib
        mg.jit.set_enabled(True)
    steps = len(marks) - 1
    if (fit_step.stats()["replays"] >= steps - 2) != planned:
        raise RuntimeError("the epoch did not run on the path asked for")
    wall = np.diff([m[0] for m in marks])
    inside = np.diff([m[1] for m in marks])
    outside = wall - inside
    return {"step_us": float(np.median(wall)) * 1e6, "outside_us": float(np.median(outside)) * 1e6,
            "outside_share": float(np.median(outside / wall)),
            "outside_share_epoch": float(outside.sum() / wall.sum()), "steps": steps}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", choices=("mnist", "synthetic"), default="mnist")
    p.add_argument("--mnist-dir", default=None, help="default: $MINIGRAD_DATA or ../shared/mnist")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    if args.data == "mnist":
        x, labels = bl.real_mnist(args.mnist_dir or bl.default_mnist_dir())
    else:
        x, labels = bl.synthetic_mnist()
    y = np.eye(bl.D_OUT, dtype=np.float32)[labels]
    print("\n".join(bl.describe_environment(bl.environment(with_torch=False))))
    print(f"data: {args.data}, {len(x)} samples, batch {bl.BATCH}; {args.repeats} repeats, "
          f"paths interleaved\n")
    results = {}
    for rep in range(args.repeats):
        for threads in args.threads:
            for planned in ((True, False) if rep % 2 == 0 else (False, True)):
                r = run(x, y, threads, planned, seed=rep)
                results.setdefault((threads, planned), []).append(r)
    print(f"{'threads':>7} {'path':>9} {'step (us)':>10} {'outside (us)':>13} "
          f"{'outside/step':>13} {'epoch share':>12}")
    rows = []
    for (threads, planned), runs in sorted(results.items(), key=lambda kv: (kv[0][0], not kv[0][1])):
        med = {k: statistics.median(r[k] for r in runs)
               for k in ("step_us", "outside_us", "outside_share", "outside_share_epoch")}
        path = "replayed" if planned else "eager"
        print(f"{threads:>7} {path:>9} {med['step_us']:>10.0f} {med['outside_us']:>13.1f} "
              f"{med['outside_share'] * 100:>12.1f}% {med['outside_share_epoch'] * 100:>11.1f}%")
        rows.append(dict(med, threads=threads, path=path, runs=runs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"data": args.data, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
