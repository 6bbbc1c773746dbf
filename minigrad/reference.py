"""NumPy twins of the C kernels in ``minigrad.kernels``: same names, same signatures,
same semantics. Tests compare each kernel against its twin; the twins are also
readable documentation of what each kernel computes.

>>> import numpy as np
>>> from minigrad import reference
>>> reference.relu_forward(np.array([-1.0, 0.0, 2.0], np.float32))
array([0., 0., 2.], dtype=float32)
"""
import math

import numpy as np

F32 = np.float32


def _out(out, value):
    if out is None:
        return np.array(value, dtype=F32, order="C")  # keeps 0-d shapes (ascontiguousarray would not)
    out[...] = value
    return out


def set_num_threads(n):
    """The NumPy twins are single-threaded; accepted for signature parity."""


def get_num_threads():
    return 1


def gemm(a, b, out=None, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0,
         bias=None, relu=False):
    opa = a.T if trans_a else a
    opb = b.T if trans_b else b
    if alpha == 0.0 or opa.shape[1] == 0:  # BLAS convention: a and b (and alpha) are not used
        result = np.zeros((opa.shape[0], opb.shape[1]))
    else:
        result = alpha * (opa.astype(np.float64) @ opb.astype(np.float64))
    if beta != 0.0:
        result = result + beta * out.astype(np.float64)
    if bias is not None:
        result = result + bias
    result = result.astype(F32)
    if relu:
        result = np.where(result < 0, F32(0), result)
    return _out(out, result)


def add_bias(x, b, out=None):
    return _out(out, x + b)


def bias_grad(dy, out=None):
    return _out(out, dy.sum(axis=0, dtype=np.float64))


def relu_forward(x, out=None):
    return _out(out, np.where(x < 0, F32(0), x))


def relu_backward(y, dy, out=None):
    return _out(out, np.where(y > 0, dy, F32(0)))


def relu_backward_bias_grad(y, dy, out=None, db_out=None):
    dx = relu_backward(y, dy, out)
    return dx, bias_grad(dx, db_out)


def _log_softmax(logits):
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _dense_target(target, shape):
    if target.ndim == 1:
        dense = np.zeros(shape, dtype=np.float64)
        dense[np.arange(shape[0]), target] = 1.0
        return dense
    return target.astype(np.float64)


def softmax_xent_forward(logits, target, probs_out=None, row_loss_out=None, loss_out=None):
    log_p = _log_softmax(logits)
    t = _dense_target(target, logits.shape)
    # a zero target never multiplies a log (0 * -inf would be NaN)
    row_loss = -np.where(t != 0, t * log_p, 0.0).sum(axis=1)
    loss = row_loss.mean() if len(row_loss) else 0.0
    return _out(loss_out, loss), _out(probs_out, np.exp(log_p)), _out(row_loss_out, row_loss)


def softmax_xent_backward(probs, target, scale, out=None):
    t = _dense_target(target, probs.shape)
    p = probs.astype(np.float64)
    return _out(out, scale * (p * t.sum(axis=1, keepdims=True) - t))


def gather_rows(src, idx, out=None):
    idx = np.asarray(idx)
    if idx.size and (idx.min() < 0 or idx.max() >= len(src)):
        raise ValueError("gather_rows: index out of range")
    rows = src[idx.astype(np.int64)]  # reads only these rows (np.take copies a strided src whole)
    if out is None:
        return rows
    out[...] = rows
    return out


class RowGather:
    """Twin of kernels.RowGather: rows of src in the given order, batch by batch."""

    def __init__(self, src, max_rows):
        self._src, self.buffer, self._order = src, np.empty((max_rows,) + src.shape[1:], src.dtype), None

    def set_order(self, order):
        self._order = np.array(order, dtype=np.int64)

    def take(self, start, stop):
        return gather_rows(self._src, self._order[start:stop], self.buffer[:stop - start])


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def rmsprop_update(w, g, v, lr, rho, eps, eps_inside=True):
    for w, g, v in zip(_as_list(w), _as_list(g), _as_list(v)):
        v[...] = F32(rho) * v + F32(1 - rho) * g * g
        denom = np.sqrt(v + F32(eps)) if eps_inside else np.sqrt(v) + F32(eps)
        w -= F32(lr) * g / denom


def sgd_update(w, g, velocity, lr, momentum=0.0, nesterov=False):
    velocities = _as_list(velocity) if momentum != 0.0 else [None] * len(_as_list(w))
    for w, g, vel in zip(_as_list(w), _as_list(g), velocities):
        if momentum == 0.0:
            w -= F32(lr) * g
            continue
        vel[...] = F32(momentum) * vel - F32(lr) * g
        w += (F32(momentum) * vel - F32(lr) * g) if nesterov else vel


