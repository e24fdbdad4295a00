"""Batch normalization with statistics over the global batch of all ranks (any device).

``torch.nn.SyncBatchNorm`` only runs on GPUs, so binarynet has its own, used on CPU (Gloo) and
CUDA (NCCL) alike:

- :class:`SyncBatchNorm1d` / :class:`SyncBatchNorm2d` replace ``nn.BatchNorm1d/2d``: training
  statistics are ``mean = sum_r S_r / N`` and ``var = sum_r Q_r / N`` with S_r, Q_r the sums of
  x and (x - mean)^2 on rank r and N the global count, written with a differentiable all-reduce
  so autograd produces the exact gradient of the global-batch formula.
- :class:`SyncShiftBatchNorm1d` / :class:`SyncShiftBatchNorm2d` replace binarynet's shift-based
  BN (docs/paper.md §2.3): mu and mean(C * AP2(C)) are all-reduced in the forward pass, and the T7
  backward ``g_x = AP2(gamma) s (g - mean(g) - C_hat s^2 mean(C_hat g))`` takes its two means
  over the global batch too.

Gradients: each rank's loss is the mean over its own samples and DDP averages parameter
gradients over ranks, so the cross-rank terms must be *sums* of the per-rank gradients (which
is what all-reduce's backward gives); the result equals a single process on the global batch.
State-dict keys are those of the layers they replace, so checkpoints load into plain models.
Outside training mode, or without an initialised process group of more than one rank, the
layers compute exactly what the layers they replace compute.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..nn import ShiftBatchNorm1d, ShiftBatchNorm2d


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GlobalSum(torch.autograd.Function):
    """y = sum over ranks of x; the gradient of x is the sum over ranks of the gradients of y
    (each rank's loss depends on y, and the objective is the sum of the ranks' losses)."""

    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        grad_x = grad_y.clone()
        dist.all_reduce(grad_x, op=dist.ReduceOp.SUM)
        return grad_x


def _global_sum(t: torch.Tensor) -> torch.Tensor:
    """Differentiable all-reduce sum (see :class:`_GlobalSum`)."""
    return _GlobalSum.apply(t)


class _SyncBatchNormMixin:
    """Training forward of standard BN with global-batch statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _world() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        local_count = x.numel() // x.shape[1]
        # One all-reduce for (sum, count), one for the centred sum of squares (two-pass variance).
        stats = _global_sum(torch.cat([x.sum(dim=dims), x.new_tensor([float(local_count)])]))
        count = stats[-1].detach()
        mean = stats[:-1] / count
        centered = x - mean.view(shape)
        var = _global_sum((centered * centered).sum(dim=dims)) / count
        y = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * (count / (count - 1).clamp(min=1.0))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return y


class SyncBatchNorm1d(_SyncBatchNormMixin, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose training statistics cover the global batch (module docstring)."""


class SyncBatchNorm2d(_SyncBatchNormMixin, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics cover the global batch (module docstring)."""


def _all_reduce_sum(t: torch.Tensor) -> None:
    dist.all_reduce(t, op=dist.ReduceOp.SUM)


class _SyncShiftBatchNormMixin:
    """Shift BN whose training means cover all ranks' samples: the forward sums and the two
    means of the T7 backward are all-reduced (binarynet.nn's shift-BN function does the rest)."""

    def _sum_over_ranks(self):
        return _all_reduce_sum if _world() > 1 else None


class SyncShiftBatchNorm1d(_SyncShiftBatchNormMixin, ShiftBatchNorm1d):
    """``binarynet.nn.ShiftBatchNorm1d`` with global-batch statistics (module docstring)."""


class SyncShiftBatchNorm2d(_SyncShiftBatchNormMixin, ShiftBatchNorm2d):
    """``binarynet.nn.ShiftBatchNorm2d`` with global-batch statistics (module docstring)."""


_REPLACEMENTS = (
    (ShiftBatchNorm1d, SyncShiftBatchNorm1d),
    (ShiftBatchNorm2d, SyncShiftBatchNorm2d),
    (nn.BatchNorm1d, SyncBatchNorm1d),
    (nn.BatchNorm2d, SyncBatchNorm2d),
)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d and ShiftBatchNorm1d/2d in ``module`` by its synchronised
    version (same parameters, buffers and state-dict keys); returns the converted module."""
    replacement = _replacement_class(module)
    if replacement is not None:
        converted = replacement.__new__(replacement)
        converted.__dict__.update(module.__dict__)  # parameters, buffers, hooks, training flag
        module = converted
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child))
    return module


def _replacement_class(module: nn.Module):
    for original, synced in _REPLACEMENTS:
        # exact type: subclasses (including the sync classes) may compute something else
        if type(module) is original:
            return synced
    return None
