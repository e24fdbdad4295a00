"""Compiled XNOR-popcount kernels (``binarynet.engine._core``) behind the reference's API.

Same names, signatures, validation and results as :mod:`binarynet.engine.reference` (the tests
check them bit for bit). This module validates with numpy (clear TypeError / ValueError naming the
argument), allocates the outputs and hands the buffers to the C core, which runs without the GIL
on its own thread pool (threads.c explains why not OpenMP). :func:`prepare` binds a kernel's
constant operands (a model's weights, thresholds, transform tensors) and checks them on the first
call per input shape only, so that the graph runner's calls check just their input.

The SIMD backend is a row of the C core's one ISA dispatch table (csrc/dispatch.c), which holds
for every op (popcount tiles, packing, bit planes, threshold rows, integer first layer) the
variant an instruction set allows: ``avx512`` (AVX-512 VPOPCNTDQ), ``avx2`` (nibble-LUT vpshufb
popcount) or ``portable`` (plain C, the reference the others are tested against). By default
the best row the CPU supports runs; the environment variable ``BINARYNET_KERNEL`` names another,
read on first use (so a bad value is a :class:`KernelChoiceError` the CLI prints as one line,
not an import failure), and :func:`set_backend` changes it at run time.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from binarynet.engine import _core
from binarynet.engine import float_conv_sign
from binarynet.engine import reference as _ref
from binarynet.engine.pool_float_checks import check_pool2d_float
from binarynet.engine.prepared import Prepared
from binarynet.engine.prepared import aligned as _aligned
from binarynet.engine.prepared import checked as _checked
from binarynet.engine.prepared import pad_bits_clear as _pad_bits_clear
from binarynet.engine.prepared import run_once as _run_once
from binarynet.errors import KernelChoiceError  # noqa: F401 (re-exported: kernels.KernelChoiceError)

BACKENDS = {"portable": _core.PORTABLE, "avx2": _core.AVX2, "avx512": _core.AVX512}
_BACKEND_NAMES = {code: name for name, code in BACKENDS.items()}
_PAD_MODES = {"zero": _core.PAD_ZERO, "one": _core.PAD_ONE, "minus_one": _core.PAD_MINUS_ONE}
_PACK_DTYPES = {np.dtype(np.float32): _core.F32, np.dtype(np.float64): _core.F64,
                np.dtype(np.int8): _core.I8, np.dtype(np.uint8): _core.U8}


# ----------------------------------------------------------------------------------------------
# backend and threads
# ----------------------------------------------------------------------------------------------
ENVIRONMENT_VARIABLE = "BINARYNET_KERNEL"
_environment_read = False  # BINARYNET_KERNEL applied (or overridden by set_backend)


def available_backends() -> list[str]:
    """Backends this CPU can run, slowest first (``portable`` is always there)."""
    return [name for name, code in BACKENDS.items() if _core.backend_supported(code)]


def _select(name, source: str) -> None:
    if name not in BACKENDS:
        raise KernelChoiceError(f"{source} must be one of {sorted(BACKENDS)}, got {name!r}")
    if not _core.backend_supported(BACKENDS[name]):
        raise KernelChoiceError(f"{source} {name!r}: this CPU cannot run it "
                                f"(available: {available_backends()})")
    _core.set_backend(BACKENDS[name])


def _apply_environment() -> None:
    """Select the row BINARYNET_KERNEL names; raises (on every call) while it is invalid."""
    global _environment_read
    name = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower()
    if name:
        _select(name, ENVIRONMENT_VARIABLE)
    _environment_read = True


def _after_environment(fn):
    """Run ``fn`` with the backend BINARYNET_KERNEL names (the first call applies it)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not _environment_read:
            _apply_environment()
        return fn(*args, **kwargs)
    return wrapper


def set_backend(name: str) -> None:
    """Force a backend: ``"portable"``, ``"avx2"`` or ``"avx512"`` (:class:`KernelChoiceError`,
    a ValueError, if unknown or unsupported). Takes precedence over ``BINARYNET_KERNEL``."""
    global _environment_read
    _select(name, "set_backend: backend")
    _environment_read = True


