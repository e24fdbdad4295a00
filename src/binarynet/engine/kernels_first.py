"""Compiled first-layer kernels: real-valued or uint8 input against packed +-1 weights.

The per-call ops (:func:`bitplane_gemm`, :func:`int_gemm`, :func:`first_dense_float`,
:func:`first_dense_float_sign`, :func:`int_conv_threshold`) redo their weight-only work on
every call (for bit planes and float input 255 popcount(w row) per output and the weights as
panels; for the integer product the weights unpacked to int8 for the kernel's lanes); at batch 1
that cost more than the product itself. ``kernels.prepare("first_layer", w, k, mode=...)``
(:func:`bind_first_layer`, :func:`layout_first_layer`) and ``kernels.prepare(
"first_dense_float_sign", ...)`` do it once per model. Re-exported by
:mod:`binarynet.engine.kernels`.
"""
from __future__ import annotations

import numpy as np

from binarynet.engine import _core
from binarynet.engine import float_dense_sign as _dense_sign
from binarynet.engine import reference as _ref
from binarynet.engine.kernel_backend import after_environment as _after_environment
from binarynet.engine.prepared import aligned as _aligned
from binarynet.engine.prepared import checked as _checked
from binarynet.engine.prepared import pad_bits_clear as _pad_bits_clear
from binarynet.engine.prepared import run_once as _run_once

__all__ = ["bitplane_gemm", "int_gemm", "first_dense_float", "first_dense_float_sign",
           "int_conv_threshold", "FIRST_LAYER_MODES", "bind_first_layer", "layout_first_layer",
           "layout_int_conv_threshold", "bind_first_dense_float_sign",
           "layout_first_dense_float_sign"]


def _first_layer(op, x_u8, w, k) -> np.ndarray:
    """int32 (M, N) of the first-layer op ``op`` ("bitplane_gemm" or "int_gemm"), its
    weight-only data made in this call."""
    x_u8, w, k = _ref._check_first_layer(op, x_u8, w, k, _pad_bits_clear)
    out = np.empty((x_u8.shape[0], w.shape[0]), dtype=np.int32)
    getattr(_core, op)(x_u8, _aligned(w), x_u8.shape[0], w.shape[0], k, out)
    return out


@_after_environment
def bitplane_gemm(x_u8, w, k) -> np.ndarray:
    """8-bit input layer by bit planes (paper §1.6): int32 (M, N) = sum_i w_ni * x_mi."""
    return _first_layer("bitplane_gemm", x_u8, w, k)


@_after_environment
def int_gemm(x_u8, w, k) -> np.ndarray:
    """Same result as :func:`bitplane_gemm` by a direct integer product: uint8 inputs times
    +-1 int8 weights with output channels across the vector lanes (vpdpbusd on AVX-512 VNNI,
    vpmaddubsw on AVX2), exact int32."""
    return _first_layer("int_gemm", x_u8, w, k)



FIRST_LAYER_MODES = {"bitplane": "bitplane_gemm", "int": "int_gemm"}


class _FirstLayerWeights:
    """A first layer's packed +-1 weights and their weight-only data, made at the first call
    that needs it: "planes" (wpop, panels: bit planes and float input) or "quads" (lanes,
    quads: the integer product, once per ISA row, as their layout follows its lanes). It holds
    its own copy of the weights, so later changes to the caller's array cannot desynchronise
    the two."""

    __slots__ = ("mode", "w", "k", "_made")

    def __init__(self, mode: str, w: np.ndarray, k: int):
        self.mode, self.w, self.k, self._made = mode, w, k, {}

    def data(self, kind: str) -> tuple:
        key = kind if kind == "planes" else (kind, _core.get_backend())
        if key not in self._made:
            make = _core.bitplane_prepare if kind == "planes" else _core.int_prepare
            self._made[key] = make(self.w, self.w.shape[0], self.k)
        return self._made[key]


def bind_first_layer(w, k, mode: str = "bitplane") -> tuple:
    """The bound operands of ``prepare("first_layer", w, k, mode=mode)``, checked now (x is
    checked per call): ``((weights,), {})``. One prepared op for both input kinds, as the
    runner's first layer takes uint8 or float images into the same op and the bit planes'
    weight data serve both: uint8 x -> int32 by :func:`bitplane_gemm` (``mode="bitplane"``)
    or :func:`int_gemm` (``"int"``); float32/float64 x -> float64 by
    :func:`first_dense_float`."""
    op = FIRST_LAYER_MODES.get(mode) if isinstance(mode, str) else None
    if op is None:
        raise ValueError(f"prepare: first_layer mode must be 'bitplane' or 'int', got {mode!r}")
    k = _ref._check_length(op, "k", k)
    # a zero row lets the layer's own checks validate w and k now (a k over the limit is
    # refused before the row is looked at)
    row = np.zeros((1, min(k, _ref.FIRST_LAYER_MAX_K + 1)), np.uint8)
    _, w, k = _ref._check_first_layer(op, row, w, k, _pad_bits_clear)
    return (_FirstLayerWeights(mode, _aligned(w.copy()), k),), {}


def _pad_bits_checked(arr, k) -> bool:
    return True  # bind_first_layer checked the weights' pad bits


