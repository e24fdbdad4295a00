"""Latent (real-valued) weights of binary layers: tagging, and a warning when nothing clips them.

The paper clips every latent weight to [-1, 1] after each update (arXiv:1602.02830, Alg. 1;
docs/paper.md §1.4). A plain ``torch.optim`` optimizer does not, and the weights then drift out of the
range where an update can still flip their sign. The library optimizers
(``binarynet.optim.Adam`` / ``ShiftAdaMax``) clip; for any other optimizer a global step
post-hook warns once per process.
"""
from __future__ import annotations

import warnings
import weakref

import torch
import torch.optim.optimizer as _torch_optimizer

_TAG = "_binarynet_latent"

# Set once the warning has been issued; tests reset it to observe the warning again.
_warned = False
# Optimizers already scanned without finding a latent weight -> number of params scanned.
_scanned: "weakref.WeakKeyDictionary[torch.optim.Optimizer, int]" = weakref.WeakKeyDictionary()


def tag_latent(param: torch.nn.Parameter) -> None:
    """Mark ``param`` as the latent weight of a binary layer (it must be clipped to [-1, 1])."""
    setattr(param, _TAG, True)


def is_latent(tensor: torch.Tensor) -> bool:
    """True for a tensor tagged by :func:`tag_latent`."""
    return getattr(tensor, _TAG, False) is True


def mark_clipped(param: torch.Tensor) -> None:
    """Record that ``param`` was just clamped to [-1, 1] (by a binarynet optimizer)."""
    param._binarynet_clipped_version = param._version


def known_clipped(param: torch.Tensor) -> bool:
    """True if ``param`` is unchanged since :func:`mark_clipped`, so it lies in [-1, 1].

    Changes through ``.data`` escape the version counter; the only effect is then that the STE
    mask of an out-of-range weight is skipped, i.e. the paper's identity weight STE is used.
    """
    return getattr(param, "_binarynet_clipped_version", None) == param._version


def _has_latent(optimizer: torch.optim.Optimizer) -> bool:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if _scanned.get(optimizer) == len(params):
        return False
    if any(is_latent(p) for p in params):
        return True
    _scanned[optimizer] = len(params)
    return False


def _warn_unclipped(optimizer, args, kwargs) -> None:
    """Global optimizer step post-hook: warn once if latent weights are left unclipped."""
    global _warned
    if _warned or getattr(optimizer, "clips_latent_weights", False):
        return
    if _has_latent(optimizer):
        _warned = True
        warnings.warn(
            f"{type(optimizer).__name__} updates latent weights of binary layers without clipping "
            "them to [-1, 1] (BNN, Alg. 1); use binarynet.optim.Adam or binarynet.optim.ShiftAdaMax, "
            "or clamp them yourself after each step (p.data.clamp_(-1, 1)).",
            UserWarning,
            stacklevel=3,
        )


_hook_handle = _torch_optimizer.register_optimizer_step_post_hook(_warn_unclipped)
