"""Plain-numpy reference of the engine's XNOR-popcount ops (the ground truth for the C core).

Every function here has the same name, signature, validation and result as its counterpart in
``binarynet.engine.kernels``; the tests check the two bit for bit. Conventions (docs/design.md):
bit 1 <=> +1 (value >= 0), bit 0 <=> -1; packing runs along the last axis into little-endian
uint64 words, LSB first (element i -> bit i % 64 of word i // 64); pad bits are 0 in both operands,
so a +-1 dot product of length K is ``K - 2 * popcount(a XOR w)`` with no correction.

Activations are NHWC with channels packed, ``(N, H, W, ceil(C/64))``; conv weights are
``(O, KH, KW, ceil(C/64))``; dense weights ``(N_out, ceil(K/64))``. Imports numpy only.
"""
from __future__ import annotations

import numpy as np

from . import float_conv, float_ops
from .graph import as_pair, conv_geometry

WORD_BITS = 64
INT32_MIN = int(np.iinfo(np.int32).min)
INT32_MAX = int(np.iinfo(np.int32).max)

_num_threads = 1


# ----------------------------------------------------------------------------------------------
# validation shared with kernels.py (one set of rules and messages for both implementations)
# ----------------------------------------------------------------------------------------------
def words_for(k: int) -> int:
    """Number of uint64 words holding ``k`` packed bits: ``ceil(k / 64)``."""
    return (k + WORD_BITS - 1) // WORD_BITS


def _check_length(op: str, name: str, value) -> int:
    """A bit length (k or c): a positive Python/numpy integer below 2**31."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__}")
    value = int(value)
    if not 1 <= value <= INT32_MAX:
        raise ValueError(f"{op}: {name} must be in [1, {INT32_MAX}], got {value}")
    return value


def _check_array(op: str, name: str, arr, dtype, ndim: int) -> np.ndarray:
    """A C-contiguous ndarray of exactly ``dtype`` and ``ndim`` dimensions (no silent copies)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype != dtype:
        raise TypeError(f"{op}: {name} must have dtype {np.dtype(dtype)}, got {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D, got shape {arr.shape}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{op}: {name} must be C-contiguous (use np.ascontiguousarray)")
    if arr.size == 0:
        raise ValueError(f"{op}: {name} must not be empty, got shape {arr.shape}")
    return arr


def _pad_mask(k: int) -> np.uint64:
    """Mask of the pad bits of the last word of a k-bit row (0 when k is a multiple of 64)."""
    used = k % WORD_BITS
    return np.uint64(0) if used == 0 else np.uint64(~((1 << used) - 1) & (2**64 - 1))


def _check_packed(op: str, name: str, arr, ndim: int, k: int, length_name: str = "k",
                  pad_bits_clear=None) -> np.ndarray:
    """A packed uint64 operand whose last axis holds ``ceil(k/64)`` words with zero pad bits.

    ``pad_bits_clear(arr, k) -> bool`` does the pad-bit test (kernels.py passes a compiled one).
    """
    arr = _check_array(op, name, arr, np.uint64, ndim)
    if arr.shape[-1] != words_for(k):
        raise ValueError(
            f"{op}: {name} last axis must hold ceil({length_name}/64) = {words_for(k)} words "
            f"for {length_name}={k}, got {arr.shape[-1]}")
    if not (pad_bits_clear or _pad_bits_clear)(arr, k):
        raise ValueError(f"{op}: {name} has pad bits set beyond {length_name}={k} in its last word "
                         "(pad bits must be 0)")
    return arr


def _pad_bits_clear(arr: np.ndarray, k: int) -> bool:
    mask = _pad_mask(k)
    return mask == 0 or not np.any(arr[..., -1] & mask)


def _check_thresholds(op: str, thresh, flip, n: int) -> tuple[np.ndarray, np.ndarray]:
    """thresh: integers in int32 range, shape (n,); flip: bool, shape (n,). Returns contiguous copies."""
    thresh = np.asarray(thresh)
    flip = np.asarray(flip)
    if thresh.dtype.kind not in "iu":
        raise TypeError(f"{op}: thresh must be an integer array, got dtype {thresh.dtype}")
    if thresh.shape != (n,):
        raise ValueError(f"{op}: thresh must have shape ({n},), got {thresh.shape}")
    if thresh.dtype != np.int32 and thresh.size and (int(thresh.min()) < INT32_MIN
                                                     or int(thresh.max()) > INT32_MAX):
        raise ValueError(f"{op}: thresh values must fit int32")
    if flip.dtype != np.bool_:
        raise TypeError(f"{op}: flip must be a bool array, got dtype {flip.dtype}")
    if flip.shape != (n,):
        raise ValueError(f"{op}: flip must have shape ({n},), got {flip.shape}")
    return np.ascontiguousarray(thresh, dtype=np.int32), np.ascontiguousarray(flip)