@_after_environment
def get_backend() -> str:
    """Name of the backend in use."""
    return _BACKEND_NAMES[_core.get_backend()]


def kernel_table() -> dict:
    """The C core's dispatch table for this CPU: ``{backend: {op: kernel variant}}`` for every
    supported backend, ops ``tiles``, ``pack``, ``planes``, ``threshold``, ``int_gemm``,
    ``transform`` (the fused output transforms and sign_pack), ``probe`` (the instructions
    :func:`xor_popcount_probe` measures: ``avx512vpopcntdq``, else the scalar ``popcnt``),
    ``first_dense_float``, ``conv2d_float``, ``pool_float`` (the real stream's pools)."""
    table = {}
    for name in available_backends():
        row = _core.kernel_table(BACKENDS[name])
        del row["isa"]
        table[name] = row
    return table


@_after_environment
def xor_popcount_probe(iterations: int, threads: int) -> int:
    """Run the in-register XOR + popcount + add microbenchmark and return the bit-MACs it did.

    No memory traffic: on the AVX-512 row, ``vpxorq`` + ``vpopcntq`` + ``vpaddq`` on 12
    independent zmm accumulators; on rows without AVX-512 VPOPCNTDQ, the scalar popcnt
    instruction on 64-bit registers (the best they have; ``kernel_table()[row]["probe"]`` names
    it). ``threads`` tasks of ``iterations`` steps each run on the engine's thread pool. Time the
    call (``binarynet.timing``) and divide: that is the peak rate the bit-GEMM kernels are
    measured against (docs/performance.md).
    """
    for name, value in (("iterations", iterations), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"xor_popcount_probe: {name} must be a positive int, got {value!r}")
    return _core.xor_popcount_probe(int(iterations), int(threads))


