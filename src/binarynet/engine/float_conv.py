"""conv2d_float's numpy side: the weight layouts the compiled kernel reads (csrc/float_conv.c)
and its summation orders.

The real stream's convs (``conv2d_float``) sum in float32 by fused multiply-adds, so the kernel
puts output channels across float32 vector lanes: for every tap and input channel, the group's
output channels as one contiguous float32 row padded with zeros to whole vectors: panels
(groups, KH, KW, C/groups, opad), ``opad`` a multiple of :data:`LANES`. Depthwise convs (one input
and one output channel per group) put the channels themselves across the lanes: (KH, KW, opad).
The float-input first conv with bits out (``conv2d_float_sign``) decides on float64 sums, from
float64 panels of :data:`SIGN_LANES`. A caller that runs a conv many times lays its weights out
once (the graph runner keeps them per op).
"""
from __future__ import annotations

import numpy as np

from . import float_ops

__all__ = ["LANES", "SIGN_LANES", "panels_shape", "layout_panels", "sign_panels_shape",
           "layout_sign_panels", "fma32", "float32_sums", "float64_sums"]

LANES = 16  # csrc/core.h BN_FCONV_LANES32: float32 lanes of an AVX-512 vector
SIGN_LANES = 8  # csrc/core.h BN_FCONV_LANES: float64 lanes (the sign path's panels)


def _shape(weight_shape, groups: int, lanes: int) -> tuple:
    o, kh, kw, cg = weight_shape
    og = o // groups
    if cg == 1 and og == 1:
        return kh, kw, -(-o // lanes) * lanes
    return groups, kh, kw, cg, -(-og // lanes) * lanes


def _layout(weight: np.ndarray, groups: int, lanes: int, dtype) -> np.ndarray:
    o, kh, kw, cg = weight.shape
    if cg == 1 and o == groups:  # depthwise
        rows = weight[:, :, :, 0].transpose(1, 2, 0)
    else:
        rows = weight.reshape(groups, o // groups, kh, kw, cg).transpose(0, 2, 3, 4, 1)
    panels = np.zeros(_shape(weight.shape, groups, lanes), dtype)
    panels[..., :rows.shape[-1]] = rows
    return panels


def panels_shape(weight_shape, groups: int) -> tuple:
    """conv2d_float's panels' shape for weights (O, KH, KW, C/groups) (groups divides O)."""
    return _shape(weight_shape, groups, LANES)


def layout_panels(weight: np.ndarray, groups: int) -> np.ndarray:
    """Checked float32 weights (O, KH, KW, C/groups) -> float32 panels (zeros past O/groups)."""
    return _layout(weight, groups, LANES, np.float32)


def sign_panels_shape(weight_shape) -> tuple:
    """conv2d_float_sign's panels' shape for one group's weights (O, KH, KW, C)."""
    return _shape(weight_shape, 1, SIGN_LANES)


def layout_sign_panels(weight: np.ndarray) -> np.ndarray:
    """Checked float32 weights (O, KH, KW, C) -> float64 panels (exact: float32 values)."""
    return _layout(weight, 1, SIGN_LANES, np.float64)


def fma32(a, b, c) -> np.ndarray:
    """float32 a * b + c rounded once, as a fused multiply-add (IEEE 754 fusedMultiplyAdd).

    The product of two float32 values is exact in float64; their sum with c is rounded to
    odd in float64 (the round-to-nearest sum, moved one ulp towards the exact value when it is
    inexact and its last bit is even: the error by TwoSum), and rounding that to float32 is the
    correctly rounded result, since float64 has more than 24 + 2 bits (Boldo and Melquiond,
    "Emulation of FMA and correctly rounded sums: proved algorithms using rounding to odd",
    IEEE Trans. Computers 57(4), 2008). inf and NaN propagate as in hardware."""
    with np.errstate(all="ignore"):
        p = np.asarray(a, np.float64) * np.asarray(b, np.float64)
        c = np.asarray(c, np.float64)
        s = p + c
        bb = s - p
        err = (p - (s - bb)) + (c - bb)
        even = (s.view(np.int64) & 1) == 0
        move = np.isfinite(s) & (err != 0) & even
        s = np.where(move, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
        return s.astype(np.float32)


def _group_sums(padded, weight, start, stride, dilation, out_hw, groups, dtype, step):
    """y = start, then for each tap (kh, kw) and each input channel ci of the group,
    y = step(x, w, y) -> (N, Ho, Wo, O) of dtype."""
    (o, kh, kw, cg), og = weight.shape, weight.shape[0] // groups
    w = weight.astype(dtype)
    y = np.empty((padded.shape[0],) + tuple(out_hw) + (o,), dtype)
    y[...] = start  # assigned, not added: a -0.0 bias stays -0.0 as in the kernel
    with np.errstate(all="ignore"):  # inf / NaN propagate as in the kernel
        for t, view in enumerate(float_ops.taps(padded, (kh, kw), stride, dilation, out_hw)):
            for ci in range(cg):  # input channel g * cg + ci feeds group g's og outputs
                xs = view[..., ci::cg] if og == 1 else np.repeat(view[..., ci::cg], og, axis=3)
                y = step(xs, w[:, t // kw, t % kw, ci], y)
    return y


def float32_sums(padded, weight, start, stride, dilation, out_hw, groups) -> np.ndarray:
    """conv2d_float's sums in its order: padded float32 input (N, Hp, Wp, C) (the padding
    written in), weight (O, KH, KW, C/groups) -> float32 (N, Ho, Wo, O): y = start (float32
    (O,) or 0), then for each tap (kh, kw) and each input channel ci of the group,
    y = fma32(x, w, y)."""
    return _group_sums(padded.astype(np.float32, copy=False), weight, start, stride, dilation,
                       out_hw, groups, np.float32, fma32)


def float64_sums(padded, weight, start, stride, dilation, out_hw, groups) -> np.ndarray:
    """conv2d_float_sign's sums in its order: as :func:`float32_sums` in float64 (every
    product exact, so a fused multiply-add gives the same bits), y = y + x * w."""
    return _group_sums(padded.astype(np.float64, copy=False), weight, start, stride, dilation,
                       out_hw, groups, np.float64, lambda x, w, y: y + x * w)
