"""How a :class:`~binarynet.summary.ModelSummary` is shown: a text or Markdown table with the
totals and the energy estimate's lines."""
from __future__ import annotations

import math
from typing import Iterable, Sequence

HEADER = ["layer", "type", "input bits", "output shape", "1-bit params", "32-bit params",
          "float32 mem", "packed mem", "1-bit MACs", "multi-bit MACs"]


def text(summary) -> str:
    """A readable fixed-width text table with totals and the energy estimate."""
    rows = [_row_cells(layer) for layer in summary.layers]
    rows.append(_total_cells(summary))
    table = _format_table(HEADER, rows, separator_before_last=True)
    return "\n".join([f"Summary of {summary.source} (input {_shape(summary.input_shape)}, "
                      f"{_bits_label(summary.input_bits)})", table, "", *_footer_lines(summary)])


def markdown(summary, footer: bool = True) -> str:
    """The same table in Markdown; with ``footer``, the totals and energy lines as a list."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for cells in [_row_cells(layer) for layer in summary.layers] + [_total_cells(summary)]:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    if not footer:
        return "\n".join(lines)
    lines.append("")
    for line in _footer_lines(summary):
        lines.append(f"  - {line.strip()}" if line.startswith("  ") else f"- {line}")
    return "\n".join(lines)


def energy_lines(energy: dict) -> list:
    """Human-readable lines of an :func:`~binarynet.summary.energy_estimate` result (nested
    lines start with two spaces)."""
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


def _total_cells(summary) -> list:
    return ["total", "", "", "", _count(summary.binary_params), _count(summary.float_params),
            _bytes(summary.float32_bytes), _bytes(summary.packed_bytes),
            _count(summary.binary_macs), _count(summary.multibit_macs)]


def _footer_lines(summary) -> list:
    lines = [
        f"Parameters: {_count(summary.binary_params)} 1-bit weights + "
        f"{_count(summary.float_params)} 32-bit floats (biases, batch norm, float layers).",
        f"Memory: float32 {_bytes(summary.float32_bytes)}, packed {_bytes(summary.packed_bytes)} "
        f"-> compression {summary.compression_ratio:.1f}x.",
    ]
    if summary.file_bytes is not None:
        lines.append(f"Packed file on disk: {_bytes(summary.file_bytes)} "
                     f"(tensors {_bytes(summary.packed_bytes)} + header "
                     f"{_bytes(summary.header_bytes or 0)}).")
    total_macs = summary.binary_macs + summary.multibit_macs
    share = 100.0 * summary.binary_macs / total_macs if total_macs else 0.0
    lines.append(f"MACs per sample: {_count(total_macs)}, of which {share:.2f}% binary "
                 f"(XNOR-popcount).")
    if summary.elementwise_ops:
        lines.append(f"Real-stream float operations per sample (adds, scales, PReLUs, sign "
                     f"comparisons, pooling): {_count(summary.elementwise_ops)}.")
    lines.extend(energy_lines(summary.energy()))
    return lines


def _joules(pj: float) -> str:
    """An energy in pJ with a readable unit (pJ, nJ, uJ, mJ)."""
    for unit, scale in (("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if pj >= scale:
            return f"{pj / scale:,.2f} {unit}"
    return f"{pj:,.2f} pJ"


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


def _row_cells(layer) -> list:
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
