"""The "cuda" backend of the packed engine: registers itself with binarynet.engine.backends.

Importing this module (``PackedModel.to("cuda")`` does, on first use) registers
:func:`create`, which gives a :class:`TorchBackend` for a CUDA device: the ops of
:mod:`binarynet.gpu.backend` and the runner's array operations on torch tensors. The engine
itself never imports torch; everything torch-shaped it needs lives here.
"""
from __future__ import annotations

import numpy as np
import torch

from ..engine.backends import register_backend
from ..errors import BinarynetError
from . import backend as _ops

__all__ = ["TorchBackend", "create", "on_torch_device"]


class TorchBackend:
    """The runner's backend on torch tensors of one device (see binarynet.engine.backends).

    Model tensors are uploaded once; uint64 travels as its int64 bit pattern (torch's uint64
    has no conversions from numpy of its own). Besides CUDA devices, the tests use CPU tensors
    under TRITON_INTERPRET=1 (Triton's interpreter)."""

    kernels = _ops
    batch_bytes = 1024 * 1024 * 1024  # a GPU has far more memory; larger batches keep it busy

    def __init__(self, device: torch.device):
        self.device = device
        self._dtypes = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32,
                        np.dtype(np.int16): torch.int16, np.dtype(np.int8): torch.int8,
                        np.dtype(np.int32): torch.int32}

    # the caller's own tensors: taken on any device, logits returned on this one
    def is_native(self, x) -> bool:
        return isinstance(x, torch.Tensor)

    def is_float(self, t) -> bool:
        return t.is_floating_point()

    def move(self, t):
        return t.to(self.device)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def upload(self, a: np.ndarray):
        a = np.array(a, copy=True, order="C")  # writable and contiguous, as from_numpy wants
        if a.dtype == np.uint64:
            return torch.from_numpy(a.view(np.int64)).to(self.device).view(torch.uint64)
        return torch.from_numpy(a).to(self.device)

    def to_numpy(self, t) -> np.ndarray:
        if t.dtype == torch.uint64:
            return t.view(torch.int64).cpu().numpy().view(np.uint64)
        return t.cpu().numpy()

    def is_uint8(self, t) -> bool:
        return t.dtype == torch.uint8

    def cast(self, t, dtype):
        return t.to(self._dtypes[np.dtype(dtype)])

    def contiguous(self, t):
        return t.contiguous()

    def permute(self, t, axes):
        return t.permute(*axes)

    def where(self, cond, a, b):
        return torch.where(cond, a, b)

    def concat(self, parts, axis: int):
        return torch.cat(parts, dim=axis)

    def stack(self, parts, axis: int):
        return torch.stack(parts, dim=axis)

    def full(self, shape, value, like):
        return torch.full(shape, value, dtype=like.dtype, device=like.device)

    def empty(self, shape, dtype):
        return torch.empty(shape, dtype=self._dtypes[np.dtype(dtype)], device=self.device)

    def words(self, packed):
        # torch's uint64 has few kernels (no indexed stores): work on the int64 bit pattern
        return packed.view(torch.int64)


def create(name: str) -> TorchBackend:
    """The backend for "cuda" (the current GPU) or "cuda:<index>"; BinarynetError without a
    CUDA GPU, ValueError for a device this machine does not have."""
    if not torch.cuda.is_available():
        raise BinarynetError(f"PackedModel.to({name!r}): no CUDA GPU is available "
                             "(torch.cuda.is_available() is False); use device 'cpu'")
    try:
        target = torch.device(name)
    except RuntimeError:
        raise ValueError(f"PackedModel.to: invalid device {name!r}") from None
    index = torch.cuda.current_device() if target.index is None else target.index
    if index >= torch.cuda.device_count():
        raise ValueError(f"PackedModel.to: {name!r}, but this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    return TorchBackend(torch.device("cuda", index))


def on_torch_device(model, device):
    """``model`` (a PackedModel) running on the torch tensors of any ``device``, CUDA or, under
    TRITON_INTERPRET=1, the CPU (how tests and benchmarks check this backend without a GPU)."""
    return model._on_backend(TorchBackend(torch.device(device)))


register_backend("cuda", create)
