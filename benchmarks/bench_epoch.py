#!/usr/bin/env python
"""One training epoch of the book's MNIST MLP, engine against engine.

    python benchmarks/bench_epoch.py --threads 1 2 --repeats 3 [--json PATH] [--peak-memory]

The model: Dense(512, relu) -> Dense(10, softmax), categorical cross-entropy,
RMSprop(lr=1e-3, rho=0.9, eps=1e-7), batch 128, one epoch over 60000 synthetic
MNIST-shaped samples (float32 images in [0, 1), random labels, fixed seeds):
469 steps, about 98 GFLOP of GEMM work.

Engines (each in its own worker process, started once, so that no engine's thread
pools or allocator state can disturb another's, and so that PyTorch is never
loaded next to minigrad):
  minigrad-fit   Sequential.fit(verbose=0, shuffle=True), one-hot targets (the book's code)
  minigrad-loop  a hand-written loop over Tensors: mg.dense, mg.softmax_cross_entropy,
                 backward, kernels.rmsprop_update (the difference to -fit is fit's overhead)
  numpy          a hand-written float32 NumPy loop: forward, backward, RMSprop
  torch          PyTorch eager: nn.Linear layers, F.cross_entropy, torch.optim.RMSprop
                 (alpha=0.9, eps=1e-7; PyTorch puts eps outside the root: same cost)
All engines start from the same Glorot weights and see the same batches (fit draws
its permutation from minigrad's generator, reseeded with the same seed).

Cases:
  normal  the first epoch from the initial weights on the synthetic data above
          (dense images: no exact zeros);
  mnist   the same on the real MNIST training set (--mnist-dir, default $MINIGRAD_DATA
          or ../shared/mnist): 81% of its pixels are exact zeros, which minigrad's GEMM
          skips (see csrc/gemm_sparse.c) and the other engines multiply;
  late    late training: each engine first trains --late-epochs epochs on a small
          learnable subset (--late-subset samples whose images are a class prototype
          plus noise), then the timed epoch runs over 60000 samples made by repeating
          that subset. The model has fitted this data almost perfectly, so gradients,
          softmax outputs and optimizer state drift towards float32 subnormals; the
          script prints how many values are subnormal (a NumPy IEEE probe) per engine.
Each timed epoch starts from the same saved state (weights and optimizer state),
so the repeats time the same work.

Runs are interleaved: for each repeat, for each case, for each thread count, every
engine runs one epoch (the engine order rotates between repeats). Reported: the
median seconds per epoch, samples/s, GFLOP/s, time ratios computed per repeat (side
by side) and their median [min-max], the GEMM floor (the NumPy loop's own time inside
sgemm: no engine whose GEMMs run at OpenBLAS's speed and skip nothing can be faster),
the 1 -> N thread speed-up, and the late/normal slow-down. The CPU time other processes used during each epoch is measured from
/proc/stat ("other load", in cores) because the machines are shared.
"""
import argparse
import copy
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
import _benchlib as bl  # noqa: E402

ENGINES = ("minigrad-fit", "minigrad-loop", "numpy", "torch")
CASES = ("normal", "mnist", "late")
B = bl.BATCH
DATA_SEED, INIT_SEED, LATE_SEED = 0, 1, 3
F32 = np.float32
TINY = np.finfo(np.float32).tiny  # smallest normal float32, 1.18e-38


# ---------------------------------------------------------------- data

def late_subset(n_sub, seed=LATE_SEED):
    """A small learnable set: image = 0.5 * prototype[label] + 0.5 * U[0, 1)."""
    rng = np.random.default_rng(seed)
    protos = rng.random((bl.D_OUT, bl.D_IN), dtype=np.float32)
    y = rng.integers(0, bl.D_OUT, n_sub, dtype=np.int64)
    x = 0.5 * protos[y] + 0.5 * rng.random((n_sub, bl.D_IN), dtype=np.float32)
    return np.ascontiguousarray(x, dtype=F32), y


