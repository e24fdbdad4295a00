"""CUDA backend of the packed engine: the ops of ``binarynet.engine.kernels`` on torch CUDA tensors.

Same names, arguments and results as the CPU kernels (and their numpy reference), with torch
tensors instead of numpy arrays, so the runner can switch backends by module:

    pack(x)                      real (..., K)            -> uint64 (..., ceil(K/64))
    unpack(p, k)                 uint64 (..., ceil(k/64)) -> int8 (..., k) of +-1
    bgemm(a, w, k)               uint64 (M, KW), (N, KW)  -> int32 (M, N) = k - 2 popc(a ^ w)
    bgemm_threshold(a, w, k, thresh, flip)                -> uint64 (M, ceil(N/64))
    bconv2d(x, w, c, stride, padding, dilation, pad_mode) -> int32 (N, Ho, Wo, O)
    bconv2d_threshold(x, w, c, thresh, flip, ...)         -> uint64 (N, Ho, Wo, ceil(O/64))

and the runner's smaller ops: threshold_pack, bmaxpool2d, bconv2d_threshold_maxpool,
maxpool2d_int, int_gemm and bitplane_gemm (the first layer, as an exact integer product).

Conventions (docs/design.md): bit 1 <=> +1 (value >= 0), LSB-first little-endian uint64 words
along the reduction axis, pad bits 0. Packed operands must come from :func:`pack` (or the CPU
engine): their pad bits are trusted, not checked, because checking them would need a
device-to-host synchronisation on every call. thresh is int32 (N,), flip bool (N,): out bit n is
``dot >= thresh[n]``, or ``dot <= thresh[n]`` where ``flip[n]`` (docs/paper.md §5.3).

The dense ops run on the 1-bit tensor-core kernel (``bmma``) when the GPU has it (sm_80+) and nvcc
can build it, else on Triton (:func:`gemm_engine` says which; ``BINARYNET_GPU_GEMM=triton`` or
``tensor_core`` forces one). Convolutions run on Triton. With ``TRITON_INTERPRET=1`` every op
also runs on CPU tensors (Triton's interpreter), which is how the test suite checks the kernels on
machines without a GPU.
"""
from __future__ import annotations

import os

import torch

from ..engine.graph import as_pair, conv_geometry
from . import bmma, triton_kernels

WORD_BITS = 64
INT32_MAX = 2**31 - 1
GEMM_ENGINES = ("triton", "tensor_core")

_PACKABLE = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.uint8,
             torch.int16, torch.int32, torch.int64)


def words_for(k: int) -> int:
    """Number of uint64 words holding k packed bits: ceil(k / 64)."""
    return (k + WORD_BITS - 1) // WORD_BITS


# ----------------------------------------------------------------------------------------------
# validation (messages follow binarynet.engine.reference)
# ----------------------------------------------------------------------------------------------
def _check_device(op: str, name: str, t: torch.Tensor) -> None:
    if t.device.type == "cuda":
        return
    if triton_kernels.INTERPRETED and t.device.type == "cpu":
        return
    raise ValueError(f"{op}: {name} must be a CUDA tensor, got device {t.device} "
                     "(CPU tensors run only under TRITON_INTERPRET=1)")


def _check_length(op: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__}")
    if not 1 <= value <= INT32_MAX:
        raise ValueError(f"{op}: {name} must be in [1, {INT32_MAX}], got {value}")
    return value


