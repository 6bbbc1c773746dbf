#!/usr/bin/env python
"""Training speed while other processes use the CPUs: the default thread count
against one thread, minigrad and PyTorch eager, with the load started here.

    python benchmarks/bench_load.py --repeats 3 [--cases mlp tiny convnet torch_mlp ...]
        [--loads idle spin light] [--configs 1 default [fixed]]

Loads (each a subprocess started before the measurement and killed after it):

- ``idle``: none (other users of the machine still run: each row records how
  many CPUs the rest of the machine used meanwhile);
- ``spin``: one process running ``while True: pass`` (one core kept busy);
- ``light``: one process busy 10 ms out of every 50 (20% of a core, in bursts).

Configurations: ``1`` = one thread; ``default`` = minigrad's default (all usable
CPUs, adaptive team), PyTorch's default thread count; ``fixed`` = minigrad's
default count with the team fixed (MINIGRAD_ADAPTIVE_THREADS=0) and libgomp's
own spin (GOMP_SPINCOUNT=300000), i.e. plain OpenMP behaviour.

Cases: ``mlp`` fit one epoch of real MNIST (the book's MLP, batch 128, s/epoch);
``tiny`` fit a 13-64-64-2 model at batch 1 on 404 samples (us/step); ``convnet``
100 steps of fit of the book's convnet (batch 64, s/100 steps); ``torch_*`` the
same in PyTorch eager (its MLP timed over 60 steps and its convnet over 20, scaled:
at its default thread count under load one epoch can take minutes). Every measurement is a fresh worker process; loads,
configurations and cases are interleaved within each repeat, and the table gives
medians (with min-max) over repeats and the median of per-repeat ratios
default / 1 thread under the same load.
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
CONV_STEPS = 100
TORCH_MLP_STEPS = 60    # scaled to the 469 steps of an epoch
TORCH_CONV_STEPS = 20   # scaled to CONV_STEPS

# ---------------------------------------------------------------- loads

LOADS = {
    "idle": None,
    "spin": "while True:\n    pass\n",
    "light": ("import time\n"
              "while True:\n"
              "    end = time.perf_counter() + 0.010\n"
              "    while time.perf_counter() < end:\n"
              "        pass\n"
              "    time.sleep(0.040)\n"),
}


def start_load(name):
    code = LOADS[name]
    if code is None:
        return None
    proc = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.3)  # let it start running before the worker does
    return proc


def stop_load(proc):
    if proc is not None:
        proc.kill()
        proc.wait()


def busy_ticks():
    """(busy, total) ticks of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)


# ---------------------------------------------------------------- workers

def _tiny_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((TINY_SAMPLES, 13)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def worker_minigrad(case, config, mnist_dir):
    import minigrad as mg
    from minigrad import layers, models
    if config == "1":
        mg.set_num_threads(1)
    mg.utils.set_random_seed(0)
    if case == "tiny":
        x, y = _tiny_data()
        model = models.Sequential([layers.Dense(64, activation="relu", input_shape=(13,)),
                                   layers.Dense(64, activation="relu"),
                                   layers.Dense(2, activation="softmax")])
        model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=1, epochs=1, verbose=0)  # warm
        t = time.perf_counter()
        model.fit(x, y, batch_size=1, epochs=2, verbose=0)
        out = {"value": (time.perf_counter() - t) / (2 * TINY_SAMPLES) * 1e6, "unit": "us/step"}
    elif case == "mlp":
        x, y = bl.real_mnist(mnist_dir)
        model = models.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                                   layers.Dense(10, activation="softmax")])
        model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x[:2048], y[:2048], batch_size=128, epochs=1, verbose=0)  # warm
        t = time.perf_counter()
        model.fit(x, y, batch_size=128, epochs=1, verbose=0)
        out = {"value": time.perf_counter() - t, "unit": "s/epoch"}
    else:  # convnet
        x, y = bl.real_mnist(mnist_dir, n=64 * (CONV_STEPS + 8))
        x = x.reshape(-1, 28, 28, 1)
        model = models.Sequential([
            layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(10, activation="softmax")])
        model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x[:64 * 8], y[:64 * 8], batch_size=64, epochs=1, verbose=0)  # warm
        t = time.perf_counter()
        model.fit(x[64 * 8:], y[64 * 8:], batch_size=64, epochs=1, verbose=0)
        out = {"value": time.perf_counter() - t, "unit": f"s/{CONV_STEPS} steps"}
    out["team_at_end"] = mg.effective_num_threads()
    out["threads"] = mg.get_num_threads()
    return out


