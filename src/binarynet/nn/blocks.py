"""Residual building blocks with real-valued shortcuts (Bi-Real Net, ReActNet, QuickNet).

Bi-Real Net (Liu et al. 2018, arXiv:1808.00278) adds the real-valued input of every binary
convolution to its (batch-normalised) output, so the real activations survive the binarization
of the next layer's input; where the shape changes, the shortcut is average-pool + real 1x1
conv + BN (as both papers and their code do). These modules say so explicitly, which lets the
summary count the adds and the shortcut's real-valued layers.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .layers import BinaryConv2d, QuantizerArg
from .react import RPReLU, RSign

__all__ = ["ShortcutMerge", "Residual", "shortcut", "bireal_block"]


class ShortcutMerge(nn.Module):
    """Base of the modules that add a real-valued shortcut to a body's output (summary rows)."""


class Residual(ShortcutMerge):
    """y = body(x) + shortcut(x), with ``shortcut`` the identity when None."""

    def __init__(self, body: nn.Module, shortcut: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


def shortcut(in_channels: int, out_channels: int, stride: int = 1, bn_momentum: float = 0.1) -> nn.Module:
    """The real-valued shortcut of a block mapping (in_channels, H, W) to (out_channels, H/stride,
    W/stride): the identity when nothing changes, else AvgPool2d(stride) (when stride > 1), then
    a real 1x1 Conv2d and BatchNorm2d (when the channels change), as Bi-Real Net and ReActNet.

    The pool rounds up (``ceil_mode``), as a 3x3 convolution with stride 2 and padding 1 does,
    so odd sizes keep both paths the same shape.
    """
    layers: list[nn.Module] = []
    if stride > 1:
        layers.append(nn.AvgPool2d(stride, stride, ceil_mode=True))
    if in_channels != out_channels:
        layers += [nn.Conv2d(in_channels, out_channels, 1, bias=False),
                   nn.BatchNorm2d(out_channels, momentum=bn_momentum)]
    if not layers:
        return nn.Identity()
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


def bireal_block(in_channels: int, out_channels: int, stride: int = 1, react: bool = False,
                 input_quantizer: QuantizerArg = "approx_sign", scale: Optional[str] = "mean_abs",
                 bn_momentum: float = 0.1) -> nn.Sequential:
    """One binary 3x3 convolution with a real-valued shortcut (Bi-Real Net's block).

    ``react=False`` (Bi-Real Net): x -> BinaryConv2d(input_quantizer, scale) -> BN, + shortcut(x).
    ``react=True`` (ReActNet on ResNet-18): x -> RSign(input_quantizer) -> BinaryConv2d(scale)
    -> BN, + shortcut(x), then RPReLU. The shortcut is :func:`shortcut`. Returns
    ``Sequential(Residual, [RPReLU])`` so modules are listed in the order they run.
    """
    conv = BinaryConv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False,
                        input_quantizer=None if react else input_quantizer, scale=scale)
    body = [RSign(in_channels, input_quantizer)] if react else []
    body += [conv, nn.BatchNorm2d(out_channels, momentum=bn_momentum)]
    layers: list[nn.Module] = [Residual(nn.Sequential(*body),
                                        shortcut(in_channels, out_channels, stride, bn_momentum))]
    if react:
        layers.append(RPReLU(out_channels))
    return nn.Sequential(*layers)
