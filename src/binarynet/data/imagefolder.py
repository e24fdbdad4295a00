"""ImageNet-layout image folders read from disk, batch by batch (ImageNet does not fit in memory).

Layout: ``root/<split>/<class>/<image>`` (``.jpeg .jpg .png .bmp .webp``, any case), e.g.
``imagenet/train/n01440764/n01440764_10026.JPEG`` and ``imagenet/val/n01440764/...``: classes are
the sorted sub-folder names, labels their positions. Decoding needs Pillow (the ``imagenet``
extra). The loop asks for the samples of each step by index (each rank its shard, as for the
in-memory datasets); :meth:`ImageFolder.batch` decodes them on a pool of threads (Pillow releases
the GIL while decoding and resizing) after drawing every random number up front, so the batch
does not depend on the thread count or order.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import torch

from ..errors import DataError
from ..threads import usable_cpus
from . import image_transforms

EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
# ImageNet's per-channel RGB statistics (of the training set, on [0, 1]): the usual normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def require_pillow():
    """The PIL.Image module, or a DataError saying how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading image folders (ImageNet) needs Pillow: pip install 'binarynet[imagenet]' "
                        "(or pip install pillow)") from None
    return Image


def imagenet_normalization() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(scale, offset)`` with x_f = (x / 255 - mean) / std for ImageNet's statistics."""
    return (tuple(1.0 / (255.0 * s) for s in IMAGENET_STD),
            tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)))


class ImageFolder:
    """One split of an image folder: ``paths``, ``labels`` (int64), ``classes``.

    ``train``: the random resized crop + flip of :mod:`.image_transforms`; else resize 256 +
    centre crop ``size``. ``threads``: decoding threads (default: the CPU count, at most 16).
    """

    def __init__(self, root, split: str, train: bool, size: int = 224, threads: int = 0, name: str = "imagefolder"):
        require_pillow()
        self.name, self.split, self.train, self.size = name, split, train, size
        folder = os.path.join(os.fspath(root), split)
        if not os.path.isdir(folder):
            raise DataError(f"image folder {folder} does not exist (expected root/{split}/<class>/<images>)")
        self.classes = tuple(sorted(d.name for d in os.scandir(folder) if d.is_dir()))
        paths, labels = [], []
        for label, cls in enumerate(self.classes):
            for entry in sorted(os.scandir(os.path.join(folder, cls)), key=lambda e: e.name):
                if entry.is_file() and entry.name.lower().endswith(EXTENSIONS):
                    paths.append(entry.path)
                    labels.append(label)
        if not paths:
            raise DataError(f"image folder {folder} holds no images in class sub-folders "
                            f"(extensions {', '.join(EXTENSIONS)})")
        self.paths = paths
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.threads = threads or min(16, len(usable_cpus()))
        self._pool = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, n: int) -> "ImageFolder":
        """The first ``n`` samples (in class, then file-name order)."""
        copy = object.__new__(ImageFolder)
        copy.__dict__.update(self.__dict__, paths=self.paths[:n], labels=self.labels[:n], _pool=None)
        return copy

    def image(self, index: int, uniforms=None) -> torch.Tensor:
        """Sample ``index`` decoded and transformed: uint8 (3, size, size); ``uniforms`` is its row
        of :func:`image_transforms.draw` (training only)."""
        Image = require_pillow()
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot decode the image: {exc}") from None
        if self.train:
            return image_transforms.train_transform(img, uniforms, self.size)
        return image_transforms.eval_transform(img, self.size)

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None):
        """``(images uint8 (B, 3, size, size), labels int64 (B,))`` of ``indices``, decoded in parallel."""
        indices = indices.cpu().tolist()
        draws = image_transforms.draw(len(indices), generator) if self.train else [None] * len(indices)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="binarynet-decode")
        images = list(self._pool.map(self.image, indices, draws))
        return torch.stack(images), self.labels[indices]

    def __repr__(self) -> str:
        return f"ImageFolder(split={self.split!r}, n={len(self)}, classes={self.num_classes}, train={self.train})"
