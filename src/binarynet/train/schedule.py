"""Learning-rate schedules, one rate per epoch (the paper's code changes the rate between epochs).

- ``exponential`` (Theano code, docs/paper.md §2.8): ``lr(e) = lr * f**e`` with
  ``f = (lr_end / lr)**(1 / epochs)``; epoch 0 trains with ``lr`` and the rate would reach
  ``lr_end`` after the last epoch. For the paper's MNIST run (3e-3 -> 3e-7 over 1000 epochs)
  ``f = 0.99083``. Running fewer epochs compresses the same decay into them.
- ``step`` (Torch7 code): ``lr(e) = lr * gamma**floor(e / step_epochs)``.
- ``constant``: ``lr(e) = lr``.
"""
from __future__ import annotations

import math


def lr_at(epoch: int, *, schedule: str, lr: float, lr_end: float, epochs: int,
          step_epochs: int = 0, step_gamma: float = 0.5) -> float:
    """The learning rate of 0-based ``epoch`` under ``schedule`` (see the module docstring)."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if schedule == "exponential":
        return lr * decay_factor(lr, lr_end, epochs) ** epoch
    if schedule == "step":
        if step_epochs < 1:
            raise ValueError("the step schedule needs step_epochs >= 1")
        return lr * step_gamma ** (epoch // step_epochs)
    if schedule == "constant":
        return lr
    raise ValueError(f"unknown lr schedule {schedule!r}; use exponential, step or constant")


def decay_factor(lr: float, lr_end: float, epochs: int) -> float:
    """Per-epoch factor of the exponential schedule: ``(lr_end / lr) ** (1 / epochs)``."""
    if lr <= 0 or lr_end <= 0 or epochs < 1:
        raise ValueError(f"exponential decay needs lr, lr_end > 0 and epochs >= 1, got {lr}, {lr_end}, {epochs}")
    return math.exp(math.log(lr_end / lr) / epochs)


def recipe_lr(recipe, epoch: int, factor: float = 1.0) -> float:
    """``lr_at`` with the recipe's schedule fields; ``factor`` scales both ends (batch scaling)."""
    return lr_at(epoch, schedule=recipe.lr_schedule, lr=recipe.lr * factor, lr_end=recipe.lr_end * factor,
                 epochs=recipe.epochs, step_epochs=recipe.lr_step_epochs, step_gamma=recipe.lr_step_gamma)


def batch_scaling_factor(rule: str, effective_batch: int, reference_batch: int) -> float:
    """LR multiplier when the effective batch differs from the one the recipe was tuned for.

    ``sqrt``: ``sqrt(B_eff / B_ref)`` (square-root rule for Adam-type optimizers, Malladi et al.
    2022); ``linear``: ``B_eff / B_ref`` (Goyal et al. 2017, for SGD); ``none``: 1.
    """
    ratio = effective_batch / reference_batch
    if rule == "sqrt":
        return math.sqrt(ratio)
    if rule == "linear":
        return ratio
    if rule == "none":
        return 1.0
    raise ValueError(f"unknown lr scaling rule {rule!r}; use sqrt, linear or none")
