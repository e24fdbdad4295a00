"""Readers of the datasets' distribution formats, on small files written here.

Also holds the writers of those formats that the other test_data_* files import.
"""
import contextlib
import dataclasses
import gzip
import io
import os
import pickle
import struct
import sys

import numpy as np
import pytest

from binarynet.data import (read_cifar10_bin, read_cifar10_python, read_idx_images,
                            read_idx_labels, read_mnist, read_svhn_mat)
from binarynet.data import catalog
from binarynet.data.safe_pickle import restricted_loads
from binarynet.errors import DataError

# ---------------------------------------------------------------- writers (shared)


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian dims, data."""
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_bytes(path, data: bytes):
    """Write ``data``, gzipped when ``path`` ends in .gz."""
    path.write_bytes(gzip.compress(data, 1) if str(path).endswith(".gz") else data)
    return path


def random_mnist(n: int, seed: int, size: int = 28):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, size, size), dtype=np.uint8),
            rng.integers(0, 10, n).astype(np.uint8))


def write_mnist(folder, part: str, n: int, seed: int, suffix: str = ".gz"):
    """Write ``<prefix>-images-idx3-ubyte<suffix>`` and the labels; return (images, labels)."""
    prefix = {"train": "train", "test": "t10k"}[part]
    images, labels = random_mnist(n, seed)
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes(folder / f"{prefix}-images-idx3-ubyte{suffix}", idx_bytes(images))
    write_bytes(folder / f"{prefix}-labels-idx1-ubyte{suffix}", idx_bytes(labels))
    return images, labels


def cifar_bin_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10 binary records: label byte, then R, G, B planes of 1024 bytes each."""
    records = np.concatenate([np.asarray(labels, np.uint8)[:, None],
                              images.reshape(len(images), 3 * 32 * 32)], axis=1)
    return records.tobytes()


def small_cifar_batches(monkeypatch, records: int, val_size: int = 5000):
    """Let CIFAR-10 batch files hold ``records`` images (real ones hold 10000, too many for
    tests) and its "val" split take the last ``val_size`` training images, for this test."""
    info = dataclasses.replace(catalog.get("cifar10"), records_per_file=records, val_size=val_size)
    monkeypatch.setitem(catalog._DATASETS, "cifar10", info)


def random_cifar(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
            rng.integers(0, 10, n).astype(np.int64))


