"""Convolution and max-pooling kernels (NHWC, Keras layout and semantics).

Images are float32 arrays (N, H, W, C); a convolution kernel is (kh, kw, cin, cout).
``padding`` is 'valid' (none) or 'same' (TensorFlow's rule: the output has
ceil(n / s) positions along each axis, total padding max((out - 1) * s + k - n, 0),
of which total // 2 goes before and the rest after).

A convolution is an unfold (im2col: one row per output pixel (b, oy, ox), one
column per kernel tap (ky, kx, ci)) plus one GEMM, done a few images at a time in
C scratch buffers: the unfolded input is never kept, and the weight gradient
unfolds x again (so it takes x, not a saved unfolding).

>>> import numpy as np
>>> from minigrad import kernels
>>> x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
>>> y = kernels.conv2d_forward(x, np.ones((2, 2, 1, 1), np.float32), strides=2)
>>> y[0, :, :, 0].tolist()
[[10.0, 18.0], [42.0, 50.0]]
>>> p, argmax = kernels.max_pool2d_forward(x, 2)
>>> p[0, :, :, 0].tolist(), argmax.ravel().tolist()
([[5.0, 7.0], [13.0, 15.0]], [5, 7, 13, 15])
"""

import numpy as np

from . import I64, _describe, _flag, _input, _output, _ptr, _run, ffi, lib, plain_array, tape

__all__ = ["conv_output_size", "conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight",
           "conv2d_relu_backward_params", "conv2d_relu_backward", "max_pool2d_forward",
           "max_pool2d_backward"]

_NULL = ffi.NULL


def _pair(op, name, value):
    """An int or a pair of ints, each >= 1, as a tuple (a, b)."""
    items = (value, value) if isinstance(value, (int, np.integer)) else value
    try:
        items = tuple(items)
    except TypeError:
        items = None
    if (items is None or len(items) != 2
            or any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1
                   for v in items)):
        raise ValueError(f"{op}: expected {name} to be a positive integer or a pair of them, "
                         f"received {value!r}")
    return int(items[0]), int(items[1])


def _padding(op, padding):
    if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
        raise ValueError(f"{op}: expected padding 'valid' or 'same', received {padding!r}")
    return padding.lower()


def conv_output_size(n, k, s, padding):
    """(output size, padding before) along one axis of length n, for a kernel
    (or pool window) k and stride s; output size 0 when a 'valid' window does not fit.

    >>> conv_output_size(28, 3, 1, 'valid'), conv_output_size(5, 2, 2, 'same')
    ((26, 0), (3, 0))
    """
    if padding == "valid":
        return (max((n - k) // s + 1, 0), 0)
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return out, total // 2


def _geometry(op, h, w, kh, kw, strides, padding, what):
    """(oh, ow, pad_top, pad_left); a ValueError when a 'valid' window does not fit."""
    sh, sw = strides
    oh, pt = conv_output_size(h, kh, sh, padding)
    ow, pl = conv_output_size(w, kw, sw, padding)
    if h == 0 or w == 0 or oh == 0 or ow == 0:
        raise ValueError(f"{op}: expected an input of at least {kh}x{kw} pixels for a {kh}x{kw} "
                         f"{what} with padding '{padding}', received {h}x{w}")
    return oh, ow, pt, pl


def _shape4(op, name, shape):
    """A 4-tuple of non-negative ints (an image batch shape given as an argument)."""
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if (dims is None or len(dims) != 4
            or any(isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or d < 0
                   for d in dims)):
        raise ValueError(f"{op}: expected {name} to be a shape (N, H, W, C) of non-negative "
                         f"integers, received {shape!r}")
    return tuple(int(d) for d in dims)


def _kernel_shape(op, w_shape):
    """A kernel shape (kh, kw, cin, cout) of positive integers, as a tuple."""
    try:
        entries = tuple(w_shape)
    except TypeError:
        entries = ()
    # integers only: int() would also take "2", b"2" or np.float32(2.5) (truncating it)
    bad = (len(entries) != 4 or any(isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer))
                                    for d in entries))
    shape = () if bad else tuple(int(d) for d in entries)
    bad = bad or min(shape) < 1
    if bad:
        raise ValueError(f"{op}: expected w_shape to be (kh, kw, cin, cout) of positive integers, "
                         f"received {w_shape!r}")
    return shape


