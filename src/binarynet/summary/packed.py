"""Summary of a packed model (a ``PackedModel`` or a ``.bnn`` file): exact tensor bytes per
engine op, the header and the file size. Torch-free."""
from __future__ import annotations

import math
import os

from ..engine import format as file_format
from ..engine import graph as packed_graph
from .costs import LayerSummary, ModelSummary

_WEIGHTED_OPS = ("first_dense", "first_conv", "dense", "dense_logits", "conv")


def _torch_order(kind: str, shape: tuple) -> tuple:
    """An engine activation shape in the torch model's order: NHWC bits -> (C, H, W)."""
    return (shape[2], shape[0], shape[1]) if kind == "bits" and len(shape) == 3 else tuple(shape)


def summarise_packed(packed, input_bits: int | None, file_path: str | None = None) -> ModelSummary:
    """Per-op summary of a ``PackedModel`` (read from ``file_path``, if given).

    The float32 column is the float network the model stands for: every weight plus, per
    output channel, the float bias and four batch-norm values (gamma, beta, mean, variance),
    as float32.
    """
    graph = packed.graph
    if input_bits is None:
        input_bits = 8 if packed_graph.integer_first_layer(graph) else 32
    bits = input_bits
    layers, seen = [], set()
    for op, (kind, out_shape) in zip(packed.ops, packed.activations):
        names = [n for n in op["tensors"].values() if n not in seen]
        seen.update(names)
        row = LayerSummary(name=op["name"], kind=op["op"], input_bits=bits,
                           output_shape=_torch_order(kind, out_shape),
                           packed_bits=8 * sum(packed.tensors[n].nbytes for n in names))
        if op["op"] in _WEIGHTED_OPS:
            o = op.get("out_features", op.get("out_channels"))
            if "in_features" in op:
                fan_in = op["in_features"]
            else:
                fan_in = op["kernel"][0] * op["kernel"][1] * op["in_channels"] // op["groups"]
            macs = math.prod(out_shape) * fan_in
            row.binary_params = o * fan_in
            row.float_params = 5 * o  # float bias + gamma, beta, mean, variance
            if bits == 1:
                row.binary_macs = macs
            else:
                row.multibit_macs = macs
            bits = 1
        elif op["op"] == "binarize_input":
            bits = 1
        row.float32_bits = (row.binary_params + row.float_params) * 32
        layers.append(row)
    header = file_format.header_size(packed.to_bytes())
    file_bytes = os.path.getsize(file_path) if file_path else packed.nbytes + header
    source = os.path.basename(file_path) if file_path else "PackedModel"
    return ModelSummary(source=source, input_shape=tuple(graph["input"]["shape"]),
                        input_bits=input_bits, layers=layers, file_bytes=file_bytes,
                        header_bytes=header)
