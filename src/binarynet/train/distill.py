"""Distillation from a float teacher (ReActNet, arXiv:2003.03488 §4.2): the teacher and its loss.

The teacher is any torch model, or a training checkpoint of this library (file or run folder,
rebuilt with :func:`binarynet.train.checkpoint.load_model`). It runs in eval mode under no_grad
on the student's own (augmented) batch; when a checkpoint's input normalisation differs from the
student's, the batch is mapped to the teacher's first (both are per-channel affine maps of the
same uint8 pixels). The step's loss is

    loss = (1 - distill_weight) * task_loss(scores, labels)
           + distill_weight * distribution_loss(scores, teacher_scores, distill_temperature)

with :func:`binarynet.losses.distribution_loss` (KL(p_teacher || p_student), batch mean).
"""
from __future__ import annotations

import torch

from ..losses import distribution_loss
from .checkpoint import load_model


class Teacher:
    """A frozen model called on student batches; ``normalization`` pairs are (scale, offset)."""

    def __init__(self, model: torch.nn.Module, device, student_normalization: tuple,
                 teacher_normalization: tuple | None = None):
        self.model = model.to(device).eval().requires_grad_(False)
        self.affine = None
        if teacher_normalization is not None and tuple(map(tuple, teacher_normalization)) != tuple(
                map(tuple, student_normalization)):
            # x_s = u * s_s + o_s  ->  x_t = u * s_t + o_t = x_s * (s_t / s_s) + (o_t - o_s * s_t / s_s)
            s_s, o_s, s_t, o_t = (torch.tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1)
                                  for v in (*student_normalization, *teacher_normalization))
            self.affine = (s_t / s_s, o_t - o_s * s_t / s_s)

    @classmethod
    def from_spec(cls, spec, device, student_normalization: tuple) -> "Teacher":
        """A teacher from a model or a checkpoint path (CheckpointError if unreadable)."""
        if isinstance(spec, torch.nn.Module):
            return cls(spec, device, student_normalization)
        model, _, normalization = load_model(spec)
        return cls(model, device, student_normalization, normalization)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.affine is not None:
            x = x * self.affine[0] + self.affine[1]
        return self.model(x).float()


def distilled_loss(task_loss: torch.Tensor, scores: torch.Tensor, teacher_scores: torch.Tensor,
                   weight: float, temperature: float) -> torch.Tensor:
    """The step loss of the module docstring."""
    kl = distribution_loss(scores, teacher_scores, temperature)
    return kl if weight == 1.0 else (1.0 - weight) * task_loss + weight * kl