def repeat_to(x, y, n):
    reps = -(-n // len(x))
    return (np.ascontiguousarray(np.tile(x, (reps, 1))[:n]),
            np.ascontiguousarray(np.tile(y, reps)[:n]))


def one_hot(y):
    out = np.zeros((len(y), bl.D_OUT), dtype=F32)
    out[np.arange(len(y)), y] = 1.0
    return out


def shuffle_seed(case, rep, epoch=0):
    return 1000 + 100 * rep + 10 * epoch + CASES.index(case)


# ---------------------------------------------------------------- subnormal probe

def subnormal_profile(weights, slots, x, y):
    """Fractions of float32 subnormals an IEEE engine meets in one step on (x, y).

    Computed in NumPy (IEEE arithmetic, no flush-to-zero) from an engine's weights
    [W1 (784, 512), b1, W2 (512, 10), b2] and its RMSprop state arrays.
    """
    W1, b1, W2, b2 = weights
    k = len(y)
    h = np.maximum(x @ W1 + b1, 0)
    z = h @ W2 + b2
    top2 = np.sort(z, axis=1)[:, -2:]
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=1, keepdims=True)
    g = p.copy()
    g[np.arange(k), y] -= 1
    g *= F32(1.0 / k)
    dh = (g @ W2.T) * (h > 0)

    def frac(a):
        a = np.abs(np.asarray(a, dtype=F32))
        return float(np.mean((a > 0) & (a < TINY)))
    v = np.concatenate([np.ravel(s) for s in slots]) if slots else np.zeros(1, F32)
    return {
        "probs": frac(p), "probs_zero": float(np.mean(p == 0)), "dlogits": frac(g),
        "dh": frac(dh), "dW2": frac(h.T @ g), "dW1": frac(x.T @ dh), "rmsprop_v": frac(v),
        "logit_margin_median": float(np.median(top2[:, 1] - top2[:, 0])),
    }


# ---------------------------------------------------------------- engines
#
# Each engine: reset() (initial weights, empty optimizer state), get_state()/set_state(),
# epoch(x, y, seed) -> mean loss of the epoch, targets(y) (what its epoch() takes),
# weights() and slots() as NumPy arrays in Keras layout for the probe, set_threads(n).

def _blas_limit(n):
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=n, user_api="blas")  # stays in force (no context manager)


class NumpyEngine:
    name = "numpy"
    lr, rho, one_minus_rho, eps = F32(bl.LR), F32(bl.RHO), F32(1 - bl.RHO), F32(bl.EPS)

    def __init__(self, params0):
        self.params0 = params0
        self.reset()

    def set_threads(self, n):
        _blas_limit(n)

    def reset(self):
        self.P = [p.copy() for p in self.params0]
        self.V = [np.zeros_like(p) for p in self.params0]

    def get_state(self):
        return [p.copy() for p in self.P], [v.copy() for v in self.V]

    def set_state(self, state):
        for dst, src in zip(self.P + self.V, state[0] + state[1]):
            np.copyto(dst, src)

    def targets(self, y):
        return y

    def weights(self):
        return self.P

    def slots(self):
        return self.V

    def _matmul(self, a, b):
        """a @ b, its time added to self.gemm_s: the loop's time inside sgemm is the
        floor for any engine whose GEMMs run at OpenBLAS's speed."""
        t = time.perf_counter()
        out = a @ b
        self.gemm_s += time.perf_counter() - t
        return out

    def epoch(self, x, y, seed):
        W1, b1, W2, b2 = self.P
        lr, rho, omr, eps = self.lr, self.rho, self.one_minus_rho, self.eps
        mm = self._matmul
        n = len(x)
        perm = np.random.default_rng(seed).permutation(n)
        rows = np.arange(B)
        total = 0.0
        self.gemm_s = 0.0
        clock = self.clock = [time.perf_counter()]
        for start in range(0, n, B):
            idx = perm[start:start + B]
            k = len(idx)
            xb, yb = x[idx], y[idx]
            h = mm(xb, W1)
            h += b1
            np.maximum(h, 0, out=h)
            z = mm(h, W2)
            z += b2
            z -= z.max(axis=1, keepdims=True)
            e = np.exp(z)
            se = e.sum(axis=1, keepdims=True)
            total += float(np.log(se).sum() - z[rows[:k], yb].sum())  # sum of -log softmax[y]
            g = e / se
            g[rows[:k], yb] -= 1
            g *= F32(1.0 / k)
            dW2 = mm(h.T, g)
            db2 = g.sum(axis=0)
            dh = mm(g, W2.T)
            dh *= h > 0
            dW1 = mm(xb.T, dh)
            db1 = dh.sum(axis=0)
            for w, gr, v in zip(self.P, (dW1, db1, dW2, db2), self.V):
                v *= rho
                v += omr * gr * gr
                w -= lr * gr / np.sqrt(v + eps)
            clock.append(time.perf_counter())
        return total / n


