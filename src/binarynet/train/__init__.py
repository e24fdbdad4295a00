"""Training BNNs: recipes, the loop, checkpoints, metrics and torchrun/DDP.

Typical use (the ``binarynet train`` command does the same)::

    from binarynet import train
    recipe = train.recipes.apply_overrides(train.recipes.get("mnist_mlp_quick"), {"epochs": 3})
    summary = train.train(recipe, train.RunOptions(out="runs/quick"))
    print(summary["test_error_at_best"])

- :mod:`.recipes`: named configurations (:class:`Recipe`), ``get``, ``names``, ``apply_overrides``.
- :mod:`.schedule`: per-epoch learning rates (Theano exponential decay, step decay).
- :mod:`.loop`: :func:`train`, :class:`RunOptions`, :func:`evaluate`, :func:`build_model`.
- :mod:`.checkpoint`: atomic save, safe ``load`` (``weights_only=True``), RNG states.
- :mod:`.metrics`: progress bar, metrics JSON lines, TensorBoard.
- :mod:`.distributed`, :mod:`.syncbn`: process group, sharding, synchronised batch norm.
"""
from . import checkpoint, distributed, metrics, recipes, schedule, syncbn
from .interrupt import TrainingInterrupted
from .loop import RunOptions, build_model, evaluate, train
from .recipes import Recipe
from .syncbn import convert_sync_batchnorm

__all__ = [
    "Recipe", "RunOptions", "TrainingInterrupted", "build_model", "checkpoint", "convert_sync_batchnorm",
    "distributed", "evaluate", "metrics", "recipes", "schedule", "syncbn", "train",
]
