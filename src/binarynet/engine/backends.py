"""Where a PackedModel runs: the CPU backend, and a registry of the others by name.

A backend is one object that gives the graph runner (:mod:`binarynet.engine.runner`) its device
and everything device-specific: ``kernels`` (a module with the ops of
:mod:`binarynet.engine.kernels`, same names and semantics), the few array operations the runner
does itself (``upload``, ``cast``, ``permute``...; :class:`CpuBackend` lists them), how it takes
the caller's own array type (``is_native`` / ``is_float`` / ``move``), ``synchronize()`` for
timing, ``batch_bytes``, the bound on first-layer temporaries per internal batch, and ``float_ops``,
the ops of the real-valued stream (:mod:`binarynet.engine.float_ops`' functions on its arrays;
a backend without it runs format-2 graphs only, and refuses the others naming the op).

The CPU backend lives here. Others register themselves with :func:`register_backend` when their
module is imported; :func:`create` imports the module named in :data:`KNOWN_BACKENDS` on first
use, so the engine never imports a GPU framework itself (docs/design.md).
"""
from __future__ import annotations

import importlib
from typing import Callable

import numpy as np

from ..errors import BinarynetError
from . import float_ops

__all__ = ["CpuBackend", "KNOWN_BACKENDS", "register_backend", "create", "names"]

# backend name -> the module that registers it (and what it needs), imported on first use
KNOWN_BACKENDS = {
    "cuda": ("binarynet.gpu.engine_backend", "PyTorch and Triton (pip install 'binarynet[gpu]')"),
}
_FACTORIES: dict = {}


def register_backend(name: str, factory: Callable) -> None:
    """Make ``PackedModel.to(name)`` and ``to(name + ":<index>")`` work: ``factory(device)``
    gets the device string and returns a backend object (see the module docstring), raising
    :class:`~binarynet.errors.BinarynetError` when that device is unavailable and ValueError
    when the string names no device of this kind."""
    if not isinstance(name, str) or not name.isidentifier() or name == "cpu":
        raise ValueError(f"register_backend: name must be an identifier other than 'cpu', "
                         f"got {name!r}")
    _FACTORIES[name] = factory


def names() -> list:
    """Device kinds a model can be moved to (registered or known), "cpu" first."""
    return ["cpu"] + sorted(set(_FACTORIES) | set(KNOWN_BACKENDS))


def create(device: str):
    """The backend for ``device`` ("cpu", or "<kind>" / "<kind>:<index>" of a registered or
    known backend); imports the module of a known backend on first use."""
    kind = device.split(":", 1)[0]
    if device == "cpu":
        return CpuBackend()
    if kind not in _FACTORIES and kind in KNOWN_BACKENDS:
        module, needs = KNOWN_BACKENDS[kind]
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise BinarynetError(f"PackedModel.to({device!r}) needs {needs} ({err}); install "
                                 "them or use device 'cpu'") from None
    if kind not in _FACTORIES:
        choices = ", ".join(repr(n) for n in names())
        raise ValueError(f"PackedModel.to: device must be one of {choices}, optionally with "
                         f"':<index>' (e.g. 'cuda:0'), got {device!r}")
    return _FACTORIES[kind](device)


class CpuBackend:
    """numpy arrays and the compiled kernels (or, ``reference=True``, the numpy reference);
    the real-valued stream in numpy float32 either way."""

    device = "cpu"
    batch_bytes = 64 * 1024 * 1024
    float_ops = float_ops

    def __init__(self, reference: bool = False):
        if reference:
            from . import reference as kernels
        else:
            from . import kernels
        self.kernels = kernels

    # the caller's arrays: numpy (or array-like) is all the CPU takes
    def is_native(self, x) -> bool:
        return False

    def synchronize(self) -> None:
        pass

    def upload(self, a: np.ndarray) -> np.ndarray:
        return a

    def to_numpy(self, a) -> np.ndarray:
        return a

    def is_uint8(self, a) -> bool:
        return a.dtype == np.uint8

    def cast(self, a, dtype) -> np.ndarray:
        return a.astype(dtype)

    def contiguous(self, a) -> np.ndarray:
        return np.ascontiguousarray(a)

    def permute(self, a, axes) -> np.ndarray:
        return a.transpose(axes)

    def where(self, cond, a, b) -> np.ndarray:
        return np.where(cond, a, b)

    def concat(self, parts, axis: int) -> np.ndarray:
        return np.concatenate(parts, axis=axis)

    def stack(self, parts, axis: int) -> np.ndarray:
        return np.stack(parts, axis=axis)

    def full(self, shape, value, like) -> np.ndarray:
        return np.full(shape, value, dtype=like.dtype)

    def empty(self, shape, dtype) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def words(self, packed) -> np.ndarray:
        """The int64 view of packed uint64 words (for indexed stores)."""
        return packed.view(np.int64)
