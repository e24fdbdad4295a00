"""A restricted unpickler for the CIFAR-10 python batches (``cifar-10-batches-py``).

``pickle.load`` runs whatever callable a file names, so a tampered download could execute
code. This unpickler resolves only the globals that pickled numpy arrays need and refuses
every other one; plain containers, numbers and strings need no globals at all.
"""
from __future__ import annotations

import _codecs
import io
import pickle

import numpy as np

# Resolved from this numpy's own reductions, so the module paths of numpy 1.x
# ("numpy.core...") and 2.x ("numpy._core...") both map to the installed functions.
_RECONSTRUCT = np.empty(0).__reduce__()[0]        # protocol <= 4 arrays
_FROMBUFFER = np.empty(0).__reduce_ex__(5)[0]     # protocol 5 arrays

ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes as _codecs.encode(str, "latin1") under protocol 2.
    ("_codecs", "encode"): _codecs.encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits only :data:`ALLOWED_GLOBALS` (numpy array reconstruction)."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: only numpy array reconstruction is allowed"
            ) from None


def restricted_loads(data: bytes):
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    Python 2 ``str`` objects (the CIFAR-10 batches were written by Python 2) come back as
    ``bytes`` (``encoding="bytes"``). Raises ``pickle.UnpicklingError`` for a refused global;
    a damaged stream raises whatever the unpickler hits (callers convert to DataError).
    """
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
