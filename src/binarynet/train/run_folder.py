"""The folder a training run writes (file names in :mod:`binarynet.runs`): choosing and creating
it, refusing to overwrite another run, saving ``last.pt`` / ``best.pt``, and tidying up.

Tidying: a save killed mid-write leaves a temporary file beside ``last.pt`` or ``best.pt``;
opening the folder (a resume) and every save remove such leftovers. A run that fails before its
first checkpoint removes the folder again when it created it, so a typo in ``--data-dir`` or a
failed download leaves no empty run folder behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import time

from .._atomic import atomic_link, remove_stale_temps
from ..errors import BinarynetError
from ..runs import BEST, CONFIG_FILE, LAST, METRICS_FILE, TENSORBOARD_DIR
from . import checkpoint as ckpt
from . import distributed

_TENSORBOARD_EVENTS = "events.out.tfevents."  # how SummaryWriter names its files


def default_path(recipe_name: str) -> str:
    """``runs/<recipe>-<YYYYmmdd-HHMMSS>`` in the current directory."""
    return os.path.join("runs", f"{recipe_name}-{time.strftime('%Y%m%d-%H%M%S')}")


class RunFolder:
    """The run folder as one process sees it; only rank 0 (``writer``) writes into it."""

    def __init__(self, path: str, writer: bool, created: tuple = ()):
        self.path, self.writer = path, writer
        self._created = created  # folders this run made, innermost first

    @classmethod
    def open(cls, options, recipe_name: str, ctx: distributed.Context, resuming: bool) -> "RunFolder":
        """The folder of ``options.out`` (else beside the resumed checkpoint, else
        :func:`default_path`, chosen by rank 0), created by rank 0 if missing.

        BinarynetError when a new run would overwrite the run the folder already holds.
        """
        if options.out:
            path = options.out
        elif options.resume:
            path = os.path.dirname(os.path.abspath(options.resume))
        else:
            path = distributed.broadcast_object(ctx, default_path(recipe_name))
        if not ctx.is_main:
            return cls(path, writer=False)
        if not resuming and os.path.exists(os.path.join(path, LAST)):
            raise BinarynetError(f"{path} already holds a run ({LAST}); continue it with --resume "
                                 f"or choose another --out")
        created = _make_folders(path)
        for name in (LAST, BEST):
            remove_stale_temps(os.path.join(path, name))
        return cls(path, writer=True, created=created)

    def file(self, name: str) -> str:
        """Path of ``name`` inside the folder."""
        return os.path.join(self.path, name)

    def write_config(self, config: dict) -> None:
        """config.json: the resolved run configuration."""
        if self.writer:
            with open(self.file(CONFIG_FILE), "w", encoding="utf-8") as f:
                json.dump(config, f, indent=2, sort_keys=True)

    def save(self, checkpoint: dict, best: bool = False) -> None:
        """Write last.pt (and make best.pt the same file when ``best``)."""
        if self.writer:
            ckpt.save(self.file(LAST), checkpoint)
            if best:
                remove_stale_temps(self.file(BEST))
                atomic_link(self.file(LAST), self.file(BEST))

    @contextlib.contextmanager
    def removed_on_early_failure(self):
        """Context: if the body fails before any checkpoint was saved, remove what the run wrote
        and the folders it created (only when they then hold nothing else)."""
        try:
            yield self
        except BaseException:
            if self._created and not os.path.exists(self.file(LAST)):
                self._remove_own_files()
            raise

    def _remove_own_files(self) -> None:
        for name in (CONFIG_FILE, METRICS_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.file(name))
        board = self.file(TENSORBOARD_DIR)
        if os.path.isdir(board):
            for name in os.listdir(board):
                if name.startswith(_TENSORBOARD_EVENTS):
                    os.unlink(os.path.join(board, name))
            _remove_if_empty(board)
        for folder in self._created:
            if not _remove_if_empty(folder):
                break


def _make_folders(path: str) -> tuple:
    """``os.makedirs(path)``; returns the folders it created, innermost first."""
    missing, folder = [], os.path.abspath(path)
    while not os.path.exists(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    os.makedirs(path, exist_ok=True)
    return tuple(missing)


def _remove_if_empty(folder: str) -> bool:
    try:
        os.rmdir(folder)
    except OSError:  # not empty (someone else's files), or gone
        return False
    return True
