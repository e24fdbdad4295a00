"""binarynet.report and `binarynet report`: plots, Markdown report, engine comparison."""
import json
import struct
import zlib

import pytest
import torch

pytest.importorskip("matplotlib", reason="the report needs matplotlib (the 'report' extra)")

from binarynet import report  # noqa: E402
from binarynet.errors import BinarynetError  # noqa: E402


def png_size(path):
    """(width, height) from a PNG's IHDR chunk, checking the signature and CRC."""
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", blob[8:16])
    assert kind == b"IHDR" and length == 13
    assert struct.unpack(">I", blob[29:33])[0] == zlib.crc32(blob[12:29])
    return struct.unpack(">II", blob[16:24])


def records(epochs=4):
    out = []
    for e in range(1, epochs + 1):
        out.append({"epoch": e, "lr": 1e-3, "train_loss": 1.0 / e, "train_error": 0.5 / e,
                    "val_loss": 0.8 / e, "val_error": [0.30, 0.20, 0.22, 0.21][e - 1],
                    "test_loss": 0.9 / e, "test_error": [0.31, 0.19, 0.25, 0.20][e - 1],
                    "elapsed_s": 10.0 * e})
    return out


def test_best_epoch_is_lowest_validation_error_earliest_on_ties():
    recs = records()
    assert report.best_epoch(recs)["epoch"] == 2
    recs[3]["val_error"] = 0.20  # tie with epoch 2: the earlier one wins
    assert report.best_epoch(recs)["epoch"] == 2
    no_val = [{"epoch": 1, "val_error": None}, {"epoch": 2, "val_error": None}]
    assert report.best_epoch(no_val)["epoch"] == 2  # without validation: the last epoch


