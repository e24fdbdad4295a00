"""The walk over a model's modules: a small state machine that groups them into blocks.

States: ``input`` (real-valued input, before the first binary layer), ``block`` (a binary
layer's integer sums are pending: max-pool and batch norm may follow until a binarization
closes the block) and ``bits`` (+-1 activations: flatten, max-pool, the next binary layer).
Each closed block becomes engine ops (:mod:`.layers`); anything out of this order is refused
with an :class:`ExportError` naming the module and what is supported.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import nn as bnn
from ..errors import ExportError
from .inputs import to_float
from .layers import Block, close_hidden, close_output
from .modules import (BATCHNORMS, IDENTITY, SUPPORTED_MODULES, check_bn, check_sign_like,
                      describe, flatten_size, pool_geometry)


def walk(writer, leaves: list) -> None:
    """Write the engine ops of ``leaves`` (``[(path, module)]`` in call order) into ``writer``."""
    _Walk(writer).run(leaves)


def _unsupported(path, m, where):
    raise ExportError(f"{describe(path, m)} is not supported {where}. Supported: "
                      f"{', '.join(SUPPORTED_MODULES)} in the order Binary layer -> "
                      "[MaxPool2d] -> [BatchNorm] -> Sign, ending with BinaryLinear -> "
                      "[BatchNorm1d]")


def _check_input_quantizer(path, m) -> None:
    if m.input_quantizer is not None:
        check_sign_like(m.quantized_input, f"{describe(path, m)} input_quantizer")


class _Walk:
    def __init__(self, writer):
        self.writer = writer
        self.shape = writer.in_shape  # per-sample shape of the current activation
        self.state = "input"
        self.input_binarized = False  # a Sign module binarized the model's input
        self.block = None  # the open block
        self.flat_source = None  # (C, H, W) of bits that a flatten turned into a vector

    def run(self, leaves) -> None:
        step = {"input": self._on_input, "block": self._in_block, "bits": self._on_bits}
        for path, m in leaves:
            if not isinstance(m, IDENTITY):
                step[self.state](path, m)
        if self.state == "input":
            raise ExportError("the model has no BinaryLinear or BinaryConv2d layer to export")
        if self.state == "bits":
            raise ExportError("the model ends with binary activations; its last layer must be a "
                              "BinaryLinear (optionally followed by BatchNorm1d) giving the logits")
        close_output(self.writer, self.block)

    def _on_input(self, path, m) -> None:
        if isinstance(m, nn.Flatten):
            self.shape = flatten_size(path, m, self.shape)
        elif isinstance(m, bnn.Sign):
            check_sign_like(m, describe(path, m))
            self.input_binarized = True
        elif isinstance(m, bnn.BinaryLayer):
            binary = self.input_binarized or m.input_quantizer is not None
            if binary:
                _check_input_quantizer(path, m)
                self._binarize_input(path)
            self._open(path, m, first=not binary)
        else:
            _unsupported(path, m, "before the first binary layer")

    def _in_block(self, path, m) -> None:
        block = self.block
        if isinstance(m, nn.MaxPool2d):
            if block.pool is not None or block.bn is not None or not block.is_conv:
                _unsupported(path, m, "here (one max-pool, after a conv, before BN)")
            block.pool = (path, m)
        elif isinstance(m, BATCHNORMS):
            if block.bn is not None:
                _unsupported(path, m, "after another batch norm")
            check_bn(path, m, block)
            block.bn = (path, m)
        elif isinstance(m, bnn.Sign):
            check_sign_like(m, describe(path, m))
            block.binarize, block.binarize_path = m, path
            self.shape = close_hidden(self.writer, block)
            self.state, self.flat_source = "bits", None
        elif isinstance(m, bnn.BinaryLayer):
            if m.input_quantizer is None:
                raise ExportError(
                    f"{describe(path, m)} receives the real-valued output of {block.path!r} (no "
                    "Sign or input_quantizer in between); only the first binary layer may take "
                    "real-valued input")
            _check_input_quantizer(path, m)
            block.binarize, block.binarize_path = m.quantized_input, path
            self.shape = close_hidden(self.writer, block)
            self.flat_source = None
            self._open(path, m, first=False)
        else:
            _unsupported(path, m, f"after binary layer {block.path!r}")

    def _on_bits(self, path, m) -> None:
        if isinstance(m, nn.Flatten):
            new_shape = flatten_size(path, m, self.shape)
            if len(self.shape) == 3:
                self.writer.append({"op": "flatten", "name": path, "tensors": {}})
                self.flat_source = self.shape
            self.shape = new_shape
        elif isinstance(m, nn.MaxPool2d):
            self._bit_pool(path, m)
        elif isinstance(m, bnn.Sign):
            check_sign_like(m, describe(path, m))  # sign of +-1 is itself
        elif isinstance(m, bnn.BinaryLayer):
            _check_input_quantizer(path, m)
            self._open(path, m, first=False)
        else:
            _unsupported(path, m, "after a binary activation")

    def _open(self, path, m, first: bool) -> None:
        """Start the block of binary layer ``m`` on the current activation."""
        shape = self.shape
        if isinstance(m, bnn.BinaryConv2d):
            if len(shape) != 3 or shape[0] != m.in_channels:
                raise ExportError(f"{describe(path, m)}: expects (N, {m.in_channels}, H, W) "
                                  f"input, gets per-sample shape {shape}")
        elif isinstance(m, bnn.BinaryLinear):
            if len(shape) != 1 or shape[0] != m.in_features:
                raise ExportError(f"{describe(path, m)}: expects {m.in_features} input features, "
                                  f"gets per-sample shape {shape} (add an nn.Flatten before it)")
        else:
            _unsupported(path, m, "(unknown binary layer type)")
        if getattr(m, "scale", None) is not None:  # the folding below ignores alpha: refuse
            raise ExportError(f"{describe(path, m)}: scale={m.scale!r} (per-channel weight scale) "
                              "is not supported by export yet; use scale=None for the engine")
        self.block = Block(path, m, shape, first, self.flat_source)
        self.state = "block"

    def _binarize_input(self, path) -> None:
        """Op that binarizes the model's input (the first binary layer takes +-1 input)."""
        writer = self.writer
        op = {"op": "binarize_input", "name": f"{path}.input", "tensors": {}}
        if writer.scale is not None:
            # bit = x_f >= 0 with x_f computed as the training pipeline does (inputs.to_float).
            u8 = torch.arange(256, dtype=torch.uint8)[None, :].expand(len(writer.scale), -1)
            table = to_float(u8.T.contiguous(), writer.scale, writer.offset).T.numpy()
            t = []
            for xf in table:
                ok = np.nonzero(xf >= 0)[0]
                t.append(int(ok[0]) if ok.size else 256)
            op["tensors"]["u8_threshold"] = writer.add(f"{path}.input.u8_threshold",
                                                       np.array(t, dtype=np.int16))
        writer.append(op)
        self.flat_source = None
        if len(writer.in_shape) == 3 and len(self.shape) == 1:
            # the model flattened its input before binarizing it: flatten the NHWC bits
            writer.append({"op": "flatten", "name": f"{path}.input.flatten", "tensors": {}})
            self.flat_source = writer.in_shape

    def _bit_pool(self, path, m) -> None:
        """Max-pool of +-1 maps: an OR of bits (a flip flag of 0 per channel)."""
        if len(self.shape) != 3:
            _unsupported(path, m, "on flat activations")
        kernel, stride, shape = pool_geometry(path, m, self.shape)
        name = self.writer.add(f"{path}.flip", np.zeros(self.shape[0], dtype=bool))
        self.writer.append({"op": "maxpool", "name": path, "kernel": list(kernel),
                            "stride": list(stride), "tensors": {"flip": name}})
        self.shape = shape
