"""QuickNet (larq zoo, ``larq_zoo/sota/quicknet.py``; Bannink et al. 2021, arXiv:2011.09398):
a binary ResNet whose blocks are BinaryConv3x3 -> ReLU -> BN + x, with real-valued stem and
transition blocks; ``size`` small / medium / large as larq zoo's QuickNetSmall / QuickNet /
QuickNetLarge."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import nn as bnn
from .. import quantizers
from .common import classifier, imagenet_stem, positive_int
from .registry import register

__all__ = ["quicknet", "SIZES"]

# size -> (binary blocks per section, section widths), as larq zoo.
SIZES = {
    "small": ((4, 4, 4, 4), (32, 64, 256, 512)),
    "medium": ((4, 4, 4, 4), (64, 128, 256, 512)),
    "large": ((6, 8, 12, 6), (64, 128, 256, 512)),
}
# QuickNet's sign: the STE window (and larq's latent-weight clip) is 1.25, not 1.
CLIP = 1.25


class BlurPool(nn.Module):
    """A fixed (not trained) depthwise 3x3 binomial blur [1 2 1] x [1 2 1] / 16 with stride 2:
    anti-aliased down-sampling (Zhang 2019, arXiv:1904.11486), as QuickNet's transitions."""

    def __init__(self, channels: int, stride: int = 2) -> None:
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (torch.outer(k, k) / 16).expand(channels, 1, 3, 3).clone())
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel, stride=self.stride, padding=1, groups=x.shape[1])


def _stem(in_channels: int, width: int, imagenet: bool) -> nn.Sequential:
    """Real conv 3x3 (width/4) -> BN -> ReLU -> depthwise 3x3 -> BN (no affine) -> 1x1 conv
    (width) -> BN; both 3x3s have stride 2 for ImageNet (down-sampling by 4), 1 for CIFAR."""
    stride = 2 if imagenet else 1
    quarter = width // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, quarter, 3, stride, 1, bias=False), nn.BatchNorm2d(quarter), nn.ReLU(),
        nn.Conv2d(quarter, quarter, 3, stride, 1, groups=quarter, bias=False),
        nn.BatchNorm2d(quarter, affine=False),
        nn.Conv2d(quarter, width, 1, bias=False), nn.BatchNorm2d(width))


def _transition(cin: int, cout: int) -> nn.Sequential:
    """Real: ReLU -> MaxPool 2x2 stride 1 -> BlurPool stride 2 -> 1x1 conv -> BN."""
    return nn.Sequential(nn.ReLU(), nn.MaxPool2d(2, 1), BlurPool(cin),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


# one quantizer object for every block (a new partial per block would also grow the layers'
# cache of quantizer signatures with every model built)
_INPUT_SIGN = quantizers.get("ste_sign", clip=CLIP)


def _block(channels: int) -> bnn.Residual:
    """x + BN(ReLU(BinaryConv3x3(sign(x)))), binary input padded with +1 (as larq's pad_values)."""
    conv = bnn.BinaryConv2d(channels, channels, 3, padding=1, bias=False, pad_value=1.0,
                            input_quantizer=_INPUT_SIGN,
                            weight_quantizer="ste_sign")
    return bnn.Residual(nn.Sequential(conv, nn.ReLU(), nn.BatchNorm2d(channels)))


@register("quicknet")
def quicknet(size: str = "medium", num_classes: int = 10, input_size: int = 32,
             in_channels: int = 3, blocks=None, widths=None) -> nn.Sequential:
    """QuickNet (larq zoo): parameters at 224 / 1000 classes, as larq zoo states them:
    ``size="small"`` 12.7 M (QuickNetSmall, 59.4 % ImageNet top-1), ``"medium"`` 13.2 M
    (QuickNet, 63.3 %), ``"large"`` 23.3 M (QuickNetLarge, 66.9 %); here 12,652,504 / 13,230,024 /
    23,338,184 (larq also counts the batch norms' moving statistics and the fixed blur kernels).

    Real stem (down-sampling by 4 for ImageNet, none for CIFAR, ``input_size`` < 128) -> per
    section: a real transition block when the width changes (halving the map), then binary
    residual blocks -> ReLU -> global average pool -> real dense layer. ``blocks`` and
    ``widths`` override the size's (e.g. smaller models for tests).
    """
    if size not in SIZES:
        raise ValueError(f"quicknet: size must be one of {', '.join(SIZES)}, got {size!r}")
    blocks = tuple(blocks) if blocks is not None else SIZES[size][0]
    widths = tuple(widths) if widths is not None else SIZES[size][1]
    if not widths or len(blocks) != len(widths):
        raise ValueError(f"quicknet: blocks {blocks} and widths {widths} must name the same sections")
    for n in (*blocks, *widths, in_channels):
        positive_int(n, "quicknet: blocks, widths and in_channels entries")
    if widths[0] % 4:
        raise ValueError(f"quicknet: the first width must be a multiple of 4, got {widths[0]}")
    transitions = sum(1 for a, b in zip(widths, widths[1:]) if a != b)
    imagenet = imagenet_stem("quicknet", input_size, cifar_stride=2 ** transitions)
    layers: list[nn.Module] = [_stem(in_channels, widths[0], imagenet)]
    channels = widths[0]
    for count, width in zip(blocks, widths):
        if width != channels:
            layers.append(_transition(channels, width))
            channels = width
        layers += [_block(channels) for _ in range(count)]
    layers += [nn.ReLU(), classifier(channels, num_classes)]
    return nn.Sequential(*layers)
