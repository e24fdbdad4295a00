"""``summary()``: one entry point for a torch model, a ``PackedModel`` or a packed file's path.

Packed models are summarised without importing torch; the torch path is imported when a torch
model comes.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from .. import engine
from .costs import ModelSummary
from .packed import summarise_packed


def summary(model_or_packed: Any, input_shape: Sequence[int] | None = None,
            input_bits: int | None = None) -> ModelSummary:
    """Summarise a torch model, a ``PackedModel`` or a packed model file path.

    ``input_shape`` is one sample's shape without the batch axis, e.g. ``(1, 28, 28)``;
    it is required for a torch model unless it can be read from the model (a first dense
    layer gives ``(in_features,)``). ``input_bits`` is the precision of the data fed to the
    first layer: 32 (float, the default for a torch model) or 8 (8-bit images whose
    normalisation the packed engine folds in; the default for packed models that take
    uint8 images). Raises TypeError for an unsupported object, ModelFileError for a packed
    file that cannot be read.
    """
    if input_bits not in (None, 1, 8, 32):
        raise ValueError(f"input_bits must be 1, 8 or 32, got {input_bits!r}")
    if isinstance(model_or_packed, (str, os.PathLike)):
        return summarise_packed(engine.load(model_or_packed), input_bits,
                                file_path=os.fspath(model_or_packed))
    if _is_torch_module(model_or_packed):
        from .torch_model import summarise_module

        return summarise_module(model_or_packed, input_shape, input_bits or 32)
    if isinstance(model_or_packed, engine.PackedModel):
        return summarise_packed(model_or_packed, input_bits)
    raise TypeError("summary() expects a torch.nn.Module, a binarynet.engine.PackedModel or "
                    f"the path of a packed .bnn file, got {type(model_or_packed).__name__}")


def _is_torch_module(obj: Any) -> bool:
    # Checked without importing torch, so packed models can be summarised torch-free.
    return any(cls.__module__.startswith("torch.nn") and cls.__name__ == "Module"
               for cls in type(obj).__mro__)
