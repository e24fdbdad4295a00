"""The CLI's contract with its user: one-line errors that name the right command, --version,
quiet exit on a closed pipe, and the README's train -> export -> report sequence."""
import os
import subprocess
import sys

import pytest

from binarynet import __version__, cli, timing
from binarynet.errors import BinarynetError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A one-epoch synthetic run (small model and sample counts to stay fast)."""
    out = tmp_path_factory.mktemp("run")
    assert cli.main(["train", "--recipe", "synthetic_mlp", "--epochs", "1", "--out", str(out),
                     "--no-progress", "--threads", "1", "--set", "model.hidden=32",
                     "--set", "max_train_samples=500", "--set", "max_eval_samples=200"]) == 0
    return out


@pytest.fixture(scope="module")
def packed_file(run_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "other.bnn"
    assert cli.main(["export", str(run_dir), "-o", str(path)]) == 0
    return path


def one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"binarynet {__version__}"


def test_eval_of_a_packed_model_says_use_predict(packed_file, capsys):
    assert cli.main(["eval", str(packed_file)]) == 2
    one_line_error(capsys, "is a packed model", f"binarynet predict {packed_file}")


@pytest.mark.parametrize("command", ["predict", "bench"])
def test_packed_model_commands_given_a_checkpoint_say_export_first(run_dir, command, capsys):
    for target in (run_dir / "best.pt", run_dir):
        extra = ["--data", "mnist"] if command == "predict" else ["--no-memory"]
        assert cli.main([command, str(target), *extra]) == 2
        one_line_error(capsys, f"run `binarynet export {target}` first")


def test_unknown_split_lists_the_known_ones(run_dir, capsys):
    assert cli.main(["eval", str(run_dir), "--split", "bogus"]) == 2
    one_line_error(capsys, "unknown split 'bogus'", "train, val, test")


def test_unknown_dataset_lists_the_known_ones(packed_file, capsys):
    assert cli.main(["predict", str(packed_file), "--data", "mnsit"]) == 2
    one_line_error(capsys, "unknown dataset 'mnsit'", "mnist, fashion-mnist, cifar10, svhn")


def test_an_error_while_building_the_parser_is_one_line(monkeypatch, capsys):
    """Command modules are imported while the parser is built; a BinarynetError there (e.g.
    from a module that reads a bad setting at import) is one line too, not a traceback."""
    def broken(name):
        raise BinarynetError("BINARYNET_SOMETHING must be one of a, b")

    monkeypatch.setattr(cli.importlib, "import_module", broken)
    assert cli.main(["recipes"]) == 2
    one_line_error(capsys, "binarynet: error: BINARYNET_SOMETHING must be one of a, b")


def test_closed_pipe_exits_quietly():
    """`binarynet recipes | head -0`: the reader is gone before the first write."""
    process = subprocess.Popen([sys.executable, "-m", "binarynet", "recipes"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # long before the interpreter has imported binarynet and printed
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141, err  # 128 + SIGPIPE, as a shell reports it
    assert err.decode() == ""


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_readme_sequence_gives_the_full_report(run_dir, capsys):
    """`export RUN` writes RUN/model.bnn, and `report RUN` then has the engine section."""
    pytest.importorskip("matplotlib")
    assert cli.main(["export", str(run_dir)]) == 0
    assert f"-> {run_dir / 'model.bnn'}:" in capsys.readouterr().out
    assert cli.main(["report", str(run_dir), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "no exported model" not in out
    report = (run_dir / "report.md").read_text()
    assert "## Exported model (model.bnn)" in report
    assert "engine accuracy:" in report and "speed at batch 1:" in report
    assert f"(measured on {timing.cpu_description()})" in report


def test_report_of_another_model_file_and_of_none(run_dir, packed_file, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert cli.main(["report", str(run_dir), "--model", str(packed_file), "--no-engine"]) == 0
    assert "## Exported model (other.bnn)" in (run_dir / "report.md").read_text()
    capsys.readouterr()
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "metrics.jsonl", "best.pt"):
        (bare / name).write_bytes((run_dir / name).read_bytes())
    assert cli.main(["report", str(bare)]) == 0
    assert f"run `binarynet export {bare}` first" in capsys.readouterr().out
    assert "No exported model in the folder" in (bare / "report.md").read_text()
    assert cli.main(["report", str(bare), "--model", str(tmp_path / "none.bnn")]) == 2
    one_line_error(capsys, "none.bnn does not exist")


def test_bench_names_the_cpu_and_threads(packed_file, capsys):
    assert cli.main(["bench", str(packed_file), "--batch-sizes", "2", "--repeats", "1",
                     "--threads", "1", "--no-memory"]) == 0
    out = capsys.readouterr().out
    assert f"on {timing.cpu_description()}; 1 thread for engine and torch" in out


@pytest.mark.parametrize("args, message", [
    (["eval", "{run}", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["eval", "{run}", "--max-samples", "-1"], "argument --max-samples: must be >= 0, got -1"),
    (["predict", "{model}", "--data", "mnist", "--threads", "0"],
     "argument --threads: must be >= 1, got 0"),
    (["bench", "{model}", "--repeats", "x"], "argument --repeats: expected an integer, got 'x'"),
    (["report", "{run}", "--threads", "0"], "argument --threads: must be >= 1, got 0"),
    (["train", "--recipe", "synthetic_mlp", "--threads", "-3"],
     "argument --threads: must be >= 0, got -3"),
])
def test_bad_counts_are_refused_by_the_parser(run_dir, packed_file, args, message, capsys):
    args = [a.format(run=run_dir, model=packed_file) for a in args]
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"binarynet {args[0]}: error: {message}"


@pytest.mark.parametrize("head, kind", [
    (b"\x80\x06\x00\x00\x00\x00\x00\x00{\"a\":", "packed model"),  # header of 0x680 bytes
    (b"\x80\x02}q\x00(X\x06\x00\x00\x00", "checkpoint"),          # a bare pickle
    (b"PK\x03\x04\x00\x00\x08\x08\x00\x00", "checkpoint"),         # torch.save's zip archive
    (b"not a model", None),
])
def test_kind_of_file(tmp_path, head, kind):
    from binarynet.commands.files import kind_of_file

    (tmp_path / "f").write_bytes(head)
    assert kind_of_file(tmp_path / "f") == kind
    assert kind_of_file(tmp_path / "missing") is None


def test_cli_sets_the_passive_wait_policy_before_torch_loads():
    """Never spin: every command runs with OMP_WAIT_POLICY=PASSIVE unless the user chose one."""
    script = ("import os, sys; from binarynet import cli; status = cli.main(['recipes']); "
              "print('policy', os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=120).stdout
    assert out.strip().splitlines()[-1].startswith("policy PASSIVE")
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's choice stands
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=120).stdout
    assert out.strip().splitlines()[-1].startswith("policy ACTIVE")
