"""The weight layout the compiled ``conv2d_float`` reads (csrc/float_conv.c), in numpy.

The kernel puts output channels across float64 vector lanes, so it wants, for every tap and
input channel, the group's output channels as one contiguous row padded with zeros to whole
vectors: panels (groups, KH, KW, C/groups, opad). Depthwise convs (one input and one output
channel per group) put the channels themselves across the lanes: (KH, KW, opad). A caller that
runs a conv many times lays its weights out once (the graph runner keeps them per op).
"""
from __future__ import annotations

import numpy as np

__all__ = ["LANES", "panels_shape", "layout_panels"]

LANES = 8  # csrc/core.h BN_FCONV_LANES: float64 lanes of an AVX-512 vector


def panels_shape(weight_shape, groups: int) -> tuple:
    """The panels' shape for weights (O, KH, KW, C/groups) (groups divides O)."""
    o, kh, kw, cg = weight_shape
    og = o // groups
    if cg == 1 and og == 1:
        return kh, kw, -(-o // LANES) * LANES
    return groups, kh, kw, cg, -(-og // LANES) * LANES


def layout_panels(weight: np.ndarray, groups: int) -> np.ndarray:
    """Checked float32 weights (O, KH, KW, C/groups) -> float32 panels (zeros past O/groups)."""
    o, kh, kw, cg = weight.shape
    if cg == 1 and o == groups:  # depthwise
        rows = weight[:, :, :, 0].transpose(1, 2, 0)
    else:
        rows = weight.reshape(groups, o // groups, kh, kw, cg).transpose(0, 2, 3, 4, 1)
    panels = np.zeros(panels_shape(weight.shape, groups), np.float32)
    panels[..., :rows.shape[-1]] = rows
    return panels
