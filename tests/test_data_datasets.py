"""Data directory resolution, file layouts, and load() with the paper's splits (small files)."""
import os
import pickle

import numpy as np
import pytest
import torch

from binarynet import data
from binarynet.data import datadir
from binarynet.errors import DataError
from test_data_formats import (cifar_bin_bytes, cifar_python_bytes, random_cifar, small_cifar_batches,
                               write_bytes, write_mnist, write_svhn)


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No environment or system copies leak in: each test states where data lies."""
    monkeypatch.delenv("BINARYNET_DATA", raising=False)
    monkeypatch.delenv("BINARYNET_DATA_URL", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(datadir, "SYSTEM_DATA_DIRS", (tmp_path / "system",))


# ---------------------------------------------------------------- data directory


def test_resolve_data_dir_order(monkeypatch, tmp_path):
    assert data.resolve_data_dir() == tmp_path / "cache" / "binarynet" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.resolve_data_dir() == tmp_path / "home" / ".cache" / "binarynet" / "data"
    monkeypatch.setenv("BINARYNET_DATA", str(tmp_path / "env"))
    assert data.resolve_data_dir() == tmp_path / "env"
    assert data.resolve_data_dir(tmp_path / "cli") == tmp_path / "cli"
    assert data.resolve_data_dir(str(tmp_path / "cli")) == tmp_path / "cli"


def test_dataset_dirs_include_system_copies(tmp_path):
    assert datadir.dataset_dirs("fashion-mnist", tmp_path / "d") == [
        tmp_path / "d" / "fashion-mnist", tmp_path / "system" / "fashion-mnist"]
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*mnist, fashion-mnist"):
        datadir.dataset_dirs("imagenet")


def test_not_found_message(tmp_path):
    with pytest.raises(DataError) as info:
        data.load("mnist", "test", data_dir=tmp_path / "d")
    message = str(info.value)
    for fragment in ("'mnist' (test) not found", str(tmp_path / "d" / "mnist"),
                     str(tmp_path / "system" / "mnist"), "--download", "BINARYNET_DATA",
                     "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz"):
        assert fragment in message, message


def test_incomplete_message(tmp_path):
    write_mnist(tmp_path / "d" / "mnist", "test", 3, seed=0)
    os.remove(tmp_path / "d" / "mnist" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match=r"incomplete in .*mnist: missing t10k-labels-idx1-ubyte.gz"):
        data.load("mnist", "test", data_dir=tmp_path / "d")


def test_unknown_split_and_part():
    with pytest.raises(ValueError, match="unknown split 'extra' for 'mnist'"):
        data.load("mnist", "extra")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        data.load("svhn", "dev")


# ---------------------------------------------------------------- MNIST splits


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    """12000 training images (plain IDX, dotted names) and 30 test images (.gz)."""
    root = tmp_path_factory.mktemp("mnistdata")
    folder = root / "mnist"
    train = write_mnist(folder, "train", 12_000, seed=10, suffix="")
    for kind in ("images-idx3", "labels-idx1"):   # the "train-images.idx3-ubyte" spelling
        os.rename(folder / f"train-{kind}-ubyte", folder / f"train-{kind.replace('-idx', '.idx')}-ubyte")
    test = write_mnist(folder, "test", 30, seed=11)
    return root, train, test


def test_mnist_splits(mnist_dir):
    root, (train_images, train_labels), (test_images, test_labels) = mnist_dir
    expected = {"train": slice(0, 2000), "val": slice(2000, 12_000), "train_full": slice(None)}
    for split, rows in expected.items():
        ds = data.load("mnist", split, data_dir=root)
        assert (ds.name, ds.split, len(ds)) == ("mnist", split, len(train_labels[rows]))
        assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (1, 28, 28)
        assert ds.labels.dtype == torch.int64
        np.testing.assert_array_equal(ds.images[:, 0].numpy(), train_images[rows])
        np.testing.assert_array_equal(ds.labels.numpy(), train_labels[rows])
    test = data.load("mnist", "test", data_dir=root)
    np.testing.assert_array_equal(test.images[:, 0].numpy(), test_images)
    np.testing.assert_array_equal(test.labels.numpy(), test_labels)


def test_dataset_object(mnist_dir):
    root, _, (test_images, test_labels) = mnist_dir
    test = data.load("mnist", "test", data_dir=root)
    image, label = test[3]
    assert image.shape == (1, 28, 28) and label == int(test_labels[3]) and isinstance(label, int)
    assert test.classes == tuple("0123456789") and test.num_classes == 10
    assert repr(test) == "ImageDataset(name='mnist', split='test', n=30, image_shape=(1, 28, 28))"


def test_mnist_env_var_is_the_data_dir(mnist_dir, monkeypatch):
    root, _, (_, test_labels) = mnist_dir
    monkeypatch.setenv("BINARYNET_DATA", str(root))
    np.testing.assert_array_equal(data.load("mnist", "test").labels.numpy(), test_labels)


def test_too_few_training_images(tmp_path):
    write_mnist(tmp_path / "mnist", "train", 10_000, seed=12, suffix="")
    assert len(data.load("mnist", "train_full", data_dir=tmp_path)) == 10_000
    for split in ("train", "val"):
        with pytest.raises(DataError, match="holds only 10000 images.*last 10000"):
            data.load("mnist", split, data_dir=tmp_path)


def test_wrong_image_size(tmp_path):
    from test_data_formats import idx_bytes
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    write_bytes(folder / "t10k-images-idx3-ubyte.gz", idx_bytes(np.zeros((2, 20, 20), np.uint8)))
    write_bytes(folder / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(DataError, match="should be 1x28x28 .* got 1x20x20"):
        data.load("fashion-mnist", "test", data_dir=tmp_path)


def test_system_copy_and_precedence(tmp_path):
    # Debian's dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist/
    _, system_labels = write_mnist(tmp_path / "system" / "fashion-mnist", "test", 4, seed=13)
    ds = data.load("fashion-mnist", "test", data_dir=tmp_path / "d")
    np.testing.assert_array_equal(ds.labels.numpy(), system_labels)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    _, own_labels = write_mnist(tmp_path / "d" / "fashion-mnist", "test", 5, seed=14)
    ds = data.load("fashion-mnist", "test", data_dir=tmp_path / "d")
    np.testing.assert_array_equal(ds.labels.numpy(), own_labels)


# ---------------------------------------------------------------- CIFAR-10 splits and layouts

# Batches of 300 images (real ones: 10000); "val" = the last 450 = half of batch 4 + batch 5.
_RECORDS, _VAL_SIZE = 300, 450


@pytest.fixture
def cifar_dir(tmp_path_factory, monkeypatch):
    small_cifar_batches(monkeypatch, _RECORDS, _VAL_SIZE)
    root = tmp_path_factory.getbasetemp() / "cifardata"
    if not root.exists():  # written once, used by several tests
        _write_cifar_dir(root)
    return root, _cifar_parts(), random_cifar(_RECORDS, seed=30)


def _cifar_parts():
    parts = [random_cifar(_RECORDS, seed=20 + i) for i in range(5)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _write_cifar_dir(root):
    folder = root / "cifar10"
    folder.mkdir(parents=True)
    for i in range(5):
        write_bytes(folder / f"data_batch_{i + 1}.bin{'.gz' if i == 1 else ''}",
                    cifar_bin_bytes(*random_cifar(_RECORDS, seed=20 + i)))
    write_bytes(folder / "test_batch.bin.gz", cifar_bin_bytes(*random_cifar(_RECORDS, seed=30)))


def test_cifar_batch_must_hold_all_its_records(tmp_path):
    folder = tmp_path / "cifar10"
    folder.mkdir()
    write_bytes(folder / "test_batch.bin", cifar_bin_bytes(*random_cifar(100, seed=32)))
    with pytest.raises(DataError, match=r"test_batch.bin: holds 100 images, but every batch file of "
                                        r"'cifar10' holds exactly 10000"):
        data.load("cifar10", "test", data_dir=tmp_path)


def test_cifar_short_batch_among_the_training_batches(cifar_dir, tmp_path):
    root, _, _ = cifar_dir
    folder = tmp_path / "cifar10"
    folder.mkdir()
    for f in (root / "cifar10").iterdir():
        os.symlink(f, folder / f.name)
    os.remove(folder / "data_batch_3.bin")
    write_bytes(folder / "data_batch_3.bin", cifar_bin_bytes(*random_cifar(_RECORDS - 1, seed=33)))
    with pytest.raises(DataError, match=f"data_batch_3.bin: holds {_RECORDS - 1} images"):
        data.load("cifar10", "train_full", data_dir=tmp_path)


def test_cifar_splits(cifar_dir):
    root, (images, labels), (test_images, test_labels) = cifar_dir
    for split, rows in {"train": slice(0, 1050), "val": slice(1050, None),
                        "train_full": slice(None)}.items():
        ds = data.load("cifar10", split, data_dir=root)
        assert len(ds) == len(labels[rows])
        np.testing.assert_array_equal(ds.images.numpy(), images[rows])
        np.testing.assert_array_equal(ds.labels.numpy(), labels[rows])
    test = data.load("cifar10", "test", data_dir=root)
    np.testing.assert_array_equal(test.images.numpy(), test_images)
    np.testing.assert_array_equal(test.labels.numpy(), test_labels)
    assert test.classes[0] == "airplane" and test.classes[9] == "truck"


def test_cifar_val_reads_only_trailing_batches(cifar_dir, tmp_path):
    root, (images, _), _ = cifar_dir
    folder = tmp_path / "cifar10"
    folder.mkdir()
    for f in (root / "cifar10").iterdir():
        os.symlink(f, folder / f.name)
    os.remove(folder / "data_batch_1.bin")
    write_bytes(folder / "data_batch_1.bin", b"damaged")
    val = data.load("cifar10", "val", data_dir=tmp_path)      # batches 5 and 4 only
    np.testing.assert_array_equal(val.images.numpy(), images[1050:])
    with pytest.raises(DataError, match=r"data_batch_1.bin: wrong length 7"):
        data.load("cifar10", "train", data_dir=tmp_path)


@pytest.mark.parametrize("layout", ["cifar-10-batches-bin", "cifar-10-batches-py"])
def test_cifar_distribution_subfolders(tmp_path, layout, monkeypatch):
    small_cifar_batches(monkeypatch, 6)
    folder = tmp_path / "cifar10" / layout
    folder.mkdir(parents=True)
    images, labels = random_cifar(6, seed=31)
    if layout == "cifar-10-batches-bin":
        write_bytes(folder / "test_batch.bin", cifar_bin_bytes(images, labels))
    else:
        write_bytes(folder / "test_batch", cifar_python_bytes(images, labels))
    ds = data.load("cifar10", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.images.numpy(), images)
    np.testing.assert_array_equal(ds.labels.numpy(), labels)


def test_cifar_python_layout_refuses_code(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    write_bytes(folder / "test_batch", pickle.dumps({b"data": print, b"labels": []}))
    with pytest.raises(DataError, match="refused global builtins.print"):
        data.load("cifar10", "test", data_dir=tmp_path)


# ---------------------------------------------------------------- SVHN splits


def test_svhn_splits(tmp_path):
    pytest.importorskip("scipy")
    folder = tmp_path / "svhn"
    folder.mkdir()
    x, y = write_svhn(folder / "train_32x32.mat", 6010, seed=40)
    x_test, y_test = write_svhn(folder / "test_32x32.mat", 5, seed=41)
    images = x.transpose(3, 2, 0, 1)
    for split, rows in {"train": slice(0, 10), "val": slice(10, None),
                        "train_full": slice(None)}.items():
        ds = data.load("svhn", split, data_dir=tmp_path)
        np.testing.assert_array_equal(ds.images.numpy(), images[rows])
        np.testing.assert_array_equal(ds.labels.numpy(), y[rows, 0] % 10)
    test = data.load("svhn", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(test.labels.numpy(), y_test[:, 0] % 10)
    with pytest.raises(DataError, match=r"'svhn' \(extra\) not found.*extra_32x32.mat"):
        data.load("svhn", "extra", data_dir=tmp_path)
    x_extra, y_extra = write_svhn(folder / "extra_32x32.mat", 3, seed=42)
    extra = data.load("svhn", "extra", data_dir=tmp_path)
    np.testing.assert_array_equal(extra.images.numpy(), x_extra.transpose(3, 2, 0, 1))


# ---------------------------------------------------------------- catalog consistency


@pytest.mark.parametrize("name", data.names())
def test_every_downloadable_file_has_a_remote_and_a_sha256(name):
    info = data.info(name)
    assert name in ("mnist", "fashion-mnist", "cifar10", "svhn")
    for part, files in info.layouts[0].parts.items():
        for names in files:
            remote = info.remote_of(names[0])
            for file_name in (remote.filename, *([names[0]] if remote.members else [])):
                digest = info.checksums[file_name]
                assert len(digest) == 64 and int(digest, 16) >= 0, file_name
    assert set(info.default_parts) <= set(info.parts)
    assert len(info.mean) == len(info.std) == info.image_shape[0]
    assert info.num_classes == 10