def _kernel(op, w):
    w = _input(op, "w", w, 4)
    if 0 in w.shape:
        raise ValueError(f"{op}: expected a kernel (kh, kw, cin, cout) with no zero dimension, "
                         f"received {w.shape}")
    return w


# ---------------------------------------------------------------- convolution

def _conv_input(op, x, w):
    """x and w validated: x (N, H, W, cin) for a kernel w (kh, kw, cin, cout)."""
    x = _input(op, "x", x, 4)
    w = _kernel(op, w)
    if x.shape[3] != w.shape[2]:
        raise ValueError(f"{op}: expected x of shape (N, H, W, {w.shape[2]}) for a kernel of shape "
                         f"{w.shape}, received {x.shape}")
    return x, w


def conv2d_forward(x, w, b=None, strides=(1, 1), padding="valid", relu=False, out=None):
    """y = conv(x, w) + b [relu], shape (N, OH, OW, cout), for x (N, H, W, cin),
    w (kh, kw, cin, cout) and b (cout,) or None."""
    op = "conv2d_forward"
    relu = _flag(op, "relu", relu)
    strides, padding = _pair(op, "strides", strides), _padding(op, padding)
    given = (("x", x), ("w", w), ("b", b))
    x, w = _conv_input(op, x, w)
    kh, kw, cin, cout = w.shape
    n, h, wd, c = x.shape
    if b is not None:
        b = _input(op, "b", b, 1)
        if b.shape != (cout,):
            raise ValueError(f"{op}: expected b of shape ({cout},), received {b.shape}")
    oh, ow, pt, pl = _geometry(op, h, wd, kh, kw, strides, padding, "kernel")
    out = _output(op, "out", out, (n, oh, ow, cout), given + (("x", x), ("w", w), ("b", b)))
    _run(op, lib.mg_conv2d_forward,
         (_ptr(x), _ptr(w), _ptr(b) if b is not None else _NULL, _ptr(out), cout, relu,
          n, h, wd, c, kh, kw, strides[0], strides[1], pt, pl, oh, ow),
         (out,))
    return out


def conv2d_backward_input(dy, w, x_shape, strides=(1, 1), padding="valid", out=None):
    """dx (x_shape): the gradient of conv2d_forward's output w.r.t. x, given dy = dL/dy
    (a relu's mask already applied). Each element of dx is summed in a fixed order
    (a gather over the kernel taps that read it), whatever the number of threads."""
    op = "conv2d_backward_input"
    strides, padding = _pair(op, "strides", strides), _padding(op, padding)
    n, h, wd, c = _shape4(op, "x_shape", x_shape)
    given = (("dy", dy), ("w", w))
    dy = _input(op, "dy", dy, 4)
    w = _kernel(op, w)
    kh, kw, cin, cout = w.shape
    if c != cin:
        raise ValueError(f"{op}: expected x_shape (N, H, W, {cin}) for a kernel of shape "
                         f"{w.shape}, received {tuple(x_shape)}")
    oh, ow, pt, pl = _geometry(op, h, wd, kh, kw, strides, padding, "kernel")
    if dy.shape != (n, oh, ow, cout):
        raise ValueError(f"{op}: expected dy of shape {(n, oh, ow, cout)}, received {dy.shape}")
    inputs = given + (("dy", dy), ("w", w))
    out = _output(op, "out", out, (n, h, wd, c), inputs)
    _run(op, lib.mg_conv2d_backward_input,
         (_ptr(dy), _ptr(w), _ptr(out), cout, n, h, wd, c, kh, kw, strides[0], strides[1], pt, pl, oh, ow),
         (out,))
    return out


