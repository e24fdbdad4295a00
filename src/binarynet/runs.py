"""The run folder: the files one training run writes, and which checkpoint a path names.

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

from .errors import CheckpointError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LAST = "last.pt"
BEST = "best.pt"
MODEL_FILE = "model.bnn"
TENSORBOARD_DIR = "tensorboard"


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
