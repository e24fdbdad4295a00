"""Input normalisation as data, and the augmentations of recipes (torch): crop + flip, shift.

The models take float images ``x_f = x_u8 * scale[c] + offset[c]`` (per channel c). Keeping
(scale, offset) as plain numbers lets export fold them into the first layer, so the deployed
engine takes the uint8 images directly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from . import catalog

NORMALIZATIONS = ("paper", "meanstd")


def normalization(name: str, kind: str = "paper") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(scale, offset)`` such that ``x_f = x_u8 * scale + offset``.

    - ``"paper"``: ``x_f = 2 x / 255 - 1`` in [-1, 1] (scale 2/255, offset -1), the input of
      the paper's Theano code for MNIST, CIFAR-10 and SVHN (docs/paper.md §1.5, §2.8).
    - ``"meanstd"``: ``x_f = (x / 255 - mean) / std`` with the dataset's per-channel training
      statistics (scale 1 / (255 std), offset -mean / std), as in the PyTorch recipes.
    """
    info = catalog.get(name)
    channels = info.image_shape[0]
    if kind == "paper":
        return (2.0 / 255.0,) * channels, (-1.0,) * channels
    if kind == "meanstd":
        return (tuple(1.0 / (255.0 * s) for s in info.std),
                tuple(-m / s for m, s in zip(info.mean, info.std)))
    raise ValueError(f"unknown normalization {kind!r}; expected one of {NORMALIZATIONS}")


def normalization_table(scale: Sequence[float], offset: Sequence[float], device=None) -> torch.Tensor:
    """float32 (C * 256,) lookup table of ``u * scale[c] + offset[c]`` for u = 0..255, channel
    after channel (what :func:`apply_table` reads; build it once to normalise many batches)."""
    if len(scale) != len(offset):
        raise ValueError(f"normalization: {len(scale)} scales but {len(offset)} offsets")
    scale_t = torch.tensor(scale, dtype=torch.float64, device=device)[:, None]
    offset_t = torch.tensor(offset, dtype=torch.float64, device=device)[:, None]
    table = torch.arange(256, dtype=torch.float64, device=device) * scale_t + offset_t
    return table.to(torch.float32).view(-1)


def apply_table(images: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``images`` uint8 (N, C, H, W) -> float32 through a :func:`normalization_table` on their device."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise TypeError(f"to_float expects uint8 images (N, C, H, W), got {images.dtype} "
                        f"{tuple(images.shape)}")
    channels = images.shape[1]
    if table.numel() != 256 * channels:
        raise ValueError(f"to_float: {channels} channels but {table.numel() // 256} scales and offsets")
    index = images.long() + 256 * torch.arange(channels, device=images.device).view(1, -1, 1, 1)
    # index_select on the flat table is ~10x faster than advanced indexing on CPU
    return table.index_select(0, index.view(-1)).view(images.shape)


def to_float(images: torch.Tensor, scale: Sequence[float], offset: Sequence[float]) -> torch.Tensor:
    """``images`` uint8 (N, C, H, W) -> float32 ``images * scale[c] + offset[c]`` on their device.

    Each value is the float32 nearest to the exact result (evaluated in float64 through a
    256-entry table per channel), so e.g. "paper" maps 0 and 255 to exactly -1 and +1, like
    the Theano code's float64 ``2 x / 255 - 1``, and export can fold the same numbers.
    """
    return apply_table(images, normalization_table(scale, offset, images.device))


def crop_flip(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
              padding: int = 4) -> torch.Tensor:
    """Crop each image from its zero-padded copy at (``top[i]``, ``left[i]``), mirrored
    left-right where ``flip[i]``; output has the input's shape and dtype.

    ``images`` (N, C, H, W); ``top``, ``left`` int64 (N,) in 0..2*padding; ``flip`` bool (N,).
    Padding is in pixel space (value 0, black), as torchvision's RandomCrop(padding=4) does
    before normalisation. One gather for the whole batch, on the images' device.
    """
    n, c, h, w = images.shape
    device = images.device
    height, width = h + 2 * padding, w + 2 * padding
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = top.to(device)[:, None] + torch.arange(h, device=device)         # (N, H)
    cols = left.to(device)[:, None] + torch.arange(w, device=device)        # (N, W)
    cols = torch.where(flip.to(device)[:, None], cols.flip(1), cols)
    # Flat offsets into the padded batch; index_select on them is ~4x faster than
    # four-tensor advanced indexing on CPU.
    planes = torch.arange(n * c, device=device).view(n, c) * height          # (N, C)
    index = ((planes[:, :, None] + rows[:, None, :]) * width)[..., None] + cols[:, None, None, :]
    return padded.reshape(-1).index_select(0, index.reshape(-1)).view(n, c, h, w)


