"""ReActNet (Liu et al. 2020, arXiv:2003.03488): RSign / RPReLU around binary convolutions with
real-valued shortcuts; ``reactnet18`` on the ResNet-18 (Bi-Real) layout, ``reactnet_a`` on the
MobileNet-v1 layout (the paper's ReActNet-A)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .. import nn as bnn
from .birealnet import RESNET18_BLOCKS, bireal_resnet
from .common import classifier, imagenet_stem, positive_int
from .registry import register

__all__ = ["reactnet18", "reactnet_a", "reactnet_a_block", "DoubledPointwise", "REACTNET_A_WIDTHS"]

# ReActNet-A: the stem's width, then each block's output width (MobileNet-v1's 13 blocks).
REACTNET_A_WIDTHS = (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)


@register("reactnet18")
def reactnet18(num_classes: int = 10, input_size: int = 32, width: int = 64,
               blocks: Sequence[int] = RESNET18_BLOCKS, in_channels: int = 3,
               input_quantizer="approx_sign", scale: Optional[str] = "mean_abs",
               bn_momentum: float = 0.1) -> nn.Sequential:
    """ReActNet on ResNet-18 (arXiv:2003.03488): Bi-Real Net-18 (:func:`birealnet18`) with
    every binarization an :class:`~binarynet.nn.RSign` and an :class:`~binarynet.nn.RPReLU`
    after every add. A ResNet-18: 11.7 M parameters at 224 / 1000 classes (11,704,424 here: Bi-Real Net-18 plus 14,912 shifts and slopes).
    Reported ImageNet top-1: 65.5 % (ReActNet paper, with distillation and two-step training);
    CIFAR-10 (32x32 stem): about 92 % in the literature for binary ResNet-18s.

    ``input_quantizer`` is RSign's pseudo-gradient (``approx_sign``, as ReActNet's code).
    """
    return bireal_resnet("reactnet18", True, num_classes, input_size, width, blocks,
                         in_channels, input_quantizer, scale, bn_momentum)


def _stride(cin: int, cout: int) -> int:
    """A block that widens halves the map, except the one to 64 channels (ReActNet's code)."""
    return 2 if cout != cin and cout != 64 else 1


def _binary_conv(cin: int, cout: int, kernel: int, stride: int, scale) -> bnn.BinaryConv2d:
    return bnn.BinaryConv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False,
                            scale=scale)


class DoubledPointwise(bnn.ShortcutMerge):
    """ReActNet-A's channel-doubling 1x1 stage: two binary 1x1 convolutions on the same
    RSign(x), each + x (the real shortcut), concatenated: C -> 2C channels."""

    def __init__(self, channels: int, quantizer, scale, bn_momentum: float) -> None:
        super().__init__()
        self.rsign = bnn.RSign(channels, quantizer)
        self.conv1 = _binary_conv(channels, channels, 1, 1, scale)
        self.bn1 = nn.BatchNorm2d(channels, momentum=bn_momentum)
        self.conv2 = _binary_conv(channels, channels, 1, 1, scale)
        self.bn2 = nn.BatchNorm2d(channels, momentum=bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.rsign(x)
        return torch.cat([self.bn1(self.conv1(b)) + x, self.bn2(self.conv2(b)) + x], dim=1)


def reactnet_a_block(cin: int, cout: int, stride: int, quantizer="approx_sign",
                     scale: Optional[str] = "mean_abs", bn_momentum: float = 0.1) -> nn.Sequential:
    """ReActNet-A's block (arXiv:2003.03488 and its code): a binary 3x3 (stride 1 or 2, C -> C) and a
    binary 1x1 (C -> C, or C -> 2C as two concatenated halves), each RSign -> conv -> BN with a
    real shortcut (average-pooled when the 3x3 has stride 2), each followed by RPReLU."""
    if cout not in (cin, 2 * cin):
        raise ValueError(f"reactnet_a: a block keeps or doubles its channels, got {cin} -> {cout}")
    layers: list[nn.Module] = [
        bnn.Residual(nn.Sequential(bnn.RSign(cin, quantizer), _binary_conv(cin, cin, 3, stride, scale),
                                   nn.BatchNorm2d(cin, momentum=bn_momentum)),
                     bnn.shortcut(cin, cin, stride)),
        bnn.RPReLU(cin),
    ]
    if cout == cin:
        layers.append(bnn.Residual(nn.Sequential(bnn.RSign(cin, quantizer),
                                                 _binary_conv(cin, cin, 1, 1, scale),
                                                 nn.BatchNorm2d(cin, momentum=bn_momentum))))
    else:
        layers.append(DoubledPointwise(cin, quantizer, scale, bn_momentum))
    layers.append(bnn.RPReLU(cout))
    return nn.Sequential(*layers)


@register("reactnet_a")
def reactnet_a(num_classes: int = 10, input_size: int = 32,
               widths: Sequence[int] = REACTNET_A_WIDTHS, in_channels: int = 3,
               input_quantizer="approx_sign", scale: Optional[str] = "mean_abs",
               bn_momentum: float = 0.1) -> nn.Sequential:
    """ReActNet-A (arXiv:2003.03488; MobileNet-v1 layout): about 29 M parameters at
    224 / 1000 classes (29,343,592 here: 28,253,184 binary weights), ImageNet top-1 69.4 % (paper, with distillation and
    two-step training).

    Real stem: 3x3 conv (stride 2 for ImageNet, 1 for CIFAR) -> BN, ``widths[0]`` channels;
    then one :func:`reactnet_a_block` per further entry of ``widths``; a block that doubles the
    width also halves the map (except to 64, as the paper), so the body down-samples by 16;
    then global average pool and a real dense layer.
    """
    if len(widths) < 2:
        raise ValueError("widths must name the stem and at least one block")
    for w in widths:
        positive_int(w, "widths entries")
    positive_int(in_channels, "in_channels")
    downsampling = sum(1 for a, b in zip(widths, widths[1:]) if _stride(a, b) == 2)
    imagenet = imagenet_stem("reactnet_a", input_size, cifar_stride=2 ** downsampling)
    layers: list[nn.Module] = [nn.Sequential(
        nn.Conv2d(in_channels, widths[0], 3, 2 if imagenet else 1, 1, bias=False),
        nn.BatchNorm2d(widths[0], momentum=bn_momentum))]
    for cin, cout in zip(widths, widths[1:]):
        layers.append(reactnet_a_block(cin, cout, _stride(cin, cout), input_quantizer, scale,
                                       bn_momentum))
    layers.append(classifier(widths[-1], num_classes))
    return nn.Sequential(*layers)