def set_num_threads(n) -> None:
    """Number of threads the kernels use (default: OMP_NUM_THREADS if set, else the usable cores)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    """Number of threads the kernels use."""
    return _core.get_num_threads()


@_after_environment
def cpu_features() -> dict:
    """What the CPU offers and what runs: ``{"avx2", "avx512_vpopcntdq", "backend", "threads"}``."""
    return {
        "avx2": bool(_core.backend_supported(_core.AVX2)),
        "avx512_vpopcntdq": bool(_core.backend_supported(_core.AVX512)),
        "backend": get_backend(),
        "threads": get_num_threads(),
    }


# ----------------------------------------------------------------------------------------------
# validation helpers (the reference's rules, with the pad-bit scan done in C: _pad_bits_clear;
# _aligned copies the rare unaligned operand: prepared.py)
# ----------------------------------------------------------------------------------------------
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


def _layout_bgemm(a, w, k):
    a, w, k = _ref._check_dense("bgemm", a, w, k, _pad_bits_clear)
    m, n, w = a.shape[0], w.shape[0], _aligned(w)

    def run(a, residual):
        out = np.empty((m, n), dtype=np.int32)
        _core.bgemm(a, w, m, n, k, out)
        return out
    return _checked(a, k, run)


@_after_environment
def bgemm_threshold(a, w, k, thresh, flip) -> np.ndarray:
    """Fused binary dense + batch-norm + sign -> packed uint64 (M, ceil(N/64)).

    Bit n of row m = ``dot[m, n] >= thresh[n]`` (``<=`` where ``flip[n]``); the int32 dot
    products only ever exist for one register tile.
    """
    return _run_once(_layout_bgemm_threshold(a, w, k, thresh, flip))


def _layout_bgemm_threshold(a, w, k, thresh, flip):
    a, w, k = _ref._check_dense("bgemm_threshold", a, w, k, _pad_bits_clear)
    thresh, flip = _ref._check_thresholds("bgemm_threshold", thresh, flip, w.shape[0])
    m, n, w, thresh = a.shape[0], w.shape[0], _aligned(w), _aligned(thresh)

    def run(a, residual):
        out = np.empty((m, _ref.words_for(n)), dtype=np.uint64)
        _core.bgemm_threshold(a, w, m, n, k, thresh, flip, out)
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
                              dilation=(1, 1), pad_mode="zero", pool=None):
    """bconv2d_threshold's checks and operands; with ``pool`` = (kernel, stride), those of
    bconv2d_threshold_maxpool (the same conv, pooled in the kernel)."""
    op = "bconv2d_threshold" if pool is None else "bconv2d_threshold_maxpool"
    x, w, geometry, mode, ho, wo = _conv_args(op, x, w, c, stride, padding, dilation, pad_mode)
    thresh, flip = _ref._check_thresholds(op, thresh, flip, w.shape[0])
    if pool is not None:
        pool_kernel, pool_stride, ho, wo = _ref._pool_geometry(op, ho, wo, *pool)
    shape = (x.shape[0], ho, wo, _ref.words_for(w.shape[0]))
    w, thresh = _aligned(w), _aligned(thresh)

    def run(x, residual):
        out = np.empty(shape, dtype=np.uint64)
        if pool is None:
            _core.bconv2d_threshold(x, w, geometry, mode, thresh, flip, out)
        else:
            _core.bconv2d_threshold_maxpool(x, w, geometry, mode, thresh, flip,
                                            pool_kernel + pool_stride, out)
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
                                      pad_mode="zero"):
    return _layout_bconv2d_threshold(x, w, c, thresh, flip, stride, padding, dilation, pad_mode,
                                     (pool_kernel, pool_stride))


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


def _first_layer(op, x_u8, w, k, prepared=(), pad_bits_clear=_pad_bits_clear) -> np.ndarray:
    """int32 (M, N) of the first-layer op ``op`` ("bitplane_gemm" or "int_gemm"); ``prepared``:
    its weight-only data from :func:`prepare_first_layer` (else made per call)."""
    x_u8, w, k = _ref._check_first_layer(op, x_u8, w, k, pad_bits_clear)
    out = np.empty((x_u8.shape[0], w.shape[0]), dtype=np.int32)
    getattr(_core, op)(x_u8, _aligned(w), x_u8.shape[0], w.shape[0], k, out, *prepared)
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


class FirstLayerWeights:
    """A first layer's packed +-1 weights (from :func:`prepare_first_layer`) whose weight-only
    work for :func:`first_layer_gemm` is done once, at the first call that needs it: for bit
    planes (and for float input) 255 popcount(w row) per output and the weights as panels; for
    the integer product the weights unpacked to int8 for the kernel's lanes (about 8 times the
    packed size). It holds its own copy of the weights, so later changes to the caller's array
    cannot desynchronise the two."""

    __slots__ = ("mode", "w", "k", "_made")

    def __init__(self, mode: str, w: np.ndarray, k: int):
        self.mode, self.w, self.k, self._made = mode, w, k, {}

    def data(self, kind: str) -> tuple:
        """The prepared buffers of ``kind``: "planes" (wpop, panels) or "quads" (lanes, quads);
        made at the first request (quads once per ISA row: their layout follows its lanes)."""
        key = kind if kind == "planes" else (kind, _core.get_backend())
        if key not in self._made:
            prepare = _core.bitplane_prepare if kind == "planes" else _core.int_prepare
            self._made[key] = prepare(self.w, self.w.shape[0], self.k)
        return self._made[key]


@_after_environment
def prepare_first_layer(w, k, mode: str = "bitplane") -> FirstLayerWeights:
    """Weights for :func:`first_layer_gemm`, which does once what :func:`bitplane_gemm`
    (``mode="bitplane"``), :func:`int_gemm` (``"int"``; uint8 input) and
    :func:`first_dense_float` (float input) redo from ``w`` on every call: at batch 1 that
    cost more than the product itself. Compiled kernels only (the runner uses it where a
    backend's kernels have it, the per-call ops elsewhere)."""
    op = FIRST_LAYER_MODES.get(mode) if isinstance(mode, str) else None
    if op is None:
        raise ValueError(f"prepare_first_layer: mode must be 'bitplane' or 'int', got {mode!r}")
    k = _ref._check_length("prepare_first_layer", "k", k)
    # x is checked per call; a zero row lets the layer's own checks validate w and k now (a k
    # over the limit is refused before the row is looked at)
    row = np.zeros((1, min(k, _ref.FIRST_LAYER_MAX_K + 1)), np.uint8)
    _, w, k = _ref._check_first_layer(op, row, w, k, _pad_bits_clear)
    return FirstLayerWeights(mode, w.copy(), k)


def _pad_bits_checked(arr, k) -> bool:
    return True  # prepare_first_layer checked them


@_after_environment
def first_layer_gemm(x, weights: FirstLayerWeights) -> np.ndarray:
    """The first layer's sums with weights from :func:`prepare_first_layer`, as the per-call
    ops give them: uint8 ``x`` -> int32, by :func:`bitplane_gemm` or :func:`int_gemm` (the
    weights' mode); float32/float64 ``x`` -> float64, by :func:`first_dense_float`."""
    if not isinstance(weights, FirstLayerWeights):
        raise TypeError(f"first_layer_gemm: weights must come from prepare_first_layer, got "
                        f"{type(weights).__name__}")
    if getattr(x, "dtype", None) in (np.float32, np.float64):
        return _first_dense_float(x, weights.w, weights.k, weights.data("planes")[1],
                                  _pad_bits_checked)
    op = FIRST_LAYER_MODES[weights.mode]
    data = weights.data("planes" if weights.mode == "bitplane" else "quads")
    return _first_layer(op, x, weights.w, weights.k, data, _pad_bits_checked)


def _first_dense_float(x, w, k, panels=None, pad_bits_clear=_pad_bits_clear) -> np.ndarray:
    x, w, k = _ref._check_first_dense_float(x, w, k, pad_bits_clear)
    out = np.empty((x.shape[0], w.shape[0]), dtype=np.float64)
    _core.first_dense_float(_aligned(x), x.dtype == np.float64, _aligned(w), x.shape[0],
                            w.shape[0], k, out, panels)
    return out


@_after_environment
def first_dense_float(x, w, k) -> np.ndarray:
    """Real-valued input layer: float64 (M, N) = sum_i x_mi * w_ni, w packed +-1 (N, ceil(k/64)),
    x float32 or float64 (M, k). Four inputs at a time by table lookup (csrc/float_layer.c: with
    AVX-512 one vpermt2pd + one add per 32 multiply-accumulates); float64 sums in no particular
    order, exact for integer-valued inputs."""
    return _first_dense_float(x, w, k)


@_after_environment
def int_conv_threshold(x_u8, w, kernel, thresh, flip, row_class, col_class, stride=(1, 1),
                       padding=(0, 0), dilation=(1, 1)) -> np.ndarray:
    """Fused first conv of uint8 NCHW images -> packed bits (N, Ho, Wo, ceil(O/64)); see the
    reference. Patches, integer products (:func:`int_gemm`'s kernels) and the per-class
    thresholds run per block of pixels in cache: neither the patch matrix nor the int32 sums
    are written to memory."""
    return _run_once(_layout_int_conv_threshold(x_u8, w, kernel, thresh, flip, row_class,
                                                col_class, stride, padding, dilation))


def _layout_int_conv_threshold(x_u8, w, kernel, thresh, flip, row_class, col_class,
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


def _transform_run(op, x, k, checked, out_shape, geometry):
    """The checked call of the C core's transform kernel ``op(x, *geometry, kinds, params,
    residual, y, thresh, flip, bits)``: kinds (bytes) and params (float32 rows, in step order)
    made once, y and bits allocated per run."""
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
        getattr(_core, op)(x, *geometry, kinds, params, residual, y, thresh, flip, bits)
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
                              padding=(0, 0), dilation=(1, 1), pad_mode="zero"):
    op = "bconv2d_transform"
    x, w, geometry, mode, ho, wo = _conv_args(op, x, w, c, stride, padding, dilation, pad_mode)
    shape = (x.shape[0], ho, wo, w.shape[0])
    checked = _ref._check_transform(op, w.shape[0], shape, scale, shift, steps, residual,
                                    sign_thresh, sign_flip, float_out)
    return _transform_run(op, x, c, checked, shape,
                          (_aligned(w), geometry, mode))


@_after_environment
def bgemm_transform(a, w, k, scale, shift, *, steps=(), residual=None, sign_thresh=None,
                    sign_flip=None, float_out=True):
    """Binary dense with its fused float32 output transform -> (y (M, N) or None, bits or None);
    see :func:`binarynet.engine.reference.bgemm_transform`."""
    return _run_once(_layout_bgemm_transform(
        a, w, k, scale, shift, steps=steps, residual=residual, sign_thresh=sign_thresh,
        sign_flip=sign_flip, float_out=float_out), residual)


def _layout_bgemm_transform(a, w, k, scale, shift, *, steps=(), residual=None, sign_thresh=None,
                            sign_flip=None, float_out=True):
    a, w, k = _ref._check_dense("bgemm_transform", a, w, k, _pad_bits_clear)
    shape = (a.shape[0], w.shape[0])
    checked = _ref._check_transform("bgemm_transform", w.shape[0], shape, scale, shift, steps,
                                    residual, sign_thresh, sign_flip, float_out)
    return _transform_run("bgemm_transform", a, k, checked, shape,
                          (_aligned(w), shape[0], shape[1], k))


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
_LAYOUTS = {"bgemm": _layout_bgemm, "bgemm_threshold": _layout_bgemm_threshold,
            "bconv2d_threshold": _layout_bconv2d_threshold,
            "bconv2d_threshold_maxpool": _layout_bconv2d_threshold_maxpool,
            "bmaxpool2d": _layout_bmaxpool2d, "bconv2d_transform": _layout_bconv2d_transform,
            "bgemm_transform": _layout_bgemm_transform, "sign_pack": _layout_sign_pack,
            "int_conv_threshold": _layout_int_conv_threshold}


@_after_environment
def prepare(name: str, *operands, **options) -> Prepared:
    """``name``'s kernel (one of ``bgemm``, ``bgemm_threshold``, ``bconv2d_threshold``,
    ``bconv2d_threshold_maxpool``, ``bmaxpool2d``, ``bconv2d_transform``, ``bgemm_transform``,
    ``sign_pack``, ``int_conv_threshold``) with every operand after x bound:
    ``prepare(name, *operands, **options)(x)`` returns ``name(x, *operands, **options)``; a
    transform's ``residual`` varies per call: ``prepared(x, residual)``. The first call with
    an input shape checks everything, as the public function does, and lays the constant
    operands out for the C core; later calls with that shape check only what can differ: x's
    (and the residual's) dtype, contiguity, alignment and pad bits (anything else goes through
    the full checks again, raising the public function's errors). The bound operands must not
    change afterwards (the graph runner binds a model's tensors, checked at load)."""
    if name not in _LAYOUTS:
        raise ValueError(f"prepare: name must be one of {sorted(_LAYOUTS)}, got {name!r}")
    if "residual" in options:
        raise TypeError("prepare: the residual varies per call: pass it to the prepared call")
    return Prepared(name, _LAYOUTS[name], operands, options)


# ----------------------------------------------------------------------------------------------
# real-valued convolution (csrc/float_conv.c)
# ----------------------------------------------------------------------------------------------
@_after_environment
def conv2d_float(x, weight, bias, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, *,
                 panels=None) -> np.ndarray:
    """float32 convolution with zero padding -> (N, Ho, Wo, O); see
    :func:`binarynet.engine.reference.conv2d_float` (bit for bit: float64 sums in a fixed
    order). Direct (no patch matrix, no BLAS), output channels across the vector lanes; a dense
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
    """Run ``iterations`` in-register float64 multiply-add steps per thread on ``threads``
    threads of the pool (12 zmm chains on the AVX-512 row, scalar ones elsewhere: the
    instructions conv2d_float's kernel of that row uses) and return the multiply-adds done;
    time the call for this CPU's float64 FMA peak, the ceiling of conv2d_float."""
    for name, value in (("iterations", iterations), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"fma_probe: {name} must be a positive int, got {value!r}")
    return _core.fma_probe(int(iterations), int(threads))


conv2d_float_panels = _ref.conv2d_float_panels  # a numpy re-layout: one implementation


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
