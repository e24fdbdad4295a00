"""Mini-batches straight from the in-memory uint8 tensors, without torch's DataLoader.

Indexing a contiguous uint8 tensor, moving it to the device and normalising there is far
cheaper than per-sample Python transforms, so no worker processes are needed.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch

from .transforms import apply_table, normalization_table
from .transforms import normalization as dataset_normalization

Augment = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


class Batches:
    """Re-iterable mini-batches of a dataset (see :func:`batches`); ``len()`` is the batch count.

    Each iteration draws a new order (when shuffling) from the same generator, so successive
    epochs differ and a seeded run is reproducible.
    """

    def __init__(self, dataset, batch_size: int, *, shuffle: bool = False,
                 generator: torch.Generator | int | None = None, drop_last: bool = False,
                 augment: Augment | None = None, sampler_indices: Sequence[int] | None = None,
                 normalization: str | tuple = "paper", device: torch.device | str | None = None):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        # An image folder (no `images`: read from disk) decodes and transforms its own batches.
        self.dataset, self.images, self.labels = dataset, getattr(dataset, "images", None), dataset.labels
        if self.images is not None and (self.images.dtype != torch.uint8 or self.images.dim() != 4):
            raise TypeError(f"batches expects a dataset of uint8 (N, C, H, W) images, got "
                            f"{self.images.dtype} {tuple(self.images.shape)}")
        if sampler_indices is not None:
            if shuffle:
                raise ValueError("pass either shuffle=True or sampler_indices (an order that "
                                 "is already shuffled), not both")
            indices = torch.as_tensor(sampler_indices, dtype=torch.int64).reshape(-1)
            if indices.numel() and (indices.min() < 0 or indices.max() >= len(self.labels)):
                raise ValueError(f"sampler_indices must lie in 0..{len(self.labels) - 1}")
            self.indices = indices
        else:
            self.indices = None
        if isinstance(normalization, str):
            normalization = dataset_normalization(dataset.name, normalization)
        self.scale, self.offset = normalization
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        self.generator = generator
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment = augment
        self.device = None if device is None else torch.device(device)

    def _order(self) -> torch.Tensor:
        if self.indices is not None:
            return self.indices
        if self.shuffle:
            return torch.randperm(len(self.labels), generator=self.generator)
        return torch.arange(len(self.labels))

    def __len__(self) -> int:
        n = len(self.labels) if self.indices is None else len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        table = None  # the normalisation table, built once per pass on the batches' device
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            if self.drop_last and len(index) < self.batch_size:
                break
            if self.images is None:
                images, labels = self.dataset.batch(index, self.generator)
            else:
                images = self.images.index_select(0, index)
                labels = self.labels.index_select(0, index)
            if self.device is not None:
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
            if self.augment is not None:
                images = self.augment(images, self.generator)
            if table is None:
                table = normalization_table(self.scale, self.offset, images.device)
            yield apply_table(images, table), labels


def batches(dataset, batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | int | None = None, drop_last: bool = False,
            augment: Augment | None = None, sampler_indices: Sequence[int] | None = None,
            normalization: str | tuple = "paper",
            device: torch.device | str | None = None) -> Batches:
    """Mini-batches ``(x, y)`` of ``dataset``: x float32 (B, C, H, W) normalised, y int64 (B,).

    - ``shuffle``: a new random order each iteration, drawn from ``generator`` (a
      torch.Generator, an int seed, or None for torch's default generator).
    - ``sampler_indices``: iterate exactly this index order instead (e.g. one rank's shard
      from a DistributedSampler); excludes ``shuffle``.
    - ``drop_last``: skip a final incomplete batch.
    - ``augment``: ``f(images_u8, generator) -> images_u8``, applied per batch on the device,
      e.g. :func:`binarynet.data.random_crop_flip`.
    - ``normalization``: "paper" (2x/255 - 1), "meanstd", or an explicit (scale, offset) pair
      (see :func:`binarynet.data.normalization`).
    - ``device``: where the batch is moved (as uint8, before augmenting and normalising).
    """
    return Batches(dataset, batch_size, shuffle=shuffle, generator=generator,
                   drop_last=drop_last, augment=augment, sampler_indices=sampler_indices,
                   normalization=normalization, device=device)