def _weight_grad_args(op, x, dy, w_shape, strides, padding):
    """Validated (x, dy, kernel shape, geometry args) of a weight gradient."""
    strides, padding = _pair(op, "strides", strides), _padding(op, padding)
    kh, kw, cin, cout = _kernel_shape(op, w_shape)
    x = _input(op, "x", x, 4)
    dy = _input(op, "dy", dy, 4)
    n, h, wd, c = x.shape
    if c != cin:
        raise ValueError(f"{op}: expected x of shape (N, H, W, {cin}) for a kernel of shape "
                         f"{(kh, kw, cin, cout)}, received {x.shape}")
    oh, ow, pt, pl = _geometry(op, h, wd, kh, kw, strides, padding, "kernel")
    if dy.shape != (n, oh, ow, cout):
        raise ValueError(f"{op}: expected dy of shape {(n, oh, ow, cout)}, received {dy.shape}")
    return x, dy, (kh, kw, cin, cout), (n, h, wd, c, kh, kw, strides[0], strides[1], pt, pl, oh, ow)


def conv2d_backward_weight(x, dy, w_shape, strides=(1, 1), padding="valid", out=None):
    """dw (w_shape = (kh, kw, cin, cout)): the gradient of conv2d_forward's output
    w.r.t. the kernel, given the layer's input x and dy = dL/dy (a relu's mask
    already applied). Blocks of images give partial products added in a fixed order."""
    op = "conv2d_backward_weight"
    given = (("x", x), ("dy", dy))
    x, dy, shape, geometry = _weight_grad_args(op, x, dy, w_shape, strides, padding)
    out = _output(op, "out", out, shape, given + (("x", x), ("dy", dy)))
    _run(op, lib.mg_conv2d_backward_weight, (_ptr(x), _ptr(dy), _ptr(out), shape[3]) + geometry, (out,))
    return out


def conv2d_relu_backward_params(x, y, dy, w_shape, strides=(1, 1), padding="valid", out=None, db_out=None):
    """(dw, db) of a relu convolution whose input needs no gradient (a first layer):
    with dz = dy where y > 0 else 0 (y the forward output), dw = conv2d_backward_weight
    of dz and db = the column sums of dz, in one pass that never writes dz out."""
    op = "conv2d_relu_backward_params"
    given = (("x", x), ("y", y), ("dy", dy))
    x, dy, shape, geometry = _weight_grad_args(op, x, dy, w_shape, strides, padding)
    y = _input(op, "y", y, 4)
    if y.shape != dy.shape:
        raise ValueError(f"{op}: expected y of shape {dy.shape} (like dy), received {y.shape}")
    inputs = given + (("x", x), ("y", y), ("dy", dy))
    out = _output(op, "out", out, shape, inputs)
    db_out = _output(op, "db_out", db_out, (shape[3],), inputs + (("out", out),))
    _run(op, lib.mg_conv2d_relu_backward_params,
         (_ptr(x), _ptr(y), _ptr(dy), _ptr(out), _ptr(db_out), shape[3]) + geometry, (out, db_out))
    return out, db_out


def conv2d_relu_backward(x, y, dy, w, strides=(1, 1), padding="valid", out=None, dw_out=None, db_out=None):
    """(dx, dw, db): the whole backward of a relu convolution y = relu(conv(x, w) + b)
    given dy = dL/dy: conv2d_backward_input and conv2d_relu_backward_params in one
    pass over blocks of images, the masked gradient never written out."""
    op = "conv2d_relu_backward"
    given = (("x", x), ("y", y), ("dy", dy), ("w", w))
    w = _kernel(op, w)
    x, dy, shape, geometry = _weight_grad_args(op, x, dy, w.shape, strides, padding)
    y = _input(op, "y", y, 4)
    if y.shape != dy.shape:
        raise ValueError(f"{op}: expected y of shape {dy.shape} (like dy), received {y.shape}")
    inputs = given + (("x", x), ("y", y), ("dy", dy), ("w", w))
    out = _output(op, "out", out, x.shape, inputs)
    dw_out = _output(op, "dw_out", dw_out, shape, inputs + (("out", out),))
    db_out = _output(op, "db_out", db_out, (shape[3],), inputs + (("out", out), ("dw_out", dw_out)))
    _run(op, lib.mg_conv2d_relu_backward,
         (_ptr(x), _ptr(y), _ptr(dy), _ptr(w), _ptr(out), _ptr(dw_out), _ptr(db_out), shape[3]) + geometry,
         (out, dw_out, db_out))
    return out, dw_out, db_out


