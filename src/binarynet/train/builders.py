"""What a recipe builds: its model, loss, optimizer and the per-epoch learning rate of the groups.

Shared by the training loop and the checkpoint reader (which rebuilds a trained model), so it
imports neither.
"""
from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F

from .. import losses, models, optim
from ..errors import BinarynetError
from .recipes import Recipe, RecipeError


def build_model(recipe: Recipe, device=None) -> torch.nn.Module:
    """The recipe's model with its overrides, initialised from the recipe's seed.

    ``device="meta"`` builds it without allocating its tensors (to check shapes first).
    """
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in recipe.model_overrides.items()}
    torch.manual_seed(recipe.seed)
    try:
        with torch.device(device) if device is not None else contextlib.nullcontext():
            return models.get(recipe.model, **overrides)
    except (TypeError, ValueError) as exc:  # unknown model or option, bad option value
        raise BinarynetError(f"recipe {recipe.name}, model {recipe.model}: {exc}") from None


def loss_function(recipe: Recipe):
    """``f(scores, labels) -> mean loss`` of the recipe (the task loss, without distillation)."""
    if recipe.loss == "squared_hinge":
        return losses.squared_hinge
    if recipe.label_smoothing:
        return functools.partial(F.cross_entropy, label_smoothing=recipe.label_smoothing)
    return F.cross_entropy


def build_optimizer(recipe: Recipe, model: torch.nn.Module, lr: float):
    """The recipe's optimizer over ``model``.

    ``adam`` / ``shift_adamax``: bn.optim.Adam or ShiftAdaMax over ``param_groups`` (per-layer
    Glorot LR scales unless ``glorot_lr_scale`` is off); ``bop_adam``: ``bn.optim.Combined`` of
    Bop over the binary weights and Adam over the rest. Weight decay reaches only the groups
    that :func:`binarynet.optim.decay_split` allows. Adam takes torch's fused step: one pass over
    each parameter and its moments instead of one per operation (on a GPU one kernel for all of
    them). On the CPU the step is memory traffic: the paper MLP's training step became 2.2x
    faster on 2 Zen 4 cores (``benchmarks/bench_train.py``, results/cpu_benchmarks.log).
    """
    if recipe.optimizer == "shift_adamax":
        if recipe.weight_decay:
            raise ValueError(f"recipe {recipe.name}: shift_adamax has no weight decay")
        groups = optim.param_groups(model, lr, pow2=recipe.pow2_lr_scale)
        return optim.ShiftAdaMax(groups, lr=lr, betas=tuple(recipe.betas) or None, variant=recipe.optimizer_variant)
    kwargs = {"betas": tuple(recipe.betas)} if recipe.betas else {}
    if recipe.optimizer == "bop_adam":
        bop = optim.Bop(optim.named_binary_params(model), threshold=recipe.bop_threshold, gamma=recipe.bop_gamma)
        rest = _real_groups(recipe, model, lr)
        return optim.Combined(bop, optim.Adam(rest, lr=lr, fused=True, **kwargs))
    groups = optim.param_groups(model, lr, pow2=recipe.pow2_lr_scale)
    if not recipe.glorot_lr_scale:
        for group in groups:
            group["lr"], group["lr_scale"] = lr, 1.0
    if recipe.weight_decay:  # keep one "other" group otherwise: the layout older checkpoints hold
        groups = [g for g in groups if g["latent_clip"]]
        groups += _real_groups(recipe, model, lr)
    return optim.Adam(groups, lr=lr, fused=True, **kwargs)


def _real_groups(recipe: Recipe, model: torch.nn.Module, lr: float) -> list[dict]:
    """Param groups of the non-binary parameters: decayed ones (by :mod:`binarynet.optim.decay`)
    with the recipe's weight decay, the others without; empty groups left out."""
    decayed, kept = optim.decay_split(model, decay_norm_and_bias=recipe.weight_decay_norm_bias)
    if recipe.weight_decay and not decayed:
        raise RecipeError(f"recipe {recipe.name}: weight_decay {recipe.weight_decay} reaches no parameter of model "
                          f"{recipe.model} (binary weights, BN parameters and biases are not decayed; "
                          "weight_decay_norm_bias=true decays BN parameters and biases too)")
    groups = [{"params": decayed, "lr": lr, "lr_scale": 1.0, "latent_clip": False, "weight_decay": recipe.weight_decay,
               "name": "decay"},
              {"params": kept, "lr": lr, "lr_scale": 1.0, "latent_clip": False, "weight_decay": 0.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Each group's rate = ``lr`` x its ``lr_scale`` (1 for biases and BN)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DistributedDataParallel and torch.compile wrappers (or the model itself)."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)  # what torch.compile wraps


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast type of ``--amp``: bfloat16 (float32's range, so no loss scaling), except
    float16 on GPUs without bfloat16."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, enabled: bool):
    """Mixed precision of ``--amp`` in :func:`amp_dtype` (a no-op when disabled)."""
    return torch.autocast(device_type=device.type, dtype=amp_dtype(device), enabled=enabled)
