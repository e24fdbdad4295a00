"""Training checkpoints: atomic writes, safe loading, and the random-number-generator states.

A checkpoint is a dict of tensors and plain Python values saved with ``torch.save`` and read
back ONLY with ``torch.load(weights_only=True)``, which cannot execute code from the file.
Keys (format version 1):

- ``format`` ("binarynet-checkpoint"), ``format_version`` (int), ``binarynet_version`` (str)
- ``config``: the resolved run configuration (JSON-compatible dict, including the recipe)
- ``model``, ``optimizer``: state dicts
- ``normalization``: ``{"scale": [...], "offset": [...]}`` per input channel
  (x_f = x_u8 * scale + offset; export folds it into the first layer)
- ``progress``: ``epoch`` (0-based epoch in progress or next), ``epoch_position`` (samples of
  that epoch's global order already consumed; 0 at an epoch boundary), ``global_step``, ``lr``,
  ``lr_factor`` (batch scaling, fixed for the run), ``global_batch_size``, ``order_seed``,
  ``epoch_totals`` (this epoch's [loss sum, correct, count] so far), ``elapsed_s``,
  ``best_val_error``, ``best_epoch``, ``test_error_at_best``
- ``rng``: torch / numpy / python / CUDA generator states (:func:`capture_rng`)
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from .._atomic import atomic_write
from ..errors import CheckpointError

FORMAT_NAME = "binarynet-checkpoint"
FORMAT_VERSION = 1
PROGRESS_KEYS = ("epoch", "epoch_position", "global_step", "lr", "lr_factor", "global_batch_size", "order_seed",
                 "epoch_totals", "elapsed_s", "best_val_error", "best_epoch", "test_error_at_best")


def save(path, checkpoint: dict) -> None:
    """Write ``checkpoint`` to ``path`` atomically: temp file, fsync, ``os.replace``, fsync dir.

    A crash at any moment leaves either the previous file or the new one, never a partial file.
    """
    atomic_write(path, lambda f: torch.save(checkpoint, f))


def load(path) -> dict:
    """Read and check a checkpoint written by :func:`save`.

    Raises CheckpointError for a missing, truncated or corrupt file, a file that is not a
    binarynet checkpoint, or one written with another checkpoint format version.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, pickle.UnpicklingError, EOFError, ...
        raise CheckpointError(
            f"checkpoint {path} cannot be read (truncated, corrupt, or holding objects that "
            f"weights_only loading refuses): {_reason(exc)}"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a binarynet training checkpoint")
    version = checkpoint.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}, this binarynet reads version "
            f"{FORMAT_VERSION}; use the binarynet version that wrote it "
            f"({checkpoint.get('binarynet_version', 'unknown')})"
        )
    missing = [k for k in ("config", "model", "optimizer", "normalization", "progress", "rng") if k not in checkpoint]
    if not missing and isinstance(checkpoint["progress"], dict):
        missing = [f"progress.{k}" for k in PROGRESS_KEYS if k not in checkpoint["progress"]]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return checkpoint


def _reason(exc: Exception) -> str:
    """The informative line of a torch.load error (its text is long and mostly generic)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines if line.startswith("WeightsUnpickler error")), lines[0] if lines else "")
    return f"{type(exc).__name__}: {detail}"


def capture_rng() -> dict:
    """Global RNG states as tensors and plain values (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_state[0]),
            "internal": torch.tensor(py_state[1], dtype=torch.int64),
            "gauss_next": py_state[2],
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Inverse of :func:`capture_rng`."""
    try:
        torch.set_rng_state(state["torch"])
        np_state = state["numpy"]
        np.random.set_state((
            np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
            np_state["has_gauss"], np_state["cached_gaussian"],
        ))
        py_state = state["python"]
        random.setstate((py_state["version"], tuple(int(v) for v in py_state["internal"].tolist()),
                         py_state["gauss_next"]))
        if "cuda" in state and torch.cuda.is_available():
            cuda_states = state["cuda"]
            if len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda_states)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint holds an invalid random-generator state: {exc}") from None


def load_model(path):
    """Rebuild the trained model of a checkpoint (a ``.pt`` file, or a run folder: its
    ``best.pt``): ``(model in eval mode, recipe, (scale, offset) input normalisation)``.

    CheckpointError if the file is unreadable or its weights do not fit its recipe's model.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "best.pt")
    return model_from_state(load(path), path)


def model_from_state(state: dict, path) -> tuple:
    """:func:`load_model` for a checkpoint already read with :func:`load` (``path`` names it
    in errors)."""
    from .loop import build_model
    from .recipes import Recipe

    try:
        recipe = Recipe.from_dict(state["config"]["recipe"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the stored recipe is invalid: {exc}") from None
    model = build_model(recipe)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the recipe's model: "
                              f"{str(exc).splitlines()[0]}") from None
    normalization = (tuple(state["normalization"]["scale"]),
                     tuple(state["normalization"]["offset"]))
    return model.eval(), recipe, normalization
