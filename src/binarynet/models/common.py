"""What the zoo's networks share: option checks, the choice of stem from ``input_size``, the head.

The papers train two kinds of input: 32x32 CIFAR images, where the network starts at full
resolution (a 3x3 stride-1 stem, no early down-sampling), and 224x224 ImageNet images, where the
stem down-samples early (by 4 for the ResNet-18 family and QuickNet, 2 for ReActNet-A).
"""
from __future__ import annotations

from torch import nn

# From this side on, the ImageNet stem is used; below it, the CIFAR stem.
IMAGENET_STEM_FROM = 128
# Every model down-samples by 32 in all with the ImageNet stem (224 -> 7).
IMAGENET_STRIDE = 32


def positive_int(value, what: str) -> int:
    """``value`` if it is a positive int (not a bool), else ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def imagenet_stem(model: str, input_size, cifar_stride: int) -> bool:
    """True for the ImageNet stem, False for the CIFAR stem of ``model`` at ``input_size``.

    Below :data:`IMAGENET_STEM_FROM` the CIFAR stem is used, which keeps the full resolution
    (the body then down-samples by ``cifar_stride``); from it on the ImageNet stem (by 32 in
    all). The side must be a multiple of that stride, so that every stage halves an even map
    and the real shortcut's pool matches the strided convolution. ValueError names the argument.
    """
    positive_int(input_size, f"{model}: input_size")
    imagenet = input_size >= IMAGENET_STEM_FROM
    stride = IMAGENET_STRIDE if imagenet else cifar_stride
    if input_size % stride:
        stem = "ImageNet" if imagenet else "CIFAR"
        raise ValueError(
            f"{model}: input_size={input_size} does not fit its {stem} stem: the side must be a "
            f"multiple of {stride} (sides from {IMAGENET_STEM_FROM} on use the ImageNet stem, "
            f"smaller ones the CIFAR stem; the papers use 32 and 224)")
    return imagenet


def classifier(channels: int, num_classes: int) -> nn.Sequential:
    """The real-valued head of every zoo model: global average pool, flatten, dense with bias."""
    positive_int(num_classes, "num_classes")
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def resnet_stem(in_channels: int, channels: int, imagenet: bool, bn_momentum: float) -> nn.Sequential:
    """The real-valued stem of the ResNet-18 family (Bi-Real Net, ReActNet-18).

    ImageNet: Conv 7x7 stride 2 -> BN -> MaxPool 3x3 stride 2 (no ReLU, as Bi-Real Net and larq
    zoo). CIFAR: Conv 3x3 stride 1 -> BN.
    """
    if imagenet:
        return nn.Sequential(nn.Conv2d(in_channels, channels, 7, 2, 3, bias=False),
                             nn.BatchNorm2d(channels, momentum=bn_momentum),
                             nn.MaxPool2d(3, 2, 1))
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(channels, momentum=bn_momentum))
