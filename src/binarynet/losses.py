"""Loss of the paper networks: the squared hinge (L2-SVM output layer; arXiv:1602.02830, docs/paper.md §2.6)."""
from __future__ import annotations

import torch

__all__ = ["squared_hinge"]


def squared_hinge(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L = mean over batch x classes of max(0, 1 - t * y)^2 (TH ``T.mean(T.sqr(T.maximum(0., 1. - t*y)))``).

    ``scores`` y: (N, K) float, the output BN of the network. ``target``: class indices (N,)
    of an integer dtype, mapped to t = 2 * onehot - 1, or a (N, K) float matrix t of +-1.
    Gradient: dL/dy = -2 t max(0, 1 - t y) / (N K). Shape or dtype mismatches raise
    ValueError / TypeError.
    """
    if not isinstance(scores, torch.Tensor) or not scores.is_floating_point():
        raise TypeError(f"squared_hinge: scores must be a floating-point tensor, got {getattr(scores, 'dtype', type(scores).__name__)}")
    if scores.dim() != 2:
        raise ValueError(f"squared_hinge: scores must have shape (N, num_classes), got {tuple(scores.shape)}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"squared_hinge: target must be a tensor, got {type(target).__name__}")
    n, k = scores.shape
    if target.is_floating_point():
        if target.shape != scores.shape:
            raise ValueError(
                f"squared_hinge: a +-1 target matrix must have the shape of scores {tuple(scores.shape)}, "
                f"got {tuple(target.shape)}"
            )
        t = target.to(scores.dtype)
    elif target.dtype in (torch.bool, torch.complex64, torch.complex128):
        raise TypeError(f"squared_hinge: target must hold class indices or +-1 floats, got dtype {target.dtype}")
    else:
        if target.shape != (n,):
            raise ValueError(
                f"squared_hinge: class-index target must have shape ({n},) for scores {tuple(scores.shape)}, "
                f"got {tuple(target.shape)}"
            )
        # Checked on the host only: on a GPU it would wait for the device at every step, and an
        # out-of-range index there trips scatter_'s device-side assert anyway.
        if n > 0 and not target.is_cuda and (int(target.min()) < 0 or int(target.max()) >= k):
            raise ValueError(
                f"squared_hinge: class indices must lie in [0, {k}), got range "
                f"[{int(target.min())}, {int(target.max())}]"
            )
        t = torch.full_like(scores, -1.0).scatter_(1, target.long().unsqueeze(1), 1.0)
    return torch.clamp(1.0 - t * scores, min=0.0).square().mean()
