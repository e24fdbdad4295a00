"""The ops of the real-valued stream in numpy float32: the engine runs them, and they define
what they mean (the fused kernels' reference twins apply the same functions).

Values are float32 NHWC ``(N, H, W, C)`` or flat ``(N, K)``; per-channel tensors are float32
``(C,)`` and act on the last axis. Elementwise ops round to float32 after each arithmetic
operation, as numpy does on float32 arrays (so ``x * scale + shift`` is two roundings, no fused
multiply-add). ``conv_real`` / ``dense_real`` sum in the order of numpy's matmul (compared with
PyTorch under a tolerance). The pools are PyTorch's AvgPool2d / MaxPool2d (dilation 1) exactly,
with padding, ``ceil_mode`` and ``count_include_pad``.
"""
from __future__ import annotations

import numpy as np

from .checker import conv_output_size, pool_output_size

__all__ = ["input_float", "nchw_to_nhwc", "conv_real", "dense_real", "output_transform", "apply_step", "sign",
           "scale_shift", "relu", "prelu", "add", "concat", "avgpool", "maxpool_real",
           "global_avgpool", "flatten", "taps", "pool_padding", "avgpool_divisors"]

F32 = np.float32


def input_float(x, scale=None, offset=None):
    """The model input as float32 NHWC (or (N, K)): x_u8 * scale + offset per channel for
    uint8 images (float32 arithmetic), float input as given."""
    if x.dtype == np.uint8 and x.ndim == 4:
        return _u8_image_to_nhwc(x, np.asarray(scale, F32), np.asarray(offset, F32))
    if x.dtype == np.uint8:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        x = (x.astype(F32) * np.asarray(scale, F32).reshape(shape)
             + np.asarray(offset, F32).reshape(shape))
    x = x.astype(F32, copy=False)
    return nchw_to_nhwc(x) if x.ndim == 4 else x


def _u8_image_to_nhwc(x, scale, offset):
    """uint8 (N, C, H, W) -> float32 (N, H, W, C) = x * scale[c] + offset[c] (each operation
    rounded to float32), one channel plane at a time into the NHWC result: two passes over
    the image where casting, scaling, shifting and transposing made four."""
    n, c, h, w = x.shape
    out = np.empty((n, h, w, c), F32)
    plane = np.empty((n, h, w), F32)
    for k in range(c):
        np.multiply(x[:, k], scale[k], out=plane, dtype=F32)
        np.add(plane, offset[k], out=out[..., k])
    return out


def nchw_to_nhwc(x):
    """(N, C, H, W) -> C-contiguous (N, H, W, C), one channel plane at a time: for an image's
    few channels, ~4x faster than numpy's copy of the transposed view (whose innermost loop
    runs over the C channels of one pixel)."""
    n, c, h, w = x.shape
    if c > 16:  # many channels: numpy's innermost loop is long enough
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    out = np.empty((n, h, w, c), x.dtype)
    for k in range(c):
        out[..., k] = x[:, k]
    return out


def taps(padded, kernel, stride, dilation, out_size):
    """The kernel's taps over a padded NHWC map: [(N, Ho, Wo, C) strided views], in (kh, kw)
    order (any array type with numpy's basic slicing)."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_size
    return [padded[:, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]


def _pad(x, top_left, bottom_right, value):
    (pt, pl), (pb, pr) = top_left, bottom_right
    if not (pt or pl or pb or pr):
        return x
    n, h, w, c = x.shape
    padded = np.full((n, h + pt + pb, w + pl + pr, c), value, F32)
    padded[:, pt:pt + h, pl:pl + w] = x
    return padded


def conv_real(x, weight, bias, stride, padding, dilation, groups):
    """Convolution with zero padding: x (N, H, W, C), weight (O, KH, KW, C/g), bias (O,)."""
    n, h, w, c = x.shape
    o, kh, kw, cg = weight.shape
    ho = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    padded = _pad(x, padding, padding, 0.0)
    if groups == c:  # depthwise: one multiply-add pass per tap, no (kh*kw)-fold patches
        source = padded if o == c else np.repeat(padded, o // c, axis=3)
        out = np.zeros((n, ho, wo, o), F32)
        for t, view in enumerate(taps(source, (kh, kw), stride, dilation, (ho, wo))):
            out += view * weight[:, t // kw, t % kw, 0]
        return out + bias
    og = o // groups
    parts = []
    for g in range(groups):
        views = taps(padded[..., g * cg:(g + 1) * cg], (kh, kw), stride, dilation, (ho, wo))
        patches = np.stack(views, 3).reshape(n * ho * wo, kh * kw * cg)
        parts.append(patches @ weight[g * og:(g + 1) * og].reshape(og, -1).T)
    out = np.concatenate(parts, 1) if groups > 1 else parts[0]
    return out.reshape(n, ho, wo, o) + bias


def dense_real(x, weight, bias):
    """x (N, K) @ weight (O, K).T + bias (O,)."""
    return x @ weight.T + bias


def output_transform(s, scale, shift):
    """A binary conv/dense's float output: float32(s) * scale + shift, s its int32 sums."""
    return s.astype(F32) * scale + shift


