"""The training data of a recipe: its splits, the input normalisation, and batches of a step."""
from __future__ import annotations

import dataclasses
import os

import torch

from .. import data
from ..errors import DataError
from . import synthetic
from .recipes import Recipe


def load_split(recipe: Recipe, split: str, options, max_samples: int):
    """The ``split`` of the recipe's dataset as a ``binarynet.data.ImageDataset``
    (``options``: a :class:`~binarynet.train.options.RunOptions`, for its data folder and download)."""
    if recipe.dataset == "imagenet":  # streamed from disk: <data dir>/imagenet/<split>/<class>/*.JPEG
        root = os.path.join(data.resolve_data_dir(options.data_dir), "imagenet")
        if options.download:
            raise DataError(f"ImageNet cannot be downloaded automatically (its licence needs a login): place it "
                            f"under {root}/train/<class>/ and {root}/val/<class>/, then run without --download")
        dataset = data.ImageFolder(root, split, train=split == recipe.train_split, name="imagenet")
        return dataset.subset(max_samples) if max_samples and max_samples < len(dataset) else dataset
    if recipe.dataset == "synthetic":
        images, labels = synthetic.generate(split, seed=recipe.seed)
        dataset = data.ImageDataset("synthetic", split, torch.from_numpy(images), torch.from_numpy(labels),
                                    tuple(str(c) for c in range(10)))
    else:
        dataset = data.load(recipe.dataset, split, data_dir=options.data_dir, download=options.download)
    if max_samples and max_samples < len(dataset):
        dataset = dataclasses.replace(dataset, images=dataset.images[:max_samples],
                                      labels=dataset.labels[:max_samples])
    return dataset


def input_channels(dataset: str) -> int:
    """Channels of the images of ``dataset`` (a name of binarynet.data, or "synthetic")."""
    if dataset == "imagenet":
        return 3
    return synthetic.IMAGE_SHAPE[0] if dataset == "synthetic" else data.info(dataset).image_shape[0]


def input_normalization(recipe: Recipe, train_set) -> tuple:
    """Per-channel (scale, offset) with x_f = x_u8 * scale + offset for the recipe's dataset."""
    if recipe.dataset == "imagenet":
        return data.imagenet_normalization()
    if recipe.dataset != "synthetic":
        scale, offset = data.normalization(recipe.dataset, recipe.normalization)
        return tuple(float(s) for s in scale), tuple(float(o) for o in offset)
    channels = train_set.images.shape[1]
    if recipe.normalization == "paper":
        return (2.0 / 255.0,) * channels, (-1.0,) * channels
    pixels = train_set.images.double().div(255.0).transpose(0, 1).reshape(channels, -1)
    mean, std = pixels.mean(dim=1), pixels.std(dim=1)
    return tuple((1.0 / (255.0 * std)).tolist()), tuple((-mean / std).tolist())