# ---------------------------------------------------------------- max pooling

def _pool_args(op, pool_size, strides, padding):
    pool = _pair(op, "pool_size", pool_size)
    strides = pool if strides is None else _pair(op, "strides", strides)
    return pool, strides, _padding(op, padding)


def max_pool2d_forward(x, pool_size=(2, 2), strides=None, padding="valid", out=None, argmax_out=None):
    """(y, argmax): the maximum of each pool window of x (N, H, W, C), and the flat
    index into x (int64) of the first maximum in row-major window order.

    strides default to pool_size. Padding never wins. NaN propagates: the first
    NaN of a window is its maximum and its argmax.
    """
    op = "max_pool2d_forward"
    (ph, pw), strides, padding = _pool_args(op, pool_size, strides, padding)
    given = (("x", x),)
    x = _input(op, "x", x, 4)
    n, h, wd, c = x.shape
    oh, ow, pt, pl = _geometry(op, h, wd, ph, pw, strides, padding, "pool window")
    inputs = given + (("x", x),)
    out = _output(op, "out", out, (n, oh, ow, c), inputs)
    argmax_out = _output(op, "argmax_out", argmax_out, (n, oh, ow, c), inputs + (("out", out),),
                         dtype=I64)
    _run(op, lib.mg_max_pool2d_forward,
         (_ptr(x), _ptr(out), ffi.from_buffer("int64_t[]", argmax_out),
          n, h, wd, c, ph, pw, strides[0], strides[1], pt, pl, oh, ow),
         (out, argmax_out))
    return out, argmax_out


def max_pool2d_backward(dy, argmax, x_shape, pool_size=(2, 2), strides=None, padding="valid", out=None):
    """dx (x_shape): each element of x gets the sum of dy over the windows whose argmax
    it is, windows in row-major order (the pool geometry must be the forward's). An
    argmax entry that names no element of its own window adds nothing."""
    op = "max_pool2d_backward"
    (ph, pw), strides, padding = _pool_args(op, pool_size, strides, padding)
    n, h, wd, c = _shape4(op, "x_shape", x_shape)
    given = (("dy", dy), ("argmax", argmax))
    dy = _input(op, "dy", dy, 4)
    oh, ow, pt, pl = _geometry(op, h, wd, ph, pw, strides, padding, "pool window")
    if dy.shape != (n, oh, ow, c):
        raise ValueError(f"{op}: expected dy of shape {(n, oh, ow, c)}, received {dy.shape}")
    argmax = plain_array(op, "argmax", argmax)
    if not isinstance(argmax, np.ndarray) or argmax.dtype != I64:
        raise TypeError(f"{op}: expected argmax to be an int64 array (from max_pool2d_forward), "
                        f"received {_describe(argmax)}")
    if argmax.shape != dy.shape:
        raise ValueError(f"{op}: expected argmax of shape {dy.shape} (like dy), received {argmax.shape}")
    if not (argmax.flags.c_contiguous and argmax.flags.aligned):
        argmax = tape.copy(argmax, I64)
    out = _output(op, "out", out, (n, h, wd, c), given + (("dy", dy), ("argmax", argmax)))
    _run(op, lib.mg_max_pool2d_backward,
         (_ptr(dy), ffi.from_buffer("int64_t[]", argmax), _ptr(out),
          n, h, wd, c, ph, pw, strides[0], strides[1], pt, pl, oh, ow),
         (out,))
    return out
