"""Losses: the paper networks' squared hinge (L2-SVM output layer; arXiv:1602.02830, docs/paper.md §2.6),
and ReActNet's distributional loss for distillation from a float teacher (arXiv:2003.03488, §4.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import BinarynetError

__all__ = ["DistillationError", "distribution_loss", "squared_hinge"]


class DistillationError(BinarynetError, ValueError):
    """Teacher and student outputs that cannot be compared (another class count, another batch)."""


def distribution_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """ReActNet's distributional loss: the KL divergence from the teacher's softmax to the student's.

        p_T = softmax(z_T / T),  p_S = softmax(z_S / T)
        L = (1/N) sum_i sum_c p_T[i,c] (log p_T[i,c] - log p_S[i,c])     = KL(p_T || p_S), batch mean

    i.e. ``F.kl_div(log p_S, log p_T, log_target=True, reduction="batchmean")``; with T = 1 (the
    paper's) it equals the paper's -(1/n) sum_c sum_i p_T log(p_S / p_T). For T != 1 it is *not*
    multiplied by T^2 (Hinton's gradient-scale correction): weight it in the recipe instead. The
    teacher's logits are detached (no gradient reaches the teacher). A (N, K) shape mismatch
    raises :class:`DistillationError` naming both class counts.
    """
    if student_logits.dim() != 2 or teacher_logits.dim() != 2:
        raise DistillationError(f"distillation needs (N, classes) outputs, got student {tuple(student_logits.shape)}, "
                                f"teacher {tuple(teacher_logits.shape)}")
    if teacher_logits.shape[1] != student_logits.shape[1]:
        raise DistillationError(f"the teacher outputs {teacher_logits.shape[1]} classes, the student "
                                f"{student_logits.shape[1]}: distillation needs the same classes")
    if teacher_logits.shape[0] != student_logits.shape[0]:
        raise DistillationError(f"teacher batch {teacher_logits.shape[0]} != student batch {student_logits.shape[0]}")
    if not temperature > 0:
        raise DistillationError(f"distillation temperature must be > 0, got {temperature}")
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")


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
