"""Bi-Real Net-18 (Liu et al. 2018, arXiv:1808.00278): a binary ResNet-18 with a real-valued
shortcut around every binary convolution. Also the ResNet-18 layout ReActNet-18 reuses."""
from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from .. import nn as bnn
from .common import classifier, imagenet_stem, positive_int, resnet_stem
from .registry import register

__all__ = ["birealnet18", "bireal_resnet"]

# ResNet-18: four stages of 2 basic blocks, i.e. 4 binary 3x3 convolutions each, each with its
# own shortcut (Bi-Real Net); the first of stages 2-4 halves the map and doubles the width.
RESNET18_BLOCKS = (4, 4, 4, 4)


def bireal_resnet(model: str, react: bool, num_classes: int, input_size, width: int,
                  blocks: Sequence[int], in_channels: int, input_quantizer,
                  scale: Optional[str], bn_momentum: float) -> nn.Sequential:
    """Stem -> stages of :func:`binarynet.nn.bireal_block` -> classifier (pool, real dense).

    Stage s has ``width * 2**s`` channels and ``blocks[s]`` binary convolutions, the first one
    of every stage after the first with stride 2 (the shortcut then pools and projects).
    """
    imagenet = imagenet_stem(model, input_size, cifar_stride=2 ** (len(blocks) - 1))
    positive_int(width, "width")
    positive_int(in_channels, "in_channels")
    if not blocks:
        raise ValueError("blocks must name at least one stage")
    for b in blocks:
        positive_int(b, "blocks entries")
    layers: list[nn.Module] = [resnet_stem(in_channels, width, imagenet, bn_momentum)]
    channels = width
    for stage, count in enumerate(blocks):
        out = width * 2 ** stage
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            layers.append(bnn.bireal_block(channels, out, stride, react=react,
                                           input_quantizer=input_quantizer, scale=scale,
                                           bn_momentum=bn_momentum))
            channels = out
    layers.append(classifier(channels, num_classes))
    return nn.Sequential(*layers)


@register("birealnet18")
def birealnet18(num_classes: int = 10, input_size: int = 32, width: int = 64,
                blocks: Sequence[int] = RESNET18_BLOCKS, in_channels: int = 3,
                input_quantizer="approx_sign", scale: Optional[str] = "mean_abs",
                bn_momentum: float = 0.1) -> nn.Sequential:
    """Bi-Real Net-18 (arXiv:1808.00278; larq zoo ``BiRealNet``): 11.7 M parameters at 224 / 1000
    classes (11,689,512 here: 10,985,472 binary weights, the rest real), ImageNet top-1 56.4 %
    (paper), 57.5 % (larq zoo).

    Real stem (ImageNet: 7x7/2 conv, BN, 3x3/2 max-pool; CIFAR, ``input_size`` < 128: 3x3/1
    conv, BN) -> 16 blocks x -> BN(BinaryConv3x3(approx_sign(x))) + shortcut(x) with
    magnitude-aware weights (``scale="mean_abs"``) and average-pool + 1x1 conv + BN shortcuts
    where the shape changes -> global average pool -> real dense layer. ``width`` and ``blocks``
    shrink it (e.g. for tests); ``input_size`` (32 CIFAR, 224 ImageNet) picks the stem. The
    defaults (10 classes, 32x32) are CIFAR-10's, as for every zoo model.
    """
    return bireal_resnet("birealnet18", False, num_classes, input_size, width, blocks,
                         in_channels, input_quantizer, scale, bn_momentum)
