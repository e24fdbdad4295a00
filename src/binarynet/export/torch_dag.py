"""``to_torch`` of a format-3 DAG model: a torch module running the same graph in float32.

Each op becomes a torch module (convolutions and dense layers with the +-1 or float32 weights,
per-channel affine maps, signs as +-1 thresholds) and :class:`DagNetwork` runs them in the
graph's order, reading each op's inputs by name. Activations are NCHW as in training; a
flatten takes the engine's NHWC order, the order the following dense layer's columns are in.
Used as the float contender of speed comparisons and as a cross-check of the engine.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine import kernels

_PAD_VALUES = {"zero": 0.0, "one": 1.0, "minus_one": -1.0}


def _t(array) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32))


class _Channel(nn.Module):
    """Per-channel tensors viewed along dimension 1 of (N, C, H, W) or (N, K)."""

    def __init__(self, **tensors):
        super().__init__()
        for name, value in tensors.items():
            self.register_buffer(name, _t(value))

    @staticmethod
    def view(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, *([1] * (x.dim() - 2)))


class _ScaleShift(_Channel):
    def forward(self, x):
        return x * self.view(self.scale, x) + self.view(self.shift, x)


class _PReLU(_Channel):
    def forward(self, x):
        z = x + self.view(self.shift_in, x)
        return torch.where(z > 0, z, self.view(self.slope, x) * z) + self.view(self.shift_out, x)


class _Sign(nn.Module):
    def __init__(self, thresh, flip):
        super().__init__()
        self.register_buffer("thresh", torch.from_numpy(np.array(thresh, np.float32)))
        self.register_buffer("flip", torch.from_numpy(np.array(flip, bool)))

    def forward(self, x):
        t, f = _Channel.view(self.thresh, x), _Channel.view(self.flip, x)
        return torch.where(torch.where(f, x <= t, x >= t), 1.0, -1.0)


class _Binary(nn.Module):
    """A binary conv / dense (+-1 weights, pad value) followed by y = s * scale + shift."""

    def __init__(self, layer: nn.Module, pad, scale, shift):
        super().__init__()
        self.layer, self.pad = layer, pad
        self.affine = _ScaleShift(scale=scale, shift=shift)

    def forward(self, x):
        if self.pad is not None:
            x = F.pad(x, self.pad[0], value=self.pad[1])
        return self.affine(self.layer(x))


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def _flatten_nhwc(x):
    return x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x


def _conv(packed, op, weight: torch.Tensor, bias, padding) -> nn.Conv2d:
    conv = nn.Conv2d(op["in_channels"], op["out_channels"], tuple(op["kernel"]),
                     stride=tuple(op["stride"]), padding=padding,
                     dilation=tuple(op["dilation"]), groups=op["groups"], bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(weight.permute(0, 3, 1, 2))  # (O, KH, KW, C/g) -> torch's order
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def _binary(packed, op) -> nn.Module:
    tensors = {role: packed.tensors[name] for role, name in op["tensors"].items()}
    if op["op"] == "bdense":
        k = op["in_features"]
        layer = nn.Linear(k, op["out_features"], bias=False)
        with torch.no_grad():
            layer.weight.copy_(_t(kernels.unpack(tensors["weight"], k)))
        return _Binary(layer, None, tensors["scale"], tensors["shift"])
    k = op["in_channels"] // op["groups"]
    weight = _t(kernels.unpack(np.ascontiguousarray(tensors["weight"]), k))
    padding, value = tuple(op["padding"]), _PAD_VALUES[op["pad_mode"]]
    pad = None
    if value != 0.0 and any(padding):
        pad, padding = ((padding[1], padding[1], padding[0], padding[0]), value), (0, 0)
    return _Binary(_conv(packed, op, weight, None, padding), pad, tensors["scale"],
                   tensors["shift"])


def _module(packed, op) -> nn.Module:
    """The torch module computing ``op``."""
    kind = op["op"]
    tensors = {role: packed.tensors[name] for role, name in op["tensors"].items()}
    if kind in ("bconv", "bdense"):
        return _binary(packed, op)
    if kind == "conv_real":
        return _conv(packed, op, _t(tensors["weight"]), _t(tensors["bias"]), tuple(op["padding"]))
    if kind == "dense_real":
        layer = nn.Linear(op["in_features"], op["out_features"])
        with torch.no_grad():
            layer.weight.copy_(_t(tensors["weight"]))
            layer.bias.copy_(_t(tensors["bias"]))
        return layer
    if kind == "sign":
        return _Sign(tensors["thresh"], tensors["flip"])
    if kind == "scale_shift":
        return _ScaleShift(**tensors)
    if kind == "prelu":
        return _PReLU(**tensors)
    if kind in ("avgpool", "maxpool_real", "maxpool"):
        geometry = dict(kernel_size=tuple(op["kernel"]), stride=tuple(op["stride"]),
                        padding=tuple(op.get("padding", (0, 0))),
                        ceil_mode=op.get("ceil_mode", False))
        if kind == "avgpool":
            return nn.AvgPool2d(count_include_pad=op["count_include_pad"], **geometry)
        return nn.MaxPool2d(**geometry)  # max of +-1 maps is the OR of their bits
    simple = {"input_float": nn.Identity(), "relu": nn.ReLU(), "add": _Lambda(torch.add),
              "concat": _Lambda(lambda *xs: torch.cat(xs, 1)),
              "global_avgpool": nn.AdaptiveAvgPool2d(1), "flatten": _Lambda(_flatten_nhwc)}
    if kind not in simple:
        raise ValueError(f"to_torch: op {kind!r} ({op['name']!r}) has no torch form in a DAG")
    return simple[kind]


class DagNetwork(nn.Module):
    """A packed format-3 graph as a torch module: float32 input (N, *input_shape), logits out."""

    def __init__(self, packed):
        super().__init__()
        self.steps = nn.ModuleList(_module(packed, op) for op in packed.ops)
        names = ["input"] + [op["name"] for op in packed.ops]
        index = {name: i for i, name in enumerate(names)}  # value 0: the input
        self.reads = [[index[n] for n in op.get("inputs") or [names[i]]]
                      for i, op in enumerate(packed.ops)]

    def forward(self, x):
        values = [x]
        for step, reads in zip(self.steps, self.reads):
            values.append(step(*(values[i] for i in reads)))
        return values[-1]


DAG_OPS = ("input_float", "conv_real", "dense_real", "bconv", "bdense", "sign", "scale_shift",
           "relu", "prelu", "add", "concat", "avgpool", "global_avgpool", "maxpool_real")
