"""`torchrun -m binarynet train` with 2 Gloo processes on 127.0.0.1: equal to one process on the
global batch, a failing rank ends the job, and a run resumes with another number of processes."""
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from binarynet.train import RunOptions, checkpoint, metrics, recipes, train

# 2 epochs x 4 steps of 100 samples (global), standard BN, no dropout, lr not scaled.
RECIPE_ARGS = ["--recipe", "synthetic_mlp", "--epochs", "2", "--set", "max_train_samples=400",
               "--set", "max_eval_samples=300", "--set", "model.hidden=64", "--set", "lr_scaling=none"]
OVERRIDES = {"epochs": 2, "max_train_samples": 400, "max_eval_samples": 300, "model.hidden": 64,
             "lr_scaling": "none", "batch_size": 100}

# The CLI, with a hook run at the start of every step: `python -c HOOKED 'code' cli-args...`
HOOKED = """
import os, signal, sys
from binarynet.cli import main
from binarynet.train import loop
hook = compile(sys.argv[1], "hook", "exec")
original = loop.Trainer.train_step
def train_step(self, indices):
    exec(hook, {"self": self, "os": os, "signal": signal})
    return original(self, indices)
loop.Trainer.train_step = train_step
sys.exit(main(sys.argv[2:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args, tmp_path, hook=None, timeout=150):
    """Run `torchrun --nproc_per_node 2 -m binarynet ...` (or the hooked CLI as a script)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    if hook is None:
        command = launcher + ["-m", "binarynet", *args]
    else:
        script = tmp_path / "hooked_cli.py"
        script.write_text(HOOKED)
        command = launcher + [str(script), hook, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The reference: one process, batch 100."""
    out = tmp_path_factory.mktemp("single") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recipe = recipes.apply_overrides(recipes.get("synthetic_mlp"), OVERRIDES)
        train(recipe, RunOptions(out=str(out), progress=False))
    finally:
        torch.set_num_threads(threads)
    return out


def assert_matches(out, reference):
    got, want = checkpoint.load(out / "last.pt"), checkpoint.load(reference / "last.pt")
    assert got["progress"]["global_step"] == want["progress"]["global_step"]
    for name, value in want["model"].items():
        layer = int(name.split(".")[0])
        if name.endswith("num_batches_tracked"):
            assert torch.equal(got["model"][name], value)
        elif layer in (1, 4, 7) and name.endswith(".bias") or name.endswith("running_mean"):
            # The bias of a binary layer feeds a BN, so its exact gradient is 0; Adam turns the
            # round-off left (~1e-9, different in 2 processes) into steps of up to ~lr, and the
            # running means see those biases. Outputs do not depend on them (the BN removes them).
            torch.testing.assert_close(got["model"][name], value, rtol=0, atol=0.05, msg=name)
        else:  # latent weights, BN gamma/beta, running variances
            torch.testing.assert_close(got["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    runs = metrics.read_metrics(out / "metrics.jsonl"), metrics.read_metrics(reference / "metrics.jsonl")
    for a, b in zip(*runs, strict=True):
        assert a["train_error"] == b["train_error"] and a["val_error"] == b["val_error"]
        assert a["test_error"] == b["test_error"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


def test_ddp_two_processes_equal_one_process_on_the_global_batch(tmp_path, single):
    out = tmp_path / "ddp"
    done = torchrun(["train", *RECIPE_ARGS, "--batch-size", "50", "--threads", "1", "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 steps of 100 samples (50 x 2 processes)" in done.stderr
    assert done.stderr.count("binarynet train: done") == 1  # rank 0 reports
    config = checkpoint.load(out / "last.pt")["config"]
    assert (config["world_size"], config["global_batch_size"]) == (2, 100)
    assert_matches(out, single)


def test_ddp_mid_epoch_checkpoints_do_not_change_the_run(tmp_path, single):
    # A checkpoint every 3 steps all-reduces the epoch's running sums; each rank's own sums must
    # go on unchanged (they were once summed in place, inflating the epoch's train metrics).
    out = tmp_path / "ddp"
    done = torchrun(["train", *RECIPE_ARGS, "--batch-size", "50", "--threads", "1", "--checkpoint-every-steps",
                     "3", "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_matches(out, single)


def test_ddp_two_nodes_with_c10d_rendezvous_equal_one_process(tmp_path, single):
    # Two torchrun launchers stand for two machines: one process each (LOCAL_RANK 0 on both),
    # joined by the c10d rendezvous as `torchrun --nnodes 2 --rdzv-backend c10d` documents.
    out = tmp_path / "ddp"
    endpoint = f"127.0.0.1:{free_port()}"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "two-nodes"]
    command = launcher + ["-m", "binarynet", "train", *RECIPE_ARGS, "--batch-size", "50", "--threads", "1",
                          "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    nodes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    try:
        outputs = [node.communicate(timeout=150) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for node, (_, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stderr[-3000:]
    assert sum(stderr.count("binarynet train: done") for _, stderr in outputs) == 1  # global rank 0
    config = checkpoint.load(out / "last.pt")["config"]
    assert (config["world_size"], config["global_batch_size"]) == (2, 100)
    assert_matches(out, single)


def test_a_failing_rank_ends_the_job_with_an_error(tmp_path):
    hook = ("if self.ctx.rank == 1 and self.progress['global_step'] == 2:\n"
            "    raise RuntimeError('injected failure on rank 1')")
    start = time.monotonic()
    done = torchrun(["train", *RECIPE_ARGS, "--batch-size", "50", "--threads", "1", "--dist-timeout", "30",
                     "--out", str(tmp_path / "run")], tmp_path, hook=hook, timeout=120)
    elapsed = time.monotonic() - start
    assert done.returncode != 0
    assert "injected failure on rank 1" in done.stderr
    assert elapsed < 90, f"took {elapsed:.0f} s"


def test_resume_with_another_number_of_processes(tmp_path, single):
    # 2 processes x 50, stopped by SIGINT on rank 0 at global step 5 (epoch 2, mid-epoch) ...
    out = tmp_path / "run"
    hook = ("if self.ctx.rank == 0 and self.progress['global_step'] == 5:\n"
            "    os.kill(os.getpid(), signal.SIGINT)")
    stopped = torchrun(["train", *RECIPE_ARGS, "--batch-size", "50", "--threads", "1", "--out", str(out)],
                       tmp_path, hook=hook)
    assert stopped.returncode != 0
    assert "Resume with: binarynet train --resume --out" in stopped.stderr
    saved = checkpoint.load(out / "last.pt")["progress"]
    assert (saved["epoch"], saved["epoch_position"], saved["global_step"]) == (1, 200, 6)
    # ... then finished by one process with batch 100: the same global batch.
    train(None, RunOptions(out=str(out), resume=str(out / "last.pt"), resume_batch_size=100, progress=False))
    assert_matches(out, single)


BOP = {"optimizer": "bop_adam", "bop_threshold": 1e-6, "bop_gamma": 0.01}


def test_ddp_with_bop_equals_one_process_on_the_global_batch(tmp_path):
    # Gradients are all-reduced before Bop's step, so both ranks make the flips that one process
    # makes on the global batch: the binary weights (+-1) are equal exactly.
    reference = tmp_path / "single"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recipe = recipes.apply_overrides(recipes.get("synthetic_mlp"), {**OVERRIDES, **BOP})
        train(recipe, RunOptions(out=str(reference), progress=False))
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "ddp"
    args = [a for k, v in BOP.items() for a in ("--set", f"{k}={v}")]
    done = torchrun(["train", *RECIPE_ARGS, *args, "--batch-size", "50", "--threads", "1", "--out", str(out)],
                    tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_matches(out, reference)
    got, want = checkpoint.load(out / "last.pt")["model"], checkpoint.load(reference / "last.pt")["model"]
    for name in ("1.weight", "4.weight", "7.weight"):  # the binary layers of synthetic_mlp
        assert set(want[name].unique().tolist()) == {-1.0, 1.0}
        assert torch.equal(got[name], want[name]), name
    ratios = [[r["flip_ratio"] for r in metrics.read_metrics(folder / "metrics.jsonl")] for folder in (out, reference)]
    assert ratios[0] == ratios[1] and all(r > 0 for r in ratios[1])