def layout_first_layer(x, weights: _FirstLayerWeights):
    """The prepared first layer's checks of x and its call (``prepared.Checked``)."""
    w, k = weights.w, weights.k
    if getattr(x, "dtype", None) in (np.float32, np.float64):
        x, w, k = _ref._check_first_dense_float(x, w, k, _pad_bits_checked)

        def run(x, residual):
            out = np.empty((x.shape[0], w.shape[0]), dtype=np.float64)
            _core.first_dense_float(x, x.dtype == np.float64, w, x.shape[0], w.shape[0], k,
                                    out, weights.data("planes")[1])
            return out
        return _checked(x, 0, run)
    op = FIRST_LAYER_MODES[weights.mode]
    kind = "planes" if weights.mode == "bitplane" else "quads"
    x, w, k = _ref._check_first_layer(op, x, w, k, _pad_bits_checked)

    def run(x, residual):
        out = np.empty((x.shape[0], w.shape[0]), dtype=np.int32)
        getattr(_core, op)(x, w, x.shape[0], w.shape[0], k, out, *weights.data(kind))
        return out
    return _checked(x, 0, run)


@_after_environment
def first_dense_float(x, w, k) -> np.ndarray:
    """Real-valued input layer: float64 (M, N) = sum_i x_mi * w_ni, w packed +-1 (N, ceil(k/64)),
    x float32 or float64 (M, k). Four inputs at a time by table lookup (csrc/float_layer.c: with
    AVX-512 one vpermt2pd + one add per 32 multiply-accumulates); float64 sums in no particular
    order, exact for integer-valued inputs."""
    x, w, k = _ref._check_first_dense_float(x, w, k, _pad_bits_clear)
    out = np.empty((x.shape[0], w.shape[0]), dtype=np.float64)
    _core.first_dense_float(_aligned(x), x.dtype == np.float64, _aligned(w), x.shape[0],
                            w.shape[0], k, out, None)
    return out


@_after_environment
def int_conv_threshold(x_u8, w, kernel, thresh, flip, row_class, col_class, stride=(1, 1),
                       padding=(0, 0), dilation=(1, 1)) -> np.ndarray:
    """Fused first conv of uint8 NCHW images -> packed bits (N, Ho, Wo, ceil(O/64)); see the
    reference. Patches, integer products (:func:`int_gemm`'s kernels) and the per-class
    thresholds run per block of pixels in cache: neither the patch matrix nor the int32 sums
    are written to memory."""
    return _run_once(layout_int_conv_threshold(x_u8, w, kernel, thresh, flip, row_class,
                                                col_class, stride, padding, dilation))


def layout_int_conv_threshold(x_u8, w, kernel, thresh, flip, row_class, col_class,
                               stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    (x_u8, w, thresh, flip, row_class, col_class, k, kernel, stride, padding, dilation, ho,
     wo) = _ref._check_int_conv_threshold(x_u8, w, kernel, thresh, flip, row_class, col_class,
                                          stride, padding, dilation, _pad_bits_clear)
    n, c, h, wd = x_u8.shape
    o = w.shape[0]
    geometry = (n, c, h, wd, o) + kernel + stride + padding + dilation
    shape = (n, ho, wo, _ref.words_for(o))
    operands = (_aligned(w), geometry, thresh.shape[0], thresh.shape[1], _aligned(thresh),
                _aligned(row_class), _aligned(col_class), flip)

    def run(x_u8, residual):
        out = np.empty(shape, dtype=np.uint64)
        _core.int_conv_threshold(x_u8, *operands, out)
        return out
    return _checked(x_u8, 0, run)


def _first_dense_float_panels(w, k) -> bytes:
    """first_dense_float_sign's kernel reads the weights as first_dense_float's panels."""
    return _core.bitplane_prepare(_aligned(w), w.shape[0], k)[1]


def layout_first_dense_float_sign(x, w, k, bias, thresh, flip, panels=None):
    """:func:`first_dense_float_sign`'s checks and call (``prepared.Checked``)."""
    x, w, k, bias, thresh, flip = _dense_sign.check(x, w, k, bias, thresh, flip,
                                                    _pad_bits_clear)
    operands = (_aligned(w), bias, thresh, flip.view(np.uint8))
    shape = (x.shape[0], _ref.words_for(w.shape[0]))

    def run(x, residual):
        out = np.empty(shape, dtype=np.uint64)
        _core.first_dense_float_sign(x, *operands, x.shape[0], w.shape[0], k, out, panels)
        return out
    return _checked(x, 0, run)


def bind_first_dense_float_sign(w, k, bias, thresh, flip) -> tuple:
    """The bound operands of ``prepare("first_dense_float_sign", w, k, bias, thresh, flip)``:
    checked now, on copies, with the panels made once."""
    _, w, k, bias, thresh, flip = _dense_sign.check(
        np.zeros((1, k), np.float32), w, k, bias, thresh, flip, _pad_bits_clear)
    w = _aligned(w.copy())
    return (w, k, bias.copy(), thresh.copy(), flip.copy(), _first_dense_float_panels(w, k)), {}


@_after_environment
def first_dense_float_sign(x, w, k, bias, thresh, flip) -> np.ndarray:
    """The sign bits of a float-input first dense layer, equal to
    :func:`binarynet.engine.float_dense_sign.first_dense_float_sign` (bit for bit: z = float32 of the
    float64 sums, plus the bias, against thresh), twice as fast as those sums: float32 tables
    and sums with a proven error bound, each output decided at both ends of it, and summed
    again in float64 only where the two ends disagree (a near-tie; csrc/float_layer.c says
    why this is exact). x float32 (M, k), w packed +-1 (N, ceil(k/64)), bias and thresh
    float32 (N,), flip bool (N,) or None. -> uint64 (M, ceil(N/64)). A caller that runs the
    layer many times prepares it (``kernels.prepare("first_dense_float_sign", w, k, ...)``:
    checks and weight panels once)."""
    return _run_once(layout_first_dense_float_sign(x, w, k, bias, thresh, flip))
