"""Compiled XNOR-popcount kernels (``binarynet.engine._core``) behind the reference's API.

Same names, signatures, validation and results as :mod:`binarynet.engine.reference` (the tests
check them bit for bit). This module validates with numpy (clear TypeError / ValueError naming the
argument), allocates the outputs and hands the buffers to the C core, which runs without the GIL
on its own thread pool (threads.c explains why not OpenMP).

The SIMD backend is chosen at import: the best the CPU supports (``avx512``: AVX-512 VPOPCNTDQ,
``avx2``: nibble-LUT vpshufb popcount, ``portable``: scalar C), or the one named by the
environment variable ``BINARYNET_KERNEL``; :func:`set_backend` changes it at run time.
"""
from __future__ import annotations

import os

import numpy as np

from binarynet.engine import _core
from binarynet.engine import reference as _ref

BACKENDS = {"portable": _core.PORTABLE, "avx2": _core.AVX2, "avx512": _core.AVX512}
_BACKEND_NAMES = {code: name for name, code in BACKENDS.items()}
_PAD_MODES = {"zero": _core.PAD_ZERO, "one": _core.PAD_ONE, "minus_one": _core.PAD_MINUS_ONE}
_PACK_DTYPES = {np.dtype(np.float32): _core.F32, np.dtype(np.float64): _core.F64,
                np.dtype(np.int8): _core.I8, np.dtype(np.uint8): _core.U8}


# ----------------------------------------------------------------------------------------------
# backend and threads
# ----------------------------------------------------------------------------------------------
def available_backends() -> list[str]:
    """Backends this CPU can run, slowest first (``portable`` is always there)."""
    return [name for name, code in BACKENDS.items() if _core.backend_supported(code)]


def set_backend(name: str) -> None:
    """Force a backend: ``"portable"``, ``"avx2"`` or ``"avx512"`` (ValueError if unsupported)."""
    if name not in BACKENDS:
        raise ValueError(f"set_backend: backend must be one of {sorted(BACKENDS)}, got {name!r}")
    if not _core.backend_supported(BACKENDS[name]):
        raise ValueError(f"set_backend: this CPU cannot run the {name!r} backend "
                         f"(available: {available_backends()})")
    _core.set_backend(BACKENDS[name])


def get_backend() -> str:
    """Name of the backend in use."""
    return _BACKEND_NAMES[_core.get_backend()]