def draw_crop_flip(n: int, generator: torch.Generator | None = None, padding: int = 4,
                   flip: bool = True) -> torch.Tensor:
    """int64 (3, n): the top offsets, left offsets (uniform in 0..2*padding) and flips (0/1) of
    :func:`random_crop_flip`, drawn in this order from ``generator`` (a CPU torch.Generator;
    None: torch's default). One tensor, so a trainer moves a step's draws in one copy.
    ``flip=False`` (a shift): the flips are all 0 and not drawn."""
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flips = torch.randint(0, 2, (n,), generator=generator) if flip else torch.zeros(n, dtype=torch.int64)
    return torch.stack([top, left, flips])


def random_crop_flip(images: torch.Tensor, generator: torch.Generator | None = None,
                     padding: int = 4) -> torch.Tensor:
    """Random crop with zero padding ``padding`` and random horizontal flip (p = 1/2), the
    standard CIFAR augmentation of modern BNN recipes. Not used by the paper's recipes.

    Draws with :func:`draw_crop_flip`, so a seeded generator reproduces the batch on any device.
    Pass it as ``augment=`` to :func:`batches`.
    """
    top, left, flip = draw_crop_flip(images.shape[0], generator, padding)
    return crop_flip(images, top, left, flip.bool(), padding)


def random_shift(images: torch.Tensor, generator: torch.Generator | None = None,
                 padding: int = 2) -> torch.Tensor:
    """Random translation by up to ``padding`` pixels each way, the gap filled with 0 (black):
    :func:`random_crop_flip` without the mirror, so it suits digits too (the ``shift``
    augmentation of recipes). Pass it as ``augment=`` to :func:`batches`."""
    top, left, flip = draw_crop_flip(images.shape[0], generator, padding, flip=False)
    return crop_flip(images, top, left, flip.bool(), padding)


@dataclass(frozen=True)
class Augmentation:
    """A recipe's ``augment``: crop from the image zero-padded by ``padding`` pixels, mirrored
    left-right at random when ``flip``."""
    padding: int
    flip: bool


# The recipes' augmentations by name ("none" is the absence of one).
AUGMENTATIONS = {
    "crop_flip": Augmentation(padding=4, flip=True),   # the CIFAR standard (modern BNN recipes)
    "shift": Augmentation(padding=2, flip=False),      # +-2 pixels, for digits and other small images
}


def augmentation(name: str) -> Augmentation:
    """The :class:`Augmentation` of recipe field ``augment`` = ``name``; ValueError naming the field."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {['none', *AUGMENTATIONS]}, got {name!r}")
    return AUGMENTATIONS[name]


def draw_augmentation(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """int64 (3, n) draws of augmentation ``name`` for n images (:func:`draw_crop_flip`), on the
    CPU, so a seeded generator gives the same batch on any device."""
    spec = augmentation(name)
    return draw_crop_flip(n, generator, spec.padding, spec.flip)


def apply_augmentation(name: str, images: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """``images`` uint8 (N, C, H, W) augmented by ``name`` with :func:`draw_augmentation`'s
    ``draws`` (on the images' device)."""
    top, left, flip = draws
    return crop_flip(images, top, left, flip.bool(), augmentation(name).padding)


def check_augmentation(name: str, dataset: str, image_shape: Sequence[int]) -> None:
    """ValueError naming the field ``augment`` unless augmentation ``name`` suits ``dataset``'s
    images: (C, H, W) with H and W at least twice its padding (a crop keeps at least half of
    each side), and, when it mirrors, of a catalog dataset whose classes survive a mirror (not
    digits). Names that the catalog lacks are checked by shape."""
    spec = augmentation(name)
    side = 2 * spec.padding
    if len(image_shape) != 3 or min(image_shape[1:]) < side:
        raise ValueError(f"augment {name} needs (C, H, W) images of at least {side}x{side} "
                         f"pixels; dataset {dataset} has images of shape {tuple(image_shape)}")
    if spec.flip and dataset in catalog.names() and not catalog.get(dataset).flip_invariant:
        raise ValueError(f"augment {name} mirrors images, which changes the classes of dataset "
                         f"{dataset} (e.g. digits); use augment none")


def check_crop_flip(dataset: str, image_shape: Sequence[int]) -> None:
    """:func:`check_augmentation` of ``crop_flip``."""
    check_augmentation("crop_flip", dataset, image_shape)