class MinigradLoopEngine:
    name = "minigrad-loop"

    def __init__(self, params0):
        import minigrad as mg
        from minigrad import kernels
        self.mg, self.kernels = mg, kernels
        self.params0 = params0
        self.P = [mg.Tensor(p.copy(), requires_grad=True) for p in params0]
        self.V = [np.zeros_like(p) for p in params0]

    def set_threads(self, n):
        self.mg.set_num_threads(n)
        self.mg.set_adaptive_threads(False)  # a row at n threads runs n (bench_load.py measures adaptation)
        _blas_limit(n)

    def reset(self):
        for t, v, p in zip(self.P, self.V, self.params0):
            np.copyto(t.data, p)
            v[...] = 0
            t.grad = None

    def get_state(self):
        return [t.data.copy() for t in self.P], [v.copy() for v in self.V]

    def set_state(self, state):
        for t, w in zip(self.P, state[0]):
            np.copyto(t.data, w)
        for v, s in zip(self.V, state[1]):
            np.copyto(v, s)

    def targets(self, y):
        return y

    def weights(self):
        return [t.data for t in self.P]

    def slots(self):
        return self.V

    def epoch(self, x, y, seed):
        mg, kernels = self.mg, self.kernels
        W1, b1, W2, b2 = P = self.P
        ws, V = [t.data for t in P], self.V
        n = len(x)
        perm = np.random.default_rng(seed).permutation(n)
        total = 0.0
        clock = self.clock = [time.perf_counter()]
        for start in range(0, n, B):
            idx = perm[start:start + B]
            xb, yb = x[idx], y[idx]
            h = mg.dense(mg.Tensor(xb), W1, b1, "relu")
            logits = mg.dense(h, W2, b2)
            loss = mg.softmax_cross_entropy(logits, yb)
            loss.backward()
            kernels.rmsprop_update(ws, [t.grad for t in P], V, bl.LR, bl.RHO, bl.EPS)
            for t in P:
                t.grad = None
            total += loss.item() * len(idx)
            clock.append(time.perf_counter())
        return total / n


class MinigradFitEngine:
    name = "minigrad-fit"

    def __init__(self, params0):
        import minigrad as mg
        try:
            from minigrad import layers, models, optimizers, utils
        except ImportError as exc:
            raise RuntimeError(f"minigrad.models is not available ({exc})") from None
        self.mg, self.utils = mg, utils
        self.params0 = params0
        self.model = models.Sequential([
            layers.Dense(bl.D_HID, activation="relu", input_shape=(bl.D_IN,)),
            layers.Dense(bl.D_OUT, activation="softmax"),
        ])
        self.opt = optimizers.RMSprop(learning_rate=bl.LR, rho=bl.RHO, epsilon=bl.EPS)
        self.model.compile(optimizer=self.opt, loss="categorical_crossentropy", metrics=["accuracy"])
        self.model.set_weights(params0)

    def set_threads(self, n):
        self.mg.set_num_threads(n)
        self.mg.set_adaptive_threads(False)  # a row at n threads runs n (bench_load.py measures adaptation)
        _blas_limit(n)

    def reset(self):
        self.model.set_weights(self.params0)
        for v in self.opt.variables():
            v[...] = 0
        self.opt.iterations = 0

    def get_state(self):
        return (self.model.get_weights(), [v.copy() for v in self.opt.variables()],
                self.opt.iterations)

    def set_state(self, state):
        weights, slots, iterations = state
        self.model.set_weights(weights)
        current = self.opt.variables()
        if len(current) != len(slots):
            raise RuntimeError("fit engine: the optimizer state changed shape")
        for v, s in zip(current, slots):
            np.copyto(v, s)
        self.opt.iterations = iterations

    def targets(self, y):
        return one_hot(y)  # the book: to_categorical + categorical_crossentropy

    def weights(self):
        return self.model.get_weights()

    def slots(self):
        return self.opt.variables()

    def epoch(self, x, y, seed):
        self.utils.set_random_seed(seed)
        clock = self.clock = []
        history = self.model.fit(x, y, batch_size=B, epochs=1, verbose=0, shuffle=True,
                                 callbacks=[self._clock_callback(clock)])
        return float(history.history["loss"][-1])

    def _clock_callback(self, clock):
        from minigrad.callbacks import Callback

        class StepClock(Callback):  # the time at the start of training and after each step
            def on_train_begin(self, logs=None):
                clock.append(time.perf_counter())

            def on_train_batch_end(self, batch, logs=None):
                clock.append(time.perf_counter())
        return StepClock()


