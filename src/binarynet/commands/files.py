"""Which kind of file a command was given, so that a training checkpoint passed where a packed
model is expected (or the reverse) gets a message naming the right command instead of a
decoding error."""
from __future__ import annotations

import os

from ..errors import BinarynetError
from ..runs import BEST, CHECKPOINT, PACKED, checkpoint_path, kind_of_file

__all__ = ["CHECKPOINT", "PACKED", "kind_of_file", "require_checkpoint", "require_packed_model"]


def require_checkpoint(path, command: str) -> str:
    """The checkpoint file ``path`` names (a run folder: its best.pt); a BinarynetError
    pointing at ``binarynet predict`` when it is a packed model."""
    path = checkpoint_path(path, prefer=(BEST,))
    if kind_of_file(path) == PACKED:
        raise BinarynetError(f"{path} is a packed model (.bnn), not a training checkpoint: "
                             f"`binarynet {command}` takes a checkpoint or run folder; run a "
                             f"packed model with `binarynet predict {path} --data NAME`")
    return path


def require_packed_model(path, command: str) -> str:
    """``path`` itself; a BinarynetError pointing at ``binarynet export`` when it is a training
    checkpoint or a run folder."""
    path = os.fspath(path)
    if os.path.isdir(path) or kind_of_file(path) == CHECKPOINT:
        what = "a run folder" if os.path.isdir(path) else "a training checkpoint"
        raise BinarynetError(f"{path} is {what}, not a packed model: run `binarynet export "
                             f"{path}` first, then `binarynet {command}` on the .bnn file it "
                             f"writes")
    return path
