"""Which kind of file a command was given, so that a training checkpoint passed where a packed
model is expected (or the reverse) gets a message naming the right command instead of a
decoding error."""
from __future__ import annotations

import os
import struct

from ..errors import BinarynetError
from ..runs import BEST, checkpoint_path

CHECKPOINT = "checkpoint"
PACKED = "packed model"


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
