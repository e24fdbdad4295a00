"""Training reports: loss/error plots (PNG) and a Markdown report of a run directory.

``write_report(run_dir)`` reads what ``binarynet train`` leaves in a run directory (the resolved
config, the per-epoch metrics JSON lines, the checkpoints, and an exported ``*.bnn`` model if
there is one) and writes ``loss.png``, ``error.png`` and ``report.md`` into it. Plots use
matplotlib's headless Agg backend; matplotlib is an optional dependency (``pip install
'binarynet[report]'``).
"""
from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Sequence

from .errors import BinarynetError

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
REPORT_FILE = "report.md"
LOSS_PLOT = "loss.png"
ERROR_PLOT = "error.png"

# Paper Table 1 test errors (bnn-spec.md §4.1) with what produced them (spec §2.8, §4.1).
PAPER_TABLE1 = {
    "mnist": {
        "Theano": (0.96, "1000 epochs (test at best-validation epoch), Titan Black GPU, ~6 h; "
                         "MLP 3x4096"),
        "Torch7": (1.40, "epochs not stated (the code trains without a bound), GPU model not "
                         "stated; MLP 3x2048, shift-BN, shift-AdaMax"),
    },
    "svhn": {
        "Theano": (2.80, "200 epochs (test at best-validation epoch), Titan Black GPU, ~2 days"),
        "Torch7": (2.53, "epochs not stated (the code trains without a bound), GPU model not "
                         "stated; GCN + LCN input"),
    },
    "cifar10": {
        "Theano": (11.40, "500 epochs (test at best-validation epoch), Titan Black GPU, ~23 h; "
                          "no augmentation"),
        "Torch7": (10.15, "epochs not stated (the code trains without a bound), GPU model not "
                          "stated; ZCA-whitened input"),
    },
}


def _pyplot():
    """matplotlib.pyplot on the headless Agg backend, or a clear error if it is missing."""
    try:
        import matplotlib
    except ImportError:
        raise BinarynetError(
            "plots need matplotlib, which is not installed: pip install 'binarynet[report]' "
            "(or pip install matplotlib)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# -- reading a run ----------------------------------------------------------------------------
def read_metrics(path) -> list:
    """The per-epoch records of a metrics JSON-lines file, sorted by epoch.

    A resumed run may have rewritten epochs: the last record of an epoch wins. Raises
    BinarynetError when the file is missing or holds no epoch record.
    """
    path = Path(path)
    if not path.is_file():
        raise BinarynetError(f"{path} does not exist: is this a binarynet run directory "
                             f"(made by `binarynet train --out DIR`)?")
    by_epoch = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a partial last line of an interrupted run
            if isinstance(record, dict) and isinstance(record.get("epoch"), int):
                by_epoch[record["epoch"]] = record
    if not by_epoch:
        raise BinarynetError(f"{path} holds no per-epoch metrics yet")
    return [by_epoch[e] for e in sorted(by_epoch)]


def _series(records: Sequence[dict], key: str) -> list:
    """(epoch, value) pairs of records that have a finite number under key."""
    points = []
    for record in records:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            points.append((record["epoch"], float(value)))
    return points


def best_epoch(records: Sequence[dict], val_key: str = "val_error") -> dict:
    """The record with the lowest validation error (the paper's protocol: test error is
    read at the best-validation epoch); the earliest such epoch on ties; without any
    validation error, the last record."""
    with_val = [r for r in records if _series([r], val_key)]
    if not with_val:
        return records[-1]
    return min(with_val, key=lambda r: (r[val_key], r["epoch"]))


# -- plots ------------------------------------------------------------------------------------
def _epoch_axis(records: Sequence[dict]) -> int:
    """Offset that makes displayed epochs start at 1 (records count from 0 or 1)."""
    return 1 if min(r["epoch"] for r in records) == 0 else 0


def plot_curves(records: Sequence[dict], out_dir, title: str,
                paper_errors: dict | None = None) -> list:
    """Write ``loss.png`` and ``error.png`` (train / validation / test per epoch) to out_dir.

    Loss is drawn on a linear axis from 0. Error is in percent, on a linear axis from 0, or
    on a labelled log axis when the plotted errors span more than a factor 20 (otherwise the
    late epochs, where the interesting differences are, would be flattened against 0).
    ``paper_errors`` ({label: percent}) adds horizontal reference lines to the error plot.
    Returns the paths written.
    """
    plt = _pyplot()
    out_dir = Path(out_dir)
    shift = _epoch_axis(records)
    best = best_epoch(records)
    paths = []
    panels = (
        (LOSS_PLOT, "loss", "loss per sample (training objective)",
         (("train_loss", "training"), ("val_loss", "validation"), ("test_loss", "test")), 1.0),
        (ERROR_PLOT, "error", "classification error (%)",
         (("train_error", "training"), ("val_error", "validation"), ("test_error", "test")), 100.0),
    )
    for file_name, what, ylabel, keys, scale in panels:
        fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
        values = []
        for (key, label), style in zip(keys, ("-o", "-s", "-^")):
            points = _series(records, key)
            if not points:
                continue
            xs = [e + shift for e, _ in points]
            ys = [v * scale for _, v in points]
            values.extend(ys)
            ax.plot(xs, ys, style, markersize=3 if len(xs) < 60 else 0, linewidth=1.5,
                    label=label)
        if not values:
            plt.close(fig)
            continue
        if what == "error" and paper_errors:
            for (label, percent), color in zip(paper_errors.items(), ("tab:purple", "tab:gray")):
                ax.axhline(percent, color=color, linestyle=":", linewidth=1.2,
                           label=f"paper, {label}: {percent:.2f}%")
                values.append(percent)
        ax.axvline(best["epoch"] + shift, color="black", linestyle="--", linewidth=0.8,
                   label=f"best validation (epoch {best['epoch'] + shift})")
        positive = [v for v in values if v > 0]
        if what == "error" and positive and max(positive) / min(positive) > 20:
            ax.set_yscale("log")
            low, high = min(positive), max(positive)
            ticks = [m * 10.0 ** k for k in range(-3, 3) for m in (1, 2, 5)
                     if low / 1.5 <= m * 10.0 ** k <= high * 1.5]
            ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
            ax.set_ylabel(ylabel.replace("(%)", "(%, log scale)"))
        else:
            ax.set_ylim(0, max(values) * 1.08 if max(values) > 0 else 1.0)
            ax.set_ylabel(ylabel)
        ax.set_xlabel("epoch")
        epochs = [r["epoch"] + shift for r in records]
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        if max(epochs) - min(epochs) < 12:
            ax.set_xticks(range(min(epochs), max(epochs) + 1))
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{title}: {what} per epoch")
        ax.legend(fontsize=8, loc="upper right")
        fig.tight_layout()
        path = out_dir / file_name
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
