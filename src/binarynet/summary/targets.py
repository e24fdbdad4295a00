"""What ``binarynet summary TARGET`` names: a packed ``.bnn`` file, a training checkpoint (or a
run folder), a recipe name or a model name, resolved to a :class:`ModelSummary`.

Every problem with the target is a one-line :class:`~binarynet.errors.BinarynetError`: a broken
packed file gets the engine's :class:`~binarynet.errors.ModelFileError` (what is wrong with it),
a broken checkpoint a :class:`~binarynet.errors.CheckpointError`, an unknown name the list of
known ones, and bad ``--set`` values the recipe's or model builder's message.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, Sequence

from ..errors import BinarynetError
from ..runs import BEST, CHECKPOINT, LAST, PACKED, checkpoint_path, kind_of_file
from .costs import ModelSummary
from .summarise import summary

# A named model is traced on the meta device when it can be, but one whose builder or forward
# needs real values is built in memory (float32 weights, and as much again for the weights'
# signs during the forward pass); so larger requests are refused before allocating anything.
# The paper's largest network (the MNIST MLP, 3 x 4096) has 37 million, the zoo's 29 million.
MAX_PARAMETERS = 2 ** 28


def summary_of_target(target: str, input_shape: Sequence[int] | None = None,
                      overrides: dict | None = None) -> ModelSummary:
    """Summary of what ``binarynet summary TARGET`` names: a packed ``.bnn`` file, a training
    checkpoint (or a run folder: its ``best.pt``, else its ``last.pt``), a recipe name or a
    model name.

    ``overrides`` ({"field": value, "model.arg": value}) apply to a recipe; to a model name
    only ``model.*`` keys apply. Raises BinarynetError saying what is wrong or expected.
    """
    overrides = dict(overrides or {})
    try:
        if os.path.isdir(target) or os.path.isfile(target):
            path = checkpoint_path(target, prefer=(BEST, LAST))
            if overrides:
                raise BinarynetError("--set applies to recipe and model names, not to files")
            return _file_summary(path, input_shape)
        return _name_summary(target, overrides, input_shape)
    except ValueError as exc:  # a bad --input-shape or recipe override
        raise BinarynetError(str(exc)) from None


def is_packed_file(path) -> bool:
    """True when ``path`` is meant as a packed model file: it has the layout of one (an 8-byte
    header length, then a JSON object) or, unless it is a zip archive (a torch checkpoint), a
    ``.bnn`` name; so an empty or truncated ``.bnn`` file still counts as one."""
    kind = kind_of_file(path)
    return kind == PACKED or (kind != CHECKPOINT and os.fspath(path).lower().endswith(".bnn"))


def recipe_input(recipe) -> tuple:
    """(input shape of one sample, first-layer input bits) of a training recipe's dataset.

    Images are 8-bit; the packed engine takes them as such (integer first layer) when the
    normalisation has one scale for all channels, else it normalises them in float.
    """
    from .. import data
    from ..train import synthetic

    if recipe.dataset == "synthetic":
        images, _ = synthetic.generate("test", num_train=1, num_val=1, num_test=1, seed=recipe.seed)
        return tuple(images.shape[1:]), 8 if recipe.normalization == "paper" else 32
    scale, _ = data.normalization(recipe.dataset, recipe.normalization)
    return tuple(data.info(recipe.dataset).image_shape), 8 if len(set(scale)) == 1 else 32


def recipe_op_macs(recipe) -> float:
    """Multiply-adds of a recipe's typical operation: the median, over its model's weighted
    layers, of one layer's forward pass over one batch (``binarynet.threads.default_threads``
    sizes the thread count by it); 0.0 where the input shape is known only once the data is
    read (image folders)."""
    from ..train.builders import build_model

    try:
        shape, _ = recipe_input(recipe)
    except (BinarynetError, ValueError):
        return 0.0
    macs = sorted(row.binary_macs + row.multibit_macs
                  for row in summary(build_model(recipe, "meta"), shape).layers)
    macs = [m for m in macs if m > 0]
    return float(macs[len(macs) // 2] * recipe.batch_size) if macs else 0.0


def _file_summary(path: str, input_shape) -> ModelSummary:
    """A packed file (the engine says what is wrong with a broken one) or a checkpoint."""
    if is_packed_file(path):
        return summary(path)
    from ..train.checkpoint import load_model

    model, recipe, normalization = load_model(path)
    shape, _ = recipe_input(recipe)
    bits = 8 if len(set(normalization[0])) == 1 else 32
    result = summary(model, input_shape or shape, input_bits=bits)
    result.source = f"{os.path.basename(path)} ({recipe.name})"
    return result


def _name_summary(target: str, overrides: dict, input_shape) -> ModelSummary:
    """A recipe or model name (torch is imported here: a packed file does not need it)."""
    from .. import models
    from ..train import recipes

    if target in recipes.names():
        return _recipe_summary(target, overrides, input_shape)
    if target in models.names():
        return _model_summary(target, overrides, input_shape)
    raise BinarynetError(
        f"{target!r} is neither a file nor a folder, a recipe ({', '.join(recipes.names())}) "
        f"nor a model ({', '.join(models.names())})")


def _recipe_summary(name: str, overrides: dict, input_shape) -> ModelSummary:
    from ..train import build_model, recipes

    recipe = recipes.apply_overrides(recipes.get(name), overrides)
    shape, bits = recipe_input(recipe)
    result = _summarise_built(lambda: build_model(recipe), f"recipe {name}, model {recipe.model}",
                              input_shape or shape, bits)
    result.source = f"recipe {name} (model {recipe.model})"
    return result


def _model_summary(name: str, overrides: dict, input_shape) -> ModelSummary:
    from .. import models
    from ..train.recipes import parse_value

    unknown = [k for k in overrides if not k.startswith("model.")]
    if unknown:
        raise BinarynetError(f"a model name takes only model.<option> overrides, got "
                             f"{', '.join(unknown)}")
    kwargs = {k[len("model."):]: parse_value(v) if isinstance(v, str) else v
              for k, v in overrides.items()}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    if input_shape is None:
        input_shape = _model_default_input(name, kwargs)
    result = _summarise_built(lambda: models.get(name, **kwargs), f"model {name}", input_shape)
    result.source = f"model {name}"
    return result


def _model_default_input(name: str, kwargs: dict) -> tuple | None:
    """Input shape of one of binarynet's model builders from its options (``in_shape``, or
    ``in_channels`` and ``image_size`` or the zoo's ``input_size``) and their defaults; None
    when they do not tell."""
    import inspect

    from .. import models

    builder = models.builder(name)
    if not builder.__module__.startswith(models.__name__):  # a user's: its options mean anything
        return None
    options = {k: p.default for k, p in inspect.signature(builder).parameters.items()}
    options.update(kwargs)
    if "in_shape" in options:
        return tuple(options["in_shape"])
    side = options.get("image_size", options.get("input_size"))
    if "in_channels" in options and side is not None:
        return (options["in_channels"], side, side)
    return None


def _first_line(exc: Exception) -> str:
    """torch's messages can run over many lines (a C++ backtrace); the first says what."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _meta_model(build: Callable):
    """``build()``'s model built on the meta device, which allocates nothing; None for a
    builder that needs real values (reads a tensor, say)."""
    import torch

    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. loading weights into meta tensors: a no-op
            return build()
    except RuntimeError:  # then the real build says what is wrong, if anything
        return None


