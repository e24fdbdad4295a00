"""Training reports: loss/error plots (PNG) and a Markdown report of a run directory.

``write_report(run_dir)`` reads what ``binarynet train`` leaves in a run directory (the resolved
config, the per-epoch metrics JSON lines, the checkpoints, see :mod:`binarynet.runs`) and the
exported model (``model.bnn``, written there by ``binarynet export RUN_DIR``, or any file given
as ``model_file``), checks that all of it can be read, and only then writes ``loss.png``,
``error.png`` and ``report.md`` into the folder. Plots use matplotlib's headless Agg backend;
matplotlib is an optional dependency (``pip install 'binarynet[report]'``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Sequence

from . import timing
from .errors import BinarynetError
from .runs import BEST, CONFIG_FILE, LAST, METRICS_FILE, MODEL_FILE

REPORT_FILE = "report.md"
LOSS_PLOT = "loss.png"
ERROR_PLOT = "error.png"

# Paper Table 1 test errors (docs/paper.md §4.1) with how they were obtained (docs/paper.md
# §2.8, §3).
PAPER_TABLE1 = {
    "mnist": {
        "Theano": {"error": 0.96, "network": "MLP 3x4096, dropout",
                   "epochs": "1000 (test at the best-validation epoch)",
                   "hardware": "GPU, Titan Black (~6 h)"},
        "Torch7": {"error": 1.40, "network": "MLP 3x2048, shift-BN, shift-AdaMax",
                   "epochs": "not stated (the code trains without an epoch bound)",
                   "hardware": "GPU, model not stated"},
    },
    "svhn": {
        "Theano": {"error": 2.80, "network": "ConvNet 2x64-2x128-2x256 conv, 2x1024 FC",
                   "epochs": "200 (test at the best-validation epoch)",
                   "hardware": "GPU, Titan Black (~2 days)"},
        "Torch7": {"error": 2.53, "network": "same ConvNet, GCN + LCN input",
                   "epochs": "not stated (the code trains without an epoch bound)",
                   "hardware": "GPU, model not stated"},
    },
    "cifar10": {
        "Theano": {"error": 11.40, "network": "ConvNet 2x128-2x256-2x512 conv, 2x1024 FC",
                   "epochs": "500 (test at the best-validation epoch)",
                   "hardware": "GPU, Titan Black (~23 h)"},
        "Torch7": {"error": 10.15, "network": "same ConvNet, ZCA-whitened input",
                   "epochs": "not stated (the code trains without an epoch bound)",
                   "hardware": "GPU, model not stated"},
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


PANELS = (  # file, what, y label, (metrics key, legend label) per curve, scale to display
    (LOSS_PLOT, "loss", "{loss} loss per sample",
     (("train_loss", "training (epoch mean, train mode)"), ("val_loss", "validation"),
      ("test_loss", "test")), 1.0),
    (ERROR_PLOT, "error", "classification error (%)",
     (("train_error", "training (epoch mean, train mode)"), ("val_error", "validation"),
      ("test_error", "test")), 100.0),
)


def plot_curves(records: Sequence[dict], out_dir, title: str,
                paper_errors: dict | None = None, loss_name: str = "loss") -> list:
    """Write ``loss.png`` and ``error.png`` (train / validation / test per epoch) to out_dir.

    Loss is drawn on a linear axis from 0. Error is in percent, on a linear axis from 0, or
    on a labelled log axis when the plotted errors span more than a factor 20 (otherwise the
    late epochs, where the interesting differences are, would be flattened against 0).
    ``paper_errors`` ({label: percent}) adds horizontal reference lines to the error plot;
    ``loss_name`` labels the loss axis (e.g. "squared_hinge"). Training figures are the
    running means over each epoch in training mode (dropout on), as the training loop logs
    them.
    Returns the paths written.
    """
    plt = _pyplot()
    paths = []
    for file_name, what, ylabel, keys, scale in PANELS:
        fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
        try:
            values = _draw_curves(ax, records, keys, scale)
            if not values:
                continue
            if what == "error" and paper_errors:
                for (label, percent), color in zip(paper_errors.items(), ("tab:purple", "tab:gray")):
                    ax.axhline(percent, color=color, linestyle=":", linewidth=1.2,
                               label=f"{label}: {percent:.2f}%")
                    values.append(percent)
            _finish_axes(ax, records, values, log_allowed=what == "error",
                         ylabel=ylabel.format(loss=loss_name.replace("_", " ")),
                         title=f"{title}: {what} per epoch")
            fig.tight_layout()
            path = Path(out_dir) / file_name
            fig.savefig(path)
            paths.append(path)
        finally:
            plt.close(fig)
    return paths


def _draw_curves(ax, records: Sequence[dict], keys, scale: float) -> list:
    """Plot one line per (metrics key, label) that has values; return all plotted values."""
    shift = _epoch_axis(records)
    values = []
    for (key, label), style in zip(keys, ("-o", "-s", "-^")):
        points = _series(records, key)
        if not points:
            continue
        xs = [e + shift for e, _ in points]
        ys = [v * scale for _, v in points]
        values.extend(ys)
        ax.plot(xs, ys, style, markersize=4 if len(xs) < 60 else 0, linewidth=1.5, label=label)
    return values


def _finish_axes(ax, records: Sequence[dict], values: list, log_allowed: bool, ylabel: str,
                 title: str) -> None:
    """Best-epoch marker, y axis (linear from 0, or labelled log for wide error ranges), epoch
    ticks, grid, title and legend."""
    shift = _epoch_axis(records)
    best = best_epoch(records)["epoch"] + shift
    ax.axvline(best, color="0.4", linestyle="--", linewidth=0.8, zorder=0,
               label=f"best validation (epoch {best})")
    positive = [v for v in values if v > 0]
    if log_allowed and positive and max(positive) / min(positive) > 20:
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
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")


# -- deployment figures (exported model vs the torch model) ----------------------------------
def _load_average():
    """1-minute load average (other processes competing for the cores), or None."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def compare_deployment(model, packed, dataset, normalization, packed_file=None,
                       threads: int = 2, batch_sizes=(1, 1000), repeats: int = 15) -> dict:
    """Accuracy, agreement, size and speed of a packed model against its torch model.

    ``dataset`` is a ``binarynet.data.ImageDataset`` (uint8 images); torch sees them
    normalised with ``normalization`` = (scale, offset), the engine takes the uint8 images.
    Returns torch / engine accuracy, the number of differing predictions, float32 state_dict
    bytes vs packed file bytes, the speed rows of ``binarynet bench``
    (:func:`binarynet.speed.compare_speed`: engine vs the same network in float PyTorch,
    :func:`binarynet.export.to_torch`; interleaved repeats, medians) and the CPU they were
    measured on.
    """
    import numpy as np
    import torch

    from . import data
    from .speed import compare_speed, state_dict_bytes

    model = model.eval()
    images = dataset.images.numpy()
    labels = dataset.labels.numpy()
    torch_threads = torch.get_num_threads()
    with torch.no_grad():
        torch_pred = torch.cat([model(x).argmax(dim=1) for x, _ in data.batches(
            dataset, 1000, normalization=normalization)]).numpy()
    engine_pred = packed.predict(images).argmax(axis=1)
    packed_bytes = os.path.getsize(packed_file) if packed_file else len(packed.to_bytes())
    float_bytes = state_dict_bytes(model)
    try:
        timings = compare_speed(packed, batch_sizes, threads=threads, repeats=repeats)
    finally:
        torch.set_num_threads(torch_threads)
    return {
        "samples": int(len(labels)),
        "torch_accuracy": float(np.mean(torch_pred == labels)),
        "engine_accuracy": float(np.mean(engine_pred == labels)),
        "mismatches": int(np.sum(torch_pred != engine_pred)),
        "float32_state_dict_bytes": float_bytes,
        "packed_file_bytes": packed_bytes,
        "size_ratio": float_bytes / packed_bytes,
        "threads": threads,
        "repeats": repeats,
        "timings": timings,
        "load_average": _load_average(),
        "cpu_count": os.cpu_count(),
        "cpu": timing.cpu_description(),
    }


