"""The engine ops of each module of a traced model (:mod:`.dag`): one handler per module type.

A module is handled only when its ``forward`` is the one of the class named here: a subclass
that overrides it computes something else, and is refused by name like any other module.
Binary and real convolutions / dense layers are written lazily (:class:`~.values.Value`'s
``emit``) when a batch norm is their only reader, so the batch norm folds into them.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import nn as bnn
from ..errors import ExportError
from .modules import IDENTITY, binary_weight, bn_affine, check_sign_like, \
    conv_geometry, describe, pack
from .values import Value

_PAD_MODES = {0.0: "zero", 1.0: "one", -1.0: "minus_one"}


def _pair(v) -> list:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, np.float64), dtype=np.float32)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy().copy()


def _per_channel(v: Value, values: np.ndarray) -> np.ndarray:
    """Per-channel values (torch channel order) in the engine's order of ``v``."""
    return values[v.perm] if v.perm is not None else values


def _deferred(b, node, emit, a, c, binary=False) -> Value:
    """The output of a conv / dense, written when first read (a lone batch norm reader folds
    into it: :meth:`~.dag.DagBuilder._keep`)."""
    return Value("real", b.shape(node), emit=emit, a=np.asarray(a, np.float64),
                 c=np.asarray(c, np.float64), label=node.target, node=node.name, binary=binary)


# -- convolutions and dense layers -------------------------------------------------------------
def _conv_attrs(m, path) -> dict:
    kernel, stride, padding, dilation = conv_geometry(path, m)
    return {"in_channels": m.in_channels, "out_channels": m.out_channels, "kernel": list(kernel),
            "stride": list(stride), "padding": list(padding), "dilation": list(dilation),
            "groups": m.groups}


def _conv_real(b, node, v: Value, weight: np.ndarray, bias, attrs: dict) -> Value:
    """conv_real of real ``v``; ``weight`` float64 (O, C/g, KH, KW) as torch holds it."""
    src = v

    def emit(a, c):
        w = (weight * a[:, None, None, None]).transpose(0, 2, 3, 1)  # (O, KH, KW, C/g)
        return b.op("conv_real", node.target, [b.materialize(src, node)],
                    {"weight": _f32(w), "bias": _f32(c)}, **attrs)

    return _deferred(b, node, emit, np.ones(weight.shape[0]), bias)


def _dense_real(b, node, v: Value, weight: np.ndarray, bias) -> Value:
    """dense_real of real flat ``v``; ``weight`` float64 (O, K), columns in torch's order."""
    src = v
    weight = weight[:, v.perm] if v.perm is not None else weight

    def emit(a, c):
        return b.op("dense_real", node.target, [b.materialize(src, node)],
                    {"weight": _f32(weight * a[:, None]), "bias": _f32(c)},
                    in_features=weight.shape[1], out_features=weight.shape[0])

    return _deferred(b, node, emit, np.ones(weight.shape[0]), bias)


def _check_input_shape(b, node, m, v: Value) -> None:
    conv = isinstance(m, nn.Conv2d)
    want = m.in_channels if conv else m.in_features
    if (len(v.shape) == 3) != conv or v.shape[0] != want:
        raise ExportError(f"{b.label(node)}: gets per-sample shape {v.shape}")


def _binary(b, node, m) -> Value:
    """BinaryConv2d / BinaryLinear: bconv / bdense on bits (after the layer's input quantizer),
    or a real conv / dense with +-1 weights on a real input; alpha and bias as scale/shift."""
    path, v = node.target, b.arg(node)
    _check_input_shape(b, node, m, v)
    w = binary_weight(path, m).double().numpy()
    if m.input_quantizer is not None:
        check_sign_like(m.quantized_input, f"{describe(path, m)} input_quantizer")
        v = b.sign(v, node, f"{path}.input_sign", torch_from={"quantizer_of": node.name})
    alpha = m.output_scale()
    out = w.shape[0]
    a = _np(alpha) if alpha is not None else np.ones(out)
    c = _np(m.bias) if m.bias is not None else np.zeros(out)
    conv = isinstance(m, bnn.BinaryConv2d)
    if v.kind != "bits":
        if conv and float(m.pad_value) != 0.0 and any(m.padding):
            raise ExportError(f"{b.label(node)}: pads its real-valued input with "
                              f"{m.pad_value}; the engine pads real convolutions with zeros")
        w = w * a[:, None, None, None] if conv else w * a[:, None]
        v = b.real(v, node)
        if conv:
            return _conv_real(b, node, v, w, c, _conv_attrs(m, path))
        return _dense_real(b, node, v, w, c)
    bits = v.name
    if conv:
        attrs = _conv_attrs(m, path)
        attrs["pad_mode"] = ("zero" if attrs["padding"] == [0, 0]
                             else _PAD_MODES[float(m.pad_value)])
        weight = pack(w.transpose(0, 2, 3, 1).astype(np.float32))  # (O, KH, KW, words)
        kind = "bconv"
    else:
        weight = pack((w[:, v.perm] if v.perm is not None else w).astype(np.float32))
        attrs = {"in_features": m.in_features, "out_features": m.out_features}
        kind = "bdense"

    def emit(scale, shift):
        return b.op(kind, path, [bits], {"weight": weight, "scale": _f32(scale),
                                         "shift": _f32(shift)},
                    {"kind": kind, "fan_in": int(w[0].size)}, **attrs)

    return _deferred(b, node, emit, a, c, binary=True)


