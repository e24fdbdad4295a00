"""The engine op of each block (a binary layer and what follows it up to its binarization).

Hidden blocks become ``conv`` / ``dense`` ops with integer thresholds (:mod:`.folding`), the
first block ``first_conv`` / ``first_dense`` with float and, for uint8 input, integer
thresholds (:mod:`.first_layer`), the last block ``dense_logits`` (scale and shift per class).
"""
from __future__ import annotations

import numpy as np
import torch

from .. import nn as bnn
from ..engine.graph import conv_output_size
from ..errors import ExportError
from .first_layer import boundaries, conv_thresholds, integer_thresholds
from .folding import (INT32_MAX, INT32_MIN, formula_adjustments, hidden_decisions,
                      logit_affine_error, thresholds_from_decisions)
from .modules import binary_weight, bn_affine, conv_geometry, describe, pack, pool_geometry

_PAD_MODES = {0.0: "zero", 1.0: "one", -1.0: "minus_one"}


class Block:
    """A binary layer and what follows it up to its binarization (or the end of the model)."""

    def __init__(self, path, layer, in_shape, first, flat_source):
        self.path, self.layer, self.in_shape = path, layer, in_shape
        self.first = first  # its input is the model's real-valued input (else +-1)
        self.flat_source = flat_source  # (C, H, W) when a dense layer reads flattened conv bits
        self.pool = None  # (path, MaxPool2d)
        self.bn = None  # (path, BN module)
        self.binarize = None  # callable: BN output -> +-1
        self.binarize_path = None

    @property
    def is_conv(self) -> bool:
        return isinstance(self.layer, bnn.BinaryConv2d)

    @property
    def bn_module(self):
        return self.bn[1] if self.bn else None


def _bias(layer, out: int) -> torch.Tensor:
    return (layer.bias.detach().float().clone() if layer.bias is not None
            else torch.zeros(out))


def _dense_weight(block: Block) -> np.ndarray:
    w = binary_weight(block.path, block.layer)
    if block.flat_source is not None:  # torch flattens NCHW, the engine holds NHWC bits
        c, h, wd = block.flat_source
        w = w.reshape(w.shape[0], c, h, wd).permute(0, 2, 3, 1).reshape(w.shape[0], -1)
    return w.numpy()


def _conv_output(block: Block, kernel, stride, padding, dilation) -> tuple:
    _, h, wd = block.in_shape
    ho = conv_output_size(h, kernel[0], stride[0], padding[0], dilation[0])
    wo = conv_output_size(wd, kernel[1], stride[1], padding[1], dilation[1])
    if ho < 1 or wo < 1:
        raise ExportError(f"{describe(block.path, block.layer)}: kernel does not fit the "
                          f"{h}x{wd} input")
    return ho, wo


def after_pool(writer, block: Block, shape: tuple) -> tuple:
    """The max-pool between the block's layer and its batch norm (if any), on thresholded bits:
    it reuses the layer's flip flags. Returns the shape after it."""
    if block.pool is None:
        return shape
    path, pool = block.pool
    kernel, stride, shape = pool_geometry(path, pool, shape)
    writer.append({"op": "maxpool", "name": path, "kernel": list(kernel), "stride": list(stride),
                   "tensors": {"flip": f"{block.path}.flip"}})
    return shape


def _hidden_conv(block: Block):
    """(op without tensors, (O, KH, KW, Cg) weights, fan-in, step of reachable sums, output shape)."""
    layer, path = block.layer, block.path
    kernel, stride, padding, dilation = conv_geometry(path, layer)
    out = layer.out_channels
    k = layer.in_channels // layer.groups * kernel[0] * kernel[1]
    w = binary_weight(path, layer).permute(0, 2, 3, 1).numpy()  # (O, KH, KW, Cg)
    pad_mode = "zero" if padding == (0, 0) else _PAD_MODES[float(layer.pad_value)]
    ho, wo = _conv_output(block, kernel, stride, padding, dilation)
    # zero padding: border positions sum fewer taps, so every integer in [-k, k] can occur
    step = 1 if pad_mode == "zero" and padding != (0, 0) else 2
    op = {"op": "conv", "name": path, "in_channels": layer.in_channels, "out_channels": out,
          "kernel": list(kernel), "stride": list(stride), "padding": list(padding),
          "dilation": list(dilation), "groups": layer.groups, "pad_mode": pad_mode}
    return op, w, k, step, (out, ho, wo)


def close_hidden(writer, block: Block) -> tuple:
    """Write the op of a hidden block (ending in a binarization); returns the output shape."""
    if block.first:
        return first_layer(writer, block, output="bits")
    layer, path = block.layer, block.path
    if block.is_conv:
        op, w, k, step, shape = _hidden_conv(block)
    else:
        k, out = layer.in_features, layer.out_features
        op = {"op": "dense", "name": path, "in_features": k, "out_features": out}
        w, step, shape = _dense_weight(block), 2, (out,)
    out = shape[0]
    s_values = np.arange(-k, k + 1, step, dtype=np.int64)
    bias = _bias(layer, out)
    decisions = hidden_decisions(block, s_values, bias, out)
    thresh, flip = thresholds_from_decisions(block, decisions, s_values)
    a, c = bn_affine(block.bn_module, out)
    report = {
        "kind": op["op"], "fan_in": k,
        "thresholds_adjusted": formula_adjustments(decisions, s_values, a, c,
                                                   bias.double().numpy()),
        "constant_channels": int(np.sum((thresh == INT32_MIN) | (thresh == INT32_MAX))),
        "flipped_channels": int(flip.sum()),
    }
    op["tensors"] = {"weight": writer.add(f"{path}.weight", pack(w)),
                     "thresh": writer.add(f"{path}.thresh", thresh),
                     "flip": writer.add(f"{path}.flip", flip)}
    writer.append(op, report)
    return after_pool(writer, block, shape) if block.is_conv else shape


