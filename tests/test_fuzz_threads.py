"""Fuzzing threads: set_num_threads (family threads), another thread rewriting
the labels/indices/x while C and fit run (thread_race), and fork after the thread
team ran (fork); see fuzz_support.py for the oracle, the budget and the child
processes. Last, ``test_fuzz_total_budget`` checks every family of every fuzz file."""
import os
import re

import numpy as np
import pytest

import minigrad as mg
from minigrad import kernels, reference
import fuzz_strategies as fs
import fuzz_support as fz
from fuzz_strategies import (EPS32, F32, TINY32, array, boolean, integer, pick)
from fuzz_support import (_finite_max, _trace, assert_same_bytes, check_kernel_call, gemm_tolerance, threads)

F = np.float32


# ================================================================ family: set_num_threads

THREAD_COUNTS = (1, 2, 3, 4, 8, 64, 4096, 2**40, np.int64(2), np.uint8(3), 0, -1, -2**40, True, False,
                 1.0, 2.5, float("nan"), None, "2", [2], np.array(2), np.float32(2))


def case_threads(data):
    original = kernels.get_num_threads()
    try:
        n = pick(data, THREAD_COUNTS, "n")
        desc = f"kernels.set_num_threads({n!r})"
        _trace(desc)
        try:
            kernels.set_num_threads(n)
        except (TypeError, ValueError) as exc:
            assert str(exc).startswith("set_num_threads:"), f"{desc}: unclear message {exc}"
            assert kernels.get_num_threads() == original, f"{desc} raised but changed the thread count"
            ok = isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
            assert not ok, f"{desc} rejected a positive integer: {exc}"
        else:
            assert isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1, \
                f"{desc} accepted a non-positive-integer"
            assert kernels.get_num_threads() == min(int(n), 4096), desc
        if kernels.get_num_threads() > 4:
            kernels.set_num_threads(original)  # 4096 threads are allowed, but slow to start
        # a kernel still agrees with its twin at this thread count (at sizes that go parallel)
        rows = pick(data, [1, 7, 300], "rows")
        x = array(data, (rows, 130), "x", layouts=["C"])
        which = pick(data, ["gemm", "relu_backward_bias_grad", "softmax_xent_forward"], "kernel")
        if which == "gemm":
            w = array(data, (130, 110), "w", layouts=["C"])
            check_kernel_call("gemm", (x, w), tol=gemm_tolerance(x, w, 130, 1.0, 0.0, None, None),
                              must_succeed=True)
        elif which == "relu_backward_bias_grad":
            check_kernel_call("relu_backward_bias_grad", (x, x[::-1].copy()),
                              tol=[(0, TINY32), (1e-5, 2 * EPS32 * rows * _finite_max(x) + 1e-30)],
                              must_succeed=True)
        else:
            check_kernel_call("softmax_xent_forward", (x, np.zeros(rows, np.int64)),
                              tol=[(1e-5, 1e-3), (1e-5, 1e-6), (1e-5, 1e-3)], must_succeed=True)
    finally:
        kernels.set_num_threads(original)


# ================================================================ families: thread races
#
# Another Python thread rewrites the labels (or gather indices, or fit's x and y) while
# the main thread calls a kernel, an op or fit. cffi releases the GIL during each C
# call, so the writer runs while C reads. The writer only ever stores values from a
# per-element candidate set: the element's two valid values and, in some cases, one
# bad value (negative, >= the class count, 2**40, the dtype's extreme). Accepted:
# a TypeError/ValueError naming the op (only when a bad value can be written), or a
# result in which every row is the reference's for one of its valid candidates (a
# consistent snapshot per row: the wrappers copy the labels once, then check the copy).

RACE_TARGETS = ("softmax_xent_forward", "softmax_xent_backward", "softmax_cross_entropy",
                "gather_rows", "row_gather", "fit")
RACE_DTYPES = (np.int64, np.int32, np.uint16, np.uint64, np.int16)


