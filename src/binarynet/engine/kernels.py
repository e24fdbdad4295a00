"""Compiled XNOR-popcount kernels (``binarynet.engine._core``) behind the reference's API.

Same names, signatures, validation and results as :mod:`binarynet.engine.reference` (the tests
check them bit for bit). This module validates with numpy (clear TypeError / ValueError naming the
argument), allocates the outputs and hands the buffers to the C core, which runs without the GIL
on its own thread pool (threads.c explains why not OpenMP). :func:`prepare` binds a kernel's
constant operands (a model's weights, thresholds, transform tensors) and checks them on the first
call per input shape only, so that the graph runner's calls check just their input.

The ops of the binary stream are here; this module also re-exports, as ``kernels.X``, the
backend and threads (:mod:`~binarynet.engine.kernel_backend`: which ISA row of the C core runs,
``BINARYNET_KERNEL``), the first-layer ops (:mod:`~binarynet.engine.kernels_first`) and those
of the real-valued stream (:mod:`~binarynet.engine.kernels_real`).
"""
from __future__ import annotations

import functools

import numpy as np

from binarynet.engine import _core
from binarynet.engine import reference as _ref
from binarynet.engine.kernel_backend import (  # noqa: F401 (re-exported: kernels.set_backend...)
    BACKENDS, ENVIRONMENT_VARIABLE, KernelChoiceError, available_backends, cpu_features,
    get_backend, get_num_threads, kernel_table, set_backend, set_num_threads, xor_popcount_probe)
from binarynet.engine.kernel_backend import after_environment as _after_environment
from binarynet.engine.kernels_first import (  # noqa: F401 (re-exported: kernels.int_gemm...)
    FIRST_LAYER_MODES, bitplane_gemm, first_dense_float, first_dense_float_sign,
    int_conv_threshold, int_gemm)
from binarynet.engine.kernels_first import (
    bind_first_dense_float_sign as _bind_first_dense_float_sign)
from binarynet.engine.kernels_first import bind_first_layer as _bind_first_layer
from binarynet.engine.kernels_first import (
    layout_first_dense_float_sign as _layout_first_dense_float_sign)
from binarynet.engine.kernels_first import layout_first_layer as _layout_first_layer
from binarynet.engine.kernels_first import (
    layout_int_conv_threshold as _layout_int_conv_threshold)
from binarynet.engine.kernels_real import (  # noqa: F401 (re-exported: kernels.conv2d_float...)
    avgpool2d_float, conv2d_float, conv2d_float_panels, conv2d_float_sign,
    conv2d_float_sign_panels, fma_probe,
    global_avgpool_float, maxpool2d_float)
from binarynet.engine.prepared import Prepared
from binarynet.engine.prepared import aligned as _aligned
from binarynet.engine.prepared import checked as _checked
from binarynet.engine.prepared import pad_bits_clear as _pad_bits_clear
from binarynet.engine.prepared import run_once as _run_once

_PAD_MODES = {"zero": _core.PAD_ZERO, "one": _core.PAD_ONE, "minus_one": _core.PAD_MINUS_ONE}
_PACK_DTYPES = {np.dtype(np.float32): _core.F32, np.dtype(np.float64): _core.F64,
                np.dtype(np.int8): _core.I8, np.dtype(np.uint8): _core.U8}


# ----------------------------------------------------------------------------------------------
# validation helpers (the reference's rules, with the pad-bit scan done in C: _pad_bits_clear;
# _aligned copies the rare unaligned operand: prepared.py)
# ----------------------------------------------------------------------------------------------
def _conv_tables(w, geometry, mode, once):
    """() -> the extra arguments of a binary conv's C call: with ``once`` (prepared calls) its
    weight tables (wpre, panels, kvec: conv_plan.c) made at the first call on each ISA row
    (whether panels are made follows the row) and kept, at batch 1 a fifth of an 8x8 layer's
    time; else none (the C core makes them per call)."""
    if not once:
        return tuple
    made = {}

    def tables():
        row = _core.get_backend()
        if row not in made:
            made[row] = _core.conv_prepare(w, geometry, mode)
        return made[row]
    return tables


