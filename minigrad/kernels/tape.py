"""The recording of one step's kernel calls: what ``mg.jit`` captures and replays.

While a ``Tape`` is active on this Python thread, every kernel wrapper appends
the C call it made (the C function and its already-validated arguments, which
point at arrays the tape keeps alive) and every NumPy computation an op does
through ``ufunc``/``call``/``copy`` appends a call that redoes it into the same
output array. Replaying the tape makes exactly those calls again, in order, on
whatever the arrays hold now: the same kernels with the same arguments, so the
numbers are those of the eager run bit for bit.

Arrays that recorded calls wrote are *produced*; an op whose output was made
any other way (a fresh NumPy array) would be replayed stale, so ``check_known``
lets the autograd layer refuse to record it.

>>> import numpy as np
>>> from minigrad import kernels
>>> from minigrad.kernels import tape
>>> a = np.ones((2, 2), np.float32)
>>> with tape.Tape() as t:
...     y = kernels.relu_forward(a)
...     z = tape.ufunc(np.multiply, y, np.float32(2))
>>> a[:] = 3.0
>>> t.replay()
>>> z.tolist()
[[6.0, 6.0], [6.0, 6.0]]
"""
import threading

import numpy as np

_local = threading.local()


class Tape:
    """An ordered list of calls plus the arrays they write.

    ``calls`` holds ``(function, args, is_c)``: C functions return a status
    code that replay checks (is_c is then True or a callable that explains a
    failing status with the op's own error); other calls (NumPy, or Python closures that read
    live values such as an optimizer's step count) return anything.
    """

    def __init__(self):
        self.calls = []
        self.produced = {}  # id(array) -> array: what recorded calls write (kept alive)
        self.leaves = {}    # id(tensor) -> tensor: graph leaves the step used (parameters)
        self.grad_reads = {}  # id(leaf) -> (leaf, .grad as the step found it) when it was read
        self.grad_writes = {}  # id(leaf) -> leaf whose .grad the step set
        self.guards = []    # callables: None while the recording is valid, else why not
        self.refused = None  # why this step cannot be replayed (it still runs eagerly)
        self._previous = None

    # ------------------------------------------------------------ recording
    def __enter__(self):
        self._previous = getattr(_local, "tape", None)
        _local.tape = self
        return self

    def __exit__(self, *exc_info):
        _local.tape = self._previous
        self._previous = None
        return False

    def add_c(self, cfunc, args, outputs=(), explain=None):
        """A C call; on an error status, explain() raises the precise error (if given)."""
        self.calls.append((cfunc, args, explain or True))
        self.mark(*outputs)

    def add(self, function, args=(), outputs=()):
        self.calls.append((function, args, False))
        self.mark(*outputs)

    def mark(self, *arrays):
        """Record arrays as produced (written by the tape, or its inputs). A view's
        bases are recorded too: a later view of the same memory (NumPy gives it the
        owner as its base, not this view) is then known as well."""
        for a in arrays:
            while a is not None:
                self.produced[id(a)] = a
                a = getattr(a, "base", None)

    def refuse(self, reason):
        """Mark the step as not replayable (the first reason is kept); the eager run goes on."""
        if self.refused is None:
            self.refused = reason

    def note_leaf(self, tensor):
        """A leaf Tensor the step reads (its data is referenced, not copied)."""
        if id(tensor) not in self.leaves:
            self.leaves[id(tensor)] = tensor
            self.produced[id(tensor.data)] = tensor.data

    def read_grad(self, leaf):
        """The step reads leaf.grad: if the step did not set it first, the value
        found here is part of what a replay assumes."""
        key = id(leaf)
        if key not in self.grad_writes and key not in self.grad_reads:
            self.grad_reads[key] = (leaf, leaf.grad)
        self.note_leaf(leaf)

    def wrote_grad(self, leaf):
        self.grad_writes[id(leaf)] = leaf
        self.note_leaf(leaf)

    def knows(self, array):
        """True if array is produced by the tape or a view of a produced array."""
        produced = self.produced
        while array is not None:
            if id(array) in produced:
                return True
            array = getattr(array, "base", None)
        return False

    # ------------------------------------------------------------ replay
    def replay(self):
        """Make every recorded call again, in order."""
        for function, args, is_c in self.calls:
            status = function(*args)
            if is_c and status:
                if callable(is_c):
                    is_c()
                raise RuntimeError(f"replay: a recorded C call ({function.__name__}) "
                                   f"returned error code {status}")


