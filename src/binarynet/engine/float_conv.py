"""conv2d_float's numpy side: the weight layout the compiled kernel reads (csrc/float_conv.c)
and its one summation order.

The kernel puts output channels across float64 vector lanes, so it wants, for every tap and
input channel, the group's output channels as one contiguous row of float64 padded with zeros
to whole vectors: panels (groups, KH, KW, C/groups, opad). Depthwise convs (one input and one
output channel per group) put the channels themselves across the lanes: (KH, KW, opad). The
weights are float64 already (exact: they are float32 values) so the kernel's inner loop does
nothing but multiply-adds. A caller that runs a conv many times lays its weights out once (the
graph runner keeps them per op).
"""
from __future__ import annotations

import numpy as np

from . import float_ops

__all__ = ["LANES", "panels_shape", "layout_panels", "float64_sums"]

LANES = 8  # csrc/core.h BN_FCONV_LANES: float64 lanes of an AVX-512 vector


def panels_shape(weight_shape, groups: int) -> tuple:
    """The panels' shape for weights (O, KH, KW, C/groups) (groups divides O)."""
    o, kh, kw, cg = weight_shape
    og = o // groups
    if cg == 1 and og == 1:
        return kh, kw, -(-o // LANES) * LANES
    return groups, kh, kw, cg, -(-og // LANES) * LANES


def layout_panels(weight: np.ndarray, groups: int) -> np.ndarray:
    """Checked float32 weights (O, KH, KW, C/groups) -> float64 panels (zeros past O/groups)."""
    o, kh, kw, cg = weight.shape
    if cg == 1 and o == groups:  # depthwise
        rows = weight[:, :, :, 0].transpose(1, 2, 0)
    else:
        rows = weight.reshape(groups, o // groups, kh, kw, cg).transpose(0, 2, 3, 4, 1)
    panels = np.zeros(panels_shape(weight.shape, groups), np.float64)
    panels[..., :rows.shape[-1]] = rows
    return panels


def float64_sums(padded, weight, start, stride, dilation, out_hw, groups) -> np.ndarray:
    """The kernel's sums in its order: padded float64 input (N, Hp, Wp, C) (the padding written
    in), weight (O, KH, KW, C/groups) -> float64 (N, Ho, Wo, O): y = start (float64 (O,) or 0),
    then for each tap (kh, kw) and each input channel ci of the group, y = y + x * w."""
    (o, kh, kw, cg), og = weight.shape, weight.shape[0] // groups
    w64 = weight.astype(np.float64)
    y = np.empty((padded.shape[0],) + tuple(out_hw) + (o,))
    y[...] = start  # assigned, not added: a -0.0 bias stays -0.0 as in the kernel
    with np.errstate(all="ignore"):  # inf / NaN propagate as in the kernel
        for t, view in enumerate(float_ops.taps(padded, (kh, kw), stride, dilation, out_hw)):
            for ci in range(cg):  # input channel g * cg + ci feeds group g's og outputs
                xs = view[..., ci::cg] if og == 1 else np.repeat(view[..., ci::cg], og, axis=3)
                y += xs * w64[:, t // kw, t % kw, ci]
    return y
