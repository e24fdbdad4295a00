"""Summary of a torch model: trace one sample through it, then count each layer's bits, packed
memory and MACs (rules in :mod:`binarynet.summary.costs`).

The packed figures mirror the layout of :mod:`binarynet.engine.graph` that
:func:`binarynet.export.export` writes (hidden layer: int32 threshold + bool flip per channel;
first layer: float32 bias, float32 threshold, flip and, for 8-bit input, int32 thresholds;
output layer: float64 scale and shift per class).

The later networks (docs/models.md) add: RSign (a per-channel float threshold that binarizes a
real tensor), RPReLU and other real layers (float32), binary layers scaled per output channel
(the scale folds into the next batch norm; a learned one is a 32-bit parameter), real-valued
shortcuts (average pools, 1x1 convolutions, batch norms: float32) and the adds that merge them
(a row each, no parameters).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import nn as bnn
from ..engine.graph import words
from ..engine.reference import WORD_BITS
from ..export.first_layer import border_classes
from ..export.modules import BATCHNORMS
from .costs import LayerSummary, ModelSummary

# Modules that pass the precision of their input through unchanged (max of +-1 is +-1).
_PASSTHROUGH = ("Dropout", "Dropout1d", "Dropout2d", "AlphaDropout", "Identity", "Flatten",
                "Unflatten", "MaxPool1d", "MaxPool2d")


def summarise_module(model, input_shape, input_bits: int) -> ModelSummary:
    """Per-layer summary of a torch model fed one sample of ``input_shape`` (inferred from the
    model when None) at ``input_bits`` precision."""
    shape = _infer_input_shape(model) if input_shape is None else tuple(int(s) for s in input_shape)
    layers = _Counter(_trace(model, shape), shape, input_bits).rows()
    return ModelSummary(source=type(model).__name__, input_shape=shape, input_bits=input_bits,
                        layers=layers)


def _is_passthrough(module) -> bool:
    return type(module).__name__ in _PASSTHROUGH


def _is_merge(module) -> bool:
    """A module that adds a real-valued shortcut (nn.Residual, ReActNet-A's doubled 1x1)."""
    return isinstance(module, bnn.ShortcutMerge)


def _is_folded(module) -> bool:
    """A batch norm or sign: what export folds into the binary layer before it."""
    return isinstance(module, (*BATCHNORMS, bnn.Sign))


def _float_tensors(module) -> int:
    """Floating-point parameters and buffers held directly by module (not its children)."""
    tensors = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
    return sum(t.numel() for t in tensors if t.is_floating_point())


def _packed_weight_bits(module, first: bool) -> int:
    """Bits of a binary layer's packed weight, laid out as the engine stores it.

    Dense (O, K): O rows of ceil(K/64) words. Conv with binary input: channels are packed per
    tap (NHWC), O*kh*kw rows of ceil((C/g)/64) words. First conv (real-valued image input):
    whole (kh, kw, c) patches packed, O rows of ceil(kh*kw*C/g/64) words.
    """
    shape = tuple(module.weight.shape)
    if len(shape) == 2:
        return shape[0] * words(shape[1]) * WORD_BITS
    if first:
        return shape[0] * words(math.prod(shape[1:])) * WORD_BITS
    return shape[0] * math.prod(shape[2:]) * words(shape[1]) * WORD_BITS


def _first_threshold_bits(module, input_shape: tuple, out_shape: tuple) -> int:
    """Bits of the integer thresholds of a first layer fed with 8-bit images: one int32 per
    output unit (dense), or per (row class, column class, channel) plus the int32 class index
    of every output row and column (conv)."""
    if len(out_shape) == 1:
        return 32 * out_shape[0]
    _, height, width = input_shape
    rows = border_classes(height, module.kernel_size[0], module.stride[0], module.padding[0],
                          module.dilation[0])[1]
    cols = border_classes(width, module.kernel_size[1], module.stride[1], module.padding[1],
                          module.dilation[1])[1]
    return 32 * (len(rows) * len(cols) * out_shape[0] + out_shape[1] + out_shape[2])


def _infer_input_shape(model) -> tuple:
    for attr in ("input_shape", "in_shape"):
        shape = getattr(model, attr, None)
        if isinstance(shape, (tuple, list)) and all(isinstance(s, int) for s in shape):
            return tuple(shape)
    for module in model.modules():
        if next(module.children(), None) is not None or _is_passthrough(module):
            continue
        if hasattr(module, "in_features"):
            return (int(module.in_features),)
        break
    raise ValueError(f"summary(): cannot infer the input shape of {type(model).__name__}; "
                     "pass input_shape=(C, H, W) (one sample, without the batch axis; "
                     "CLI: --input-shape C,H,W)")


def _trace(model, input_shape: tuple) -> list:
    """Run one zero sample through model (eval, no grad) and record, in call order, each
    leaf module (or module with its own tensors, or adding a shortcut) as (name, module, output
    shape, input key, output key). The keys name tensors, so that a module reading the output
    of one that ran several records earlier (parallel branches) knows its input's precision."""
    names = {module: name for name, module in model.named_modules()}
    records = []
    seen = {}  # id(tensor) -> key; the tensors are kept alive so that ids are not reused
    alive = []

    def key(tensor):
        if not isinstance(tensor, torch.Tensor):
            return None
        if id(tensor) not in seen:
            seen[id(tensor)] = len(alive)
            alive.append(tensor)
        return seen[id(tensor)]

    def record(module, inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        records.append((names[module] or type(module).__name__, module, tuple(out.shape[1:]),
                        key(inputs[0]) if inputs else None, key(out)))

    watched = [m for m in model.modules()  # (an identity shortcut does nothing: no row)
               if (next(m.children(), None) is None and not isinstance(m, nn.Identity))
               or _float_tensors(m) or _is_merge(m)]
    hooks = [m.register_forward_hook(record) for m in watched]
    modes = {m: m.training for m in model.modules()}
    reference = next(model.parameters(), None)
    model.eval()
    try:
        x = torch.zeros((1, *input_shape),
                        dtype=reference.dtype if reference is not None else torch.float32,
                        device=reference.device if reference is not None else "cpu")
        with torch.no_grad():
            model(x)
    except (RuntimeError, ValueError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"summary(): {type(model).__name__} does not accept one sample of "
                         f"shape {tuple(input_shape)}: {reason}") from exc
    finally:
        for hook in hooks:
            hook.remove()
        for module, mode in modes.items():
            module.train(mode)
    return records


def _next_index(records: list, start: int, step: int, skip) -> int | None:
    i = start + step
    while 0 <= i < len(records) and skip(records[i][1]):
        i += step
    return i if 0 <= i < len(records) else None


def _add_note(row: LayerSummary, text: str) -> None:
    row.note = f"{row.note}, {text}" if row.note else text


class _Counter:
    """Counts the traced records in call order, following the precision of the activation."""

    def __init__(self, records: list, input_shape: tuple, input_bits: int):
        self.records, self.input_shape, self.input_bits = records, input_shape, input_bits
        self.bits = input_bits  # precision of the current activation
        self.on_image = True  # no layer has transformed the input yet
        self.first_layers = set()  # indices of binary layers fed with the real-valued image

    def rows(self) -> list:
        layers = []
        bits_of = {}  # tensor key -> precision of that tensor
        for i, (name, module, out_shape, in_key, out_key) in enumerate(self.records):
            self.bits = bits_of.get(in_key, self.bits)
            row = LayerSummary(name=name, kind=type(module).__name__, input_bits=self.bits,
                               output_shape=out_shape)
            if isinstance(module, bnn.BinaryLayer):
                self._binary_layer(i, row, module)
            elif _is_folded(module):
                self._folded(i, row, module)
            elif isinstance(module, bnn.RSign):  # a float threshold per channel -> bits
                row.float_params = _float_tensors(module)
                row.packed_bits, row.note = row.float_params * 32, "-> thresholds"
                self.bits = 1
            elif _is_merge(module):
                row.note = "+ real shortcut"
                self.bits = 32
            elif not _is_passthrough(module):  # a float layer
                floats = _float_tensors(module)
                row.float_params, row.packed_bits = floats, floats * 32
                weight = getattr(module, "weight", None)
                if weight is not None and weight.dim() >= 2:  # nn.Linear / nn.Conv*d in float
                    row.multibit_macs = math.prod(out_shape) * math.prod(weight.shape[1:])
                self.bits = 32
            # (a max-pool of thresholded bits reuses its conv's flip flags: no own tensor)
            if not _is_passthrough(module):
                self.on_image = False
            row.float32_bits = (row.binary_params + row.float_params) * 32
            bits_of[out_key] = self.bits
            layers.append(row)
        return layers

    def _binary_layer(self, i: int, row: LayerSummary, module) -> None:
        row.input_bits = 1 if module.input_quantizer is not None else self.bits
        weight = module.weight
        macs = math.prod(row.output_shape) * math.prod(weight.shape[1:])
        self.bits = 32  # integer sums (float32 in torch)
        if module.weight_quantizer is None:  # a float layer in binary clothing
            row.float_params = _float_tensors(module)
            row.packed_bits, row.multibit_macs = row.float_params * 32, macs
            return
        bias = module.bias.numel() if module.bias is not None else 0
        row.binary_params = weight.numel()
        row.float_params = _float_tensors(module) - weight.numel()  # bias, learned scale
        first = self.on_image and module.input_quantizer is None
        row.packed_bits = _packed_weight_bits(module, first)
        if module.input_quantizer is not None:
            row.note = "binarizes its input"
            if self.on_image and self.input_bits == 8:  # per-channel uint8 thresholds (int16)
                row.packed_bits += 16 * (self.input_shape[0] if len(self.input_shape) == 3 else 1)
        if module.scale is not None:  # alpha folds into the next batch norm: nothing stored
            _add_note(row, f"scale {module.scale}")
        if row.input_bits == 1:
            row.binary_macs = macs
        else:
            row.multibit_macs = macs
        if first:
            self.first_layers.add(i)
            row.packed_bits += bias * 32  # kept as float32 (exact real-valued sum)
        after = _next_index(self.records, i, +1, _is_passthrough)
        if after is None:
            # the output: logits = scale * s + shift, float64 per unit
            row.packed_bits += weight.shape[0] * 2 * 64
            _add_note(row, "-> scale, shift")
        # (followed by a real op such as a ReLU, the exact integer sums go on: nothing stored)

    def _folded(self, i: int, row: LayerSummary, module) -> None:
        """A batch norm or sign: folded into the thresholds (or the output's scale and shift)
        of the binary layer before it, else kept as float32."""
        records = self.records
        sign = isinstance(module, bnn.Sign)
        before = _next_index(records, i, -1, _is_passthrough)
        nxt = _next_index(records, i, +1, lambda m: _is_passthrough(m) and
                          not type(m).__name__.startswith("MaxPool"))
        then_sign = sign or (nxt is not None and isinstance(records[nxt][1], bnn.Sign))
        row.float_params = _float_tensors(module)
        channels = row.output_shape[0]
        self.bits = 1 if sign else 32
        if before is None:
            row.packed_bits = 0 if sign else row.float_params * 32
        elif sign and isinstance(records[before][1], BATCHNORMS):
            pass  # the batch norm before it already became the threshold
        elif isinstance(records[before][1], bnn.BinaryLayer) and then_sign:
            row.packed_bits, row.note = channels * (32 + 8), "-> thresholds"  # threshold + flip
            if before in self.first_layers and self.input_bits == 8:
                row.packed_bits += _first_threshold_bits(records[before][1], self.input_shape,
                                                         records[before][2])
        elif isinstance(records[before][1], bnn.BinaryLayer):
            row.packed_bits, row.note = channels * 2 * 64, "-> scale, shift"
        elif not sign:
            row.packed_bits = row.float_params * 32
