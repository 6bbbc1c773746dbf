"""Fixtures shared by the engine tests (kernels, ops, tensor, threads, bad input).

Nothing here is autouse: other test files in this directory are unaffected.
"""
import os

import numpy as np
import pytest

import minigrad as mg
from minigrad import kernels, reference

# Tests run subprocesses from other directories: a relative MINIGRAD_DATA
# (e.g. ../shared/mnist, as in README) must mean the folder it meant here.
if os.environ.get("MINIGRAD_DATA"):
    os.environ["MINIGRAD_DATA"] = os.path.abspath(os.environ["MINIGRAD_DATA"])


@pytest.fixture(params=[kernels, reference], ids=["C", "numpy"])
def backend(request):
    """The C kernels and their NumPy twins: golden-value tests run on both."""
    return request.param


@pytest.fixture
def restore_threads():
    """Put the kernels' thread count back as it was, whatever the test did. Meanwhile
    the team is exactly the configured count (no adaptation to the machine's load),
    so that a test at 3 threads really runs 3 on a busy machine."""
    original, adaptive = mg.get_num_threads(), mg.get_adaptive_threads()
    mg.set_adaptive_threads(False)
    yield original
    mg.set_num_threads(original)
    mg.set_adaptive_threads(adaptive)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ---------------------------------------------------------------- the fuzz suite (tests/test_fuzz_*.py)

@pytest.fixture(scope="session")
def fuzz_children(request):
    """The fuzz families that run in child interpreters, all files together: every
    selected one started, two at a time, as soon as the first is needed; each
    test_fuzz_in_child_process then waits for its own (fuzz_support.py)."""
    import fuzz_support
    pool, futures = fuzz_support.start_children(request.session)
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def pytest_collection_modifyitems(session, config, items):
    """test_fuzz_total_budget runs after every fuzz family, whatever the file order."""
    last = [item for item in items if getattr(item, "originalname", item.name) == "test_fuzz_total_budget"]
    if last:
        items[:] = [item for item in items if item not in last] + last