def _summarise_built(build: Callable, what: str, input_shape, input_bits=None) -> ModelSummary:
    """Summary of ``build()``'s model, traced on the meta device (shapes only: nothing is
    allocated or computed, whatever the input size) where the builder and the model's forward
    allow it, else built and traced in memory."""
    model = _build(build, what)
    if next(model.parameters(), None) is not None and next(model.parameters()).is_meta:
        try:
            return summary(model, input_shape, input_bits=input_bits)
        except ValueError:  # a forward the meta device cannot run; the real one says if wrong
            model = _build(build, what, meta=False)
    return summary(model, input_shape, input_bits=input_bits)


def _build(build: Callable, what: str, meta: bool = True):
    """The model on the meta device (``meta`` and the builder allows it) or in memory, once
    its meta build found at most :data:`MAX_PARAMETERS` parameters and buffers; every failure
    is a one-line BinarynetError."""
    try:
        shapes = _meta_model(build)
        count = (sum(t.numel() for t in (*shapes.parameters(), *shapes.buffers()))
                 if shapes is not None else None)
        if count is not None and count > MAX_PARAMETERS:
            raise BinarynetError(
                f"{what} has {count:,} parameters; binarynet summary builds the model in "
                f"memory and stops at {MAX_PARAMETERS:,}: choose smaller sizes (--set model.*)")
        return shapes if meta and shapes is not None else build()
    except BinarynetError as exc:
        raise type(exc)(_first_line(exc)) from None
    except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as exc:
        raise BinarynetError(f"{what}: {_first_line(exc)}") from None