def _dense_tables(w, m, n, k, once):
    """As :func:`_conv_tables` for a binary dense of m rows: its one table, the weights repacked
    as panels (AVX-512, 32 rows or more), those of the 1x1 conv of m pixels."""
    tables = _conv_tables(w, (m, 1, 1, k, n, 1, 1, 1, 1, 0, 0, 1, 1), _core.PAD_ZERO, once)
    return lambda: tables()[1:2]


def _conv_args(op, x, w, c, stride, padding, dilation, pad_mode):
    x, w, c, stride, padding, dilation, ho, wo = _ref._conv_geometry(
        op, x, w, c, stride, padding, dilation, pad_mode, _pad_bits_clear)
    n, h, wd, _ = x.shape
    o, kh, kw, _ = w.shape
    geometry = (n, h, wd, c, o, kh, kw, stride[0], stride[1], padding[0], padding[1],
                dilation[0], dilation[1])
    return x, w, geometry, _PAD_MODES[pad_mode], ho, wo


# ----------------------------------------------------------------------------------------------
# ops
# ----------------------------------------------------------------------------------------------
@_after_environment
def pack(x) -> np.ndarray:
    """Binarise and pack: ``bit = (x >= 0)`` along the last axis -> uint64 ``(..., ceil(K/64))``.

    float32 / float64 / int8 / uint8 are packed in C directly; other real dtypes go through
    their sign test first. NaN packs as -1, -0.0 as +1 (numpy's ``>=``).
    """
    x = _ref._check_pack_input(x)
    code = _PACK_DTYPES.get(x.dtype)
    if code is None:  # e.g. float16, int32: 0 where x >= 0 else -1, as int8
        x = (x >= 0).view(np.int8) - np.int8(1)
        code = _core.I8
    x = np.ascontiguousarray(x)
    k = x.shape[-1]
    out = np.empty(x.shape[:-1] + (_ref.words_for(k),), dtype=np.uint64)
    _core.pack(_aligned(x), code, x.size // k, k, out)
    return out


@_after_environment
def unpack(p, k) -> np.ndarray:
    """Inverse of :func:`pack` on signs: uint64 ``(..., ceil(k/64))`` -> int8 ``(..., k)`` of +-1."""
    p, k = _ref._check_unpack_input(p, k)
    p = np.ascontiguousarray(p)
    out = np.empty(p.shape[:-1] + (k,), dtype=np.int8)
    _core.unpack(_aligned(p), p.size // p.shape[-1], k, out)
    return out


@_after_environment
def bgemm(a, w, k) -> np.ndarray:
    """Binary GEMM: ``out[m, n] = k - 2 * popcount(a[m] XOR w[n])`` = sum_i a_mi * w_ni over +-1.

    a: uint64 (M, ceil(k/64)), w: uint64 (N, ceil(k/64)) -> int32 (M, N).
    """
    return _run_once(_layout_bgemm(a, w, k))


def _layout_bgemm(a, w, k, *, tables_once=False):
    a, w, k = _ref._check_dense("bgemm", a, w, k, _pad_bits_clear)
    m, n, w = a.shape[0], w.shape[0], _aligned(w)
    tables = _dense_tables(w, m, n, k, tables_once)

    def run(a, residual):
        out = np.empty((m, n), dtype=np.int32)
        _core.bgemm(a, w, m, n, k, out, *tables())
        return out
    return _checked(a, k, run)


@_after_environment
def bgemm_threshold(a, w, k, thresh, flip) -> np.ndarray:
    """Fused binary dense + batch-norm + sign -> packed uint64 (M, ceil(N/64)).

    Bit n of row m = ``dot[m, n] >= thresh[n]`` (``<=`` where ``flip[n]``); the int32 dot
    products only ever exist for one register tile.
    """
    return _run_once(_layout_bgemm_threshold(a, w, k, thresh, flip))


def _layout_bgemm_threshold(a, w, k, thresh, flip, *, tables_once=False):
    a, w, k = _ref._check_dense("bgemm_threshold", a, w, k, _pad_bits_clear)
    thresh, flip = _ref._check_thresholds("bgemm_threshold", thresh, flip, w.shape[0])
    m, n, w, thresh = a.shape[0], w.shape[0], _aligned(w), _aligned(thresh)
    tables = _dense_tables(w, m, n, k, tables_once)

    def run(a, residual):
        out = np.empty((m, _ref.words_for(n)), dtype=np.uint64)
        _core.bgemm_threshold(a, w, m, n, k, thresh, flip, out, *tables())
        return out
    return _checked(a, k, run)


@_after_environment
def bconv2d(x, w, c, stride=(1, 1), padding=(0, 0), dilation=(1, 1), pad_mode="zero") -> np.ndarray:
    """Binary conv over channel-packed NHWC maps -> int32 (N, Ho, Wo, O); see the reference."""
    x, w, geometry, mode, ho, wo = _conv_args("bconv2d", x, w, c, stride, padding, dilation,
                                              pad_mode)
    out = np.empty((x.shape[0], ho, wo, w.shape[0]), dtype=np.int32)
    _core.bconv2d(_aligned(x), _aligned(w), geometry, mode, out)
    return out


@_after_environment
def bconv2d_threshold(x, w, c, thresh, flip, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                      pad_mode="zero") -> np.ndarray:
    """Fused binary conv + batch-norm + sign -> packed uint64 (N, Ho, Wo, ceil(O/64))."""
    return _run_once(_layout_bconv2d_threshold(x, w, c, thresh, flip, stride, padding, dilation,
                                               pad_mode))


def _layout_bconv2d_threshold(x, w, c, thresh, flip, stride=(1, 1), padding=(0, 0),
                              dilation=(1, 1), pad_mode="zero", pool=None, *, tables_once=False):
    """bconv2d_threshold's checks and operands; with ``pool`` = (kernel, stride), those of
    bconv2d_threshold_maxpool (the same conv, pooled in the kernel); ``tables_once``: the
    weight tables made once (_conv_tables)."""
    op = "bconv2d_threshold" if pool is None else "bconv2d_threshold_maxpool"
    x, w, geometry, mode, ho, wo = _conv_args(op, x, w, c, stride, padding, dilation, pad_mode)
    thresh, flip = _ref._check_thresholds(op, thresh, flip, w.shape[0])
    if pool is not None:
        pool_kernel, pool_stride, ho, wo = _ref._pool_geometry(op, ho, wo, *pool)
    shape = (x.shape[0], ho, wo, _ref.words_for(w.shape[0]))
    w, thresh = _aligned(w), _aligned(thresh)
    tables = _conv_tables(w, geometry, mode, tables_once)

    def run(x, residual):
        out = np.empty(shape, dtype=np.uint64)
        if pool is None:
            _core.bconv2d_threshold(x, w, geometry, mode, thresh, flip, out, *tables())
        else:
            _core.bconv2d_threshold_maxpool(x, w, geometry, mode, thresh, flip,
                                            pool_kernel + pool_stride, out, *tables())
        return out
    return _checked(x, c, run)


@_after_environment
def bconv2d_threshold_maxpool(x, w, c, thresh, flip, pool_kernel, pool_stride, stride=(1, 1),
                              padding=(0, 0), dilation=(1, 1), pad_mode="zero") -> np.ndarray:
    """Fused conv -> max-pool -> batch-norm -> sign -> packed uint64 (N, Hp, Wp, ceil(O/64)).

    Pooling happens inside the kernel on the thresholded bits (OR / AND by ``flip``).
    """
    return _run_once(_layout_bconv2d_threshold_maxpool(
        x, w, c, thresh, flip, pool_kernel, pool_stride, stride, padding, dilation, pad_mode))


def _layout_bconv2d_threshold_maxpool(x, w, c, thresh, flip, pool_kernel, pool_stride,
                                      stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                                      pad_mode="zero", *, tables_once=False):
    return _layout_bconv2d_threshold(x, w, c, thresh, flip, stride, padding, dilation, pad_mode,
                                     (pool_kernel, pool_stride), tables_once=tables_once)


@_after_environment
def bmaxpool2d(x, kernel, stride, flip, c) -> np.ndarray:
    """Max-pool of thresholded bit maps: OR where flip is False, AND where True -> packed maps."""
    return _run_once(_layout_bmaxpool2d(x, kernel, stride, flip, c))


def _layout_bmaxpool2d(x, kernel, stride, flip, c):
    x, kernel, stride, flip, c = _ref._check_bmaxpool2d(x, kernel, stride, flip, c,
                                                        _pad_bits_clear)
    n, h, wd, cw = x.shape
    and_mask = pack(flip.view(np.int8) - np.int8(1))  # bit set where flip is True
    shape = (n, (h - kernel[0]) // stride[0] + 1, (wd - kernel[1]) // stride[1] + 1, cw)
    geometry = (n, h, wd, c) + kernel + stride

    def run(x, residual):
        out = np.empty(shape, dtype=np.uint64)
        _core.bmaxpool2d(x, geometry, and_mask, out)
        return out
    return _checked(x, c, run)


@_after_environment
def maxpool2d_int(x, kernel, stride) -> np.ndarray:
    """Integer max-pool over NHWC int32 maps (no padding, floor sizes) -> int32 (N, Ho, Wo, C)."""
    x = _ref._check_array("maxpool2d_int", "x", x, np.int32, 4)
    n, h, wd, c = x.shape
    kernel, stride, ho, wo = _ref._pool_geometry("maxpool2d_int", h, wd, kernel, stride)
    out = np.empty((n, ho, wo, c), dtype=np.int32)
    _core.maxpool2d_int(_aligned(x), (n, h, wd, c) + kernel + stride, out)
    return out


@_after_environment
def threshold_pack(x, thresh, flip) -> np.ndarray:
    """Batch-norm + sign of int32 sums ``(..., N)`` -> packed uint64 ``(..., ceil(N/64))``.

    Bit n = ``x[..., n] >= thresh[n]`` (``<=`` where ``flip[n]``).
    """
    x, thresh, flip = _ref._check_threshold_pack(x, thresh, flip)
    x = np.ascontiguousarray(x)
    n = x.shape[-1]
    out = np.empty(x.shape[:-1] + (_ref.words_for(n),), dtype=np.uint64)
    _core.threshold_pack(_aligned(x), x.size // n, n, _aligned(thresh), flip, out)
    return out


# ----------------------------------------------------------------------------------------------
# fused output transforms (reference.bconv2d_transform documents the semantics)
# ----------------------------------------------------------------------------------------------
_STEP_CODES = {"scale_shift": 0, "relu": 1, "prelu": 2, "add": 3}  # csrc/core.h bn_step_kind


def _transform_run(op, x, k, checked, out_shape, geometry, tables=tuple):
    """The checked call of the C core's transform kernel ``op(x, *geometry, kinds, params,
    residual, y, thresh, flip, bits, *tables())``: kinds (bytes) and params (float32 rows, in
    step order) made once, y and bits allocated per run."""
    steps, residual, thresh, flip, float_out = checked
    kinds = bytes(_STEP_CODES[step[0]] for step in steps)
    params = np.array([p for step in steps for p in step[1:]])  # (rows, O): all (O,) float32
    bits_shape = out_shape[:-1] + (_ref.words_for(out_shape[-1]),)
    if thresh is not None:
        thresh, flip = _aligned(thresh), flip.view(np.uint8)

    def run(x, residual):
        y = np.empty(out_shape, dtype=np.float32) if float_out else None
        bits = None if thresh is None else np.empty(bits_shape, dtype=np.uint64)
        residual = None if residual is None else _aligned(residual)
        getattr(_core, op)(x, *geometry, kinds, params, residual, y, thresh, flip, bits,
                           *tables())
        return y, bits
    return _checked(x, k, run, None if residual is None else out_shape)


@_after_environment
def bconv2d_transform(x, w, c, scale, shift, *, steps=(), residual=None, sign_thresh=None,
                      sign_flip=None, float_out=True, stride=(1, 1), padding=(0, 0),
                      dilation=(1, 1), pad_mode="zero"):
    """Binary conv with its float32 output transform fused into the tiles' epilogue (no int32
    tensor, one write of y and/or the packed signs) -> (y or None, bits or None); see
    :func:`binarynet.engine.reference.bconv2d_transform`."""
    return _run_once(_layout_bconv2d_transform(
        x, w, c, scale, shift, steps=steps, residual=residual, sign_thresh=sign_thresh,
        sign_flip=sign_flip, float_out=float_out, stride=stride, padding=padding,
        dilation=dilation, pad_mode=pad_mode), residual)


def _layout_bconv2d_transform(x, w, c, scale, shift, *, steps=(), residual=None,
                              sign_thresh=None, sign_flip=None, float_out=True, stride=(1, 1),
                              padding=(0, 0), dilation=(1, 1), pad_mode="zero",
                              tables_once=False):
    op = "bconv2d_transform"
    x, w, geometry, mode, ho, wo = _conv_args(op, x, w, c, stride, padding, dilation, pad_mode)
    shape = (x.shape[0], ho, wo, w.shape[0])
    checked = _ref._check_transform(op, w.shape[0], shape, scale, shift, steps, residual,
                                    sign_thresh, sign_flip, float_out)
    w = _aligned(w)
    return _transform_run(op, x, c, checked, shape, (w, geometry, mode),
                          _conv_tables(w, geometry, mode, tables_once))


@_after_environment
def bgemm_transform(a, w, k, scale, shift, *, steps=(), residual=None, sign_thresh=None,
                    sign_flip=None, float_out=True):
    """Binary dense with its fused float32 output transform -> (y (M, N) or None, bits or None);
    see :func:`binarynet.engine.reference.bgemm_transform`."""
    return _run_once(_layout_bgemm_transform(
        a, w, k, scale, shift, steps=steps, residual=residual, sign_thresh=sign_thresh,
        sign_flip=sign_flip, float_out=float_out), residual)


def _layout_bgemm_transform(a, w, k, scale, shift, *, steps=(), residual=None, sign_thresh=None,
                            sign_flip=None, float_out=True, tables_once=False):
    a, w, k = _ref._check_dense("bgemm_transform", a, w, k, _pad_bits_clear)
    shape = (a.shape[0], w.shape[0])
    checked = _ref._check_transform("bgemm_transform", w.shape[0], shape, scale, shift, steps,
                                    residual, sign_thresh, sign_flip, float_out)
    w = _aligned(w)
    return _transform_run("bgemm_transform", a, k, checked, shape, (w, shape[0], shape[1], k),
                          _dense_tables(w, shape[0], shape[1], k, tables_once))


@_after_environment
def sign_pack(x, thresh, flip) -> np.ndarray:
    """Sign of float32 values, packed: ``(..., C)`` -> uint64 ``(..., ceil(C/64))``; bit c =
    ``x[..., c] >= thresh[c]`` (``<=`` where ``flip[c]``)."""
    return _run_once(_layout_sign_pack(x, thresh, flip))


def _layout_sign_pack(x, thresh, flip):
    x, thresh, flip = _ref._check_sign_pack(x, thresh, flip)
    x = np.ascontiguousarray(x)
    c = x.shape[-1]
    rows, shape = x.size // c, x.shape[:-1] + (_ref.words_for(c),)
    thresh, flip = _aligned(thresh), flip.view(np.uint8)

    def run(x, residual):
        out = np.empty(shape, dtype=np.uint64)
        _core.sign_pack(x, rows, c, thresh, flip, out)
        return out
    return _checked(x, 0, run)


# ----------------------------------------------------------------------------------------------
# prepared calls: a kernel's constant operands checked and laid out once, not on every call
# ----------------------------------------------------------------------------------------------
# The ops that can be prepared: name -> layout(x, *operands) (every check of the public
# function, which is its layout run once) -> (x as the C core takes it, a prepared.Checked).
# The binary convs' and denses' prepared calls also keep their weight tables (_conv_tables).
_LAYOUTS = {"bgemm": functools.partial(_layout_bgemm, tables_once=True),
            "bgemm_threshold": functools.partial(_layout_bgemm_threshold, tables_once=True),
            "bconv2d_threshold": functools.partial(_layout_bconv2d_threshold, tables_once=True),
            "bconv2d_threshold_maxpool": functools.partial(_layout_bconv2d_threshold_maxpool,
                                                           tables_once=True),
            "bmaxpool2d": _layout_bmaxpool2d,
            "bconv2d_transform": functools.partial(_layout_bconv2d_transform, tables_once=True),
            "bgemm_transform": functools.partial(_layout_bgemm_transform, tables_once=True),
            "sign_pack": _layout_sign_pack,
            "int_conv_threshold": _layout_int_conv_threshold,
            "first_layer": _layout_first_layer,
            "first_dense_float_sign": _layout_first_dense_float_sign}
# ops whose bound operands are turned once, at prepare, into what their layout takes
# (weight-only data made once per model rather than once per input shape)
_BINDS = {"first_layer": _bind_first_layer,
          "first_dense_float_sign": _bind_first_dense_float_sign}


@_after_environment
def prepare(name: str, *operands, **options) -> Prepared:
    """``name``'s kernel (one of ``bgemm``, ``bgemm_threshold``, ``bconv2d_threshold``,
    ``bconv2d_threshold_maxpool``, ``bmaxpool2d``, ``bconv2d_transform``, ``bgemm_transform``,
    ``sign_pack``, ``int_conv_threshold``, ``first_layer``, ``first_dense_float_sign``) with
    every operand after x bound:
    ``prepare(name, *operands, **options)(x)`` returns ``name(x, *operands, **options)``; a
    transform's ``residual`` varies per call: ``prepared(x, residual)``. The first call with
    an input shape checks everything, as the public function does, and lays the constant
    operands out for the C core; later calls with that shape check only what can differ: x's
    (and the residual's) dtype, contiguity, alignment and pad bits (anything else goes through
    the full checks again, raising the public function's errors). The bound operands must not
    change afterwards (the graph runner binds a model's tensors, checked at load). The binary
    convs and denses also keep the weight tables the C core would make on every call (panels,
    tap popcount prefix sums, border ks: about as many bytes again as their weights), made at
    the first call per input shape and ISA row.

    ``prepare("first_layer", w, k, mode="bitplane")`` is the first layer with its weight-only
    work done once (checked at prepare, on a copy of ``w``): uint8 x -> int32 sums as
    :func:`bitplane_gemm` (``mode="int"``: :func:`int_gemm`), float32/float64 x -> float64 as
    :func:`first_dense_float` (kernels_first.bind_first_layer says why one op for both).
    ``prepare("first_dense_float_sign", w, k, bias, thresh, flip)`` also makes the weight panels
    once."""
    if name not in _LAYOUTS:
        raise ValueError(f"prepare: name must be one of {sorted(_LAYOUTS)}, got {name!r}")
    if "residual" in options:
        raise TypeError("prepare: the residual varies per call: pass it to the prepared call")
    if name in _BINDS:
        operands, options = _BINDS[name](*operands, **options)
    return Prepared(name, _LAYOUTS[name], operands, options)
