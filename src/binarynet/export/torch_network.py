"""``to_torch``: a packed model back as a plain float torch network computing the same function.

Each BatchNorm is built from a threshold (mean = t -+ 1/2, gamma = +-1, unit scale), so hidden
decisions equal the engine's; the first layer's float decisions compare its float32
pre-activation with v*, as the engine's float path does; logits = scale * s + shift in float32.
Used as the float baseline of speed comparisons (same network, float arithmetic) and as a
cross-check of the engine.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import nn as bnn
from ..engine import kernels
from ..engine.model import PackedModel
from .torch_dag import DAG_OPS, DagNetwork

_PAD_VALUES = {"zero": 0.0, "one": 1.0, "minus_one": -1.0}


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array))  # a writable copy (loaded tensors are read-only)


def _unpack(packed: PackedModel, op, role, k) -> torch.Tensor:
    words = np.ascontiguousarray(packed.tensors[op["tensors"][role]])
    return torch.from_numpy(kernels.unpack(words, k).astype(np.float32))


def _unit_bn(features: int) -> nn.BatchNorm1d:
    """An eval BatchNorm1d whose normalisation is exactly 1/sqrt(var + eps) = 1.

    Some torch releases (2.11) reject eps = 0, so var = 1 - 2^-24 and eps = 2^-24: both exact in float32,
    and their sum is exactly 1 in float32 and float64, so y = (x - mean) * weight + bias.
    """
    bn_ = nn.BatchNorm1d(features, eps=2.0 ** -24)
    with torch.no_grad():
        bn_.running_var.fill_(1.0 - 2.0 ** -24)
    return bn_


def _threshold_bn(packed: PackedModel, op) -> nn.BatchNorm1d:
    """BatchNorm (eval) whose sign is +1 iff x >= t (x <= t where flip): exact on integer x.

    y = (x - mean) * gamma with mean = t -+ offset, gamma = +-1 and unit scale (see _unit_bn);
    t is the first layer's float boundary ``vthresh`` (offset 0) or a hidden layer's integer
    ``thresh`` (offset 1/2, halfway between integer sums).
    """
    first = op["op"].startswith("first_")
    thresh = _tensor(packed.tensors[op["tensors"]["vthresh" if first else "thresh"]]).double()
    flip = _tensor(packed.tensors[op["tensors"]["flip"]])
    offset = 0.0 if first else 0.5
    bn_ = _unit_bn(len(thresh))
    with torch.no_grad():
        bn_.running_mean.copy_(torch.where(flip, thresh + offset, thresh - offset))
        bn_.weight.copy_(torch.where(flip, -1.0, 1.0))
        bn_.bias.zero_()
    return bn_


def _as_2d(bn1d: nn.BatchNorm1d) -> nn.BatchNorm2d:
    bn2d = nn.BatchNorm2d(bn1d.num_features, eps=bn1d.eps)
    bn2d.load_state_dict(bn1d.state_dict())
    return bn2d


def _dense_layers(packed: PackedModel, i: int) -> list:
    """Modules of a first_dense / dense / dense_logits op."""
    op = packed.ops[i]
    kind, k, out = op["op"], op["in_features"], op["out_features"]
    first = kind == "first_dense"
    linear = nn.Linear(k, out, bias=first)
    with torch.no_grad():
        w = _unpack(packed, op, "weight", k)
        if not first and i and packed.ops[i - 1]["op"] == "flatten":
            h, wd, c = packed.activations[i - 2][1]  # engine columns are NHWC
            w = w.reshape(out, h, wd, c).permute(0, 3, 1, 2).reshape(out, k)
        linear.weight.copy_(w)
        if first:
            linear.bias.copy_(_tensor(packed.tensors[op["tensors"]["bias"]]))
    layers = [nn.Flatten(), linear] if first else [linear]
    if kind == "dense" or (first and op["output"] == "bits"):
        return layers + [_threshold_bn(packed, op), bnn.Sign()]
    out_bn = _unit_bn(out)  # logits = scale * s + shift
    with torch.no_grad():
        out_bn.running_mean.zero_()
        out_bn.weight.copy_(_tensor(packed.tensors[op["tensors"]["scale"]]))
        out_bn.bias.copy_(_tensor(packed.tensors[op["tensors"]["shift"]]))
    return layers + [out_bn]


def _conv_layers(packed: PackedModel, i: int) -> list:
    """Modules of a first_conv / conv op, with its max-pool (paper order: before the BN)."""
    op = packed.ops[i]
    first = op["op"] == "first_conv"
    c, out, groups = op["in_channels"], op["out_channels"], op["groups"]
    kh, kw = op["kernel"]
    k = kh * kw * (c // groups) if first else c // groups  # a first conv packs whole patches
    w = _unpack(packed, op, "weight", k).reshape(out, kh, kw, c // groups)
    pad_value = op["pad_value"] if first else _PAD_VALUES[op["pad_mode"]]
    padding = tuple(op["padding"])
    layers = []
    if pad_value != 0.0 and any(padding):
        layers.append(nn.ConstantPad2d((padding[1], padding[1], padding[0], padding[0]),
                                       pad_value))
        padding = (0, 0)
    conv = nn.Conv2d(c, out, (kh, kw), stride=tuple(op["stride"]), padding=padding,
                     dilation=tuple(op["dilation"]), groups=groups, bias=first)
    with torch.no_grad():
        conv.weight.copy_(w.permute(0, 3, 1, 2))
        if first:
            conv.bias.copy_(_tensor(packed.tensors[op["tensors"]["bias"]]))
    layers.append(conv)
    nxt = packed.ops[i + 1] if i + 1 < len(packed.ops) else None
    if nxt is not None and nxt["op"] == "maxpool":
        layers.append(nn.MaxPool2d(tuple(nxt["kernel"]), tuple(nxt["stride"])))
    return layers + [_as_2d(_threshold_bn(packed, op)), bnn.Sign()]


def to_torch(packed: PackedModel) -> nn.Module:
    """The packed model as a plain float torch network (eval mode): Linear/Conv2d with the +-1
    weights as float32, BatchNorm and Sign (or MaxPool2d before the BatchNorm, paper order).

    The network takes normalised float input (N, *input_shape); see the module doc for how
    each op becomes modules. A format-3 DAG (the traced export's graphs) becomes a
    :class:`~.torch_dag.DagNetwork` running the same ops.
    """
    if any("inputs" in op or op["op"] in DAG_OPS for op in packed.ops):
        return DagNetwork(packed).eval()
    layers: list = []
    for i, op in enumerate(packed.ops):
        kind = op["op"]
        if kind == "binarize_input":
            layers.append(bnn.Sign())
        elif kind in ("first_dense", "dense", "dense_logits"):
            layers += _dense_layers(packed, i)
        elif kind in ("first_conv", "conv"):
            layers += _conv_layers(packed, i)
        elif kind == "maxpool":
            if packed.ops[i - 1]["op"] not in ("first_conv", "conv"):  # pooling +-1 maps
                layers.append(nn.MaxPool2d(tuple(op["kernel"]), tuple(op["stride"])))
        elif kind == "flatten":
            layers.append(nn.Flatten())
    return nn.Sequential(*layers).eval()
