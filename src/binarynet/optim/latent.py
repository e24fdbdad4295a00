"""Latent-weight optimizers of the paper: per-layer LR scale, latent-weight clipping, shift-based AdaMax.

Paper Alg. 1 (arXiv:1602.02830; docs/paper.md §2.1): W_k <- Clip(Update(W_k, gamma_k * eta, g_{W_k^b}), -1, 1)
and theta_k <- Update(theta_k, eta, g_theta_k), where gamma_k is the BinaryConnect Glorot
scale of layer k (docs/paper.md §2.5) and only the binary layers' latent weights are scaled and clipped.

- :func:`param_groups` builds torch param groups with the scaled LR and a ``latent_clip`` flag.
- :class:`Adam` is ``torch.optim.Adam`` that clamps the latent weights to [-1, 1] after each step.
- :class:`ShiftAdaMax` is the shift-based AdaMax of the paper (Alg. 4) and of T7.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .. import nn as bnn
from ..nn.latent import mark_clipped
from ..quantizers import ap2
from .bop import is_bop_weight

__all__ = ["glorot_lr_scale", "param_groups", "Adam", "ShiftAdaMax"]


def glorot_lr_scale(layer: nn.Module) -> float:
    """BinaryConnect per-layer LR scale 1 / sqrt(1.5 / (fan_in + fan_out)) (docs/paper.md §2.5).

    Dense: fan_in, fan_out = in_features, out_features. Conv: fan_in = C_in/groups * kh * kw,
    fan_out = C_out * kh * kw (the weight's dims, as Lasagne; no division by the pool size).
    E.g. 784->4096 gives 57.04, a 3->128 3x3 conv 28.04.
    """
    if not isinstance(layer, bnn.BinaryLayer):
        raise TypeError(f"glorot_lr_scale expects a binarynet.nn.BinaryLayer, got {type(layer).__name__}")
    shape = layer.weight.shape
    receptive_field = math.prod(shape[2:])  # 1 for a dense weight (out, in)
    fan_in = shape[1] * receptive_field
    fan_out = shape[0] * receptive_field
    return 1.0 / math.sqrt(1.5 / (fan_in + fan_out))


def _ap2_scalar(value: float) -> float:
    return float(ap2(torch.tensor(value, dtype=torch.float64)))


def param_groups(model: nn.Module, lr: float, pow2: bool = False) -> list[dict]:
    """Param groups for a torch optimizer, one per binary layer plus one for the rest.

    Each binary layer's latent weight gets its own group {"params": [weight], "lr": lr * scale,
    "lr_scale": scale, "latent_clip": True, "name": module name}, with scale =
    :func:`glorot_lr_scale` (rounded with AP2 if ``pow2``, as T7 CIFAR/SVHN). All other
    parameters (biases, BN) go into a last group {"lr": lr, "lr_scale": 1.0, "latent_clip": False,
    "name": "other"}, left out when empty. Parameters shared between modules appear once.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"param_groups expects an nn.Module, got {type(model).__name__}")
    groups: list[dict] = []
    seen: set[int] = set()
    for name, module in model.named_modules():
        if not isinstance(module, bnn.BinaryLayer) or id(module.weight) in seen:
            continue
        seen.add(id(module.weight))
        scale = glorot_lr_scale(module)
        if pow2:
            scale = _ap2_scalar(scale)
        groups.append(
            {"params": [module.weight], "lr": lr * scale, "lr_scale": scale, "latent_clip": True, "name": name}
        )
    rest = []
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            rest.append(p)
    if rest:
        groups.append({"params": rest, "lr": lr, "lr_scale": 1.0, "latent_clip": False, "name": "other"})
    return groups


