"""Fuzzing the public Tensor ops: those that call C (matmul, dense, relu, softmax, softmax_cross_entropy; in a child interpreter) and the pure-NumPy element-wise,
reduction and shape ops (in this process). ``check_op_call`` is their oracle; see
fuzz_support.py for the budget and the child processes."""
import copy
import math
import numbers

import numpy as np
import pytest
from hypothesis import strategies as st

import minigrad as mg
from minigrad import reference
import fuzz_strategies as fs
import fuzz_support as fz
from fuzz_strategies import (EPS32, F32, arg, array, boolean, dims, draw, integer, labels, pick, shape)
from fuzz_support import (Mismatch, _daz, _arrays_in, _assert_unchanged, _finite_max, _has_inf, _snapshot,
                          _trace, as_f32, assert_close)

F = np.float32


# ================================================================ families: ops

OP_DTYPES = [np.dtype(t) for t in (np.float64, np.float16, np.int32, np.int8, np.uint8, np.bool_, np.int64)]


def tensor_or_value(data, s, label, *, p_bad=0.15, **kw):
    """An operand for an op: usually a Tensor (requires_grad or not) built from an
    array of any real dtype and layout; else a raw array, list, scalar or junk."""
    kind = integer(data, 0, 99, f"{label}.operand")
    if kind < 100 * (1 - p_bad) * 0.8:
        dtype = F32 if integer(data, 0, 3, f"{label}.f32") else pick(data, OP_DTYPES, f"{label}.dtype")
        x = array(data, s, label, dtype=dtype, **kw)
        return mg.Tensor(x, requires_grad=boolean(data, f"{label}.grad"))
    if kind < 100 * (1 - p_bad):
        form = pick(data, ["array", "list", "scalar"], f"{label}.raw")
        x = array(data, s, label, **kw)
        return x if form == "array" else (x.tolist() if form == "list" else 1.5)
    return arg(data, s, label, p_bad=1.0, allow_huge=False)


def reduce_to(g, shape_):
    """Sum a float64 gradient over the axes broadcasting added or stretched."""
    g = np.asarray(g, dtype=np.float64)
    while g.ndim > len(shape_):
        g = g.sum(axis=0)
    for i, n in enumerate(shape_):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


def check_op_call(desc, fn, operands, expect, *, upstream=None, tol=(2e-6, 1e-30), grad_tol=None,
                  no_grad=(), nan_for_inf=False):
    """THE ORACLE for public ops.

    fn() performs the op on `operands` (Tensors and raw values); expect() returns
    (forward value, {operand index: gradient given upstream G}) computed in NumPy
    on the float32 conversions, or raises _Invalid if the ops must reject the
    operands. The op must raise TypeError/ValueError exactly when it is invalid
    (OverflowError is allowed too), return a float32 Tensor equal to the forward
    value otherwise, and backward must give every requires_grad leaf its gradient.
    No input array may change."""
    arrays = _arrays_in([o.data if isinstance(o, mg.Tensor) else o for o in operands])
    snap = _snapshot(arrays)
    try:
        want, grads = expect()
        invalid = None
    except _Invalid as exc:
        invalid = str(exc)
    _trace(desc)
    try:
        with np.errstate(all="ignore"):
            out = fn()
    except (TypeError, ValueError, OverflowError) as exc:
        if invalid is None:
            raise Mismatch(f"{desc}: rejected valid operands: {type(exc).__name__}: {exc}") from exc
        _assert_unchanged(arrays, snap, what=desc)
        return
    except Exception as exc:
        raise Mismatch(f"{desc}: {type(exc).__name__} (expected TypeError/ValueError or a result): "
                       f"{exc}") from exc
    if invalid is not None:
        raise Mismatch(f"{desc}: accepted operands it should reject ({invalid})")
    assert isinstance(out, mg.Tensor), f"{desc}: returned {type(out).__name__}"
    assert type(out.data) is np.ndarray and out.dtype == F32, f"{desc}: data {type(out.data)} {out.dtype}"
    assert_close(out.data, want, *tol, f"{desc}: forward", nan_for_inf)
    _assert_unchanged(arrays, snap, what=f"{desc} forward")
    leaves = [o for i, o in enumerate(operands)
              if isinstance(o, mg.Tensor) and o.requires_grad and i not in no_grad]
    assert out.requires_grad == bool(leaves), f"{desc}: requires_grad {out.requires_grad}"
    if not leaves:
        return
    if upstream is None:
        G = np.ones(out.shape, F32)
        if out.size != 1:  # documented: RuntimeError, as in PyTorch
            with pytest.raises(RuntimeError, match="^backward: grad can be omitted only"):
                out.backward()
            assert all(o.grad is None for o in leaves)
            return
    else:
        G = as_f32(upstream)
        if G is None or G.shape != out.shape:  # a wrong upstream gradient
            try:
                out.backward(upstream)
            except (TypeError, ValueError):
                assert all(o.grad is None for o in leaves), f"{desc}: a failed backward left gradients"
                return
            raise Mismatch(f"{desc}: backward accepted the upstream gradient {fs.describe(upstream)} "
                           f"for an output of shape {out.shape}")
    upstream_copy = copy.deepcopy(upstream)
    with np.errstate(all="ignore"):
        out.backward(upstream)
    _assert_unchanged(arrays, snap, what=f"{desc} backward")
    if isinstance(upstream, np.ndarray):
        assert np.array_equal(upstream, upstream_copy, equal_nan=True), f"{desc}: backward modified its grad"
    for i in no_grad:
        if isinstance(operands[i], mg.Tensor):
            assert operands[i].grad is None, f"{desc}: operand {i} must get no gradient"
    expected, atols = {}, {}  # by leaf: the gradient, and its tolerance (summed if the leaf is used twice)
    rtol, atol = grad_tol(G) if grad_tol else (1e-5, 1e-30)
    for i, o in enumerate(operands):
        if isinstance(o, mg.Tensor) and o.requires_grad and i not in no_grad:
            with np.errstate(all="ignore"):
                gi, ai = grads[i](np.asarray(G, F32)), atol
                if isinstance(gi, tuple):  # (gradient, sum of the |terms| it adds up)
                    gi, ai = gi[0], 8 * EPS32 * np.nan_to_num(np.asarray(gi[1], dtype=np.float64))
                gi = np.asarray(gi, dtype=np.float64).reshape(o.shape)
                ai = np.broadcast_to(ai, o.shape)
            expected[id(o)] = expected[id(o)] + gi if id(o) in expected else gi
            atols[id(o)] = atols[id(o)] + ai if id(o) in atols else ai
    for o in leaves:
        assert o.grad is not None, f"{desc}: a leaf got no gradient"
        assert o.grad.shape == o.shape and o.grad.dtype == F32, \
            f"{desc}: gradient of shape {o.grad.shape} dtype {o.grad.dtype} for a leaf of shape {o.shape}"
        assert_close(o.grad, expected[id(o)], rtol, atols[id(o)], f"{desc}: gradient", nan_for_inf)