def set_num_threads(n) -> None:
    """Number of threads the kernels use (default: OMP_NUM_THREADS if set, else the usable cores)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    """Number of threads the kernels use."""
    return _core.get_num_threads()


def cpu_features() -> dict:
    """What the CPU offers and what runs: ``{"avx2", "avx512_vpopcntdq", "backend", "threads"}``."""
    return {
        "avx2": bool(_core.backend_supported(_core.AVX2)),
        "avx512_vpopcntdq": bool(_core.backend_supported(_core.AVX512)),
        "backend": get_backend(),
        "threads": get_num_threads(),
    }


def _backend_from_environment() -> None:
    name = os.environ.get("BINARYNET_KERNEL", "").strip().lower()
    if not name:
        return
    if name not in BACKENDS:
        raise ValueError(f"BINARYNET_KERNEL must be one of {sorted(BACKENDS)}, got {name!r}")
    set_backend(name)


_backend_from_environment()


# ----------------------------------------------------------------------------------------------
# validation helpers (the reference's rules, with the pad-bit scan done in C)
# ----------------------------------------------------------------------------------------------
def _pad_bits_clear(arr: np.ndarray, k: int) -> bool:
    return _core.pad_bits_clear(arr, arr.size // arr.shape[-1], k)


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
    _core.pack(x, code, x.size // k, k, out)
    return out


def unpack(p, k) -> np.ndarray:
    """Inverse of :func:`pack` on signs: uint64 ``(..., ceil(k/64))`` -> int8 ``(..., k)`` of +-1."""
    p, k = _ref._check_unpack_input(p, k)
    p = np.ascontiguousarray(p)
    out = np.empty(p.shape[:-1] + (k,), dtype=np.int8)
    _core.unpack(p, p.size // p.shape[-1], k, out)
    return out


def bgemm(a, w, k) -> np.ndarray:
    """Binary GEMM: ``out[m, n] = k - 2 * popcount(a[m] XOR w[n])`` = sum_i a_mi * w_ni over +-1.

    a: uint64 (M, ceil(k/64)), w: uint64 (N, ceil(k/64)) -> int32 (M, N).
    """
    a, w, k = _ref._check_dense("bgemm", a, w, k, _pad_bits_clear)
    out = np.empty((a.shape[0], w.shape[0]), dtype=np.int32)
    _core.bgemm(a, w, a.shape[0], w.shape[0], k, out)
    return out


def bgemm_threshold(a, w, k, thresh, flip) -> np.ndarray:
    """Fused binary dense + batch-norm + sign -> packed uint64 (M, ceil(N/64)).

    Bit n of row m = ``dot[m, n] >= thresh[n]`` (``<=`` where ``flip[n]``); the int32 dot
    products only ever exist for one register tile.
    """
    a, w, k = _ref._check_dense("bgemm_threshold", a, w, k, _pad_bits_clear)
    thresh, flip = _ref._check_thresholds("bgemm_threshold", thresh, flip, w.shape[0])
    out = np.empty((a.shape[0], _ref.words_for(w.shape[0])), dtype=np.uint64)
    _core.bgemm_threshold(a, w, a.shape[0], w.shape[0], k, thresh, flip, out)
    return out


def bconv2d(x, w, c, stride=(1, 1), padding=(0, 0), dilation=(1, 1), pad_mode="zero") -> np.ndarray:
    """Binary conv over channel-packed NHWC maps -> int32 (N, Ho, Wo, O); see the reference."""
    x, w, geometry, mode, ho, wo = _conv_args("bconv2d", x, w, c, stride, padding, dilation,
                                              pad_mode)
    out = np.empty((x.shape[0], ho, wo, w.shape[0]), dtype=np.int32)
    _core.bconv2d(x, w, geometry, mode, out)
    return out


def bconv2d_threshold(x, w, c, thresh, flip, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                      pad_mode="zero") -> np.ndarray:
    """Fused binary conv + batch-norm + sign -> packed uint64 (N, Ho, Wo, ceil(O/64))."""
    op = "bconv2d_threshold"
    x, w, geometry, mode, ho, wo = _conv_args(op, x, w, c, stride, padding, dilation, pad_mode)
    thresh, flip = _ref._check_thresholds(op, thresh, flip, w.shape[0])
    out = np.empty((x.shape[0], ho, wo, _ref.words_for(w.shape[0])), dtype=np.uint64)
    _core.bconv2d_threshold(x, w, geometry, mode, thresh, flip, out)
    return out


def bconv2d_threshold_maxpool(x, w, c, thresh, flip, pool_kernel, pool_stride, stride=(1, 1),
                              padding=(0, 0), dilation=(1, 1), pad_mode="zero") -> np.ndarray:
    """Fused conv -> max-pool -> batch-norm -> sign -> packed uint64 (N, Hp, Wp, ceil(O/64)).

    Pooling happens inside the kernel on the thresholded bits (OR / AND by ``flip``).
    """
    op = "bconv2d_threshold_maxpool"
    x, w, geometry, mode, ho, wo = _conv_args(op, x, w, c, stride, padding, dilation, pad_mode)
    thresh, flip = _ref._check_thresholds(op, thresh, flip, w.shape[0])
    pool_kernel, pool_stride, hp, wp = _ref._pool_geometry(op, ho, wo, pool_kernel, pool_stride)
    out = np.empty((x.shape[0], hp, wp, _ref.words_for(w.shape[0])), dtype=np.uint64)
    _core.bconv2d_threshold_maxpool(x, w, geometry, mode, thresh, flip,
                                    pool_kernel + pool_stride, out)
    return out


def bmaxpool2d(x, kernel, stride, flip, c) -> np.ndarray:
    """Max-pool of thresholded bit maps: OR where flip is False, AND where True -> packed maps."""
    x, kernel, stride, flip, c = _ref._check_bmaxpool2d(x, kernel, stride, flip, c,
                                                        _pad_bits_clear)
    n, h, wd, cw = x.shape
    and_mask = pack(flip.view(np.int8) - np.int8(1))  # bit set where flip is True
    ho = (h - kernel[0]) // stride[0] + 1
    wo = (wd - kernel[1]) // stride[1] + 1
    out = np.empty((n, ho, wo, cw), dtype=np.uint64)
    _core.bmaxpool2d(x, (n, h, wd, c) + kernel + stride, and_mask, out)
    return out


def maxpool2d_int(x, kernel, stride) -> np.ndarray:
    """Integer max-pool over NHWC int32 maps (no padding, floor sizes) -> int32 (N, Ho, Wo, C)."""
    x = _ref._check_array("maxpool2d_int", "x", x, np.int32, 4)
    n, h, wd, c = x.shape
    kernel, stride, ho, wo = _ref._pool_geometry("maxpool2d_int", h, wd, kernel, stride)
    out = np.empty((n, ho, wo, c), dtype=np.int32)
    _core.maxpool2d_int(x, (n, h, wd, c) + kernel + stride, out)
    return out


def bitplane_gemm(x_u8, w, k) -> np.ndarray:
    """8-bit input layer by bit planes (paper §1.6): int32 (M, N) = sum_i w_ni * x_mi."""
    x_u8, w, k = _ref._check_first_layer("bitplane_gemm", x_u8, w, k, _pad_bits_clear)
    out = np.empty((x_u8.shape[0], w.shape[0]), dtype=np.int32)
    _core.bitplane_gemm(x_u8, w, x_u8.shape[0], w.shape[0], k, out)
    return out


def int_gemm(x_u8, w, k) -> np.ndarray:
    """Same result as :func:`bitplane_gemm` by a direct integer product: uint8 inputs times
    +-1 int8 weights with output channels across the vector lanes (vpdpbusd on AVX-512 VNNI,
    vpmaddubsw on AVX2), exact int32."""
    x_u8, w, k = _ref._check_first_layer("int_gemm", x_u8, w, k, _pad_bits_clear)
    out = np.empty((x_u8.shape[0], w.shape[0]), dtype=np.int32)
    _core.int_gemm(x_u8, w, x_u8.shape[0], w.shape[0], k, out)
    return out


def threshold_pack(x, thresh, flip) -> np.ndarray:
    """Batch-norm + sign of int32 sums ``(..., N)`` -> packed uint64 ``(..., ceil(N/64))``.

    Bit n = ``x[..., n] >= thresh[n]`` (``<=`` where ``flip[n]``).
    """
    x, thresh, flip = _ref._check_threshold_pack(x, thresh, flip)
    x = np.ascontiguousarray(x)
    n = x.shape[-1]
    out = np.empty(x.shape[:-1] + (_ref.words_for(n),), dtype=np.uint64)
    _core.threshold_pack(x, x.size // n, n, thresh, flip, out)
    return out
