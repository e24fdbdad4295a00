"""Compiled kernels of the real-valued stream (float32 values of modern BNNs): the direct float
convolution (csrc/float_conv.c) and the float pools (csrc/pool_float.c), each bit for bit its
numpy meaning. Re-exported by :mod:`binarynet.engine.kernels` (``kernels.conv2d_float`` etc.).
"""
from __future__ import annotations

import numpy as np

from binarynet.engine import _core
from binarynet.engine import float_conv_sign
from binarynet.engine import reference as _ref
from binarynet.engine.kernel_backend import after_environment as _after_environment
from binarynet.engine.pool_float_checks import check_pool2d_float
from binarynet.engine.prepared import aligned as _aligned

__all__ = ["conv2d_float", "conv2d_float_sign", "fma_probe", "conv2d_float_panels",
           "conv2d_float_sign_panels",
           "maxpool2d_float", "avgpool2d_float", "global_avgpool_float"]


# ----------------------------------------------------------------------------------------------
# real-valued convolution (csrc/float_conv.c)
# ----------------------------------------------------------------------------------------------
@_after_environment
def conv2d_float(x, weight, bias, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, *,
                 panels=None) -> np.ndarray:
    """float32 convolution with zero padding -> (N, Ho, Wo, O); see
    :func:`binarynet.engine.reference.conv2d_float` (bit for bit: float32 fused multiply-adds
    in a fixed order). Direct (no patch matrix, no BLAS), output channels across the vector lanes; a dense
    layer is the 1x1 conv of (N, 1, 1, K) by (O, 1, 1, K). Pass ``panels``
    (:func:`conv2d_float_panels`) to skip laying out the weights on every call."""
    x, weight, bias, stride, padding, dilation, groups, ho, wo, panels = (
        _ref._check_conv2d_float(x, weight, bias, stride, padding, dilation, groups, panels))
    n, h, wd, c = x.shape
    o, kh, kw, _ = weight.shape
    out = np.empty((n, ho, wo, o), dtype=np.float32)
    geometry = (n, h, wd, c, o, kh, kw) + stride + padding + dilation + (groups,)
    _core.conv2d_float(_aligned(x), _aligned(panels), _aligned(bias), geometry, out)
    return out


@_after_environment
def conv2d_float_sign(x, weight, bias, thresh, flip, stride=(1, 1), padding=(0, 0),
                      dilation=(1, 1), *, pad_value=0.0, nchw=False, panels=None) -> np.ndarray:
    """The float-input first conv, bits out: see
    :func:`binarynet.engine.float_conv_sign.conv2d_float_sign` (bit for bit), on
    :func:`conv2d_float`'s tiles with the bias, threshold and packing done on the sums in
    registers (no float output written)."""
    x, weight, bias, thresh, flip, stride, padding, dilation, ho, wo, panels, pad_value = (
        float_conv_sign.check(x, weight, bias, thresh, flip, stride, padding, dilation,
                              pad_value, nchw, panels))
    o, kh, kw, c = weight.shape
    n, h, wd = (x.shape[0],) + (x.shape[2:] if nchw else x.shape[1:3])
    out = np.empty((n, ho, wo, _ref.words_for(o)), dtype=np.uint64)
    geometry = (n, h, wd, c, o, kh, kw) + stride + padding + dilation + (1,)
    _core.conv2d_float_sign(_aligned(x), x.dtype == np.float64, bool(nchw), pad_value,
                            _aligned(panels), geometry, _aligned(bias), _aligned(thresh),
                            flip.view(np.uint8), out)
    return out


@_after_environment
def fma_probe(iterations: int, threads: int) -> int:
    """Run ``iterations`` in-register float32 multiply-add steps per thread on ``threads``
    threads of the pool (12 zmm chains on the AVX-512 row, scalar ones elsewhere: the
    instructions conv2d_float's kernel of that row uses) and return the multiply-adds done;
    time the call for this CPU's float32 FMA peak, the ceiling of conv2d_float."""
    for name, value in (("iterations", iterations), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"fma_probe: {name} must be a positive int, got {value!r}")
    return _core.fma_probe(int(iterations), int(threads))


conv2d_float_panels = _ref.conv2d_float_panels  # a numpy re-layout: one implementation


def conv2d_float_sign_panels(weight):
    """:func:`conv2d_float_sign`'s weights (O, KH, KW, C) float32 as the C kernel reads them."""
    return float_conv_sign.sign_panels(weight)


# ----------------------------------------------------------------------------------------------
# pools of the real-valued stream (csrc/pool_float.c)
# ----------------------------------------------------------------------------------------------
def _pool2d_float(op, x, kernel, stride, padding, ceil_mode, count_include_pad, is_max):
    x, kernel, stride, padding, ceil_mode, count_include_pad, (ho, wo) = check_pool2d_float(
        op, x, kernel, stride, padding, ceil_mode, count_include_pad)
    n, h, wd, c = x.shape
    out = np.empty((n, ho, wo, c), dtype=np.float32)
    _core.pool2d_float(_aligned(x), (n, h, wd, c) + kernel + stride + padding, is_max, ceil_mode,
                       count_include_pad, out)
    return out


@_after_environment
def maxpool2d_float(x, kernel, stride, padding, ceil_mode) -> np.ndarray:
    """:func:`binarynet.engine.float_ops.maxpool_real` (PyTorch's MaxPool2d, padding -inf) in C,
    bit for bit, NaN and signed zeros included: float32 (N, H, W, C) -> (N, Ho, Wo, C), channels
    across the vector lanes, on the engine's thread pool."""
    return _pool2d_float("maxpool2d_float", x, kernel, stride, padding, ceil_mode, False, True)


@_after_environment
def avgpool2d_float(x, kernel, stride, padding, ceil_mode, count_include_pad) -> np.ndarray:
    """:func:`binarynet.engine.float_ops.avgpool` (PyTorch's AvgPool2d and its divisors) in C, bit
    for bit (a NaN's payload aside): each window's float32 sum from +0 in (row, column) order,
    over its divisor."""
    return _pool2d_float("avgpool2d_float", x, kernel, stride, padding, ceil_mode,
                         count_include_pad, False)


@_after_environment
def global_avgpool_float(x) -> np.ndarray:
    """:func:`binarynet.engine.float_ops.global_avgpool` in C, bit for bit: (N, H, W, C) ->
    (N, 1, 1, C), the average pool whose one window is the whole map."""
    x = _ref._check_array("global_avgpool_float", "x", x, np.float32, 4)
    return _pool2d_float("global_avgpool_float", x, x.shape[1:3], (1, 1), (0, 0), False, True,
                         False)
