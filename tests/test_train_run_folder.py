"""The run folder a training run writes: no empty folder after a failed start, no temporary
files of a killed save left behind (in-process runs on the generated dataset)."""
import os

import pytest

from binarynet.data import datadir
from binarynet.errors import DataError
from binarynet.train import RunOptions, loop, recipes, train

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_recipe(**overrides):
    values = {"epochs": 1, "max_train_samples": 200, "max_eval_samples": 100, "model.hidden": 16}
    return recipes.apply_overrides(recipes.get("synthetic_mlp"), values | overrides)


def run(out, recipe, **options):
    return train(recipe, RunOptions(out=str(out), progress=False, **options))


def fail_at_step(monkeypatch, step):
    original = loop.Trainer.train_step

    def train_step(self, indices):
        if self.progress["global_step"] == step:
            raise RuntimeError("boom")
        return original(self, indices)

    monkeypatch.setattr(loop.Trainer, "train_step", train_step)


def test_a_run_without_its_data_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(datadir, "SYSTEM_DATA_DIRS", ())
    recipe = recipes.apply_overrides(recipes.get("mnist_mlp_quick"), {"epochs": 1})
    with pytest.raises(DataError, match="'mnist' \\(train\\) not found"):
        run(tmp_path / "runs" / "a", recipe, data_dir=str(tmp_path / "no-data"))
    assert os.listdir(tmp_path) == []  # neither runs/a nor runs/


def test_a_run_failing_in_its_first_epoch_leaves_no_folder(tmp_path, monkeypatch):
    fail_at_step(monkeypatch, 1)
    with pytest.raises(RuntimeError, match="boom"):
        run(tmp_path / "a", tiny_recipe())
    assert not (tmp_path / "a").exists()


def test_a_failed_run_keeps_a_folder_it_did_not_create(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("mine")
    fail_at_step(monkeypatch, 1)
    with pytest.raises(RuntimeError, match="boom"):
        run(tmp_path / "a", tiny_recipe())
    assert "notes.txt" in os.listdir(tmp_path / "a")


def test_a_failed_run_keeps_what_else_its_folder_holds(tmp_path, monkeypatch):
    def drop_a_file_then_fail(self, indices):
        (tmp_path / "a" / "notes.txt").write_text("written meanwhile")
        raise RuntimeError("boom")

    monkeypatch.setattr(loop.Trainer, "train_step", drop_a_file_then_fail)
    with pytest.raises(RuntimeError, match="boom"):
        run(tmp_path / "a", tiny_recipe())
    assert os.listdir(tmp_path / "a") == ["notes.txt"]  # config.json and metrics.jsonl removed


def test_a_run_failing_after_its_first_checkpoint_keeps_its_folder(tmp_path, monkeypatch):
    fail_at_step(monkeypatch, 3)
    with pytest.raises(RuntimeError, match="boom"):
        run(tmp_path / "a", tiny_recipe(epochs=2))
    assert {"config.json", "metrics.jsonl", "last.pt", "best.pt"} <= set(os.listdir(tmp_path / "a"))


def test_resume_removes_the_temp_files_of_a_killed_save(tmp_path):
    run(tmp_path / "a", tiny_recipe())
    stale = ["last.pt.k2j3h4g5.tmp", "best.pt.a_b_c_d_.tmp"]
    kept = ["notes.tmp", "last.pt.bak", "best.pt.tmp.txt", "last.pt.toolong12.tmp"]
    for name in stale + kept:
        (tmp_path / "a" / name).write_bytes(b"partial")
    summary = run(tmp_path / "a", None, resume=str(tmp_path / "a" / "last.pt"))
    assert summary["epochs"] == 1
    assert sorted(os.listdir(tmp_path / "a")) == sorted(kept + ["best.pt", "config.json", "last.pt", "metrics.jsonl"])
