"""Differentiable 2-D convolution and max pooling (NHWC, Keras semantics), in the C kernels.

Every array these ops return comes from a kernel (or ``kernels.tape``), or is a
view of one, so a captured step replays them.

>>> import numpy as np
>>> import minigrad as mg
>>> from minigrad.ops import conv2d, max_pool2d
>>> x = mg.Tensor(np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1))
>>> w = mg.Tensor(np.ones((2, 2, 1, 1), np.float32), requires_grad=True)
>>> y = max_pool2d(conv2d(x, w, activation="relu"))
>>> y.numpy()[0, :, :, 0].tolist()
[[30.0]]
>>> y.sum().backward(); w.grad[:, :, 0, 0].tolist()
[[5.0, 6.0], [9.0, 10.0]]
"""
from .. import kernels
from ..function import Function
from ..kernels import tape
from . import _tensor


def _rows(array, cols):
    """array as a (rows, cols) matrix: a view, after a (recorded) copy if it is strided."""
    if not array.flags.c_contiguous:
        array = tape.copy(array)
    return array.reshape(-1, cols)


class Conv2D(Function):
    """y = activation(conv(x, w) + b): unfold + one GEMM with a bias (+ relu) epilogue,
    a few images at a time (the unfolded x is never stored).

    Backward masks the gradient by relu' and sums it for the bias, then
    dW = unfold(x).T @ dz (x unfolded again) and, only when x needs a gradient
    (not for input images), dx = fold(dz @ W.T); with relu and a kernel to train,
    all of it is one pass over blocks of images that never writes dz out.
    x is kept for backward as it is: like PyTorch, changing it in place before
    backward changes the weight gradient.
    """
    name = "conv2d"

    @staticmethod
    def forward(ctx, x, w, b, strides=(1, 1), padding="valid", relu=False):
        y = kernels.conv2d_forward(x, w, b, strides, padding, relu)
        ctx.x_shape, ctx.strides, ctx.padding, ctx.relu = x.shape, strides, padding, relu
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, w, y)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, w, y = ctx.saved
        need_x, need_w, need_b = ctx.needs_input_grad
        cout = w.shape[3]
        geometry = (ctx.strides, ctx.padding)
        if ctx.relu and need_w:
            # one pass over blocks of images, the masked gradient never written out
            if need_x:
                dx, dw, db = kernels.conv2d_relu_backward(x, y, grad, w, *geometry)
                return dx, dw, (db if need_b else None)
            dw, db = kernels.conv2d_relu_backward_params(x, y, grad, w.shape, *geometry)  # a first layer
            return None, dw, (db if need_b else None)
        if ctx.relu:
            dz, db = kernels.relu_backward_bias_grad(_rows(y, cout), _rows(grad, cout))
            dz = dz.reshape(y.shape)
        else:
            dz = grad
            db = kernels.bias_grad(_rows(grad, cout)) if need_b else None
        dw = kernels.conv2d_backward_weight(x, dz, w.shape, *geometry) if need_w else None
        dx = (kernels.conv2d_backward_input(dz, w, ctx.x_shape, ctx.strides, ctx.padding)
              if need_x else None)
        return dx, dw, (db if need_b else None)


class MaxPool2D(Function):
    """Max over each pool window; the gradient goes to the first maximum (row-major)."""
    name = "max_pool2d"

    @staticmethod
    def forward(ctx, x, pool_size=(2, 2), strides=None, padding="valid"):
        y, argmax = kernels.max_pool2d_forward(x, pool_size, strides, padding)
        ctx.x_shape, ctx.geometry = x.shape, (pool_size, strides, padding)
        ctx.save_for_backward(argmax)
        return y

    @staticmethod
    def backward(ctx, grad):
        (argmax,) = ctx.saved
        return kernels.max_pool2d_backward(grad, argmax, ctx.x_shape, *ctx.geometry)


# ---------------------------------------------------------------- functional entry points

def conv2d(x, w, b=None, strides=(1, 1), padding="valid", activation=None):
    """activation(conv(x, w) + b) for x (N, H, W, cin), w (kh, kw, cin, cout), b (cout,).

    strides: an int or (sh, sw); padding: 'valid' or 'same' (TensorFlow's);
    activation: None, 'linear' or 'relu' (fused into the GEMM).
    """
    if activation not in (None, "linear", "relu"):
        raise ValueError(f"conv2d: expected activation None, 'linear' or 'relu', received {activation!r}")
    b = None if b is None else _tensor(b, "conv2d")
    return Conv2D.apply(_tensor(x, "conv2d"), _tensor(w, "conv2d"), b, strides=strides,
                        padding=padding, relu=activation == "relu")


def max_pool2d(x, pool_size=(2, 2), strides=None, padding="valid"):
    """Max pooling of x (N, H, W, C); strides default to pool_size (Keras)."""
    return MaxPool2D.apply(_tensor(x, "max_pool2d"), pool_size=pool_size, strides=strides,
                           padding=padding)


__all__ = ["Conv2D", "MaxPool2D", "conv2d", "max_pool2d"]