def _conv2d(b, node, m) -> Value:
    v = b.arg(node)
    _check_input_shape(b, node, m, v)
    bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_channels)
    return _conv_real(b, node, b.real(v, node), _np(m.weight), bias,
                      _conv_attrs(m, node.target))


def _linear(b, node, m) -> Value:
    v = b.arg(node)
    _check_input_shape(b, node, m, v)
    bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_features)
    return _dense_real(b, node, b.real(v, node), _np(m.weight), bias)


def _blurpool(b, node, m) -> Value:
    v = b.real(b.arg(node), node)
    c = v.channels
    attrs = {"in_channels": c, "out_channels": c, "kernel": [3, 3], "stride": _pair(m.stride),
             "padding": [1, 1], "dilation": [1, 1], "groups": c}
    return _conv_real(b, node, v, _np(m.kernel), np.zeros(c), attrs)


# -- batch norm, signs, activations ------------------------------------------------------------
def _batchnorm(b, node, m) -> Value:
    v = b.arg(node)
    if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
            not m.track_running_stats or m.running_mean is None):
        raise ExportError(f"{b.label(node)}: track_running_stats=False uses batch statistics "
                          "at evaluation, which export cannot fold")
    dims = 1 if isinstance(m, (nn.BatchNorm1d, bnn.ShiftBatchNorm1d)) else 2
    if len(v.shape) != (1 if dims == 1 else 3) or m.num_features != v.channels:
        raise ExportError(f"{b.label(node)}: gets per-sample shape {v.shape}")
    a, c = bn_affine(m, m.num_features)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(c))):
        raise ExportError(f"{b.label(node)}: its parameters or running statistics give a "
                          "non-finite affine map (NaN, infinite or a negative variance)")
    return b.real(v, node).then(a, c, node.target, node.name)


def _sign(b, node, m) -> Value:
    check_sign_like(m, b.label(node))
    return b.sign(b.arg(node), node, node.target)


def _rsign(b, node, m) -> Value:
    check_sign_like(lambda x: m.quantizer(x, training=False) if m._takes_training
                    else m.quantizer(x), f"{b.label(node)} quantizer")
    v = b.arg(node)
    if v.channels != m.shift.numel():
        raise ExportError(f"{b.label(node)}: gets per-sample shape {v.shape}")
    return b.sign(v, node, node.target, shift=_np(m.shift))


def _relu(b, node, m) -> Value:
    if m.inplace:
        b.check_in_place(node)
    return b.unary("relu", b.arg(node), node)


def _prelu(b, node, v: Value, shift_in, slope, shift_out) -> Value:
    v = b.real(v, node)
    if len(slope) != v.channels:
        raise ExportError(f"{b.label(node)}: has {len(slope)} slopes for {v.channels} channels")
    tensors = {"shift_in": shift_in, "slope": slope, "shift_out": shift_out}
    return b.unary("prelu", v, node, {k: _f32(_per_channel(v, t)) for k, t in tensors.items()})


def _torch_prelu(b, node, m) -> Value:
    v = b.arg(node)
    slope = _np(m.weight)
    if slope.size == 1:
        slope = np.repeat(slope, v.channels)
    zeros = np.zeros(len(slope))
    return _prelu(b, node, v, zeros, slope, zeros)


def _rprelu(b, node, m) -> Value:
    return _prelu(b, node, b.arg(node), _np(m.shift_in), _np(m.slope), _np(m.shift_out))


