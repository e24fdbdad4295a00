"""The energy model: an ESTIMATE of one inference's energy from the paper's Tables 2-3
(Horowitz, ISSCC 2014, 45 nm; docs/paper.md §4.2)."""
from __future__ import annotations

import math

from ..engine.reference import WORD_BITS

# Horowitz 2014, 45 nm (docs/paper.md §4.2, paper Tables 2 and 3), in picojoules.
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


def _mac_pj(kind: str) -> float:
    return MAC_ENERGY_PJ[kind]["mul"] + MAC_ENERGY_PJ[kind]["add"]


def _smallest_sram(nbytes: int):
    """(size, pJ per 64-bit access) of the smallest Table-3 SRAM that holds nbytes, or None."""
    for size, pj in SRAM_ACCESS_PJ:
        if nbytes <= size:
            return size, pj
    return None


def _memory(words: int, nbytes: int) -> dict:
    """Energy of reading ``words`` 64-bit words (``nbytes``) once, from DRAM or an SRAM."""
    sram = _smallest_sram(nbytes)
    return {
        "words64": words,
        "dram_pj": (words * DRAM_ACCESS_PJ[0], words * DRAM_ACCESS_PJ[1]),
        "sram_bytes": sram[0] if sram else None,
        "sram_pj": words * sram[1] if sram else None,
    }


def energy_estimate(summary) -> dict:
    """ESTIMATE of the energy of one inference (one sample), float32 network vs this BNN, for a
    :class:`~binarynet.summary.ModelSummary`.

    Model (figures: Horowitz 2014, 45 nm, as the paper's Tables 2-3, docs/paper.md §4.2):

    - compute, float32 network: every MAC = 32-bit float mul + add = 3.7 + 0.9 = 4.6 pJ;
    - compute, BNN: 64 binary (XNOR-popcount) MACs = one 64-bit XOR + one 64-bit popcount +
      one accumulate, each charged as a 64-bit integer add (2 x 0.1 pJ): 0.6 pJ per 64 MACs,
      i.e. ~0.0094 pJ per binary MAC; MACs with 8-bit input (first layer) = int8 mul + add =
      0.23 pJ; MACs with 32-bit input = 4.6 pJ (each layer at its own input precision);
    - memory: every weight word is read once per sample (batch 1, no reuse across samples),
      at one 64-bit access per 8 bytes: DRAM 1.3-2.6 nJ per access, or 10 / 20 / 100 pJ when
      the weights fit an 8 KB / 32 KB / 1 MB SRAM (Table 3).

    Not counted: activations' memory traffic, batch-norm / threshold and pooling operations,
    control. Returns picojoule figures (``*_pj``; DRAM as (low, high)) and ratios.
    """
    total_macs = summary.binary_macs + summary.multibit_macs
    float_compute = total_macs * _mac_pj("float32")
    # each layer's multi-bit MACs at its own input precision (8-bit pixels, or float32 in the
    # real-valued layers of modern BNNs: shortcut convs, classifier)
    multibit = sum(row.multibit_macs * _mac_pj("int8" if row.input_bits == 8 else "float32")
                   for row in summary.layers)
    bnn_compute = summary.binary_macs / WORD_BITS * BINARY_OPS_PER_WORD * INT64_OP_PJ + multibit
    float_words = math.ceil(summary.float32_bytes / 8)
    packed_words = math.ceil(summary.packed_bytes / 8)
    return {
        "label": "ESTIMATE (Horowitz 2014, 45 nm; paper Tables 2-3)",
        "float32": {"compute_pj": float_compute,
                    "memory": _memory(float_words, summary.float32_bytes)},
        "bnn": {"compute_pj": bnn_compute, "memory": _memory(packed_words, summary.packed_bytes)},
        "compute_ratio": float_compute / bnn_compute if bnn_compute else math.inf,
        "dram_ratio": float_words / packed_words if packed_words else math.inf,
        "model": ("64 binary MACs = 3 x 64-bit int op (XOR, popcount, add) at 0.2 pJ each; "
                  "float MAC = 3.7 pJ mul + 0.9 pJ add; 8-bit MAC = 0.2 + 0.03 pJ; weights "
                  "read once per sample, 64-bit words; activations, BN and pooling not "
                  "counted"),
    }
