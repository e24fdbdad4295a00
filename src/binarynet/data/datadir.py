"""Where datasets live: the data directory and the files of a dataset part.

The data directory is, in order: the explicit argument (CLI ``--data-dir``), the environment
variable ``BINARYNET_DATA``, or a per-user cache (``$XDG_CACHE_HOME/binarynet/data``, by
default ``~/.cache/binarynet/data``). A dataset is looked for in ``<data dir>/<name>/`` and
then in system copies (``/usr/share/datasets/<name>/``, where e.g. Debian's
``dataset-fashion-mnist`` installs). Inside a dataset folder every layout of
:mod:`binarynet.data.catalog` is tried, e.g. for CIFAR-10 the ``.bin``/``.bin.gz`` batches
directly, or a ``cifar-10-batches-bin/`` or ``cifar-10-batches-py/`` subfolder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from . import catalog

DATA_ENV = "BINARYNET_DATA"
# Folders where operating-system packages install datasets (one <name>/ folder per dataset).
SYSTEM_DATA_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: ``explicit``, else ``$BINARYNET_DATA``, else the per-user cache.

    The folder need not exist (``download`` creates it).
    """
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    from_env = os.environ.get(DATA_ENV)
    if from_env:
        return Path(from_env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "binarynet" / "data"


def dataset_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for dataset ``name``, in order: ``<data dir>/<name>``, then system copies."""
    info = catalog.get(name)
    return [resolve_data_dir(data_dir) / info.name] + [d / info.name for d in SYSTEM_DATA_DIRS]


@dataclass(frozen=True)
class PartFiles:
    """The files of one part ("train", "test", "extra") of a dataset, in reading order."""

    format: str
    paths: tuple[Path, ...]


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    for file_name in names:
        path = folder / file_name
        if path.is_file():
            return path
    return None


def present_files(folder: Path, layout: catalog.Layout, part: str) -> list[Path | None]:
    """For each file of ``part`` in ``layout``: its path under ``folder``, or None if missing."""
    where = folder / layout.subdir if layout.subdir else folder
    return [_first_existing(where, names) for names in layout.parts[part]]


def locate(name: str, part: str, data_dir: str | os.PathLike | None = None) -> PartFiles:
    """Find the files of ``part`` of dataset ``name`` (see the module docstring for where).

    Raises DataError naming the places searched and how to get the files.
    """
    info = catalog.get(name)
    if part not in info.parts:
        raise ValueError(f"dataset {name!r} has no part {part!r}; expected one of {info.parts}")
    folders = dataset_dirs(name, data_dir)
    best: tuple[int, Path, catalog.Layout, list] | None = None
    for folder in folders:
        for layout in info.layouts:
            found = present_files(folder, layout, part)
            if all(found):
                return PartFiles(layout.format, tuple(found))
            count = sum(p is not None for p in found)
            if count and (best is None or count > best[0]):
                best = (count, folder, layout, found)
    fix = (f"Fetch it with --download (or binarynet.data.download({name!r})), or point "
           f"--data-dir / {DATA_ENV} at a folder containing {info.name}/ with "
           f"{', '.join(names[0] for names in info.layouts[0].parts[part])}.")
    if best is not None:
        _, folder, layout, found = best
        where = folder / layout.subdir if layout.subdir else folder
        missing = [names[0] for names, path in zip(layout.parts[part], found) if path is None]
        raise DataError(f"dataset {name!r} ({part}) is incomplete in {where}: missing "
                        f"{', '.join(missing)}. {fix}")
    raise DataError(f"dataset {name!r} ({part}) not found; looked in "
                    f"{', '.join(map(str, folders))}. {fix}")
