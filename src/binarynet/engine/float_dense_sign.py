"""The float-input first dense layer with bits out: ``first_dense_float_sign``'s argument checks
and numpy twin (the compiled kernel is :func:`binarynet.engine.kernels.first_dense_float_sign`).

A first dense layer of a paper network (``first_dense`` of graph.py, float input, bits out)
computes z = float32(sum of x * w in float64) + float32 bias and keeps only the sign bit
z >= thresh (z <= thresh where flip). The twin does exactly that; the kernel gets the same bits
from float32 sums and their error bound, summing in float64 only the near-ties
(csrc/float_layer.c).
"""
from __future__ import annotations

import numpy as np

from . import reference as _ref

__all__ = ["check", "first_dense_float_sign"]


def check(x, w, k, bias, thresh, flip, pad_bits_clear=None):
    """Validate the operands -> (x, w, k, bias, thresh, flip)."""
    op = "first_dense_float_sign"
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise TypeError(f"{op}: x must be a float32 numpy array, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    x, w, k = _ref._check_first_dense_float(x, w, k, pad_bits_clear, op)
    bias = _ref._check_channels_f32(op, "bias", bias, w.shape[0])
    thresh, flip = _ref._check_sign(op, thresh, flip, w.shape[0], ("thresh", "flip"))
    return x, w, k, bias, thresh, flip


def first_dense_float_sign(x, w, k, bias, thresh, flip) -> np.ndarray:
    """A float-input first dense layer's sign bits: uint64 (M, ceil(N/64)), bit n of row m set
    where z >= thresh_n (z <= thresh_n where flip_n), z = float32(s_mn) + bias_n in float32 and
    s the float64 sums of :func:`binarynet.engine.reference.first_dense_float`. x float32
    (M, k), w packed +-1 (N, ...), bias and thresh float32 (N,) (thresh +-inf allowed), flip
    bool (N,) or None."""
    x, w, k, bias, thresh, flip = check(x, w, k, bias, thresh, flip)
    with np.errstate(all="ignore"):  # inf / NaN inputs decide as the comparisons say
        z = _ref.first_dense_float(x, w, k).astype(np.float32) + bias
    return _ref._pack_bool(np.where(flip, z <= thresh, z >= thresh))
