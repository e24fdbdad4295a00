"""Readers for the datasets' own distribution formats (numpy only).

Every reader returns ``(images, labels)``: ``images`` a C-contiguous uint8 array (N, C, H, W),
``labels`` an int64 array (N,). Any problem with a file (missing, truncated, bad gzip, bad
magic, wrong length, count mismatch, label out of range) raises
:class:`binarynet.errors.DataError` naming the file, the problem and the fix.

Formats:
- IDX (MNIST, Fashion-MNIST; LeCun et al. 1998): a big-endian header ``0 0 type ndim`` (magic
  2051 for uint8 images with 3 dims, 2049 for uint8 labels with 1 dim), ``ndim`` big-endian
  uint32 sizes, then the data.
- CIFAR-10 binary version: records of 3073 bytes, a label byte then 1024 R, 1024 G, 1024 B
  bytes (32x32 planes, row-major), 10000 records per batch file.
- CIFAR-10 python version: pickled dicts with ``b"data"`` (N x 3072 uint8, same pixel order)
  and ``b"labels"`` (list of N ints), read with a restricted unpickler.
- SVHN format 2 (cropped digits): MATLAB v5 .mat with ``X`` (32, 32, 3, N) uint8 and ``y``
  (N, 1) in 1..10, where 10 means digit 0.

Plain files and gzip-compressed ones (named ``*.gz`` or starting with the gzip magic) are both
accepted.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from .safe_pickle import restricted_loads

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
CIFAR10_RECORD_BYTES = 1 + 3 * 32 * 32

FIX_DAMAGED = ("Delete it and fetch it again (--download, or binarynet.data.download), or "
               "point --data-dir / BINARYNET_DATA at a folder holding an intact copy.")
FIX_MISSING = ("Fetch it with --download (or binarynet.data.download), or point --data-dir / "
               "BINARYNET_DATA at a folder that contains it.")

_GZIP_MAGIC = b"\x1f\x8b"


def _fail(path, problem: str, fix: str = FIX_DAMAGED) -> DataError:
    return DataError(f"{path}: {problem}. {fix}")


def read_file_bytes(path) -> bytes:
    """The content of ``path``, gunzipped when it is named ``*.gz`` or starts with the gzip magic."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _fail(path, "file not found", FIX_MISSING) from None
    except OSError as exc:
        raise _fail(path, f"cannot be read ({exc.strerror or exc})") from None
    if path.name.endswith(".gz") or raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            # BadGzipFile (bad header/CRC), EOFError (truncated stream), zlib.error (bad data)
            raise _fail(path, f"not a valid gzip file ({exc})") from None
    return raw


def _read_idx(path, magic: int) -> np.ndarray:
    raw = read_file_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < 4:
        raise _fail(path, f"only {len(raw)} bytes, too short for an IDX header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise _fail(path, f"bad IDX magic number {found} (expected {magic})")
    if len(raw) < header:
        raise _fail(path, f"only {len(raw)} bytes, too short for an IDX header of {header} bytes")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims)  # exact: a product in int64 can wrap around to the file's size
    if len(raw) - header != expected:
        raise _fail(path, f"wrong length: the header announces {'x'.join(map(str, dims))} = "
                          f"{expected} bytes of data but the file holds {len(raw) - header} "
                          f"(truncated or not an IDX file)")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _owned(array: np.ndarray) -> np.ndarray:
    """C-contiguous and writable (arrays over the file's bytes are read-only): copies if needed."""
    return np.require(array, requirements=("C", "W"))


def _check_labels(path, labels: np.ndarray, num_classes: int) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise _fail(path, f"label {int(bad)} out of range 0..{num_classes - 1}")


def read_idx_images(path) -> np.ndarray:
    """Images of an IDX file with magic 2051: uint8 (N, 1, H, W)."""
    return _owned(_read_idx(path, IDX_IMAGES_MAGIC)[:, None])


def read_idx_labels(path, num_classes: int = 10) -> np.ndarray:
    """Labels of an IDX file with magic 2049: int64 (N,), checked to lie in 0..num_classes-1."""
    labels = _read_idx(path, IDX_LABELS_MAGIC).astype(np.int64)
    _check_labels(path, labels, num_classes)
    return labels


