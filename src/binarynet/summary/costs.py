"""The cost model's records: one :class:`LayerSummary` per layer, and the :class:`ModelSummary`
that holds them with totals, the compression ratio and the energy estimate.

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
"""
from __future__ import annotations

import dataclasses
import math

from . import tables
from .energy import energy_estimate


@dataclasses.dataclass
class LayerSummary:
    """One row of the summary: a layer (torch module) or a fused engine op.

    ``input_bits`` is the precision of the layer's input: 1 (binary +-1), 8 (8-bit pixels) or
    32 (float / integer sums). ``float32_bits`` is the memory of its parameters and buffers
    stored as float32; ``packed_bits`` their memory in the packed engine (see module doc).
    ``binary_macs`` are 1-bit x 1-bit MACs, ``multibit_macs`` MACs at ``input_bits``;
    ``elementwise_ops`` the float operations of a packed model's real stream (adds, scales,
    PReLUs, sign comparisons, pooling taps; format 3).
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
    elementwise_ops: int = 0
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

    @property
    def elementwise_ops(self) -> int:
        """Float operations per sample on a packed model's real stream (not MACs)."""
        return self.total("elementwise_ops")

    def energy(self) -> dict:
        """The energy estimate of :func:`~binarynet.summary.energy_estimate` for this summary."""
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
                "elementwise_ops": self.elementwise_ops,
            },
            "energy_estimate": self.energy(),
        }

    def to_text(self) -> str:
        """A readable fixed-width text table with totals and the energy estimate."""
        return tables.text(self)

    def to_markdown(self, footer: bool = True) -> str:
        """The same table (and, with ``footer``, the totals and energy lines) in Markdown
        (used by ``binarynet report``)."""
        return tables.markdown(self, footer)

    def __str__(self) -> str:
        return self.to_text()
