"""Datasets decoded once into memory, with the paper's splits.

Splits (docs/paper.md §2.8, Theano code): "train" is the training part minus its last ``val_size``
images, "val" those last images, "train_full" the whole training part, "test" the test part.
So MNIST / Fashion-MNIST: 50000 / 10000 / 60000 / 10000; CIFAR-10: 45000 / 5000 / 50000 /
10000. SVHN: the last 6000 images of train_32x32.mat are "val" (67257 / 6000 / 73257 / 26032);
its 531131 "extra" images are a split of their own and not part of "train" (the paper's
Theano code trained on train + extra with a per-class validation set from pylearn2).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError
from . import catalog, formats
from .datadir import PartFiles, locate
from .fetch import download as download_dataset

SPLITS = ("train", "val", "test", "train_full", "extra")

_READERS = {
    catalog.CIFAR10_BIN: formats.read_cifar10_bin,
    catalog.CIFAR10_PYTHON: formats.read_cifar10_python,
    catalog.SVHN_MAT: formats.read_svhn_mat,
}


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """One split of a dataset in memory.

    ``images`` uint8 (N, C, H, W); ``labels`` int64 (N,); ``classes`` the class names in label
    order. Indexing gives ``(image uint8 (C, H, W), label int)`` (usable by a DataLoader), but
    :func:`binarynet.data.batches` is the fast way to iterate.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"image_shape={tuple(self.images.shape[1:])})")


def _split_plan(info: catalog.DatasetInfo, split: str) -> tuple[str, str]:
    """(part to read, which of it: "all", "head" = all but the last val_size, "tail")."""
    plan = {"train": ("train", "head"), "val": ("train", "tail"),
            "train_full": ("train", "all"), "test": ("test", "all")}
    if "extra" in info.parts:
        plan["extra"] = ("extra", "all")
    if split not in plan:
        raise ValueError(f"unknown split {split!r} for {info.name!r}; expected one of "
                         f"{', '.join(plan)}")
    return plan[split]


def _too_few(info: catalog.DatasetInfo, files: PartFiles, count: int) -> DataError:
    return DataError(f"{files.paths[-1].parent}: the training part of {info.name!r} holds only "
                     f"{count} images, but its 'val' split alone takes the last {info.val_size}; "
                     f"the files are incomplete. {formats.FIX_DAMAGED}")


def _read_batch_file(info: catalog.DatasetInfo, read, path):
    """``read(path)``, checked to hold the images a file of ``info`` holds (CIFAR-10: 10000)."""
    images, labels = read(path, num_classes=info.num_classes)
    if info.records_per_file and len(labels) != info.records_per_file:
        raise DataError(f"{path}: holds {len(labels)} images, but every batch file of {info.name!r} "
                        f"holds exactly {info.records_per_file} (an incomplete copy?). {formats.FIX_DAMAGED}")
    return images, labels


def _decode(info: catalog.DatasetInfo, files: PartFiles, tail: int | None):
    """Decode a part; with ``tail``, only its last ``tail`` images (reading trailing files only)."""
    if files.format == catalog.IDX:
        images, labels = formats.read_mnist(*files.paths, num_classes=info.num_classes)
        chunks, more_files = [(images, labels)], False
    else:
        read = _READERS[files.format]
        paths = files.paths if tail is None else files.paths[::-1]
        chunks, count = [], 0
        for i, path in enumerate(paths):
            chunks.append(_read_batch_file(info, read, path))
            count += len(chunks[-1][1])
            if tail is not None and count >= tail:
                break
        more_files = i + 1 < len(paths)
        if tail is not None:
            chunks.reverse()
    images = chunks[0][0] if len(chunks) == 1 else np.concatenate([c[0] for c in chunks])
    labels = chunks[0][1] if len(chunks) == 1 else np.concatenate([c[1] for c in chunks])
    if tail is None:
        return images, labels
    if len(labels) <= tail and not more_files:
        raise _too_few(info, files, len(labels))
    return images[-tail:], labels[-tail:]


def load(name: str, split: str, data_dir: str | os.PathLike | None = None,
         download: bool = False) -> ImageDataset:
    """Load ``split`` ("train", "val", "test", "train_full", SVHN also "extra") of ``name``.

    Files are found by :func:`binarynet.data.locate` (``data_dir``, ``$BINARYNET_DATA``, the
    user cache, system copies). If they are missing and ``download`` is true they are fetched
    into ``<data dir>/<name>/`` first. Decoding happens once, here. Raises DataError for
    missing or damaged files, ValueError for an unknown name or split.
    """
    info = catalog.get(name)
    part, which = _split_plan(info, split)
    try:
        files = locate(name, part, data_dir)
    except DataError:
        if not download:
            raise
        download_dataset(name, data_dir, parts=(part,))
        files = locate(name, part, data_dir)
    images, labels = _decode(info, files, tail=info.val_size if which == "tail" else None)
    if which == "head":
        if len(labels) <= info.val_size:
            raise _too_few(info, files, len(labels))
        images, labels = images[:-info.val_size], labels[:-info.val_size]
    if images.shape[1:] != info.image_shape:
        raise DataError(f"{files.paths[0]}: images of {name!r} should be "
                        f"{'x'.join(map(str, info.image_shape))} (C x H x W), got "
                        f"{'x'.join(map(str, images.shape[1:]))}. {formats.FIX_DAMAGED}")
    return ImageDataset(info.name, split, torch.from_numpy(images), torch.from_numpy(labels),
                        info.classes)