class _Invalid(Exception):
    pass


UPSTREAM_KINDS = ("array", "array", "array", "array", "default", "float64", "int8", "list", "Tensor",
                  "wrong shape", "complex", "str", "None-like")


def upstream_grad(data, out_shape):
    """The gradient passed to backward(): usually a float32 array of the output's
    shape; else omitted (None), another real dtype, a list, a Tensor, or wrong."""
    if out_shape is None:
        return None
    kind = pick(data, UPSTREAM_KINDS, "G.kind")
    if kind == "default":
        return None
    if kind == "wrong shape":
        return np.ones(fs.wrong_shape(data, out_shape, "G"), F32)
    if kind in ("complex", "str", "None-like"):
        return {"complex": np.ones(out_shape, np.complex64), "str": "1", "None-like": [None]}[kind]
    g = array(data, out_shape, "G", mag=30.0, huge=30.0, layouts=fs.LAYOUTS)
    if kind == "float64":
        return g.astype(np.float64)
    if kind == "int8":
        return np.nan_to_num(g).clip(-100, 100).astype(np.int8)
    if kind == "list":
        return g.tolist()
    return mg.Tensor(g) if kind == "Tensor" else g


def _need(a, what):
    if a is None:
        raise _Invalid(f"{what} is not real numeric data")
    return a


def broadcast_shape_like(data, s, label):
    """A shape that broadcasts with s (mostly), or any shape."""
    kind = integer(data, 0, 9, f"{label}.bshape")
    if kind == 0:
        return shape(data, label, max_ndim=3, max_size=2000)
    out = list(s)
    drop = integer(data, 0, len(out), f"{label}.drop")
    out = out[drop:]
    return tuple(1 if integer(data, 0, 3, f"{label}.one{i}") == 0 else n for i, n in enumerate(out))


EXPONENTS = (2, 0, 1, 3, 0.5, -1, -2, 1.5, 1 / 3, -0.0, 2.0, np.float32(2), np.int64(3), float("nan"),
             float("inf"), 1e39, 10**400, True, "2", None, 1 + 1j, mg.Tensor(2.0), np.array(2.0), [2])
ELEMENTWISE = ["add", "sub", "mul", "div", "radd", "rsub", "rmul", "rdiv", "neg", "pow", "exp", "log",
               "sigmoid", "tanh", "abs", "sqrt", "maximum", "minimum"]
UNARY = ("neg", "pow", "exp", "log", "sigmoid", "tanh", "abs", "sqrt")


def _sigmoid64(x):
    """sigmoid in float64 without overflow, rounded once to float32."""
    x = x.astype(np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(F32)


def _extremum_share(G, mine, other, wins):
    """PyTorch's maximum/minimum gradient: all where this side wins, half on ties."""
    return np.where(wins(mine, other), G, np.where(mine == other, G * np.float32(0.5), np.float32(0)))


def case_elementwise_ops(data):
    op = pick(data, ELEMENTWISE, "op")
    sa = shape(data, "a", max_ndim=3, max_size=2000)
    a = tensor_or_value(data, sa, "a", p_bad=0.0, mag=30.0, huge=30.0)
    if not isinstance(a, mg.Tensor):
        a = mg.Tensor(as_f32(a), requires_grad=True)
    A = a.data
    same = op not in UNARY and integer(data, 0, 9, "same") == 0
    b = a if same else tensor_or_value(data, broadcast_shape_like(data, sa, "b"), "b", mag=30.0, huge=30.0)
    exponent = pick(data, EXPONENTS, "exponent")
    fns = {
        "add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b, "div": lambda: a / b,
        "radd": lambda: b + a, "rsub": lambda: b - a, "rmul": lambda: b * a, "rdiv": lambda: b / a,
        "neg": lambda: -a, "pow": lambda: a ** exponent, "exp": lambda: a.exp(), "log": lambda: a.log(),
        "sigmoid": lambda: mg.sigmoid(a), "tanh": lambda: a.tanh(), "abs": lambda: abs(a),
        "sqrt": lambda: mg.sqrt(a), "maximum": lambda: mg.maximum(a, b), "minimum": lambda: a.minimum(b),
    }
    B = as_f32(b)

    def expect():
        f32 = np.float32
        if op in ("neg", "exp", "log"):
            return {"neg": (-A, {0: lambda G: -G}),
                    "exp": (np.exp(A), {0: lambda G: G * np.exp(A)}),
                    "log": (np.log(A), {0: lambda G: G / A})}[op]
        if op in ("sigmoid", "tanh", "abs", "sqrt"):
            y = {"sigmoid": _sigmoid64(A), "tanh": np.tanh(A.astype(np.float64)).astype(F32),
                 "abs": np.abs(A), "sqrt": np.sqrt(A)}[op]
            # sigmoid' = y (1 - y) and tanh' = 1 - y^2 cancel near |y| = 1: the kernels' y
            # (within 2 ulp) moves them by a few ulp of y, so the tolerance scales with |G| y
            y64 = y.astype(np.float64)
            return y, {0: {"sigmoid": lambda G: (G * y64 * (1 - y64), np.abs(G) * y64),
                           "tanh": lambda G: (G * (1 - y64 ** 2), 2 * np.abs(G) * y64 ** 2),
                           "abs": lambda G: G * np.sign(A),
                           "sqrt": lambda G: G / (y + y)}[op]}
        if op == "pow":
            if isinstance(exponent, mg.Tensor):  # a Tensor exponent (no grad here): PowTensor
                p = exponent.data
                return np.power(A, p), {0: lambda G: np.where(p == 0, f32(0), G * (p * np.power(A, p - f32(1))))}
            if isinstance(exponent, (bool, np.bool_)) or not isinstance(exponent, numbers.Real):
                raise _Invalid("exponent")
            try:
                p = f32(float(exponent))
            except OverflowError:  # 10**400: float() overflows, an OverflowError is fine
                raise _Invalid("exponent beyond float") from None
            return np.power(A, p), {0: lambda G: G * p * np.power(A, p - f32(1))}
        _need(B, "b")
        try:
            out_shape = np.broadcast_shapes(A.shape, B.shape)
        except ValueError:
            raise _Invalid("shapes do not broadcast") from None
        if op in ("maximum", "minimum"):
            wins = np.greater if op == "maximum" else np.less
            def share(G, mine, other, shape_):  # the gradient, and the magnitudes it sums
                terms = _extremum_share(G, mine, other, wins)
                return reduce_to(terms, shape_), reduce_to(np.abs(terms), shape_)
            return ({"maximum": np.maximum, "minimum": np.minimum}[op](A, B).astype(F32),
                    {0: lambda G: share(G, A, B, A.shape), 1: lambda G: share(G, B, A, B.shape)})
        left, right = (A, B) if op in ("add", "sub", "mul", "div") else (B, A)
        ia = 0 if op in ("add", "sub", "mul", "div") else 1  # a's place
        sl, sr = left.shape, right.shape
        base = op.lstrip("r") if op != "rdiv" else "div"
        value = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}[base](left, right)
        term_l = {"add": lambda G: G, "sub": lambda G: G, "mul": lambda G: G * right,
                  "div": lambda G: G / right}[base]
        term_r = {"add": lambda G: G, "sub": lambda G: -G, "mul": lambda G: G * left,
                  "div": lambda G: -G * left / (right * right)}[base]

        def gl(G):  # the gradient, and the sum of the magnitudes of the terms it adds up
            return reduce_to(term_l(G), sl), reduce_to(np.abs(term_l(G)), sl)

        def gr(G):
            return reduce_to(term_r(G), sr), reduce_to(np.abs(term_r(G)), sr)
        assert value.shape == out_shape
        return value.astype(F32), ({0: gl, 1: gr} if ia == 0 else {0: gr, 1: gl})

    operands = [a] if op in UNARY else [a, b]
    with np.errstate(all="ignore"):
        try:
            out_shape = np.shape(expect()[0])
        except _Invalid:
            out_shape = None
    upstream = upstream_grad(data, out_shape)

    # sigmoid' = y (1 - y) and tanh' = 1 - y^2 are 0 in float32 where the kernel's y
    # saturated (within its 2 ulp of the reference's): an infinite upstream gradient
    # then gives NaN where the float64 reference gives inf
    check_op_call(f"{op}: a={fs.describe(A)}, b={fs.describe(b)}", fns[op], operands, expect,
                  upstream=upstream, tol=(2e-6, 1e-30), grad_tol=lambda G: (2e-6, 1e-30),
                  nan_for_inf=op in ("sigmoid", "tanh"))


