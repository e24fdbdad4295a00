"""Summary of a packed model (a ``PackedModel`` or a ``.bnn`` file): exact tensor bytes per
engine op, the header and the file size. Torch-free."""
from __future__ import annotations

import math
import os

from ..engine import format as file_format
from ..engine import graph as packed_graph
from .costs import LayerSummary, ModelSummary

_WEIGHTED_OPS = ("first_dense", "first_conv", "dense", "conv", "dense_logits", "bconv", "bdense",
                 "conv_real", "dense_real")
_REAL_WEIGHT_OPS = ("conv_real", "dense_real")  # float32 weights
# Ops of format 3 that compute one float operation per output element (pools: per window tap).
_ELEMENTWISE_OPS = ("input_float", "sign", "scale_shift", "relu", "prelu", "add")
_WINDOW_OPS = ("avgpool", "maxpool_real")
# Ops whose output is the real-valued stream (their readers take 32-bit input).
_REAL_OUTPUT_OPS = ("input_float", "conv_real", "dense_real", "bconv", "bdense", "scale_shift",
                    "relu", "prelu", "add", "concat", "avgpool", "global_avgpool", "maxpool_real")


def _torch_order(shape: tuple) -> tuple:
    """An engine activation shape (bits or float) in the torch model's order: NHWC -> (C, H, W)."""
    return (shape[2], shape[0], shape[1]) if len(shape) == 3 else tuple(shape)


def _fan_in(op: dict) -> int:
    if "in_features" in op:
        return op["in_features"]
    return op["kernel"][0] * op["kernel"][1] * op["in_channels"] // op["groups"]


def _count_weighted(row: LayerSummary, op: dict, out_shape: tuple, bits: int) -> None:
    """Parameters and MACs of an op with weights (binary or, for conv_real / dense_real, float)."""
    o = op.get("out_features", op.get("out_channels"))
    fan_in = _fan_in(op)
    macs = math.prod(out_shape) * fan_in
    if op["op"] in _REAL_WEIGHT_OPS:
        row.float_params = o * fan_in + o  # float32 weights and bias
    else:
        row.binary_params = o * fan_in
        row.float_params = 5 * o  # float bias + gamma, beta, mean, variance
    if bits == 1 and op["op"] not in _REAL_WEIGHT_OPS:
        row.binary_macs = macs
    else:
        row.multibit_macs = macs


def _count_elementwise(row: LayerSummary, op: dict, out_shape: tuple, in_shape: tuple,
                       packed) -> None:
    """Float operations per sample of the real stream's elementwise and pooling ops; their
    per-channel float tensors count as 32-bit parameters."""
    kind = op["op"]
    if kind in _ELEMENTWISE_OPS:
        row.elementwise_ops = math.prod(out_shape)
    elif kind in _WINDOW_OPS:
        row.elementwise_ops = math.prod(out_shape) * op["kernel"][0] * op["kernel"][1]
    elif kind == "global_avgpool":
        row.elementwise_ops = math.prod(in_shape)
    row.float_params = sum(packed.tensors[n].size for n in op["tensors"].values()
                           if packed.tensors[n].dtype.kind == "f")


def summarise_packed(packed, input_bits: int | None, file_path: str | None = None) -> ModelSummary:
    """Per-op summary of a ``PackedModel`` (read from ``file_path``, if given).

    The float32 column is the float network the model stands for: every weight plus, per
    output channel, the float bias and four batch-norm values (gamma, beta, mean, variance),
    as float32; the real stream's per-channel tensors (thresholds, scales, shifts, slopes) as
    they are. Format-3 graphs (a DAG) read each op's input by name; the elementwise column
    counts the real stream's float operations (adds, scales, PReLUs, sign comparisons, pooling).
    """
    graph = packed.graph
    if input_bits is None:
        input_bits = 8 if packed_graph.integer_first_layer(graph) else 32
    values = {"input": (input_bits, tuple(graph["input"]["shape"]))}  # name -> (bits, shape)
    previous = "input"
    layers, seen = [], set()
    for op, (_, out_shape) in zip(packed.ops, packed.activations):
        bits, in_shape = values[(op.get("inputs") or [previous])[0]]
        names = [n for n in op["tensors"].values() if n not in seen]
        seen.update(names)
        row = LayerSummary(name=op["name"], kind=op["op"], input_bits=bits,
                           output_shape=_torch_order(out_shape),
                           packed_bits=8 * sum(packed.tensors[n].nbytes for n in names))
        if op["op"] in _WEIGHTED_OPS:
            _count_weighted(row, op, out_shape, bits)
        elif op["op"] != "binarize_input":
            _count_elementwise(row, op, out_shape, in_shape, packed)
        if op["op"] in _REAL_OUTPUT_OPS:
            bits = 32
        elif op["op"] in _WEIGHTED_OPS or op["op"] in ("binarize_input", "sign"):
            bits = 1
        row.float32_bits = (row.binary_params + row.float_params) * 32
        layers.append(row)
        values[op["name"]] = (bits, tuple(out_shape))
        previous = op["name"]
    header = file_format.header_size(packed.to_bytes())
    file_bytes = os.path.getsize(file_path) if file_path else packed.nbytes + header
    source = os.path.basename(file_path) if file_path else "PackedModel"
    return ModelSummary(source=source, input_shape=tuple(graph["input"]["shape"]),
                        input_bits=input_bits, layers=layers, file_bytes=file_bytes,
                        header_bytes=header)