def _conv_geometry(op, x, w, c, stride, padding, dilation, pad_mode, pad_bits_clear=None):
    """Validate a binary conv's operands; returns (x, w, c, stride, padding, dilation, Ho, Wo)."""
    c = _check_length(op, "c", c)
    x = _check_packed(op, "x", x, 4, c, "c", pad_bits_clear)
    w = _check_packed(op, "w", w, 4, c, "c", pad_bits_clear)
    geometry = conv_geometry(op, x.shape, w.shape, stride, padding, dilation, pad_mode)
    return (x, w, c) + geometry


def _pool_geometry(op, h, w, kernel, stride):
    kernel = as_pair(op, "kernel", kernel, 1)
    stride = as_pair(op, "stride", stride, 1)
    if kernel[0] > h or kernel[1] > w:
        raise ValueError(f"{op}: pool kernel {kernel} is larger than the {h}x{w} input")
    return kernel, stride, (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1


# ----------------------------------------------------------------------------------------------
# bit helpers
# ----------------------------------------------------------------------------------------------
def _popcount(words: np.ndarray) -> np.ndarray:
    """Per-element popcount of a uint64 array, as int64."""
    return np.bitwise_count(words).astype(np.int64)


def _pack_bool(bits: np.ndarray) -> np.ndarray:
    """Pack a bool array (..., K) LSB-first into uint64 (..., ceil(K/64)); pad bits 0."""
    k = bits.shape[-1]
    nwords = words_for(k)
    padded = np.zeros(bits.shape[:-1] + (nwords * WORD_BITS,), dtype=np.bool_)
    padded[..., :k] = bits
    as_bytes = np.packbits(padded, axis=-1, bitorder="little")
    return np.ascontiguousarray(as_bytes).view("<u8").astype(np.uint64)


def _unpack_bool(p: np.ndarray, k: int) -> np.ndarray:
    as_bytes = np.ascontiguousarray(p.astype("<u8")).view(np.uint8)
    return np.unpackbits(as_bytes, axis=-1, count=k, bitorder="little").astype(np.bool_)


def _threshold_bits(dot: np.ndarray, thresh: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """out bit n = dot >= thresh[n], or dot <= thresh[n] where flip[n]; packed along the last axis."""
    dot = dot.astype(np.int64)
    bits = np.where(flip, dot <= thresh, dot >= thresh)
    return _pack_bool(bits)


# ----------------------------------------------------------------------------------------------
# public ops
# ----------------------------------------------------------------------------------------------
def _check_pack_input(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "iuf":
        raise TypeError(f"pack: x must be a real numeric array, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[-1] == 0 or x.size == 0:
        raise ValueError(f"pack: x must be non-empty with a non-empty last axis, got shape {x.shape}")
    return x


def _check_unpack_input(p, k) -> tuple[np.ndarray, int]:
    k = _check_length("unpack", "k", k)
    if not isinstance(p, np.ndarray) or p.dtype != np.uint64:
        raise TypeError(f"unpack: p must be a uint64 numpy array, got "
                        f"{getattr(p, 'dtype', type(p).__name__)}")
    if p.ndim < 1 or p.shape[-1] != words_for(k) or p.size == 0:
        raise ValueError(f"unpack: p last axis must hold ceil(k/64) = {words_for(k)} words for "
                         f"k={k}, got shape {p.shape}")
    return p, k


def pack(x) -> np.ndarray:
    """Binarise and pack: ``bit = (x >= 0)`` along the last axis -> uint64 ``(..., ceil(K/64))``.

    Accepts any real numeric array (bool and complex are refused). NaN is not >= 0, so it packs
    as -1. Pad bits of the last word are 0.
    """
    return _pack_bool(_check_pack_input(x) >= 0)


def unpack(p, k) -> np.ndarray:
    """Inverse of :func:`pack` on signs: uint64 ``(..., ceil(k/64))`` -> int8 ``(..., k)`` of +-1."""
    p, k = _check_unpack_input(p, k)
    bits = _unpack_bool(p, k)
    return np.where(bits, 1, -1).astype(np.int8)


def _check_dense(op, a, w, k, pad_bits_clear=None):
    k = _check_length(op, "k", k)
    a = _check_packed(op, "a", a, 2, k, "k", pad_bits_clear)
    w = _check_packed(op, "w", w, 2, k, "k", pad_bits_clear)
    return a, w, k


def bgemm(a, w, k) -> np.ndarray:
    """Binary GEMM: ``out[m, n] = k - 2 * popcount(a[m] XOR w[n])`` = sum_i a_mi * w_ni over +-1.

    a: uint64 (M, ceil(k/64)), w: uint64 (N, ceil(k/64)) -> int32 (M, N). (Paper §1.6 / docs/paper.md §5.2.)
    """
    a, w, k = _check_dense("bgemm", a, w, k)
    return _bgemm_counts_to_dot(a, w, k)


def _bgemm_counts_to_dot(a: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((a.shape[0], w.shape[0]), dtype=np.int64)
    rows = max(1, (1 << 22) // max(1, w.size))  # bound the (rows, N, KW) temporary
    for start in range(0, a.shape[0], rows):
        block = a[start:start + rows]
        out[start:start + rows] = _popcount(block[:, None, :] ^ w[None, :, :]).sum(axis=-1)
    return (k - 2 * out).astype(np.int32)


def bgemm_threshold(a, w, k, thresh, flip) -> np.ndarray:
    """Fused binary dense + batch-norm + sign (docs/paper.md §5.3).

    out bit n of row m = ``dot[m, n] >= thresh[n]`` (``<=`` where ``flip[n]``) with dot as in
    :func:`bgemm`; returns packed uint64 (M, ceil(N/64)). INT32_MIN / INT32_MAX thresholds make a
    channel constant.
    """
    a, w, k = _check_dense("bgemm_threshold", a, w, k)
    thresh, flip = _check_thresholds("bgemm_threshold", thresh, flip, w.shape[0])
    return _threshold_bits(_bgemm_counts_to_dot(a, w, k), thresh, flip)


def _conv_dot(x, w, c, stride, padding, dilation, pad_mode, ho, wo) -> np.ndarray:
    """Packed direct convolution: per tap, popcount(x_tap XOR w_tap) summed over taps and words."""
    n, h, wd, cw = x.shape
    o, kh, kw, _ = w.shape
    ph, pw = padding
    pad_word = _pack_bool(np.ones(c, dtype=np.bool_)) if pad_mode == "one" else np.zeros(cw, np.uint64)
    xp = np.empty((n, h + 2 * ph, wd + 2 * pw, cw), dtype=np.uint64)
    xp[...] = pad_word
    xp[:, ph:ph + h, pw:pw + wd] = x
    valid = np.zeros((h + 2 * ph, wd + 2 * pw), dtype=np.int64)
    valid[ph:ph + h, pw:pw + wd] = 1
    mismatches = np.zeros((n, ho, wo, o), dtype=np.int64)
    valid_taps = np.zeros((ho, wo), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dilation[0], i * dilation[0] + stride[0] * (ho - 1) + 1, stride[0])
            cols = slice(j * dilation[1], j * dilation[1] + stride[1] * (wo - 1) + 1, stride[1])
            tap = xp[:, rows, cols, :]  # (n, ho, wo, cw)
            counts = _popcount(tap[:, :, :, None, :] ^ w[None, None, None, :, i, j, :]).sum(-1)
            if pad_mode == "zero":  # padded taps contribute nothing
                counts *= valid[rows, cols][None, :, :, None]
                valid_taps += valid[rows, cols]
            else:
                valid_taps += 1
            mismatches += counts
    return valid_taps[None, :, :, None] * c - 2 * mismatches


def bconv2d(x, w, c, stride=(1, 1), padding=(0, 0), dilation=(1, 1), pad_mode="zero") -> np.ndarray:
    """Binary 2-D convolution over channel-packed NHWC maps (cross-correlation, as PyTorch's Conv2d).

    out[n, y, x, o] = sum over taps (i, j) and channels of x_val * w_val with +-1 values, i.e.
    per tap ``c - 2 * popcount(x_word XOR w_word)``. pad_mode "zero": padded taps contribute 0
    (dot over the valid taps, Kv = valid_taps * c); "one" / "minus_one": padded inputs are +1 / -1
    and every tap counts. x (N, H, W, ceil(c/64)), w (O, KH, KW, ceil(c/64)) -> int32 (N, Ho, Wo, O).
    """
    x, w, c, stride, padding, dilation, ho, wo = _conv_geometry(
        "bconv2d", x, w, c, stride, padding, dilation, pad_mode)
    return _conv_dot(x, w, c, stride, padding, dilation, pad_mode, ho, wo).astype(np.int32)


def bconv2d_threshold(x, w, c, thresh, flip, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                      pad_mode="zero") -> np.ndarray:
    """Fused :func:`bconv2d` + batch-norm + sign -> packed uint64 (N, Ho, Wo, ceil(O/64)).

    Bit o = ``dot >= thresh[o]`` (``<=`` where ``flip[o]``), as :func:`bgemm_threshold`.
    """
    x, w, c, stride, padding, dilation, ho, wo = _conv_geometry(
        "bconv2d_threshold", x, w, c, stride, padding, dilation, pad_mode)
    thresh, flip = _check_thresholds("bconv2d_threshold", thresh, flip, w.shape[0])
    dot = _conv_dot(x, w, c, stride, padding, dilation, pad_mode, ho, wo)
    return _threshold_bits(dot, thresh, flip)


def bconv2d_threshold_maxpool(x, w, c, thresh, flip, pool_kernel, pool_stride, stride=(1, 1),
                              padding=(0, 0), dilation=(1, 1), pad_mode="zero") -> np.ndarray:
    """Fused conv -> max-pool -> batch-norm -> sign (the paper's layer order) -> packed bits.

    Equals ``bmaxpool2d(bconv2d_threshold(...), pool_kernel, pool_stride, flip, O)``: thresholding
    is monotone, so sign(BN(max s)) is the OR of the per-position bits where BN keeps the order
    (flip False) and the AND where it reverses it (flip True). thresh / flip are the post-pool BN's.
    Returns uint64 (N, Hp, Wp, ceil(O/64)).
    """
    op = "bconv2d_threshold_maxpool"
    x, w, c, stride, padding, dilation, ho, wo = _conv_geometry(
        op, x, w, c, stride, padding, dilation, pad_mode)
    thresh, flip = _check_thresholds(op, thresh, flip, w.shape[0])
    pool_kernel, pool_stride, _, _ = _pool_geometry(op, ho, wo, pool_kernel, pool_stride)
    dot = _conv_dot(x, w, c, stride, padding, dilation, pad_mode, ho, wo)
    return _bit_pool(_threshold_bits(dot, thresh, flip), pool_kernel, pool_stride, flip)


def _bit_pool(x: np.ndarray, kernel, stride, flip: np.ndarray) -> np.ndarray:
    kh, kw = kernel
    sh, sw = stride
    ho = (x.shape[1] - kh) // sh + 1
    wo = (x.shape[2] - kw) // sw + 1
    windows = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
               for i in range(kh) for j in range(kw)]
    any_set = np.bitwise_or.reduce(windows)
    all_set = np.bitwise_and.reduce(windows)
    and_mask = _pack_bool(flip)
    return np.ascontiguousarray((any_set & ~and_mask) | (all_set & and_mask))


def bmaxpool2d(x, kernel, stride, flip, c) -> np.ndarray:
    """Max-pool of thresholded binary maps (no padding, floor sizes as PyTorch's MaxPool2d).

    Exact because thresholding is monotone: per channel OR of the window's bits where flip is
    False (bit = s >= t), AND where flip is True (bit = s <= t). x uint64 (N, H, W, ceil(c/64)),
    flip bool (c,) -> uint64 (N, Ho, Wo, ceil(c/64)).
    """
    x, kernel, stride, flip, c = _check_bmaxpool2d(x, kernel, stride, flip, c)
    return _bit_pool(x, kernel, stride, flip)


def _check_bmaxpool2d(x, kernel, stride, flip, c, pad_bits_clear=None):
    c = _check_length("bmaxpool2d", "c", c)
    x = _check_packed("bmaxpool2d", "x", x, 4, c, "c", pad_bits_clear)
    kernel, stride, _, _ = _pool_geometry("bmaxpool2d", x.shape[1], x.shape[2], kernel, stride)
    _, flip = _check_thresholds("bmaxpool2d", np.zeros(c, np.int32), flip, c)
    return x, kernel, stride, flip, c


def maxpool2d_int(x, kernel, stride) -> np.ndarray:
    """Integer max-pool over NHWC int32 maps (no padding, floor sizes) -> int32 (N, Ho, Wo, C)."""
    x = _check_array("maxpool2d_int", "x", x, np.int32, 4)
    (kh, kw), (sh, sw), ho, wo = _pool_geometry("maxpool2d_int", x.shape[1], x.shape[2], kernel,
                                                stride)
    windows = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
               for i in range(kh) for j in range(kw)]
    return np.ascontiguousarray(np.maximum.reduce(windows))


FIRST_LAYER_MAX_K = INT32_MAX // 255  # |sum_i w_i x_i| <= 255 k must fit int32


def _check_first_layer(op, x_u8, w, k, pad_bits_clear=None):
    k = _check_length(op, "k", k)
    if k > FIRST_LAYER_MAX_K:
        raise ValueError(f"{op}: k must be <= {FIRST_LAYER_MAX_K} so the int32 sums cannot "
                         f"overflow, got {k}")
    x_u8 = _check_array(op, "x_u8", x_u8, np.uint8, 2)
    if x_u8.shape[1] != k:
        raise ValueError(f"{op}: x_u8 must have k={k} columns, got shape {x_u8.shape}")
    w = _check_packed(op, "w", w, 2, k, "k", pad_bits_clear)
    return x_u8, w, k


def bitplane_gemm(x_u8, w, k) -> np.ndarray:
    """8-bit input layer by bit planes (docs/paper.md §1.6): int32 (M, N) = sum_i w_ni * x_mi.

    s = sum_{n=0..7} 2^n * (x^n . w) with x^n the 0/1 bit plane n of the input; for a 0/1 plane b,
    b . w = 2 * popcount(b AND wbit) - popcount(b). x_u8 uint8 (M, k), w packed +-1 (N, ceil(k/64)).
    """
    x_u8, w, k = _check_first_layer("bitplane_gemm", x_u8, w, k)
    out = np.zeros((x_u8.shape[0], w.shape[0]), dtype=np.int64)
    for bit in range(8):
        plane = _pack_bool(((x_u8 >> bit) & 1).astype(np.bool_))  # (M, KW)
        ones = _popcount(plane).sum(-1)  # popcount(b)
        both = _popcount(plane[:, None, :] & w[None, :, :]).sum(-1)  # popcount(b AND wbit)
        out += (2 * both - ones[:, None]) << bit
    return out.astype(np.int32)


def int_gemm(x_u8, w, k) -> np.ndarray:
    """Same result as :func:`bitplane_gemm` by a direct integer product with the unpacked +-1 weights."""
    x_u8, w, k = _check_first_layer("int_gemm", x_u8, w, k)
    w_pm1 = unpack(w, k).astype(np.int64)
    return (x_u8.astype(np.int64) @ w_pm1.T).astype(np.int32)


def _check_first_dense_float(x, w, k, pad_bits_clear=None, op="first_dense_float"):
    k = _check_length(op, "k", k)
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: x must be a float32 or float64 numpy array, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    x = _check_array(op, "x", x, x.dtype, 2)
    if x.shape[1] != k:
        raise ValueError(f"{op}: x must have k={k} columns, got shape {x.shape}")
    w = _check_packed(op, "w", w, 2, k, "k", pad_bits_clear)
    return x, w, k


def first_dense_float(x, w, k) -> np.ndarray:
    """Real-valued input layer: float64 (M, N) = sum_i x_mi * w_ni with w the packed +-1 weights.

    x float32 or float64 (M, k), w uint64 (N, ceil(k/64)). Summed in float64 in no particular
    order (the runner rounds the result to float32); exact for integer-valued inputs.
    """
    x, w, k = _check_first_dense_float(x, w, k)
    return x.astype(np.float64) @ unpack(w, k).astype(np.float64).T


def _check_int_conv_threshold(x_u8, w, kernel, thresh, flip, row_class, col_class, stride,
                              padding, dilation, pad_bits_clear=None):
    """Validate a fused first conv; returns (x_u8, w, thresh, flip, row_class, col_class, k,
    (kh, kw), stride, padding, dilation, Ho, Wo)."""
    op = "int_conv_threshold"
    x_u8 = _check_array(op, "x_u8", x_u8, np.uint8, 4)
    n, c, h, wd = x_u8.shape
    kh, kw = as_pair(op, "kernel", kernel, 1)
    k = _check_length(op, "kh * kw * c", kh * kw * c)
    if k > FIRST_LAYER_MAX_K:
        raise ValueError(f"{op}: kh * kw * c must be <= {FIRST_LAYER_MAX_K} so the int32 sums "
                         f"cannot overflow, got {k}")
    w = _check_packed(op, "w", w, 2, k, "kh * kw * c", pad_bits_clear)
    o = w.shape[0]
    stride, padding, dilation, ho, wo = conv_geometry(op, (n, h, wd, c), (o, kh, kw, 0), stride,
                                                      padding, dilation, "zero")
    thresh = np.asarray(thresh)
    if thresh.dtype != np.int32 or thresh.ndim != 3 or thresh.shape[2] != o:
        raise ValueError(f"{op}: thresh must be int32 (row classes, column classes, {o}), got "
                         f"{thresh.dtype} {thresh.shape}")
    _, flip = _check_thresholds(op, np.zeros(o, np.int32), flip, o)
    classes = []
    for name, arr, size, bound in (("row_class", row_class, ho, thresh.shape[0]),
                                   ("col_class", col_class, wo, thresh.shape[1])):
        arr = np.asarray(arr)
        if arr.dtype != np.int32 or arr.shape != (size,):
            raise ValueError(f"{op}: {name} must be int32 of shape ({size},), got {arr.dtype} "
                             f"{arr.shape}")
        if arr.min() < 0 or arr.max() >= bound:
            raise ValueError(f"{op}: {name} values must index thresh (0..{bound - 1})")
        classes.append(np.ascontiguousarray(arr))
    return (x_u8, w, np.ascontiguousarray(thresh), flip, *classes, k, (kh, kw), stride, padding,
            dilation, ho, wo)


def int_conv_threshold(x_u8, w, kernel, thresh, flip, row_class, col_class, stride=(1, 1),
                       padding=(0, 0), dilation=(1, 1)) -> np.ndarray:
    """Fused first conv of uint8 images: zero-padded patches of NCHW ``x_u8`` (taps in
    (kh, kw, c) order), integer sums s with the packed +-1 weights w (O, ceil(KH*KW*C/64)), then
    bit o of pixel (y, x) = s >= thresh[row_class[y], col_class[x], o] (<= where flip[o]) ->
    packed uint64 (N, Ho, Wo, ceil(O/64)). thresh int32 (R, C, O); row_class / col_class int32
    (Ho,) / (Wo,) (the export's border classes)."""
    (x_u8, w, thresh, flip, row_class, col_class, k, (kh, kw), stride, padding, dilation, ho,
     wo) = _check_int_conv_threshold(x_u8, w, kernel, thresh, flip, row_class, col_class, stride,
                                     padding, dilation)
    n, c, h, wd = x_u8.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    padded = np.zeros((n, h + 2 * ph, wd + 2 * pw, c), np.uint8)
    padded[:, ph:ph + h, pw:pw + wd] = x_u8.transpose(0, 2, 3, 1)
    taps = [padded[:, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]
    patches = np.stack(taps, 3).reshape(n * ho * wo, k)
    s = int_gemm(np.ascontiguousarray(patches), w, k).reshape(n, ho, wo, -1).astype(np.int64)
    t = thresh[row_class[:, None], col_class[None, :]]  # (Ho, Wo, O)
    return _pack_bool(np.where(flip, s <= t, s >= t))


def threshold_pack(x, thresh, flip) -> np.ndarray:
    """Batch-norm + sign of integer sums, packed: int32 ``(..., N)`` -> uint64 ``(..., ceil(N/64))``.

    Bit n = ``x[..., n] >= thresh[n]`` (``<=`` where ``flip[n]``), as the fused kernels do; for
    sums computed apart (first layer, after :func:`maxpool2d_int`).
    """
    x, thresh, flip = _check_threshold_pack(x, thresh, flip)
    return _threshold_bits(x, thresh, flip)


def _check_threshold_pack(x, thresh, flip):
    if not isinstance(x, np.ndarray) or x.dtype != np.int32:
        raise TypeError(f"threshold_pack: x must be an int32 numpy array, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim < 1 or x.size == 0:
        raise ValueError(f"threshold_pack: x must be non-empty with at least 1 axis, got {x.shape}")
    thresh, flip = _check_thresholds("threshold_pack", thresh, flip, x.shape[-1])
    return x, thresh, flip


# ----------------------------------------------------------------------------------------------
# fused output transforms (the real-valued stream: docs/design.md; graph format 3)
# ----------------------------------------------------------------------------------------------
# step name -> number of per-channel float32 tensors it takes
TRANSFORM_STEPS = {"scale_shift": 2, "relu": 0, "prelu": 3, "add": 0}
MAX_TRANSFORM_STEPS = 63  # besides the layer's own scale/shift (the C core's BN_MAX_STEPS is 64)


def _check_channels_f32(op: str, name: str, arr, o: int) -> np.ndarray:
    """A per-channel float32 tensor of shape (o,) (no silent casts: they would change results)."""
    if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
        raise TypeError(f"{op}: {name} must be a float32 numpy array, got "
                        f"{getattr(arr, 'dtype', type(arr).__name__)}")
    if arr.shape != (o,):
        raise ValueError(f"{op}: {name} must have shape ({o},), got {arr.shape}")
    return np.ascontiguousarray(arr)


def _check_sign(op: str, thresh, flip, o: int, names=("sign_thresh", "sign_flip")):
    """thresh float32 (o,) (+-inf allowed, NaN not), flip bool (o,) or None (no flip)."""
    thresh = _check_channels_f32(op, names[0], thresh, o)
    if np.isnan(thresh).any():
        raise ValueError(f"{op}: {names[0]} must not contain NaN")
    if flip is None:
        return thresh, np.zeros(o, dtype=np.bool_)
    if not isinstance(flip, np.ndarray) or flip.dtype != np.bool_:
        raise TypeError(f"{op}: {names[1]} must be a bool numpy array, got "
                        f"{getattr(flip, 'dtype', type(flip).__name__)}")
    if flip.shape != (o,):
        raise ValueError(f"{op}: {names[1]} must have shape ({o},), got {flip.shape}")
    return thresh, np.ascontiguousarray(flip)


def _check_transform(op, o, out_shape, scale, shift, steps, residual, sign_thresh, sign_flip,
                     float_out):
    """Validate an output transform for outputs of ``out_shape`` (o channels last). Returns
    (steps with the layer's ("scale_shift", scale, shift) first, residual, thresh, flip, float_out)."""
    if not isinstance(float_out, (bool, np.bool_)):
        raise TypeError(f"{op}: float_out must be a bool, got {type(float_out).__name__}")
    if not isinstance(steps, (tuple, list)):
        raise TypeError(f"{op}: steps must be a tuple of step tuples, got {type(steps).__name__}")
    if len(steps) > MAX_TRANSFORM_STEPS:
        raise ValueError(f"{op}: at most {MAX_TRANSFORM_STEPS} steps, got {len(steps)}")
    checked = [("scale_shift", _check_channels_f32(op, "scale", scale, o),
                _check_channels_f32(op, "shift", shift, o))]
    for i, step in enumerate(steps):
        if not isinstance(step, (tuple, list)) or not step or step[0] not in TRANSFORM_STEPS:
            raise ValueError(f"{op}: steps[{i}] must be a tuple starting with one of "
                             f"{sorted(TRANSFORM_STEPS)}, got {step!r:.60}")
        name, params = step[0], tuple(step[1:])
        if len(params) != TRANSFORM_STEPS[name]:
            raise ValueError(f"{op}: steps[{i}] {name!r} takes {TRANSFORM_STEPS[name]} tensors, "
                             f"got {len(params)}")
        checked.append((name,) + tuple(_check_channels_f32(op, f"steps[{i}] tensor {j}", p, o)
                                       for j, p in enumerate(params)))
    adds = sum(step[0] == "add" for step in checked)
    if adds > 1:
        raise ValueError(f"{op}: at most one 'add' step, got {adds}")
    if (residual is None) != (adds == 0):
        raise ValueError(f"{op}: residual must be given exactly when there is an 'add' step")
    if residual is not None:
        residual = _check_array(op, "residual", residual, np.float32, len(out_shape))
        if residual.shape != tuple(out_shape):
            raise ValueError(f"{op}: residual must have the output's shape {tuple(out_shape)}, "
                             f"got {residual.shape}")
    if sign_thresh is None and sign_flip is not None:
        raise ValueError(f"{op}: sign_flip given without sign_thresh")
    thresh = flip = None
    if sign_thresh is not None:
        thresh, flip = _check_sign(op, sign_thresh, sign_flip, o)
    if not float_out and thresh is None:
        raise ValueError(f"{op}: nothing to return: set float_out or give sign_thresh")
    return checked, residual, thresh, flip, bool(float_out)


def _apply_transform(s: np.ndarray, steps, residual, thresh, flip, float_out):
    """float32(s), then each step as numpy float32 ops; -> (y or None, packed signs or None)."""
    with np.errstate(all="ignore"):  # inf / NaN propagate as in the kernels
        y = s.astype(np.float32)
        for name, *params in steps:
            if name == "scale_shift":
                y = y * params[0] + params[1]
            elif name == "relu":
                y = np.maximum(y, np.float32(0))
            elif name == "prelu":
                z = y + params[0]
                y = np.where(z > 0, z, params[1] * z) + params[2]
            else:  # "add"
                y = y + residual
        bits = None if thresh is None else _pack_bool(np.where(flip, y <= thresh, y >= thresh))
    return (np.ascontiguousarray(y, dtype=np.float32) if float_out else None), bits


def bconv2d_transform(x, w, c, scale, shift, *, steps=(), residual=None, sign_thresh=None,
                      sign_flip=None, float_out=True, stride=(1, 1), padding=(0, 0),
                      dilation=(1, 1), pad_mode="zero"):
    """:func:`bconv2d`, then its output transform, all float32 per element, in this order:
    y = float32(s) * scale + shift, then each of ``steps``: ``("relu",)``,
    ``("scale_shift", scale, shift)``, ``("prelu", shift_in, slope, shift_out)``, ``("add",)``
    (adds ``residual``, float32 (N, Ho, Wo, O); at most one). Returns (y float32 (N, Ho, Wo, O)
    if float_out else None, packed bits of sign(y) if sign_thresh is given else None): bit =
    y >= sign_thresh, y <= sign_thresh where sign_flip. Per-channel tensors are float32 (O,).
    """
    op = "bconv2d_transform"
    x, w, c, stride, padding, dilation, ho, wo = _conv_geometry(
        op, x, w, c, stride, padding, dilation, pad_mode)
    shape = (x.shape[0], ho, wo, w.shape[0])
    checked = _check_transform(op, w.shape[0], shape, scale, shift, steps, residual, sign_thresh,
                               sign_flip, float_out)
    dot = _conv_dot(x, w, c, stride, padding, dilation, pad_mode, ho, wo).astype(np.int32)
    return _apply_transform(dot, *checked)


def bgemm_transform(a, w, k, scale, shift, *, steps=(), residual=None, sign_thresh=None,
                    sign_flip=None, float_out=True):
    """:func:`bgemm`, then the output transform of :func:`bconv2d_transform` -> (y float32
    (M, N) or None, packed signs (M, ceil(N/64)) or None)."""
    a, w, k = _check_dense("bgemm_transform", a, w, k)
    checked = _check_transform("bgemm_transform", w.shape[0], (a.shape[0], w.shape[0]), scale,
                               shift, steps, residual, sign_thresh, sign_flip, float_out)
    return _apply_transform(_bgemm_counts_to_dot(a, w, k), *checked)


def _check_sign_pack(x, thresh, flip):
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise TypeError(f"sign_pack: x must be a float32 numpy array, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim < 1 or x.size == 0:
        raise ValueError(f"sign_pack: x must be non-empty with at least 1 axis, got {x.shape}")
    if flip is None:
        raise TypeError("sign_pack: flip must be a bool numpy array, got NoneType")
    thresh, flip = _check_sign("sign_pack", thresh, flip, x.shape[-1], ("thresh", "flip"))
    return x, thresh, flip


def sign_pack(x, thresh, flip) -> np.ndarray:
    """Sign of float32 values, packed: ``(..., C)`` -> uint64 ``(..., ceil(C/64))``.

    Bit c = ``x[..., c] >= thresh[c]`` (``<=`` where ``flip[c]``); NaN gives 0. thresh float32
    (C,) (may be +-inf), flip bool (C,).
    """
    x, thresh, flip = _check_sign_pack(x, thresh, flip)
    return _pack_bool(np.where(flip, x <= thresh, x >= thresh))


# ----------------------------------------------------------------------------------------------
# real-valued convolution (conv_real and dense_real of graph format 3)
# ----------------------------------------------------------------------------------------------
def conv2d_float_panels(weight, groups):
    """:func:`conv2d_float`'s weights as the C kernel reads them (``panels``; float_conv.py)."""
    op = "conv2d_float_panels"
    weight, groups = _check_array(op, "weight", weight, np.float32, 4), _check_length(
        op, "groups", groups)
    if weight.shape[0] % groups:
        raise ValueError(f"{op}: groups = {groups} must divide the output channels {weight.shape[0]}")
    return float_conv.layout_panels(weight, groups)


def _check_conv2d_float(x, weight, bias, stride, padding, dilation, groups, panels):
    """Validate a float32 conv's operands -> (x, weight, bias, stride, padding, dilation,
    groups, Ho, Wo, panels (laid out when None))."""
    op = "conv2d_float"
    x = _check_array(op, "x", x, np.float32, 4)
    weight = _check_array(op, "weight", weight, np.float32, 4)
    groups = _check_length(op, "groups", groups)
    c, o = x.shape[3], weight.shape[0]
    if c % groups or o % groups:
        raise ValueError(f"{op}: groups = {groups} must divide the input channels {c} and the "
                         f"output channels {o}")
    if weight.shape[3] != c // groups:
        raise ValueError(f"{op}: weight must have C/groups = {c // groups} input channels, got "
                         f"shape {weight.shape}")
    bias = _check_channels_f32(op, "bias", bias, o)
    geometry = conv_geometry(op, x.shape, weight.shape, stride, padding, dilation, "zero")
    want = float_conv.panels_shape(weight.shape, groups)
    panels = float_conv.layout_panels(weight, groups) if panels is None else _check_array(
        op, "panels", panels, np.float32, len(want))
    if panels.shape != want:
        raise ValueError(f"{op}: panels must have shape {want} (conv2d_float_panels), got "
                         f"{panels.shape}")
    return (x, weight, bias, *geometry[:3], groups, *geometry[3:], panels)


def conv2d_float(x, weight, bias, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, *,
                 panels=None):
    """float32 convolution with zero padding: x (N, H, W, C) C-contiguous, weight
    (O, KH, KW, C/groups), bias (O,) -> (N, Ho, Wo, O); :func:`float_ops.conv_real` up to the
    sums, which are float32 fused multiply-adds in a fixed order (the compiled kernel's, bit for
    bit): y = bias, then for each tap (kh, kw) and each input channel ci of the group,
    y = fma(x, w, y) (:func:`float_conv.fma32`: one rounding a term). ``panels``: the weights
    laid out by :func:`conv2d_float_panels` (kept by a caller; only checked here)."""
    x, weight, bias, stride, padding, dilation, groups, ho, wo, _ = _check_conv2d_float(
        x, weight, bias, stride, padding, dilation, groups, panels)
    ph, pw = padding
    padded = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    return float_conv.float32_sums(padded, weight, bias, stride, dilation, (ho, wo), groups)


def set_num_threads(n) -> None:
    """Record a thread count (the numpy reference itself runs single-threaded)."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    _num_threads = int(n)


def get_num_threads() -> int:
    """The thread count last set with :func:`set_num_threads` (1 by default)."""
    return _num_threads


def cpu_features() -> dict:
    """The reference uses no SIMD: ``{"backend": "numpy"}``."""
    return {"backend": "numpy"}
