"""Exceptions binarynet raises for bad input. The CLI prints them as one clear message.

Pure Python on purpose: the torch-free engine imports this module too.
"""


class BinarynetError(Exception):
    """Base class: a problem with the user's input, files or settings (not a bug)."""


class DataError(BinarynetError):
    """A dataset file is missing, truncated, corrupt or of the wrong format."""


class CheckpointError(BinarynetError):
    """A training checkpoint cannot be read or does not match the run."""


class ExportError(BinarynetError):
    """A trained model cannot be turned into a packed model (unsupported module, shapes...)."""


class ModelFileError(BinarynetError):
    """A packed model file is truncated, altered, of another format version, or invalid."""


class KernelChoiceError(BinarynetError, ValueError):
    """``BINARYNET_KERNEL`` or ``kernels.set_backend`` names an unknown ISA or one this CPU lacks."""
