"""Where weight decay belongs in a BNN.

Rule: decay only the weights of real-valued ``nn.Linear`` and ``nn.Conv*d`` layers (the first
and last layers of the modern models, 1x1 shortcut convs). Never decay binary weights: a
latent weight's magnitude carries no meaning but its distance to the sign flip, and Bop's are
+-1. By default not BN parameters, biases or per-channel shifts and slopes (RSign, RPReLU)
either: decaying them pulls thresholds to 0 instead of regularising (the usual practice of
ResNet training, and ReActNet's). ``decay_norm_and_bias=True`` decays every non-binary parameter.
"""
from __future__ import annotations

from torch import nn

from ..nn.latent import is_latent

__all__ = ["decay_split"]

_DECAYED = (nn.Linear, nn.modules.conv._ConvNd)


def decay_split(model: nn.Module, decay_norm_and_bias: bool = False) -> tuple[list, list]:
    """``(decayed, not_decayed)`` parameters of ``model`` by the rule above, leaving out binary
    weights (latent or Bop's: both are tagged latent); each shared tensor appears once."""
    skip = set()
    real_weights = {id(m.weight) for m in model.modules()
                    if isinstance(m, _DECAYED) and isinstance(getattr(m, "weight", None), nn.Parameter)}
    decayed, kept = [], []
    for p in model.parameters():
        if id(p) in skip or is_latent(p):
            continue
        skip.add(id(p))
        (decayed if decay_norm_and_bias or id(p) in real_weights else kept).append(p)
    return decayed, kept
