"""Learning-rate schedules, one rate per epoch (the paper's code changes the rate between epochs).

- ``exponential`` (Theano code, docs/paper.md §2.8): ``lr(e) = lr * f**e`` with
  ``f = (lr_end / lr)**(1 / epochs)``; epoch 0 trains with ``lr`` and the rate would reach
  ``lr_end`` after the last epoch. For the paper's MNIST run (3e-3 -> 3e-7 over 1000 epochs)
  ``f = 0.99083``. Running fewer epochs compresses the same decay into them.
- ``step`` (Torch7 code): ``lr(e) = lr * gamma**floor(e / step_epochs)``.
- ``constant``: ``lr(e) = lr``.
- ``cosine`` (SGDR without restarts, as ReActNet / Bi-Real / QuickNet): after ``W`` warm-up
  epochs (``lr(e) = lr * (e + 1) / W``), ``lr(e) = lr_end + (lr - lr_end) (1 + cos(pi t)) / 2``
  with ``t = (e - W) / (epochs - W)``: epoch W trains with ``lr``, and the rate would reach
  ``lr_end`` after the last epoch. ``W = lr_warmup_epochs`` (default 0).
- ``one_cycle`` (Smith & Topin 2017): from ``lr / 25`` up to ``lr`` linearly over ``W`` epochs
  (``W = lr_warmup_epochs``, or 30% of the epochs when 0), then the cosine decay to ``lr_end``.
  ``lr(e) = lr/25 + (lr - lr/25) e / W`` for ``e < W``.
"""
from __future__ import annotations

import math


SCHEDULES = ("exponential", "step", "constant", "cosine", "one_cycle")
ONE_CYCLE_START_DIVISOR = 25.0  # one_cycle starts at lr / 25 (Smith & Topin; torch's OneCycleLR default)


def lr_at(epoch: int, *, schedule: str, lr: float, lr_end: float, epochs: int,
          step_epochs: int = 0, step_gamma: float = 0.5, warmup_epochs: int = 0) -> float:
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
    if schedule in ("cosine", "one_cycle"):
        return _warmup_cosine(epoch, schedule, lr, lr_end, epochs, warmup_epochs)
    raise ValueError(f"unknown lr schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")


def warmup_epochs_of(schedule: str, epochs: int, warmup_epochs: int) -> int:
    """The warm-up length W of ``cosine`` / ``one_cycle`` (see the module docstring)."""
    if schedule == "one_cycle" and warmup_epochs == 0:
        return max(1, round(0.3 * epochs)) if epochs > 1 else 0
    return warmup_epochs


def _warmup_cosine(epoch: int, schedule: str, lr: float, lr_end: float, epochs: int, warmup_epochs: int) -> float:
    warmup = warmup_epochs_of(schedule, epochs, warmup_epochs)
    if not 0 <= warmup < epochs:
        raise ValueError(f"lr_warmup_epochs must be in [0, epochs), got {warmup} for {epochs} epochs")
    if epoch < warmup:
        if schedule == "cosine":
            return lr * (epoch + 1) / warmup
        start = lr / ONE_CYCLE_START_DIVISOR
        return start + (lr - start) * epoch / warmup
    t = (epoch - warmup) / (epochs - warmup)
    return lr_end + (lr - lr_end) * (1.0 + math.cos(math.pi * t)) / 2.0


def decay_factor(lr: float, lr_end: float, epochs: int) -> float:
    """Per-epoch factor of the exponential schedule: ``(lr_end / lr) ** (1 / epochs)``."""
    if lr <= 0 or lr_end <= 0 or epochs < 1:
        raise ValueError(f"exponential decay needs lr, lr_end > 0 and epochs >= 1, got {lr}, {lr_end}, {epochs}")
    return math.exp(math.log(lr_end / lr) / epochs)


def recipe_lr(recipe, epoch: int, factor: float = 1.0) -> float:
    """``lr_at`` with the recipe's schedule fields; ``factor`` scales both ends (batch scaling)."""
    return lr_at(epoch, schedule=recipe.lr_schedule, lr=recipe.lr * factor, lr_end=recipe.lr_end * factor,
                 epochs=recipe.epochs, step_epochs=recipe.lr_step_epochs, step_gamma=recipe.lr_step_gamma,
                 warmup_epochs=recipe.lr_warmup_epochs)


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
