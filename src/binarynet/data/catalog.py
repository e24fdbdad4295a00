"""Facts about the supported datasets: file names, layouts, mirrors, checksums, classes, statistics.

Everything here describes the datasets as their authors distribute them; nothing depends on
this machine. ``get(name)`` returns a :class:`DatasetInfo`; ``names()`` lists the datasets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

# Reader formats (see binarynet.data.formats).
IDX = "idx"                        # MNIST / Fashion-MNIST: idx3 images + idx1 labels, plain or .gz
CIFAR10_BIN = "cifar10-bin"        # cifar-10-batches-bin: 3073-byte records, plain or .gz
CIFAR10_PYTHON = "cifar10-python"  # cifar-10-batches-py: pickled dicts (restricted unpickler)
SVHN_MAT = "svhn-mat"              # SVHN format 2: MATLAB v5 .mat with X (HxWxCxN) and y


@dataclass(frozen=True)
class Layout:
    """One way a dataset's files can lie on disk.

    ``subdir`` is relative to the dataset folder ("" = the folder itself). ``parts`` maps a part
    ("train", "test", "extra") to its files in reading order; each file is a tuple of accepted
    names, the first being the name it is downloaded as.
    """

    subdir: str
    format: str
    parts: Mapping[str, tuple[tuple[str, ...], ...]]


@dataclass(frozen=True)
class Remote:
    """A file at a mirror. ``members`` maps archive member paths to the local file names they
    are installed as; empty means the downloaded file itself is installed under ``filename``."""

    filename: str
    members: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetInfo:
    """Everything binarynet knows about one dataset.

    ``layouts[0]`` is where :func:`binarynet.data.download` installs files. ``checksums`` holds
    the SHA-256 of every downloaded file and every installed archive member;
    ``default_parts`` are downloaded unless others are asked for. ``mean``/``std``
    are per-channel statistics of the training images scaled to [0, 1]. ``val_size`` is the
    number of images at the end of the training part that form the "val" split.
    ``records_per_file`` (CIFAR-10's batches of 10000) lets the loader refuse an incomplete
    batch file that is otherwise well formed.
    """

    name: str
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    layouts: tuple[Layout, ...]
    mirrors: tuple[str, ...]
    remotes: tuple[Remote, ...]
    checksums: Mapping[str, str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val_size: int
    default_parts: tuple[str, ...] = ("train", "test")
    records_per_file: int = 0      # > 0: every file of a part holds exactly this many images
    # A left-right mirror keeps every image's class (objects: yes; digits: no), so the
    # crop + flip augmentation suits the dataset.
    flip_invariant: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts the distribution consists of ("train", "test", and SVHN's "extra")."""
        return tuple(self.layouts[0].parts)

    def remote_of(self, local_name: str) -> Remote:
        """The remote file that provides the local file ``local_name`` (itself or a member)."""
        for remote in self.remotes:
            if local_name in remote.members.values() or (
                    not remote.members and remote.filename == local_name):
                return remote
        raise KeyError(local_name)


def _idx_names(stem: str) -> tuple[str, ...]:
    # As distributed ("train-images-idx3-ubyte.gz"), decompressed, and the dotted spelling
    # some copies use ("train-images.idx3-ubyte").
    dotted = stem.replace("-idx", ".idx")
    return (f"{stem}.gz", stem, f"{dotted}.gz", dotted)


_IDX_LAYOUT = Layout(
    subdir="",
    format=IDX,
    parts={
        "train": (_idx_names("train-images-idx3-ubyte"), _idx_names("train-labels-idx1-ubyte")),
        "test": (_idx_names("t10k-images-idx3-ubyte"), _idx_names("t10k-labels-idx1-ubyte")),
    },
)

_IDX_REMOTES = tuple(
    Remote(names[0])
    for part in _IDX_LAYOUT.parts.values()
    for names in part
)

_CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


def _cifar10_bin_layout(subdir: str) -> Layout:
    return Layout(
        subdir=subdir,
        format=CIFAR10_BIN,
        parts={
            "train": tuple((f"{b}.bin", f"{b}.bin.gz") for b in _CIFAR10_BATCHES),
            "test": (("test_batch.bin", "test_batch.bin.gz"),),
        },
    )


_SVHN_LAYOUT = Layout(
    subdir="",
    format=SVHN_MAT,
    parts={
        "train": (("train_32x32.mat",),),
        "test": (("test_32x32.mat",),),
        "extra": (("extra_32x32.mat",),),
    },
)

MNIST = DatasetInfo(
    name="mnist",
    classes=tuple(str(d) for d in range(10)),
    image_shape=(1, 28, 28),
    layouts=(_IDX_LAYOUT,),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    remotes=_IDX_REMOTES,
    # SHA-256 of the official .gz files (they also match TensorFlow Datasets' checksum list).
    checksums={
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    mean=(0.1307,),
    std=(0.3081,),
    val_size=10_000,
)

FASHION_MNIST = DatasetInfo(
    name="fashion-mnist",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    image_shape=(1, 28, 28),
    layouts=(_IDX_LAYOUT,),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    remotes=_IDX_REMOTES,
    # SHA-256 of Zalando's upstream .gz files (as listed by TensorFlow Datasets). Debian's
    # dataset-fashion-mnist package re-gzips them, so its .gz files hash differently.
    checksums={
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
    mean=(0.2860,),
    std=(0.3530,),
    val_size=10_000,
)

CIFAR10 = DatasetInfo(
    name="cifar10",
    flip_invariant=True,
    classes=("airplane", "automobile", "bird", "cat", "deer",
             "dog", "frog", "horse", "ship", "truck"),
    image_shape=(3, 32, 32),
    layouts=(
        _cifar10_bin_layout(""),
        _cifar10_bin_layout("cifar-10-batches-bin"),
        Layout(
            subdir="cifar-10-batches-py",
            format=CIFAR10_PYTHON,
            parts={"train": tuple((b,) for b in _CIFAR10_BATCHES), "test": (("test_batch",),)},
        ),
    ),
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    remotes=(
        Remote(
            "cifar-10-binary.tar.gz",
            members={f"cifar-10-batches-bin/{b}.bin": f"{b}.bin"
                     for b in (*_CIFAR10_BATCHES, "test_batch")},
        ),
    ),
    # The tarball's SHA-256 (as listed by TensorFlow Datasets), then each extracted .bin
    # (whose md5 sums equal the official ones).
    checksums={
        "cifar-10-binary.tar.gz": "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        "data_batch_1.bin": "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
        "data_batch_2.bin": "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
        "data_batch_3.bin": "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
        "data_batch_4.bin": "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
        "data_batch_5.bin": "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
        "test_batch.bin": "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
    },
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    val_size=5_000,
    records_per_file=10_000,
)

SVHN = DatasetInfo(
    name="svhn",
    classes=tuple(str(d) for d in range(10)),
    image_shape=(3, 32, 32),
    layouts=(_SVHN_LAYOUT,),
    mirrors=("http://ufldl.stanford.edu/housenumbers/",),
    remotes=(Remote("train_32x32.mat"), Remote("test_32x32.mat"), Remote("extra_32x32.mat")),
    # SHA-256 of the format-2 .mat files (as listed by TensorFlow Datasets).
    checksums={
        "train_32x32.mat": "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
        "test_32x32.mat": "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
        "extra_32x32.mat": "a133a4beb38a00fcdda90c9489e0c04f900b660ce8a316a5e854838379a71eb3",
    },
    # Widely used train-set statistics; SVHN is not available offline here to re-derive them.
    mean=(0.4377, 0.4438, 0.4728),
    std=(0.1980, 0.2010, 0.1970),
    # The last 6000 training images (about 8%) form "val". The paper's Theano code used
    # pylearn2's split instead (400 per class from train + 200 per class from extra).
    val_size=6_000,
)

_DATASETS = {info.name: info for info in (MNIST, FASHION_MNIST, CIFAR10, SVHN)}


def names() -> tuple[str, ...]:
    """Names of the supported datasets."""
    return tuple(_DATASETS)


def get(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; ValueError for an unknown name."""
    try:
        return _DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown dataset {name!r}; expected one of {', '.join(_DATASETS)}"
        ) from None
