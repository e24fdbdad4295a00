"""The train / eval / recipes commands through binarynet.cli.main (in-process)."""
import json

import pytest

from binarynet.cli import main
from binarynet.train import metrics, recipes


pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = ["--recipe", "synthetic_mlp", "--epochs", "2", "--batch-size", "50", "--lr", "0.03", "--seed", "3",
         "--set", "max_train_samples=500", "--set", "max_eval_samples=300", "--set", "model.hidden=32",
         "--no-progress"]


def test_recipes_lists_every_recipe_and_shows_one(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == recipes.names()
    assert "3x4096" in lines[0]
    assert main(["recipes", "cifar10_vgg"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):]) == recipes.get("cifar10_vgg").to_dict()


def test_train_then_eval_reports_the_recorded_test_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())["recipe"]
    assert (config["epochs"], config["batch_size"], config["lr"], config["seed"]) == (2, 50, 0.03, 3)
    assert config["model_overrides"]["hidden"] == 32
    records = metrics.read_metrics(out / "metrics.jsonl")
    capsys.readouterr()
    assert main(["eval", str(out), "--json", "--max-samples", "300"]) == 0  # a folder means its best.pt
    result = json.loads(capsys.readouterr().out)
    assert result["error"] == records[-1]["test_error_at_best"] and result["samples"] == 300
    assert main(["eval", str(out / "last.pt"), "--split", "val", "--max-samples", "300",
                 "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert f"val error {100 * records[-1]['val_error']:.2f}%" in text


def test_eval_uses_the_threads_it_is_given(tmp_path, capsys, monkeypatch):
    import torch
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(out)]) == 0
    chosen = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    assert main(["eval", str(out), "--max-samples", "50", "--threads", "3"]) == 0
    assert chosen == [3]
    with pytest.raises(SystemExit) as exit_:  # argparse's one-line usage error
        main(["eval", str(out), "--threads", "-1"])
    assert exit_.value.code == 2 and "--threads: must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["train"], "give --recipe NAME"),
    (["train", "--recipe", "nope"], "unknown recipe 'nope'"),
    (["train", "--recipe", "synthetic_mlp", "--set", "epochs"], "--set expects key=value"),
    (["train", "--recipe", "synthetic_mlp", "--set", "colour=red"], "unknown recipe field 'colour'"),
    (["train", "--resume"], "needs --out RUN_FOLDER"),
    (["train", "--resume", "--epochs", "4", "--out", "."], "remove epochs"),
    (["recipes", "nope"], "unknown recipe"),
])
def test_user_mistakes_exit_2_with_a_message(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "last.pt").write_bytes(b"")
    assert main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_resume_of_a_missing_or_corrupt_checkpoint(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "none.pt")]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    (tmp_path / "last.pt").write_bytes(b"\x80\x04garbage")
    assert main(["train", "--resume", "--out", str(tmp_path)]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "last.pt")]) == 2


def test_train_with_a_teacher_checkpoint(tmp_path, capsys):
    teacher = tmp_path / "teacher"
    assert main(["train", *SMALL, "--epochs", "1", "--set", "loss=cross_entropy", "--out", str(teacher)]) == 0
    student = tmp_path / "student"
    assert main(["train", *SMALL, "--epochs", "1", "--set", "loss=cross_entropy", "--teacher", str(teacher),
                 "--set", "distill_weight=0.7", "--out", str(student)]) == 0
    config = json.loads((student / "config.json").read_text())["recipe"]
    assert (config["teacher"], config["distill_weight"]) == (str(teacher), 0.7)
    capsys.readouterr()
    assert main(["train", *SMALL, "--teacher", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "none" in err and len(err.splitlines()) == 1


def test_recipes_name_says_what_the_recipe_reached(capsys):
    assert main(["recipes", "mnist_mlp_cpu_hour"]) == 0
    out = capsys.readouterr().out
    assert "reached: 1.44% MNIST test error" in out and '"epochs": 17' in out
    assert main(["recipes", "synthetic_mlp"]) == 0
    assert "reached: no recorded run yet" in capsys.readouterr().out
