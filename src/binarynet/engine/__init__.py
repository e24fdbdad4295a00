"""Inference engine for packed BNNs on numpy alone: it never imports PyTorch, even lazily.

- :func:`load` reads and validates a packed model file (``.bnn``, the safetensors layout;
  :mod:`binarynet.engine.format`) and returns a :class:`PackedModel`;
- :meth:`PackedModel.predict` runs it on numpy images (float, or uint8 with the normalisation
  folded in) with the XNOR-popcount kernels (:mod:`binarynet.engine.kernels`; plain-numpy
  reference in :mod:`binarynet.engine.reference`);
- :meth:`PackedModel.save` writes it back; :meth:`PackedModel.summary` accounts for its bytes;
- :meth:`PackedModel.to` (``"cuda"``) runs the same graph on an NVIDIA GPU with
  :mod:`binarynet.gpu`, a backend that registers itself (:mod:`binarynet.engine.backends`)
  and is imported only then.

Models come from :func:`binarynet.export.export` (the PyTorch side). The graph the engine runs is
described in :mod:`binarynet.engine.graph`.
"""
from ..errors import ModelFileError
from .format import FORMAT_NAME, FORMAT_VERSION
from .backends import register_backend
from .model import PackedModel, load

__all__ = ["load", "PackedModel", "ModelFileError", "FORMAT_NAME", "FORMAT_VERSION",
           "register_backend"]
