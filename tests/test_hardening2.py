"""Hardening, second round: labels rewritten by another thread while C reads them,
fork after the thread team ran, an optimizer step under Ctrl-C, array subclasses and
masked arrays, and arguments that used to fail without naming the function.
(The fuzzed versions: families thread_race and fork in tests/test_fuzz_threads.py.)"""
import multiprocessing
import os
import signal
import stat
import sys
import threading

import numpy as np
import pytest

import minigrad as mg
from minigrad import callbacks, kernels, layers, losses, metrics, models, optimizers, reference, utils
from minigrad.datasets import mnist
from helpers import assert_bitwise_equal, run_python

F32 = np.float32


@pytest.fixture
def restore_threads():
    before = mg.get_num_threads()
    yield
    mg.set_num_threads(before)


def toy_data(n=96, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(F32)
    return x, x[:, :classes].argmax(axis=1).astype(np.int64)


def toy_model(seed=0, optimizer="adam", features=6, classes=3):
    utils.set_random_seed(seed)
    model = models.Sequential([layers.Dense(8, activation="relu", input_shape=(features,)),
                               layers.Dense(classes, activation="softmax")])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def assert_ran_ok(proc, *expected):
    assert proc.returncode == 0, (f"subprocess exited with {proc.returncode} (negative = killed by "
                                  f"a signal)\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    for text in expected:
        assert text in proc.stdout, f"expected {text!r} in:\n{proc.stdout}\n{proc.stderr}"


# ================================================================ 1. labels rewritten while C runs
#
# Each snippet runs in a child interpreter: a read outside the logits or the source
# rows (an index of 2**40) would kill it. A writer thread flips the labels between a
# valid set and an out-of-range one while the main thread calls the kernel; cffi
# releases the GIL during C calls, so the writer runs while C reads.

RACE_PRELUDE = """
import threading, numpy as np
from minigrad import kernels, reference
mg_threads = {threads}
kernels.set_num_threads(mg_threads)
rng = np.random.default_rng(0)
rows, cols = 4096, 10
good = rng.integers(0, cols, rows).astype(np.int64)
bad = good.copy(); bad[rng.integers(0, rows, 64)] = {bad}
labels = good.copy()
stop = threading.Event()
def writer():
    while not stop.is_set():
        labels[:] = bad
        labels[:] = good
t = threading.Thread(target=writer); t.start()
ok = refused = 0
"""

RACE_EPILOGUE = """
stop.set(); t.join()
print("ok", ok, "refused", refused)
assert ok + refused == 150
"""


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bad", [2**40, -2**40, -1, 10])
def test_softmax_xent_labels_rewritten_during_the_call(threads, bad):
    """Through the wrappers (private copy, checked after copying): every call either
    raises the op's ValueError or computes with the valid labels."""
    body = """
logits = rng.standard_normal((rows, cols)).astype(np.float32)
want_loss, want_probs, want_rows = reference.softmax_xent_forward(logits, good)
want_grad = reference.softmax_xent_backward(want_probs, good, 0.5)
def torn(c, i):
    # a label read while the writer's copy had stored only some of its bytes:
    # each byte from good[i] or bad[i] (the kernel must use that value consistently)
    b = np.array([c], np.int64).view(np.uint8)
    return all(b[k] in (np.array([good[i]]).view(np.uint8)[k], np.array([bad[i]]).view(np.uint8)[k])
               for k in range(8))
def check_rows(got, want, result_for):
    for i in np.flatnonzero(~np.isclose(got, want, rtol=1e-5, atol=1e-5).reshape(rows, -1).all(axis=1)):
        assert any(torn(c, i) and np.allclose(got[i], result_for(i, c), rtol=1e-5, atol=1e-5)
                   for c in range(cols)), f"row {i} from no label the writer stored"
for i in range(150):
    try:
        if i % 2:
            loss, probs, row_loss = kernels.softmax_xent_forward(logits, labels)
            check_rows(row_loss, want_rows,
                       lambda i, c: reference.softmax_xent_forward(logits[i:i + 1], np.array([c]))[2][0])
        else:
            grad = kernels.softmax_xent_backward(want_probs, labels, 0.5)
            check_rows(grad, want_grad,
                       lambda i, c: reference.softmax_xent_backward(want_probs[i:i + 1], np.array([c]), 0.5)[0])
        ok += 1
    except ValueError as exc:
        assert str(exc).startswith("softmax_xent_"), exc
        refused += 1
"""
    assert_ran_ok(run_python(RACE_PRELUDE.format(threads=threads, bad=bad) + body + RACE_EPILOGUE,
                             timeout=240), "ok ")


@pytest.mark.parametrize("threads", [1, 2])
def test_c_kernels_check_each_label_where_they_use_it(threads):
    """C called directly on the writer's own buffer (no Python copy): the value C uses
    is the value C checked, so the outcome is MG_OK with valid labels or MG_ELABEL /
    MG_EINVAL, never a read outside the logits or the source."""
    body = """
from minigrad.kernels import ffi, lib
logits = rng.standard_normal((rows, cols)).astype(np.float32)
probs = np.empty_like(logits); row_loss = np.empty(rows, np.float32); loss = np.empty((), np.float32)
grad = np.empty_like(logits)
src = rng.standard_normal((rows, 16)).astype(np.float32)
dst = np.empty_like(src)
fp = lambda a: ffi.from_buffer("float[]", a)
lp = ffi.from_buffer("int64_t[]", labels)
src_p, dst_p = ffi.from_buffer(src), ffi.from_buffer(dst)
for i in range(150):
    which = i % 3
    if which == 0:
        status = lib.mg_softmax_xent_forward_index(fp(logits), lp, fp(probs), fp(row_loss), fp(loss), rows, cols)
    elif which == 1:
        status = lib.mg_softmax_xent_backward_index(fp(probs), lp, 0.5, fp(grad), rows, cols)
    else:
        status = lib.mg_gather_rows(src_p, rows, 64, lp, rows, dst_p)
    assert status in (lib.MG_OK, lib.MG_ELABEL, lib.MG_EINVAL), status
    if status == lib.MG_OK:
        ok += 1
    else:
        refused += 1
"""
    code = RACE_PRELUDE.format(threads=threads, bad=2**40) + body + RACE_EPILOGUE
    assert_ran_ok(run_python(code, timeout=240), "ok ")


def test_fit_while_another_thread_rewrites_x_and_labels():
    """fit(shuffle=False) on arrays another thread rewrites: a clean ValueError when an
    out-of-range label reaches a batch, else training ends with finite weights; with
    only valid labels written it always completes."""
    code = """
import threading, numpy as np
import minigrad as mg
from minigrad import layers, models, utils
mg.set_num_threads(2)
rng = np.random.default_rng(1)
x = rng.standard_normal((2048, 32)).astype(np.float32)
good = rng.integers(0, 4, 2048).astype(np.int64)
for bad_value, must_finish in ((None, True), (2**40, False)):
    y = good.copy()
    stop = threading.Event()
    def writer():
        k = 0
        while not stop.is_set():
            k += 1
            x[k % 2048] = k % 7            # rows change under the gather
            y[:] = (good + k) % 4          # valid labels, rewritten
            if bad_value is not None:
                y[k % 2048] = bad_value
    utils.set_random_seed(0)
    model = models.Sequential([layers.Dense(16, activation="relu", input_shape=(32,)),
                               layers.Dense(4, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    t = threading.Thread(target=writer); t.start()
    try:
        for shuffle in (False, True):
            model.fit(x, y, batch_size=64, epochs=2, verbose=0, shuffle=shuffle)
        outcome = "finished"
    except ValueError as exc:
        # checked up front for the whole data set, or by the loss kernel for a batch
        assert ("class indices in [0, 4)" in str(exc) or "expected labels in [0, 4)" in str(exc)), exc
        outcome = "refused"
    finally:
        stop.set(); t.join()
    assert not (must_finish and outcome != "finished")
    assert all(np.isfinite(w).all() for w in model.get_weights())
    print(bad_value, outcome)
print("done")
"""
    assert_ran_ok(run_python(code, timeout=240), "None finished", "done")


def test_caller_labels_changed_after_validation_do_not_reach_c(monkeypatch):
    """The wrapper checks and passes its own copy: labels the caller changes right
    after the check (here: inside the checker) are not what C reads."""
    logits = np.zeros((3, 4), F32)
    labels = np.array([0, 1, 2], np.int64)
    real_check, checks = kernels._check_labels, []
    def check_then_spoil(op, target, cols):
        real_check(op, target, cols)
        checks.append(target is labels)
        if len(checks) == 2:  # the copy passed its check: from now on only the caller's array changes
            labels[:] = 2**40
    monkeypatch.setattr(kernels, "_check_labels", check_then_spoil)
    _, _, row_loss = kernels.softmax_xent_forward(logits, labels)
    assert checks == [True, False]  # the caller's array, then the private copy
    assert np.allclose(row_loss, np.log(4.0))


def test_replayed_fit_steps_check_the_labels_of_each_batch():
    """fit's recorded step is replayed on each batch gathered from the caller's y; labels
    changed after fit validated y (here by a callback, between two steps) reach the
    replay, which raises the loss kernel's error instead of a bare C status."""
    x, y = toy_data(256)
    y = y.copy()

    class Spoil(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                y[200] = 7

    model = toy_model()
    with pytest.raises(ValueError, match=r"^softmax_xent_forward: expected class indices in \[0, 3\), "
                                         r"received 7$"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False, callbacks=[Spoil()])
    assert model.optimizer.iterations == 3  # the fourth batch (rows 192..255) applied nothing


# ================================================================ 2. fork after the thread team ran

def _kernel_results():
    """Kernels at sizes that run on the whole team, and one training step."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((300, 200)).astype(F32)
    b = rng.standard_normal((200, 150)).astype(F32)
    logits = rng.standard_normal((4096, 10)).astype(F32)
    labels = rng.integers(0, 10, 4096)
    out = [kernels.gemm(a, b), kernels.softmax_xent_forward(logits, labels)[2],
           kernels.gather_rows(logits, labels[::-1].copy())]
    x, y = toy_data(256, features=6)
    model = toy_model(seed=5)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
    return out + model.get_weights()


def _child_entry(conn):
    try:
        conn.send((mg.get_num_threads(), _kernel_results()))
    finally:
        conn.close()


def _compare_with_child(results, parent_numbers, serial):
    threads_in_child, numbers = results
    if serial:
        assert threads_in_child == 1, "a forked child must run the kernels serially"
    assert len(numbers) == len(parent_numbers)
    for i, (got, want) in enumerate(zip(numbers, parent_numbers)):
        assert_bitwise_equal(got, want, f"result {i} in the child vs the parent")


def test_os_fork_after_threads(restore_threads):
    mg.set_num_threads(2)
    parent = _kernel_results()  # also starts the OpenMP team
    read, write = multiprocessing.Pipe(duplex=False)
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            _child_entry(write)
            code = 0
        finally:
            os._exit(code)
    write.close()
    finished = read.poll(60)
    if not finished:
        os.kill(pid, signal.SIGKILL)
    results = read.recv() if finished else None
    _, status = os.waitpid(pid, 0)
    assert finished, "the forked child did not finish its kernels in 60 s (a hang)"
    assert os.waitstatus_to_exitcode(status) == 0
    _compare_with_child(results, parent, serial=True)
    assert mg.get_num_threads() == 2  # the parent keeps its team


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_after_threads(method, restore_threads):
    mg.set_num_threads(2)
    parent = _kernel_results()
    ctx = multiprocessing.get_context(method)
    read, write = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_entry, args=(write,))
    proc.start()
    write.close()
    try:
        assert read.poll(120), f"the {method} child did not finish its kernels in 120 s (a hang)"
        results = read.recv()
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == 0
    _compare_with_child(results, parent, serial=method == "fork")


def test_fork_before_any_team_keeps_the_threads():
    """Only a team the parent started makes the child serial: a child forked before
    any parallel kernel ran keeps its thread count (and finishes)."""
    code = """
import os, numpy as np, minigrad as mg
from minigrad import kernels
mg.set_num_threads(2)
a = np.ones((300, 300), np.float32)
pid = os.fork()
if pid == 0:
    ok = mg.get_num_threads() == 2 and float(kernels.gemm(a, a)[0, 0]) == 300.0
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
kernels.gemm(a, a)
pid = os.fork()
if pid == 0:
    ok = mg.get_num_threads() == 1 and float(kernels.gemm(a, a)[0, 0]) == 300.0
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print("child after team", os.waitstatus_to_exitcode(status))
"""
    assert_ran_ok(run_python(code, timeout=120), "child 0", "child after team 0")


# ================================================================ 3. an optimizer step under Ctrl-C

def _one_param():
    w = mg.Tensor(np.linspace(-1, 1, 5).astype(F32), requires_grad=True)
    g = np.linspace(0.5, -0.25, 5).astype(F32)
    return w, g


def _trajectory(make_opt, steps):
    """The weights after 0..steps plain updates (the states a step may leave)."""
    w, g = _one_param()
    opt = make_opt()
    states = [w.data.copy()]
    for _ in range(steps):
        opt.apply_gradients([(g, w)])
        states.append(w.data.copy())
    return states


OPTIMIZERS = {"adam": (lambda: optimizers.Adam(0.1), "adam_update"),
              "rmsprop": (lambda: optimizers.RMSprop(0.1), "rmsprop_update"),
              "sgd_momentum": (lambda: optimizers.SGD(0.1, momentum=0.9), "sgd_update")}


def _assert_consistent(opt, w, states):
    """iterations counts exactly the updates the weights show."""
    matches = [k for k, s in enumerate(states) if np.array_equal(s, w.data)]
    assert matches == [opt.iterations], (f"weights match step(s) {matches} but "
                                        f"optimizer.iterations is {opt.iterations}")


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("when", ["before", "after"])
def test_sigint_around_the_c_call(name, when, monkeypatch):
    """A real SIGINT, raised by a hook just before or just after the C update: the
    KeyboardInterrupt comes out, and the step is either whole (weights, slots and
    iterations) or absent."""
    make_opt, kernel = OPTIMIZERS[name]
    states = _trajectory(make_opt, 3)
    w, g = _one_param()
    opt = make_opt()
    opt.apply_gradients([(g, w)])  # step 1 as usual
    real = getattr(kernels, kernel)

    def interrupted(*args, **kwargs):
        if when == "before":
            signal.raise_signal(signal.SIGINT)
        real(*args, **kwargs)
        if when == "after":
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(kernels, kernel, interrupted)
    with pytest.raises(KeyboardInterrupt):
        opt.apply_gradients([(g, w)])
    monkeypatch.setattr(kernels, kernel, real)
    _assert_consistent(opt, w, states)
    opt.apply_gradients([(g, w)])  # the next step continues the same trajectory
    _assert_consistent(opt, w, states)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_keyboard_interrupt_at_every_point_of_a_step(name):
    """sys.settrace raises KeyboardInterrupt at the n-th trace event of a step, for
    every n: inside the optimizer's Python code, the kernel wrapper, after the C call
    returned (the 'return' events), before iterations is counted."""
    make_opt, _ = OPTIMIZERS[name]
    states = _trajectory(make_opt, 3)
    interrupted_at = []
    n = 0
    while True:
        n += 1
        w, g = _one_param()
        opt = make_opt()
        opt.apply_gradients([(g, w)])
        events = [0]

        def tracer(frame, event, arg, n=n):
            events[0] += 1
            if events[0] == n:
                raise KeyboardInterrupt(f"trace event {n}")
            return tracer

        sys.settrace(tracer)
        try:
            opt.apply_gradients([(g, w)])
            finished = True
        except KeyboardInterrupt:
            finished = False
        finally:
            sys.settrace(None)
        _assert_consistent(opt, w, states)
        if finished:
            break
        interrupted_at.append(n)
        opt.apply_gradients([(g, w)])
        _assert_consistent(opt, w, states)
    assert len(interrupted_at) > 20  # the sweep really went through the step


def test_ctrl_c_during_fit_with_adam_resumes_exactly(monkeypatch):
    """Ctrl-C right after the third step's C update: fit stops with KeyboardInterrupt,
    and the model and Adam hold exactly three steps; a later fit continues as if the
    three steps had been a run of their own."""
    x, y = toy_data(256)
    reference_model = toy_model(seed=2)
    reference_model.fit(x[:192], y[:192], batch_size=64, epochs=1, verbose=0, shuffle=False)
    model = toy_model(seed=2)
    real, calls = kernels.adam_update, [0]

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == 3:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(kernels, "adam_update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=64, epochs=2, verbose=0, shuffle=False)
    monkeypatch.setattr(kernels, "adam_update", real)
    assert model.optimizer.iterations == reference_model.optimizer.iterations == 3
    for got, want in zip(model.get_weights() + model.optimizer.variables(),
                         reference_model.get_weights() + reference_model.optimizer.variables()):
        assert_bitwise_equal(got, want, "after the interrupted fit")
    for m in (model, reference_model):
        m.fit(x[192:], y[192:], batch_size=64, epochs=1, verbose=0, shuffle=False)
    for got, want in zip(model.get_weights(), reference_model.get_weights()):
        assert_bitwise_equal(got, want, "after resuming")


# ================================================================ 4. subclasses and masked arrays

class Liar(np.ndarray):
    """An ndarray subclass whose size attributes lie (a C size taken from them would
    read far outside the memory)."""
    shape = property(lambda self: (10**6,) * max(np.ndarray.__getattribute__(self, "ndim"), 1))
    size = property(lambda self: 10**12)
    nbytes = property(lambda self: 4 * 10**12)

    def __len__(self):
        return 10**9


def liar(a):
    return np.ndarray.view(np.ascontiguousarray(a), Liar)


def test_subclass_sizes_are_never_trusted():
    x = np.arange(-3, 3, dtype=F32).reshape(2, 3)
    assert liar(x).size == 10**12
    np.testing.assert_array_equal(kernels.relu_forward(liar(x)), np.maximum(x, 0))
    np.testing.assert_array_equal(kernels.gemm(liar(x), liar(x.T)), x @ x.T)
    np.testing.assert_array_equal(kernels.gather_rows(liar(x), liar(np.array([1, 0]))), x[[1, 0]])
    out = liar(np.zeros((2, 3), F32))
    kernels.add_bias(x, np.ones(3, F32), out=out)
    np.testing.assert_array_equal(np.asarray(out.view(np.ndarray)), x + 1)
    loss, _, _ = kernels.softmax_xent_forward(liar(x), liar(np.array([0, 2])))
    want, _, _ = reference.softmax_xent_forward(x, np.array([0, 2]))
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    t = mg.Tensor(liar(x))
    assert type(t.data) is np.ndarray and t.shape == (2, 3)
    w = mg.Tensor(np.zeros(3, F32), requires_grad=True)
    optimizers.SGD(0.5).apply_gradients([(liar(np.ones(3, F32)), w)])
    np.testing.assert_array_equal(w.data, [-0.5] * 3)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix itself warns
def test_np_matrix_becomes_a_plain_array():
    m = np.matrix([[1.0, 2.0], [3.0, 4.0]])
    t = mg.Tensor(m) * mg.Tensor(m)  # element-wise, as for any Tensor (not matrix *)
    np.testing.assert_array_equal(t.data, [[1, 4], [9, 16]])
    assert type(t.data) is np.ndarray
    np.testing.assert_array_equal(kernels.gemm(m.astype(F32), m.astype(F32)), np.asarray(m @ m))
    assert type((mg.Tensor(np.ones((2, 2), F32)) + m).data) is np.ndarray
    x, y = toy_data(64)
    model = toy_model()
    model.fit(np.matrix(x), y, batch_size=32, epochs=1, verbose=0)
    assert model.predict(np.matrix(x), verbose=0).shape == (64, 3)
    loss, accuracy = model.evaluate(np.matrix(x), y, verbose=0)
    assert np.isfinite(loss) and 0 <= accuracy <= 1


def _masked(a):
    return np.ma.array(a, mask=np.zeros(np.shape(a), bool) | (np.arange(np.size(a)) % 2 == 0).reshape(np.shape(a)))


def test_masked_arrays_are_refused_everywhere_data_enters():
    x, y = toy_data(64)
    model = toy_model()
    f = np.ones((2, 3), F32)
    calls = [
        ("Tensor", lambda: mg.Tensor(_masked(f))),
        ("gemm", lambda: kernels.gemm(_masked(f), f.T.copy())),
        ("gemm", lambda: kernels.gemm(f, f.T.copy(), out=_masked(np.zeros((2, 2), F32)))),
        ("relu_forward", lambda: kernels.relu_forward(_masked(f))),
        ("softmax_xent_forward", lambda: kernels.softmax_xent_forward(f, _masked(np.array([0, 1])))),
        ("gather_rows", lambda: kernels.gather_rows(_masked(f), np.array([0]))),
        ("add", lambda: mg.Tensor(f) + _masked(f)),
        ("softmax_cross_entropy", lambda: mg.softmax_cross_entropy(mg.Tensor(f), _masked(np.array([0, 1])))),
        ("sparse_categorical_crossentropy",
         lambda: losses.sparse_categorical_crossentropy(_masked(np.array([0, 1])), mg.Tensor(f))),
        ("metric", lambda: metrics.get("accuracy", sparse_targets=False).update_state(_masked(f), f)),
        ("to_categorical", lambda: utils.to_categorical(_masked(np.array([0, 1])))),
        ("fit", lambda: model.fit(_masked(x), y, verbose=0)),
        ("fit", lambda: model.fit(x, _masked(y), verbose=0)),
        ("evaluate", lambda: model.evaluate(_masked(x), y, verbose=0)),
        ("predict", lambda: model.predict(_masked(x), verbose=0)),
    ]
    before = [w.copy() for w in model.get_weights()]
    for name, call in calls:
        with pytest.raises(TypeError, match=rf"^{name}: .*masked array \(its mask would be ignored\)"):
            call()
    for got, want in zip(model.get_weights(), before):
        assert_bitwise_equal(got, want, "weights after refused calls")


def test_user_subclass_data_enters_as_its_base_array():
    class Tagged(np.ndarray):
        pass
    x, y = toy_data(64)
    a = toy_model(seed=1)
    b = toy_model(seed=1)
    a.fit(x.view(Tagged), y.view(Tagged), batch_size=16, epochs=1, verbose=0, shuffle=False)
    b.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for got, want in zip(a.get_weights(), b.get_weights()):
        assert_bitwise_equal(got, want, "fit on a subclass vs the plain array")


def test_softmax_cross_entropy_names_itself_for_out_of_range_labels():
    logits = mg.Tensor(np.zeros((3, 4), F32), requires_grad=True)
    for bad in (-1, 4, 2**40):
        with pytest.raises(ValueError, match=rf"^softmax_cross_entropy: expected class indices in \[0, 4\), "
                                             rf"received {bad}$"):
            mg.softmax_cross_entropy(logits, np.array([0, bad, 1]))


# ================================================================ 5, 6. backward shapes, complex powers

def test_custom_function_backward_of_the_wrong_shape_is_refused():
    class Broken(mg.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return np.ones((7,), F32)  # the input has shape (2, 3)

    x = mg.Tensor(np.ones((2, 3), F32), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"broken\.backward returned a gradient of shape \(7,\) "
                                           r"for an input of shape \(2, 3\)"):
        Broken.apply(x).sum().backward()
    assert x.grad is None


@pytest.mark.parametrize("exponent", [np.complex128(2 + 1j), 2j, np.complex64(1), np.array(2 + 0j)])
def test_complex_exponent_is_refused(exponent):
    x = mg.Tensor(np.ones((2, 2), F32))
    with pytest.raises(TypeError, match=r"^pow: expected a constant real exponent"):
        x ** exponent


# ================================================================ 7. errors that name the function

@pytest.mark.parametrize("axis", [1.5, "1", np.array([0.5]), {0: 1}])
def test_sum_and_mean_axis_of_the_wrong_type(axis):
    t = mg.Tensor(np.ones((2, 3), F32))
    for op in ("sum", "mean"):
        with pytest.raises(TypeError, match=rf"^{op}: expected axis to be None, an integer or a tuple "
                                           rf"of integers, received {type(axis).__name__}"):
            getattr(t, op)(axis=axis)
    np.testing.assert_array_equal(t.sum(axis=np.int64(1)).data, [3, 3])
    np.testing.assert_array_equal(t.sum(axis=[0, 1]).data, 6)


@pytest.mark.parametrize("flag", [np.array([True, False]), np.array(True), "yes", 2, 0.5, None])
def test_requires_grad_must_be_a_bool(flag):
    with pytest.raises(TypeError, match=r"^Tensor: expected requires_grad to be True or False, "
                                        rf"received {type(flag).__name__}"):
        mg.Tensor([1.0], requires_grad=flag)
    for ok in (True, False, np.True_, 1, 0):
        assert mg.Tensor([1.0], requires_grad=ok).requires_grad == bool(ok)


@pytest.mark.parametrize("kwargs, error, text", [
    ({"eps": 0}, ValueError, r"expected a finite eps > 0, received 0"),
    ({"eps": -1e-3}, ValueError, r"expected a finite eps > 0"),
    ({"eps": float("nan")}, ValueError, r"expected a finite eps > 0"),
    ({"eps": "1e-3"}, TypeError, r"expected eps to be a real number, received str"),
    ({"atol": -1.0}, ValueError, r"expected a finite atol >= 0"),
    ({"rtol": float("inf")}, ValueError, r"expected a finite rtol >= 0"),
    ({"eps": 1e-12}, ValueError, r"eps=1e-12 does not change input 0 at element \(0,\) \(value 1000.0\)"),
])
def test_gradcheck_arguments(kwargs, error, text):
    x = mg.Tensor(np.array([1000.0, 1.0], F32), requires_grad=True)
    with pytest.raises(error, match=r"^gradcheck: " + text):
        mg.gradcheck(lambda t: (t * t).sum(), [x], **kwargs)
    assert mg.gradcheck(lambda t: (t * t).sum(), [mg.Tensor([0.5, 1.0], requires_grad=True)],
                        eps=np.float32(1e-2), atol=np.float64(1e-2))


def test_loss_returning_a_float_names_the_loss_and_what_it_returned():
    def my_loss(y_true, y_pred):
        return 1.0
    x, y = toy_data(32)
    model = toy_model()
    model.compile(optimizer="adam", loss=my_loss)
    with pytest.raises(TypeError, match=r"^loss 'my_loss' \(given to compile\): expected it to return "
                                        r"a scalar Tensor .* received float$"):
        model.fit(x, y.astype(F32)[:, None], verbose=0)


def test_callbacks_must_be_a_list():
    x, y = toy_data(32)
    model = toy_model()
    before = [w.copy() for w in model.get_weights()]
    for bad in (callbacks.History(), "history", callbacks.EarlyStopping):
        with pytest.raises(TypeError, match=r"^fit: expected callbacks to be a list of Callback "
                                            rf"instances, received {type(bad).__name__}"):
            model.fit(x, y, verbose=0, callbacks=bad)
    for got, want in zip(model.get_weights(), before):
        assert_bitwise_equal(got, want, "weights after a refused fit")
    model.fit(x, y, verbose=0, callbacks=(callbacks.History(),))  # a tuple is a list here


def test_model_checkpoint_pattern_checked_before_training(tmp_path):
    x, y = toy_data(64)
    model = toy_model()
    before = [w.copy() for w in model.get_weights()]
    bad = [(str(tmp_path / "w_{val_loss:.2f}.npz"), r"names 'val_loss', which the logs will not have"),
           (str(tmp_path / "w_{acc}.npz"), r"names 'acc'"),
           (str(tmp_path / "w_{}.npz"), r"names ''"),
           (str(tmp_path / "w_{loss:d}.npz"), r"cannot format filepath")]
    for pattern, text in bad:
        with pytest.raises(ValueError, match=r"^ModelCheckpoint: .*" + text):
            model.fit(x, y, epochs=2, verbose=0, callbacks=[callbacks.ModelCheckpoint(pattern)])
        assert model.optimizer.iterations == 0
    for got, want in zip(model.get_weights(), before):
        assert_bitwise_equal(got, want, "weights after a refused checkpoint pattern")
    with pytest.raises(ValueError, match=r"^ModelCheckpoint: expected filepath to be a format pattern"):
        callbacks.ModelCheckpoint(str(tmp_path / "w_{epoch.npz"))
    good = str(tmp_path / "w_{epoch:02d}_{loss:.3f}_{accuracy:.2f}_{val_loss:.3f}.npz")
    model.fit(x, y, epochs=2, verbose=0, validation_split=np.float32(0.25),
              callbacks=[callbacks.ModelCheckpoint(good)])
    assert len(list(tmp_path.glob("w_0*.npz"))) == 2


def _special_files(tmp_path):
    fifo = tmp_path / "weights.npz"
    os.mkfifo(fifo)
    return [("/dev/zero", "character device"), (str(fifo), "FIFO"), (str(tmp_path), "directory")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_load_weights_refuses_files_that_are_not_regular(tmp_path):
    model = toy_model()
    for path, kind in _special_files(tmp_path):
        with pytest.raises(ValueError, match=rf"^load_weights\({path!r}\): expected a regular file, "
                                             rf"received a {kind}"):
            model.load_weights(path)
    link = tmp_path / "link.npz"
    link.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=r"received a character device"):
        model.load_weights(link)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_dataset_readers_refuse_files_that_are_not_regular(tmp_path):
    from pathlib import Path
    for path, kind in _special_files(tmp_path):
        for read in (lambda p: mnist._read_idx(Path(p), 1, 10, verify=False),
                     lambda p: mnist._load_npz(Path(p), verify=False),
                     lambda p: mnist._sha256_file(Path(p))):
            with pytest.raises(mnist.DatasetFormatError, match=r"expected a regular file, received a " + kind):
                read(path)
    # a data directory whose files are devices is not a data set (nothing is read)
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (data / name).symlink_to("/dev/zero")
    with pytest.raises(FileNotFoundError, match="No usable MNIST files"):
        mnist.load_data(path=str(data))


# ================================================================ 8. valid input that was refused

def _misaligned(a):
    raw = np.zeros(a.nbytes + 1, np.uint8)
    view = raw[1:].view(a.dtype).reshape(a.shape)
    view[...] = a
    assert not view.flags.aligned and view.flags.c_contiguous
    return view


def test_fit_evaluate_predict_copy_misaligned_data():
    x, y = toy_data(64)
    for xs, ys in ((_misaligned(x), y), (x, _misaligned(y)), (_misaligned(x), _misaligned(y))):
        a, b = toy_model(seed=3), toy_model(seed=3)
        a.fit(xs, ys, batch_size=16, epochs=1, verbose=0, shuffle=False)
        b.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        for got, want in zip(a.get_weights(), b.get_weights()):
            assert_bitwise_equal(got, want, "fit on misaligned data")
        assert a.evaluate(xs, ys, verbose=0) == b.evaluate(x, y, verbose=0)
        assert_bitwise_equal(a.predict(xs, verbose=0), b.predict(x, verbose=0), "predict")
    onehot = utils.to_categorical(y, 3)
    model = toy_model()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(x, _misaligned(onehot), verbose=0)


def test_numpy_scalars_wherever_python_numbers_are():
    x, y = toy_data(80)
    model = toy_model()
    history = model.fit(x, y, batch_size=np.int64(16), epochs=np.int32(2), verbose=np.int64(0),
                        validation_split=np.float32(0.25), shuffle=np.bool_(True))
    assert len(history.history["val_loss"]) == 2 and model.optimizer.iterations == 2 * 4
    model.evaluate(x, y, batch_size=np.uint8(7), verbose=np.int8(0))
    model.predict(x, batch_size=np.int16(9), verbose=np.int64(0))
    for split in (np.float64(0.5), np.float16(0.25), np.int64(0)):
        model.fit(x, y, epochs=1, verbose=0, validation_split=split)
    for bad in (np.float32(1.0), np.float32(-0.1), np.float32(np.nan), np.bool_(True)):
        with pytest.raises(ValueError, match=r"^fit: expected 0 <= validation_split < 1"):
            model.fit(x, y, verbose=0, validation_split=bad)
    opt = optimizers.Adam(learning_rate=np.float32(0.01), beta_1=np.float64(0.9), epsilon=np.float32(1e-7))
    assert opt.learning_rate == pytest.approx(0.01)
    optimizers.SGD(learning_rate=np.float16(0.5), momentum=np.float32(0.5))
    layers.Dense(np.int64(4), input_shape=(np.int32(3),))
    callbacks.EarlyStopping(patience=np.int64(2), min_delta=np.float32(0.01))
    utils.to_categorical([0, 1], num_classes=np.int64(3))
    kernels.gemm(np.ones((2, 2), F32), np.ones((2, 2), F32), alpha=np.float32(2), beta=np.float64(0))


# ================================================================ every public entry point names itself

def _compiled():
    return toy_model()


@pytest.mark.parametrize("call, error, text", [
    (lambda: _compiled().fit([[1.0, 2.0], [3.0]], [0, 1], verbose=0), ValueError,
     r"^fit: expected x to be a rectangular numeric array, received list"),
    (lambda: _compiled().evaluate(*toy_data(8), verbose=0, return_dict="yes"), TypeError,
     r"^evaluate: expected return_dict to be True or False, received 'yes'"),
    (lambda: callbacks.EarlyStopping(monitor=3), TypeError,
     r"^EarlyStopping: expected monitor to be the name of a log key"),
    (lambda: callbacks.ModelCheckpoint(3), TypeError,
     r"^ModelCheckpoint: expected filepath to be a str or os.PathLike, received int"),
    (lambda: _compiled().save_weights(3), TypeError,
     r"^save_weights: expected a file path \(str or os.PathLike\), received int"),
    (lambda: _compiled().load_weights(None), TypeError,
     r"^load_weights: expected a file path \(str or os.PathLike\), received NoneType"),
    (lambda: _compiled().set_weights(3), TypeError, r"^set_weights: expected a list of arrays, received int"),
    (lambda: optimizers.Adam().apply_gradients(3), TypeError,
     r"^Adam.apply_gradients: expected \(gradient, variable\) pairs, received int"),
    (lambda: optimizers.SGD().apply_gradients([(np.ones(1, F32),)]), ValueError,
     r"^SGD.apply_gradients: expected \(gradient, variable\) pairs, received an item of length 1"),
    (lambda: optimizers.RMSprop().apply(3, []), TypeError,
     r"^RMSprop: expected gradients and variables as iterables, received int and list"),
    (lambda: models.Sequential(3), TypeError, r"^Sequential: expected layers to be a list of Layer instances"),
    (lambda: _compiled().summary(print_fn=3), TypeError, r"^summary: expected print_fn to be callable"),
    (lambda: mg.gradcheck(lambda t: t, 3), TypeError, r"^gradcheck: expected inputs to be a list of Tensors"),
    (lambda: mg.gradcheck(3, [mg.Tensor([1.0], requires_grad=True)]), TypeError,
     r"^gradcheck: expected fn to be callable, received int"),
])
def test_public_entry_points_name_themselves(call, error, text):
    with pytest.raises(error, match=text):
        call()


def test_save_weights_to_a_directory_names_the_function(tmp_path):
    model = _compiled()
    with pytest.raises(IsADirectoryError, match=r"^save_weights: expected a file path, received the directory"):
        model.save_weights(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind (nor in its parent)
    assert not list(tmp_path.parent.glob(".tmp_weights_*"))
