"""Model summary: what a BNN costs, layer by layer, in bits, bytes, MACs and (estimated) energy.

``summary(model_or_packed, input_shape=None)`` accepts a torch model (a trained or untrained
``nn.Module``, e.g. from ``binarynet.models``), a ``binarynet.engine.PackedModel`` or the path of
a packed ``.bnn`` file, and returns a :class:`ModelSummary`: one :class:`LayerSummary` per layer
plus totals, the float32 / packed compression ratio and an energy estimate. ``str()`` gives a
text table, ``to_markdown()`` a Markdown one (for reports), ``to_dict()`` plain JSON types.

Counting rules (the same as larq's ``lq.models.summary``, adapted to our packed engine):

- **1-bit parameters** are the binarized weights of ``BinaryLinear`` / ``BinaryConv2d``.
  Their latent float weights exist only for training.
- **32-bit parameters** are everything else: biases, batch-norm gamma/beta and running
  statistics, float layers. In the *float32* figure each costs 4 bytes.
- **Packed** memory is what the packed engine stores (the tensors of
  :mod:`binarynet.engine.graph`, as :func:`binarynet.export.export` writes them): binary
  weights as ``uint64`` words, ``ceil(K/64)`` words per output unit (K = fan-in), and each
  batch norm (with the bias of the binary layer before it) folded, as in larq's "BN fused"
  count, into per-channel thresholds: an int32 threshold and a 1-byte flip flag for hidden
  layers; a float32 bias, float32 threshold, flip and (8-bit input) int32 thresholds per
  border class for the first layer; a float64 scale and shift per class for the output
  layer. Not foldable parameters stay float32. A packed file adds a JSON header (a few KiB)
  to these tensors; the summary of a file reports both.
- **MACs** are multiply-accumulates of one sample: ``out * in`` for a dense layer and
  ``out_elements * in_channels/groups * kh * kw`` for a conv (padded taps included).
  A MAC is *binary* (1-bit x 1-bit, XNOR-popcount) when the layer's input is binary;
  otherwise it runs at the input's precision (8-bit pixels or 32-bit floats).

The energy figures are an ESTIMATE from the paper's Tables 2-3 (Horowitz, ISSCC 2014, 45 nm);
see :func:`energy_estimate` for the model.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Iterable, Sequence

from ._callable import make_module_callable

WORD_BITS = 64  # packed words are uint64 (docs/design.md)

# Horowitz 2014, 45 nm (bnn-spec.md §4.2, paper Tables 2 and 3), in picojoules.
MAC_ENERGY_PJ = {
    "int8": {"mul": 0.2, "add": 0.03},
    "int32": {"mul": 3.1, "add": 0.1},
    "float16": {"mul": 1.1, "add": 0.4},
    "float32": {"mul": 3.7, "add": 0.9},
}
# Energy of one 64-bit memory access by memory size (Table 3). DRAM is a range.
SRAM_ACCESS_PJ = ((8 * 1024, 10.0), (32 * 1024, 20.0), (1024 * 1024, 100.0))
DRAM_ACCESS_PJ = (1300.0, 2600.0)
# Our model of 64 binary MACs: one 64-bit XOR, one 64-bit popcount and one accumulate, each
# charged as a 64-bit integer add = two 32-bit int adds of Table 2 (2 x 0.1 pJ).
BINARY_OPS_PER_WORD = 3
INT64_OP_PJ = 2 * MAC_ENERGY_PJ["int32"]["add"]


@dataclasses.dataclass
class LayerSummary:
    """One row of the summary: a layer (torch module) or a fused engine op.

    ``input_bits`` is the precision of the layer's input: 1 (binary +-1), 8 (8-bit pixels) or
    32 (float / integer sums). ``float32_bits`` is the memory of its parameters and buffers
    stored as float32; ``packed_bits`` their memory in the packed engine (see module doc).
    ``binary_macs`` are 1-bit x 1-bit MACs, ``multibit_macs`` MACs at ``input_bits``.
    """

    name: str
    kind: str
    input_bits: int
    output_shape: tuple
    binary_params: int = 0
    float_params: int = 0
    float32_bits: int = 0
    packed_bits: int = 0
    binary_macs: int = 0
    multibit_macs: int = 0
    note: str = ""

    def to_dict(self) -> dict:
        """The row as plain JSON types."""
        row = dataclasses.asdict(self)
        row["output_shape"] = list(self.output_shape)
        return row


@dataclasses.dataclass
class ModelSummary:
    """A model's per-layer summary with totals, compression ratio and energy estimate.

    ``file_bytes`` is set when the summary comes from a packed model file (its size on disk);
    ``packed_bytes`` is always the size of the packed tensors (what the engine holds).
    """

    source: str
    input_shape: tuple
    input_bits: int
    layers: list
    file_bytes: int | None = None
    header_bytes: int | None = None

    # -- totals ---------------------------------------------------------------------------
    def total(self, field: str) -> int:
        """Sum of one numeric LayerSummary field over all layers."""
        return sum(getattr(layer, field) for layer in self.layers)

    @property
    def binary_params(self) -> int:
        """Number of 1-bit (binarized) weights."""
        return self.total("binary_params")

    @property
    def float_params(self) -> int:
        """Number of 32-bit parameters and buffers (biases, BN, float layers)."""
        return self.total("float_params")

    @property
    def float32_bytes(self) -> int:
        """Memory of all parameters stored as float32 (the float network's weights)."""
        return self.total("float32_bits") // 8

    @property
    def packed_bytes(self) -> int:
        """Memory of the packed model's tensors (binary words, thresholds, float leftovers)."""
        return -(-self.total("packed_bits") // 8)

    @property
    def compression_ratio(self) -> float:
        """float32 bytes / packed bytes."""
        return self.float32_bytes / self.packed_bytes if self.packed_bytes else math.inf

    @property
    def binary_macs(self) -> int:
        """1-bit x 1-bit MACs per sample."""
        return self.total("binary_macs")

    @property
    def multibit_macs(self) -> int:
        """MACs per sample whose input is not binary (8-bit or 32-bit)."""
        return self.total("multibit_macs")

    def energy(self) -> dict:
        """The energy estimate of :func:`energy_estimate` for this summary."""
        return energy_estimate(self)

    # -- output forms ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Everything as plain JSON types (rows, totals, energy estimate)."""
        return {
            "source": self.source,
            "input_shape": list(self.input_shape),
            "input_bits": self.input_bits,
            "layers": [layer.to_dict() for layer in self.layers],
            "totals": {
                "binary_params": self.binary_params,
                "float_params": self.float_params,
                "float32_bytes": self.float32_bytes,
                "packed_bytes": self.packed_bytes,
                "file_bytes": self.file_bytes,
                "header_bytes": self.header_bytes,
                "compression_ratio": self.compression_ratio,
                "binary_macs": self.binary_macs,
                "multibit_macs": self.multibit_macs,
            },
            "energy_estimate": self.energy(),
        }

    def to_text(self) -> str:
        """A readable fixed-width text table with totals and the energy estimate."""
        rows = [_row_cells(layer) for layer in self.layers]
        rows.append(self._total_cells())
        table = _format_table(HEADER, rows, separator_before_last=True)
        return "\n".join([f"Summary of {self.source} (input {_shape(self.input_shape)}, "
                          f"{_bits_label(self.input_bits)})", table, "", *self._footer_lines()])

    def to_markdown(self, footer: bool = True) -> str:
        """The same table (and, with ``footer``, the totals and energy lines) in Markdown
        (used by ``binarynet report``)."""
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        for cells in [_row_cells(layer) for layer in self.layers] + [self._total_cells()]:
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        if not footer:
            return "\n".join(lines)
        lines.append("")
        for line in self._footer_lines():
            lines.append(f"  - {line.strip()}" if line.startswith("  ") else f"- {line}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def _total_cells(self) -> list:
        return ["total", "", "", "", _count(self.binary_params), _count(self.float_params),
                _bytes(self.float32_bytes), _bytes(self.packed_bytes), _count(self.binary_macs),
                _count(self.multibit_macs)]

    def _footer_lines(self) -> list:
        lines = [
            f"Parameters: {_count(self.binary_params)} 1-bit weights + "
            f"{_count(self.float_params)} 32-bit floats (biases, batch norm, float layers).",
            f"Memory: float32 {_bytes(self.float32_bytes)}, packed {_bytes(self.packed_bytes)} "
            f"-> compression {self.compression_ratio:.1f}x.",
        ]
        if self.file_bytes is not None:
            lines.append(f"Packed file on disk: {_bytes(self.file_bytes)} "
                         f"(tensors {_bytes(self.packed_bytes)} + header "
                         f"{_bytes(self.header_bytes or 0)}).")
        total_macs = self.binary_macs + self.multibit_macs
        share = 100.0 * self.binary_macs / total_macs if total_macs else 0.0
        lines.append(f"MACs per sample: {_count(total_macs)}, of which {share:.2f}% binary "
                     f"(XNOR-popcount).")
        lines.extend(energy_lines(self.energy()))
        return lines


HEADER = ["layer", "type", "input bits", "output shape", "1-bit params", "32-bit params",
          "float32 mem", "packed mem", "1-bit MACs", "multi-bit MACs"]


# -- energy ---------------------------------------------------------------------------------
def _mac_pj(kind: str) -> float:
    return MAC_ENERGY_PJ[kind]["mul"] + MAC_ENERGY_PJ[kind]["add"]


def _smallest_sram(nbytes: int):
    """(size, pJ per 64-bit access) of the smallest Table-3 SRAM that holds nbytes, or None."""
    for size, pj in SRAM_ACCESS_PJ:
        if nbytes <= size:
            return size, pj
    return None


def energy_estimate(summary: ModelSummary) -> dict:
    """ESTIMATE of the energy of one inference (one sample), float32 network vs this BNN.

    Model (figures: Horowitz 2014, 45 nm, as the paper's Tables 2-3, bnn-spec.md §4.2):

    - compute, float32 network: every MAC = 32-bit float mul + add = 3.7 + 0.9 = 4.6 pJ;
    - compute, BNN: 64 binary (XNOR-popcount) MACs = one 64-bit XOR + one 64-bit popcount +
      one accumulate, each charged as a 64-bit integer add (2 x 0.1 pJ): 0.6 pJ per 64 MACs,
      i.e. ~0.0094 pJ per binary MAC; MACs with 8-bit input (first layer) = int8 mul + add =
      0.23 pJ; MACs with 32-bit input = 4.6 pJ;
    - memory: every weight word is read once per sample (batch 1, no reuse across samples),
      at one 64-bit access per 8 bytes: DRAM 1.3-2.6 nJ per access, or 10 / 20 / 100 pJ when
      the weights fit an 8 KB / 32 KB / 1 MB SRAM (Table 3).

    Not counted: activations' memory traffic, batch-norm / threshold and pooling operations,
    control. Returns picojoule figures (``*_pj``; DRAM as (low, high)) and ratios.
    """
    total_macs = summary.binary_macs + summary.multibit_macs
    float_compute = total_macs * _mac_pj("float32")
    multibit_pj = _mac_pj("int8") if summary.input_bits == 8 else _mac_pj("float32")
    bnn_compute = (summary.binary_macs / WORD_BITS * BINARY_OPS_PER_WORD * INT64_OP_PJ
                   + summary.multibit_macs * multibit_pj)
    float_words = math.ceil(summary.float32_bytes / 8)
    packed_words = math.ceil(summary.packed_bytes / 8)

    def memory(words: int, nbytes: int) -> dict:
        sram = _smallest_sram(nbytes)
        return {
            "words64": words,
            "dram_pj": (words * DRAM_ACCESS_PJ[0], words * DRAM_ACCESS_PJ[1]),
            "sram_bytes": sram[0] if sram else None,
            "sram_pj": words * sram[1] if sram else None,
        }

    float_memory = memory(float_words, summary.float32_bytes)
    bnn_memory = memory(packed_words, summary.packed_bytes)
    return {
        "label": "ESTIMATE (Horowitz 2014, 45 nm; paper Tables 2-3)",
        "float32": {"compute_pj": float_compute, "memory": float_memory},
        "bnn": {"compute_pj": bnn_compute, "memory": bnn_memory},
        "compute_ratio": float_compute / bnn_compute if bnn_compute else math.inf,
        "dram_ratio": float_words / packed_words if packed_words else math.inf,
        "model": ("64 binary MACs = 3 x 64-bit int op (XOR, popcount, add) at 0.2 pJ each; "
                  "float MAC = 3.7 pJ mul + 0.9 pJ add; 8-bit MAC = 0.2 + 0.03 pJ; weights "
                  "read once per sample, 64-bit words; activations, BN and pooling not "
                  "counted"),
    }


def _joules(pj: float) -> str:
    """An energy in pJ with a readable unit (pJ, nJ, uJ, mJ)."""
    for unit, scale in (("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if pj >= scale:
            return f"{pj / scale:,.2f} {unit}"
    return f"{pj:,.2f} pJ"


def energy_lines(energy: dict) -> list:
    """Human-readable lines of an :func:`energy_estimate` result (nested lines start with
    two spaces)."""
    lines = [f"Energy per sample, {energy['label']}:"]
    for name, label in (("float32", "float32 network"), ("bnn", "BNN (this model)")):
        part = energy[name]
        mem = part["memory"]
        low, high = mem["dram_pj"]
        sram = (f"; or {_joules(mem['sram_pj'])} from an SRAM of <= {_bytes(mem['sram_bytes'])}"
                if mem["sram_bytes"] else " (too large for an SRAM of Table 3, <= 1 MiB)")
        lines.append(f"  {label}: compute {_joules(part['compute_pj'])}, weight reads "
                     f"{mem['words64']:,} x 64-bit from DRAM {_joules(low)} to "
                     f"{_joules(high)}{sram}")
    lines.append(f"  float32 / BNN: compute {energy['compute_ratio']:,.0f}x, "
                 f"memory accesses {energy['dram_ratio']:,.1f}x")
    lines.append(f"  model: {energy['model']}.")
    return lines


# -- formatting helpers ---------------------------------------------------------------------
def _count(n: int) -> str:
    return f"{n:,}"


def _bytes(n: float) -> str:
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024.0
        if n < 1024 or unit == "GiB":
            return f"{n:,.2f} {unit}"
    raise AssertionError("unreachable")


def _bits_label(bits: int) -> str:
    return {1: "1-bit", 8: "8-bit", 32: "32-bit float"}.get(bits, f"{bits}-bit")


def _shape(shape: Iterable) -> str:
    return "x".join(str(s) for s in shape) if shape else "-"


def _row_cells(layer: LayerSummary) -> list:
    return [layer.name, layer.kind + (f" ({layer.note})" if layer.note else ""),
            _bits_label(layer.input_bits), _shape(layer.output_shape),
            _count(layer.binary_params), _count(layer.float_params),
            _bytes(layer.float32_bits / 8), _bytes(math.ceil(layer.packed_bits / 8)),
            _count(layer.binary_macs), _count(layer.multibit_macs)]


def _format_table(header: Sequence[str], rows: list, separator_before_last: bool) -> str:
    numeric = [i >= 4 for i in range(len(header))]
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(cells) -> str:
        return "  ".join(str(c).rjust(w) if num else str(c).ljust(w)
                         for c, w, num in zip(cells, widths, numeric)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line(header), rule]
    for i, row in enumerate(rows):
        if separator_before_last and i == len(rows) - 1:
            out.append(rule)
        out.append(line(row))
    return "\n".join(out)


# -- torch models ---------------------------------------------------------------------------
# Modules that pass the precision of their input through unchanged (max of +-1 is +-1).
_PASSTHROUGH = ("Dropout", "Dropout1d", "Dropout2d", "AlphaDropout", "Identity", "Flatten",
                "Unflatten", "MaxPool1d", "MaxPool2d")


def _is_binary_layer(module) -> bool:
    from . import nn as bnn

    return isinstance(module, bnn.BinaryLayer)


def _is_sign(module) -> bool:
    from . import nn as bnn

    return isinstance(module, bnn.Sign)


def _is_batchnorm(module) -> bool:
    import torch

    from . import nn as bnn

    shift = tuple(getattr(bnn, name) for name in ("ShiftBatchNorm1d", "ShiftBatchNorm2d")
                  if hasattr(bnn, name))
    return isinstance(module, (torch.nn.modules.batchnorm._BatchNorm, *shift))


def _is_passthrough(module) -> bool:
    return type(module).__name__ in _PASSTHROUGH


def _float_tensors(module) -> int:
    """Floating-point parameters and buffers held directly by module (not its children)."""
    tensors = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
    return sum(t.numel() for t in tensors if t.is_floating_point())


def _words_bits(bits: int) -> int:
    """Bits taken by ``bits`` packed values: whole uint64 words (pad bits included)."""
    return math.ceil(bits / WORD_BITS) * WORD_BITS


def _packed_weight_bits(module, first: bool) -> int:
    """Bits of a binary layer's packed weight, laid out as the engine stores it.

    Dense (O, K): O rows of ceil(K/64) words. Conv with binary input: channels are packed per
    tap (NHWC), O*kh*kw rows of ceil((C/g)/64) words. First conv (real-valued image input):
    whole (kh, kw, c) patches packed, O rows of ceil(kh*kw*C/g/64) words.
    """
    shape = tuple(module.weight.shape)
    if len(shape) == 2:
        return shape[0] * _words_bits(shape[1])
    if first:
        return shape[0] * _words_bits(math.prod(shape[1:]))
    return shape[0] * math.prod(shape[2:]) * _words_bits(shape[1])


def _border_classes(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Distinct sets of in-bounds taps along one axis of a conv (zero padding drops taps at the
    border, so border positions need their own first-layer thresholds)."""
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    return len({tuple(0 <= y * stride - padding + t * dilation < size for t in range(kernel))
                for y in range(out)})


def _first_threshold_bits(module, input_shape: tuple, out_shape: tuple) -> int:
    """Bits of the integer thresholds of a first layer fed with 8-bit images: one int32 per
    output unit (dense), or per (row class, column class, channel) plus the int32 class index
    of every output row and column (conv)."""
    if len(out_shape) == 1:
        return 32 * out_shape[0]
    _, height, width = input_shape
    rows = _border_classes(height, module.kernel_size[0], module.stride[0], module.padding[0],
                           module.dilation[0])
    cols = _border_classes(width, module.kernel_size[1], module.stride[1], module.padding[1],
                           module.dilation[1])
    return 32 * (rows * cols * out_shape[0] + out_shape[1] + out_shape[2])


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
    leaf module (or module with its own tensors) as (name, module, output shape)."""
    import torch

    names = {module: name for name, module in model.named_modules()}
    records = []

    def record(module, inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        records.append((names[module] or type(module).__name__, module, tuple(out.shape[1:])))

    watched = [m for m in model.modules()
               if next(m.children(), None) is None or _float_tensors(m)]
    hooks = [m.register_forward_hook(record) for m in watched]
    modes = {m: m.training for m in model.modules()}
    reference = next(model.parameters(), None)
    x = torch.zeros((1, *input_shape),
                    dtype=reference.dtype if reference is not None else torch.float32,
                    device=reference.device if reference is not None else "cpu")
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ValueError(f"summary(): {type(model).__name__} does not accept one sample of "
                         f"shape {tuple(input_shape)}: {exc}") from exc
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


def _summarise_module(model, input_shape, input_bits: int) -> ModelSummary:
    """Per-layer summary of a torch model; see the module docstring for the counting rules.

    The packed figures mirror the layout of :mod:`binarynet.engine.graph` that
    :func:`binarynet.export` writes (hidden layer: int32 threshold + bool flip per channel;
    first layer: float32 bias, float32 threshold, flip and, for 8-bit input, int32 thresholds;
    output layer: float64 scale and shift per class).
    """
    shape = _infer_input_shape(model) if input_shape is None else tuple(int(s) for s in input_shape)
    records = _trace(model, shape)
    bits = input_bits
    on_image = True     # no layer has transformed the input yet
    first_layers = set()  # indices of binary layers fed with the real-valued image
    layers = []
    for i, (name, module, out_shape) in enumerate(records):
        kind = type(module).__name__
        out_numel = math.prod(out_shape)
        row = LayerSummary(name=name, kind=kind, input_bits=bits, output_shape=out_shape)
        floats = _float_tensors(module)
        before = _next_index(records, i, -1, _is_passthrough)
        after_binary = before is not None and _is_binary_layer(records[before][1])
        if _is_binary_layer(module):
            row.input_bits = 1 if module.input_quantizer is not None else bits
            weight = module.weight
            bias = module.bias.numel() if module.bias is not None else 0
            macs = out_numel * math.prod(weight.shape[1:])
            if module.weight_quantizer is None:  # a float layer in binary clothing
                row.float_params, row.packed_bits = floats, floats * 32
                row.multibit_macs = macs
            else:
                row.binary_params, row.float_params = weight.numel(), bias
                first = on_image and module.input_quantizer is None
                row.packed_bits = _packed_weight_bits(module, first)
                if module.input_quantizer is not None:
                    row.note = "binarizes its input"
                    if on_image and input_bits == 8:  # per-channel uint8 thresholds (int16)
                        row.packed_bits += 16 * (shape[0] if len(shape) == 3 else 1)
                if row.input_bits == 1:
                    row.binary_macs = macs
                else:
                    row.multibit_macs = macs
                after = _next_index(records, i, +1, _is_passthrough)
                folds = after is not None and (_is_batchnorm(records[after][1])
                                               or _is_sign(records[after][1]))
                if first:
                    first_layers.add(i)
                    row.packed_bits += bias * 32  # kept as float32 (exact real-valued sum)
                if not folds:  # the output: logits = scale * s + shift, float64 per unit
                    row.packed_bits += weight.shape[0] * 2 * 64
                    row.note = "-> scale, shift"
            bits = 32  # integer sums (float32 in torch)
        elif _is_batchnorm(module) or _is_sign(module):
            sign = _is_sign(module)
            nxt = _next_index(records, i, +1, lambda m: _is_passthrough(m) and
                              not type(m).__name__.startswith("MaxPool"))
            then_sign = sign or (nxt is not None and _is_sign(records[nxt][1]))
            row.float_params = floats
            channels = out_shape[0]
            if sign and before is not None and _is_batchnorm(records[before][1]):
                pass  # the batch norm before it already became the threshold
            elif after_binary and before in first_layers:
                if then_sign:
                    row.packed_bits = channels * (32 + 8)  # float threshold + flip
                    if input_bits == 8:
                        row.packed_bits += _first_threshold_bits(
                            records[before][1], shape, records[before][2])
                    row.note = "-> thresholds"
                else:
                    row.packed_bits, row.note = channels * 2 * 64, "-> scale, shift"
            elif after_binary:
                if then_sign:
                    row.packed_bits, row.note = channels * (32 + 8), "-> thresholds"
                else:
                    row.packed_bits, row.note = channels * 2 * 64, "-> scale, shift"
            elif not sign:
                row.packed_bits = floats * 32
            bits = 1 if sign else 32
        elif _is_passthrough(module):
            pass  # a max-pool of thresholded bits reuses its conv's flip flags: no own tensor
        else:
            row.float_params, row.packed_bits = floats, floats * 32
            weight = getattr(module, "weight", None)
            if weight is not None and weight.dim() >= 2:  # nn.Linear / nn.Conv*d in float
                row.multibit_macs = out_numel * math.prod(weight.shape[1:])
            bits = 32
        if not _is_passthrough(module):
            on_image = False
        row.float32_bits = (row.binary_params + row.float_params) * 32
        layers.append(row)
    return ModelSummary(source=type(model).__name__, input_shape=shape, input_bits=input_bits,
                        layers=layers)


# -- packed models --------------------------------------------------------------------------
_WEIGHTED_OPS = ("first_dense", "first_conv", "dense", "dense_logits", "conv")


def _torch_order(kind: str, shape: tuple) -> tuple:
    """An engine activation shape in the torch model's order: NHWC bits -> (C, H, W)."""
    return (shape[2], shape[0], shape[1]) if kind == "bits" and len(shape) == 3 else tuple(shape)


def _summarise_packed(packed, input_bits: int | None, file_path: str | None = None):
    """Per-op summary of a ``PackedModel``: exact tensor bytes per op, header and file size.

    The float32 column is the float network the model stands for: every weight plus, per
    output channel, the float bias and four batch-norm values (gamma, beta, mean, variance),
    as float32.
    """
    from .engine import format as file_format
    from .engine import graph as packed_graph

    graph = packed.graph
    integer = packed_graph.integer_first_layer(graph)
    if input_bits is None:
        input_bits = 8 if integer else 32
    bits = input_bits
    in_shape = tuple(graph["input"]["shape"])
    layers, seen = [], set()
    for i, (op, (kind, out_shape)) in enumerate(zip(packed.ops, packed.activations)):
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
    return ModelSummary(source=source, input_shape=in_shape, input_bits=input_bits,
                        layers=layers, file_bytes=file_bytes, header_bytes=header)


# -- entry point ----------------------------------------------------------------------------
def summary(model_or_packed: Any, input_shape: Sequence[int] | None = None,
            input_bits: int | None = None) -> ModelSummary:
    """Summarise a torch model, a ``PackedModel`` or a packed model file path.

    ``input_shape`` is one sample's shape without the batch axis, e.g. ``(1, 28, 28)``;
    it is required for a torch model unless it can be read from the model (a first dense
    layer gives ``(in_features,)``). ``input_bits`` is the precision of the data fed to the
    first layer: 32 (float, the default for a torch model) or 8 (8-bit images whose
    normalisation the packed engine folds in; the default for packed models that take
    uint8 images). Raises TypeError for an unsupported object.
    """
    if input_bits not in (None, 1, 8, 32):
        raise ValueError(f"input_bits must be 1, 8 or 32, got {input_bits!r}")
    if isinstance(model_or_packed, (str, os.PathLike)):
        from . import engine  # torch-free

        return _summarise_packed(engine.load(model_or_packed), input_bits,
                                 file_path=os.fspath(model_or_packed))
    if _is_torch_module(model_or_packed):
        return _summarise_module(model_or_packed, input_shape, input_bits or 32)
    if type(model_or_packed).__name__ == "PackedModel":
        return _summarise_packed(model_or_packed, input_bits)
    raise TypeError("summary() expects a torch.nn.Module, a binarynet.engine.PackedModel or "
                    f"the path of a packed .bnn file, got {type(model_or_packed).__name__}")


def is_packed_file(path) -> bool:
    """True when path looks like a packed model file (safetensors layout: an 8-byte header
    length, then a JSON object), False for anything else (e.g. a torch checkpoint, a zip)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def recipe_input(recipe) -> tuple:
    """(input shape of one sample, first-layer input bits) of a training recipe's dataset.

    Images are 8-bit; the packed engine takes them as such (integer first layer) when the
    normalisation has one scale for all channels, else it normalises them in float.
    """
    from . import data
    from .train import synthetic

    if recipe.dataset == "synthetic":
        images, _ = synthetic.generate("test", num_train=1, num_val=1, num_test=1, seed=recipe.seed)
        return tuple(images.shape[1:]), 8 if recipe.normalization == "paper" else 32
    scale, _ = data.normalization(recipe.dataset, recipe.normalization)
    return tuple(data.info(recipe.dataset).image_shape), 8 if len(set(scale)) == 1 else 32


def summary_of_target(target: str, input_shape: Sequence[int] | None = None,
                      overrides: dict | None = None) -> ModelSummary:
    """Summary of what ``binarynet summary TARGET`` names: a packed ``.bnn`` file, a training
    checkpoint (or a run folder: its ``best.pt``), a recipe name or a model name.

    ``overrides`` ({"field": value, "model.arg": value}) apply to a recipe; to a model name
    only ``model.*`` keys apply. Raises BinarynetError / ValueError with what was expected.
    """
    from .errors import BinarynetError

    overrides = dict(overrides or {})
    path = target
    if os.path.isdir(path):
        for name in ("best.pt", "last.pt"):
            if os.path.isfile(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise BinarynetError(f"{target} is a folder without best.pt or last.pt; give a "
                                 f"checkpoint, a packed .bnn file, a recipe or a model name")
    if os.path.isfile(path):
        if overrides:
            raise BinarynetError("--set applies to recipe and model names, not to files")
        if is_packed_file(path):
            return summary(path)
        from .train.checkpoint import load_model

        model, recipe, normalization = load_model(path)
        shape, bits = recipe_input(recipe)
        result = summary(model, input_shape or shape, input_bits=8 if len(
            set(normalization[0])) == 1 else 32)
        result.source = f"{os.path.basename(path)} ({recipe.name})"
        return result
    from . import models
    from .train import build_model, recipes

    if target in recipes.names():
        recipe = recipes.apply_overrides(recipes.get(target), overrides)
        shape, bits = recipe_input(recipe)
        result = summary(build_model(recipe), input_shape or shape, input_bits=bits)
        result.source = f"recipe {target} (model {recipe.model})"
        return result
    if target in models.names():
        unknown = [k for k in overrides if not k.startswith("model.")]
        if unknown:
            raise BinarynetError(f"a model name takes only model.<option> overrides, got "
                                 f"{', '.join(unknown)}")
        from .train.recipes import parse_value

        kwargs = {k[len("model."):]: parse_value(v) if isinstance(v, str) else v
                  for k, v in overrides.items()}
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        try:
            model = models.get(target, **kwargs)
        except (TypeError, ValueError) as exc:
            raise BinarynetError(str(exc)) from None
        if input_shape is None:
            input_shape = _model_default_input(target, kwargs)
        result = summary(model, input_shape)
        result.source = f"model {target}"
        return result
    raise BinarynetError(
        f"{target!r} is neither a file nor a folder, a recipe ({', '.join(recipes.names())}) "
        f"nor a model ({', '.join(models.names())})")


def _model_default_input(name: str, kwargs: dict) -> tuple | None:
    """Input shape of one of binarynet's model builders from its options (``in_shape``, or
    ``in_channels`` and ``image_size``) and their defaults; None when they do not tell."""
    import inspect

    from . import models

    builder = getattr(models, name, None)
    options = ({k: p.default for k, p in inspect.signature(builder).parameters.items()}
               if callable(builder) else {})
    options.update(kwargs)
    if "in_shape" in options:
        return tuple(options["in_shape"])
    if "in_channels" in options and "image_size" in options:
        return (options["in_channels"], options["image_size"], options["image_size"])
    return None


def _is_torch_module(obj: Any) -> bool:
    # Checked without importing torch, so packed models can be summarised torch-free.
    return any(cls.__module__.startswith("torch.nn") and cls.__name__ == "Module"
               for cls in type(obj).__mro__)


__all__ = ["summary", "ModelSummary", "LayerSummary", "energy_estimate", "energy_lines",
           "MAC_ENERGY_PJ", "SRAM_ACCESS_PJ", "DRAM_ACCESS_PJ"]


make_module_callable(__name__, summary)