class TorchEngine:
    name = "torch"

    def __init__(self, params0):
        import torch
        from torch import nn
        self.torch, self.F = torch, torch.nn.functional
        self.params0 = params0
        self.model = nn.Sequential(nn.Linear(bl.D_IN, bl.D_HID), nn.ReLU(),
                                   nn.Linear(bl.D_HID, bl.D_OUT))
        self.reset()

    def set_threads(self, n):
        self.torch.set_num_threads(n)
        _blas_limit(n)

    def reset(self):
        torch = self.torch
        W1, b1, W2, b2 = self.params0
        with torch.no_grad():
            for layer, w, b in ((self.model[0], W1, b1), (self.model[2], W2, b2)):
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
                layer.bias.copy_(torch.from_numpy(b))
        self.opt = torch.optim.RMSprop(self.model.parameters(), lr=bl.LR, alpha=bl.RHO, eps=bl.EPS)

    def get_state(self):
        return copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.opt.state_dict())

    def set_state(self, state):
        self.model.load_state_dict(state[0])
        self.opt.load_state_dict(state[1])

    def targets(self, y):
        return y

    def weights(self):
        m = self.model
        return [m[0].weight.detach().numpy().T.copy(), m[0].bias.detach().numpy().copy(),
                m[2].weight.detach().numpy().T.copy(), m[2].bias.detach().numpy().copy()]

    def slots(self):
        out = []
        for p in self.model.parameters():
            s = self.opt.state.get(p, {}).get("square_avg")
            if s is not None:
                out.append(s.detach().numpy())
        return out

    def epoch(self, x, y, seed):
        torch, F, model, opt = self.torch, self.F, self.model, self.opt
        X, Y = torch.from_numpy(x), torch.from_numpy(y)
        n = len(x)
        perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
        total = 0.0
        clock = self.clock = [time.perf_counter()]
        for start in range(0, n, B):
            idx = perm[start:start + B]
            xb, yb = X.index_select(0, idx), Y.index_select(0, idx)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            clock.append(time.perf_counter())
        return total / n


ENGINE_CLASSES = {"minigrad-fit": MinigradFitEngine, "minigrad-loop": MinigradLoopEngine,
                  "numpy": NumpyEngine, "torch": TorchEngine}


# ---------------------------------------------------------------- worker process