def adam_update(w, g, m, v, lr, beta1, beta2, eps, step):
    alpha = F32(lr * np.sqrt(1 - beta2 ** step) / (1 - beta1 ** step))
    for w, g, m, v in zip(_as_list(w), _as_list(g), _as_list(m), _as_list(v)):
        m += (g - m) * F32(1 - beta1)
        v += (g * g - v) * F32(1 - beta2)
        w -= alpha * m / (np.sqrt(v) + F32(eps))



# ---- AdamW / AMSGrad and gradient clipping

def adamw_update(w, g, m, v, v_hat, lr, beta1, beta2, eps, weight_decay, step):
    alpha = F32(lr * np.sqrt(1 - beta2 ** step) / (1 - beta1 ** step))
    hats = _as_list(v_hat) if v_hat is not None else [None] * len(_as_list(w))
    for w, g, m, v, h in zip(_as_list(w), _as_list(g), _as_list(m), _as_list(v), hats):
        if weight_decay != 0.0:
            w -= w * F32(weight_decay) * F32(lr)
        m += (g - m) * F32(1 - beta1)
        v += (g * g - v) * F32(1 - beta2)
        if h is not None:
            h[...] = np.where(h >= v, h, v)  # NaN in v propagates, as in the kernel
        w -= alpha * m / (np.sqrt(v if h is None else h) + F32(eps))


def _sum_of_squares(g):
    """In double, 8192-element chunks in index order (the kernel's order)."""
    flat = g.ravel().astype(np.float64)
    total = 0.0
    for start in range(0, flat.size, 8192):
        chunk = flat[start:start + 8192]
        total += float(np.cumsum(chunk * chunk)[-1])  # cumsum adds in index order
    return total


def _norm_scale(norm, c):
    if np.isnan(norm):
        return np.nan
    return c / norm if norm > c else 1.0


def clip_gradients(g, out, mode, clip):
    gs, outs = _as_list(g), _as_list(out)
    if mode == "clipvalue":
        for g, o in zip(gs, outs):
            o[...] = np.where(g < -clip, F32(-clip), np.where(g > clip, F32(clip), g))
        return
    if mode == "clipnorm":
        scales = [_norm_scale(np.sqrt(_sum_of_squares(g)), clip) for g in gs]
    else:
        norm = np.sqrt(sum(_sum_of_squares(g) for g in gs))
        scale = _norm_scale(norm, clip) if np.isfinite(norm) else np.nan
        scales = [scale] * len(gs)
    for g, o, s in zip(gs, outs, scales):
        o[...] = g * F32(s)


# ---- convolution and pooling

def _pair(value):
    return (int(value), int(value)) if np.isscalar(value) else (int(value[0]), int(value[1]))


