"""The first layer's decision boundaries (its input is real-valued, not +-1).

The decision boundary v* of each unit on its float32 pre-activation v = x_f . w + b is found by
bisection over all float32 values with the actual modules, and spot-checked for monotonicity.
Float input: the engine sums x_f . w in float64, rounds to float32, adds the float32 bias (as
the torch layer does) and compares with v*.

uint8 input (``input_scale``/``input_offset`` given, x_f = x_u8*scale[c] + offset[c]) with one
scale for all channels: v = scale * s + sum_c offset[c]*sum(w over channel c) + b with the
integer s = x_u8 . w (bit planes, paper §1.6, or an integer product: ``first_layer``), so the
decision is an exact integer threshold on s, derived with rational arithmetic. For a zero-padded
conv the padded taps contribute nothing, so the threshold depends on which taps are valid, i.e.
on the border class of the output position (top row, interior, ...), one threshold per class.
Per-channel scales that differ (mean/std normalisation) are supported by the float path only:
uint8 images are then normalised in float64 by the engine.

The engine's uint8 first layer is exact for the *real-valued* pre-activation; torch's float32
first-layer sum (normalised pixels rounded to float32, float32 accumulation in some order) may
round differently at near-ties (|v - v*| within float32 rounding error), and so may the float
path where torch's float32 accumulation differs from the exact sum. Exact real-valued ties are
common in untrained networks (zero biases and default BN put v* at 0, which z = 2s/255 - sum(w)
reaches), rare in trained ones (0 of 10,000 MNIST test predictions differ in the tests).
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch

from ..engine.graph import conv_output_size
from ..errors import ExportError
from .folding import INT32_MAX, INT32_MIN, decide

# Boundary search range: decisions for |pre-activation| > 1e30 are taken as constant.
_V_LIMIT = 1e30


def _float_key(v: np.ndarray) -> np.ndarray:
    """Order-preserving int64 key of float32 values."""
    bits = np.asarray(v, np.float32).view(np.int32).astype(np.int64)
    return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def _key_float(key: np.ndarray) -> np.ndarray:
    bits = np.where(key < 0, (-key) | 0x80000000, key).astype(np.uint32)
    return bits.view(np.float32)


def boundaries(block, out: int):
    """Per channel: boundary v* (float32) of the pre-BN value, and flip.

    Rising channels: +1 iff v >= v*; falling (flipped): +1 iff v <= v*; constant: v* = -inf
    (always +1) or +inf (never).
    """
    def decide_at(values: np.ndarray) -> np.ndarray:
        return decide(block, torch.from_numpy(np.ascontiguousarray(values, np.float32))).numpy()

    lo = np.full((1, out), -_V_LIMIT, np.float32)
    hi = np.full((1, out), _V_LIMIT, np.float32)
    d_lo, d_hi = decide_at(lo)[0], decide_at(hi)[0]
    lo_key, hi_key = _float_key(lo[0]), _float_key(hi[0])
    moving = d_lo != d_hi
    # invariant on moving channels: decide(lo_key) == d_lo, decide(hi_key) != d_lo
    while np.any(hi_key - lo_key > 1):
        mid = (lo_key + hi_key) // 2
        d_mid = decide_at(_key_float(mid)[None, :])[0]
        same = d_mid == d_lo
        lo_key = np.where(moving & same, mid, lo_key)
        hi_key = np.where(moving & ~same, mid, hi_key)
        lo_key = np.where(moving, lo_key, hi_key - 1)  # settle constant channels
    rising = moving & ~d_lo
    falling = moving & d_lo
    v = np.where(d_lo, np.float32(-np.inf), np.float32(np.inf)).astype(np.float32)  # constants
    v[rising] = _key_float(hi_key)[rising]
    v[falling] = _key_float(lo_key)[falling]
    _spot_check(block, decide_at, v, rising, falling, d_lo)
    return v, falling


def _spot_check(block, decide_at, v, rising, falling, constant_value) -> None:
    """Monotonicity of the first layer's decision: check it on a wide grid and around v*."""
    grid = np.concatenate([-np.logspace(-6, 29, 200), [0.0], np.logspace(-6, 29, 200),
                           np.linspace(-1000, 1000, 401)]).astype(np.float32)
    values = np.repeat(grid[:, None], len(v), axis=1)
    finite = np.isfinite(v)
    near = np.stack([np.nextafter(v, -np.inf), v, np.nextafter(v, np.inf)]).astype(np.float32)
    near[:, ~finite] = 0.0
    values = np.concatenate([values, near])
    got = decide_at(values)
    want = np.where(rising, values >= v, np.where(falling, values <= v, constant_value))
    bad = np.nonzero(np.any(got != want, axis=0))[0]
    if bad.size:
        raise ExportError(f"layer {block.path!r}: the float model's sign decision is not monotone "
                          f"in the pre-activation for channel {int(bad[0])}; it cannot be a threshold")


