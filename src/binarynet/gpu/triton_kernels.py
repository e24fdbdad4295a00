"""Triton kernels of the GPU backend: bit packing, binary GEMM and binary convolution.

Layout (docs/design.md): bit 1 <=> +1 (value >= 0), packed LSB-first along the reduction axis.
The engine stores little-endian uint64 words; on the GPU we view them as int32 pairs, which is the
same bit stream (element i -> bit i % 32 of int32 word i // 32), because CUDA has a 32-bit popcount
(``POPC``) and no 64-bit one. Pad bits are 0 in both operands, so over a row of k real bits

    dot(a, w) = k - 2 * popcount(a XOR w)                                  (docs/paper.md §5.2)

and the fused batch-norm + sign of a unit is a threshold on that integer (docs/paper.md §5.3):
bit n = dot >= thresh[n], or dot <= thresh[n] where flip[n] (BN with gamma < 0).

The GEMM tile is a [BK, BM, BN] broadcast of BK words of BM activation rows against BK words of
BN weight rows, reduced over the word axis inside each thread (no shuffles): per word, one XOR
(LOP3), one POPC and half an IADD3, so the kernel runs near the POPC rate of the chip (16 per
clock per SM on sm_80 / sm_90).

These functions take int32 word views and do no argument checking: ``binarynet.gpu.backend`` is
the public, validated API. They also run under ``TRITON_INTERPRET=1`` on CPU tensors (the test
suite does that); the interpreter cannot call libdevice, so there the popcount is a SWAR bit trick.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import libdevice

# triton.jit chose the interpreter at import time from the same knob, so read it once here too.
INTERPRETED = bool(triton.knobs.runtime.interpret)

PAD_ZERO, PAD_ONE, PAD_MINUS_ONE = 0, 1, 2
PAD_MODE_CODES = {"zero": PAD_ZERO, "one": PAD_ONE, "minus_one": PAD_MINUS_ONE}


@dataclass(frozen=True)
class TileConfig:
    """Tile of a GEMM/conv program: BM output rows x BN output columns, BK int32 words a step."""

    block_m: int = 64
    block_n: int = 64
    block_k: int = 4
    num_warps: int = 4


# 64 x 64 x 4 words with 4 warps keeps the 16K-element XOR tile in registers (about 190 per
# thread on sm_90, no spills); wider tiles spill. Smaller tiles keep small outputs spread over
# the whole chip.
LARGE_TILE = TileConfig(64, 64, 4, 4)
MEDIUM_TILE = TileConfig(32, 64, 4, 2)
SMALL_TILE = TileConfig(16, 32, 4, 1)


@functools.lru_cache(maxsize=None)
def _multiprocessors(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def default_tile(m: int, n: int, device: torch.device) -> TileConfig:
    """The largest tile whose grid still gives every multiprocessor a program (for an m x n
    output): large tiles reuse loaded words most, small ones keep small batches from idling."""
    for tile in (LARGE_TILE, MEDIUM_TILE):
        if triton.cdiv(m, tile.block_m) * triton.cdiv(n, tile.block_n) >= _multiprocessors(device):
            return tile
    return SMALL_TILE


# ----------------------------------------------------------------------------------------------
# device helpers
# ----------------------------------------------------------------------------------------------
@triton.jit
def _popcount(x, HW_POPC: tl.constexpr):
    """Population count of int32 words: the POPC instruction, or SWAR in the interpreter."""
    if HW_POPC:
        return libdevice.popc(x)
    else:
        u = x.to(tl.uint32, bitcast=True)
        u = u - ((u >> 1) & 0x55555555)
        u = (u & 0x33333333) + ((u >> 2) & 0x33333333)
        u = (u + (u >> 4)) & 0x0F0F0F0F
        u = u + (u >> 8)
        u = u + (u >> 16)
        return (u & 0x3F).to(tl.int32)


@triton.jit
def _bit_or(a, b):
    return a | b


@triton.jit
def _pack_bits(bits, BM: tl.constexpr, BN: tl.constexpr):
    """[BM, BN] 0/1 int32 -> [BM, BN // 32] int32 words, column j -> bit j % 32 (LSB first)."""
    shifts = tl.arange(0, 32)
    words = tl.reshape(bits, (BM, BN // 32, 32)) << shifts[None, None, :]
    return tl.reduce(words, 2, _bit_or)


@triton.jit
def _store_output(out_ptr, dot, offs_m, pid_n, M, N, OUT_COLS, thresh_ptr, flip_ptr,
                  BM: tl.constexpr, BN: tl.constexpr, THRESHOLD: tl.constexpr):
    """Write int32 dot products, or (THRESHOLD) the packed threshold bits of this tile.

    Packed output has OUT_COLS int32 words per row (2 * ceil(N/64)); bits of columns >= N are 0,
    and every word of the row is written (the grid covers OUT_COLS * 32 columns).
    """
    offs_n = pid_n * BN + tl.arange(0, BN)
    row_ok = offs_m[:, None] < M
    rows = out_ptr + offs_m[:, None].to(tl.int64) * OUT_COLS  # M * OUT_COLS may pass 2^31
    if THRESHOLD:
        col_ok = offs_n < N
        t = tl.load(thresh_ptr + offs_n, mask=col_ok, other=0)
        f = tl.load(flip_ptr + offs_n, mask=col_ok, other=0)
        bit = tl.where(f[None, :] != 0, dot <= t[None, :], dot >= t[None, :])
        bit = (bit & col_ok[None, :]).to(tl.int32)
        words = _pack_bits(bit, BM, BN)
        offs_w = pid_n * (BN // 32) + tl.arange(0, BN // 32)
        tl.store(rows + offs_w[None, :], words, mask=row_ok & (offs_w[None, :] < OUT_COLS))
    else:
        tl.store(rows + offs_n[None, :], dot, mask=row_ok & (offs_n[None, :] < N))


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------
@triton.jit
def _pack_kernel(x_ptr, out_ptr, M, K, WORDS, BLOCK_M: tl.constexpr, BLOCK_W: tl.constexpr):
    """out[m, j] = int32 word j of row m: bit i = (x[m, 32 j + i] >= 0); bits at or past K are 0."""
    pid_m = tl.program_id(0)
    pid_w = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = pid_w * BLOCK_W * 32 + tl.arange(0, BLOCK_W * 32)
    ok = (offs_m[:, None] < M) & (offs_c[None, :] < K)
    x = tl.load(x_ptr + offs_m[:, None].to(tl.int64) * K + offs_c[None, :], mask=ok, other=0)
    if x.dtype == tl.bfloat16:  # exact widening; the interpreter compares raw bf16 bits otherwise
        x = x.to(tl.float32)
    bits = ((x >= 0) & ok).to(tl.int32)
    words = _pack_bits(bits, BLOCK_M, BLOCK_W * 32)
    offs_w = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)
    tl.store(out_ptr + offs_m[:, None].to(tl.int64) * WORDS + offs_w[None, :], words,
             mask=(offs_m[:, None] < M) & (offs_w[None, :] < WORDS))


@triton.jit
def _bgemm_kernel(a_ptr, w_ptr, out_ptr, thresh_ptr, flip_ptr, M, N, WORDS, K, OUT_COLS,
                  BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                  THRESHOLD: tl.constexpr, HW_POPC: tl.constexpr):
    """dot[m, n] = K - 2 * sum_j popcount(a[m, j] ^ w[n, j]) over WORDS int32 words per row.

    The next BK words are loaded before the current ones are reduced (register double buffer),
    so global latency hides behind the popcounts. Out-of-range rows and words load as 0.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    a_ptrs = a_ptr + offs_k[:, None] + offs_m[None, :].to(tl.int64) * WORDS
    w_ptrs = w_ptr + offs_k[:, None] + offs_n[None, :].to(tl.int64) * WORDS
    a_rows = offs_m[None, :] < M
    w_rows = offs_n[None, :] < N

    a = tl.load(a_ptrs, mask=a_rows & (offs_k[:, None] < WORDS), other=0)
    w = tl.load(w_ptrs, mask=w_rows & (offs_k[:, None] < WORDS), other=0)
    mismatches = tl.zeros((BM, BN), dtype=tl.int32)
    for k0 in range(0, WORDS, BK):
        in_k = (k0 + BK + offs_k[:, None]) < WORDS
        a_next = tl.load(a_ptrs + (k0 + BK), mask=a_rows & in_k, other=0)
        w_next = tl.load(w_ptrs + (k0 + BK), mask=w_rows & in_k, other=0)
        mismatches += tl.sum(_popcount(a[:, :, None] ^ w[:, None, :], HW_POPC), axis=0)
        a = a_next
        w = w_next
    dot = K - 2 * mismatches
    _store_output(out_ptr, dot, offs_m, pid_n, M, N, OUT_COLS, thresh_ptr, flip_ptr,
                  BM, BN, THRESHOLD)


@triton.jit
def _bconv_kernel(x_ptr, w_ptr, out_ptr, thresh_ptr, flip_ptr,
                  H, W, Ho, Wo, M, O, CWORDS, C, KH, KW,
                  stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, OUT_COLS,
                  PAD_MODE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                  THRESHOLD: tl.constexpr, HW_POPC: tl.constexpr):
    """Implicit-GEMM binary conv: rows are output pixels (n, y, x), columns output channels,
    and the reduction runs over taps (i, j) x CWORDS channel words; weights are (O, KH, KW, CWORDS).

    A tap outside the input is, by PAD_MODE: zero -> masked out of the popcount and of the
    per-pixel length Kv = C * valid_taps; one -> the word of C one-bits (+1 inputs); minus_one ->
    the zero word (-1 inputs). The last two count every tap: Kv = C * KH * KW.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    row_ok = offs_m < M
    ox = offs_m % Wo
    oy = (offs_m // Wo) % Ho
    batch = offs_m // (Wo * Ho)
    w_rows = offs_n[None, :] < O
    w_base = w_ptr + offs_k[:, None] + offs_n[None, :].to(tl.int64) * (KH * KW * CWORDS)

    mismatches = tl.zeros((BM, BN), dtype=tl.int32)
    valid_taps = tl.zeros((BM,), dtype=tl.int32)
    for tap in range(0, KH * KW):
        i = tap // KW
        j = tap % KW
        iy = oy * stride_h - pad_h + i * dil_h
        ix = ox * stride_w - pad_w + j * dil_w
        inside = row_ok & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        valid_taps += inside.to(tl.int32)
        pix = ((batch.to(tl.int64) * H + iy) * W + ix) * CWORDS
        w_ones = tl.zeros((BN,), dtype=tl.int32)  # popcount of this tap's weight words
        for c0 in range(0, CWORDS, BK):
            word = c0 + offs_k
            in_c = word < CWORDS
            x = tl.load(x_ptr + pix[None, :] + word[:, None],
                        mask=inside[None, :] & in_c[:, None], other=0)
            w = tl.load(w_base + tap * CWORDS + c0, mask=w_rows & in_c[:, None], other=0)
            if PAD_MODE == 1:  # +1 padding: the C real channel bits set, pad bits clear
                nbits = tl.minimum(tl.maximum(C - word * 32, 0), 32).to(tl.int64)
                ones = ((tl.full((BK,), 1, tl.int64) << nbits) - 1).to(tl.int32)
                x = tl.where(inside[None, :], x, ones[:, None])
            if PAD_MODE == 0:
                w_ones += tl.sum(_popcount(w, HW_POPC), axis=0)
            mismatches += tl.sum(_popcount(x[:, :, None] ^ w[:, None, :], HW_POPC), axis=0)
        if PAD_MODE == 0:
            # outside taps loaded x = 0 and counted popcount(w): take it back out (cheaper than
            # masking the [BK, BM, BN] XOR tile)
            mismatches -= tl.where(inside[:, None], 0, w_ones[None, :])
    if PAD_MODE == 0:
        length = C * valid_taps
    else:
        length = tl.zeros((BM,), dtype=tl.int32) + C * KH * KW
    dot = length[:, None] - 2 * mismatches
    _store_output(out_ptr, dot, offs_m, pid_n, M, O, OUT_COLS, thresh_ptr, flip_ptr,
                  BM, BN, THRESHOLD)


# ----------------------------------------------------------------------------------------------
# launchers (int32 word views in, int32 out; no validation: see binarynet.gpu.backend)
# ----------------------------------------------------------------------------------------------
PACK_BLOCK_M = 16
PACK_BLOCK_W = 4


def pack_words(x: torch.Tensor, words: int) -> torch.Tensor:
    """x (M, K) contiguous real tensor -> int32 (M, words): words >= ceil(K/32), extra words 0."""
    m, k = x.shape
    out = torch.empty((m, words), dtype=torch.int32, device=x.device)
    grid = (triton.cdiv(m, PACK_BLOCK_M), triton.cdiv(words, PACK_BLOCK_W))
    _pack_kernel[grid](x, out, m, k, words, BLOCK_M=PACK_BLOCK_M, BLOCK_W=PACK_BLOCK_W)
    return out


def _output(lead_shape, n, thresh, flip, device):
    """Output buffer, its int32 columns, the columns the grid covers, and the threshold operands
    (dummies when not fused: the kernel never reads them)."""
    if thresh is None:
        out_cols = cols = n
        thresh = torch.empty(1, dtype=torch.int32, device=device)
        flip = torch.empty(1, dtype=torch.int8, device=device)
    else:
        out_cols = 2 * triton.cdiv(n, 64)
        cols = out_cols * 32
    out = torch.empty(tuple(lead_shape) + (out_cols,), dtype=torch.int32, device=device)
    return out, out_cols, cols, thresh, flip


def bgemm_words(a: torch.Tensor, w: torch.Tensor, k: int, thresh: torch.Tensor | None = None,
                flip: torch.Tensor | None = None, tile: TileConfig | None = None) -> torch.Tensor:
    """a int32 (M, WORDS), w int32 (N, WORDS) -> int32 dot (M, N), or with thresh (int32 (N,))
    and flip (int8 (N,)) the packed bits as int32 (M, 2 * ceil(N/64))."""
    m, words = a.shape
    n = w.shape[0]
    tile = tile or default_tile(m, n, a.device)
    out, out_cols, cols, thresh_arg, flip_arg = _output((m,), n, thresh, flip, a.device)
    grid = (triton.cdiv(m, tile.block_m), triton.cdiv(cols, tile.block_n))
    _bgemm_kernel[grid](a, w, out, thresh_arg, flip_arg, m, n, words, k, out_cols,
                        BM=tile.block_m, BN=tile.block_n, BK=tile.block_k,
                        THRESHOLD=thresh is not None, HW_POPC=not INTERPRETED,
                        num_warps=tile.num_warps)
    return out


def bconv2d_words(x: torch.Tensor, w: torch.Tensor, c: int, stride, padding, dilation,
                  pad_mode: str, thresh: torch.Tensor | None = None,
                  flip: torch.Tensor | None = None, tile: TileConfig | None = None) -> torch.Tensor:
    """x int32 (N, H, W, CWORDS), w int32 (O, KH, KW, CWORDS) -> int32 (N, Ho, Wo, O), or with
    thresh/flip the packed bits as int32 (N, Ho, Wo, 2 * ceil(O/64))."""
    batch, h, wd, cwords = x.shape
    o, kh, kw, _ = w.shape
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    m = batch * ho * wo
    tile = tile or default_tile(m, o, x.device)
    out, out_cols, cols, thresh_arg, flip_arg = _output((batch, ho, wo), o, thresh, flip, x.device)
    grid = (triton.cdiv(m, tile.block_m), triton.cdiv(cols, tile.block_n))
    _bconv_kernel[grid](x, w, out, thresh_arg, flip_arg, h, wd, ho, wo, m, o, cwords, c, kh, kw,
                        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
                        out_cols, PAD_MODE=PAD_MODE_CODES[pad_mode],
                        BM=tile.block_m, BN=tile.block_n, BK=tile.block_k,
                        THRESHOLD=thresh is not None, HW_POPC=not INTERPRETED,
                        num_warps=tile.num_warps)
    return out
