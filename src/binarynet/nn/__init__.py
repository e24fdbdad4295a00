"""Layers of Binarized Neural Networks (arXiv:1602.02830).

- :class:`BinaryLinear`, :class:`BinaryConv2d` (base :class:`BinaryLayer`): binary weights,
  real latent weights.
- :class:`Sign`: binary activation with the hard-tanh straight-through estimator.
- :class:`ShiftBatchNorm1d`, :class:`ShiftBatchNorm2d`: shift-based batch normalization.
- :class:`RSign`, :class:`RPReLU`: ReActNet's learnable-shift sign and PReLU.
- :class:`Residual`, :func:`shortcut`, :func:`bireal_block`: blocks with real-valued shortcuts
  (Bi-Real Net, ReActNet); the binary layers' ``scale=`` option scales per output channel.

Importing this package registers a global optimizer hook that warns once when an optimizer
other than ``binarynet.optim.Adam``/``ShiftAdaMax`` updates latent weights without clipping.
"""
from .activations import Sign
from .batchnorm import ShiftBatchNorm1d, ShiftBatchNorm2d
from .blocks import Residual, ShortcutMerge, bireal_block, shortcut
from .latent import is_latent, tag_latent
from .layers import BinaryConv2d, BinaryLayer, BinaryLinear
from .react import RPReLU, RSign

__all__ = [
    "BinaryLayer",
    "BinaryLinear",
    "BinaryConv2d",
    "Sign",
    "ShiftBatchNorm1d",
    "ShiftBatchNorm2d",
    "RSign",
    "RPReLU",
    "Residual",
    "ShortcutMerge",
    "shortcut",
    "bireal_block",
    "is_latent",
    "tag_latent",
]