def close_output(writer, block: Block) -> None:
    """Write the output op: logits = scale * s + shift per class."""
    layer, path = block.layer, block.path
    if block.is_conv:
        raise ExportError(f"{describe(path, layer)} is the last binary layer; the output layer "
                          "must be a BinaryLinear (optionally followed by BatchNorm1d)")
    out = layer.out_features
    writer.num_classes = out
    if block.first:
        first_layer(writer, block, output="logits")
        return
    k = layer.in_features
    bias = _bias(layer, out)
    a, c = bn_affine(block.bn_module, out)
    worst = logit_affine_error(block, k, bias, a, c)
    tensors = {"weight": writer.add(f"{path}.weight", pack(_dense_weight(block))),
               "scale": writer.add(f"{path}.scale", a),
               "shift": writer.add(f"{path}.shift", a * bias.double().numpy() + c)}
    writer.append({"op": "dense_logits", "name": path, "in_features": k, "out_features": out,
                   "tensors": tensors},
                  {"kind": "dense_logits", "fan_in": k, "logit_relative_error": worst})


def _first_conv_op(op: dict, block: Block, out: int):
    """Add the first conv's attributes to ``op``; returns (geometry, (Ho, Wo), pad value)."""
    layer = block.layer
    kernel, stride, padding, dilation = conv_geometry(block.path, layer)
    ho, wo = _conv_output(block, kernel, stride, padding, dilation)
    pad_value = float(layer.pad_value) if padding != (0, 0) else 0.0
    op.update({"op": "first_conv", "in_channels": layer.in_channels, "out_channels": out,
               "kernel": list(kernel), "stride": list(stride), "padding": list(padding),
               "dilation": list(dilation), "groups": layer.groups, "pad_value": pad_value})
    return (kernel, stride, padding, dilation, layer.groups), (ho, wo), pad_value


def _first_integer_thresholds(writer, block: Block, w, bias, v, flip, conv) -> dict:
    """The uint8 path's exact integer thresholds (and border classes of a conv): the op's
    tensors to add; ``conv`` is (geometry, pad value) or None for a dense layer."""
    path, out = block.path, w.shape[0]
    tensors = {}
    if conv is not None:
        geometry, pad_value = conv
        thresh, rows, cols = conv_thresholds(writer.scale[0], writer.offset, w, bias, v, flip,
                                             geometry, block.in_shape[1:], pad_value)
        tensors["row_class"] = writer.add(f"{path}.row_class", rows)
        tensors["col_class"] = writer.add(f"{path}.col_class", cols)
    else:
        hw = block.layer.in_features // len(writer.offset)
        wsum = w.reshape(out, len(writer.offset), hw).sum(-1).long().numpy()  # (O, C)
        thresh = integer_thresholds(writer.scale[0], writer.offset, wsum[None],
                                    np.zeros((1, out), np.int64), 0.0, bias, v, flip)[0]
    tensors["thresh"] = writer.add(f"{path}.thresh", thresh)
    return tensors


def first_layer(writer, block: Block, output: str):
    """Write the op of the first block (real-valued input); ``output`` is "bits" (a hidden
    layer: returns its output shape) or "logits" (the model's only layer: returns None)."""
    layer, path = block.layer, block.path
    w = binary_weight(path, layer)
    out = layer.out_channels if block.is_conv else layer.out_features
    bias = _bias(layer, out)
    op = {"name": path, "mode": writer.mode, "output": output}
    tensors = {"bias": writer.add(f"{path}.bias", bias.numpy())}
    conv = None
    if block.is_conv:
        geometry, (ho, wo), pad_value = _first_conv_op(op, block, out)
        conv = (geometry, pad_value)
        packed_w = w.permute(0, 2, 3, 1).reshape(out, -1).numpy()  # (kh, kw, c) patch order
    else:
        op.update({"op": "first_dense", "in_features": layer.in_features, "out_features": out})
        packed_w = w.numpy()
    tensors["weight"] = writer.add(f"{path}.weight", pack(packed_w))
    if output == "logits":
        a, c = bn_affine(block.bn_module, out)
        tensors["scale"] = writer.add(f"{path}.scale", a)
        tensors["shift"] = writer.add(f"{path}.shift", c)
        op["tensors"] = tensors
        writer.append(op, {"kind": op["op"] + "_logits"})
        return None
    v, flip = boundaries(block, out)
    tensors["vthresh"] = writer.add(f"{path}.vthresh", v)
    tensors["flip"] = writer.add(f"{path}.flip", flip)
    if writer.integer_input:
        tensors.update(_first_integer_thresholds(writer, block, w, bias, v, flip, conv))
    op["tensors"] = tensors
    writer.append(op, {"kind": op["op"], "constant_channels": int(np.sum(~np.isfinite(v))),
                       "flipped_channels": int(flip.sum()),
                       "integer_thresholds": writer.integer_input})
    return after_pool(writer, block, (out, ho, wo)) if block.is_conv else (out,)
