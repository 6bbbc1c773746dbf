#!/usr/bin/env python
"""One engine: fit, a hand-written loop under mg.jit, the same loop eagerly, a
model with a user Layer, and tiny batch-1 models, timed side by side.

    python benchmarks/bench_engine.py --threads 1 2 --repeats 3 [--baseline-python PY]

Every measurement runs in a fresh worker process (``--worker``), one after the
other, cases and engines interleaved within each repeat, so a slow phase of the
machine hits all of them alike; the report gives medians over repeats of the
per-repeat ratios. Cases (real MNIST, batch 128, the book's MLP, RMSprop):

- ``fit``: ``model.fit`` for one epoch (469 steps, shuffled);
- ``jit_loop``: a hand-written loop (C row gather of the shuffled batch, then a
  ``@mg.jit`` step: forward, loss, backward, ``opt.step``, ``opt.zero_grad``) in
  the PyTorch idiom: the model ends in logits and the loss is
  ``mg.softmax_cross_entropy``, the computation fit's fused softmax + loss does;
  the step is ``mg.jit(step, borrow_inputs=True)``: it reads the gather's buffers in
  place, as fit's step does;
- ``jit_copy_loop``: the same with plain ``mg.jit(step)``, which copies each batch
  into the recording's own buffers (one 401 KB copy per step here);
- ``eager_loop``: the same loop without ``mg.jit`` (the autograd graph every step);
- ``custom_layer``: fit on Dense(512, relu) -> a user Layer whose call returns
  ``x * 1.0`` -> Dense(10, softmax);
- ``tiny_fit`` / ``tiny_jit`` / ``tiny_eager`` / ``tiny_torch``: a 13-64-64-2 model
  (the shape of the book's Boston-housing k-fold, here a 2-class softmax) at batch
  1 on 404 samples: fit, a jitted loop, an eager loop, PyTorch eager (microseconds
  per step).

``--baseline-python`` names another interpreter with an older minigrad installed
(e.g. the previous release in its own venv): its ``fit`` and ``tiny_fit`` run as
``base_fit`` / ``base_tiny_fit``, so that new/old is measured in the same run.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
import _benchlib as bl  # noqa: E402

TINY_SAMPLES = 404


# ---------------------------------------------------------------- workers (one measurement each)

def _mlp(mg, extra=None, last="softmax"):
    from minigrad import layers, models
    mg.utils.set_random_seed(0)
    stack = [layers.Dense(512, activation="relu", input_shape=(784,))]
    stack += [extra] if extra is not None else []
    stack += [layers.Dense(10, activation=last)]
    model = models.Sequential(stack)
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _times_one_layer(mg):
    class TimesOne(mg.layers.Layer):
        def call(self, x, training=None):
            return x * 1.0
    return TimesOne()


def _loop(mg, model, x, y, batch, epochs, jitted, borrow=True):
    """A hand-written epoch: gathered batch, then the step (jitted or eager)."""
    from minigrad import kernels
    params = model.trainable_weights
    opt = mg.optimizers.RMSprop()

    def step(xb, yb):
        loss = mg.softmax_cross_entropy(model(xb), yb)
        loss.backward()
        opt.step(params)
        opt.zero_grad(params)
        return loss
    run = mg.jit(step, borrow_inputs=borrow) if jitted else step
    gx, gy = kernels.RowGather(x, batch), kernels.RowGather(y, batch)
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        gx.set_order(order)
        gy.set_order(order)
        for start in range(0, len(x), batch):
            stop = min(start + batch, len(x))
            run(gx.take(start, stop), gy.take(start, stop))


def worker(case, threads, mnist_dir):
    import minigrad as mg
    mg.set_num_threads(threads)
    # a row at n threads runs n (bench_load.py measures adaptation); a baseline
    # minigrad older than adaptation has no switch
    getattr(mg, "set_adaptive_threads", lambda on: None)(False)
    if case.startswith("tiny"):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((TINY_SAMPLES, 13)).astype(np.float32)
        y = (x[:, 0] > 0).astype(np.int64)
        if case == "tiny_torch":
            return _tiny_torch(x, y, threads)
        from minigrad import layers, models
        mg.utils.set_random_seed(0)
        # fit: a softmax output fused with its loss; the loops: logits (PyTorch's idiom)
        model = models.Sequential([layers.Dense(64, activation="relu", input_shape=(13,)),
                                   layers.Dense(64, activation="relu"),
                                   layers.Dense(2, activation="softmax" if case == "tiny_fit" else None)])
        model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
        if case == "tiny_fit":
            model.fit(x, y, batch_size=1, epochs=1, verbose=0)  # warm
            t = time.perf_counter()
            model.fit(x, y, batch_size=1, epochs=2, verbose=0)
        else:
            model.build((13,))
            _loop(mg, model, x, y, 1, 1, case == "tiny_jit")
            t = time.perf_counter()
            _loop(mg, model, x, y, 1, 2, case == "tiny_jit")
        return {"us_per_step": (time.perf_counter() - t) / (2 * TINY_SAMPLES) * 1e6}
    x, y = bl.real_mnist(mnist_dir)
    y = y.astype(np.int64)
    if case in ("fit", "custom_layer"):
        model = _mlp(mg, _times_one_layer(mg) if case == "custom_layer" else None)
        model.fit(x[:2048], y[:2048], batch_size=128, epochs=1, verbose=0)  # warm
        t = time.perf_counter()
        model.fit(x, y, batch_size=128, epochs=1, verbose=0)
        return {"epoch_s": time.perf_counter() - t}
    model = _mlp(mg, last=None)
    jitted, borrow = case in ("jit_loop", "jit_copy_loop"), case == "jit_loop"
    _loop(mg, model, x[:2048], y[:2048], 128, 1, jitted, borrow)  # warm
    t = time.perf_counter()
    _loop(mg, model, x, y, 128, 1, jitted, borrow)
    return {"epoch_s": time.perf_counter() - t}


def _tiny_torch(x, y, threads):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(13, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                              torch.nn.ReLU(), torch.nn.Linear(64, 2))
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch():
        for i in torch.randperm(len(xt)).tolist():
            opt.zero_grad()
            loss_fn(net(xt[i:i + 1]), yt[i:i + 1]).backward()
            opt.step()
    epoch()
    t = time.perf_counter()
    epoch()
    epoch()
    return {"us_per_step": (time.perf_counter() - t) / (2 * len(xt)) * 1e6}


# ---------------------------------------------------------------- driver

CASES = ("fit", "jit_loop", "jit_copy_loop", "eager_loop", "custom_layer", "tiny_fit", "tiny_jit", "tiny_eager",
         "tiny_torch")


def measure(python, case, threads, mnist_dir):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [python, os.path.abspath(__file__), "--worker", case, "--threads", str(threads),
           "--mnist-dir", mnist_dir]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{case} ({python}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--baseline-python", default=None,
                   help="an interpreter with another minigrad installed (its fit and tiny_fit)")
    p.add_argument("--mnist-dir", default=bl.default_mnist_dir())
    p.add_argument("--json", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads[0], args.mnist_dir)))
        return
    try:
        import torch  # noqa: F401
        cases = list(args.cases)
    except ImportError:
        cases = [c for c in args.cases if c != "tiny_torch"]
        print("PyTorch not installed: tiny_torch skipped")
    runs = [(c, sys.executable) for c in cases]
    if args.baseline_python:
        runs += [("base_" + c, args.baseline_python) for c in ("fit", "tiny_fit") if c in cases]
    print("\n".join(bl.describe_environment(bl.environment(with_torch=False))))
    results = {}
    for rep in range(args.repeats):
        for threads in args.threads:
            order = runs if rep % 2 == 0 else runs[::-1]
            for name, python in order:
                case = name[5:] if name.startswith("base_") else name
                r = measure(python, case, threads, args.mnist_dir)
                results.setdefault((name, threads), []).append(r)
                print(f"rep {rep} threads {threads} {name}: {r}", flush=True)

    def value(name, threads, i):
        r = results[(name, threads)][i]
        return r.get("epoch_s", r.get("us_per_step"))

    ratios = [("fit", "base_fit", "fit new / old"), ("jit_loop", "fit", "jit loop / fit"),
              ("jit_copy_loop", "fit", "jit loop (copying) / fit"),
              ("eager_loop", "fit", "eager loop / fit"), ("custom_layer", "fit", "custom layer / fit"),
              ("tiny_fit", "base_tiny_fit", "tiny fit / old planned fit"),
              ("tiny_jit", "base_tiny_fit", "tiny jit / old planned fit"),
              ("tiny_fit", "tiny_torch", "tiny fit / PyTorch"), ("tiny_jit", "tiny_fit", "tiny jit / fit")]
    print("\nmedians over repeats (epoch seconds; tiny cases: microseconds per step)")
    print(f"{'case':>16} " + " ".join(f"{t:>2} thr".rjust(12) for t in args.threads))
    for name, _ in runs:
        cells = [statistics.median(value(name, t, i) for i in range(args.repeats)) for t in args.threads]
        print(f"{name:>16} " + " ".join(f"{c:12.3f}" for c in cells))
    print("\nratios (median [min-max] of per-repeat ratios)")
    for a, b, label in ratios:
        if (a, args.threads[0]) not in results or (b, args.threads[0]) not in results:
            continue
        cells = []
        for t in args.threads:
            rs = [value(a, t, i) / value(b, t, i) for i in range(args.repeats)]
            cells.append(f"{statistics.median(rs):.2f} [{min(rs):.2f}-{max(rs):.2f}]")
        print(f"{label:>28} " + " ".join(c.rjust(20) for c in cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{k[0]}@{k[1]}": v for k, v in results.items()}, f, indent=1)


if __name__ == "__main__":
    main()