class Py2StylePickler(pickle._Pickler):
    """Writes every str/bytes as a Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), as in the
    CIFAR-10 python batches, which Python 2's cPickle wrote."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def cifar_python_bytes(images: np.ndarray, labels) -> bytes:
    """A CIFAR-10 python batch as Python 2 wrote it (numpy 1.x module path included)."""
    batch = {"batch_label": "training batch 1 of 5", "labels": [int(v) for v in labels],
             "data": images.reshape(len(images), 3072),
             "filenames": [f"img_{i}.png" for i in range(len(images))]}
    out = io.BytesIO()
    Py2StylePickler(out, protocol=2).dump(batch)
    data = out.getvalue()
    old = b"numpy.core.multiarray\n_reconstruct"
    return data.replace(b"numpy._core.multiarray\n_reconstruct", old)


# ---------------------------------------------------------------- IDX


@contextlib.contextmanager
def raises_data_error(path, *fragments):
    """Expect a DataError whose message names ``path`` and contains every fragment."""
    with pytest.raises(DataError) as info:
        yield info
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_mnist_idx_round_trip(tmp_path, suffix):
    images, labels = write_mnist(tmp_path, "train", 7, seed=1, suffix=suffix)
    got_images, got_labels = read_mnist(tmp_path / f"train-images-idx3-ubyte{suffix}",
                                        tmp_path / f"train-labels-idx1-ubyte{suffix}")
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 1, 28, 28)
    assert got_labels.dtype == np.int64 and got_labels.shape == (7,)
    np.testing.assert_array_equal(got_images[:, 0], images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.flags.writeable and got_images.flags.c_contiguous


def test_idx_header_is_big_endian_and_gzip_is_sniffed(tmp_path):
    # 2 images of 3x2 pixels: dims stored big-endian; gzip content without a .gz name.
    raw = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 2]) + bytes(range(12))
    path = tmp_path / "images"
    path.write_bytes(gzip.compress(raw))
    images = read_idx_images(path)
    assert images.shape == (2, 1, 3, 2)
    assert images[1, 0].tolist() == [[6, 7], [8, 9], [10, 11]]


def _mnist_pair(tmp_path, n_images=5, n_labels=5, labels=None):
    images, default_labels = random_mnist(max(n_images, n_labels), seed=2)
    labels = default_labels[:n_labels] if labels is None else np.asarray(labels, np.uint8)
    img = write_bytes(tmp_path / "i-idx3-ubyte.gz", idx_bytes(images[:n_images]))
    lab = write_bytes(tmp_path / "l-idx1-ubyte.gz", idx_bytes(labels))
    return img, lab


def test_idx_missing_file(tmp_path):
    missing = tmp_path / "train-images-idx3-ubyte.gz"
    with raises_data_error(missing, "not found", "--download", "BINARYNET_DATA"):
        read_idx_images(missing)


def test_idx_truncated(tmp_path):
    img, _ = _mnist_pair(tmp_path)
    raw = gzip.decompress(img.read_bytes())
    write_bytes(img, raw[:-100])
    with raises_data_error(img, "wrong length", "5x28x28 = 3920", "3820", "--download"):
        read_idx_images(img)


def test_idx_trailing_bytes(tmp_path):
    img, _ = _mnist_pair(tmp_path)
    write_bytes(img, gzip.decompress(img.read_bytes()) + b"\0")
    with raises_data_error(img, "wrong length"):
        read_idx_images(img)


def test_idx_dims_whose_product_wraps_int64_to_the_data_size(tmp_path):
    # 4 x 2^31 x 2^31 = 2^64 bytes, which is 0 in int64 arithmetic: as many as the file holds.
    path = write_bytes(tmp_path / "t10k-images-idx3-ubyte", bytes([0, 0, 8, 3]) + struct.pack(">3I", 4, 2**31, 2**31))
    with raises_data_error(path, "wrong length", "4x2147483648x2147483648 = 18446744073709551616 bytes"):
        read_idx_images(path)


def test_idx_too_short_for_header(tmp_path):
    path = write_bytes(tmp_path / "l-idx1-ubyte", bytes([0, 0, 8]))
    with raises_data_error(path, "too short"):
        read_idx_labels(path)


def test_idx_bad_magic(tmp_path):
    img, lab = _mnist_pair(tmp_path)
    with raises_data_error(lab, "bad IDX magic number 2049 (expected 2051)"):
        read_idx_images(lab)   # a labels file where images are expected
    with raises_data_error(img, "bad IDX magic number 2051 (expected 2049)"):
        read_idx_labels(img)


def test_bad_gzip(tmp_path):
    img, _ = _mnist_pair(tmp_path)
    good = img.read_bytes()
    img.write_bytes(b"this is not gzip at all")
    with raises_data_error(img, "not a valid gzip file"):
        read_idx_images(img)
    img.write_bytes(good[: len(good) // 2])               # truncated stream
    with raises_data_error(img, "not a valid gzip file"):
        read_idx_images(img)
    damaged = bytearray(good)
    damaged[-6] ^= 0xFF                                     # CRC32 field of the trailer
    img.write_bytes(bytes(damaged))
    with raises_data_error(img, "not a valid gzip file"):
        read_idx_images(img)


def test_idx_count_mismatch(tmp_path):
    img, lab = _mnist_pair(tmp_path, n_images=5, n_labels=4)
    with raises_data_error(lab, "4 labels", "5 images"):
        read_mnist(img, lab)


def test_idx_labels_out_of_range(tmp_path):
    img, lab = _mnist_pair(tmp_path, labels=[0, 9, 10, 3, 2])
    with raises_data_error(lab, "label 10 out of range 0..9"):
        read_mnist(img, lab)


# ---------------------------------------------------------------- CIFAR-10 binary


def test_cifar_bin_record_layout(tmp_path):
    # One record written byte by byte: label 7, then R plane 0..., G plane, B plane.
    r = np.arange(1024) % 251
    g = (np.arange(1024) * 3) % 256
    b = np.full(1024, 200)
    record = bytes([7]) + bytes(r.tolist()) + bytes(g.tolist()) + bytes(b.tolist())
    path = write_bytes(tmp_path / "data_batch_1.bin", record * 2)
    images, labels = read_cifar10_bin(path)
    assert images.shape == (2, 3, 32, 32) and images.dtype == np.uint8
    assert labels.tolist() == [7, 7] and labels.dtype == np.int64
    np.testing.assert_array_equal(images[1, 0], r.reshape(32, 32))    # row-major planes
    np.testing.assert_array_equal(images[0, 1], g.reshape(32, 32))
    assert (images[0, 2] == 200).all()


@pytest.mark.parametrize("name", ["test_batch.bin", "test_batch.bin.gz"])
def test_cifar_bin_round_trip(tmp_path, name):
    images, labels = random_cifar(5, seed=3)
    path = write_bytes(tmp_path / name, cifar_bin_bytes(images, labels))
    got_images, got_labels = read_cifar10_bin(path)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_cifar_bin_errors(tmp_path):
    images, labels = random_cifar(3, seed=4)
    raw = cifar_bin_bytes(images, labels)
    path = write_bytes(tmp_path / "data_batch_2.bin", raw[:-5])
    with raises_data_error(path, "wrong length 9214", "3073-byte records", "--download"):
        read_cifar10_bin(path)
    write_bytes(path, b"")
    with raises_data_error(path, "wrong length 0"):
        read_cifar10_bin(path)
    labels[1] = 12
    write_bytes(path, cifar_bin_bytes(images, labels))
    with raises_data_error(path, "label 12 out of range 0..9"):
        read_cifar10_bin(path)
    with raises_data_error(tmp_path / "data_batch_3.bin", "not found"):
        read_cifar10_bin(tmp_path / "data_batch_3.bin")


# ---------------------------------------------------------------- CIFAR-10 python


def test_cifar_python_py2_batch(tmp_path):
    images, labels = random_cifar(4, seed=5)
    raw = cifar_python_bytes(images, labels)
    assert b"numpy.core.multiarray\n_reconstruct" in raw and pickle.SHORT_BINSTRING + b"\x04data" in raw
    path = write_bytes(tmp_path / "data_batch_1", raw)
    got_images, got_labels = read_cifar10_python(path)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_python_py3_pickles(tmp_path, protocol):
    images, labels = random_cifar(3, seed=6)
    batch = {"data": images.reshape(3, 3072), "labels": labels.tolist()}
    path = write_bytes(tmp_path / "test_batch", pickle.dumps(batch, protocol=protocol))
    got_images, got_labels = read_cifar10_python(path)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("make", [
    lambda m: {b"data": _Evil(m), b"labels": []},                  # code in a field
    lambda m: _Evil(m),                                             # code as the whole file
])
def test_cifar_python_refuses_malicious_pickle(tmp_path, make):
    marker = tmp_path / "pwned"
    path = write_bytes(tmp_path / "data_batch_1", pickle.dumps(make(marker), protocol=2))
    with raises_data_error(path, "not a CIFAR-10 python batch", "refused global",
                           f"{os.system.__module__}.system"):
        read_cifar10_python(path)
    assert not marker.exists()
    # The same bytes would run the command under plain pickle: the test is meaningful.
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_restricted_unpickler_refuses_builtins():
    payload = pickle.dumps(eval)  # a reference to builtins.eval
    with pytest.raises(pickle.UnpicklingError, match="refused global builtins.eval"):
        restricted_loads(payload)


def test_cifar_python_malformed(tmp_path):
    images, labels = random_cifar(2, seed=7)
    path = tmp_path / "data_batch_1"
    cases = [
        (pickle.dumps([1, 2, 3]), "holds a list, expected a dict"),
        (pickle.dumps({b"data": images.reshape(2, 3072)}), "expected 'data' and 'labels'"),
        (pickle.dumps({b"data": images.reshape(2, 3072).astype(np.int16), b"labels": [1, 2]}),
         "expected uint8 (N, 3072)"),
        (pickle.dumps({b"data": images.reshape(2, 3072), b"labels": [1]}), "1 labels for 2 images"),
        (pickle.dumps({b"data": images.reshape(2, 3072), b"labels": [1, 10]}), "label 10 out of range"),
        (pickle.dumps({b"data": [1, 2], b"labels": [1]}), "expected a numpy array"),
        (cifar_python_bytes(images, labels)[:-50], "not a CIFAR-10 python batch"),
    ]
    for raw, fragment in cases:
        write_bytes(path, raw)
        with raises_data_error(path, fragment):
            read_cifar10_python(path)


# ---------------------------------------------------------------- SVHN format 2


def write_svhn(path, n: int, seed: int, y_dtype=np.float64):
    """An SVHN format-2 .mat: X (32, 32, 3, N) uint8, y (N, 1) in 1..10 (10 = digit 0)."""
    from scipy.io import savemat
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, (n, 1))
    y[0] = 10
    savemat(path, {"X": x, "y": y.astype(y_dtype)})
    return x, y


@pytest.mark.parametrize("y_dtype", [np.float64, np.uint8])
def test_svhn_mat(tmp_path, y_dtype):
    pytest.importorskip("scipy")
    path = tmp_path / "test_32x32.mat"
    x, y = write_svhn(path, 6, seed=8, y_dtype=y_dtype)
    images, labels = read_svhn_mat(path)
    assert images.shape == (6, 3, 32, 32) and images.dtype == np.uint8
    # X[h, w, c, n] -> images[n, c, h, w]
    assert images[4, 2, 5, 9] == x[5, 9, 2, 4]
    np.testing.assert_array_equal(images, x.transpose(3, 2, 0, 1))
    assert labels.dtype == np.int64 and labels[0] == 0
    np.testing.assert_array_equal(labels, y[:, 0] % 10)


def test_svhn_errors(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    path = tmp_path / "train_32x32.mat"
    with raises_data_error(path, "not found"):
        read_svhn_mat(path)
    path.write_bytes(b"MATLAB garbage" * 20)
    with raises_data_error(path, "not a readable MATLAB v5 file"):
        read_svhn_mat(path)
    scipy_io.savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8)})
    with raises_data_error(path, "lacks the variables 'X' and 'y'"):
        read_svhn_mat(path)
    scipy_io.savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1.0], [11.0]])})
    with raises_data_error(path, "label 11.0 out of range 1..10"):
        read_svhn_mat(path)
    scipy_io.savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0.0], [1.0]])})
    with raises_data_error(path, "label 0.0 out of range 1..10"):
        read_svhn_mat(path)
    scipy_io.savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))})
    with raises_data_error(path, "y has shape (3, 1) for 2 images"):
        read_svhn_mat(path)
    scipy_io.savemat(path, {"X": np.zeros((3, 32, 32, 2), np.uint8), "y": np.ones((2, 1))})
    with raises_data_error(path, "expected uint8 (32, 32, 3, N)"):
        read_svhn_mat(path)


def test_svhn_without_scipy(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.io", None)   # makes `import scipy.io` fail
    path = tmp_path / "test_32x32.mat"
    with raises_data_error(path, "needs scipy", "pip install scipy"):
        read_svhn_mat(path)
