"""Folding a hidden layer's bias, batch norm and sign into an integer threshold (docs/paper.md §5.3),
and the output layer's batch norm into logits = scale * s + shift.

**Hidden layers.** With s the +-1 dot product (an integer), the float model decides +1 iff
sign(BN(s + b)) = +1. For BN's scale a > 0 this is s >= tau with tau = mean - b - beta/a
(s <= tau with a flip for a < 0; a constant channel for a = 0). The threshold is not taken from
that formula: the actual torch modules (bias add in float32, the BN module itself in eval mode,
then the Sign module or the next layer's input quantizer) are run on every reachable s (the K+1
values of K's parity for fan-in K; all integers in [-K, K] for a zero-padded conv, whose border
positions have fewer taps) and the threshold is read off their decisions, so the integer
comparison equals the float decision for all of them, ties included. The report counts the
channels where the formula would have been wrong. Decisions that are not monotone in s raise
:class:`ExportError`. This reproduces torch's own float32 arithmetic, including its batch norm
kernel (x * alpha + beta with alpha = gamma/sqrt(var + eps), which is not exactly 0 at x = mean).

**Max-pool before BN**: the decision is monotone in s, so thresholding each position and then
OR-ing (AND-ing where flipped) the bits of the window is exactly sign(BN(max s)).

**Output layer**: logits = scale * s + shift per class (float64), scale and shift from BN's
affine map; checked against the BN module over every reachable s.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..errors import ExportError

INT32_MIN = -(2 ** 31)
INT32_MAX = 2 ** 31 - 1
# Elements per chunk of exhaustive decision evaluation.
_CHUNK = 1 << 22


def decide(block, v: torch.Tensor) -> torch.Tensor:
    """Float decisions (bool, +1 = True) of the block's BN + binarization at pre-BN values v (S, O)."""
    y = v
    if block.bn is not None:
        y = block.bn[1](v[:, :, None, None]).reshape(v.shape) if block.is_conv else block.bn[1](v)
    b = block.binarize(y)
    if not torch.all((b == 1) | (b == -1)):
        raise ExportError(f"module {block.binarize_path!r} produced values other than +-1")
    return b > 0


def hidden_decisions(block, s_values: np.ndarray, bias: Optional[torch.Tensor],
                     out: int) -> np.ndarray:
    """Decisions (S, O) on every reachable integer sum s: sign(BN(float32(s) + bias))."""
    rows = max(1, _CHUNK // out)
    parts = []
    for start in range(0, len(s_values), rows):
        s = torch.from_numpy(s_values[start:start + rows].astype(np.float32))[:, None]
        v = s.expand(-1, out) + bias if bias is not None else s.expand(-1, out).clone()
        parts.append(decide(block, v).numpy())
    return np.concatenate(parts)


def thresholds_from_decisions(block, decisions: np.ndarray, s_values: np.ndarray):
    """Integer threshold and flip per channel reproducing ``decisions`` (S, O) exactly."""
    changes = (decisions[1:] != decisions[:-1]).sum(axis=0)
    bad = np.nonzero(changes > 1)[0]
    if bad.size:
        raise ExportError(f"layer {block.path!r}: the float model's sign decision is not monotone "
                          f"in the integer sum for channel {int(bad[0])} ({len(bad)} channel(s)); "
                          "it cannot be a threshold")
    first = decisions[0]
    thresh = np.where(first, INT32_MIN, INT32_MAX).astype(np.int64)  # constant channels
    flip = np.zeros(decisions.shape[1], dtype=bool)
    rising = (changes == 1) & ~first
    falling = (changes == 1) & first
    thresh[rising] = s_values[np.argmax(decisions[:, rising], axis=0)]
    thresh[falling] = s_values[np.argmax(~decisions[:, falling], axis=0) - 1]
    flip[falling] = True
    return thresh.astype(np.int32), flip


def formula_adjustments(decisions, s_values, a, c, bias) -> int:
    """Channels where tau = mean - b - beta/a (docs/paper.md §5.3, in float64) disagrees with the
    float model."""
    y = a[None, :] * (s_values[:, None].astype(np.float64) + bias[None, :]) + c[None, :]
    predicted = y >= 0
    return int(np.any(predicted != decisions, axis=0).sum())


def logit_affine_error(block, k: int, bias: torch.Tensor, a, c) -> float:
    """Worst relative error of logits = a * (s + bias) + c against the output layer's BN module
    over every reachable s of fan-in k; ExportError above 1e-5."""
    out = len(a)
    scale, shift = a, a * bias.double().numpy() + c
    s_values = np.arange(-k, k + 1, 2, dtype=np.int64)
    size = np.abs(a) * (k + np.abs(bias.double().numpy()) + np.abs(c / np.where(
        a == 0, 1, a))) + np.abs(c) + 1e-30
    worst = 0.0
    rows = max(1, _CHUNK // out)
    for start in range(0, len(s_values), rows):
        s = s_values[start:start + rows]
        v = torch.from_numpy(s.astype(np.float32))[:, None] + bias
        torch_out = (block.bn[1](v) if block.bn else v).double().numpy()
        ours = s[:, None] * scale + shift
        worst = max(worst, float(np.max(np.abs(ours - torch_out) / size)))
    if worst > 1e-5:
        raise ExportError(f"layer {block.path!r}: logits = scale * s + shift disagree with the batch "
                          f"norm {block.bn[0] if block.bn else ''!r} (relative error {worst:.2e})")
    return worst