def case_shape_ops(data):
    s = shape(data, "x", max_ndim=4, max_size=3000)
    x = tensor_or_value(data, s, "x", p_bad=0.0, mag=30.0, huge=30.0)
    if not isinstance(x, mg.Tensor):
        x = mg.Tensor(as_f32(x), requires_grad=True)
    X = x.data
    op = pick(data, ["sum", "mean", "reshape", "T", "max"], "op")
    axis = draw(data, st.one_of(st.none(), st.integers(-5, 5),
                                st.lists(st.integers(-5, 5), max_size=3).map(tuple),
                                st.sampled_from([1.5, "0", [0], True, np.int64(0), (0, "a")])), "axis")
    keepdims = boolean(data, "keepdims")
    new_shape = draw(data, st.one_of(
        st.permutations(list(s)).map(tuple),
        st.just((-1,)), st.just(-1),
        st.lists(st.integers(-2, 6), max_size=4).map(tuple),
        st.sampled_from([(), (1, -1), "3", (2.0,), None])), "new_shape")
    ndim = X.ndim

    def norm_axes():
        if axis is None:
            return tuple(range(ndim))
        axes = (axis,) if isinstance(axis, (int, np.integer)) else axis
        if not isinstance(axes, (tuple, list)):
            raise _Invalid("axis")
        out = []
        for ax in axes:
            if not isinstance(ax, (int, np.integer)) or not -ndim <= ax < ndim:
                raise _Invalid("axis")
            out.append(int(ax) % ndim)
        return tuple(sorted(set(out)))

    def expect():
        if op in ("sum", "mean"):
            axes = norm_axes()
            count = int(np.prod([X.shape[i] for i in axes]))
            if op == "mean" and count == 0:
                raise _Invalid("mean of nothing")
            value = X.astype(np.float64).sum(axis=axes, keepdims=keepdims)
            kept = tuple(1 if i in axes else n for i, n in enumerate(X.shape))
            div = count if op == "mean" else 1
            return value / div, {0: lambda G: np.broadcast_to(np.reshape(G, kept) / np.float64(div), X.shape)}
        if op == "reshape":
            try:
                value = np.reshape(X, new_shape)
            except Exception:
                raise _Invalid("shape") from None
            return value, {0: lambda G: np.reshape(G, X.shape)}
        if op == "max":
            return expect_max()
        return X.T, {0: lambda G: G.T}

    def expect_max():
        """One integer axis or None; the whole gradient to the first maximum (or first NaN)."""
        if axis is not None and (isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer))):
            raise _Invalid("max takes one integer axis")
        ax = None
        if axis is not None:
            if not -max(ndim, 1) <= axis < max(ndim, 1):
                raise _Invalid("axis")
            ax = int(axis) % ndim if ndim else None  # a 0-d tensor reduces along 0 or -1
        flat = X.reshape(-1) if ax is None else X
        along = 0 if ax is None else ax
        if flat.shape[along] == 0:
            raise _Invalid("max of nothing")
        first = np.argmax(flat, axis=along, keepdims=True)

        def grad(G):
            g = np.zeros(flat.shape)
            np.put_along_axis(g, first, np.reshape(G, first.shape), along)
            return g.reshape(X.shape)
        return np.max(X, axis=ax, keepdims=keepdims), {0: grad}

    fn = {"sum": lambda: x.sum(axis=axis, keepdims=keepdims),
          "mean": lambda: x.mean(axis=axis, keepdims=keepdims),
          "reshape": lambda: x.reshape(new_shape), "T": lambda: x.T,
          "max": lambda: x.max(axis=axis, keepdims=keepdims)}[op]
    try:
        out_shape = np.shape(expect()[0])
    except _Invalid:
        out_shape = None
    upstream = upstream_grad(data, out_shape)
    check_op_call(f"{op}(axis={axis!r}, keepdims={keepdims}, shape={new_shape!r}) of {fs.describe(X)}",
                  fn, [x], expect, upstream=upstream,
                  tol=(1e-5, 4 * EPS32 * max(X.size, 1) * _finite_max(X) + 1e-30))


TENSOR_DTYPES = (np.dtype(np.float32), np.dtype(np.int64), np.dtype(np.bool_))
DTYPE_OPS = ("==", "!=", "<", ">=", "&", "|", "^", "~", "any", "all", "sum", "argmax", "max_dim",
             "to", "index", "where")


def _dtype_tensor(data, s, label):
    """A Tensor of float32, int64 or bool values (small integers, so every dtype holds them)."""
    dtype = pick(data, TENSOR_DTYPES, f"{label}.dtype")
    values = np.rint(array(data, s, label, mag=4.0, huge=4.0, dtype=np.float64))
    values = np.nan_to_num(values, nan=0.0, posinf=3.0, neginf=-3.0)
    return mg.Tensor(values, dtype=dtype)


