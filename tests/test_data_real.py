"""The real MNIST and CIFAR-10 files (BINARYNET_DATA): shapes, labels, statistics, splits, sums.

Expected numbers are those of the datasets' documentation (label counts, first labels, pixel
statistics). Decode times are printed (pytest -s), not asserted.
"""
import gzip
import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from binarynet import data

DATA = os.environ.get("BINARYNET_DATA")
pytestmark = pytest.mark.skipif(not DATA, reason="BINARYNET_DATA is not set: no real datasets")


def timed_load(name, split):
    start = time.perf_counter()
    ds = data.load(name, split, data_dir=DATA)
    print(f"\n{name} {split}: {len(ds)} images decoded in {time.perf_counter() - start:.2f} s")
    return ds


@pytest.fixture(scope="module")
def mnist():
    return {split: timed_load("mnist", split) for split in ("train_full", "test")}


@pytest.fixture(scope="module")
def cifar10():
    return {split: timed_load("cifar10", split) for split in ("train_full", "test")}


def counts(ds):
    return torch.bincount(ds.labels, minlength=10).tolist()


def channel_stats(images):
    """Per-channel mean and std of pixels / 255, exactly, from 256-bin histograms."""
    values = np.arange(256) / 255
    stats = []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].flatten(), minlength=256).double().numpy()
        mean = (hist * values).sum() / hist.sum()
        stats.append((mean, np.sqrt((hist * (values - mean) ** 2).sum() / hist.sum())))
    return np.array(stats).T


def test_mnist_shapes_and_labels(mnist):
    train, test = mnist["train_full"], mnist["test"]
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert counts(train) == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert counts(test) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    mean, std = channel_stats(train.images)
    assert mean[0] == pytest.approx(0.1307, abs=5e-5) and std[0] == pytest.approx(0.3081, abs=5e-5)


def test_mnist_splits(mnist):
    full = mnist["train_full"]
    train, val = timed_load("mnist", "train"), timed_load("mnist", "val")
    assert (len(train), len(val)) == (50000, 10000)
    assert torch.equal(train.images, full.images[:50000]) and torch.equal(val.labels, full.labels[50000:])


def test_cifar10_shapes_and_labels(cifar10):
    train, test = cifar10["train_full"], cifar10["test"]
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert train.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert counts(train) == [5000] * 10 and counts(test) == [1000] * 10
    mean, std = channel_stats(train.images)       # channel order R, G, B
    np.testing.assert_allclose(mean, [0.4914, 0.4822, 0.4465], atol=5e-5)
    np.testing.assert_allclose(std, [0.2470, 0.2435, 0.2616], atol=5e-5)


def test_cifar10_splits(cifar10):
    full = cifar10["train_full"]
    train, val = timed_load("cifar10", "train"), timed_load("cifar10", "val")
    assert (len(train), len(val)) == (45000, 5000)
    assert torch.equal(train.labels, full.labels[:45000])
    assert torch.equal(val.images, full.images[45000:])


def test_published_checksums_match_the_files():
    mnist = Path(DATA) / "mnist"
    for name, digest in data.info("mnist").checksums.items():
        assert hashlib.sha256((mnist / name).read_bytes()).hexdigest() == digest, name
    cifar = Path(DATA) / "cifar10"        # here as .bin.gz; the sums are of the .bin files
    for name, digest in data.info("cifar10").checksums.items():
        if name.endswith(".bin"):
            raw = gzip.decompress((cifar / f"{name}.gz").read_bytes())
            assert hashlib.sha256(raw).hexdigest() == digest, name


def test_first_batch_is_paper_normalised(cifar10):
    x, y = next(iter(data.batches(cifar10["test"], 50)))
    assert x.shape == (50, 3, 32, 32) and y[:5].tolist() == [3, 8, 8, 0, 6]
    assert x.min() >= -1 and x.max() <= 1
    expected = 2 * cifar10["test"].images[:50].double() / 255 - 1
    assert torch.equal(x, expected.float())
