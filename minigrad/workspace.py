"""Reusable output buffers for the training loop.

Allocating a fresh (128, 512) activation or a 1.6 MB weight gradient every step
costs page faults and memory traffic that can rival the arithmetic. A
``Workspace`` hands out the same buffer for the same role on every step; it
grows when a batch is larger than any seen before and serves a smaller batch
(the last one of an epoch) as a view of its leading rows, so after the first
step of the first epoch a training loop allocates nothing.

The contract: whatever a step wrote into a workspace buffer is overwritten by
the next step, so only code that drops the previous step's graph and
gradients before starting the next (``Sequential.train_step``) may pass one.

>>> ws = Workspace()
>>> a = ws.get("y", (128, 4)); b = ws.get("y", (96, 4))
>>> bool(np.shares_memory(a, b)), b.flags.c_contiguous, workspace_stats()["allocations"] >= 1
(True, True, True)
"""
import numpy as np

from . import kernels

_F32 = np.dtype(np.float32)
_stats = {"allocations": 0, "bytes": 0}


def workspace_stats():
    """Buffers allocated so far: by all workspaces (count and bytes) and for GEMM
    packing and zero-skipping lists in C (count). All three stay flat once a
    training loop is warm."""
    return dict(_stats, gemm_allocations=kernels.gemm_workspace_allocations())


class Workspace:
    __slots__ = ("_buffers",)

    def __init__(self):
        self._buffers = {}

    def get(self, role, shape):
        """A C-contiguous float32 array of `shape` for `role`, reused across calls."""
        buf = self._buffers.get(role)
        if buf is None or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0]:
            buf = np.empty(shape, dtype=_F32)
            self._buffers[role] = buf
            _stats["allocations"] += 1
            _stats["bytes"] += buf.nbytes
        return buf[:shape[0]] if buf.shape[0] != shape[0] else buf