def _check_tensor(op: str, name: str, t, dtype: torch.dtype, ndim: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{op}: {name} must have dtype {dtype}, got {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{op}: {name} must be contiguous (use .contiguous())")
    if t.numel() == 0:
        raise ValueError(f"{op}: {name} must not be empty, got shape {tuple(t.shape)}")
    _check_device(op, name, t)
    return t


def _check_packed(op: str, name: str, t, ndim: int, k: int, length_name: str = "k") -> torch.Tensor:
    t = _check_tensor(op, name, t, torch.uint64, ndim)
    if t.shape[-1] != words_for(k):
        raise ValueError(f"{op}: {name} last axis must hold ceil({length_name}/64) = "
                         f"{words_for(k)} words for {length_name}={k}, got {t.shape[-1]}")
    return t


def _check_same_device(op: str, **tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"{op}: operands must be on one device, got "
                         + ", ".join(f"{n} on {d}" for n, d in devices.items()))


def _check_on(op: str, device: torch.device, **tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if t.device != device:
            raise ValueError(f"{op}: {name} must be on the operands' device {device}, "
                             f"got {t.device}")


def _check_thresholds(op: str, thresh, flip, n: int, device: torch.device):
    """thresh int32 (n,), flip bool (n,), on the operands' device; flip is passed on as int8."""
    if not isinstance(thresh, torch.Tensor) or thresh.dtype != torch.int32:
        raise TypeError(f"{op}: thresh must be an int32 torch tensor, got "
                        f"{getattr(thresh, 'dtype', type(thresh).__name__)}")
    if tuple(thresh.shape) != (n,):
        raise ValueError(f"{op}: thresh must have shape ({n},), got {tuple(thresh.shape)}")
    if not isinstance(flip, torch.Tensor) or flip.dtype != torch.bool:
        raise TypeError(f"{op}: flip must be a bool torch tensor, got "
                        f"{getattr(flip, 'dtype', type(flip).__name__)}")
    if tuple(flip.shape) != (n,):
        raise ValueError(f"{op}: flip must have shape ({n},), got {tuple(flip.shape)}")
    _check_on(op, device, thresh=thresh, flip=flip)
    return thresh.contiguous(), flip.to(torch.int8).contiguous()


def _conv_args(op, x, w, c, stride, padding, dilation, pad_mode):
    c = _check_length(op, "c", c)
    x = _check_packed(op, "x", x, 4, c, "c")
    w = _check_packed(op, "w", w, 4, c, "c")
    _check_same_device(op, x=x, w=w)
    stride, padding, dilation, _, _ = conv_geometry(op, tuple(x.shape), tuple(w.shape), stride, padding,
                                                    dilation, pad_mode)
    return x, w, c, stride, padding, dilation


def _words(t: torch.Tensor) -> torch.Tensor:
    """The int32 view of a packed uint64 tensor (same bits, twice the last axis)."""
    return t.view(torch.int32)


def _packed(words: torch.Tensor) -> torch.Tensor:
    """The uint64 view of int32 words (last axis even)."""
    return words.view(torch.uint64)


# ----------------------------------------------------------------------------------------------
# engine choice
# ----------------------------------------------------------------------------------------------
def gemm_engine(device: torch.device | str | None = None) -> str:
    """"tensor_core" (bmma.cu) or "triton": what :func:`bgemm` uses on ``device``.

    BINARYNET_GPU_GEMM=triton|tensor_core forces a choice (tensor_core raises if unavailable);
    otherwise the tensor cores when the GPU has the 1-bit MMA and nvcc builds the kernel.
    """
    forced = os.environ.get("BINARYNET_GPU_GEMM", "").strip().lower()
    if forced and forced not in GEMM_ENGINES:
        raise ValueError(f"BINARYNET_GPU_GEMM must be one of {GEMM_ENGINES}, got {forced!r}")
    if triton_kernels.INTERPRETED or (device is not None and torch.device(device).type != "cuda"):
        if forced == "tensor_core":
            raise ValueError("BINARYNET_GPU_GEMM=tensor_core needs a CUDA device "
                             "(not the interpreter)")
        return "triton"
    if forced == "triton":
        return "triton"
    if bmma.supported(device):
        return "tensor_core"
    if forced == "tensor_core":
        raise ValueError("BINARYNET_GPU_GEMM=tensor_core: this GPU or toolchain cannot run bmma.cu "
                         "(needs sm_80+ and nvcc)")
    return "triton"


# ----------------------------------------------------------------------------------------------
# public ops
# ----------------------------------------------------------------------------------------------
def pack(x: torch.Tensor) -> torch.Tensor:
    """Binarise and pack: ``bit = (x >= 0)`` along the last axis -> uint64 ``(..., ceil(K/64))``.

    x: a real tensor (float16/bfloat16/float32/float64/int8/uint8/int16/int32/int64). NaN is not
    >= 0, so it packs as -1. Pad bits of the last word are 0.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"pack: x must be a torch tensor, got {type(x).__name__}")
    if x.dtype not in _PACKABLE:
        raise TypeError(f"pack: x must be a real numeric tensor, got dtype {x.dtype}")
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"pack: x must have a non-empty last axis, got shape {tuple(x.shape)}")
    _check_device("pack", "x", x)
    k = x.shape[-1]
    rows = x.reshape(-1, k).contiguous()
    if rows.shape[0] == 0:
        return torch.empty(tuple(x.shape[:-1]) + (words_for(k),), dtype=torch.uint64,
                           device=x.device)
    words = triton_kernels.pack_words(rows, 2 * words_for(k))
    return _packed(words).reshape(tuple(x.shape[:-1]) + (words_for(k),))


def unpack(p: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`pack` on signs: uint64 ``(..., ceil(k/64))`` -> int8 ``(..., k)``, +-1."""
    k = _check_length("unpack", "k", k)
    if not isinstance(p, torch.Tensor) or p.dtype != torch.uint64:
        raise TypeError(f"unpack: p must be a uint64 torch tensor, got "
                        f"{getattr(p, 'dtype', type(p).__name__)}")
    if p.dim() < 1 or p.shape[-1] != words_for(k):
        raise ValueError(f"unpack: p last axis must hold ceil(k/64) = {words_for(k)} words for "
                         f"k={k}, got shape {tuple(p.shape)}")
    _check_device("unpack", "p", p)
    words = _words(p.contiguous())
    shifts = torch.arange(32, dtype=torch.int32, device=p.device)
    bits = (words.unsqueeze(-1) >> shifts) & 1
    bits = bits.reshape(tuple(p.shape[:-1]) + (-1,))[..., :k]
    return (2 * bits - 1).to(torch.int8)


def bgemm(a: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """Binary GEMM: ``out[m, n] = k - 2 * popcount(a[m] XOR w[n])`` = sum_i a_mi * w_ni over +-1.

    a: uint64 (M, ceil(k/64)), w: uint64 (N, ceil(k/64)) -> int32 (M, N). (docs/paper.md §5.2.)
    """
    k = _check_length("bgemm", "k", k)
    a = _check_packed("bgemm", "a", a, 2, k)
    w = _check_packed("bgemm", "w", w, 2, k)
    _check_same_device("bgemm", a=a, w=w)
    if gemm_engine(a.device) == "tensor_core":
        return bmma.bgemm_words(_words(a), _words(w), k)
    return triton_kernels.bgemm_words(_words(a), _words(w), k)


def bgemm_threshold(a: torch.Tensor, w: torch.Tensor, k: int, thresh: torch.Tensor,
                    flip: torch.Tensor) -> torch.Tensor:
    """Fused binary dense + batch-norm + sign (docs/paper.md §5.3) -> packed uint64 (M, ceil(N/64)).

    out bit n of row m = ``dot[m, n] >= thresh[n]`` (``<=`` where ``flip[n]``), dot as in
    :func:`bgemm`; the int32 products never leave the kernel. INT32_MIN / INT32_MAX thresholds
    make a channel constant.
    """
    op = "bgemm_threshold"
    k = _check_length(op, "k", k)
    a = _check_packed(op, "a", a, 2, k)
    w = _check_packed(op, "w", w, 2, k)
    _check_same_device(op, a=a, w=w)
    thresh, flip = _check_thresholds(op, thresh, flip, w.shape[0], a.device)
    if gemm_engine(a.device) == "tensor_core":
        words = bmma.bgemm_words(_words(a), _words(w), k, thresh, flip)
    else:
        words = triton_kernels.bgemm_words(_words(a), _words(w), k, thresh, flip)
    return _packed(words)


def bconv2d(x: torch.Tensor, w: torch.Tensor, c: int, stride=(1, 1), padding=(0, 0),
            dilation=(1, 1), pad_mode: str = "zero") -> torch.Tensor:
    """Binary 2-D convolution over channel-packed NHWC maps (cross-correlation, as torch.nn.Conv2d).

    out[n, y, x, o] = sum over taps and channels of x_val * w_val with +-1 values, i.e. per tap
    ``c - 2 * popcount(x_word XOR w_word)``. pad_mode "zero": padded taps contribute 0 (the dot
    runs over the valid taps, Kv = valid_taps * c); "one" / "minus_one": padded inputs are +1 / -1
    and every tap counts. x (N, H, W, ceil(c/64)), w (O, KH, KW, ceil(c/64))
    -> int32 (N, Ho, Wo, O).
    """
    x, w, c, stride, padding, dilation = _conv_args("bconv2d", x, w, c, stride, padding, dilation,
                                                    pad_mode)
    return triton_kernels.bconv2d_words(_words(x), _words(w), c, stride, padding, dilation,
                                        pad_mode)


def bconv2d_threshold(x: torch.Tensor, w: torch.Tensor, c: int, thresh: torch.Tensor,
                      flip: torch.Tensor, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                      pad_mode: str = "zero") -> torch.Tensor:
    """Fused :func:`bconv2d` + batch-norm + sign -> packed uint64 (N, Ho, Wo, ceil(O/64)).

    Bit o = ``dot >= thresh[o]`` (``<=`` where ``flip[o]``), as :func:`bgemm_threshold`.
    """
    op = "bconv2d_threshold"
    x, w, c, stride, padding, dilation = _conv_args(op, x, w, c, stride, padding, dilation,
                                                    pad_mode)
    thresh, flip = _check_thresholds(op, thresh, flip, w.shape[0], x.device)
    words = triton_kernels.bconv2d_words(_words(x), _words(w), c, stride, padding, dilation,
                                         pad_mode, thresh, flip)
    return _packed(words)


# ----------------------------------------------------------------------------------------------
# the rest of the runner's ops (element-wise or small next to the GEMMs: plain torch ops)
# ----------------------------------------------------------------------------------------------
def _pack_bool(bits: torch.Tensor) -> torch.Tensor:
    """Pack a bool tensor (..., N): True -> bit 1 (+1)."""
    return pack(bits.to(torch.int8) - 1)  # True -> 0 (>= 0, bit 1), False -> -1 (bit 0)


def threshold_pack(x: torch.Tensor, thresh: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Batch-norm + sign of int32 sums computed apart: ``(..., N)`` -> uint64 ``(..., ceil(N/64))``.

    Bit n = ``x[..., n] >= thresh[n]`` (``<=`` where ``flip[n]``), as the fused kernels do.
    """
    op = "threshold_pack"
    if not isinstance(x, torch.Tensor) or x.dtype != torch.int32:
        raise TypeError(f"{op}: x must be an int32 torch tensor, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() < 1 or x.numel() == 0:
        raise ValueError(f"{op}: x must be non-empty with at least 1 axis, got {tuple(x.shape)}")
    _check_device(op, "x", x)
    thresh, flip = _check_thresholds(op, thresh, flip, x.shape[-1], x.device)
    flip = flip.bool()
    return _pack_bool(torch.where(flip, x <= thresh, x >= thresh))


def _pool_geometry(op: str, h: int, w: int, kernel, stride):
    kernel = as_pair(op, "kernel", kernel, 1)
    stride = as_pair(op, "stride", stride, 1)
    if kernel[0] > h or kernel[1] > w:
        raise ValueError(f"{op}: pool kernel {kernel} is larger than the {h}x{w} input")
    return kernel, stride


def _windows(x: torch.Tensor, kernel, stride) -> list[torch.Tensor]:
    """The strided views of an NHWC tensor, one per tap of the pool window (floor sizes)."""
    (kh, kw), (sh, sw) = kernel, stride
    ho = (x.shape[1] - kh) // sh + 1
    wo = (x.shape[2] - kw) // sw + 1
    return [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
            for i in range(kh) for j in range(kw)]


def _bit_pool(x: torch.Tensor, kernel, stride, flip: torch.Tensor) -> torch.Tensor:
    """OR of the window's bits where flip is False, AND where it is True (on int32 words)."""
    windows = _windows(_words(x), kernel, stride)
    any_set, all_set = windows[0].clone(), windows[0].clone()
    for window in windows[1:]:
        any_set |= window
        all_set &= window
    and_mask = _words(_pack_bool(flip))
    return _packed(((any_set & ~and_mask) | (all_set & and_mask)).contiguous())


def bmaxpool2d(x: torch.Tensor, kernel, stride, flip: torch.Tensor, c: int) -> torch.Tensor:
    """Max-pool of thresholded binary maps (no padding, floor sizes as torch.nn.MaxPool2d).

    Exact because thresholding is monotone: per channel the OR of the window's bits where flip
    is False (bit = s >= t), the AND where flip is True (bit = s <= t). x uint64
    (N, H, W, ceil(c/64)), flip bool (c,) -> uint64 (N, Ho, Wo, ceil(c/64)).
    """
    op = "bmaxpool2d"
    c = _check_length(op, "c", c)
    x = _check_packed(op, "x", x, 4, c, "c")
    kernel, stride = _pool_geometry(op, x.shape[1], x.shape[2], kernel, stride)
    _, flip = _check_thresholds(op, torch.zeros(c, dtype=torch.int32, device=x.device), flip, c,
                                x.device)
    return _bit_pool(x, kernel, stride, flip.bool())


def bconv2d_threshold_maxpool(x: torch.Tensor, w: torch.Tensor, c: int, thresh: torch.Tensor,
                              flip: torch.Tensor, pool_kernel, pool_stride, stride=(1, 1),
                              padding=(0, 0), dilation=(1, 1), pad_mode: str = "zero"
                              ) -> torch.Tensor:
    """Conv -> max-pool -> batch-norm -> sign (the paper's order) -> packed uint64
    (N, Hp, Wp, ceil(O/64)); equals ``bmaxpool2d(bconv2d_threshold(...), pool_kernel,
    pool_stride, flip, O)`` with the post-pool BN's thresh / flip, and is computed that way."""
    op = "bconv2d_threshold_maxpool"
    x, w, c, stride, padding, dilation = _conv_args(op, x, w, c, stride, padding, dilation,
                                                    pad_mode)
    thresh, flip8 = _check_thresholds(op, thresh, flip, w.shape[0], x.device)
    bits = _packed(triton_kernels.bconv2d_words(_words(x), _words(w), c, stride, padding, dilation,
                                                pad_mode, thresh, flip8))
    kernel, pool_stride = _pool_geometry(op, bits.shape[1], bits.shape[2], pool_kernel, pool_stride)
    return _bit_pool(bits, kernel, pool_stride, flip8.bool())


def maxpool2d_int(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    """Integer max-pool over NHWC int32 maps (no padding, floor sizes) -> int32 (N, Ho, Wo, C)."""
    op = "maxpool2d_int"
    x = _check_tensor(op, "x", x, torch.int32, 4)
    kernel, stride = _pool_geometry(op, x.shape[1], x.shape[2], kernel, stride)
    windows = _windows(x, kernel, stride)
    out = windows[0].clone()
    for window in windows[1:]:
        torch.maximum(out, window, out=out)
    return out


def int_gemm(x_u8: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """First layer with 8-bit input (docs/paper.md §1.6): int32 (M, N) = sum_i w_ni * x_mi, exactly.

    x_u8 uint8 (M, k), w packed +-1 (N, ceil(k/64)). Computed as a float product of the pixels
    with the unpacked weights: float32 while every partial sum is an integer below 2^24
    (k * 255 < 2^24, also under TF32 / bf16 matmul precision: the operands are exact there),
    float64 beyond.
    """
    op = "int_gemm"
    k = _check_length(op, "k", k)
    x_u8 = _check_tensor(op, "x_u8", x_u8, torch.uint8, 2)
    if x_u8.shape[1] != k:
        raise ValueError(f"{op}: x_u8 must have k={k} columns, got shape {tuple(x_u8.shape)}")
    w = _check_packed(op, "w", w, 2, k)
    _check_same_device(op, x_u8=x_u8, w=w)
    dtype = torch.float32 if k * 255 < 2**24 else torch.float64
    product = x_u8.to(dtype) @ unpack(w, k).to(dtype).T
    return product.round().to(torch.int32)


def bitplane_gemm(x_u8: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """Same result as the CPU engine's bit-plane first layer (docs/paper.md §1.6), by :func:`int_gemm`:
    on a GPU the exact integer product is cheaper than eight popcount GEMMs."""
    return int_gemm(x_u8, w, k)
