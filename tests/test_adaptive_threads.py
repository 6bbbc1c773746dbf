"""The adaptive team: parallel regions use fewer threads than configured while
other processes keep CPUs busy, never more, with the same bits at any team size.

The tests that start a spinning process assert what the team does within
generous time bounds, never how fast anything runs."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import minigrad as mg
from minigrad import kernels
from helpers import REPO, assert_bitwise_equal, assert_snippet_ok

SPIN = [sys.executable, "-c", "while True:\n    pass\n"]
HAS_PROC = os.path.exists("/proc/stat") and os.path.exists("/proc/self/stat")
needs_adaptation = pytest.mark.skipif(not (kernels.has_openmp() and HAS_PROC),
                                      reason="serial build or no /proc: the team is the configured count")


def usable_cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@pytest.fixture
def restore_adaptive(restore_threads):
    was = mg.get_adaptive_threads()
    yield
    mg.set_adaptive_threads(was)


@pytest.fixture
def spinner():
    proc = subprocess.Popen(SPIN)
    yield proc
    proc.kill()
    proc.wait()


def run_regions_until(condition, seconds):
    """Call a kernel large enough to open a parallel region (the team is re-decided
    there) until condition() holds or `seconds` pass; True if it held."""
    x = np.ones(200_000, np.float32)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        kernels.relu_forward(x)
        if condition():
            return True
        time.sleep(0.01)
    return False


# ---------------------------------------------------------------- API

def test_api_defaults_and_off_keeps_configured_count(restore_adaptive):
    mg.set_num_threads(3)
    mg.set_adaptive_threads(False)
    assert mg.get_adaptive_threads() is False
    assert mg.effective_num_threads() == 3 and mg.get_num_threads() == 3
    assert kernels.others_cpu_load() is None
    mg.set_adaptive_threads(True)
    assert mg.get_num_threads() == 3  # the configured count is unchanged by adaptation
    assert 1 <= mg.effective_num_threads() <= 3
    mg.set_num_threads(1)
    assert mg.effective_num_threads() == 1  # never more than configured
    with pytest.raises(TypeError):
        mg.set_adaptive_threads(np.ones(2))


def test_environment_turns_adaptation_off_even_under_load(spinner):
    assert_snippet_ok("""
        import time
        import numpy as np
        import minigrad as mg
        from minigrad import kernels
        mg.set_num_threads(2)
        x = np.ones(200_000, np.float32)
        end = time.monotonic() + 0.6  # several sampling periods with a core busy
        while time.monotonic() < end:
            kernels.relu_forward(x)
            assert mg.effective_num_threads() == 2
            time.sleep(0.01)
        print("adaptive", mg.get_adaptive_threads(), "effective", mg.effective_num_threads())
        """, "adaptive False effective 2", env={"MINIGRAD_ADAPTIVE_THREADS": "0"})


def _python_without(snippet, unset, **extra):
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(extra)
    proc = subprocess.run([sys.executable, "-c", snippet], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_wait_policy_is_set_for_libgomp_only_and_respects_the_user():
    """minigrad shortens libgomp's spin unless the user set a wait policy, and
    leaves the environment of child processes as it found it. Adaptation is on
    by default."""
    code = ("import os, minigrad; print('seen', os.environ.get('OMP_WAIT_POLICY'), "
            "os.environ.get('GOMP_SPINCOUNT'), 'adaptive', minigrad.get_adaptive_threads())")
    unset = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "MINIGRAD_ADAPTIVE_THREADS")
    assert "seen None None adaptive True" in _python_without(code, unset)  # and adaptation is on by default
    assert "seen PASSIVE None" in _python_without(code, unset, OMP_WAIT_POLICY="PASSIVE")
    assert "seen None 5" in _python_without(code, unset, GOMP_SPINCOUNT="5")


# ---------------------------------------------------------------- the rule (no timing)

@pytest.mark.parametrize("team,configured,free,want", [
    (2, 2, 2.0, 2), (2, 2, 1.7, 2),   # hysteresis band: a 2-team stays down to 1.6 free CPUs
    (2, 2, 1.55, 1), (2, 2, 1.0, 1), (2, 2, 0.1, 1), (2, 2, -0.5, 1),
    (1, 2, 1.7, 1), (1, 2, 1.79, 1),  # ... and a 1-team grows only at 1.8
    (1, 2, 1.8, 2), (1, 2, 2.0, 2),
    (4, 4, 3.0, 3), (4, 4, 2.5, 2), (1, 4, 3.9, 4), (2, 4, 3.85, 4), (3, 4, 3.7, 3),
    (1, 3, 8.0, 3),                   # never more than configured
])
def test_next_team_rule(team, configured, free, want):
    assert kernels.lib.mg_adaptive_next_team(team, configured, round(free * 1000)) == want


# ---------------------------------------------------------------- under a real load

@needs_adaptation
def test_team_shrinks_under_a_spinning_process_and_grows_back(restore_adaptive):
    n = usable_cpus()
    if n < 2:
        pytest.skip("one usable CPU: nothing to shrink")
    mg.set_num_threads(n)
    mg.set_adaptive_threads(True)
    proc = subprocess.Popen(SPIN)
    try:
        shrank = run_regions_until(lambda: mg.effective_num_threads() < n, 20.0)
    finally:
        proc.kill()
        proc.wait()
    assert shrank, f"team stayed at {n} with a core busy (others' load {kernels.others_cpu_load()})"
    assert mg.get_num_threads() == n
    grew = run_regions_until(lambda: mg.effective_num_threads() == n, 10.0)
    if not grew:
        load = kernels.others_cpu_load()
        if load is not None and load > 0.2:
            pytest.skip(f"other processes keep {load:.2f} CPUs busy: the team rightly stays smaller")
    assert grew, f"team stayed at {mg.effective_num_threads()} after the load stopped"


TRAIN = """
import numpy as np
import minigrad as mg
from minigrad import layers, models

def fit_weights():
    rng = np.random.default_rng(0)
    x = rng.random((1024, 784), dtype=np.float32)
    y = rng.integers(0, 10, 1024)
    mg.utils.set_random_seed(0)
    model = models.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                               layers.Dense(10, activation="softmax")])
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=128, epochs=2, verbose=0)
    return [np.array(w, copy=True) for w in model.get_weights()]
"""


def test_fit_bitwise_identical_at_forced_team_sizes_and_adaptive_under_load(restore_adaptive, spinner):
    ns = {}
    exec(TRAIN, ns)
    mg.set_adaptive_threads(False)
    results = {}
    for n in (1, 2):
        mg.set_num_threads(n)
        results[f"forced {n}"] = ns["fit_weights"]()
    mg.set_num_threads(2)
    mg.set_adaptive_threads(True)
    seen = set()
    # several fits, so that the team is re-decided while the load runs
    for _ in range(3):
        results["adaptive"] = ns["fit_weights"]()
        seen.add(mg.effective_num_threads())
    for name, weights in results.items():
        for i, (a, b) in enumerate(zip(weights, results["forced 1"])):
            assert_bitwise_equal(a, b, f"weight {i}, {name} vs forced 1 (adaptive teams seen: {seen})")
