"""Two-step training (ReActNet / Martinez et al. 2020): step 1 trains with binary activations and
real-valued weights, step 2 with both binary, starting from step 1's weights.

The recipe's ``two_step_epochs`` first epochs are step 1: every binary layer's weight
quantizer is set to None (the identity: the latent weight itself is used); from epoch
``two_step_epochs`` on the layer's own quantizer (sign) is back. Input quantizers and Sign
modules are untouched, so activations are binary throughout. The latent weights stay clipped to
[-1, 1] by the optimizer in both steps. A checkpoint of step 1 rebuilds (``load_model``,
export) as the binary network it will become.
"""
from __future__ import annotations

from torch import nn

from ..nn import BinaryLayer

_SAVED = "_binarynet_step2_quantizer"


def set_step(model: nn.Module, step: int) -> None:
    """Put every binary layer of ``model`` in two-step training's ``step`` (1 or 2)."""
    if step not in (1, 2):
        raise ValueError(f"two-step training has steps 1 and 2, got {step}")
    for module in model.modules():
        if not isinstance(module, BinaryLayer):
            continue
        if not hasattr(module, _SAVED):
            object.__setattr__(module, _SAVED, module.weight_quantizer)
        module.weight_quantizer = None if step == 1 else getattr(module, _SAVED)


def step_of_epoch(epoch: int, two_step_epochs: int) -> int:
    """The step (1 or 2) of 0-based ``epoch``."""
    return 1 if epoch < two_step_epochs else 2