def _maxrss_mib():
    """Peak resident memory of this process so far, MiB.

    VmHWM of /proc/self/status where it exists: ru_maxrss (getrusage) is carried
    over fork+exec on Linux, so a worker started from a parent that had imported
    PyTorch would report the parent's peak. Elsewhere, ru_maxrss.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def worker_main(conn, engine_name, cfg):
    """Serve ("epoch", case, threads, seed) requests for one engine until ("quit",)."""
    try:
        t0 = time.perf_counter()
        params0 = bl.init_params(INIT_SEED)
        engine = ENGINE_CLASSES[engine_name](params0)
        x, y = bl.synthetic_mnist(cfg["samples"], DATA_SEED)
        data = {"normal": (x, engine.targets(y), y)}
        if "mnist" in cfg["cases"]:
            xm, ym = bl.real_mnist(cfg["mnist_dir"], cfg["samples"])
            data["mnist"] = (xm, engine.targets(ym), ym)
        info = {"engine": engine_name, "rss_after_setup_mib": None}
        states = {}
        if "late" in cfg["cases"]:
            xs, ys = late_subset(cfg["late_subset"])
            xl, yl = repeat_to(xs, ys, cfg["samples"])
            data["late"] = (xl, engine.targets(yl), yl)
            engine.set_threads(max(cfg["threads"]))
            engine.reset()
            pre_t = time.perf_counter()
            losses = [engine.epoch(xs, engine.targets(ys), 500 + e) for e in range(cfg["late_epochs"])]
            info["late_pretrain_s"] = time.perf_counter() - pre_t
            info["late_pretrain_losses"] = [losses[0], losses[-1]] if losses else []
            states["late"] = engine.get_state()
            info["late_profile_start"] = subnormal_profile(
                engine.weights(), engine.slots(), xl[:1024], yl[:1024])
        info["setup_s"] = time.perf_counter() - t0
        info["rss_after_setup_mib"] = _maxrss_mib()
        conn.send(("ready", info))
        while True:
            msg = conn.recv()
            if msg[0] == "quit":
                break
            _, case, threads, seed, want_profile = msg
            engine.set_threads(threads)
            if case == "late":
                engine.set_state(states["late"])
            else:
                engine.reset()
            xd, yd, yint = data[case]
            with bl.CpuMonitor() as mon:
                loss = engine.epoch(xd, yd, seed)
            steps = np.diff(np.asarray(getattr(engine, "clock", []), dtype=np.float64))
            result = {"step_median_s": float(np.median(steps)) if len(steps) else float("nan"),
                      "steps": int(len(steps)),
                      "seconds": mon.wall, "cpu_seconds": mon.self_cpu,
                      "other_cores": mon.other_cores, "steal_cores": mon.steal_cores,
                      "loss": loss}
            if hasattr(engine, "gemm_s"):
                result["gemm_seconds"] = engine.gemm_s
            if want_profile:
                result["profile_after"] = subnormal_profile(
                    engine.weights(), engine.slots(), xd[:1024], yint[:1024])
            conn.send(("result", result))
    except Exception:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def memory_worker(conn, engine_name, cfg):
    """Peak RSS of one fresh process: imports, data, engine, one normal epoch."""
    try:
        stages = {"start": _maxrss_mib()}
        cls = ENGINE_CLASSES[engine_name]
        x, y = bl.synthetic_mnist(cfg["samples"], DATA_SEED)
        stages["data"] = _maxrss_mib()
        engine = cls(bl.init_params(INIT_SEED))
        engine.set_threads(max(cfg["threads"]))
        yt = engine.targets(y)
        stages["engine"] = _maxrss_mib()
        engine.epoch(x, yt, shuffle_seed("normal", 0))
        stages["epoch"] = _maxrss_mib()
        conn.send(("result", stages))
    except Exception:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


class Worker:
    def __init__(self, ctx, target, engine, cfg):
        self.engine = engine
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child, engine, cfg), daemon=True)
        self.proc.start()
        child.close()

    def recv(self):
        kind, payload = self.conn.recv()
        if kind == "error":
            raise RuntimeError(f"{self.engine} worker failed:\n{payload}")
        return payload

    def close(self):
        try:
            self.conn.send(("quit",))
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()


# ---------------------------------------------------------------- parent: run and report

def available_engines(requested):
    out, skipped = [], {}
    for name in requested:
        if name == "torch" and bl.try_import_torch() is None:
            skipped[name] = "PyTorch is not importable"
        elif name == "minigrad-fit":
            try:
                from minigrad import models  # noqa: F401
            except ImportError as exc:
                skipped[name] = f"minigrad.models is not available ({exc})"
            else:
                out.append(name)
        else:
            out.append(name)
    return out, skipped


def run_timing(args, engines, log):
    ctx = mp.get_context("spawn")
    cfg = {"samples": args.samples, "cases": args.cases, "threads": args.threads,
           "late_subset": args.late_subset, "late_epochs": args.late_epochs,
           "mnist_dir": args.mnist_dir}
    workers, infos, skipped = {}, {}, {}
    log(f"starting {len(engines)} worker processes, one after the other (data, model"
        f"{', late-training pre-training' if 'late' in args.cases else ''}) ...")
    for name in engines:  # one at a time, so that set-up and pre-training run alone
        workers[name] = Worker(ctx, worker_main, name, cfg)
        try:
            infos[name] = workers[name].recv()
        except (RuntimeError, EOFError) as exc:
            skipped[name] = str(exc).strip().splitlines()[-1]
            log(f"  {name}: skipped: {skipped[name]}")
            workers.pop(name).close()
            continue
        i = infos[name]
        extra = ""
        if "late_pretrain_s" in i:
            l0, l1 = (i["late_pretrain_losses"] + [float("nan")] * 2)[:2]
            extra = (f", late pre-training {i['late_pretrain_s']:.1f} s "
                     f"(loss {l0:.3g} -> {l1:.3g})")
        log(f"  {name}: ready in {i['setup_s']:.1f} s{extra}")
    runs = []
    names = list(workers)
    total = args.repeats * len(args.cases) * len(args.threads) * len(names)
    done = 0
    try:
        for rep in range(args.repeats):
            order = names[rep % len(names):] + names[:rep % len(names)] if names else []
            for case in args.cases:
                for threads in args.threads:
                    seed = shuffle_seed(case, rep)
                    for name in order:
                        want_profile = case == "late" and rep == 0 and threads == args.threads[0]
                        waited, _ = bl.wait_for_quiet(args.wait_quiet)
                        workers[name].conn.send(("epoch", case, threads, seed, want_profile))
                        r = workers[name].recv()
                        r.update(engine=name, case=case, threads=threads, rep=rep, waited_s=waited)
                        runs.append(r)
                        done += 1
                        log(f"  [{done}/{total}] rep {rep} {case:<6} {threads} thr {name:<14} "
                            f"{r['seconds']:7.3f} s  loss {r['loss']:.4g}  "
                            f"other load {r['other_cores']:.2f} cores"
                            + (f" (waited {waited:.0f} s for quiet)" if waited > 0.5 else ""))
                        time.sleep(args.gap)
    finally:
        for w in workers.values():
            w.close()
    return runs, infos, skipped


def run_memory(args, engines, log):
    ctx = mp.get_context("spawn")
    cfg = {"samples": args.samples, "threads": args.threads}
    out = {}
    for name in engines:
        w = Worker(ctx, memory_worker, name, cfg)
        try:
            out[name] = w.recv()
            log(f"  {name}: peak RSS {out[name]['epoch']:.0f} MiB")
        except (RuntimeError, EOFError) as exc:
            out[name] = {"error": str(exc).strip().splitlines()[-1]}
        finally:
            w.proc.join(timeout=30)
    return out


def _med_range(xs):
    return {"median": bl.median(xs), "min": min(xs), "max": max(xs)} if xs else None


def summarize(runs, args):
    flops = bl.epoch_flops(args.samples)
    table, by = [], {}
    for r in runs:
        by.setdefault((r["case"], r["threads"], r["engine"]), {})[r["rep"]] = r
    for (case, threads, engine), reps in by.items():
        secs = [r["seconds"] for r in reps.values()]
        med = bl.median(secs)
        table.append({
            "case": case, "threads": threads, "engine": engine, "median_s": med,
            "min_s": min(secs), "max_s": max(secs), "spread": bl.spread(secs), "n": len(secs),
            "samples_per_s": args.samples / med, "gflops": flops / med / 1e9,
            "est_s": bl.median([r["step_median_s"] * r["steps"] for r in reps.values()]),
            "cpu_per_wall": bl.median([r["cpu_seconds"] / r["seconds"] for r in reps.values()]),
            "other_cores": max(r["other_cores"] for r in reps.values()),
            "loss": bl.median([r["loss"] for r in reps.values()]),
        })
    order = {e: i for i, e in enumerate(ENGINES)}
    table.sort(key=lambda t: (CASES.index(t["case"]), t["threads"], order[t["engine"]]))

    def per_rep_ratio(key_a, key_b):
        a, b = by.get(key_a, {}), by.get(key_b, {})
        common = sorted(set(a) & set(b))
        out = _med_range([a[r]["seconds"] / b[r]["seconds"] for r in common])
        if out:  # the same ratio from the median step times (robust to bursts of load)
            out["steps_median"] = bl.median([a[r]["step_median_s"] / b[r]["step_median_s"]
                                             for r in common])
        return out

    pairs = [("minigrad-fit", "torch"), ("minigrad-fit", "numpy"), ("minigrad-loop", "torch"),
             ("minigrad-loop", "numpy"), ("minigrad-fit", "minigrad-loop")]
    ratios = []
    for case in args.cases:
        for threads in args.threads:
            for a, b in pairs:
                r = per_rep_ratio((case, threads, a), (case, threads, b))
                if r:
                    ratios.append({"case": case, "threads": threads, "a": a, "b": b, **r})
    speedups = []
    t0 = args.threads[0]
    for case in args.cases:
        for engine in ENGINES:
            for t in args.threads[1:]:
                r = per_rep_ratio((case, t0, engine), (case, t, engine))
                if r:
                    speedups.append({"case": case, "engine": engine, "from": t0, "to": t, **r})
    late = []
    if "late" in args.cases and "normal" in args.cases:
        for threads in args.threads:
            for engine in ENGINES:
                r = per_rep_ratio(("late", threads, engine), ("normal", threads, engine))
                if r:
                    late.append({"engine": engine, "threads": threads, **r})
    floors = []  # NumPy's time inside sgemm, per repeat: the GEMM floor of this machine
    for case in args.cases:
        for threads in args.threads:
            np_reps = by.get((case, threads, "numpy"), {})
            reps = {r: v for r, v in np_reps.items() if v.get("gemm_seconds")}
            if not reps:
                continue
            entry = {"case": case, "threads": threads,
                     "floor_s": bl.median([v["gemm_seconds"] for v in reps.values()]),
                     "numpy_share": _med_range([v["gemm_seconds"] / v["seconds"]
                                                for v in reps.values()])}
            for engine in ("minigrad-fit", "torch"):
                other = by.get((case, threads, engine), {})
                common = sorted(set(other) & set(reps))
                if common:
                    entry[engine] = _med_range([other[r]["seconds"] / reps[r]["gemm_seconds"]
                                                for r in common])
            floors.append(entry)
    worst = None  # the three engines with Keras-3 RMSprop must agree on the loss
    for key in {(r["case"], r["threads"], r["rep"]) for r in runs}:
        losses = [r["loss"] for r in runs if (r["case"], r["threads"], r["rep"]) == key
                  and r["engine"] != "torch"]
        if len(losses) > 1 and max(losses) > 0:
            d = (max(losses) - min(losses)) / max(losses)
            worst = d if worst is None else max(worst, d)
    return {"epoch_gflop": flops / 1e9, "loss_agreement": worst, "table": table, "ratios": ratios,
            "speedups": speedups, "late_vs_normal": late, "gemm_floor": floors}


def _rng_s(r, fmt="{:.2f}"):
    out = f"{fmt.format(r['median'])} [{fmt.format(r['min'])}-{fmt.format(r['max'])}]"
    if "steps_median" in r:
        out += f"   (from median steps: {fmt.format(r['steps_median'])})"
    return out


def report(summary, infos, runs, memory, args, env, skipped, log):
    log("")
    for line in bl.describe_environment(env):
        log(line)
    log(f"Epoch: {args.samples} samples, batch {B}, "
        f"{math.ceil(args.samples / B)} steps, {summary['epoch_gflop']:.1f} GFLOP (GEMMs). "
        f"Repeats: {args.repeats}, interleaved; times are medians over the repeats.")
    for name, why in skipped.items():
        log(f"skipped {name}: {why}")
    if summary["table"]:
        log("")
        log(f"{'case':<7}{'thr':>4}  {'engine':<14}{'s/epoch':>9} {'[min-max]':>17}{'spread':>8}"
            f"{'samples/s':>11}{'GFLOP/s':>9}{'step est':>9}{'cpu/wall':>9}{'load max':>9}{'loss':>9}")
        for t in summary["table"]:
            log(f"{t['case']:<7}{t['threads']:>4}  {t['engine']:<14}{t['median_s']:>9.3f} "
                f"{'[' + format(t['min_s'], '.3f') + '-' + format(t['max_s'], '.3f') + ']':>17}"
                f"{t['spread']:>8.0%}{t['samples_per_s']:>11,.0f}{t['gflops']:>9.1f}{t['est_s']:>9.3f}"
                f"{t['cpu_per_wall']:>9.2f}{t['other_cores']:>9.2f}{t['loss']:>9.3g}")
        log("  spread = (max-min)/median over the repeats; step est = median step time x steps "
            "(s/epoch without bursts of load);")
        log("  cpu/wall = this engine's CPU time per second (threads busy or spinning);")
        log("  load max = the most cores other processes used during one of the repeats (/proc/stat).")
        if summary.get("loss_agreement") is not None:
            log(f"  minigrad-fit, minigrad-loop and numpy train alike: their epoch losses differ by at "
                f"most {summary['loss_agreement']:.2%} (same weights, batches and RMSprop form).")
    if summary["ratios"]:
        log("")
        log("Time ratios, per repeat then median [min-max] (< 1: the first is faster):")
        for r in summary["ratios"]:
            log(f"  {r['case']:<7}{r['threads']} thr  {r['a']:>14} / {r['b']:<14} {_rng_s(r)}")
    if summary.get("gemm_floor"):
        log("")
        log("GEMM floor: the NumPy loop's own time inside its five sgemm calls per step (OpenBLAS,")
        log("same run). An engine whose GEMMs run at OpenBLAS's speed and do every multiplication")
        log("needs at least this long, so its best possible time ratio to the NumPy loop is the")
        log("loop's sgemm share. Per repeat, median [min-max]:")
        for f in summary["gemm_floor"]:
            line = (f"  {f['case']:<7}{f['threads']} thr  sgemm {f['floor_s']:.3f} s = "
                    f"{_rng_s(f['numpy_share'], '{:.0%}')} of numpy's epoch")
            for engine in ("minigrad-fit", "torch"):
                if engine in f:
                    line += f";  {engine} / floor {_rng_s(f[engine])}"
            log(line)
        log("  (minigrad-fit can go below the floor only where it skips work: the zero pixels "
            "of real MNIST.)")
    if summary["speedups"]:
        log("")
        log("Thread speed-up t(first)/t(more) per repeat, median [min-max]:")
        for r in summary["speedups"]:
            log(f"  {r['case']:<7}{r['engine']:<14} {r['from']} -> {r['to']} threads: {_rng_s(r)}")
    if summary["late_vs_normal"]:
        log("")
        log("Late-training slow-down t(late)/t(normal) per repeat, median [min-max]:")
        for r in summary["late_vs_normal"]:
            log(f"  {r['threads']} thr  {r['engine']:<14} {_rng_s(r)}")
    profiles = {n: i.get("late_profile_start") for n, i in infos.items() if i.get("late_profile_start")}
    if profiles:
        log("")
        log("Late-training state: fraction of float32 subnormals an IEEE engine meets "
            "(NumPy probe on 1024 samples),")
        log("at the start of the timed late epoch / at its end (rep 0). Columns: softmax probs, "
            "d(logits), d(hidden), dW2, dW1, RMSprop v; probs == 0; median logit margin.")
        after = {r["engine"]: r["profile_after"] for r in runs if r.get("profile_after")}
        keys = ("probs", "dlogits", "dh", "dW2", "dW1", "rmsprop_v")
        for name, p in profiles.items():
            for label, prof in (("start", p), ("end", after.get(name))):
                if prof is None:
                    continue
                cells = " ".join(f"{k}={prof[k]:.2%}" for k in keys)
                log(f"  {name:<14}{label:<6}{cells} zero-probs={prof['probs_zero']:.2%} "
                    f"margin={prof['logit_margin_median']:.1f}")
    if memory:
        log("")
        log(f"Peak RSS (VmHWM, MiB) of one fresh process per engine: Python+NumPy / + data "
            f"({args.samples}x{bl.D_IN} float32 = {args.samples * bl.D_IN * 4 / 2**20:.0f} MiB) / "
            f"+ engine (its imports, model) / after one epoch:")
        for name, m in memory.items():
            if "error" in m:
                log(f"  {name:<14} failed: {m['error']}")
            else:
                log(f"  {name:<14}{m['start']:>8.0f}{m['data']:>8.0f}{m['engine']:>8.0f}{m['epoch']:>8.0f}"
                    f"   (training: epoch - engine {m['epoch'] - m['engine']:.0f} MiB)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="thread counts (the first is the speed-up baseline; default 1 2)")
    p.add_argument("--repeats", type=int, default=3,
                   help="interleaved repeats of every (case, threads, engine) (default 3; 0: no timing)")
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--samples", type=int, default=bl.N_TRAIN, help="samples per epoch (default 60000)")
    p.add_argument("--mnist-dir", default=bl.default_mnist_dir(),
                   help="folder with MNIST's train-*-ubyte.gz for the mnist case "
                        "(default $MINIGRAD_DATA or ../shared/mnist)")
    p.add_argument("--late-subset", type=int, default=1280,
                   help="size of the subset the late-training model has fitted (default 1280)")
    p.add_argument("--late-epochs", type=int, default=100,
                   help="epochs of pre-training on that subset (default 100, i.e. 1000 steps)")
    p.add_argument("--gap", type=float, default=0.25,
                   help="seconds of idle time between two timed epochs (default 0.25: "
                        "OpenBLAS's worker threads spin for ~0.1 s after the NumPy loop's "
                        "last call, on a core the next engine needs)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each epoch, wait up to SECONDS for other processes to use "
                        "< 0.3 cores (default 0: do not wait)")
    p.add_argument("--peak-memory", action="store_true",
                   help="also measure the peak RSS of one epoch of each engine, each in a fresh process")
    p.add_argument("--json", metavar="PATH", help="write environment, every run and the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="print only the final report")
    args = p.parse_args(argv)
    if "mnist" in args.cases and not os.path.exists(
            os.path.join(args.mnist_dir, "train-images-idx3-ubyte.gz")):
        print(f"bench_epoch: no MNIST in {args.mnist_dir}: skipping the mnist case "
              "(give --mnist-dir)", file=sys.stderr)
        args.cases = [c for c in args.cases if c != "mnist"]
    if any(t < 1 for t in args.threads) or args.repeats < 0 or args.samples < 1:
        p.error("--threads must be >= 1, --repeats >= 0, --samples >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    progress = (lambda *a: None) if args.quiet else (lambda s: print(s, flush=True))
    env = bl.environment()
    engines, skipped = available_engines(args.engines)
    runs, infos, memory = [], {}, None
    started = time.time()
    if args.repeats > 0 and engines:
        runs, infos, more = run_timing(args, engines, progress)
        skipped.update(more)
    if args.peak_memory:
        progress("peak memory, one fresh process per engine ...")
        memory = run_memory(args, [e for e in engines if e not in skipped], progress)
    summary = summarize(runs, args)
    report(summary, infos, runs, memory, args, env, skipped, print)
    print(f"\n(total wall time {time.time() - started:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "args": vars(args), "skipped": skipped,
                       "workers": infos, "runs": runs, "summary": summary, "peak_memory": memory},
                      f, indent=1)
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
