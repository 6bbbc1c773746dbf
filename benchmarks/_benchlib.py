"""Shared helpers of the benchmarks: what machine/BLAS/threads ran, the book's MLP
shapes and FLOP counts, synthetic data and Glorot init, robust statistics.

Imported by conftest.py, test_kernels_bench.py and bench_epoch.py (all in this
folder, which is on sys.path for each of them). PyTorch is optional everywhere.
"""
import os
import platform
import statistics
import time

import numpy as np

# ---------------------------------------------------------------- the book's MLP

N_TRAIN = 60000
BATCH = 128
D_IN, D_HID, D_OUT = 784, 512, 10
N_PARAMS = D_IN * D_HID + D_HID + D_HID * D_OUT + D_OUT  # 407,050
LR, RHO, EPS = 1e-3, 0.9, 1e-7


def epoch_flops(n=N_TRAIN):
    """GEMM FLOPs of one training epoch over n samples (element-wise ops ignored).

    forward 2n(784*512 + 512*10); weight grads the same; the input grad of the
    second layer 2n*512*10 (no grad for the input images): ~98.4 GFLOP for 60000.
    """
    fwd = 2 * n * (D_IN * D_HID + D_HID * D_OUT)
    return 2 * fwd + 2 * n * D_HID * D_OUT


def glorot(rng, fan_in, fan_out):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)


def init_params(seed=1):
    """[W1 (784, 512), b1 (512,), W2 (512, 10), b2 (10,)], Keras layout and init."""
    rng = np.random.default_rng(seed)
    return [glorot(rng, D_IN, D_HID), np.zeros(D_HID, np.float32),
            glorot(rng, D_HID, D_OUT), np.zeros(D_OUT, np.float32)]


def synthetic_mnist(n=N_TRAIN, seed=0):
    """MNIST-shaped random data: float32 images in [0, 1), int64 labels in [0, 10)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, D_IN), dtype=np.float32)
    y = rng.integers(0, D_OUT, n, dtype=np.int64)
    return x, y


def real_mnist(directory, n=N_TRAIN):
    """The first n MNIST training images as float32 in [0, 1] (81% exact zeros), labels int64.

    Reads the canonical IDX .gz files itself, so that no engine's worker has to
    import minigrad (its loader) next to PyTorch. Raises FileNotFoundError if absent.
    """
    import gzip
    import pathlib
    d = pathlib.Path(directory)
    with gzip.open(d / "train-images-idx3-ubyte.gz", "rb") as f:
        raw = f.read()
    count = int.from_bytes(raw[4:8], "big")
    if raw[:4] != b"\x00\x00\x08\x03" or len(raw) != 16 + count * D_IN:
        raise ValueError(f"{d}: not an MNIST image file")
    with gzip.open(d / "train-labels-idx1-ubyte.gz", "rb") as f:
        lab = f.read()
    if lab[:4] != b"\x00\x00\x08\x01" or len(lab) != 8 + count:
        raise ValueError(f"{d}: not an MNIST label file")
    if n > count:
        raise ValueError(f"{d}: {count} images, {n} requested")
    x = np.frombuffer(raw, np.uint8, n * D_IN, 16).reshape(n, D_IN).astype(np.float32)
    x /= np.float32(255.0)
    y = np.frombuffer(lab, np.uint8, n, 8).astype(np.int64)
    return x, y


def default_mnist_dir():
    """$MINIGRAD_DATA, else ../shared/mnist next to the repository (as in README)."""
    env = os.environ.get("MINIGRAD_DATA")
    if env:
        return env
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        os.pardir, "shared", "mnist")


# ---------------------------------------------------------------- environment

ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
            "MINIGRAD_ADAPTIVE_THREADS")


def try_import_torch():
    try:
        import torch
    except Exception:  # not installed, or a broken install: skip its rows either way
        return None
    return torch


def blas_info():
    """NumPy's BLAS as threadpoolctl sees it (a list of dicts, usually one)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"internal_api": "unknown (threadpoolctl not installed)"}]
    out = []
    for info in threadpool_info():
        if info.get("user_api") != "blas":
            continue
        out.append({
            "internal_api": info.get("internal_api"),
            "version": info.get("version"),
            "architecture": info.get("architecture") or info.get("corename"),
            "threading_layer": info.get("threading_layer"),
            "num_threads": info.get("num_threads"),
            "library": os.path.basename(info.get("filepath", "")),
        })
    return out