def read_mnist(images_path, labels_path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """MNIST / Fashion-MNIST images and labels from their IDX files (plain or gzipped)."""
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path, num_classes)
    if len(images) != len(labels):
        raise _fail(labels_path, f"holds {len(labels)} labels but {images_path} holds "
                                 f"{len(images)} images (the files do not belong together)")
    return images, labels


def _cifar10_records(path, data: np.ndarray, labels, num_classes: int):
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR10_RECORD_BYTES - 1:
        raise _fail(path, f"image data is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise _fail(path, f"labels are {labels.dtype} {labels.shape}, expected N integers")
    labels = labels.astype(np.int64)
    if len(labels) != len(data):
        raise _fail(path, f"holds {len(labels)} labels for {len(data)} images")
    _check_labels(path, labels, num_classes)
    return _owned(data.reshape(-1, 3, 32, 32)), labels


def read_cifar10_bin(path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch (``data_batch_N.bin``, ``test_batch.bin``, plain or .gz)."""
    raw = read_file_bytes(path)
    if not raw or len(raw) % CIFAR10_RECORD_BYTES:
        raise _fail(path, f"wrong length {len(raw)}: not a whole number of "
                          f"{CIFAR10_RECORD_BYTES}-byte records (truncated?)")
    records = np.frombuffer(raw, np.uint8).reshape(-1, CIFAR10_RECORD_BYTES)
    return _cifar10_records(path, records[:, 1:], records[:, 0], num_classes)


def read_cifar10_python(path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch (``cifar-10-batches-py/data_batch_N``, ``test_batch``).

    Unpickled with :func:`binarynet.data.safe_pickle.restricted_loads`, never ``pickle.load``:
    a file naming any global other than numpy's array reconstruction is refused.
    """
    raw = read_file_bytes(path)
    try:
        batch = restricted_loads(raw)
    except Exception as exc:  # the unpickler raises many types on damaged input
        raise _fail(path, f"not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise _fail(path, f"holds a {type(batch).__name__}, expected a dict")
    # Python 2 wrote str keys, which unpickle as bytes; accept str keys from re-pickled copies.
    entries = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in entries or "labels" not in entries:
        raise _fail(path, f"has keys {sorted(map(str, entries))}, expected 'data' and 'labels'")
    data = entries["data"]
    if not isinstance(data, np.ndarray):
        raise _fail(path, f"'data' is a {type(data).__name__}, expected a numpy array")
    return _cifar10_records(path, data, entries["labels"], num_classes)


def read_svhn_mat(path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """SVHN format 2 (``train_32x32.mat``, ``test_32x32.mat``, ``extra_32x32.mat``).

    ``X`` (H, W, C, N) becomes (N, C, H, W); label 10 becomes digit 0. Needs scipy.
    """
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(f"{path}: reading SVHN .mat files needs scipy; install it with "
                        f"`pip install scipy` (or binarynet[test])") from None
    if not os.path.exists(path):
        raise _fail(path, "file not found", FIX_MISSING)
    try:
        mat = loadmat(path, variable_names=("X", "y"))
    except Exception as exc:  # scipy raises ValueError, MatReadError, OSError, ...
        raise _fail(path, f"not a readable MATLAB v5 file ({type(exc).__name__}: {exc})") from None
    if "X" not in mat or "y" not in mat:
        raise _fail(path, "lacks the variables 'X' and 'y' of SVHN format 2")
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise _fail(path, f"X is {x.dtype} {x.shape}, expected uint8 (32, 32, 3, N)")
    if y.size != x.shape[3] or (y.ndim == 2 and 1 not in y.shape) or y.ndim > 2:
        raise _fail(path, f"y has shape {y.shape} for {x.shape[3]} images, expected (N, 1)")
    y = y.reshape(-1)
    labels = y.astype(np.int64)
    if not np.array_equal(labels, y) or (labels.size and (labels.min() < 1 or labels.max() > 10)):
        bad = y[(labels != y) | (labels < 1) | (labels > 10)][0]
        raise _fail(path, f"label {bad} out of range 1..10")
    labels[labels == 10] = 0
    _check_labels(path, labels, num_classes)
    return _owned(x.transpose(3, 2, 0, 1)), labels