def case_dtype_ops(data):
    """int64/bool tensors: comparisons, logic, masks and conversions against NumPy.
    A valid call returns a Tensor of NumPy's dtype and value; an invalid one raises
    TypeError, ValueError or IndexError, and nothing it was given changes."""
    s = shape(data, "x", max_ndim=3, max_size=200)
    x = _dtype_tensor(data, s, "x")
    other_kind = pick(data, ["tensor", "array", "scalar", "junk"], "other.kind")
    if other_kind == "tensor":
        other = _dtype_tensor(data, broadcast_shape_like(data, s, "other"), "other")
    elif other_kind == "array":
        other = np.rint(array(data, broadcast_shape_like(data, s, "other"), "other", mag=4.0, huge=4.0,
                              dtype=pick(data, [np.float32, np.int64, np.bool_, np.uint8], "other.dtype")))
    elif other_kind == "scalar":
        other = pick(data, [0, 1, 2.0, True, np.int64(3)], "other.scalar")
    else:
        other = pick(data, ["a", None, object(), 1 + 2j, [1, "b"]], "other.junk")
    op = pick(data, DTYPE_OPS, "op")
    dim = pick(data, [None, 0, -1, 1, 2, 3, 1.5], "dim")
    target = pick(data, [mg.float32, mg.int64, mg.bool, "cpu", "float64", np.int32], "target")
    X = x.data
    O = other.data if isinstance(other, mg.Tensor) else other
    numpy_ops = {"==": np.equal, "!=": np.not_equal, "<": np.less, ">=": np.greater_equal,
                 "&": np.bitwise_and, "|": np.bitwise_or, "^": np.bitwise_xor}

    def expect():
        """NumPy's answer (value, dtype), or _Invalid."""
        try:
            with np.errstate(all="ignore"):
                if op in numpy_ops:
                    o = np.asarray(O)
                    if o.dtype.kind not in "biuf" or o.dtype.kind == "O":
                        raise _Invalid("operand")
                    if op in "&|^" and (X.dtype.kind == "f" or o.dtype.kind == "f"):
                        raise _Invalid("logic on floats")
                    value = numpy_ops[op](X, o)
                    if op in "&|^" and value.dtype != np.bool_:
                        value = value.astype(np.int64)
                    return value
                if op == "~":
                    if X.dtype.kind == "f":
                        raise _Invalid("~ of floats")
                    return np.invert(X)
                if op in ("any", "all", "sum", "argmax", "max_dim"):
                    if dim is not None and (not isinstance(dim, int) or not -max(X.ndim, 1) <= dim < max(X.ndim, 1)):
                        raise _Invalid("dim")
                    axis = None if dim is None or X.ndim == 0 else dim
                    if op in ("any", "all", "sum") and X.ndim == 0 and dim is not None:
                        raise _Invalid("sum/any/all of a 0-d tensor take no axis (as minigrad's sum)")
                    if op == "any":
                        return np.any(X, axis=axis)
                    if op == "all":
                        return np.all(X, axis=axis)
                    if op == "sum":
                        if X.dtype.kind == "f":
                            return X.sum(axis=axis, dtype=np.float32)
                        return X.sum(axis=axis, dtype=np.int64)
                    if X.size == 0 or (axis is not None and X.shape[axis] == 0):
                        raise _Invalid("empty")
                    if op == "argmax":
                        return np.argmax(X, axis=axis)
                    if dim is None:
                        return np.max(X)
                    return np.max(X, axis=axis)
                if op == "to":
                    if target == "cpu":
                        return X
                    if target in ("float64", np.int32):
                        raise _Invalid("dtype")
                    return X.astype(target)
                if op == "index":
                    if isinstance(other, mg.Tensor):
                        if O.dtype.kind not in "bi":
                            raise _Invalid("a float32 tensor as a key")
                        return X[O]
                    if O is None or (isinstance(O, (int, np.integer)) and not isinstance(O, (bool, np.bool_))):
                        return X[O]
                    key = np.asarray(O)
                    if key.dtype.kind not in "biu":
                        raise _Invalid("key")
                    return X[key]
                if op == "where":  # any Tensor, or a bool/int array or number: nonzero is True
                    cond = np.asarray(O)
                    if not isinstance(other, mg.Tensor) and cond.dtype.kind not in "biu":
                        raise _Invalid("condition")
                    return np.where(cond != 0, X.astype(np.float32), np.float32(0))
        except (IndexError, ValueError, TypeError) as exc:
            raise _Invalid(str(exc)) from None

    def run():
        if op in numpy_ops:
            return {"==": lambda: x == other, "!=": lambda: x != other, "<": lambda: x < other,
                    ">=": lambda: x >= other, "&": lambda: x & other, "|": lambda: x | other,
                    "^": lambda: x ^ other}[op]()
        if op == "~":
            return ~x
        if op == "any":
            return x.any(dim=dim)
        if op == "all":
            return x.all(dim=dim)
        if op == "sum":
            return x.sum(dim=dim)
        if op == "argmax":
            return x.argmax(dim=dim)
        if op == "max_dim":
            return x.max() if dim is None else x.max(dim).values
        if op == "to":
            return x.to(target)
        if op == "index":
            return x[other]
        return mg.where(other, x.float(), 0.0)

    arrays = _arrays_in([X, O])
    snap = _snapshot(arrays)
    try:
        want = expect()
        invalid = None
    except _Invalid as exc:
        invalid = str(exc)
    desc = f"{op} of {fs.describe(X)} with {fs.describe(O)} (dim={dim!r}, to={target!r})"
    _trace(desc)
    try:
        got = run()
    except (TypeError, ValueError, IndexError) as exc:
        if invalid is None and not (op in numpy_ops and O is None and op in ("==", "!=")):
            raise Mismatch(f"{desc}: rejected valid operands: {type(exc).__name__}: {exc}") from exc
        _assert_unchanged(arrays, snap, what=desc)
        return
    except Exception as exc:
        raise Mismatch(f"{desc}: {type(exc).__name__} (expected TypeError/ValueError/IndexError "
                       f"or a result): {exc}") from exc
    if op in ("==", "!=") and not isinstance(got, mg.Tensor):
        assert isinstance(got, bool) and invalid is not None, f"{desc}: returned {got!r}"
        return  # t == junk is False, as for any object
    if invalid is not None:
        raise Mismatch(f"{desc}: accepted operands it should reject ({invalid})")
    assert isinstance(got, mg.Tensor) and not got.requires_grad, f"{desc}: returned {got!r}"
    want = np.asarray(want)
    assert got.dtype == want.dtype or (want.dtype.kind == "f" and got.dtype == np.float32), \
        f"{desc}: dtype {got.dtype}, NumPy {want.dtype}"
    assert got.shape == want.shape and np.array_equal(got.data, want, equal_nan=True), \
        f"{desc}: {got.data!r} != {want!r}"
    _assert_unchanged(arrays, snap, what=desc)
