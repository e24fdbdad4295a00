"""The run folder: the files one training run writes, which checkpoint a path names, and what
kind of file (checkpoint or packed model) a path holds.

A run folder (``binarynet train --out DIR``) holds

- ``config.json``: the resolved run configuration (recipe included), written once at the start;
- ``metrics.jsonl``: one JSON record per epoch (rank 0);
- ``last.pt``: the latest checkpoint (end of the last epoch, or mid-epoch with
  ``--checkpoint-every-steps``), what ``--resume`` continues from;
- ``best.pt``: the checkpoint of the best validation epoch, what ``eval``, ``export``,
  ``summary`` and ``report`` use by default;
- ``model.bnn``: the packed model ``binarynet export RUN_DIR`` writes, which ``report`` runs;
- ``tensorboard/``: TensorBoard event files, with ``--tensorboard``.

Pure Python: the CLI, the report and the demo read it without importing torch.
"""
from __future__ import annotations

import os
import struct

from .errors import CheckpointError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LAST = "last.pt"
BEST = "best.pt"
MODEL_FILE = "model.bnn"
TENSORBOARD_DIR = "tensorboard"

# what kind_of_file tells apart
CHECKPOINT = "checkpoint"
PACKED = "packed model"


def checkpoint_path(path, prefer: tuple = (BEST,)) -> str:
    """The checkpoint file that ``path`` names: ``path`` itself if it is not a folder, else the
    first of ``prefer`` (file names, e.g. ``(BEST, LAST)``) that the folder holds.

    Raises CheckpointError for a folder that holds none of them.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        return path
    for name in prefer:
        candidate = os.path.join(path, name)
        if os.path.isfile(candidate):
            return candidate
    raise CheckpointError(f"{path} is a folder without {' or '.join(prefer)}: give a checkpoint "
                          f"file or a run folder written by `binarynet train`")


def kind_of_file(path) -> str | None:
    """CHECKPOINT (torch.save: a zip archive, or a bare pickle), PACKED (binarynet.engine: an
    8-byte little-endian header length, then the JSON header), or None (unknown, unreadable or
    not a file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return None
    # the packed test first: a header length's low byte may be 0x80, a pickle's first byte
    if len(head) == 9 and head[8:9] == b"{" and 1 < struct.unpack("<Q", head[:8])[0] < 2 ** 32:
        return PACKED
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return CHECKPOINT
    return None
