"""The standard ImageNet transforms on decoded (PIL) images, drawn from explicit random numbers.

- Training: random resized crop (area in [8%, 100%] of the image, aspect ratio in [3/4, 4/3]
  log-uniform, 10 tries then a centre crop of the clamped ratio; the algorithm of torchvision's
  ``RandomResizedCrop``), resized to ``size`` x ``size`` bilinearly, then a horizontal flip with
  probability 1/2 (Szegedy et al. 2015; every ResNet / ReActNet / QuickNet ImageNet recipe).
- Evaluation: resize the shorter side to ``resize`` (256), centre crop ``size`` (224).

The random numbers of one sample are a row of :data:`DRAWS_PER_SAMPLE` uniforms drawn before
decoding (:func:`draw`), so images can be decoded on several threads in any order and a seeded
run stays reproducible.
"""
from __future__ import annotations

import math

import numpy as np
import torch

ATTEMPTS = 10
DRAWS_PER_SAMPLE = 4 * ATTEMPTS + 1  # area, ratio, top, left per try; flip
SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)


def draw(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The uniforms of ``n`` training samples: float64 (n, DRAWS_PER_SAMPLE) in [0, 1)."""
    return torch.rand(n, DRAWS_PER_SAMPLE, generator=generator, dtype=torch.float64)


def crop_box(width: int, height: int, u) -> tuple[int, int, int, int]:
    """``(left, top, w, h)`` of the random resized crop of a ``width`` x ``height`` image from
    the uniforms ``u`` (one row of :func:`draw`)."""
    area = width * height
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    for k in range(ATTEMPTS):
        a, r, t, l = (float(v) for v in u[4 * k:4 * k + 4])
        target = area * (SCALE[0] + (SCALE[1] - SCALE[0]) * a)
        ratio = math.exp(log_lo + (log_hi - log_lo) * r)
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(l * (width - w + 1)), int(t * (height - h + 1)), w, h
    ratio = width / height  # fallback: the whole image, cropped to the allowed ratios
    if ratio < RATIO[0]:
        w, h = width, round(width / RATIO[0])
    elif ratio > RATIO[1]:
        w, h = round(height * RATIO[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def train_transform(image, u, size: int = 224) -> torch.Tensor:
    """Random resized crop + flip of a PIL image -> uint8 (3, size, size)."""
    from PIL import Image

    left, top, w, h = crop_box(image.width, image.height, u)
    image = image.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    if float(u[-1]) < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return to_tensor(image)


def eval_transform(image, size: int = 224, resize: int = 256) -> torch.Tensor:
    """Shorter side to ``resize``, centre crop ``size`` -> uint8 (3, size, size)."""
    from PIL import Image

    scale = resize / min(image.width, image.height)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((width, height), Image.BILINEAR)
    left, top = (width - size) // 2, (height - size) // 2
    return to_tensor(image.crop((left, top, left + size, top + size)))


def to_tensor(image) -> torch.Tensor:
    """A PIL RGB image -> uint8 (3, H, W)."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