def scale_shift(x, scale, shift):
    return x * scale + shift


def relu(x):
    return np.maximum(x, F32(0))


def prelu(x, shift_in, slope, shift_out):
    """z = x + shift_in; (z if z > 0 else slope * z) + shift_out (PReLU; ReActNet's RPReLU)."""
    z = x + shift_in
    return np.where(z > 0, z, slope * z) + shift_out


def add(a, b):
    return a + b


def apply_step(y, step, residual=None):
    """One step of a fused kernel's output transform: ("relu",), ("scale_shift", scale,
    shift), ("prelu", shift_in, slope, shift_out) or ("add",) (adds ``residual``)."""
    kind, *params = step
    if kind == "add":
        return add(y, residual)
    return {"relu": relu, "scale_shift": scale_shift, "prelu": prelu}[kind](y, *params)


def sign(x, thresh, flip):
    """The bits of a sign on the real stream, as bool (True: +1): x >= thresh, or x <= thresh
    where flip, per channel (the last axis). NaN gives False (-1)."""
    return np.where(flip, x <= thresh, x >= thresh)


def concat(parts):
    return np.concatenate(parts, axis=-1)


def pool_padding(h, w, kernel, stride, padding, ceil_mode):
    """Output size and the bottom/right padding that holds every window ceil_mode adds."""
    ho = pool_output_size(h, kernel[0], stride[0], padding[0], ceil_mode)
    wo = pool_output_size(w, kernel[1], stride[1], padding[1], ceil_mode)
    bottom = max(padding[0], (ho - 1) * stride[0] + kernel[0] - h - padding[0])
    right = max(padding[1], (wo - 1) * stride[1] + kernel[1] - w - padding[1])
    return (ho, wo), (bottom, right)


def _window_counts(size, out, kernel, stride, padding, include_pad):
    start = np.arange(out) * stride - padding
    end = np.minimum(start + kernel, size + padding)
    if not include_pad:
        start, end = np.maximum(start, 0), np.minimum(end, size)
    return (end - start).astype(F32)


def avgpool_divisors(h, w, out, kernel, stride, padding, count_include_pad):
    """What each of the (Ho, Wo) windows divides its sum by (float32, host), as PyTorch's
    avg_pool2d: windows end at most at the padded edge; with count_include_pad they count the
    padding, else only the input."""
    rows, cols = (_window_counts(n, o, k, s, p, count_include_pad)
                  for n, o, k, s, p in zip((h, w), out, kernel, stride, padding))
    return rows[:, None] * cols[None, :]


def avgpool(x, kernel, stride, padding, ceil_mode, count_include_pad):
    """PyTorch's AvgPool2d(kernel, stride, padding, ceil_mode, count_include_pad) on NHWC: the
    window's sum (taps added in order) over its divisor."""
    n, h, w, c = x.shape
    out, far = pool_padding(h, w, kernel, stride, padding, ceil_mode)
    padded = _pad(x, padding, far, 0.0)
    total = np.zeros((n, *out, c), F32)
    for view in taps(padded, kernel, stride, (1, 1), out):
        total += view
    divisors = avgpool_divisors(h, w, out, kernel, stride, padding, count_include_pad)
    return total / divisors[None, :, :, None]


def maxpool_real(x, kernel, stride, padding, ceil_mode):
    """PyTorch's MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode) on NHWC (pad: -inf)."""
    n, h, w, c = x.shape
    out, far = pool_padding(h, w, kernel, stride, padding, ceil_mode)
    padded = _pad(x, padding, far, -np.inf)
    # separable: the max over each window's columns, then over its rows (kh + kw - 2 passes,
    # not kh * kw - 1; max is exact, so the order does not change the result)
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out
    cols = _running_max([padded[:, :, j:j + sw * (wo - 1) + 1:sw] for j in range(kw)])
    return _running_max([cols[:, i:i + sh * (ho - 1) + 1:sh] for i in range(kh)])


def _running_max(views):
    """The elementwise max of equally shaped views, as a new C-contiguous array."""
    if len(views) == 1:
        return np.array(views[0], order="C")
    result = np.maximum(views[0], views[1])
    for view in views[2:]:
        np.maximum(result, view, out=result)
    return result


def global_avgpool(x):
    """Mean over H and W: (N, H, W, C) -> (N, 1, 1, C), as :func:`avgpool` with one window over
    the map: +0, then each value added in (h, w) order, over H * W (one fixed order, which the
    C kernel repeats; numpy's mean sums pairwise when C is 1)."""
    n, h, w, c = x.shape
    running = np.cumsum(x.reshape(n, h * w, c), axis=1, dtype=F32)  # in order, one at a time
    return ((F32(0) + running[:, -1:]) / F32(h * w)).reshape(n, 1, 1, c)


def flatten(x):
    """(N, H, W, C) -> (N, H*W*C) in NHWC order."""
    return x.reshape(len(x), -1)
