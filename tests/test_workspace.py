"""Buffer reuse in the training loop: after the first step nothing is allocated."""
import numpy as np
import pytest

import minigrad as mg
from minigrad import callbacks, layers, models, utils
from minigrad.workspace import Workspace, workspace_stats


def test_workspace_reuses_and_grows():
    ws = Workspace()
    before = workspace_stats()["allocations"]
    a = ws.get("y", (128, 8))
    b = ws.get("y", (96, 8))           # a smaller batch: a view of the same buffer
    assert np.shares_memory(a, b) and b.shape == (96, 8) and b.flags.c_contiguous
    assert workspace_stats()["allocations"] == before + 1
    c = ws.get("y", (200, 8))          # a larger one: grows
    assert c.shape == (200, 8) and not np.shares_memory(a, c)
    assert workspace_stats()["allocations"] == before + 2
    assert ws.get("y", (128, 8)).base is c or np.shares_memory(ws.get("y", (128, 8)), c)


class _Recorder(callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.after_first_step = None
        self.per_epoch = []

    def on_train_batch_end(self, batch, logs=None):
        if self.after_first_step is None:
            self.after_first_step = workspace_stats()

    def on_epoch_end(self, epoch, logs=None):
        self.per_epoch.append(workspace_stats())


def test_fit_allocates_no_buffers_after_the_first_step():
    utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    x = rng.random((1000, 20), dtype=np.float32)   # 8 steps of 128, the last of 104
    y = rng.integers(0, 5, 1000)
    model = models.Sequential([layers.Dense(32, activation="relu"), layers.Dense(5, activation="softmax")])
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rec = _Recorder()
    model.fit(x, y, epochs=3, batch_size=128, verbose=0, callbacks=[rec])
    assert rec.after_first_step is not None
    assert rec.per_epoch == [rec.after_first_step] * 3


def test_reused_gradient_buffer_without_zero_grad_is_an_error():
    # A workspace writes each step's dW into the same array; accumulating into
    # a .grad that *is* that array would silently double it, so it must raise.
    ws = Workspace()
    x = mg.Tensor(np.ones((4, 3), np.float32))
    w = mg.Tensor(np.full((3, 2), 0.5, np.float32), requires_grad=True)
    mg.dense(x, w, workspace=ws).sum().backward()
    np.testing.assert_array_equal(w.grad, np.full((3, 2), 4.0, np.float32))
    with pytest.raises(RuntimeError, match="zero_grad"):
        mg.dense(x, w, workspace=ws).sum().backward()


def test_training_with_and_without_workspaces_is_bitwise_equal():
    rng = np.random.default_rng(0)
    x = rng.random((300, 12), dtype=np.float32)
    y = rng.integers(0, 4, 300)
    w1 = rng.standard_normal((12, 16)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((16, 4)).astype(np.float32) * 0.3
    results = []
    for use_ws in (False, True):
        params = [mg.Tensor(w1.copy(), requires_grad=True), mg.Tensor(np.zeros(16, np.float32), requires_grad=True),
                  mg.Tensor(w2.copy(), requires_grad=True), mg.Tensor(np.zeros(4, np.float32), requires_grad=True)]
        spaces = [Workspace(), Workspace(), Workspace()] if use_ws else [None] * 3
        opt = mg.optimizers.RMSprop()
        for start in range(0, 300, 64):
            xb, yb = mg.Tensor(x[start:start + 64]), y[start:start + 64]
            h = mg.dense(xb, params[0], params[1], "relu", workspace=spaces[0])
            logits = mg.dense(h, params[2], params[3], workspace=spaces[1])
            mg.softmax_cross_entropy(logits, yb, workspace=spaces[2]).backward()
            opt.step(params)
            opt.zero_grad(params)
        results.append([p.data.copy() for p in params])
    for a, b in zip(*results):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_optimizer_table_reuse_still_catches_a_parameter_made_read_only():
    # The validated parameter table is reused while the same arrays come back;
    # the one property an ndarray can change in place, writeability, is rechecked.
    from minigrad import kernels
    w = np.ones(4, np.float32)
    g = np.full(4, 0.5, np.float32)
    v = np.zeros(4, np.float32)
    kernels.rmsprop_update([w], [g], [v], 0.1, 0.9, 1e-7)
    kernels.rmsprop_update([w], [g], [v], 0.1, 0.9, 1e-7)   # served from the cache
    expected = w.copy()
    w.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        kernels.rmsprop_update([w], [g], [v], 0.1, 0.9, 1e-7)
    np.testing.assert_array_equal(w, expected)