class _Writer:
    """A thread that stores candidate values into `target` until stopped."""

    def __init__(self, target, choices, pattern):
        import threading
        self.target, self.choices, self.pattern = target, choices, pattern
        self.stop, self.started = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        t, choices, n, k = self.target, self.choices, len(self.target), 0
        while not self.stop.is_set():
            c = choices[k % len(choices)]
            if self.pattern == "whole":
                t[...] = c
            elif self.pattern == "element":
                i = (k * 7919) % n
                t[i] = c[i]
            else:  # "slices": a moving window
                i = (k * 131) % n
                t[i:i + 97] = c[i:i + 97]
            k += 1
            self.started.set()

    def __enter__(self):
        self.thread.start()
        self.started.wait(10)
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the writer thread did not stop"
        return False


def _race_candidates(data, rows, high, dtype):
    """(the array the writer rewrites, its values to write in turn, per-row valid
    candidates (rows, 2), whether a bad value can appear)."""
    rng = fs._rng()
    valid = [rng.integers(0, high, rows).astype(dtype) for _ in range(2)]
    bad_kind = pick(data, ["none", "none", "negative", "high", "huge", "extreme"], "bad")
    choices = list(valid)
    info = np.iinfo(dtype)
    bad_value = {"negative": -1, "high": high, "huge": 2**40, "extreme": int(info.max)}.get(bad_kind)
    if bad_value is not None and info.min <= bad_value <= info.max:
        spoiled = valid[0].copy()
        spoiled[rng.integers(0, rows, max(1, rows // 50))] = bad_value
        choices.append(spoiled)
    elif bad_value is not None and bad_value < 0:  # unsigned: -1 wraps to the maximum
        spoiled = valid[0].copy()
        spoiled[rng.integers(0, rows)] = info.max
        choices.append(spoiled)
    return valid[1].copy(), choices, np.stack(valid, axis=1).astype(np.int64), len(choices) > 2


def _torn(value, written, dtype):
    """value is what a read of an element could return while the writer stored the
    `written` values into it: each byte from one of them. A writer's copy (memcpy, or
    ASan's byte-wise one) need not store an element at once, so a reader may see a
    value that was never written whole; the kernels must stay safe and consistent
    with the value they read, whatever it is."""
    have = np.asarray(written, dtype).reshape(-1, 1).view(np.uint8)
    want = np.asarray([value], dtype).view(np.uint8)
    return bool(((have == want).any(axis=0)).all())


def _rows_match_some_candidate(got, per_candidate, what, written=None, every_label=None):
    """got[i] must be close to per_candidate[c][i] for some c (NaN-aware), or else to
    the result of a label that is a torn read of what the writer stored at i:
    every_label(i) -> (labels, their results for row i)."""
    ok = np.zeros(len(got), bool)
    for want in per_candidate:
        close = np.isclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)
        ok |= close.reshape(len(got), -1).all(axis=1)
    for i in np.flatnonzero(~ok):
        if every_label is not None:
            labels_, results = every_label(i)
            close = np.isclose(results, got[i], rtol=1e-5, atol=1e-6, equal_nan=True)
            matching = labels_[close.reshape(len(labels_), -1).all(axis=1)]
            if any(_torn(j, written[:, i], written.dtype) for j in matching):
                continue
        raise AssertionError(f"{what}: row {i} matches none of its labels' results")


def _torn_refusal(exc, written):
    """The refused value (the message's last number) is a torn read of some element."""
    found = re.search(r"received (-?\d+)$", str(exc))
    if not found:
        return False
    value = int(found.group(1))
    info = np.iinfo(written.dtype)
    if not info.min <= value <= info.max:
        return False
    have = written.T.copy().view(np.uint8).reshape(written.shape[1], written.shape[0], -1)
    want = np.asarray([value], written.dtype).view(np.uint8)
    return bool(((have == want).any(axis=1)).all(axis=1).any())


def case_thread_race(data):
    threads(data)
    target = pick(data, RACE_TARGETS, "target")
    rows = pick(data, [1, 7, 300, 4096], "rows")
    cols = pick(data, [1, 3, 10, 130], "cols")
    dtype = np.dtype(pick(data, RACE_DTYPES, "dtype"))
    pattern = pick(data, ["whole", "element", "slices"], "pattern")
    reps = 1 if target == "fit" else pick(data, [1, 3, 8], "calls")
    rng = fs._rng()
    desc = f"{target} rows={rows} cols={cols} labels {dtype} written {pattern}"
    _trace(desc)
    if target in ("gather_rows", "row_gather"):
        src = fs.raw_bits((rows, cols), pick(data, [np.float32, np.int64, np.uint8], "src dtype"))
        labels_, choices, valid, can_fail = _race_candidates(data, rows, rows, dtype)
        op = "gather_rows"
    elif target == "fit":
        classes = min(max(cols, 2), 10)
        labels_, choices, valid, can_fail = _race_candidates(data, rows, classes, dtype)
        op = None
    else:
        logits = (rng.standard_normal((rows, cols)) * 3).astype(F32)
        labels_, choices, valid, can_fail = _race_candidates(data, rows, cols, dtype)
        op = target
    written = np.stack(choices)
    classes_ = np.arange(cols)
    if target in ("softmax_xent_forward", "softmax_xent_backward", "softmax_cross_entropy"):
        per_label = [reference.softmax_xent_forward(logits, valid[:, c]) for c in (0, 1)]
        probs_want = per_label[0][1]
        grads_want = [reference.softmax_xent_backward(probs_want, valid[:, c], 0.5) for c in (0, 1)]
        every_loss = lambda i: (classes_, reference.softmax_xent_forward(
            np.repeat(logits[i:i + 1], cols, 0), classes_)[2])
        every_grad = lambda i: (classes_, reference.softmax_xent_backward(
            np.repeat(probs_want[i:i + 1], cols, 0), classes_, 0.5))
        all_losses = reference.softmax_xent_forward(np.repeat(logits, cols, 0), np.tile(classes_, rows))[2]
        all_losses = all_losses.reshape(rows, cols)
    if target in ("gather_rows", "row_gather"):
        src_rows = src.view(np.uint8).astype(np.float64).reshape(rows, -1)
        every_row = lambda i: (np.arange(rows), src_rows)
    with _Writer(labels_, choices, pattern):
        for _ in range(reps):
            try:
                if target == "softmax_xent_forward":
                    loss, probs, row_loss = kernels.softmax_xent_forward(logits, labels_)
                    assert np.allclose(probs, probs_want, rtol=1e-5, atol=1e-6), f"{desc}: probs"
                    _rows_match_some_candidate(row_loss, [p[2] for p in per_label], desc, written, every_loss)
                    assert np.isclose(loss, np.mean(row_loss, dtype=np.float64), rtol=1e-5, atol=1e-6), desc
                elif target == "softmax_xent_backward":
                    grad = kernels.softmax_xent_backward(probs_want, labels_, 0.5)
                    _rows_match_some_candidate(grad, grads_want, desc, written, every_grad)
                elif target == "softmax_cross_entropy":
                    t = mg.Tensor(logits, requires_grad=True)
                    loss = mg.softmax_cross_entropy(t, labels_)
                    loss.backward(np.array(0.5 * rows, F32))  # d(mean)/d(logits) * rows * 0.5
                    lo = np.minimum(per_label[0][2], per_label[1][2]).mean(dtype=np.float64)
                    hi = np.maximum(per_label[0][2], per_label[1][2]).mean(dtype=np.float64)
                    within = lambda lo, hi: lo - 1e-4 * (1 + abs(lo)) <= float(loss.data) <= hi + 1e-4 * (1 + abs(hi))
                    # a torn label may be any class: then the loss is only bounded by all of them
                    assert within(lo, hi) or within(all_losses.min(axis=1).mean(dtype=np.float64),
                                                    all_losses.max(axis=1).mean(dtype=np.float64)), desc
                    _rows_match_some_candidate(t.grad, grads_want, desc, written, every_grad)
                elif target == "gather_rows":
                    out = kernels.gather_rows(src, labels_)
                    _rows_match_some_candidate(out.view(np.uint8).astype(np.float64).reshape(rows, -1),
                                               [src_rows[valid[:, c]] for c in (0, 1)], desc,
                                               written, every_row)
                elif target == "row_gather":
                    g = kernels.RowGather(src, rows)
                    g.set_order(labels_)
                    out = g.take(0, rows)
                    _rows_match_some_candidate(out.view(np.uint8).astype(np.float64).reshape(rows, -1),
                                               [src_rows[valid[:, c]] for c in (0, 1)], desc,
                                               written, every_row)
                else:
                    _race_fit(data, rng, rows, classes, labels_, desc)
            except (TypeError, ValueError) as exc:
                assert can_fail or _torn_refusal(exc, written), \
                    f"{desc}: only valid labels were written, but: {exc!r}"
                if op is not None:  # the op reports its loss kernel's check
                    names = (op, "softmax_xent_forward", "softmax_xent_backward") if op == \
                        "softmax_cross_entropy" else (op,)
                    assert str(exc).split(":")[0] in names, f"{desc}: unclear message {exc}"
                else:
                    assert re.search(rf"(class indices|labels) in \[0, {classes}\)", str(exc)), \
                        f"{desc}: unclear message {exc}"


def _race_fit(data, rng, rows, classes, y, desc):
    """fit while the writer rewrites y; x is rewritten too (any float values are valid)."""
    from minigrad import layers, models
    x = rng.standard_normal((rows, 8)).astype(F32)
    utils_seed = integer(data, 0, 2**16, "model seed")
    mg.utils.set_random_seed(utils_seed)
    model = models.Sequential([layers.Dense(6, activation="relu", input_shape=(8,)),
                               layers.Dense(classes, activation="softmax")])
    model.compile(optimizer=pick(data, ["adam", "sgd", "rmsprop"], "optimizer"),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    with _Writer(x, [x * 0.5, x, -x], "slices"):
        model.fit(x, y, batch_size=pick(data, [16, 64, 512], "batch_size"), epochs=1, verbose=0,
                  shuffle=boolean(data, "shuffle"))
    assert all(np.isfinite(w).all() for w in model.get_weights()), f"{desc}: non-finite weights"


# ================================================================ families: fork
#
# Kernels run on a team of threads (at sizes that go parallel), then the process forks
# (os.fork or multiprocessing's 'fork'); the child runs the same computation and sends
# its numbers back. libgomp's team does not survive a fork: without the fork handler
# the child waits forever in its first parallel region. Every result is bitwise equal
# to the parent's (no number depends on the thread count), within a timeout.

FORK_WORK = ("gemm", "softmax_xent", "relu_backward_bias_grad", "gather_rows", "adam_update",
             "conv2d_forward", "max_pool2d_forward", "train_step")


def _fork_work(which, big, seed_):
    """A deterministic computation of `which`: a list of arrays."""
    rng = np.random.default_rng(seed_)
    n = 512 if big else 5
    if which == "gemm":
        a, b = rng.standard_normal((n, 300)).astype(F32), rng.standard_normal((300, 140)).astype(F32)
        return [kernels.gemm(a, b, bias=np.ones(140, F32), relu=True)]
    if which == "softmax_xent":
        logits = rng.standard_normal((n * 8, 10)).astype(F32)
        labels_ = rng.integers(0, 10, n * 8)
        loss, probs, row_loss = kernels.softmax_xent_forward(logits, labels_)
        return [loss, probs, row_loss, kernels.softmax_xent_backward(probs, labels_, 0.25)]
    if which == "relu_backward_bias_grad":
        y, dy = rng.standard_normal((n * 8, 130)).astype(F32), rng.standard_normal((n * 8, 130)).astype(F32)
        return list(kernels.relu_backward_bias_grad(y, dy))
    if which == "gather_rows":
        src = rng.standard_normal((n * 4, 784)).astype(F32)
        return [kernels.gather_rows(src, rng.permutation(n * 4))]
    if which == "adam_update":
        w, g = rng.standard_normal(n * 200).astype(F32), rng.standard_normal(n * 200).astype(F32)
        m, v = np.zeros_like(w), np.zeros_like(w)
        for step in (1, 2):
            kernels.adam_update(w, g, m, v, 1e-3, 0.9, 0.999, 1e-7, step)
        return [w, m, v]
    if which == "conv2d_forward":
        x = rng.standard_normal((max(n // 16, 1), 28, 28, 3)).astype(F32)
        w = rng.standard_normal((3, 3, 3, 8)).astype(F32)
        out = kernels.conv2d_forward(x, w, padding="same")
        return list(out) if isinstance(out, tuple) else [out]
    if which == "max_pool2d_forward":
        x = rng.standard_normal((max(n // 8, 1), 28, 28, 16)).astype(F32)
        return list(kernels.max_pool2d_forward(x, 2))
    from minigrad import layers, models
    mg.utils.set_random_seed(seed_)
    model = models.Sequential([layers.Dense(64, activation="relu", input_shape=(784,)),
                               layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = rng.standard_normal((n, 784)).astype(F32)
    model.train_step(x, rng.integers(0, 10, n))
    return model.get_weights() + model.optimizer.variables()


def _fork_child(conn, which, big, seed_):
    try:
        conn.send((kernels.get_num_threads(), [np.array(a) for a in _fork_work(which, big, seed_)]))
    finally:
        conn.close()


def case_fork(data):
    import multiprocessing
    n_threads = pick(data, [2, 3, 4], "threads")
    kernels.set_num_threads(n_threads)
    which = pick(data, FORK_WORK, "work")
    big = boolean(data, "parallel size")
    how = pick(data, ["os.fork", "multiprocessing fork"], "how")
    seed_ = integer(data, 0, 2**16, "seed")
    desc = f"{which} ({'parallel' if big else 'small'} size, {n_threads} threads) via {how}"
    _trace(desc)
    # the parent's numbers, with the team started (the big size runs in parallel)
    parent = [np.array(a) for a in _fork_work(which, big, seed_)]
    kernels.gemm(np.ones((300, 300), F32), np.ones((300, 300), F32))  # a parallel region for sure
    read, write = multiprocessing.Pipe(duplex=False)
    if how == "os.fork":
        pid = os.fork()
        if pid == 0:  # the child never returns into hypothesis
            code = 70
            try:
                read.close()
                _fork_child(write, which, big, seed_)
                code = 0
            finally:
                os._exit(code)
        proc = None
    else:
        proc = multiprocessing.get_context("fork").Process(target=_fork_child,
                                                           args=(write, which, big, seed_))
        proc.start()
    write.close()
    finished = read.poll(60)
    result = read.recv() if finished else None
    if proc is None:
        if not finished:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
    else:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()
        code = proc.exitcode
    read.close()
    assert finished, f"{desc}: the child did not finish in 60 s (hung in its first kernel?)"
    assert code == 0, f"{desc}: the child exited with {code}"
    threads_in_child, numbers = result
    assert threads_in_child == 1, f"{desc}: the child runs {threads_in_child} threads, expected 1"
    assert len(numbers) == len(parent), desc
    for i, (got, want) in enumerate(zip(numbers, parent)):
        assert_same_bytes(got, want, f"{desc}: result {i}, child vs parent")


# ================================================================ running the families

@pytest.mark.parametrize("family", fz.child_families('test_fuzz_threads'))
def test_fuzz_in_child_process(family, fuzz_children):
    """One family of C-calling wrappers, fuzzed in a child interpreter."""
    fz.check_child(family, fuzz_children)


def test_fuzz_total_budget(request):
    """Runs last (conftest.py moves it to the end of the session): every family of
    every tests/test_fuzz_*.py ran its share, >= 10,000 cases in all by default."""
    fz.check_total_budget(request.session)
