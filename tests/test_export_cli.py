"""`binarynet export / predict / bench` end to end on a tiny synthetic training run."""
import json

import numpy as np
import pytest

from binarynet import cli, engine


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A one-epoch synthetic run (small model and sample counts to stay fast)."""
    out = tmp_path_factory.mktemp("run")
    status = cli.main(["train", "--recipe", "synthetic_mlp", "--epochs", "1", "--out", str(out),
                       "--no-progress", "--threads", "1", "--set", "model.hidden=64",
                       "--set", "max_train_samples=2000"])
    assert status == 0
    return out


def test_export_predict_matches_eval(run_dir, tmp_path, capsys):
    from binarynet.train import synthetic
    model_path = tmp_path / "model.bnn"
    assert cli.main(["export", str(run_dir), "-o", str(model_path)]) == 0
    out = capsys.readouterr().out
    assert "smaller than the float32 state_dict" in out and "first_dense" in out
    packed = engine.load(model_path)
    assert packed.input_shape == (1, 8, 8)

    images, labels = synthetic.generate("test", seed=1234)  # the recipe's test split
    np.savez(tmp_path / "test.npz", images=images, labels=labels)
    assert cli.main(["predict", str(model_path), "--data", str(tmp_path / "test.npz"),
                     "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert cli.main(["eval", str(run_dir / "best.pt"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    # the same 1000 test images: the engine's errors are the torch model's errors
    assert evaluated["samples"] == predicted["samples"] == 1000
    assert predicted["wrong"] == round(evaluated["error"] * 1000)
    assert predicted["accuracy"] > 0.3  # chance is 0.1: it learned something


def test_bench_prints_speed_and_memory(run_dir, tmp_path, capsys):
    model_path = tmp_path / "model.bnn"
    assert cli.main(["export", str(run_dir), "-o", str(model_path)]) == 0
    capsys.readouterr()
    assert cli.main(["bench", str(model_path), "--batch-sizes", "1,8", "--repeats", "2",
                     "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [row["batch"] for row in result["speed"]] == [1, 8]
    assert all(row["engine_ms"] > 0 and row["torch_ms"] > 0 for row in result["speed"])
    engine_mem, torch_mem = result["memory"]["engine"], result["memory"]["torch"]
    # the engine process never imports torch: far smaller than the torch one
    assert engine_mem["rss_peak_kib"] < torch_mem["rss_peak_kib"]


def test_cli_errors_are_clear(run_dir, tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "m.bnn")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bad.bnn").write_bytes(b"not a model")
    assert cli.main(["predict", str(tmp_path / "bad.bnn"), "--data", "x.npz"]) == 2
    assert "header length" in capsys.readouterr().err
    model_path = tmp_path / "model.bnn"
    assert cli.main(["export", str(run_dir), "-o", str(model_path)]) == 0
    capsys.readouterr()
    np.savez(tmp_path / "wrong.npz", pixels=np.zeros((2, 1, 8, 8), np.uint8))
    assert cli.main(["predict", str(model_path), "--data", str(tmp_path / "wrong.npz")]) == 2
    assert "expected arrays 'images' and 'labels'" in capsys.readouterr().err
    np.savez(tmp_path / "shape.npz", images=np.zeros((2, 1, 9, 9), np.uint8), labels=np.zeros(2))
    assert cli.main(["predict", str(model_path), "--data", str(tmp_path / "shape.npz")]) == 2
    assert "the model takes (1, 8, 8)" in capsys.readouterr().err
    assert cli.main(["bench", str(model_path), "--batch-sizes", "0"]) == 2
    assert "--batch-sizes expects positive integers" in capsys.readouterr().err
