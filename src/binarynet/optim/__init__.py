"""Optimizers for BNN training.

- :mod:`.latent`: the paper's latent-weight optimizers (arXiv:1602.02830, Alg. 1; docs/paper.md §2.1):
  :func:`glorot_lr_scale`, :func:`param_groups`, :class:`Adam` (clips latent weights to [-1, 1]),
  :class:`ShiftAdaMax` (Alg. 4).
- :mod:`.bop`: :class:`Bop`, the latent-free optimizer of binary weights, and
  :func:`binary_params` (what it takes).
- :mod:`.combined`: :class:`Combined`, Bop plus any torch optimizer for the other parameters.
- :mod:`.decay`: :func:`decay_split`, where weight decay belongs.
"""
from .bop import Bop, BopError, binary_params, is_bop_weight, named_binary_params
from .combined import Combined
from .decay import decay_split
from .latent import Adam, ShiftAdaMax, glorot_lr_scale, param_groups

__all__ = ["Adam", "Bop", "BopError", "Combined", "ShiftAdaMax", "binary_params", "decay_split", "glorot_lr_scale",
           "is_bop_weight", "named_binary_params", "param_groups"]