def active():
    """The Tape recording on this thread, or None."""
    return getattr(_local, "tape", None)


def paused():
    """A context in which nothing is recorded (work that is not part of the step)."""
    return _Paused()


class _Paused:
    def __enter__(self):
        self._tape = getattr(_local, "tape", None)
        _local.tape = None

    def __exit__(self, *exc_info):
        _local.tape = self._tape
        return False


# ---------------------------------------------------------------- NumPy work that replays

def ufunc(function, *args, **kwargs):
    """function(*args) for a NumPy ufunc, as float32; recorded as a call with out=.

    >>> float(ufunc(np.add, np.float32(1), np.float32(2)))
    3.0
    """
    out = function(*args, dtype=np.float32, **kwargs)
    if type(out) is not np.ndarray:  # 0-d arithmetic returns a NumPy scalar
        out = np.asarray(out, dtype=np.float32)
    tape = getattr(_local, "tape", None)
    if tape is not None:
        tape.add(_Ufunc(function, kwargs), args + (out,), (out,))
    return out


class _Ufunc:
    __slots__ = ("function", "kwargs", "__name__")

    def __init__(self, function, kwargs):
        self.function, self.kwargs, self.__name__ = function, kwargs, function.__name__

    def __call__(self, *args):
        return self.function(*args[:-1], out=args[-1], dtype=np.float32, **self.kwargs)


def call(function, *args, **kwargs):
    """A fresh float32 array from any NumPy function; recorded as compute + copy.

    For work with no ``out=`` form (reshaping copies, fancy indexing, sorting):
    the replay computes a temporary and copies it into the recorded array.

    >>> call(np.sum, np.ones((2, 3), np.float32), axis=0).tolist()
    [2.0, 2.0, 2.0]
    """
    out = np.array(function(*args, **kwargs), dtype=np.float32, order="C")
    tape = getattr(_local, "tape", None)
    if tape is not None:
        tape.add(_Copying(function, args, kwargs, out), (), (out,))
    return out


def call_as(dtype, function, *args, **kwargs):
    """As ``call``, for a result of another dtype (argmax's int64, a comparison's bool).

    >>> call_as(np.int64, np.argmax, np.array([1.0, 3.0, 2.0], np.float32)).tolist()
    1
    """
    out = np.array(function(*args, **kwargs), dtype=dtype, order="C")
    tape = getattr(_local, "tape", None)
    if tape is not None:
        tape.add(_Copying(function, args, kwargs, out), (), (out,))
    return out


class _Copying:
    __slots__ = ("function", "args", "kwargs", "out", "__name__")

    def __init__(self, function, args, kwargs, out):
        self.function, self.args, self.kwargs, self.out = function, args, kwargs, out
        self.__name__ = getattr(function, "__name__", "call")

    def __call__(self):
        np.copyto(self.out, self.function(*self.args, **self.kwargs), casting="unsafe")


def copy(source, dtype=np.float32):
    """A C-contiguous copy of source (of dtype); recorded as a copyto.

    >>> copy(np.arange(3)).dtype
    dtype('float32')
    """
    out = np.array(source, dtype=dtype, order="C")
    tape = getattr(_local, "tape", None)
    if tape is not None:
        tape.add(_copyto_unsafe, (out, source), (out,))
    return out


def _copyto_unsafe(out, source):
    np.copyto(out, source, casting="unsafe")


def into(target, function, *args):
    """In place: target = function(target, *args) for a ufunc (gradient accumulation)."""
    function(target, *args, out=target)
    tape = getattr(_local, "tape", None)
    if tape is not None:
        tape.add(_InPlace(function), (target,) + args)
    return target


def setitem(target, key, value):
    """In place: target[key] = value (a Tensor's item assignment), recorded as such."""
    target[key] = value
    tape = getattr(_local, "tape", None)
    if tape is not None:
        tape.add(_setitem, (target, key, value))
    return target


def _setitem(target, key, value):
    target[key] = value


class _InPlace:
    __slots__ = ("function", "__name__")

    def __init__(self, function):
        self.function, self.__name__ = function, function.__name__

    def __call__(self, target, *args):
        self.function(target, *args, out=target)


# ---------------------------------------------------------------- what recordings assume

_version = [0]


def changed():
    """Something a recorded step may have read from Python changed (a layer's weight
    was reassigned, a model recompiled...): every recording made before is stale."""
    _version[0] += 1


def version():
    """A counter that ``changed()`` increments; recordings remember the value they saw."""
    return _version[0]