TORCH_UNARY = {"sin": (np.sin, lambda A: np.cos(A)), "cos": (np.cos, lambda A: -np.sin(A)),
               "log1p": (np.log1p, lambda A: 1 / (1 + A)), "expm1": (np.expm1, lambda A: np.expm1(A.astype(F32)).astype(np.float64) + 1),  # y + 1, as torch
               "square": (np.square, lambda A: 2 * A), "reciprocal": (np.reciprocal, lambda A: -1 / (A * A)),
               "rsqrt": (lambda A: 1 / np.sqrt(A),  # -y^3 / 2 with y the float32 result, as torch
                         lambda A: -0.5 * (1 / np.sqrt(A.astype(F32))).astype(np.float64) ** 3),
               "sign": (np.sign, np.zeros_like), "floor": (np.floor, np.zeros_like),
               "ceil": (np.ceil, np.zeros_like), "round": (np.rint, np.zeros_like)}
TORCH_OPS = list(TORCH_UNARY) + ["var", "std", "prod", "cumsum", "norm", "logsumexp", "flip", "expand",
                                 "repeat", "gather", "index_select", "masked_fill", "split", "chunk",
                                 "pow_tensor", "in_place"]
DIMS = (None, 0, 1, -1, 2, -3, 5, True, 1.5, "0", (0, 1), (0, 0))


def _reduce_axes(dim, ndim):
    """_normalize_axis's rule: None is every axis; ints (bools count as ints) in range."""
    if dim is None:
        return tuple(range(ndim))
    dims_ = (dim,) if isinstance(dim, (int, np.integer)) else dim
    if not isinstance(dims_, tuple):
        raise _Invalid("dim")
    for d in dims_:
        if not isinstance(d, (int, np.integer)) or not -ndim <= d < ndim:
            raise _Invalid("dim")
    return tuple(sorted({int(d) % ndim for d in dims_}))


def _one(dim, ndim):
    """_one_axis's rule: one int (not a bool) in [-max(ndim, 1), max(ndim, 1))."""
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)):
        raise _Invalid("dim")
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise _Invalid("dim")
    return int(dim) % max(ndim, 1)


def _expand_grad(G, shape_, axes):
    kept = tuple(1 if i in axes else n for i, n in enumerate(shape_))
    return np.broadcast_to(np.reshape(np.asarray(G, np.float64), kept), shape_)


