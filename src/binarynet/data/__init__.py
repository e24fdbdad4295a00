"""Datasets for binarynet: readers, data directory, checksummed download, splits, batches.

Typical use::

    from binarynet import data
    train = data.load("mnist", "train", download=True)      # ImageDataset, uint8 (N,1,28,28)
    for x, y in data.batches(train, 100, shuffle=True, generator=1234):
        ...                                                   # x float32 in [-1, 1], y int64

- Readers (numpy, ``(images uint8 NCHW, labels int64)``): :func:`read_mnist`,
  :func:`read_cifar10_bin`, :func:`read_cifar10_python` (restricted unpickler),
  :func:`read_svhn_mat` (needs scipy).
- Where files live: :func:`resolve_data_dir`, :func:`locate`; fetching: :func:`download`.
- In memory: :func:`load` -> :class:`ImageDataset`, with the paper's splits
  ("train", "val", "test", "train_full"; SVHN "extra").
- Normalisation as data: :func:`normalization` -> (scale, offset), :func:`to_float` (or a
  :func:`normalization_table` built once and :func:`apply_table`).
- Iteration: :func:`batches` (shuffle, shards, augmentation such as :func:`random_crop_flip`,
  :func:`random_shift`; by a recipe's name: :func:`draw_augmentation`, :func:`apply_augmentation`).
- On disk, batch by batch: :class:`ImageFolder` (ImageNet layout root/split/class/*.JPEG, with
  the standard 224 training and evaluation transforms; needs Pillow).

Every problem with dataset files raises :class:`binarynet.errors.DataError`.
"""
from .batching import Batches, batches
from .catalog import DatasetInfo, names
from .catalog import get as info
from .datadir import DATA_ENV, locate, resolve_data_dir
from .datasets import SPLITS, ImageDataset, load
from .fetch import URL_ENV, download
from .imagefolder import ImageFolder, imagenet_normalization
from .formats import (read_cifar10_bin, read_cifar10_python, read_idx_images, read_idx_labels,
                      read_mnist, read_svhn_mat)
from .transforms import (AUGMENTATIONS, Augmentation, apply_augmentation, apply_table, augmentation,
                         check_augmentation, check_crop_flip, crop_flip, draw_augmentation, draw_crop_flip,
                         normalization, normalization_table, random_crop_flip, random_shift, to_float)

__all__ = [
    "AUGMENTATIONS", "Augmentation", "apply_augmentation", "augmentation", "check_augmentation",
    "draw_augmentation", "random_shift", "Batches", "DATA_ENV", "DatasetInfo", "ImageDataset", "ImageFolder", "imagenet_normalization", "SPLITS", "URL_ENV", "apply_table", "batches",
    "check_crop_flip", "crop_flip", "download", "draw_crop_flip", "info", "load", "locate", "names", "normalization", "normalization_table",
    "random_crop_flip", "read_cifar10_bin", "read_cifar10_python", "read_idx_images",
    "read_idx_labels", "read_mnist", "read_svhn_mat", "resolve_data_dir", "to_float",
]
