"""The batches of training steps, built where the model runs.

The training split's uint8 images and labels are copied to the device once, when they fit
(always on the CPU; on a GPU when they take at most a quarter of its free memory: MNIST is 47 MB,
CIFAR-10 154 MB). Each step then picks its samples with one gather on the device, crops and
flips them there, and normalises them through a lookup table built once, so a step issues no
host synchronisation: only its indices (sliced from the epoch order, which is moved to the
device once per epoch) and its augmentation draws (a few hundred bytes from a CPU generator,
copied without waiting) come from the host. A split that does not fit stays on the host and
each step's batch is gathered there and copied over.

The batch is the same, bit for bit, as ``binarynet.data.batches`` gives for the same indices,
augmentation and generator (the draws come from the same CPU generator in the same order), so
the device does not change what a seeded run computes.
"""
from __future__ import annotations

import torch

from .. import data

# A split is kept on a GPU when it takes at most this share of the memory free there.
RESIDENT_SHARE = 0.25


def fits_on(device: torch.device, nbytes: int) -> bool:
    """Whether ``nbytes`` of data may stay resident on ``device`` (see :data:`RESIDENT_SHARE`)."""
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= RESIDENT_SHARE * free


class StepBatches:
    """Training batches of one split on ``device``: ``batch(indices, generator) -> (x, y)``.

    ``normalization``: the (scale, offset) pair of the run; ``augment``: an augmentation's name
    (:data:`binarynet.data.AUGMENTATIONS`: "crop_flip", "shift") or "none", drawn on the host as
    :func:`binarynet.data.batches` draws it; ``resident``: keep the split on the device
    (default: when it fits, :func:`fits_on`).
    """

    def __init__(self, dataset, normalization: tuple, device: torch.device, augment: str = "none",
                 resident: bool | None = None):
        self.device = torch.device(device)
        # An image folder (ImageNet) is read from disk each step, its own transforms included.
        self.folder = dataset if isinstance(dataset, data.ImageFolder) else None
        if self.folder is not None:
            resident = False
        elif resident is None:
            resident = fits_on(self.device, dataset.images.nbytes + dataset.labels.nbytes)
        self.resident = resident
        # Where the split lives and where step indices must be (the epoch order is moved there).
        self.home = self.device if self.resident else torch.device("cpu")
        self.images = dataset.images.to(self.home) if self.folder is None else None
        self.labels = dataset.labels.to(self.home)
        self.table = data.normalization_table(*normalization, device=self.device)
        self.augment = augment
        # Host tensors bound for a GPU go through page-locked memory, so copies need not wait.
        self._pin = self.device.type == "cuda"

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device == self.device:
            return tensor
        if self._pin:
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None):
        """``(x float32 (B, C, H, W), y int64 (B,))`` of the split's ``indices`` on the device."""
        indices = indices.to(self.home)
        if self.folder is not None:
            images, labels = (self._to_device(t) for t in self.folder.batch(indices, generator))
            return data.apply_table(images, self.table), labels
        images = self._to_device(self.images.index_select(0, indices))
        labels = self._to_device(self.labels.index_select(0, indices))
        if self.augment != "none":
            draws = self._to_device(data.draw_augmentation(self.augment, len(indices), generator))
            images = data.apply_augmentation(self.augment, images, draws)
        return data.apply_table(images, self.table), labels