def case_torch_ops(data):
    """The PyTorch-named ops (sin ... round, var ... logsumexp, gather, index_select,
    masked_fill, expand ... chunk, pow with a Tensor exponent, the in-place methods) with
    arbitrary dims, indices, masks, sizes and values."""
    op = pick(data, TORCH_OPS, "op")
    s = shape(data, "x", max_ndim=3, max_size=400)
    x = tensor_or_value(data, s, "x", p_bad=0.0, mag=30.0, huge=30.0)
    if not isinstance(x, mg.Tensor):
        x = mg.Tensor(as_f32(x), requires_grad=True)
    if op in ("std", "prod"):
        # forward only: their float32 gradients at degenerate inputs (equal values, products
        # overflowing to inf) differ from any float64 oracle; tests/test_tensor_more.py checks
        # them by finite differences and against PyTorch
        x = mg.Tensor(x.data)
    X = x.data
    X64 = X.astype(np.float64)
    dim = pick(data, DIMS, "dim")
    keep = boolean(data, "keepdim")
    f32 = np.float32
    operands, upstream_ok = [x], True

    if op in TORCH_UNARY:
        value, deriv = TORCH_UNARY[op]
        fn = lambda: getattr(mg, op)(x)  # noqa: E731

        def expect():
            y = value(X).astype(F32)
            return y, {0: lambda G: (G * deriv(X64)) if deriv is not np.zeros_like else np.zeros(X.shape)}
        tol = (2e-6, 1e-30)
    elif op in ("var", "std"):
        unbiased = pick(data, [None, True, False], "unbiased")
        fn = lambda: getattr(x, op)(dim, keepdim=keep, unbiased=unbiased)  # noqa: E731

        def expect():
            axes = _reduce_axes(dim, X.ndim)
            n = int(np.prod([X.shape[a] for a in axes]))
            if n == 0:
                raise _Invalid("nothing to reduce")
            dof = max(n - (0 if unbiased is False else 1), 0)
            c = X64 - X64.mean(axis=axes, keepdims=True)
            v = (c * c).sum(axis=axes, keepdims=True) / dof
            out = v if op == "var" else np.sqrt(v)
            g = 2 * c / dof if op == "var" else c / (dof * out)
            return (out if keep else np.squeeze(out, axes) if axes else out), \
                {0: lambda G: _expand_grad(G, X.shape, axes) * g}
        tol = (1e-4, 1e-4 * (_finite_max(X) ** 2 + 1))
    elif op in ("prod", "logsumexp"):
        fn = lambda: getattr(mg, op)(x, dim, keep)  # noqa: E731

        def expect():
            axes = _reduce_axes(dim, X.ndim)
            if op == "logsumexp":
                if int(np.prod([X.shape[a] for a in axes])) == 0:
                    raise _Invalid("nothing to reduce")
                m = np.max(X64, axis=axes, keepdims=True)
                m = np.where(np.isinf(m), 0, m)
                y = np.log(np.exp(X64 - m).sum(axis=axes, keepdims=True)) + m
                out = y if keep else y.reshape([n for i, n in enumerate(X.shape) if i not in axes])
                return out, {0: lambda G: _expand_grad(G, X.shape, axes) * np.exp(X64 - y)}
            with np.errstate(over="ignore"):  # beyond float32's range: inf, as float32 products
                y = np.prod(X64, axis=axes, keepdims=keep).astype(F32)
            others = np.ones(X.shape)
            for idx in np.ndindex(*X.shape):  # the product of the others, by brute force
                group = tuple(slice(None) if i in axes else k for i, k in enumerate(idx))
                mask = np.zeros(X.shape, bool)
                mask[group] = True
                mask[idx] = False
                others[idx] = np.prod(X64[mask])
            return y, {0: lambda G: _expand_grad(G, X.shape, axes) * others}
        # m + log(sum) cancels near 0: an absolute tolerance of a few ulp of the inputs
        tol = (1e-4, 8 * EPS32 * (_finite_max(X) + 1)) if op == "logsumexp" else (1e-4, 1e-30)
    elif op == "cumsum":
        fn = lambda: x.cumsum(dim)  # noqa: E731

        def expect():
            if dim is None:
                raise _Invalid("dim")
            d = _one(dim, X.ndim)
            if X.ndim == 0:
                return X.copy(), {0: lambda G: G}
            return np.cumsum(X, axis=d, dtype=F32), \
                {0: lambda G: np.flip(np.cumsum(np.flip(np.asarray(G, np.float64), d), axis=d), d)}
        tol = (1e-5, 4 * EPS32 * max(X.size, 1) * _finite_max(X) + 1e-30)
    elif op == "norm":
        p = pick(data, [2, 1, float("inf"), 3, 0.5, 0, -1, "fro", "nuc", None], "p")
        fn = lambda: x.norm(p, dim, keep)  # noqa: E731

        def expect():
            if p is None or (isinstance(p, str) and p != "fro"):
                raise _Invalid("p")
            q = 2 if p == "fro" else p
            if not q > 0:
                raise _Invalid("p")
            axes = _reduce_axes(dim, X.ndim)
            a = np.abs(X64)
            if q == np.inf and int(np.prod([X.shape[i] for i in axes])) == 0:
                raise _Invalid("nothing to reduce")
            n = a.max(axis=axes, keepdims=True) if q == np.inf else (a ** q).sum(axis=axes, keepdims=True) ** (1 / q)

            def grad(G):
                Gx = _expand_grad(G, X.shape, axes)
                if q == np.inf:  # a NaN element takes the gradient of a NaN norm (others 0)
                    mask = (a == n) | np.isnan(a)
                    return np.sign(X64) * Gx * mask / mask.sum(axis=axes, keepdims=True)
                if q == 1:
                    return np.sign(X64) * Gx
                return np.where(X64 == 0, 0, np.sign(X64) * a ** (q - 1)) * np.where(n == 0, 0, Gx / n ** (q - 1))
            return (n if keep else n.reshape([k for i, k in enumerate(X.shape) if i not in axes])), {0: grad}
        tol = (1e-4, 1e-30)
    elif op == "flip":
        fn = lambda: x.flip(dim) if not isinstance(dim, tuple) else x.flip(*dim)  # noqa: E731

        def expect():
            dims_ = dim if isinstance(dim, tuple) else (dim,)
            axes = tuple(_one(d, X.ndim) for d in dims_)
            if len(set(axes)) != len(axes):
                raise _Invalid("repeated dims")
            axes = axes if X.ndim else ()
            return np.flip(X, axes), {0: lambda G: np.flip(np.asarray(G), axes)}
        tol = (0, 0)
    elif op in ("expand", "repeat"):
        sizes = draw(data, st.lists(st.integers(-2, 3), max_size=4).map(tuple), "sizes")
        fn = lambda: getattr(x, op)(*sizes)  # noqa: E731

        def expect():
            lead = len(sizes) - X.ndim
            if lead < 0:
                raise _Invalid("too few sizes")
            if op == "repeat":
                if any(r < 0 for r in sizes):
                    raise _Invalid("negative repeat")
                padded = (1,) * lead + X.shape
                y = np.tile(X, sizes)

                def grad(G):
                    split_ = np.asarray(G, np.float64).reshape([k for pair in zip(sizes, padded) for k in pair])
                    return split_.sum(axis=tuple(range(0, 2 * len(sizes), 2))).reshape(X.shape)
                return y, {0: grad}
            shape_ = []
            for i, n in enumerate(sizes):
                have = X.shape[i - lead] if i >= lead else None
                n = have if n == -1 and have is not None else n
                if n < 0 or (have is not None and have not in (1, n)):
                    raise _Invalid("size")
                shape_.append(n)
            return np.broadcast_to(X, shape_), {0: lambda G: reduce_to(G, X.shape)}
        tol = (0, 0) if op == "expand" else (0, 0)
    elif op in ("gather", "index_select"):
        kind = pick(data, ["good", "any", "float", "bool", "holder", "list"], "index.kind")
        ishape = shape(data, "index", max_ndim=3, max_size=50) if boolean(data, "index.any_shape") else \
            (s if op == "gather" else (integer(data, 0, 5, "index.n"),))
        hi = max((X.shape[dim] if isinstance(dim, int) and not isinstance(dim, bool) and -X.ndim <= dim < X.ndim else 1), 1)
        index = np.asarray(draw(data, st.lists(st.integers(-2, hi + 1) if kind == "any" else st.integers(0, hi - 1),
                                               min_size=int(np.prod(ishape)), max_size=int(np.prod(ishape))),
                                "index.values"), np.int64).reshape(ishape)
        if kind == "float":
            index = index.astype(np.float64)
        elif kind == "bool":
            index = index > 0
        arg_ = {"holder": type("Holder", (), {"data": index})(), "list": index.tolist()}.get(kind, index)
        fn = lambda: getattr(mg, op)(x, dim, arg_)  # noqa: E731

        def expect():
            I = np.asarray(index.tolist() if kind == "list" else index)  # [] is float64
            if I.dtype.kind not in "iu":
                raise _Invalid("index dtype")
            if op == "gather" and I.ndim != X.ndim:
                raise _Invalid("index ndim")
            if op == "index_select" and I.ndim > 1:
                raise _Invalid("index ndim")
            d = _one(dim, X.ndim)
            size = X.shape[d] if X.ndim else 1
            if I.size and (I.min() < 0 or I.max() >= size):
                raise _Invalid("index range")
            Xs = X.reshape(1) if X.ndim == 0 else X
            if op == "index_select":
                y = np.take(Xs, I.reshape(-1), axis=d)

                def grad(G):
                    g = np.zeros(Xs.shape)
                    np.add.at(g, (slice(None),) * d + (I.reshape(-1),), np.asarray(G, np.float64).reshape(y.shape))
                    return g.reshape(X.shape)
                return y.reshape(I.shape) if X.ndim == 0 else y, {0: grad}
            if X.ndim and any(i > n for k, (i, n) in enumerate(zip(I.shape, X.shape)) if k != d):
                raise _Invalid("index larger than x")
            Is = I.reshape(1) if X.ndim == 0 else I
            sl = tuple(slice(None) if k == d else slice(0, n) for k, n in enumerate(Is.shape))
            y = np.take_along_axis(Xs[sl], Is, axis=d)

            def grad(G):
                g = np.zeros(Xs.shape)
                pos = list(np.indices(Is.shape, sparse=True))
                pos[d] = Is
                np.add.at(g[sl], tuple(pos), np.asarray(G, np.float64).reshape(Is.shape))
                return g.reshape(X.shape)
            return y.reshape(I.shape), {0: grad}
        tol = (0, 0)
    elif op == "masked_fill":
        mshape = broadcast_shape_like(data, s, "mask")
        mask = array(data, mshape, "mask", dtype=pick(data, [np.bool_, np.bool_, np.int64, F32], "mask.dtype"))
        value = pick(data, [0.0, -np.inf, 1e39, 3, True, "1", None, np.float32(2)], "value")
        fn = lambda: x.masked_fill(mask, value)  # noqa: E731

        def expect():
            if mask.dtype != np.bool_:
                raise _Invalid("mask dtype")
            try:
                if np.broadcast_shapes(X.shape, mask.shape) != X.shape:
                    raise _Invalid("mask shape")
            except ValueError:
                raise _Invalid("mask shape") from None
            if isinstance(value, (bool, str)) or value is None:
                raise _Invalid("value")
            with np.errstate(over="ignore"):
                v = f32(value)
            return np.where(mask, v, X), {0: lambda G: np.where(mask, 0, G)}
        tol = (0, 0)
    elif op in ("split", "chunk"):
        arg_ = pick(data, [1, 2, 3, 0, -1, [1, 1], [0, 2], 1.5, None], "size")
        d0 = pick(data, [0, 1, -1, 3], "split.dim")
        pieces = []

        def fn():
            parts = getattr(x, op)(arg_, d0)
            assert isinstance(parts, tuple) and all(isinstance(q, mg.Tensor) for q in parts)
            pieces.extend(parts)
            return mg.cat(list(parts), dim=d0) if parts else None

        def expect():
            if X.ndim == 0:
                raise _Invalid("0-d")
            d = _one(d0, X.ndim)
            n = X.shape[d]
            if isinstance(arg_, bool) or arg_ is None or isinstance(arg_, float):
                raise _Invalid("size")
            if op == "chunk":
                if isinstance(arg_, list) or arg_ <= 0:
                    raise _Invalid("chunks")
            elif isinstance(arg_, list):
                if any(k < 0 for k in arg_) or sum(arg_) != n:
                    raise _Invalid("sections")
            elif arg_ < 0 or (arg_ == 0 and n != 0):
                raise _Invalid("size")
            return X.copy(), {0: lambda G: G}
        tol = (0, 0)
    elif op == "pow_tensor":
        b = tensor_or_value(data, broadcast_shape_like(data, s, "b"), "b", mag=3.0, huge=3.0)
        reverse = boolean(data, "reverse")
        if reverse and not isinstance(b, mg.Tensor):
            b = 2.0  # 2.0 ** x
        fn = (lambda: b ** x) if reverse else (lambda: x ** b)  # noqa: E731
        operands = [x, b]
        B = as_f32(b)

        def expect():
            _need(B, "b")
            if not reverse and not isinstance(b, mg.Tensor):
                if isinstance(b, (bool, np.bool_)) or not isinstance(b, numbers.Real):
                    raise _Invalid("constant exponent must be a real number")
            try:
                np.broadcast_shapes(X.shape, B.shape)
            except ValueError:
                raise _Invalid("shapes") from None
            base, ex = (B, X) if reverse else (X, B)
            y = np.power(base, ex)
            if not reverse and not isinstance(b, mg.Tensor):  # a constant exponent: Pow, unmasked
                return y, {0: lambda G: G * ex * np.power(base, ex - f32(1))}
            gbase = lambda G: np.where(ex == 0, 0, G * (ex * np.power(base, ex - f32(1))))  # noqa: E731
            gex = lambda G: G * np.where((base == 0) & (ex >= 0), 0, y * np.log(base))  # noqa: E731
            gx, gb = (gex, gbase) if reverse else (gbase, gex)

            def summed(terms, shape_):  # the gradient, and the magnitudes it adds up
                return reduce_to(terms, shape_), reduce_to(np.abs(terms), shape_)
            return y, {0: lambda G: summed(gx(G), X.shape), 1: lambda G: summed(gb(G), B.shape)}
        tol = (2e-6, 1e-30)
    else:  # in_place
        method = pick(data, ["zero_", "fill_", "copy_", "add_", "sub_", "mul_", "div_", "clamp_"], "method")
        other = tensor_or_value(data, broadcast_shape_like(data, s, "o"), "o", mag=30.0, huge=30.0)
        target = mg.Tensor(X.copy(), requires_grad=boolean(data, "target.grad"))
        alpha = pick(data, [1, 2.0, -0.5, "2", None], "alpha")
        version = target._version

        def call():
            if method == "zero_":
                return target.zero_()
            if method == "fill_":
                return target.fill_(other if not isinstance(other, mg.Tensor) else 1.5)
            if method in ("add_", "sub_"):
                return getattr(target, method)(other, alpha=alpha)
            if method == "clamp_":
                return target.clamp_(other if np.isscalar(other) else -1.0, None if alpha is None else 2.0)
            return getattr(target, method)(other)
        _trace(f"{method}: {fs.describe(X)} {fs.describe(other)} alpha={alpha!r}")
        try:
            with np.errstate(all="ignore"):
                out = call()
        except (TypeError, ValueError, RuntimeError, OverflowError):
            assert target._version == version, f"{method}: a refused call bumped the version"
            np.testing.assert_array_equal(target.data, X, err_msg=f"{method}: a refused call wrote")
            return
        assert out is target and target._version == version + 1, f"{method}: returned/versioned wrongly"
        assert not target.requires_grad, f"{method}: changed a leaf that requires grad with grad mode on"
        assert target.dtype == F32 and target.shape == X.shape
        return

    try:
        with np.errstate(all="ignore"):
            out_shape = np.shape(expect()[0])
    except _Invalid:
        out_shape = None
    upstream = upstream_grad(data, out_shape) if upstream_ok else None
    if op == "var" and isinstance(upstream, np.ndarray) and upstream.dtype.kind == "f":
        # an infinite upstream times x - mean is inf or NaN depending on whether float32
        # (or float64) rounds x - mean to 0: both are right, neither is comparable
        upstream = np.nan_to_num(upstream, nan=np.nan, posinf=1e6, neginf=-1e6)
    check_op_call(f"{op}(dim={dim!r}, keepdim={keep}) of {fs.describe(X)}", fn, operands, expect,
                  upstream=upstream, tol=tol, grad_tol=lambda G: (1e-4, 1e-5 * (_finite_max(G) + 1)),
                  nan_for_inf=True)


