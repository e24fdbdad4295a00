"""Training checkpoints: the format, built from a trainer's state and read back, atomic saves,
safe loading, the random-number-generator states, and the trained model a checkpoint holds.

A checkpoint is a dict of tensors and plain Python values saved with ``torch.save`` and read
back ONLY with ``torch.load(weights_only=True)``, which cannot execute code from the file.
Keys (format version 1), written by :func:`build` and checked by :func:`load`:

- ``format`` ("binarynet-checkpoint"), ``format_version`` (int), ``binarynet_version`` (str)
- ``config``: the resolved run configuration (JSON-compatible dict, including the recipe)
- ``model``, ``optimizer``: state dicts (``grad_scaler`` too for a CUDA ``--amp`` run)
- ``normalization``: ``{"scale": [...], "offset": [...]}`` per input channel
  (x_f = x_u8 * scale + offset; export folds it into the first layer)
- ``progress``: ``epoch`` (0-based epoch in progress or next), ``epoch_position`` (samples of
  that epoch's global order already consumed; 0 at an epoch boundary), ``global_step``, ``lr``,
  ``lr_factor`` (batch scaling, fixed for the run), ``global_batch_size``, ``order_seed``,
  ``epoch_totals`` (this epoch's [loss sum, correct, count] so far), ``elapsed_s``,
  ``best_val_error``, ``best_epoch``, ``test_error_at_best``
- ``rng``: torch / numpy / python / CUDA generator states (:func:`capture_rng`)

A checkpoint comes from a file the user names, so everything that sizes an allocation is
checked first: the stored recipe must be valid and its model's parameter shapes must equal the
stored weights' (checked on the ``meta`` device, which allocates nothing) before the model is
built for real.
"""
from __future__ import annotations

import math
import os
import random

import numpy as np
import torch

from .. import __version__
from .._atomic import atomic_write, remove_stale_temps
from ..errors import BinarynetError, CheckpointError
from ..runs import BEST, checkpoint_path
from .builders import build_model
from .inputs import input_channels
from .recipes import Recipe

FORMAT_NAME = "binarynet-checkpoint"
FORMAT_VERSION = 1
PROGRESS_KEYS = ("epoch", "epoch_position", "global_step", "lr", "lr_factor", "global_batch_size", "order_seed",
                 "epoch_totals", "elapsed_s", "best_val_error", "best_epoch", "test_error_at_best")


def build(*, config: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, normalization: tuple,
          progress: dict, grad_scaler=None) -> dict:
    """The checkpoint of a trainer's state: everything needed to continue exactly."""
    state = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "binarynet_version": __version__,
        "config": config,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "normalization": normalization_dict(normalization),
        "progress": dict(progress),
        "rng": capture_rng(),
    }
    if grad_scaler is not None:
        state["grad_scaler"] = grad_scaler.state_dict()
    return state


def normalization_dict(normalization: tuple) -> dict:
    """``(scale, offset)`` as stored in checkpoints and config.json."""
    return {"scale": list(normalization[0]), "offset": list(normalization[1])}


def restore(state: dict, path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_scaler=None) -> None:
    """Load a checkpoint's weights, optimizer state, loss-scaler state and RNG states into a run
    (inverse of :func:`build`); ``path`` names the file in errors."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} does not match its recipe's model/optimizer: "
                              f"{str(exc).splitlines()[0]}") from None
    if grad_scaler is not None and "grad_scaler" in state:
        grad_scaler.load_state_dict(state["grad_scaler"])
    restore_rng(state["rng"])


def save(path, checkpoint: dict) -> None:
    """Write ``checkpoint`` to ``path`` atomically: temp file, fsync, ``os.replace``, fsync dir.

    A crash at any moment leaves either the previous file or the new one, never a partial file;
    the temporary files of earlier saves that were killed mid-write are removed first.
    """
    remove_stale_temps(path)
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


def recipe_of(state: dict, path) -> Recipe:
    """The run's recipe stored in a checkpoint read by :func:`load`, validated field by field."""
    try:
        return Recipe.from_dict(state["config"]["recipe"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the stored recipe (config.recipe) is invalid: {exc}") from None


def check_weights_fit(recipe: Recipe, weights, path) -> None:
    """CheckpointError unless ``weights`` (a stored model state dict) has exactly the names and
    shapes of the recipe's model. The model is built on the ``meta`` device (no memory), so a
    recipe asking for a huge model is refused before anything is allocated."""
    try:
        shapes = {k: tuple(v.shape) for k, v in build_model(recipe, device="meta").state_dict().items()}
    except BinarynetError as exc:
        raise CheckpointError(f"{path}: the stored recipe (config.recipe) builds no model: {exc}") from None
    except (RuntimeError, OverflowError) as exc:  # sizes beyond what torch can describe
        raise CheckpointError(f"{path}: the stored recipe (config.recipe) asks for an impossible model: "
                              f"{str(exc).splitlines()[0]}") from None
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: 'model' is not a state dict of tensors")
    missing, unexpected = sorted(set(shapes) - set(weights)), sorted(set(weights) - set(shapes))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the recipe's model: missing {missing or 'none'}, "
                              f"unexpected {unexpected or 'none'}")
    for name, shape in shapes.items():
        if tuple(weights[name].shape) != shape:
            raise CheckpointError(f"{path}: weights do not fit the recipe's model: {name} is "
                                  f"{tuple(weights[name].shape)} in the file, {shape} in the model")


def normalization_of(state: dict, path, channels: int) -> tuple:
    """The stored input normalisation as ``(scale, offset)``: two lists of ``channels`` finite
    numbers (scales non-zero), else CheckpointError naming the field."""
    stored = state["normalization"]
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path}: 'normalization' must hold 'scale' and 'offset' lists, got "
                              f"{type(stored).__name__}")
    values = []
    for key in ("scale", "offset"):
        numbers = stored.get(key)
        if not isinstance(numbers, (list, tuple)) or len(numbers) != channels or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
            raise CheckpointError(f"{path}: normalization.{key} must be a list of {channels} finite numbers "
                                  f"(one per input channel), got {numbers!r}"[:300])
        values.append(tuple(float(v) for v in numbers))
    if not all(values[0]):
        raise CheckpointError(f"{path}: normalization.scale must not hold 0, got {list(values[0])}")
    return values[0], values[1]


def load_model(path):
    """Rebuild the trained model of a checkpoint (a ``.pt`` file, or a run folder: its
    ``best.pt``): ``(model in eval mode, recipe, (scale, offset) input normalisation)``.

    CheckpointError if the file is unreadable or its weights do not fit its recipe's model.
    """
    path = checkpoint_path(path, prefer=(BEST,))
    return model_from_state(load(path), path)


def model_from_state(state: dict, path) -> tuple:
    """:func:`load_model` for a checkpoint already read with :func:`load` (``path`` names it
    in errors): recipe, weights and normalisation are all checked before the model is built."""
    recipe = recipe_of(state, path)
    check_weights_fit(recipe, state["model"], path)
    try:
        channels = input_channels(recipe.dataset)
    except ValueError as exc:
        raise CheckpointError(f"{path}: the stored recipe's dataset (config.recipe.dataset) is unknown: "
                              f"{exc}") from None
    normalization = normalization_of(state, path, channels)
    model = build_model(recipe)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied into the parameter
        raise CheckpointError(f"{path}: weights do not fit the recipe's model: "
                              f"{str(exc).splitlines()[0]}") from None
    return model.eval(), recipe, normalization
