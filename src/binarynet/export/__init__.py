"""Export a trained torch BNN to a :class:`~binarynet.engine.PackedModel` (1-bit weights, integer thresholds).

``export(model, example_input, input_scale=None, input_offset=None, first_layer="bitplane")``
walks an ``nn.Sequential`` (nested ones are flattened; the paper networks of
:mod:`binarynet.models` are such) in evaluation mode and turns each block

    Binary{Linear,Conv2d} -> [MaxPool2d] -> [BatchNorm] -> Sign   (hidden)
    BinaryLinear -> [BatchNorm1d]                                   (output)

into one engine op (see :mod:`binarynet.engine.graph`); ``to_torch(packed)`` turns a packed
model back into a plain float torch network computing the same function.

Every decision is taken from the torch modules themselves, never from a formula alone:

- hidden layers: BN + sign -> an integer threshold on the +-1 dot product, verified on every
  reachable sum (:mod:`.folding`, docs/paper.md §5.3); max-pool before BN becomes an OR of
  thresholded bits; the output layer: logits = scale * s + shift, checked against the BN module;
- the first layer (real-valued input): a float32 boundary per unit found by bisection, and for
  uint8 images an exact integer threshold per border class (:mod:`.first_layer`).

Parts: :mod:`.convert` (the ``export`` entry point and its final engine-vs-torch check),
:mod:`.inputs` (example input and normalisation), :mod:`.modules` (which torch modules are
supported and their geometry), :mod:`.builder` (the walk over the modules),
:mod:`.layers` (the engine op of each block), :mod:`.writer` (the graph being written),
:mod:`.torch_network` (``to_torch``).
"""
from .convert import export
from .modules import SUPPORTED_MODULES
from .torch_network import to_torch

__all__ = ["export", "to_torch", "SUPPORTED_MODULES"]
