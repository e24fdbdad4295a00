"""`binarynet summary TARGET`: which file a target is, and one-line errors for broken files, bad
names and overrides that ask for impossible or huge models."""

import pytest
import torch
from torch import nn

import binarynet as bn
from binarynet.errors import BinarynetError, CheckpointError, ModelFileError
from binarynet.summary import summary_of_target
from binarynet.summary.targets import MAX_PARAMETERS
from engine_fixtures import run_without_torch


def cli(capsys, *args):
    from binarynet.cli import main

    code = main(["summary", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def packed_bytes():
    """The bytes of a tiny packed model file."""
    model = nn.Sequential(nn.Flatten(), bn.nn.BinaryLinear(12, 8), nn.BatchNorm1d(8),
                          bn.nn.Sign(), bn.nn.BinaryLinear(8, 3), nn.BatchNorm1d(3))
    x = torch.randint(0, 256, (2, 1, 3, 4), dtype=torch.uint8)
    return bn.export.export(model, x, input_scale=2 / 255, input_offset=-1.0).to_bytes()


@pytest.mark.parametrize("keep", [0, 5, 8, 0.5])
def test_broken_bnn_file_gets_the_engine_message(capsys, tmp_path, packed_bytes, keep):
    """An empty or cut .bnn is a broken packed model, not a checkpoint that cannot be read."""
    path = tmp_path / "model.bnn"
    path.write_bytes(packed_bytes[:int(keep * len(packed_bytes)) if keep < 1 else keep])
    with pytest.raises(ModelFileError, match="truncated"):
        summary_of_target(str(path))
    code, _, err = cli(capsys, str(path))
    assert code == 2 and "truncated" in err and "checkpoint" not in err
    assert len(err.strip().splitlines()) == 1


def test_packed_file_is_known_by_its_layout_not_its_name(tmp_path, packed_bytes):
    path = tmp_path / "model.pt"
    path.write_bytes(packed_bytes)
    assert summary_of_target(str(path)).binary_params == 12 * 8 + 8 * 3
    path.write_bytes(packed_bytes[:len(packed_bytes) // 2])  # cut, but still the layout
    with pytest.raises(ModelFileError, match="truncated"):
        summary_of_target(str(path))


def test_zip_named_bnn_is_read_as_a_checkpoint(tmp_path):
    """torch.save writes zip archives: such a file is a checkpoint whatever its name."""
    path = tmp_path / "model.bnn"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 60)
    with pytest.raises(CheckpointError, match="cannot be read"):
        summary_of_target(str(path))


def test_run_folder_falls_back_to_last_pt(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="last.pt"):
        summary_of_target(str(tmp_path))


@pytest.mark.parametrize("args, expected", [
    (["no_such_thing"], ["neither a file nor a folder", "mnist_mlp_quick", "cifar10_vgg"]),
    (["mnist_mlp", "--set", "model=no_such_model"], ["unknown model", "known models", "svhn_vgg"]),
    (["mnist_mlp", "--set", "model.no_such_option=3"], ["no option(s) no_such_option", "hidden"]),
    (["mnist_mlp", "--set", "no_such_field=3"], ["unknown recipe field", "epochs"]),
    (["mnist_mlp", "--set", "model.hidden=-3"], ["hidden must be a positive integer"]),
    # beyond what torch can describe: its message runs over many lines (a C++ backtrace)
    (["mnist_mlp", "--set", "model.hidden=100000000000000000000"], ["recipe mnist_mlp"]),
    (["mnist_mlp", "--input-shape", "3,5"], ["does not accept one sample of shape (3, 5)"]),
])
def test_bad_names_and_overrides_give_one_line_errors(capsys, args, expected):
    code, out, err = cli(capsys, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err


def test_huge_model_is_refused_before_it_is_built():
    """10^9 hidden units: about 2 * 10^18 parameters, refused without allocating them."""
    with pytest.raises(BinarynetError, match="parameters; binarynet summary builds") as info:
        summary_of_target("mnist_mlp", None, {"model.hidden": "1000000000"})
    assert f"{MAX_PARAMETERS:,}" in str(info.value)
    name = "test_summary_targets_mlp"  # a model name that is not a recipe
    if name not in bn.models.names():
        bn.models.register(name)(lambda hidden=8: bn.models.get("mnist_mlp", hidden=hidden))
    with pytest.raises(BinarynetError, match=f"model {name} has 2,"):
        summary_of_target(name, None, {"model.hidden": "1000000000"})


def test_model_size_at_the_limit_is_still_summarised(monkeypatch):
    """The limit counts exactly the parameters and buffers of the model it refuses."""
    import binarynet.summary.targets as targets

    small = summary_of_target("mnist_mlp", None, {"model.hidden": "16"})
    model = bn.models.get("mnist_mlp", hidden=16)
    count = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    monkeypatch.setattr(targets, "MAX_PARAMETERS", count)
    assert summary_of_target("mnist_mlp", None, {"model.hidden": "16"}).to_dict() == small.to_dict()
    monkeypatch.setattr(targets, "MAX_PARAMETERS", count - 1)
    with pytest.raises(BinarynetError, match=f"has {count:,} parameters"):
        summary_of_target("mnist_mlp", None, {"model.hidden": "16"})


def test_builder_that_needs_real_values_is_still_summarised():
    """A builder that reads a tensor cannot run on the meta device: it is built for real."""
    name = "test_summary_targets_reads_weights"
    if name not in bn.models.names():
        def builder(hidden=8):
            model = bn.models.get("mnist_mlp", hidden=hidden)
            assert model[2].weight.abs().max().item() <= 1  # .item() fails on meta tensors
            return model
        bn.models.register(name)(builder)
    s = summary_of_target(name, (1, 28, 28), {"model.hidden": "16"})
    assert s.binary_params == 784 * 16 + 2 * 16 * 16 + 16 * 10


def test_packed_file_summary_is_torch_free(tmp_path, packed_bytes):
    """Summarising a .bnn file (also as a `binarynet summary` target) needs only the engine."""
    path = tmp_path / "m.bnn"
    path.write_bytes(packed_bytes)
    result = run_without_torch(f"""
        from binarynet.summary import summary, summary_of_target
        s = summary({str(path)!r})
        assert s.binary_params == 12 * 8 + 8 * 3, s.binary_params
        assert summary_of_target({str(path)!r}).to_dict() == s.to_dict()
        print("ok: torch-free")
    """)
    assert result.returncode == 0, result.stderr
    assert "ok: torch-free" in result.stdout
