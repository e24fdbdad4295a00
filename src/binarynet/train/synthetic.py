"""A generated image-classification problem for smoke tests and demos without any download.

Each class c has a fixed random prototype image P_c (uint8); a sample of class c is
P_c plus Gaussian pixel noise (std ``noise``), clipped to [0, 255] and rounded. With the
default noise the classes overlap enough that a linear model does not reach 100%, yet a small
binary MLP learns it in a few epochs. Everything is a pure function of ``seed``.

Splits (sizes as arguments): ``train``, ``val``, ``test`` drawn independently, and
``train_full`` = train + val, mirroring the real datasets' split names.
"""
from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test", "train_full")
IMAGE_SHAPE = (1, 8, 8)  # (C, H, W) of the images the training recipes use


def generate(split: str, *, num_train: int = 4000, num_val: int = 1000, num_test: int = 1000,
             shape=IMAGE_SHAPE, num_classes: int = 10, noise: float = 150.0, seed: int = 0):
    """``(images uint8 (N, C, H, W), labels int64 (N,))`` of ``split`` (see module docstring)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} of the synthetic dataset; use one of {', '.join(SPLITS)}")
    if split == "train_full":
        parts = [generate(s, num_train=num_train, num_val=num_val, num_test=num_test, shape=shape,
                          num_classes=num_classes, noise=noise, seed=seed) for s in ("train", "val")]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    prototypes = np.random.default_rng([seed, 0]).integers(0, 256, size=(num_classes,) + tuple(shape))
    count = {"train": num_train, "val": num_val, "test": num_test}[split]
    rng = np.random.default_rng([seed, 1 + SPLITS.index(split)])
    labels = rng.integers(0, num_classes, size=count)
    pixels = prototypes[labels] + rng.normal(0.0, noise, size=(count,) + tuple(shape))
    images = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)
