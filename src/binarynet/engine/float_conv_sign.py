"""The float-input first conv on conv2d_float's tiles: ``conv2d_float_sign``'s argument checks
and numpy twin (the compiled kernel is :func:`binarynet.engine.kernels.conv2d_float_sign`).

A first conv of a paper network (``first_conv`` of graph.py, float input) computes
z = float32(sum of x * w in float64) + float32 bias and keeps only the sign bit
z >= thresh (z <= thresh where flip). The sums are float64 in one order (from 0, taps (kh, kw), then input
channels: :func:`float_conv.float64_sums`), on conv2d_float's tiles, so the kernel adds the bias, compares and packs while the sums are in registers and never writes the floats.
The input may be float32 or float64 (uint8 images normalised per channel), NHWC or NCHW (the
model's own layout: no transposed copy), padded with the layer's pad value (0 or +-1).
"""
from __future__ import annotations

import numpy as np

from . import float_conv
from . import reference as _ref
from .graph import conv_geometry

__all__ = ["check", "sign_panels", "conv2d_float_sign"]


def sign_panels(weight) -> np.ndarray:
    """Checked float32 weights (O, KH, KW, C) -> the kernel's float64 panels."""
    return float_conv.layout_sign_panels(
        _ref._check_array("conv2d_float_sign_panels", "weight", weight, np.float32, 4))


def check(x, weight, bias, thresh, flip, stride, padding, dilation, pad_value, nchw, panels):
    """Validate the operands -> (x, weight, bias, thresh, flip, stride, padding, dilation, Ho,
    Wo, panels (laid out when None), pad_value as a float)."""
    op = "conv2d_float_sign"
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: x must be a float32 or float64 numpy array, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    x = _ref._check_array(op, "x", x, x.dtype, 4)
    weight = _ref._check_array(op, "weight", weight, np.float32, 4)
    o, c = weight.shape[0], x.shape[1] if nchw else x.shape[3]
    if weight.shape[3] != c:
        raise ValueError(f"{op}: weight must have {c} input channels (one group), got shape "
                         f"{weight.shape}")
    if x.dtype == np.float64 and not np.all(np.abs(weight) == 1):
        # float64 x float32 products are exact only for +-1 weights: else a fused multiply-add
        # and a multiply then an add would round differently on different ISA rows
        raise ValueError(f"{op}: float64 x needs +-1 weights")
    if isinstance(pad_value, bool) or not isinstance(pad_value, (int, float, np.floating)) or \
            not np.isfinite(pad_value):
        raise ValueError(f"{op}: pad_value must be a finite number, got {pad_value!r}")
    bias = _ref._check_channels_f32(op, "bias", bias, o)
    thresh, flip = _ref._check_sign(op, thresh, flip, o, ("thresh", "flip"))
    nhwc_shape = (x.shape[0], x.shape[2], x.shape[3], c) if nchw else x.shape
    stride, padding, dilation, ho, wo = conv_geometry(op, nhwc_shape, weight.shape, stride,
                                                      padding, dilation, "zero")
    want = float_conv.sign_panels_shape(weight.shape)
    panels = float_conv.layout_sign_panels(weight) if panels is None else _ref._check_array(
        op, "panels", panels, np.float64, len(want))
    if panels.shape != want:
        raise ValueError(f"{op}: panels must have shape {want} (conv2d_float_sign_panels), got "
                         f"{panels.shape}")
    return x, weight, bias, thresh, flip, stride, padding, dilation, ho, wo, panels, \
        float(pad_value)


def conv2d_float_sign(x, weight, bias, thresh, flip, stride=(1, 1), padding=(0, 0),
                      dilation=(1, 1), *, pad_value=0.0, nchw=False, panels=None) -> np.ndarray:
    """Bits (N, Ho, Wo, ceil(O/64)) of z = float32(s) + bias against thresh (flip: <=), s the
    float64 sums of x (N, H, W, C), or (N, C, H, W) when ``nchw``, float32 or float64 (then
    with +-1 weights), padded with ``pad_value``, times weight (O, KH, KW, C) float32, from 0
    in the kernel's order. thresh float32 (O,) (+-inf allowed), flip bool (O,) or None."""
    x, weight, bias, thresh, flip, stride, padding, dilation, ho, wo, _, pad_value = check(
        x, weight, bias, thresh, flip, stride, padding, dilation, pad_value, nchw, panels)
    nhwc = x.transpose(0, 2, 3, 1) if nchw else x
    (n, h, w, c), (ph, pw) = nhwc.shape, padding
    padded = np.full((n, h + 2 * ph, w + 2 * pw, c), pad_value)
    padded[:, ph:ph + h, pw:pw + w] = nhwc
    sums = float_conv.float64_sums(padded, weight, 0.0, stride, dilation, (ho, wo), 1)
    with np.errstate(all="ignore"):
        z = sums.astype(np.float32) + bias
    return _ref._pack_bool(np.where(flip, z <= thresh, z >= thresh))
