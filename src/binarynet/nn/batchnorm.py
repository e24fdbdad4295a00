"""Shift-based batch normalization (arXiv:1602.02830, Alg. 3; T7 ``*BatchNormalizationShiftPow2``).

All multiplications by a scale become multiplications by powers of two (bit shifts):

    mu = mean(x),  C = x - mu
    inv = 1 / sqrt(mean(C * AP2(C)) + eps)              (C * AP2(C) ~ C^2 without a multiplier)
    y = C * AP2(inv) * AP2(gamma) + beta

means are over the batch (and over H, W for the 2-D version). Running statistics follow T7:
``running_mean`` and ``running_inv_std`` (the *inverse* std, before AP2) are updated with
momentum m as r <- (1 - m) r + m * stat (they start at 0 and 1, as T7's dense version; its
spatial version starts running_inv_std at 0), and evaluation computes
y = (x - running_mean) * AP2(running_inv_std) * AP2(gamma) + beta.
"""
from __future__ import annotations

import torch
from torch import nn

from ..quantizers import ap2

__all__ = ["ShiftBatchNorm1d", "ShiftBatchNorm2d"]


class _ShiftBatchNormFunction(torch.autograd.Function):
    """Training-mode shift BN with the exact T7 backward (docs/paper.md §2.3).

    With s = AP2(inv), C_hat = AP2(C), x_hat = C * s:
      g_x     = AP2(gamma) * s * (g - mean(g) - C_hat * s^2 * mean(C_hat * g))
      g_gamma = sum(AP2(x_hat) * g)
      g_beta  = sum(g)
    The means are over the whole batch, which several processes may share (``sum_over_ranks``).
    Returns (y, mu, inv); mu and inv (per channel) feed the running statistics.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, dims, eps, sum_over_ranks):
        channels = x.shape[1]
        shape = [1, channels] + [1] * (x.dim() - 2)
        # Per-channel sums (and the sample count) are completed by ``sum_over_ranks`` when the
        # batch is spread over several processes (binarynet.train.syncbn); None: it is all here.
        # new_full, not new_tensor: no host->device copy that waits for a GPU.
        stats = torch.cat([x.sum(dim=dims), x.new_full((1,), float(x.numel() // channels))])
        if sum_over_ranks is not None:
            sum_over_ranks(stats)
        count = stats[-1]
        mu = (stats[:-1] / count).view(shape)
        centered = x - mu
        centered_ap2 = ap2(centered)
        second = (centered * centered_ap2).sum(dim=dims)
        if sum_over_ranks is not None:
            sum_over_ranks(second)
        inv = torch.rsqrt(second.view(shape) / count + eps)
        scale = ap2(inv)
        gamma_ap2 = ap2(weight).view(shape) if weight is not None else None
        x_hat = centered * scale
        y = x_hat * gamma_ap2 if gamma_ap2 is not None else x_hat.clone()
        if bias is not None:
            y = y + bias.view(shape)
        ctx.dims, ctx.count, ctx.sum_over_ranks = dims, count, sum_over_ranks
        ctx.save_for_backward(centered_ap2, scale, gamma_ap2, ap2(x_hat) if weight is not None else None)
        ctx.mark_non_differentiable(mu, inv)
        return y, mu, inv

    @staticmethod
    def backward(ctx, grad_y, grad_mu, grad_inv):
        centered_ap2, scale, gamma_ap2, x_hat_ap2 = ctx.saved_tensors
        dims, count = ctx.dims, ctx.count
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            channels = grad_y.shape[1]
            shape = [1, channels] + [1] * (grad_y.dim() - 2)
            sums = torch.cat([grad_y.sum(dim=dims), (centered_ap2 * grad_y).sum(dim=dims)])
            if ctx.sum_over_ranks is not None:
                ctx.sum_over_ranks(sums)
            mean_g = (sums[:channels] / count).view(shape)
            mean_cg = (sums[channels:] / count).view(shape)
            grad_x = grad_y - mean_g - centered_ap2 * (scale * scale) * mean_cg
            grad_x = grad_x * (scale * gamma_ap2 if gamma_ap2 is not None else scale)
        if ctx.needs_input_grad[1]:
            grad_weight = (x_hat_ap2 * grad_y).sum(dim=dims)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_y.sum(dim=dims)
        return grad_x, grad_weight, grad_bias, None, None, None


class _ShiftBatchNorm(nn.Module):
    """Shared implementation of shift-based BN over channel dimension 1."""

    _expected = ""  # shape text for errors, set by subclasses

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.125, affine: bool = True):
        super().__init__()
        if num_features <= 0:
            raise ValueError(f"{type(self).__name__}: num_features must be positive, got {num_features}")
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.affine = bool(affine)
        if self.affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_inv_std", torch.ones(num_features))

    def reset_running_stats(self) -> None:
        """running_mean <- 0, running_inv_std <- 1."""
        self.running_mean.zero_()
        self.running_inv_std.fill_(1.0)

    def _check_input(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def _sum_over_ranks(self):
        """None: the batch is all in this process. The synchronised version (binarynet.train.syncbn)
        returns an in-place sum over the ranks of a 1-D tensor."""
        return None

    def _reduce_dims(self, x: torch.Tensor) -> tuple:
        return (0,) + tuple(range(2, x.dim()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(
                f"{type(self).__name__}({self.num_features}): expected a floating-point tensor, "
                f"got {getattr(x, 'dtype', type(x).__name__)}"
            )
        self._check_input(x)
        dims = self._reduce_dims(x)
        shape = [1, self.num_features] + [1] * (x.dim() - 2)
        if not self.training:
            scale, shift = self.eval_affine()
            return x * scale.view(shape) + shift.view(shape)
        sum_over_ranks = self._sum_over_ranks()
        if sum_over_ranks is None and x.numel() // self.num_features < 2:
            raise ValueError(
                f"{type(self).__name__}({self.num_features}): training needs more than 1 value per "
                f"channel, got input of shape {tuple(x.shape)}"
            )
        y, mu, inv = _ShiftBatchNormFunction.apply(x, self.weight, self.bias, dims, self.eps, sum_over_ranks)
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1.0 - m).add_(mu.view(-1), alpha=m)
            self.running_inv_std.mul_(1.0 - m).add_(inv.view(-1), alpha=m)
        return y

    def eval_affine(self) -> tuple:
        """(scale, shift) per channel of the evaluation map y = x * scale + shift.

        scale = AP2(running_inv_std) * AP2(gamma), shift = beta - running_mean * scale.
        """
        scale = ap2(self.running_inv_std)
        if self.weight is not None:
            scale = scale * ap2(self.weight)
        shift = -self.running_mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        return scale, shift

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class ShiftBatchNorm1d(_ShiftBatchNorm):
    """Shift-based BN (paper Alg. 3, T7 ``BatchNormalizationShiftPow2``) for (N, C) or (N, C, L).

    Defaults follow T7: momentum 2^-3 = 0.125, eps 1e-5. See the module docstring for the
    forward formulas; the backward is the T7 one (see ``_ShiftBatchNormFunction``).
    """

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3) or x.shape[1] != self.num_features:
            raise ValueError(
                f"ShiftBatchNorm1d({self.num_features}): expected input of shape "
                f"(N, {self.num_features}) or (N, {self.num_features}, L), got {tuple(x.shape)}"
            )


class ShiftBatchNorm2d(_ShiftBatchNorm):
    """Shift-based BN (paper Alg. 3, T7 ``SpatialBatchNormalizationShiftPow2``) for (N, C, H, W).

    Statistics per channel over (N, H, W). Defaults follow T7: momentum 0.125, eps 1e-5.
    """

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(
                f"ShiftBatchNorm2d({self.num_features}): expected input of shape "
                f"(N, {self.num_features}, H, W), got {tuple(x.shape)}"
            )
