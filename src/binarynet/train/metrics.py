"""What a run reports: accumulated loss/error, a stderr progress bar, a JSON-lines metrics
file and (optionally) TensorBoard scalars."""
from __future__ import annotations

import json
import math
import os
import sys
import time

import torch

from ..errors import BinarynetError


class Totals:
    """Sums over a pass: ``loss_sum`` (loss x samples), ``correct``, ``count``.

    Kept as sums (not means) so that distributed ranks combine them with one all-reduce.
    """

    def __init__(self):
        self.loss_sum = 0.0
        self.correct = 0
        self.count = 0

    def add(self, loss_mean: float, correct: int, count: int) -> None:
        """Add a batch whose mean loss is ``loss_mean`` and that has ``correct`` of ``count`` right."""
        self.loss_sum += loss_mean * count
        self.correct += correct
        self.count += count

    def as_tensor(self) -> torch.Tensor:
        """``[loss_sum, correct, count]`` in float64 (for ``all_reduce``)."""
        return torch.tensor([self.loss_sum, self.correct, self.count], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, values: torch.Tensor) -> "Totals":
        """Inverse of :meth:`as_tensor`."""
        totals = cls()
        totals.loss_sum, correct, count = (float(v) for v in values.tolist())
        totals.correct, totals.count = int(round(correct)), int(round(count))
        return totals

    @property
    def loss(self) -> float:
        """Mean loss per sample (nan when empty)."""
        return self.loss_sum / self.count if self.count else math.nan

    @property
    def error(self) -> float:
        """Fraction of misclassified samples (nan when empty)."""
        return 1.0 - self.correct / self.count if self.count else math.nan


def format_duration(seconds: float) -> str:
    """``3725`` -> ``"1:02:05"``; ``65`` -> ``"1:05"``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """One status line on stderr per epoch: step, loss, accuracy, samples/s and ETA.

    On a terminal the line is redrawn in place (carriage return) at most every ``interval``
    seconds; otherwise (log files) a line is printed every ``log_interval`` seconds, so logs
    stay short. No dependency beyond the standard library.
    """

    def __init__(self, total_steps: int, desc: str, stream=None, interval: float = 0.2,
                 log_interval: float = 30.0, enabled: bool = True, initial_step: int = 0):
        self.total = total_steps
        self.initial = initial_step  # steps already done before this session (resumed epoch)
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.is_tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval if self.is_tty else log_interval
        self.start = time.monotonic()
        self.last_draw = -math.inf
        self.steps_done = initial_step
        self.samples = 0

    def due(self, step: int) -> bool:
        """Whether :meth:`update` for ``step`` would draw (callers then fetch loss and accuracy,
        which may need a device synchronisation)."""
        return self.enabled and (time.monotonic() - self.last_draw >= self.interval or step == self.total)

    def update(self, step: int, samples: int, loss: float, accuracy: float) -> None:
        """Record that ``step`` of ``total`` is done, ``samples`` samples in this session, and
        draw if due."""
        due = self.due(step)
        self.steps_done, self.samples = step, samples
        if due:
            self.last_draw = time.monotonic()
            self._draw(self.line(loss, accuracy, self.last_draw))

    def line(self, loss: float, accuracy: float, now: float | None = None) -> str:
        """The status text (without line ending)."""
        elapsed = (time.monotonic() if now is None else now) - self.start
        rate = self.samples / elapsed if elapsed > 0 else 0.0
        steps_per_s = (self.steps_done - self.initial) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.steps_done) / steps_per_s if steps_per_s > 0 else math.inf
        width = 20
        filled = int(width * self.steps_done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        return (f"{self.desc} [{bar}] {self.steps_done}/{self.total} loss {loss:.4f} "
                f"acc {100 * accuracy:.2f}% {rate:.0f} samples/s "
                f"elapsed {format_duration(elapsed)} ETA {format_duration(eta)}")

    def close(self, text: str | None = None) -> None:
        """End the line (and print ``text`` on its own line if given)."""
        if not self.enabled:
            return
        if self.is_tty:
            self.stream.write("\n")
        if text:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _draw(self, text: str) -> None:
        if self.is_tty:
            self.stream.write("\r" + text + "\x1b[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


class MetricsLog:
    """Append-only JSON-lines file, one record per epoch (flushed and fsynced per record)."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def append(self, record: dict) -> None:
        """Write ``record`` as one JSON line."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, epoch: int) -> None:
        """Drop records of epochs >= ``epoch`` (a resumed run rewrites them)."""
        records = read_metrics(self.path) if os.path.exists(self.path) else []
        kept = [r for r in records if r.get("epoch", -1) < epoch]
        with open(self.path, "w", encoding="utf-8") as f:
            for record in kept:
                f.write(json.dumps(record, sort_keys=True) + "\n")


def read_metrics(path) -> list:
    """The records of a metrics JSON-lines file (a partial last line is ignored)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def require_tensorboard():
    """``torch.utils.tensorboard.SummaryWriter``, or BinarynetError saying how to get it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise BinarynetError(
            "--tensorboard needs the tensorboard package, which is not installed: "
            "pip install tensorboard (or run without --tensorboard; metrics.jsonl has the same numbers)"
        ) from None
    return SummaryWriter


class TensorBoardLog:
    """Scalars to TensorBoard via ``torch.utils.tensorboard`` (needs the ``tensorboard`` package)."""

    def __init__(self, log_dir):
        self.writer = require_tensorboard()(log_dir=os.fspath(log_dir))

    def append(self, record: dict) -> None:
        """Log every numeric field of an epoch record at step ``record["epoch"]``."""
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
