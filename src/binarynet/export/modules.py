"""The torch modules export understands: which ones, the checks they must pass, their geometry."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import nn as bnn
from ..engine import kernels
from ..errors import ExportError

SUPPORTED_MODULES = ("BinaryLinear", "BinaryConv2d", "MaxPool2d", "BatchNorm1d", "BatchNorm2d",
                     "ShiftBatchNorm1d", "ShiftBatchNorm2d", "Sign", "Flatten", "Dropout",
                     "Identity", "Sequential")
IDENTITY = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
BATCHNORMS = (nn.modules.batchnorm._BatchNorm, bnn.ShiftBatchNorm1d, bnn.ShiftBatchNorm2d)
_BN_1D = (nn.BatchNorm1d, bnn.ShiftBatchNorm1d)


def describe(path: str, module: nn.Module) -> str:
    """How errors name a module: its path in the model and its type."""
    return f"module {path!r} ({type(module).__name__})"


def pack(values: np.ndarray) -> np.ndarray:
    """+-1 weights -> uint64 words along the last axis (bit 1 <=> +1)."""
    return kernels.pack(np.ascontiguousarray(values, dtype=np.float32))


# The module types of the chain export (:mod:`.builder`).
CHAIN_TYPES = (bnn.BinaryLinear, bnn.BinaryConv2d, nn.MaxPool2d, *BATCHNORMS, bnn.Sign, nn.Flatten,
               *IDENTITY)


def chain_eligible(model: nn.Module):
    """``[(path, leaf)]`` of an ``nn.Sequential`` made only of :data:`CHAIN_TYPES` with no
    scaled binary layer (the chain export's models), else None."""
    if not isinstance(model, nn.Sequential):
        return None
    leaves = flatten_modules(model)
    if all(isinstance(m, CHAIN_TYPES) and getattr(m, "scale", None) is None for _, m in leaves):
        return leaves
    return None


def flatten_modules(model: nn.Module, prefix: str = "") -> list:
    """``[(path, leaf module)]`` of an ``nn.Sequential``, nested Sequentials flattened."""
    leaves = []
    for name, child in model.named_children():
        path = f"{prefix}.{name}" if prefix else name
        leaves.extend(flatten_modules(child, path) if isinstance(child, nn.Sequential)
                      else [(path, child)])
    return leaves


_PROBE = torch.tensor([-1e30, -2.0, -1.0, -0.5, -1e-30, -0.0, 0.0, 1e-30, 0.5, 1.0, 2.0, 1e30])


def check_sign_like(fn, what: str) -> None:
    """The binarization used at evaluation must be sign(x) = +1 if x >= 0 else -1."""
    try:
        out = fn(_PROBE.clone())
    except Exception as err:  # a user callable: report whatever it raised
        raise ExportError(f"{what} cannot be evaluated on a probe tensor: {err}") from None
    expected = torch.where(_PROBE >= 0, 1.0, -1.0)
    if not isinstance(out, torch.Tensor) or out.shape != _PROBE.shape or not torch.equal(
            out.float(), expected):
        raise ExportError(f"{what} does not binarize as sign(x) = +1 if x >= 0 else -1 in eval "
                          "mode (stochastic or custom quantizers cannot be exported)")


def binary_weight(path: str, layer) -> torch.Tensor:
    """The layer's eval-mode weight, which must be +-1 (float32)."""
    w = layer.quantized_weight().detach().float()
    if not torch.all((w == 1) | (w == -1)):
        raise ExportError(f"{describe(path, layer)}: weight_quantizer "
                          f"{layer.weight_quantizer_name!r} does not give +-1 weights in eval mode")
    return w


def flatten_size(path, m: nn.Flatten, shape) -> tuple:
    """Per-sample shape after ``nn.Flatten`` (only the default start_dim=1, end_dim=-1)."""
    if m.start_dim != 1 or m.end_dim != -1:
        raise ExportError(f"{describe(path, m)}: only Flatten(start_dim=1, end_dim=-1) is "
                          "supported")
    return (int(np.prod(shape)),)


def conv_geometry(path, layer):
    """``(kernel, stride, padding, dilation)`` pairs of a binary conv; padding made explicit."""
    if getattr(layer, "padding_mode", "zeros") != "zeros":
        raise ExportError(f"{describe(path, layer)}: padding_mode {layer.padding_mode!r} is not "
                          "supported (use padding with pad_value 0, +1 or -1)")
    kernel = tuple(layer.kernel_size)
    dilation = tuple(layer.dilation)
    padding = layer.padding
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        if any(t % 2 for t in total):
            raise ExportError(f"{describe(path, layer)}: padding='same' with an even kernel pads "
                              "asymmetrically, which the engine does not support")
        padding = tuple(t // 2 for t in total)
    return kernel, tuple(layer.stride), tuple(padding), dilation


def pool_geometry(path, pool, shape):
    """``(kernel, stride, output shape)`` of a MaxPool2d on a (C, H, W) map."""
    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)
    kernel = pair(pool.kernel_size)
    stride = pair(pool.stride if pool.stride is not None else pool.kernel_size)
    if pair(pool.padding) != (0, 0) or pair(pool.dilation) != (1, 1) or pool.ceil_mode \
            or pool.return_indices:
        raise ExportError(f"{describe(path, pool)}: only MaxPool2d without padding, dilation, "
                          "ceil_mode or return_indices is supported")
    c, h, w = shape
    if kernel[0] > h or kernel[1] > w:
        raise ExportError(f"{describe(path, pool)}: kernel {kernel} larger than the {h}x{w} map")
    return kernel, stride, (c, (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1)


def check_bn(path, bn, block) -> None:
    """A batch norm after ``block``'s layer must use running statistics and fit its outputs."""
    if isinstance(bn, nn.modules.batchnorm._BatchNorm) and (
            not bn.track_running_stats or bn.running_mean is None):
        raise ExportError(f"{describe(path, bn)}: track_running_stats=False uses batch statistics "
                          "at evaluation, which cannot be folded into thresholds")
    want_1d = not block.is_conv
    if isinstance(bn, _BN_1D) != want_1d:
        raise ExportError(f"{describe(path, bn)}: follows {type(block.layer).__name__} "
                          f"{block.path!r}; expected a {'1d' if want_1d else '2d'} batch norm")
    out = block.layer.out_features if not block.is_conv else block.layer.out_channels
    if bn.num_features != out:
        raise ExportError(f"{describe(path, bn)}: {bn.num_features} features, but layer "
                          f"{block.path!r} has {out} outputs")


def bn_affine(bn, channels: int):
    """(a, c) float64 per channel with BN(x) = a * x + c in eval mode (identity without BN)."""
    if bn is None:
        return np.ones(channels), np.zeros(channels)
    if isinstance(bn, (bnn.ShiftBatchNorm1d, bnn.ShiftBatchNorm2d)):
        a, c = bn.eval_affine()
        return a.double().numpy().copy(), c.double().numpy().copy()
    inv = 1.0 / torch.sqrt(bn.running_var.double() + bn.eps)
    a = inv * (bn.weight.double() if bn.weight is not None else 1.0)
    c = -bn.running_mean.double() * a + (bn.bias.double() if bn.bias is not None else 0.0)
    return a.numpy().copy(), c.numpy().copy()
