"""The binary activation module of BNN: a_b = Sign(a) with the hard-tanh STE (docs/paper.md §1.2, §1.3)."""
from __future__ import annotations

import torch
from torch import nn

from .. import quantizers

__all__ = ["Sign"]


class Sign(nn.Module):
    """Binary activation: ``ste_sign(x, clip)``, or ``stochastic_sign`` in training mode.

    Forward: +1 if x >= 0 else -1 (deterministic), or +1 with probability
    hard_sigmoid(x) = clip((x + 1) / 2, 0, 1) when ``stochastic`` and training (T7 neurons;
    paper §1.2). Evaluation is always deterministic. Backward: g * 1{|x| <= clip} (paper Eq. 4),
    taken on the BN output that precedes this module in the paper networks.
    """

    def __init__(self, stochastic: bool = False, clip: float = 1.0) -> None:
        super().__init__()
        self.stochastic = bool(stochastic)
        self.clip = float(clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stochastic and self.training:
            return quantizers.stochastic_sign(x, self.clip, training=True)
        return quantizers.ste_sign(x, self.clip)

    def extra_repr(self) -> str:
        return f"stochastic={self.stochastic}, clip={self.clip}"