# -- pooling and shapes ------------------------------------------------------------------------
def _spatial(b, node, v: Value) -> Value:
    if len(v.shape) != 3:
        raise ExportError(f"{b.label(node)}: gets per-sample shape {v.shape}; it pools "
                          "(N, C, H, W) maps")
    return v


def _avgpool(b, node, m) -> Value:
    v = b.real(_spatial(b, node, b.arg(node)), node)
    if m.divisor_override is not None:
        raise ExportError(f"{b.label(node)}: divisor_override is not supported")
    return b.unary("avgpool", v, node, kernel=_pair(m.kernel_size),
                   stride=_pair(m.stride if m.stride is not None else m.kernel_size),
                   padding=_pair(m.padding), ceil_mode=bool(m.ceil_mode),
                   count_include_pad=bool(m.count_include_pad))


def _adaptive_avgpool(b, node, m) -> Value:
    v = _spatial(b, node, b.arg(node))
    if _pair(m.output_size) != [1, 1]:
        raise ExportError(f"{b.label(node)}: only output_size 1 (global average pooling) is "
                          f"supported, got {m.output_size!r}")
    return b.unary("global_avgpool", v, node)


def _maxpool(b, node, m) -> Value:
    v = _spatial(b, node, b.arg(node))
    kernel = _pair(m.kernel_size)
    stride = _pair(m.stride if m.stride is not None else m.kernel_size)
    if _pair(m.dilation) != [1, 1] or m.return_indices:
        raise ExportError(f"{b.label(node)}: dilation and return_indices are not supported")
    if v.kind != "bits":
        return b.unary("maxpool_real", v, node, kernel=kernel, stride=stride,
                       padding=_pair(m.padding), ceil_mode=bool(m.ceil_mode))
    if _pair(m.padding) != [0, 0] or m.ceil_mode:
        raise ExportError(f"{b.label(node)}: pools binary activations; only without padding "
                          "or ceil_mode")
    name = b.op("maxpool", node.target, [v.name], {"flip": np.zeros(v.channels, bool)},
                kernel=kernel, stride=stride)
    return Value("bits", b.shape(node), name=name, node=node.name, source=node.name)


def _flatten(b, node, m) -> Value:
    if m.start_dim != 1 or m.end_dim != -1:
        raise ExportError(f"{b.label(node)}: only Flatten(start_dim=1, end_dim=-1) is supported")
    return b.flatten(b.arg(node), node)


def _identity(b, node, m) -> Value:
    return b.arg(node)


def _handlers() -> list:
    from ..models.quicknet import BlurPool

    return [(bnn.BinaryConv2d, _binary), (bnn.BinaryLinear, _binary),
            (nn.Conv2d, _conv2d), (nn.Linear, _linear), (BlurPool, _blurpool),
            (bnn.ShiftBatchNorm1d, _batchnorm), (bnn.ShiftBatchNorm2d, _batchnorm),
            (nn.BatchNorm1d, _batchnorm), (nn.BatchNorm2d, _batchnorm),
            (bnn.Sign, _sign), (bnn.RSign, _rsign), (nn.ReLU, _relu), (nn.PReLU, _torch_prelu),
            (bnn.RPReLU, _rprelu), (nn.AvgPool2d, _avgpool),
            (nn.AdaptiveAvgPool2d, _adaptive_avgpool), (nn.MaxPool2d, _maxpool),
            (nn.Flatten, _flatten)] + [(t, _identity) for t in IDENTITY]


SUPPORTED = ("BinaryConv2d", "BinaryLinear", "Conv2d", "Linear", "BatchNorm1d/2d",
             "ShiftBatchNorm1d/2d", "Sign", "RSign", "ReLU", "PReLU", "RPReLU", "AvgPool2d",
             "AdaptiveAvgPool2d(1)", "MaxPool2d", "Flatten", "BlurPool", "Dropout", "Identity")


def handle(b, node, m) -> Value:
    """The Value of module ``m`` called at ``node``; ExportError for what is not supported."""
    for cls, fn in _handlers():
        if isinstance(m, cls) and type(m).forward is cls.forward:
            return fn(b, node, m)
    raise ExportError(f"{describe(node.target, m)} is not supported by export. Supported "
                      f"modules: {', '.join(SUPPORTED)}, and modules whose forward combines "
                      "them with a + b and torch.cat")

