"""The "cuda" backend of the packed engine: registers itself with binarynet.engine.backends.

Importing this module (``PackedModel.to("cuda")`` does, on first use) registers
:func:`create`, which gives a :class:`TorchBackend` for a CUDA device: the ops of
:mod:`binarynet.gpu.backend`, the runner's array operations and the real-valued stream's ops
(:class:`TorchFloatOps`) on torch tensors. The engine
itself never imports torch; everything torch-shaped it needs lives here.
"""
from __future__ import annotations

import numpy as np
import torch

from ..engine import float_ops
from ..engine.backends import register_backend
from ..engine.graph import conv_output_size
from ..errors import BinarynetError
from . import backend as _ops

__all__ = ["TorchBackend", "TorchFloatOps", "create", "on_torch_device"]


class TorchFloatOps:
    """The real-valued stream's ops (:mod:`binarynet.engine.float_ops`, whose numpy code defines
    them) on torch tensors, the same float32 arithmetic in the same order: elementwise ops and
    pools give the CPU engine's values bit for bit; convolutions are im2col + float32 matmul
    (F.conv2d may run in TF32 on a GPU) and, with dense and the global mean, may sum in
    another order (a few ulps)."""

    def input_float(self, x, scale=None, offset=None):
        if x.dtype == torch.uint8:
            shape = (1, -1) + (1,) * (x.ndim - 2)
            x = (x.float() * self._vector(scale, x).view(shape)
                 + self._vector(offset, x).view(shape))
        x = x.float()
        return x.permute(0, 2, 3, 1).contiguous() if x.ndim == 4 else x

    @staticmethod
    def _vector(values, like):
        return torch.tensor(np.asarray(values, np.float32), device=like.device)

    @staticmethod
    def _pad(x, top_left, bottom_right, value):
        (pt, pl), (pb, pr) = top_left, bottom_right
        return torch.nn.functional.pad(x, (0, 0, pl, pr, pt, pb), value=value)

    def conv_real(self, x, weight, bias, stride, padding, dilation, groups):
        n, h, w, c = x.shape
        o, kh, kw, cg = weight.shape
        ho = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
        wo = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
        padded = self._pad(x, padding, padding, 0.0)
        if groups == c:  # depthwise, as float_ops: one multiply-add pass per tap
            source = padded if o == c else padded.repeat_interleave(o // c, dim=3)
            out = torch.zeros((n, ho, wo, o), dtype=torch.float32, device=x.device)
            for t, view in enumerate(float_ops.taps(source, (kh, kw), stride, dilation, (ho, wo))):
                out += view * weight[:, t // kw, t % kw, 0]
            return out + bias
        og = o // groups
        parts = []
        for g in range(groups):
            views = float_ops.taps(padded[..., g * cg:(g + 1) * cg], (kh, kw), stride, dilation,
                                   (ho, wo))
            patches = torch.stack(views, 3).reshape(n * ho * wo, kh * kw * cg)
            parts.append(patches @ weight[g * og:(g + 1) * og].reshape(og, -1).T)
        out = torch.cat(parts, 1) if groups > 1 else parts[0]
        return out.reshape(n, ho, wo, o) + bias

    def dense_real(self, x, weight, bias):
        return x @ weight.T + bias

    def output_transform(self, s, scale, shift):
        return s.float() * scale + shift

    def scale_shift(self, x, scale, shift):
        return x * scale + shift

    def relu(self, x):
        return torch.maximum(x, torch.zeros((), dtype=x.dtype, device=x.device))

    def prelu(self, x, shift_in, slope, shift_out):
        z = x + shift_in
        return torch.where(z > 0, z, slope * z) + shift_out

    def add(self, a, b):
        return a + b

    def sign(self, x, thresh, flip):
        return torch.where(flip, x <= thresh, x >= thresh)

    def concat(self, parts):
        return torch.cat(parts, -1)

    def avgpool(self, x, kernel, stride, padding, ceil_mode, count_include_pad):
        n, h, w, c = x.shape
        out, far = float_ops.pool_padding(h, w, kernel, stride, padding, ceil_mode)
        padded = self._pad(x, padding, far, 0.0)
        total = torch.zeros((n, *out, c), dtype=torch.float32, device=x.device)
        for view in float_ops.taps(padded, kernel, stride, (1, 1), out):
            total += view
        divisors = float_ops.avgpool_divisors(h, w, out, kernel, stride, padding,
                                              count_include_pad)
        return total / torch.from_numpy(divisors).to(x.device)[None, :, :, None]

    def maxpool_real(self, x, kernel, stride, padding, ceil_mode):
        n, h, w, c = x.shape
        out, far = float_ops.pool_padding(h, w, kernel, stride, padding, ceil_mode)
        padded = self._pad(x, padding, far, -float("inf"))
        views = float_ops.taps(padded, kernel, stride, (1, 1), out)
        result = views[0].clone()
        for view in views[1:]:
            result = torch.maximum(result, view)
        return result

    def global_avgpool(self, x):
        return x.mean(dim=(1, 2), keepdim=True)

    def flatten(self, x):
        return x.reshape(len(x), -1)


class TorchBackend:
    """The runner's backend on torch tensors of one device (see binarynet.engine.backends).

    Model tensors are uploaded once; uint64 travels as its int64 bit pattern (torch's uint64
    has no conversions from numpy of its own). Besides CUDA devices, the tests use CPU tensors
    under TRITON_INTERPRET=1 (Triton's interpreter)."""

    kernels = _ops
    float_ops = TorchFloatOps()
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
