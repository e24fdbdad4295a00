"""binarynet: Binarized Neural Networks (Courbariaux, Hubara et al. 2016, arXiv:1602.02830).

Training lives in ``binarynet.nn``, ``binarynet.optim``, ``binarynet.losses``,
``binarynet.models``, ``binarynet.data`` and ``binarynet.train`` (PyTorch); deployment in
``binarynet.engine`` (numpy + a compiled XNOR-popcount core, never torch), fed by
``binarynet.export.export(model, example_input)`` (a trained model -> packed model; its
``binarynet.export.to_torch(packed)`` goes back). ``binarynet.summary.summary(model, input_shape)``
counts a model's bits, memory, MACs and energy.
"""
import importlib

__version__ = "0.1.0"

# The torch-based submodules are exposed as attributes (``bn.nn``, ``bn.optim``, ...) but
# imported on first use, so that ``import binarynet.engine`` never pulls in torch.
_TORCH_SUBMODULES = ("quantizers", "nn", "optim", "losses", "models", "data", "train", "export",
                     "summary")


def __getattr__(name):
    if name in _TORCH_SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_TORCH_SUBMODULES))