def test_read_metrics_last_record_of_an_epoch_wins_and_partial_line_ignored(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"epoch": 1, "val_error": 0.5}), json.dumps({"epoch": 2, "val_error": 0.4}),
             json.dumps({"epoch": 2, "val_error": 0.3}), '{"epoch": 3, "val_err']
    path.write_text("\n".join(lines))
    recs = report.read_metrics(path)
    assert [r["epoch"] for r in recs] == [1, 2] and recs[1]["val_error"] == 0.3
    with pytest.raises(BinarynetError, match="does not exist"):
        report.read_metrics(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(BinarynetError, match="no per-epoch metrics"):
        report.read_metrics(tmp_path / "empty.jsonl")


def test_plots_are_pngs_with_labelled_axes(tmp_path, monkeypatch):
    saved = {}
    import matplotlib.figure

    original = matplotlib.figure.Figure.savefig

    def spy(fig, path, *args, **kwargs):
        ax = fig.axes[0]
        saved[str(path).rsplit("/", 1)[-1]] = {
            "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(), "title": ax.get_title(),
            "yscale": ax.get_yscale(), "ylim": ax.get_ylim(),
            "legend": [t.get_text() for t in ax.get_legend().get_texts()],
            "lines": {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}}
        return original(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    paths = report.plot_curves(records(), tmp_path, "run", loss_name="squared_hinge")
    assert [p.name for p in paths] == ["loss.png", "error.png"]
    for p in paths:
        width, height = png_size(p)
        assert width >= 800 and height >= 500
    error = saved["error.png"]
    assert error["xlabel"] == "epoch" and error["ylabel"] == "classification error (%)"
    assert error["yscale"] == "linear" and error["ylim"][0] == 0  # honest: starts at 0
    assert error["lines"]["validation"] == pytest.approx([30.0, 20.0, 22.0, 21.0])  # percent
    assert "best validation (epoch 2)" in error["legend"]
    assert saved["loss.png"]["ylabel"] == "squared hinge loss per sample"
    assert "run" in error["title"]


def test_error_plot_switches_to_labelled_log_scale_for_wide_ranges(tmp_path, monkeypatch):
    scales = []
    import matplotlib.figure

    original = matplotlib.figure.Figure.savefig

    def spy(fig, path, *args, **kwargs):
        scales.append((fig.axes[0].get_yscale(), fig.axes[0].get_ylabel()))
        return original(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    report.plot_curves(records(), tmp_path, "run", paper_errors={"paper Theano": 0.96})
    assert scales[1] == ("log", "classification error (%, log scale)")


def test_missing_matplotlib_gives_a_clear_error(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(BinarynetError, match=r"pip install 'binarynet\[report\]'"):
        report.plot_curves(records(), tmp_path, "run")


def test_not_a_run_folder(tmp_path):
    with pytest.raises(BinarynetError, match="does not exist"):
        report.write_report(tmp_path / "missing")
    with pytest.raises(BinarynetError, match="config.json does not exist"):
        report.write_report(tmp_path)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A real (tiny) training run on the generated dataset, with an exported model.bnn."""
    from binarynet import train
    from binarynet.export import export
    from binarynet.train.checkpoint import load_model

    out = tmp_path_factory.mktemp("run")
    recipe = train.recipes.apply_overrides(train.recipes.get("synthetic_mlp"), {
        "epochs": 2, "model.hidden": 64, "max_train_samples": 1000, "max_eval_samples": 500})
    threads = torch.get_num_threads()
    train.train(recipe, train.RunOptions(out=str(out), threads=2, progress=False))
    torch.set_num_threads(threads)
    model, recipe, norm = load_model(out / "best.pt")
    test = train.loop.load_split(recipe, "test", train.RunOptions(), 0)
    export(model, test.images[:32], input_scale=norm[0], input_offset=norm[1]).save(
        out / "model.bnn")
    return out


def test_report_of_a_real_run(synthetic_run):
    path = report.write_report(synthetic_run, threads=1, repeats=3)
    assert path == synthetic_run / "report.md"
    md = path.read_text()
    metrics = report.read_metrics(synthetic_run / "metrics.jsonl")
    best = report.best_epoch(metrics)
    assert f"| best validation | {best['epoch']} |" in md
    assert f"**{100 * best['test_error']:.2f}%**" in md
    assert "no row for dataset 'synthetic'" in md  # Table 1 has MNIST/CIFAR-10/SVHN only
    assert "![loss per epoch](loss.png)" in md and "![error per epoch](error.png)" in md
    assert "| 1 | BinaryLinear | 8-bit | 64 |" in md  # summary table of best.pt
    assert "## Exported model (model.bnn)" in md
    assert "engine accuracy:" in md and "all predictions identical" in md
    assert "speed at batch 1:" in md
    assert '"dataset": "synthetic"' in md  # the configuration block
    for name in ("loss.png", "error.png"):
        assert png_size(synthetic_run / name)[0] >= 800


def test_report_command(synthetic_run, capsys):
    from binarynet.cli import main

    (synthetic_run / "report.md").unlink(missing_ok=True)
    assert main(["report", str(synthetic_run), "--no-engine"]) == 0
    assert f"wrote {synthetic_run / 'report.md'}" in capsys.readouterr().out
    assert "(engine measurement skipped: --no-engine)" in (synthetic_run / "report.md").read_text()
    assert main(["report", str(synthetic_run / "missing")]) == 2
    assert "run folder" in capsys.readouterr().err


def test_report_paper_row_for_mnist(synthetic_run, tmp_path):
    """The Table 1 comparison names both paper rows with their epochs and hardware."""
    config = json.loads((synthetic_run / "config.json").read_text())
    config["recipe"]["dataset"] = "mnist"
    rows = report._paper_rows(config["recipe"], config, records(), report.best_epoch(records()))
    text = "\n".join(rows)
    assert "| BNN (Theano), paper Table 1 | 0.96% |" in text
    assert "| BNN (Torch7), paper Table 1 | 1.40% |" in text
    assert "1000 (test at the best-validation epoch)" in text and "Titan Black" in text
    assert "**19.00%**" in text  # this run's test error at its best-validation epoch (2)
    assert "4 of 2 planned" in text and "0:40 wall time" in text


def test_report_of_a_run_without_validation_names_the_last_epoch(synthetic_run):
    """A recipe trained on all its training images (val_split "") reports the last epoch, and
    says so, instead of claiming a best-validation epoch it does not have."""
    config = json.loads((synthetic_run / "config.json").read_text())
    config["recipe"]["dataset"] = "mnist"
    recs = records()
    for r in recs:
        r["val_error"] = r["val_loss"] = None
    best = report.best_epoch(recs)
    assert best["epoch"] == 4
    text = "\n".join(report._paper_rows(config["recipe"], config, recs, best))
    assert "(after the last epoch, 4: no validation split)" in text and "**20.00%**" in text
    assert "best-validation epoch 4" not in text
    result = "\n".join(report._result_rows(recs, best))
    assert "| last | 4 |" in result and "best validation" not in result
    with_val = "\n".join(report._result_rows(records(), report.best_epoch(records())))
    assert "| best validation | 2 |" in with_val


def test_report_names_the_runs_changes_to_its_recipe(synthetic_run):
    md = report.write_report(synthetic_run, engine=False).read_text()
    # the fixture trained synthetic_mlp with epochs=2, hidden 64 and sample limits
    assert ("This run changed the recipe: epochs=2, max_eval_samples=500, max_train_samples=1000, "
            "model.hidden=64.") in md


def test_deployment_lines_word_speed_ratios_both_ways():
    figures = {"samples": 10000, "torch_accuracy": 0.9712, "engine_accuracy": 0.9711,
               "mismatches": 1, "float32_state_dict_bytes": 4000, "packed_file_bytes": 1000,
               "size_ratio": 4.0, "threads": 2, "repeats": 15, "load_average": None,
               "timings": [{"batch": 1, "torch_ms": 1.0, "engine_ms": 0.25, "speedup": 4.0},
                           {"batch": 1000, "torch_ms": 1.0, "engine_ms": 2.0, "speedup": 0.5}]}
    lines = report.deployment_lines(figures)
    assert lines[0] == "torch accuracy:  97.12% on 10,000 test images"
    assert lines[1] == "engine accuracy: 97.11% (1 of 10000 predictions differ)"
    assert lines[2] == "file size: float32 state_dict 4,000 B, packed 1,000 B (4.0x smaller)"
    assert lines[3].endswith("-> engine 4.0x faster (median of 15, 2 threads)")
    assert lines[4].endswith("-> engine 2.0x slower (median of 15, 2 threads)")
    assert len(lines) == 5  # no load-average line when unknown


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("bad_file, error", [("best.pt", "cannot be read"),
                                             ("model.bnn", "header length")])
def test_a_bad_checkpoint_or_model_is_refused_before_anything_is_written(
        synthetic_run, tmp_path, bad_file, error):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "metrics.jsonl", "best.pt", "model.bnn"):
        (run / name).write_bytes((synthetic_run / name).read_bytes())
    (run / bad_file).write_bytes(b"\x80\x04garbage" if bad_file == "best.pt" else b"garbage!")
    with pytest.raises(BinarynetError, match=error):
        report.write_report(run, threads=1, repeats=1)
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.json", "metrics.jsonl",
                                                      "model.bnn"]
