"""ReActNet's activations (Liu et al. 2020, arXiv:2003.03488): RSign and RPReLU.

Both learn per-channel shifts of the activation distribution, which a plain sign or PReLU
cannot: RSign moves the binarization threshold, RPReLU moves the PReLU's bend and its output.
Channel dimension 1: inputs (N, C) or (N, C, H, W).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import quantizers
from .layers import QuantizerArg, _resolve

__all__ = ["RSign", "RPReLU"]


def _per_channel(param: torch.Tensor, x: torch.Tensor, owner: str) -> torch.Tensor:
    """``param`` (C,) viewed to broadcast along dimension 1 of ``x``; a clear error otherwise."""
    if x.dim() < 2 or x.shape[1] != param.numel():
        raise ValueError(f"{owner}: expected input of shape (N, {param.numel()}, ...), got {tuple(x.shape)}")
    return param.view(1, -1, *([1] * (x.dim() - 2)))


class RSign(nn.Module):
    """ReActSign: x_b = sign(x + shift_c), a learnable threshold -shift_c per channel c.

    Forward: +1 if x + shift >= 0 else -1 (sign(0) = +1). Backward: the pseudo-gradient of
    ``quantizer`` at x + shift (default ``ste_sign``: g * 1{|x + shift| <= 1}; ReActNet's code
    uses ``approx_sign``), for x and summed over the batch and positions for ``shift``.
    ``shift`` starts at 0 (a plain sign).
    """

    def __init__(self, channels: int, quantizer: QuantizerArg = "ste_sign") -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels <= 0:
            raise ValueError(f"RSign: channels must be a positive integer, got {channels!r}")
        self.shift = nn.Parameter(torch.zeros(channels))
        fn, self._takes_training = _resolve(quantizer, "RSign", "quantizer")
        if fn is None:
            raise ValueError("RSign: quantizer must be a sign-like quantizer, got None")
        self.quantizer = fn
        self.quantizer_name = quantizers.name_of(fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = x + _per_channel(self.shift, x, "RSign")
        if self._takes_training:
            return self.quantizer(shifted, training=self.training)
        return self.quantizer(shifted)

    def extra_repr(self) -> str:
        return f"{self.shift.numel()}, quantizer={self.quantizer_name}"


class RPReLU(nn.Module):
    """ReActPReLU: y = PReLU_c(x + shift_in_c) + shift_out_c, all per channel c.

    PReLU(z) = z for z > 0, slope_c * z otherwise (slope starts at 0.25, as ``torch.nn.PReLU``;
    both shifts at 0). Gradients are the exact derivatives (ReActNet; its code writes the
    shifts as learnable biases added before and after ``nn.PReLU``).
    """

    def __init__(self, channels: int, init: float = 0.25) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels <= 0:
            raise ValueError(f"RPReLU: channels must be a positive integer, got {channels!r}")
        self.shift_in = nn.Parameter(torch.zeros(channels))
        self.slope = nn.Parameter(torch.full((channels,), float(init)))
        self.shift_out = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.prelu(x + _per_channel(self.shift_in, x, "RPReLU"), self.slope)
        return z + _per_channel(self.shift_out, x, "RPReLU")

    def extra_repr(self) -> str:
        return f"{self.slope.numel()}"