def _clip_latent(optimizer: torch.optim.Optimizer) -> None:
    """Clamp to [-1, 1] the params of groups with latent_clip=True, and the tagged latent
    weights of groups that do not say (a plain parameter list); latent_clip=False: none.

    On a GPU all of them in two foreach kernels (not two per tensor: launches, not bytes, cost
    there); on the CPU one in-place pass per tensor (a foreach min + max reads everything twice).
    """
    targets = []
    for group in optimizer.param_groups:
        flag = group.get("latent_clip")
        if flag is True:
            targets += group["params"]
        elif flag is None:
            targets += [p for p in group["params"] if bnn.is_latent(p)]
    # Bop's weights are +-1 with no latent value: clipping must leave them to Bop alone.
    targets = [p for p in targets if not is_bop_weight(p)]
    with torch.no_grad():
        on_gpu = [p for p in targets if p.is_cuda]
        if on_gpu:
            torch._foreach_clamp_min_(on_gpu, -1.0)
            torch._foreach_clamp_max_(on_gpu, 1.0)
        for p in targets:
            if not p.is_cuda:
                p.clamp_(-1.0, 1.0)
            mark_clipped(p)  # lets the next forward skip checking the STE range


class Adam(torch.optim.Adam):
    """``torch.optim.Adam`` (Kingma & Ba; the paper's TH optimizer) + latent-weight clipping.

    After every step, params of groups with ``latent_clip=True`` (see :func:`param_groups`) are
    clamped to [-1, 1]; with a plain parameter list, the binary layers' latent weights are.
    Biases and BN parameters are never clipped (TH).
    """

    clips_latent_weights = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0,
                 fused: Optional[bool] = None, foreach: Optional[bool] = None):
        # fused / foreach: torch's implementations of the step (fused: one kernel on a GPU).
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused,
                         foreach=foreach)

    def step(self, closure=None):
        """One Adam step, then W <- clip(W, -1, 1) on the latent weights."""
        loss = super().step(closure)
        _clip_latent(self)
        return loss


class ShiftAdaMax(torch.optim.Optimizer):
    """Shift-based AdaMax (paper Alg. 4; T7 ``adaMax_binary_clip_shift.lua``; docs/paper.md §2.4).

    With t the step count, g the gradient and lr the group's (already LR-scaled) rate:

        m <- b1 m + (1 - b1) g
        v <- max(b2 v, |g|)                        variant "paper"
        v <- AP2(max(b2 v, |g|)) + 2^-27           variant "torch7" (stored rounded, as T7)
        step = AP2(lr / (1 - b1^t))
        theta <- theta - step * m / AP2(v)        "paper" (AP2(v) = 0 only where m = 0: no move)
        theta <- theta - step * m / v             "torch7"

    then latent weights are clamped to [-1, 1] as in :class:`Adam`. Default betas: the paper's
    (1 - 2^-3, 1 - 2^-10) for "paper", T7's (0.9, 0.999) for "torch7".
    """

    clips_latent_weights = True
    _VARIANTS = ("paper", "torch7")

    def __init__(self, params, lr: float = 2 ** -10, betas: Optional[tuple] = None, variant: str = "paper"):
        if variant not in self._VARIANTS:
            raise ValueError(f"ShiftAdaMax: variant must be one of {self._VARIANTS}, got {variant!r}")
        if betas is None:
            betas = (1 - 2 ** -3, 1 - 2 ** -10) if variant == "paper" else (0.9, 0.999)
        if not lr > 0:
            raise ValueError(f"ShiftAdaMax: lr must be positive, got {lr}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"ShiftAdaMax: betas must be two numbers in [0, 1), got {betas}")
        self.variant = variant
        super().__init__(params, dict(lr=lr, betas=tuple(betas)))

    @torch.no_grad()
    def step(self, closure=None):
        """One shift-AdaMax step over all groups, then clip the latent weights."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("ShiftAdaMax does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_inf"] = torch.zeros_like(p)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_inf"]
                m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                torch.maximum(v.mul_(beta2), grad.abs(), out=v)
                step_size = _ap2_scalar(group["lr"] / (1.0 - beta1 ** state["step"]))
                if self.variant == "torch7":
                    v.copy_(ap2(v)).add_(2.0 ** -27)
                    p.addcdiv_(m, v, value=-step_size)
                else:
                    denom = ap2(v).clamp_(min=torch.finfo(v.dtype).tiny)
                    p.addcdiv_(m, denom, value=-step_size)
        _clip_latent(self)
        return loss
