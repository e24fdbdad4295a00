"""What a training run prints on stderr (rank 0): the start line, one line per epoch, the summary."""
from __future__ import annotations

import sys

from .metrics import format_duration


def _print(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def announce(recipe, progress: dict, *, steps_per_epoch: int, batch_size: int, ctx, out: str) -> None:
    """The run's first line: what it trains, from where, how, on which device, into which folder."""
    if progress["epoch"] >= recipe.epochs:
        start = "already finished"
    elif progress["global_step"]:
        start = f"resuming at epoch {progress['epoch'] + 1}, step {progress['global_step']}"
    else:
        start = "starting"
    processes = f" ({batch_size} x {ctx.world_size} processes)" if ctx.distributed else ""
    _print(f"binarynet train: {recipe.name} ({recipe.model} on {recipe.dataset}), {start}; {recipe.epochs} epochs x "
           f"{steps_per_epoch} steps of {batch_size * ctx.world_size} samples{processes} on {ctx.device}; "
           f"run folder {out}")


def batch_change_note(stored_batch: int, batch_size: int, world_size: int, lr_factor: float) -> None:
    """Why a run resumed with another number of processes keeps its learning rate."""
    _print(f"note: the global batch changes from {stored_batch} to {batch_size * world_size} "
           f"({batch_size} x {world_size} processes); the learning rate keeps its "
           f"factor {lr_factor:g}. Pass --batch-size {stored_batch // world_size} to keep the batch")


def epoch_line(record: dict, epochs: int, improved: bool) -> None:
    """One line per finished epoch (a star marks a new best validation error)."""
    parts = [f"epoch {record['epoch']}/{epochs}", f"lr {record['lr']:.3g}",
             f"train loss {record['train_loss']:.4f} err {100 * record['train_error']:.2f}%"]
    if record["val_error"] is not None:
        parts.append(f"val err {100 * record['val_error']:.2f}%")
    if record["test_error"] is not None:
        parts.append(f"test err {100 * record['test_error']:.2f}%")
    star = " *" if improved and record["val_error"] is not None else ""
    parts.append(f"{format_duration(record['epoch_time_s'])}{star}")
    _print(" | ".join(parts))


def summary_line(summary: dict) -> None:
    """The run's last line: paper protocol numbers and where the checkpoints are."""
    parts = [f"done: {summary['epochs']} epochs in {format_duration(summary['elapsed_s'])}"]
    if summary["best_val_error"] is not None:
        parts.append(f"best validation error {100 * summary['best_val_error']:.2f}% at epoch {summary['best_epoch']}")
    if summary["test_error_at_best"] is not None:
        parts.append(f"test error there {100 * summary['test_error_at_best']:.2f}%")
    parts.append(f"checkpoints in {summary['out']}")
    _print("binarynet train: " + "; ".join(parts))