def deployment_lines(figures: dict) -> list:
    """Human-readable lines of :func:`compare_deployment` (used by the demo and reports)."""
    n = figures["samples"]
    same = ("all predictions identical" if figures["mismatches"] == 0 else
            f"{figures['mismatches']} of {n} predictions differ")
    lines = [
        f"torch accuracy:  {100 * figures['torch_accuracy']:.2f}% on {n:,} test images",
        f"engine accuracy: {100 * figures['engine_accuracy']:.2f}% ({same})",
        f"file size: float32 state_dict {figures['float32_state_dict_bytes']:,} B, packed "
        f"{figures['packed_file_bytes']:,} B ({figures['size_ratio']:.1f}x smaller)",
    ]
    for t in figures["timings"]:
        ratio = (f"{t['speedup']:.1f}x faster" if t["speedup"] >= 1 else
                 f"{1 / t['speedup']:.1f}x slower")
        lines.append(f"speed at batch {t['batch']}: float PyTorch {t['torch_ms']:.3f} ms, engine "
                     f"{t['engine_ms']:.3f} ms -> engine {ratio} (median of "
                     f"{figures['repeats']}, {figures['threads']} threads)")
    if figures.get("cpu"):
        lines.append(f"(measured on {figures['cpu']})")
    if figures.get("load_average") is not None:
        lines.append(f"(load average {figures['load_average']} on {figures['cpu_count']} CPUs "
                     f"while timing: other work on the machine slows both sides)")
    return lines


