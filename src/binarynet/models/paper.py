"""The paper's networks (arXiv:1602.02830, §2 and Table 1; docs/paper.md §3).

Every model is a flat ``torch.nn.Sequential`` in the paper order
``Binary{Linear,Conv2d} -> [MaxPool2d] -> BatchNorm -> Sign``, ending with
``BinaryLinear -> BatchNorm1d`` (no sign: its output is the squared-hinge score). Binary layers
have ``input_quantizer=None``: the first one sees real-valued pixels, later ones the +-1
output of the preceding :class:`~binarynet.nn.Sign` (with Dropout in between for the MLP).
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .. import nn as bnn
from .common import positive_int
from .registry import register

__all__ = ["mnist_mlp", "cifar10_vgg", "svhn_vgg"]


def _batchnorm(kind: str, dims: int, num_features: int, eps: float, momentum: float) -> nn.Module:
    if kind == "standard":
        cls = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    elif kind == "shift":
        cls = bnn.ShiftBatchNorm1d if dims == 1 else bnn.ShiftBatchNorm2d
    else:
        raise ValueError(f"batchnorm must be 'standard' or 'shift', got {kind!r}")
    return cls(num_features, eps=eps, momentum=momentum)


def _hidden_dense(in_features: int, out_features: int, batchnorm: str, stochastic: bool,
                  eps: float, momentum: float) -> list[nn.Module]:
    """A hidden fully connected layer of the paper: BinaryLinear -> BN1d -> Sign."""
    return [bnn.BinaryLinear(in_features, out_features),
            _batchnorm(batchnorm, 1, out_features, eps, momentum), bnn.Sign(stochastic=stochastic)]


def _output_block(in_features: int, num_classes: int, eps: float, momentum: float) -> list[nn.Module]:
    # The output BN is always the standard one, as in T7 (docs/paper.md §1.5); no sign after it.
    return [bnn.BinaryLinear(in_features, num_classes), nn.BatchNorm1d(num_classes, eps=eps, momentum=momentum)]


@register("mnist_mlp")
def mnist_mlp(
    hidden: int = 4096,
    depth: int = 3,
    in_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    dropout_in: float = 0.2,
    dropout_hidden: float = 0.5,
    batchnorm: str = "standard",
    stochastic: bool = False,
    bn_eps: float = 1e-4,
    bn_momentum: float = 0.1,
) -> nn.Sequential:
    """The paper's MNIST MLP (TH ``mnist.py``; docs/paper.md §3):

    Flatten -> Dropout(dropout_in) -> [BinaryLinear(hidden) -> BN1d -> Sign -> Dropout(dropout_hidden)]
    x depth -> BinaryLinear(num_classes) -> BatchNorm1d(num_classes).

    Defaults: 3 x 4096 units, dropout 0.2 / 0.5, Lasagne BN eps 1e-4 and EMA 0.1.
    ``batchnorm="shift"`` uses :class:`ShiftBatchNorm1d` for the hidden layers (T7);
    ``stochastic=True`` uses stochastic sign activations in training (T7). A Dropout of
    probability 0 is left out.
    """
    positive_int(hidden, "hidden")
    positive_int(depth, "depth")
    positive_int(num_classes, "num_classes")
    in_features = 1
    for size in in_shape:
        in_features *= positive_int(size, "in_shape entries")
    layers: list[nn.Module] = [nn.Flatten()]
    if dropout_in > 0:
        layers.append(nn.Dropout(dropout_in))
    width = in_features
    for _ in range(depth):
        layers += _hidden_dense(width, hidden, batchnorm, stochastic, bn_eps, bn_momentum)
        if dropout_hidden > 0:
            layers.append(nn.Dropout(dropout_hidden))
        width = hidden
    layers += _output_block(width, num_classes, bn_eps, bn_momentum)
    return nn.Sequential(*layers)


@register("cifar10_vgg")
def cifar10_vgg(
    widths: Sequence[int] = (128, 256, 512),
    fc: Sequence[int] = (1024, 1024),
    in_channels: int = 3,
    image_size: int = 32,
    num_classes: int = 10,
    batchnorm: str = "standard",
    stochastic: bool = False,
    bn_eps: float = 1e-4,
    bn_momentum: float = 0.1,
    pad_value: float = 0.0,
) -> nn.Sequential:
    """The paper's CIFAR-10 ConvNet (2x128C3)-MP2-(2x256C3)-MP2-(2x512C3)-MP2-(2x1024FC)-10SVM (docs/paper.md §3).

    Per width w: BinaryConv2d(3x3, pad 1) -> BN2d -> Sign -> BinaryConv2d(3x3, pad 1) ->
    MaxPool2d(2) -> BN2d -> Sign (BN after the pool, which acts on the integer sums); then
    Flatten -> [BinaryLinear -> BN1d -> Sign] per entry of ``fc`` -> BinaryLinear(num_classes)
    -> BatchNorm1d(num_classes). ``image_size`` must be divisible by 2**len(widths).
    ``pad_value`` (0.0 or +-1.0) is the border value of the convolutions whose input is binary;
    the first convolution sees real-valued pixels and always pads with 0 (paper).
    """
    if not widths:
        raise ValueError("widths must name at least one convolution stage")
    for w in widths:
        positive_int(w, "widths entries")
    for f in fc:
        positive_int(f, "fc entries")
    positive_int(in_channels, "in_channels")
    positive_int(num_classes, "num_classes")
    positive_int(image_size, "image_size")
    stages = len(widths)
    if image_size % (2 ** stages) != 0:
        raise ValueError(
            f"image_size={image_size} must be divisible by 2**len(widths) = {2 ** stages} "
            f"({stages} max-pool stages)"
        )
    layers: list[nn.Module] = []
    channels = in_channels
    for i, w in enumerate(widths):
        first_pad = 0.0 if i == 0 else pad_value
        layers += [
            bnn.BinaryConv2d(channels, w, 3, padding=1, pad_value=first_pad),
            _batchnorm(batchnorm, 2, w, bn_eps, bn_momentum),
            bnn.Sign(stochastic=stochastic),
            bnn.BinaryConv2d(w, w, 3, padding=1, pad_value=pad_value),
            nn.MaxPool2d(2),
            _batchnorm(batchnorm, 2, w, bn_eps, bn_momentum),
            bnn.Sign(stochastic=stochastic),
        ]
        channels = w
    side = image_size // (2 ** stages)
    width = channels * side * side
    layers.append(nn.Flatten())
    for f in fc:
        layers += _hidden_dense(width, f, batchnorm, stochastic, bn_eps, bn_momentum)
        width = f
    layers += _output_block(width, num_classes, bn_eps, bn_momentum)
    return nn.Sequential(*layers)


@register("svhn_vgg")
def svhn_vgg(
    widths: Sequence[int] = (64, 128, 256),
    fc: Sequence[int] = (1024, 1024),
    in_channels: int = 3,
    image_size: int = 32,
    num_classes: int = 10,
    batchnorm: str = "standard",
    stochastic: bool = False,
    bn_eps: float = 1e-4,
    bn_momentum: float = 0.1,
    pad_value: float = 0.0,
) -> nn.Sequential:
    """The paper's SVHN ConvNet: :func:`cifar10_vgg` with half the conv widths, (64, 128, 256).

    The fully connected layers are not halved (TH/T7 code; docs/paper.md §3).
    """
    return cifar10_vgg(
        widths=widths, fc=fc, in_channels=in_channels, image_size=image_size,
        num_classes=num_classes, batchnorm=batchnorm, stochastic=stochastic,
        bn_eps=bn_eps, bn_momentum=bn_momentum, pad_value=pad_value,
    )