def describe_blas(infos=None):
    infos = blas_info() if infos is None else infos
    if not infos:
        return "NumPy BLAS: none found by threadpoolctl"
    return "; ".join(
        f"NumPy BLAS: {i['internal_api']} {i.get('version')} kernel={i.get('architecture')} "
        f"threading={i.get('threading_layer')} num_threads={i.get('num_threads')} ({i.get('library')})"
        for i in infos)


def environment(torch_threads=None, with_torch=True):
    """A dict describing everything that decides the numbers (with_torch=False:
    leave PyTorch unimported, for a process that must not load it next to minigrad)."""
    import minigrad as mg
    from minigrad import kernels
    env = {
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas": blas_info(),
        "minigrad": getattr(mg, "__version__", "?"),
        "minigrad_gemm_kernel": kernels.gemm_kernel_name(),
        "minigrad_openmp": kernels.has_openmp(),
        "env": {k: os.environ.get(k) for k in ENV_VARS if os.environ.get(k) is not None},
    }
    torch = try_import_torch() if with_torch else None
    if torch is None:
        env["torch"] = None
        if not with_torch:
            env["torch_note"] = "PyTorch: not imported by this benchmark"
    else:
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads() if torch_threads is None else torch_threads
        env["torch_mkl"] = bool(torch.backends.mkl.is_available())
        env["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
    return env


def describe_environment(env):
    lines = [
        f"CPU: {env['cpu']} ({env['machine']}), usable CPUs: {env['cpus_usable']}",
        f"Python {env['python']}, NumPy {env['numpy']}",
        describe_blas(env["numpy_blas"]),
        f"minigrad {env['minigrad']}: GEMM kernel {env['minigrad_gemm_kernel']}, "
        f"OpenMP {'yes' if env['minigrad_openmp'] else 'no'}",
        (env.get("torch_note", "PyTorch: not importable (its rows are skipped)")
         if env["torch"] is None else
         f"PyTorch {env['torch']} (MKL {env['torch_mkl']}, oneDNN {env['torch_mkldnn']}); "
         f"threads set per row with torch.set_num_threads"),
        "Environment: " + (", ".join(f"{k}={v}" for k, v in env["env"].items()) or
                           "no OPENBLAS_*/OMP_*/MKL_* variables set"),
    ]
    return lines


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---------------------------------------------------------------- statistics

def median(xs):
    return statistics.median(xs)


def spread(xs):
    """(max - min) / median, the run-to-run spread of repeated measurements."""
    m = statistics.median(xs)
    return (max(xs) - min(xs)) / m if m else float("nan")


def fmt_time(seconds):
    if seconds >= 1.0:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.1f} us"


# ---------------------------------------------------------------- machine load

def _proc_stat():
    """(busy, steal) CPU seconds of the whole machine since boot, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    return (user + nice + system + irq + softirq) / hz, steal / hz


class CpuMonitor:
    """Wall time, this process's CPU time, and the cores other processes used meanwhile.

    other_cores = (machine busy CPU time - this process's CPU time) / wall: a shared
    machine's background load during the measurement (clock-tick resolution, so
    only meaningful for intervals of ~0.1 s and more).
    """

    def __enter__(self):
        self._stat = _proc_stat()
        self._times = os.times()
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._t
        times, stat = os.times(), _proc_stat()
        self.self_cpu = (times.user - self._times.user) + (times.system - self._times.system)
        if stat is None or self._stat is None or self.wall <= 0:
            self.other_cores = self.steal_cores = float("nan")
        else:
            busy = stat[0] - self._stat[0]
            self.other_cores = max(0.0, busy - self.self_cpu) / self.wall
            self.steal_cores = (stat[1] - self._stat[1]) / self.wall
        return False


def wait_for_quiet(max_wait, threshold=0.3, probe=0.25):
    """Wait (up to max_wait seconds) until other processes use < threshold cores.

    Samples /proc/stat over `probe`-second windows. Returns (seconds waited, load of
    the last window). With max_wait <= 0 it returns at once.
    """
    if max_wait <= 0:
        return 0.0, float("nan")
    start = time.perf_counter()
    while True:
        with CpuMonitor() as mon:
            time.sleep(probe)
        waited = time.perf_counter() - start
        if not mon.other_cores >= threshold or waited >= max_wait:  # NaN: no /proc/stat
            return waited, mon.other_cores
