"""Layers of Binarized Neural Networks (arXiv:1602.02830).

- :class:`BinaryLinear`, :class:`BinaryConv2d` (base :class:`BinaryLayer`): binary weights,
  real latent weights.
- :class:`Sign`: binary activation with the hard-tanh straight-through estimator.
- :class:`ShiftBatchNorm1d`, :class:`ShiftBatchNorm2d`: shift-based batch normalization.

Importing this package registers a global optimizer hook that warns once when an optimizer
other than ``binarynet.optim.Adam``/``ShiftAdaMax`` updates latent weights without clipping.
"""
from .activations import Sign
from .batchnorm import ShiftBatchNorm1d, ShiftBatchNorm2d
from .latent import is_latent, tag_latent
from .layers import BinaryConv2d, BinaryLayer, BinaryLinear

__all__ = [
    "BinaryLayer",
    "BinaryLinear",
    "BinaryConv2d",
    "Sign",
    "ShiftBatchNorm1d",
    "ShiftBatchNorm2d",
    "is_latent",
    "tag_latent",
]