def integer_thresholds(scale: float, offsets, wsum, wpad, pad_value, bias, v, flip) -> np.ndarray:
    """Exact integer thresholds on s = x_u8 . w for position classes.

    wsum (P, O, C): sum of the +-1 weights over the valid taps of each input channel;
    wpad (P, O): sum over the padded taps (which see ``pad_value``). The real pre-activation
    is scale*s + sum_c offsets[c]*wsum[c] + pad_value*wpad + bias; +1 iff it is >= v*
    (<= v* where flipped).
    """
    scale = Fraction(scale)
    offsets = [Fraction(o) for o in offsets]
    pad = Fraction(pad_value)
    n_pos, out = wpad.shape
    thresh = np.empty((n_pos, out), dtype=np.int64)
    for o in range(out):
        if not math.isfinite(float(v[o])):
            thresh[:, o] = INT32_MIN if v[o] < 0 else INT32_MAX
            continue
        target = Fraction(float(v[o])) - Fraction(float(bias[o]))
        for p in range(n_pos):
            const = pad * int(wpad[p, o]) + sum(
                (off * int(ws) for off, ws in zip(offsets, wsum[p, o])), Fraction(0))
            bound = (target - const) / scale
            t = math.floor(bound) if flip[o] else math.ceil(bound)
            thresh[p, o] = min(max(t, INT32_MIN), INT32_MAX)
    return thresh.astype(np.int32)


def border_classes(size: int, kernel: int, stride: int, padding: int, dilation: int):
    """Along one axis of a padded conv: ``(class index of each output position, the distinct
    in-bounds tap masks)``. Positions whose taps fall in the same places share a class."""
    n_out = conv_output_size(size, kernel, stride, padding, dilation)
    masks = [tuple(0 <= y * stride - padding + i * dilation < size for i in range(kernel))
             for y in range(n_out)]
    unique = sorted(set(masks))
    return [unique.index(m) for m in masks], unique


def conv_thresholds(scale: float, offsets, w, bias, v, flip, geometry, size, pad_value):
    """Thresholds per (row class, column class, channel) of a zero/value-padded first conv, and
    the class of each output row and column. ``geometry``: (kernel, stride, padding, dilation,
    groups); ``size``: the input's (H, W)."""
    kernel, stride, padding, dilation, groups = geometry
    rows, row_masks = border_classes(size[0], kernel[0], stride[0], padding[0], dilation[0])
    cols, col_masks = border_classes(size[1], kernel[1], stride[1], padding[1], dilation[1])
    out, cg = w.shape[0], w.shape[1]
    wl = w.long()
    wsum = np.zeros((len(row_masks), len(col_masks), out, len(offsets)), np.int64)
    wpad = np.zeros((len(row_masks), len(col_masks), out), np.int64)
    for r, rm in enumerate(row_masks):
        for q, cm in enumerate(col_masks):
            valid = torch.tensor([[a and b for b in cm] for a in rm])
            inside = (wl * valid).sum(dim=(2, 3))  # (O, Cg)
            wpad[r, q] = (wl * ~valid).sum(dim=(1, 2, 3)).numpy()
            # channel of input tap: group g of output o reads channels g*cg .. g*cg + cg - 1
            full = torch.zeros(out, cg * groups, dtype=torch.long)
            og = out // groups
            for g in range(groups):
                full[g * og:(g + 1) * og, g * cg:(g + 1) * cg] = inside[g * og:(g + 1) * og]
            if len(offsets) == 1:
                wsum[r, q, :, 0] = full.sum(1).numpy()
            else:
                wsum[r, q] = full.numpy()
    n_r, n_q = len(row_masks), len(col_masks)
    thresh = integer_thresholds(scale, offsets, wsum.reshape(n_r * n_q, out, -1),
                                wpad.reshape(n_r * n_q, out), pad_value, bias, v, flip)
    return thresh.reshape(n_r, n_q, out), np.array(rows, np.int32), np.array(cols, np.int32)