def conv_output_size(n, k, s, padding):
    """(output size, padding before) along one axis, TensorFlow's 'valid'/'same' rule."""
    if padding.lower() == "valid":
        return max((n - k) // s + 1, 0), 0
    out = -(-n // s)
    return out, max((out - 1) * s + k - n, 0) // 2


def _conv_geometry(h, w, kh, kw, strides, padding):
    sh, sw = _pair(strides)
    oh, pt = conv_output_size(h, kh, sh, padding)
    ow, pl = conv_output_size(w, kw, sw, padding)
    if oh == 0 or ow == 0:
        raise ValueError(f"input {h}x{w} too small for a {kh}x{kw} window")
    return sh, sw, oh, ow, pt, pl


def _padded(x, pt, pl, rows, cols, fill=0.0):
    """x with pt rows / pl columns of fill before it and enough after to hold rows x cols."""
    n, h, w, c = x.shape
    xp = np.full((n, max(rows, pt + h), max(cols, pl + w), c), fill, dtype=x.dtype)
    xp[:, pt:pt + h, pl:pl + w] = x
    return xp


def _unfold(x, kh, kw, sh, sw, oh, ow, pt, pl):
    """im2col: (N*OH*OW, kh*kw*C), row (b, oy, ox), column (ky, kx, c), zeros in the padding."""
    n, _, _, c = x.shape
    xp = _padded(x, pt, pl, (oh - 1) * sh + kh, (ow - 1) * sw + kw)
    cols = np.empty((n, oh, ow, kh, kw, c), x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            cols[:, :, :, ky, kx] = xp[:, ky:ky + (oh - 1) * sh + 1:sh, kx:kx + (ow - 1) * sw + 1:sw]
    return cols.reshape(n * oh * ow, kh * kw * c)


def conv2d_forward(x, w, b=None, strides=(1, 1), padding="valid", relu=False, out=None):
    kh, kw, cin, cout = w.shape
    n, h, wd, _ = x.shape
    sh, sw, oh, ow, pt, pl = _conv_geometry(h, wd, kh, kw, strides, padding)
    cols = _unfold(x, kh, kw, sh, sw, oh, ow, pt, pl)
    y = cols.astype(np.float64) @ w.reshape(-1, cout).astype(np.float64)
    if b is not None:
        y = y + b
    y = y.astype(F32)
    if relu:
        y = np.where(y < 0, F32(0), y)
    return _out(out, y.reshape(n, oh, ow, cout))


def conv2d_backward_input(dy, w, x_shape, strides=(1, 1), padding="valid", out=None):
    kh, kw, cin, cout = w.shape
    n, h, wd, c = x_shape
    sh, sw, oh, ow, pt, pl = _conv_geometry(h, wd, kh, kw, strides, padding)
    dcols = dy.reshape(-1, cout).astype(np.float64) @ w.reshape(-1, cout).T.astype(np.float64)
    dcols = dcols.reshape(n, oh, ow, kh, kw, cin)
    dxp = np.zeros((n, max((oh - 1) * sh + kh, pt + h), max((ow - 1) * sw + kw, pl + wd), c))
    for ky in range(kh):
        for kx in range(kw):
            dxp[:, ky:ky + (oh - 1) * sh + 1:sh, kx:kx + (ow - 1) * sw + 1:sw] += dcols[:, :, :, ky, kx]
    return _out(out, dxp[:, pt:pt + h, pl:pl + wd])


def conv2d_backward_weight(x, dy, w_shape, strides=(1, 1), padding="valid", out=None):
    kh, kw, cin, cout = w_shape
    sh, sw, oh, ow, pt, pl = _conv_geometry(x.shape[1], x.shape[2], kh, kw, strides, padding)
    cols = _unfold(x, kh, kw, sh, sw, oh, ow, pt, pl).astype(np.float64)
    dw = cols.T @ dy.reshape(cols.shape[0], cout).astype(np.float64)
    return _out(out, dw.reshape(w_shape))


def conv2d_relu_backward_params(x, y, dy, w_shape, strides=(1, 1), padding="valid", out=None, db_out=None):
    dz = np.where(y > 0, dy, F32(0))
    return (conv2d_backward_weight(x, dz, w_shape, strides, padding, out),
            _out(db_out, dz.reshape(-1, w_shape[3]).sum(axis=0, dtype=np.float64)))


def conv2d_relu_backward(x, y, dy, w, strides=(1, 1), padding="valid", out=None, dw_out=None, db_out=None):
    dz = np.where(y > 0, dy, F32(0))
    dw, db = conv2d_relu_backward_params(x, y, dy, w.shape, strides, padding, dw_out, db_out)
    return conv2d_backward_input(dz, w, x.shape, strides, padding, out), dw, db


def _pool_geometry(x_shape, pool_size, strides, padding):
    ph, pw = _pair(pool_size)
    strides = (ph, pw) if strides is None else strides
    return (ph, pw) + _conv_geometry(x_shape[1], x_shape[2], ph, pw, strides, padding)


def _window_taps(x_shape, ph, pw, sh, sw, oh, ow, pt, pl):
    """For each window offset (dy, dx) in row-major order: the input rows and columns
    it reads for every output position (oh,), (ow,) and whether they lie inside x."""
    _, h, w, _ = x_shape
    for ky in range(ph):
        iy = np.arange(oh) * sh - pt + ky
        for kx in range(pw):
            ix = np.arange(ow) * sw - pl + kx
            yield iy, ix, ((iy >= 0) & (iy < h))[:, None] & ((ix >= 0) & (ix < w))[None, :]


def max_pool2d_forward(x, pool_size=(2, 2), strides=None, padding="valid", out=None, argmax_out=None):
    n, h, w, c = x.shape
    ph, pw, sh, sw, oh, ow, pt, pl = _pool_geometry(x.shape, pool_size, strides, padding)
    best = np.zeros((n, oh, ow, c), F32)
    where = np.zeros((n, oh, ow, c), np.int64)
    have = np.zeros((n, oh, ow, c), bool)
    b = np.arange(n)[:, None, None, None]
    ci = np.arange(c)[None, None, None, :]
    for iy, ix, inside in _window_taps(x.shape, ph, pw, sh, sw, oh, ow, pt, pl):
        iyc, ixc = np.clip(iy, 0, max(h - 1, 0)), np.clip(ix, 0, max(w - 1, 0))
        v = x[:, iyc][:, :, ixc]
        # first valid value; then strictly greater, or the first NaN over a number
        take = inside[None, :, :, None] & (~have | (v > best) | (np.isnan(v) & ~np.isnan(best)))
        best = np.where(take, v, best)
        flat = ((b * h + iyc[None, :, None, None]) * w + ixc[None, None, :, None]) * c + ci
        where = np.where(take, flat, where)
        have |= take
    if argmax_out is not None:
        argmax_out[...] = where
        where = argmax_out
    return _out(out, best), where


def max_pool2d_backward(dy, argmax, x_shape, pool_size=(2, 2), strides=None, padding="valid", out=None):
    n, h, w, c = x_shape
    ph, pw, sh, sw, oh, ow, pt, pl = _pool_geometry(x_shape, pool_size, strides, padding)
    # an argmax entry counts only if it names an element of its own window
    a = argmax.astype(np.int64)
    ai, ac = a // c, a % c
    ax, ai = ai % w, ai // w
    ay, ab = ai % h, ai // h
    oy = np.arange(oh)[None, :, None, None]
    ox = np.arange(ow)[None, None, :, None]
    ok = ((ab == np.arange(n)[:, None, None, None]) & (ac == np.arange(c)) & (a >= 0)
          & (ay >= oy * sh - pt) & (ay < oy * sh - pt + ph) & (ax >= ox * sw - pl) & (ax < ox * sw - pl + pw))
    dx = np.zeros(n * h * w * c)
    np.add.at(dx, a[ok], dy[ok].astype(np.float64))  # in (b, oy, ox, c) order, as C sums
    return _out(out, dx.reshape(x_shape))


# ---- element-wise, sigmoid + BCE, dropout
#
# sigmoid and tanh are computed in float64 and rounded once: the exact values
# the C kernels approximate (within 2 ulp; the C sigmoid is 0 below FLT_MIN).
# The backward passes, the BCE gradient and dropout are the C kernels' own
# float32 arithmetic, so they agree bit for bit (outside the subnormal range,
# which the C kernels flush to zero).

def sigmoid_forward(x, out=None):
    z = x.astype(np.float64)
    e = np.exp(-np.abs(z))  # <= 1: no overflow for any z
    return _out(out, np.where(z >= 0, 1.0, e) / (1.0 + e))


def sigmoid_backward(y, dy, out=None):
    return _out(out, dy * y * (F32(1) - y))


def tanh_forward(x, out=None):
    return _out(out, np.tanh(x.astype(np.float64)))


def tanh_backward(y, dy, out=None):
    return _out(out, dy * (F32(1) - y * y))


def sigmoid_bce_forward(logits, target, probs_out=None, loss_out=None):
    z, t = logits.astype(np.float64), target.astype(np.float64)
    per_element = np.maximum(z, 0.0) - z * t + np.log1p(np.exp(-np.abs(z)))
    loss = per_element.mean() if per_element.size else 0.0
    return _out(loss_out, loss), sigmoid_forward(logits, probs_out)


def sigmoid_bce_backward(probs, target, scale, out=None):
    return _out(out, F32(scale) * (probs - target))


_WORD = np.uint64(0xFFFFFFFF)


def philox4x32_10(counter, key):
    """Philox-4x32-10 (Random123's philox4x32): four uint32 words from a
    counter of 4 words and a key of 2; any word may be an array (vectorised)."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in counter)
    k0, k1 = (np.uint64(k) for k in key)
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c0  # a 32 x 32 -> 64-bit product: no wrap-around
        p1 = np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & _WORD, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & _WORD
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & _WORD, (k1 + np.uint64(0xBB67AE85)) & _WORD
    return np.stack(np.broadcast_arrays(c0, c1, c2, c3), axis=-1).astype(np.uint32)


class DropoutCounter:
    """Twin of kernels.DropoutCounter: the step number of the next dropout mask."""

    def __init__(self, start=0):
        self.value = start


def _dropout_keep(n, rate, seed, step):
    """Element i of (seed, step) is kept iff word i % 4 of the Philox block
    (i // 4, step) under key seed is >= ceil(rate * 2**32), i.e. u >= rate."""
    blocks = np.arange((n + 3) // 4, dtype=np.uint64)
    step, seed = np.uint64(step), np.uint64(seed)
    words = philox4x32_10((blocks & _WORD, blocks >> np.uint64(32), step & _WORD, step >> np.uint64(32)),
                          (seed & _WORD, seed >> np.uint64(32))).reshape(-1)[:n]
    return words.astype(np.uint64) >= math.ceil(rate * 2.0**32)  # rate * 2**32 is exact in double


def dropout_forward(x, rate, seed, counter, out=None, mask_out=None):
    step = counter.value
    keep = _dropout_keep(x.size, rate, seed, step).reshape(x.shape)
    scale = F32(1.0 / (1.0 - rate))
    y = np.where(keep, x * scale, F32(0))
    counter.value = step + 1
    return _out(out, y), _out(mask_out, np.where(keep, scale, F32(0)))


def dropout_backward(dy, mask, out=None):
    return _out(out, np.where(mask != 0, dy * mask, F32(0)))
