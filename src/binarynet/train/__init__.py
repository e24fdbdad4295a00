"""Training BNNs: recipes, the loop, checkpoints, metrics and torchrun/DDP.

Typical use (the ``binarynet train`` command does the same)::

    from binarynet import train
    recipe = train.recipes.apply_overrides(train.recipes.get("mnist_mlp_quick"), {"epochs": 3})
    summary = train.train(recipe, train.RunOptions(out="runs/quick"))
    print(summary["test_error_at_best"])

- :mod:`.recipes`: named configurations (:class:`Recipe`), ``get``, ``names``, ``apply_overrides``.
- :mod:`.schedule`: per-epoch learning rates (Theano exponential decay, step decay).
- :mod:`.loop`: :func:`train` and its :class:`~.loop.Trainer`; :mod:`.options`: :class:`RunOptions`.
- :mod:`.builders`: the recipe's model (:func:`build_model`), loss and optimizer.
- :mod:`.inputs`: the recipe's data splits and input normalisation; :mod:`.evaluation`: :func:`evaluate`.
- :mod:`.step_batches`: training batches built on the device (the split resident there when it fits).
- :mod:`.checkpoint`: the checkpoint format (built and read back), atomic save, safe ``load``
  (``weights_only=True``), RNG states, ``load_model``; :mod:`.run_folder`: the run folder.
- :mod:`.metrics`: progress bar, metrics JSON lines, TensorBoard.
- :mod:`.distributed`, :mod:`.syncbn`: process group, sharding, synchronised batch norm.
"""
from . import checkpoint, distributed, metrics, recipes, schedule, synthetic, syncbn
from .builders import build_model
from .evaluation import evaluate
from .interrupt import TrainingInterrupted
from .loop import train
from .options import RunOptions
from .recipes import Recipe
from .syncbn import convert_sync_batchnorm

__all__ = [
    "Recipe", "RunOptions", "TrainingInterrupted", "build_model", "checkpoint", "convert_sync_batchnorm",
    "distributed", "evaluate", "metrics", "recipes", "schedule", "synthetic", "syncbn", "train",
]