def worker_torch(case, config, mnist_dir):
    import torch
    nn = torch.nn
    if config == "1":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    loss_fn = nn.CrossEntropyLoss()
    if case == "torch_tiny":
        x, y = _tiny_data()
        net = nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
        batch, steps_warm, unit = 1, TINY_SAMPLES, "us/step"
    elif case == "torch_mlp":
        x, y = bl.real_mnist(mnist_dir)
        net = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
        batch, steps_warm, unit = 128, 16, "s/epoch"
    else:
        x, y = bl.real_mnist(mnist_dir, n=64 * (CONV_STEPS + 8))
        x = x.reshape(-1, 1, 28, 28)
        net = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                            nn.MaxPool2d(2), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(),
                            nn.Linear(576, 64), nn.ReLU(), nn.Linear(64, 10))
        batch, steps_warm, unit = 64, 8, f"s/{CONV_STEPS} steps"
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))

    def run(lo, hi, shuffle):
        idx = lo + torch.randperm(hi - lo) if shuffle else torch.arange(lo, hi)
        for s in range(0, hi - lo, batch):
            b = idx[s:s + batch]
            opt.zero_grad()
            loss_fn(net(xt[b]), yt[b]).backward()
            opt.step()
    # PyTorch at its default thread count can take minutes per epoch under load:
    # its MLP and convnet run fewer steps, scaled to an epoch / CONV_STEPS steps.
    if case == "torch_tiny":
        run(0, len(xt), True)
        t = time.perf_counter()
        run(0, len(xt), True)
        value = (time.perf_counter() - t) / len(xt) * 1e6
    elif case == "torch_mlp":
        run(0, steps_warm * batch, True)
        t = time.perf_counter()
        run(0, TORCH_MLP_STEPS * batch, True)
        value = (time.perf_counter() - t) * (len(xt) / batch) / TORCH_MLP_STEPS
    else:
        run(0, steps_warm * batch, False)
        t = time.perf_counter()
        run(steps_warm * batch, (steps_warm + TORCH_CONV_STEPS) * batch, False)
        value = (time.perf_counter() - t) * CONV_STEPS / TORCH_CONV_STEPS
    return {"value": value, "unit": unit, "threads": torch.get_num_threads()}


# ---------------------------------------------------------------- driver

CASES = ("mlp", "tiny", "convnet", "torch_mlp", "torch_tiny", "torch_convnet")
CONFIGS = ("1", "default", "fixed")


def measure(case, config, load, mnist_dir):
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MINIGRAD_ADAPTIVE_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):
        env.pop(k, None)
    if config == "fixed":
        env.update(MINIGRAD_ADAPTIVE_THREADS="0", GOMP_SPINCOUNT="300000")
    proc = start_load(load)
    try:
        b0, t0 = busy_ticks()
        r0 = os.times()
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", case, "--configs", config,
                              "--mnist-dir", mnist_dir], env=env, capture_output=True, text=True, timeout=900)
        b1, t1 = busy_ticks()
        r1 = os.times()
    finally:
        stop_load(proc)
    if out.returncode != 0:
        raise RuntimeError(f"{case}/{config}/{load} failed:\n{out.stderr}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    ncpu = os.cpu_count()
    # CPUs busy over the run: the whole machine, and the worker (a child of this process)
    res["machine_cpus"] = round((b1 - b0) / max(t1 - t0, 1) * ncpu, 2)
    wall = r1.elapsed - r0.elapsed
    res["worker_cpus"] = round(((r1.children_user + r1.children_system) -
                                (r0.children_user + r0.children_system)) / max(wall, 1e-9), 2)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--loads", nargs="+", default=list(LOADS), choices=list(LOADS))
    # "fixed" is opt-in: under load one of its MLP epochs can take over a minute
    p.add_argument("--configs", nargs="+", default=["1", "default"], choices=CONFIGS)
    p.add_argument("--mnist-dir", default=bl.default_mnist_dir())
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write every measurement here")
    args = p.parse_args(argv)
    if args.worker:
        fn = worker_torch if args.worker.startswith("torch") else worker_minigrad
        print(json.dumps(fn(args.worker, args.configs[0], args.mnist_dir)))
        return
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    results = {}
    for rep in range(args.repeats):
        for load in args.loads:
            for case in args.cases:
                configs = [c for c in args.configs if not (case.startswith("torch") and c == "fixed")]
                for config in configs:
                    r = measure(case, config, load, args.mnist_dir)
                    results.setdefault((case, load, config), []).append(r)
                    print(f"rep {rep} {load:>5} {case:>13} {config:>7}: {json.dumps(r)}", flush=True)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"case": c, "load": l, "config": g, "runs": v} for (c, l, g), v in results.items()], f,
                      indent=1)

    def cell(vals):
        return f"{statistics.median(vals):.3g} ({min(vals):.3g}-{max(vals):.3g})"
    print()
    print("| case | load | 1 thread | default | fixed team | default/1 (median of per-repeat ratios) "
          "| fixed/1 | machine CPUs busy (median) |")
    print("|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        for load in args.loads:
            row = {c: results.get((case, load, c)) for c in args.configs}
            if not row.get("1") or not row.get("default"):
                continue
            vals = {c: [r["value"] for r in v] for c, v in row.items() if v}
            n = min(len(v) for v in vals.values())
            ratio = statistics.median(vals["default"][i] / vals["1"][i] for i in range(n))
            fixed = (f"{statistics.median(vals['fixed'][i] / vals['1'][i] for i in range(n)):.2f}"
                     if "fixed" in vals else "-")
            busy = statistics.median(r["machine_cpus"] for v in row.values() if v for r in v)
            unit = row["1"][0]["unit"]
            print(f"| {case} ({unit}) | {load} | {cell(vals['1'])} | {cell(vals['default'])} | "
                  f"{cell(vals['fixed']) if 'fixed' in vals else '-'} | {ratio:.2f} | {fixed} | {busy:.2f} |")


if __name__ == "__main__":
    main()