C_OPS = ["matmul", "@", "r@", "dense", "relu", "softmax", "softmax_cross_entropy"]


def case_c_ops(data):
    op = pick(data, C_OPS, "op")
    n, k, m = dims(data, "n"), dims(data, "k"), dims(data, "m")
    vk = dict(mag=30.0, huge=1e3)
    if op in ("matmul", "@", "r@"):
        a = tensor_or_value(data, (n, k), "a", **vk)
        b = tensor_or_value(data, (k, m), "b", **vk)
        # "@": Tensor @ anything; "r@": anything @ Tensor (Tensor.__rmatmul__)
        if op == "@" and not isinstance(a, mg.Tensor):
            a = mg.Tensor(as_f32(a) if as_f32(a) is not None else np.zeros((n, k), F32), requires_grad=True)
        if op == "r@" and not isinstance(b, mg.Tensor):
            b = mg.Tensor(as_f32(b) if as_f32(b) is not None else np.zeros((k, m), F32), requires_grad=True)
        fn = (lambda: mg.matmul(a, b)) if op == "matmul" else (lambda: a @ b)
        operands = [a, b]

        def expect():
            A, B = _need(as_f32(a), "a"), _need(as_f32(b), "b")
            if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
                raise _Invalid("shapes")
            A, B = _daz(A), _daz(B)
            value = reference.gemm(A, B)
            return value, {0: lambda G: G.astype(np.float64) @ B.T.astype(np.float64),
                           1: lambda G: A.T.astype(np.float64) @ G.astype(np.float64)}
        tol = (1e-4, 16 * EPS32 * math.sqrt(max(k, 1)) * _finite_max(as_f32(a)) * _finite_max(as_f32(b))
               + 1e-30) if as_f32(a) is not None and as_f32(b) is not None else (1e-5, 1e-30)
    elif op == "dense":
        x = tensor_or_value(data, (n, k), "x", **vk)
        w = tensor_or_value(data, (k, m), "w", **vk)
        b = None if boolean(data, "no_bias") else tensor_or_value(data, (m,), "b", **vk)
        activation = pick(data, [None, "relu", "linear", "tanh", 1, ""], "activation")
        fn = lambda: mg.dense(x, w, b, activation)  # noqa: E731
        operands = [x, w, b]

        def expect():
            if activation not in (None, "relu", "linear"):
                raise _Invalid("activation")
            X, W = _need(as_f32(x), "x"), _need(as_f32(w), "w")
            B = None if b is None else _need(as_f32(b), "b")
            if X.ndim != 2 or W.ndim != 2 or X.shape[1] != W.shape[0] or (
                    B is not None and B.shape != (W.shape[1],)):
                raise _Invalid("shapes")
            X, W, B = _daz(X), _daz(W), _daz(B)
            y = reference.gemm(X, W, bias=B, relu=activation == "relu")

            def dz(G):
                return np.where(y > 0, G, 0).astype(np.float64) if activation == "relu" else G.astype(np.float64)
            return y, {0: lambda G: dz(G) @ W.T.astype(np.float64),
                       1: lambda G: X.T.astype(np.float64) @ dz(G),
                       2: lambda G: dz(G).sum(axis=0)}
        xs = [as_f32(v) for v in (x, w)]
        tol = ((1e-4, 16 * EPS32 * math.sqrt(max(k, 1)) * _finite_max(xs[0]) * _finite_max(xs[1])
                + 4 * EPS32 * _finite_max(as_f32(b) if b is not None else None) + 1e-30)
               if all(v is not None for v in xs) else (1e-5, 1e-30))
    elif op in ("relu", "softmax"):
        s = shape(data, "x", max_ndim=4, max_size=5000)
        x = tensor_or_value(data, s, "x", subnormal=op == "relu", **vk)
        fn = (lambda: mg.relu(x)) if op == "relu" else (lambda: mg.softmax(x))
        operands = [x]

        def expect():
            X = _need(as_f32(x), "x")
            if op == "relu":
                y = reference.relu_forward(X)
                return y, {0: lambda G: np.where(y > 0, G, 0)}
            if X.ndim and X.shape[-1] == 0:  # numpy's max has nothing to reduce
                raise _Invalid("softmax over an empty last axis")
            Z = X.astype(np.float64)
            Z = Z - Z.max(axis=-1, keepdims=True) if Z.size else Z
            E = np.exp(Z)
            y = (E / E.sum(axis=-1, keepdims=True) if Z.size else Z).astype(F32)  # what the op saves
            y64 = y.astype(np.float64)
            return y, {0: lambda G: y64 * (G - (G * y64).sum(axis=-1, keepdims=True))}
        tol = (1e-5, 1e-6) if op == "softmax" else (0, 0)
    else:  # softmax_cross_entropy
        logits = tensor_or_value(data, (n, m), "logits", **vk)
        dense = boolean(data, "dense")
        target = (tensor_or_value(data, (n, m), "target", p_bad=0.1, **vk) if dense
                  else labels(data, n, m, "labels"))
        if isinstance(target, mg.Tensor) and boolean(data, "raw_target"):
            target = target.data
        fn = lambda: mg.softmax_cross_entropy(logits, target)  # noqa: E731
        operands = [logits, target]

        def expect():
            Z = _need(as_f32(logits), "logits")
            T = target.data if isinstance(target, mg.Tensor) else np.asarray(target)
            if Z.ndim != 2 or Z.shape[1] == 0:
                raise _Invalid("logits")
            if T.ndim == 1:
                if T.dtype.kind not in "iu" or T.shape != (Z.shape[0],) or (
                        T.size and (int(T.min()) < 0 or int(T.max()) >= Z.shape[1])):
                    raise _Invalid("labels")
            elif T.ndim == 2 and T.shape == Z.shape and T.dtype.kind in "biuf":
                with np.errstate(all="ignore"):
                    T = _daz(T.astype(F32))
            else:
                raise _Invalid("target")
            loss, probs, _ = reference.softmax_xent_forward(_daz(Z), T)
            rows = Z.shape[0]
            return np.float32(loss), {0: lambda G: reference.softmax_xent_backward(
                probs, T, float(G) / rows if rows else 0.0).astype(np.float64)}
        tol = (1e-5, 1e-3 * (_finite_max(as_f32(logits)) + 1) if as_f32(logits) is not None else 1e-5)

    try:
        with np.errstate(all="ignore"):
            out_shape = np.shape(expect()[0])
    except _Invalid:
        out_shape = None
    upstream = upstream_grad(data, out_shape)
    ops_ = [o for o in operands if o is not None]  # only dense's bias can be None, and it is last

    def grad_tol(G):
        mags = [_finite_max(as_f32(o)) if as_f32(o) is not None else 0 for o in ops_]
        return 1e-4, 32 * EPS32 * (max(mags + [1.0]) ** 2) * _finite_max(G) * (n + k + m + 1) + 1e-30
    check_op_call(f"{op}: " + ", ".join(fs.describe(o.data if isinstance(o, mg.Tensor) else o) for o in ops_),
                  fn, ops_, expect, upstream=upstream, tol=tol, grad_tol=grad_tol,
                  no_grad=(1,) if op == "softmax_cross_entropy" else (),
                  nan_for_inf=op == "softmax_cross_entropy" and _has_inf(operands[1]))


# ================================================================ running the families

@pytest.mark.parametrize("family", fz.child_families('test_fuzz_ops'))
def test_fuzz_in_child_process(family, fuzz_children):
    """One family of C-calling wrappers, fuzzed in a child interpreter."""
    fz.check_child(family, fuzz_children)


@pytest.mark.parametrize("family", fz.in_process_families("test_fuzz_ops"))
def test_fuzz_in_process(family):
    """Ops that only use NumPy: fuzzed in this process."""
    fz.check_in_process(family, globals()[f"case_{family}"])


# ================================================================ bugs found by the fuzzing (fixed)

def test_fixed_transpose_of_0d_tensor():
    x = mg.Tensor(2.0, requires_grad=True)
    y = x.T
    assert y.shape == np.array(2.0).T.shape == ()
    y.backward()
    assert x.grad.shape == ()


# Fixed (found by this suite): gather_rows copied a strided or broadcast src whole
# (np.take), refusing a 1 PiB broadcast view with NumPy's unnamed MemoryError; it
# now indexes only the rows asked for.
