"""Exact resume: a run killed (SIGKILL) or interrupted (SIGINT) mid-epoch and resumed ends with
the same weights, optimizer state and metrics as an uninterrupted run (subprocesses)."""
import os
import signal
import subprocess
import sys

import pytest
import torch

from binarynet.train import checkpoint, metrics

# Runs the CLI, but sends itself `sig` when the loop is about to run global step `at_step`.
SIGNAL_AT_STEP = """
import os, sys
from binarynet.cli import main
from binarynet.train import loop
sig, at_step = int(sys.argv[1]), int(sys.argv[2])
original = loop.Trainer.train_step
def train_step(self, indices):
    if self.progress["global_step"] == at_step:
        os.kill(os.getpid(), sig)
    return original(self, indices)
loop.Trainer.train_step = train_step
sys.exit(main(sys.argv[3:]))
"""

# 3 epochs x 10 steps of 100 samples.
TRAIN = ["train", "--recipe", "synthetic_mlp", "--epochs", "3", "--set", "max_train_samples=1000",
         "--set", "max_eval_samples=200", "--set", "model.hidden=64", "--set", "model.dropout_hidden=0.2",
         "--threads", "1", "--no-progress"]
TIMING = ("epoch_time_s", "elapsed_s", "samples_per_s")


def cli(args, script=None, extra=()):
    command = [sys.executable, "-c", script, *extra] if script else [sys.executable, "-m", "binarynet"]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    done = cli(TRAIN + ["--out", str(out)])
    assert done.returncode == 0, done.stderr
    return out


def assert_same_run(out, reference):
    got, want = checkpoint.load(out / "last.pt"), checkpoint.load(reference / "last.pt")
    assert got["model"].keys() == want["model"].keys()
    for key, value in want["model"].items():
        assert torch.equal(got["model"][key], value), key
    for index, state in want["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(got["optimizer"]["state"][index][name]), torch.as_tensor(value))
    assert got["progress"] == {**want["progress"], "elapsed_s": got["progress"]["elapsed_s"]}
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING} for r in rs]  # noqa: E731
    assert strip(metrics.read_metrics(out / "metrics.jsonl")) == strip(metrics.read_metrics(reference / "metrics.jsonl"))


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, reference):
    out = tmp_path / "run"
    killed = cli(TRAIN + ["--out", str(out), "--checkpoint-every-steps", "4"], SIGNAL_AT_STEP,
                 [str(int(signal.SIGKILL)), "17"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    saved = checkpoint.load(out / "last.pt")["progress"]
    assert (saved["epoch"], saved["epoch_position"], saved["global_step"]) == (1, 600, 16)  # mid-epoch 2
    assert not list(out.glob("*.tmp"))
    resumed = cli(["train", "--resume", "--out", str(out), "--threads", "1", "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at epoch 2, step 16" in resumed.stderr
    assert_same_run(out, reference)


def test_sigint_finishes_the_step_saves_and_says_how_to_resume(tmp_path, reference):
    out = tmp_path / "run"
    stopped = cli(TRAIN + ["--out", str(out)], SIGNAL_AT_STEP, [str(int(signal.SIGINT)), "13"])
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr
    assert f"Resume with: binarynet train --resume --out {out}" in stopped.stderr
    saved = checkpoint.load(out / "last.pt")["progress"]
    assert (saved["epoch"], saved["epoch_position"], saved["global_step"]) == (1, 400, 14)
    resumed = cli(["train", "--resume", str(out / "last.pt"), "--threads", "1", "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(out, reference)


def test_sigterm_stops_like_sigint(tmp_path):
    out = tmp_path / "run"
    stopped = cli(TRAIN + ["--out", str(out)], SIGNAL_AT_STEP, [str(int(signal.SIGTERM)), "3"])
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert "interrupted by signal 15 at epoch 1, global step 4" in stopped.stderr
    saved = checkpoint.load(out / "last.pt")["progress"]
    assert (saved["epoch"], saved["epoch_position"], saved["global_step"]) == (0, 400, 4)