# -- the Markdown report ---------------------------------------------------------------------
def _percent(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _read_config(run_dir: Path) -> dict:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise BinarynetError(f"{path} does not exist: is {run_dir} a binarynet run directory "
                             f"(made by `binarynet train --out DIR`)?")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise BinarynetError(f"{path} cannot be read as JSON: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("recipe"), dict):
        raise BinarynetError(f"{path} has no 'recipe' object; not a binarynet run config")
    return config


def find_packed_model(run_dir, model_file=None):
    """The exported model a report measures: ``model_file`` if given, else ``model.bnn`` in the
    run folder, else its only ``*.bnn``; None when there is none."""
    if model_file is not None:
        return Path(model_file)
    run_dir = Path(run_dir)
    if (run_dir / MODEL_FILE).is_file():
        return run_dir / MODEL_FILE
    found = sorted(run_dir.glob("*.bnn"))
    return found[0] if len(found) == 1 else None


def _has_validation(records: Sequence[dict]) -> bool:
    """Whether any epoch has a validation error (runs without a validation split report the
    last epoch instead of the best-validation one)."""
    return any(_series([r], "val_error") for r in records)


def _result_rows(records: Sequence[dict], best: dict) -> list:
    shift = _epoch_axis(records)
    rows = ["| | epoch | train loss | train error | validation error | test error |",
            "|---|---|---|---|---|---|"]
    chosen = (("best validation", best),) if _has_validation(records) else ()
    for label, record in chosen + (("last", records[-1]),):
        loss = record.get("train_loss")
        loss_text = f"{loss:.4f}" if isinstance(loss, (int, float)) else "-"
        rows.append(f"| {label} | {record['epoch'] + shift} | {loss_text} | "
                    f"{_percent(record.get('train_error'))} | "
                    f"{_percent(record.get('val_error'))} | {_percent(record.get('test_error'))} |")
    return rows


def _duration(seconds: float) -> str:
    """``3725`` -> ``"1:02:05"``; ``65`` -> ``"1:05"``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _recipe_changes(recipe: dict) -> list:
    """``field=value`` for each field of a run's recipe that differs from the registered
    recipe of that name (the run's --epochs / --set overrides); [] if the name is unknown."""
    from .train import recipes

    try:
        registered = recipes.get(recipe.get("name")).to_dict()
    except ValueError:
        return []
    changes = [f"{key}={recipe[key]}" for key in sorted(registered)
               if key not in ("model_overrides", "description") and key in recipe
               and recipe[key] != registered[key]]
    model, base = recipe.get("model_overrides") or {}, registered["model_overrides"]
    changes += [f"model.{key}={model[key]}" for key in sorted(model) if base.get(key) != model[key]]
    return changes


def _paper_rows(recipe: dict, config: dict, records: Sequence[dict], best: dict) -> list:
    paper = PAPER_TABLE1.get(recipe.get("dataset"))
    if not paper:
        return [f"The paper's Table 1 has no row for dataset {recipe.get('dataset')!r}."]
    shift = _epoch_axis(records)
    overrides = recipe.get("model_overrides") or {}
    network = recipe.get("model", "?") + (
        " (" + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())) + ")" if overrides else
        " (paper defaults)")
    elapsed = records[-1].get("elapsed_s")
    hours = f", {_duration(elapsed)} wall time" if isinstance(elapsed, (int, float)) else ""
    threads = config.get('threads', '?')
    hardware = (f"{config.get('device', '?')}, {threads} thread{'' if threads == 1 else 's'}"
                f"{', ' + str(config.get('world_size')) + ' processes' if config.get('world_size', 1) > 1 else ''}"
                f"{hours}")
    epoch = best["epoch"] + shift
    when = (f"at the best-validation epoch {epoch}" if _has_validation(records) else
            f"after the last epoch, {epoch}: no validation split")
    rows = ["| | test error | network | epochs | hardware |", "|---|---|---|---|---|",
            f"| **this run** ({when}) | "
            f"**{_percent(best.get('test_error'))}** | {network} | "
            f"{len(records)} of {recipe.get('epochs', '?')} planned | {hardware} |"]
    for name in ("Theano", "Torch7"):
        row = paper[name]
        rows.append(f"| BNN ({name}), paper Table 1 | {row['error']:.2f}% | {row['network']} | "
                    f"{row['epochs']} | {row['hardware']} |")
    return rows


@dataclasses.dataclass
class RunContents:
    """Everything a report reads from a run folder, read and checked before anything is
    written."""
    path: Path
    config: dict
    records: list
    checkpoint: Path | None = None  # best.pt, else last.pt
    model: object = None            # the torch model of ``checkpoint``
    recipe: object = None           # its binarynet.train.recipes.Recipe
    normalization: tuple | None = None
    packed_path: Path | None = None
    packed: object = None           # binarynet.engine.PackedModel of ``packed_path``


def read_run(run_dir, model_file=None) -> RunContents:
    """Read and check a run folder: config, metrics, checkpoint (best.pt, else last.pt) and
    the exported model (:func:`find_packed_model`). Raises BinarynetError (a CheckpointError,
    ModelFileError...) naming the first thing that cannot be read; writes nothing."""
    from . import engine
    from .train.checkpoint import load_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BinarynetError(f"run folder {run_dir} does not exist")
    run = RunContents(run_dir, _read_config(run_dir), read_metrics(run_dir / METRICS_FILE))
    run.checkpoint = next((run_dir / n for n in (BEST, LAST) if (run_dir / n).is_file()), None)
    if run.checkpoint is not None:
        run.model, run.recipe, run.normalization = load_model(run.checkpoint)
    run.packed_path = find_packed_model(run_dir, model_file)
    if run.packed_path is not None:
        if not run.packed_path.is_file():
            raise BinarynetError(f"exported model {run.packed_path} does not exist")
        run.packed = engine.load(run.packed_path)
    return run


def write_report(run_dir, data_dir=None, threads: int = 2, engine: bool = True,
                 repeats: int = 15, deployment: dict | None = None, model_file=None) -> Path:
    """Write ``loss.png``, ``error.png`` and ``report.md`` into a run folder; return the
    report's path.

    The report holds the run's config, its best-validation epoch and the test error there
    beside the paper's Table 1 row, the plots, the model summary (of ``best.pt``) and, when
    there is an exported model (``model_file``, else ``model.bnn`` in the folder) and
    ``engine`` is true, the engine's test accuracy, agreement with torch, file sizes and speed
    (:func:`compare_deployment`; the test split is read from ``data_dir`` /
    ``$BINARYNET_DATA`` / the cache). ``deployment`` passes figures already measured by
    :func:`compare_deployment` (the demo) instead. Everything is read and checked (and
    matplotlib found) before the first file is written.
    """
    _pyplot()
    run = read_run(run_dir, model_file)
    recipe = run.config["recipe"]
    lines = _report_lines(run)
    if run.packed_path is not None:
        lines += [f"## Exported model ({run.packed_path.name})", ""]
        lines += _deployment_section(run, data_dir, threads, engine, repeats, deployment)
        lines.append("")
    else:
        lines += ["## Exported model", "", f"No exported model in the folder: run `binarynet "
                  f"export {run.path}` (it writes {MODEL_FILE} there) or give --model FILE.bnn, "
                  "then report again for the engine's accuracy, size and speed.", ""]
    lines += ["## Configuration", "", "```json", json.dumps(run.config, indent=2, sort_keys=True),
              "```", ""]
    paper = PAPER_TABLE1.get(recipe.get("dataset"))
    plot_curves(run.records, run.path, recipe.get("name", run.path.name),
                {f"paper Table 1, {k}": v["error"] for k, v in paper.items()} if paper else None,
                loss_name=str(recipe.get("loss", "loss")))
    path = run.path / REPORT_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _report_lines(run: RunContents) -> list:
    """The report's Markdown up to the exported-model section: recipe, result, paper
    comparison, curves and the model summary."""
    from .summary import recipe_input, summary

    config, records, recipe = run.config, run.records, run.config["recipe"]
    best = best_epoch(records)
    lines = [f"# Training report: {run.path.name}", "",
             f"Recipe `{recipe.get('name')}`: {recipe.get('description', '')}"]
    changes = _recipe_changes(recipe)
    if changes:
        lines.append(f"This run changed the recipe: {', '.join(changes)}.")
    lines += ["", f"Dataset `{recipe.get('dataset')}` ({config.get('train_samples', '?')} "
              f"training samples), normalisation `{recipe.get('normalization')}`, optimizer "
              f"`{recipe.get('optimizer')}` lr {recipe.get('lr')} -> {recipe.get('lr_end')} "
              f"({recipe.get('lr_schedule')}), batch "
              f"{config.get('global_batch_size', recipe.get('batch_size'))}, loss "
              f"`{recipe.get('loss')}`, seed {recipe.get('seed')}; binarynet "
              f"{config.get('binarynet_version', '?')}, torch {config.get('torch_version', '?')}."]
    lines += ["", "## Result", ""] + _result_rows(records, best)
    rule = ("the best-validation epoch (the paper's protocol)" if _has_validation(records) else
            "the last epoch (the run has no validation split)")
    lines += ["", f"Test error at {rule}: **{_percent(best.get('test_error'))}**.", ""]
    lines += ["## Against the paper", ""] + _paper_rows(recipe, config, records, best)
    lines += ["", "## Curves", "", f"![loss per epoch]({LOSS_PLOT})", "",
              f"![error per epoch]({ERROR_PLOT})", ""]
    if run.checkpoint is None:
        return lines + ["## Model summary", "", f"No checkpoint ({BEST} / {LAST}) in the folder.",
                        ""]
    shape, _ = recipe_input(run.recipe)
    bits = 8 if len(set(run.normalization[0])) == 1 else 32
    return lines + [f"## Model summary ({run.checkpoint.name})", "",
                    summary(run.model, shape, bits).to_markdown(), ""]


def _deployment_section(run: RunContents, data_dir, threads, engine, repeats, figures) -> list:
    from .summary import summary

    packed_summary = summary(str(run.packed_path))
    lines = ["Engine ops of the packed file:", "", packed_summary.to_markdown(footer=False), "",
             f"File on disk: {packed_summary.file_bytes:,} bytes (tensors "
             f"{packed_summary.packed_bytes:,} + header {packed_summary.header_bytes:,}).", ""]
    if figures is not None:
        return lines + [f"- {line}" for line in deployment_lines(figures)] + ["", BASELINE_NOTE]
    if not engine:
        return lines + ["(engine measurement skipped: --no-engine)"]
    if run.model is None:
        return lines + ["No checkpoint to compare the engine with."]
    from .errors import DataError
    from .train.loop import RunOptions, load_split

    recipe = run.recipe
    try:
        test = load_split(recipe, recipe.test_split or "test", RunOptions(data_dir=data_dir),
                          recipe.max_eval_samples)
    except DataError as exc:
        return lines + [f"Engine accuracy and speed not measured: the test data is missing "
                        f"({exc}). Give --data-dir or set BINARYNET_DATA."]
    figures = compare_deployment(run.model, run.packed, test, run.normalization,
                                 packed_file=run.packed_path, threads=threads, repeats=repeats)
    return lines + [f"- {line}" for line in deployment_lines(figures)] + ["", BASELINE_NOTE]


BASELINE_NOTE = ("Float PyTorch = the same network in plain float32 torch ops "
                 "(binarynet.export.to_torch: Linear/Conv2d with the +-1 weights, BatchNorm, "
                 "sign) on normalised float input; the engine takes uint8 images. Timings as "
                 "`binarynet bench`: interleaved repetitions, medians.")
