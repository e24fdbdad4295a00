"""Metrics: sums that ranks can add, the progress bar, JSON lines, TensorBoard's absence."""
import importlib.util
import io
import math

import pytest
import torch

from binarynet.errors import BinarynetError
from binarynet.train import metrics


def test_totals_are_sums():
    t = metrics.Totals()
    t.add(0.5, 8, 10)
    t.add(1.0, 2, 10)
    assert (t.loss_sum, t.correct, t.count) == (15.0, 10, 20)
    assert t.loss == 0.75 and t.error == 0.5
    back = metrics.Totals.from_tensor(t.as_tensor() * 2)  # e.g. two ranks with equal shards
    assert (back.loss, back.error, back.count) == (0.75, 0.5, 40)
    assert math.isnan(metrics.Totals().error)


def test_format_duration():
    assert metrics.format_duration(65) == "1:05"
    assert metrics.format_duration(3725) == "1:02:05"
    assert metrics.format_duration(math.inf) == "?"


def test_progress_bar_line_in_a_log_file():
    stream = io.StringIO()  # not a terminal: one line per update interval, no carriage returns
    bar = metrics.ProgressBar(10, "epoch 1/3", stream=stream, log_interval=0.0)
    bar.start -= 2.0  # pretend 2 s elapsed
    bar.update(5, 500, 0.4321, 0.875)
    line = stream.getvalue().splitlines()[-1]
    assert line.startswith("epoch 1/3 [##########..........] 5/10 loss 0.4321 acc 87.50%")
    rate = float(line.split(" samples/s")[0].rsplit(" ", 1)[1])
    assert 200 <= rate <= 250  # 500 samples in ~2 s
    assert "ETA 0:02" in line  # 5 steps left at ~2.5 steps/s
    assert "\r" not in stream.getvalue()


def test_progress_bar_on_a_terminal_redraws_in_place():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    bar = metrics.ProgressBar(4, "e", stream=stream, interval=0.0)
    bar.update(1, 10, 1.0, 0.5)
    bar.update(4, 40, 1.0, 0.5)
    bar.close()
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and "4/4" in text


def test_resumed_epoch_eta_uses_this_sessions_rate():
    bar = metrics.ProgressBar(100, "e", stream=io.StringIO(), initial_step=50, log_interval=0.0)
    bar.start -= 10.0
    bar.update(60, 1000, 1.0, 0.5)  # 10 steps in 10 s, 40 left
    assert "ETA 0:40" in bar.line(1.0, 0.5)


def test_metrics_log_append_truncate_read(tmp_path):
    log = metrics.MetricsLog(tmp_path / "m.jsonl")
    for epoch in (1, 2, 3):
        log.append({"epoch": epoch, "train_loss": 1.0 / epoch})
    log.truncate_after(3)
    assert [r["epoch"] for r in metrics.read_metrics(tmp_path / "m.jsonl")] == [1, 2]
    with open(tmp_path / "m.jsonl", "a") as f:
        f.write('{"epoch": 3, "trai')  # a record cut by a crash
    assert [r["epoch"] for r in metrics.read_metrics(tmp_path / "m.jsonl")] == [1, 2]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_missing_gives_a_clear_error(tmp_path):
    with pytest.raises(BinarynetError, match="pip install tensorboard"):
        metrics.TensorBoardLog(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_writes_event_files(tmp_path):
    log = metrics.TensorBoardLog(tmp_path)
    log.append({"epoch": 1, "train_loss": 0.5, "val_error": None})
    log.close()
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())


def test_totals_tensor_is_float64():
    assert metrics.Totals().as_tensor().dtype == torch.float64
