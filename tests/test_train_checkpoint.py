"""Checkpoints: atomic writes, weights_only loading, clear errors, RNG states."""
import os
import random

import numpy as np
import pytest
import torch

from binarynet.errors import CheckpointError
from binarynet.train import checkpoint as ckpt


def _minimal(**changes):
    state = {
        "format": ckpt.FORMAT_NAME, "format_version": ckpt.FORMAT_VERSION, "binarynet_version": "0.1.0",
        "config": {"recipe": {"name": "x"}}, "model": {"w": torch.arange(6.0).view(2, 3)},
        "optimizer": {"state": {}, "param_groups": []}, "normalization": {"scale": [2 / 255], "offset": [-1.0]},
        "progress": dict.fromkeys(ckpt.PROGRESS_KEYS, 0) | {"epoch": 3, "epoch_position": 200, "global_step": 32},
        "rng": ckpt.capture_rng(),
    }
    state.update(changes)
    return state


def test_round_trip(tmp_path):
    path = tmp_path / "run" / "last.pt"
    ckpt.save(path, _minimal())
    loaded = ckpt.load(path)
    assert torch.equal(loaded["model"]["w"], torch.arange(6.0).view(2, 3))
    assert (loaded["progress"]["epoch"], loaded["progress"]["epoch_position"]) == (3, 200)
    assert os.listdir(tmp_path / "run") == ["last.pt"]  # no temp file left behind


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save(path, _minimal())
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        ckpt.save(path, _minimal(extra=Unpicklable()))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]


class Payload:
    """A class instance: torch.save pickles it, weights_only loading must refuse it."""

    def __init__(self):
        self.value = 1


def test_arbitrary_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save(_minimal(extra=Payload()), path)
    with pytest.raises(CheckpointError, match="weights_only loading refuses.*Payload"):
        ckpt.load(path)


def test_truncated_and_garbage_files(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save(path, _minimal())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read"):
        ckpt.load(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot be read"):
        ckpt.load(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load(tmp_path / "missing.pt")


def test_other_format_version_and_foreign_files(tmp_path):
    path = tmp_path / "c.pt"
    ckpt.save(path, _minimal(format_version=ckpt.FORMAT_VERSION + 1, binarynet_version="9.0"))
    with pytest.raises(CheckpointError, match=r"format version 2, this binarynet reads version 1.*9\.0"):
        ckpt.load(path)
    torch.save({"weight": torch.zeros(2)}, path)  # e.g. a bare state_dict
    with pytest.raises(CheckpointError, match="not a binarynet training checkpoint"):
        ckpt.load(path)
    state = _minimal()
    del state["rng"]
    ckpt.save(path, state)
    with pytest.raises(CheckpointError, match="lacks rng"):
        ckpt.load(path)
    state = _minimal()
    del state["progress"]["global_step"]
    ckpt.save(path, state)
    with pytest.raises(CheckpointError, match="lacks progress.global_step"):
        ckpt.load(path)


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(5), np.random.seed(6), random.seed(7)
    np.random.normal()  # leaves a cached Gaussian in numpy's state
    path = tmp_path / "c.pt"
    ckpt.save(path, _minimal(rng=ckpt.capture_rng()))
    expected = (torch.rand(4), np.random.normal(size=3), np.random.normal(), random.random(), random.gauss(0, 1))
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    ckpt.restore_rng(ckpt.load(path)["rng"])
    got = (torch.rand(4), np.random.normal(size=3), np.random.normal(), random.random(), random.gauss(0, 1))
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert expected[2:] == got[2:]


def test_invalid_rng_state_is_a_checkpoint_error():
    with pytest.raises(CheckpointError, match="random-generator state"):
        ckpt.restore_rng({"torch": torch.zeros(3, dtype=torch.uint8)})


def test_a_save_removes_the_temp_files_of_a_killed_save(tmp_path):
    stale = ["last.pt.k2j3h4g5.tmp", "last.pt.a_b_c_d_.tmp"]
    kept = ["last.pt.tmp", "last.pt.abc.tmp", "last.pt.ABCD1234.tmp", "best.pt.k2j3h4g5.tmp", "notes.txt"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
    ckpt.save(tmp_path / "last.pt", _minimal())
    assert sorted(os.listdir(tmp_path)) == sorted(kept + ["last.pt"])


# ---------------------------------------------------------------- the trained model a checkpoint holds


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real checkpoint of a tiny run (MLP 64 -> 16 -> 16 -> 10 on the generated dataset)."""
    from binarynet.train import RunOptions, recipes, train

    out = tmp_path_factory.mktemp("trained") / "run"
    recipe = recipes.apply_overrides(recipes.get("synthetic_mlp"), {
        "epochs": 1, "max_train_samples": 200, "max_eval_samples": 100, "model.hidden": 16})
    before = torch.get_num_threads()
    try:
        train(recipe, RunOptions(out=str(out), progress=False, threads=1))
    finally:
        torch.set_num_threads(before)
    return out / "best.pt"


def _altered(trained, tmp_path, change):
    state = ckpt.load(trained)
    change(state)
    path = tmp_path / "altered.pt"
    ckpt.save(path, state)
    return path


def test_load_model_of_a_run_folder(trained):
    model, recipe, normalization = ckpt.load_model(trained.parent)
    assert recipe.model_overrides["hidden"] == 16 and not model.training
    assert normalization == ((2 / 255,), (-1.0,))


def test_a_huge_stored_model_is_refused_before_anything_is_allocated(trained, tmp_path, monkeypatch):
    path = _altered(trained, tmp_path, lambda s: s["config"]["recipe"]["model_overrides"].update(hidden=30000))
    real_build = ckpt.build_model

    def meta_only(recipe, device=None):
        assert device == "meta", "a model was allocated before its shapes were checked"
        return real_build(recipe, device=device)

    monkeypatch.setattr(ckpt, "build_model", meta_only)
    with pytest.raises(CheckpointError, match=r"altered.pt: weights do not fit the recipe's model: "
                                              r"1.weight is \(16, 64\) in the file, \(30000, 64\) in the model"):
        ckpt.load_model(path)


def test_an_impossible_stored_model_is_a_checkpoint_error(trained, tmp_path):
    # A 2^40 x 2^40 hidden layer: more bytes than int64 counts, an error even on the meta device.
    path = _altered(trained, tmp_path, lambda s: s["config"]["recipe"]["model_overrides"].update(hidden=2**40))
    with pytest.raises(CheckpointError, match=r"config.recipe\) asks for an impossible model: .*overflow"):
        ckpt.load_model(path)


@pytest.mark.parametrize("change, message", [
    (lambda s: s["config"]["recipe"].update(batch_size=0), r"config.recipe\) is invalid: .*batch_size must be >= 1"),
    (lambda s: s["config"]["recipe"].update(model="resnet"), r"config.recipe\) builds no model: .*model 'resnet'"),
    (lambda s: s["config"]["recipe"]["model_overrides"].update(hidden="wide"), r"builds no model: .*hidden"),
    (lambda s: s["config"]["recipe"].update(dataset="coco"), r"config.recipe.dataset\) is unknown"),
    (lambda s: s["config"].update(recipe=None), r"config.recipe\) is invalid"),
    (lambda s: s["model"].pop("1.weight"), r"weights do not fit .*missing \['1.weight'\]"),
    (lambda s: s.update(model=[1, 2]), "'model' is not a state dict of tensors"),
])
def test_an_invalid_stored_recipe_or_weights(trained, tmp_path, change, message):
    with pytest.raises(CheckpointError, match=message):
        ckpt.load_model(_altered(trained, tmp_path, change))


@pytest.mark.parametrize("normalization, field", [
    ({"scale": [2 / 255]}, "normalization.offset"),                        # was KeyError: 'offset'
    ({"scale": [2 / 255], "offset": [-1.0, -1.0]}, "normalization.offset"),  # 2 values, 1 channel
    ({"scale": [float("nan")], "offset": [-1.0]}, "normalization.scale"),
    ({"scale": ["2/255"], "offset": [-1.0]}, "normalization.scale"),
    ({"scale": 0.5, "offset": [-1.0]}, "normalization.scale"),
    ({"scale": [0.0], "offset": [-1.0]}, "normalization.scale must not hold 0"),
    ([2 / 255, -1.0], "'normalization' must hold 'scale' and 'offset'"),
])
def test_a_malformed_normalization(trained, tmp_path, normalization, field):
    path = _altered(trained, tmp_path, lambda s: s.update(normalization=normalization))
    with pytest.raises(CheckpointError, match=field):
        ckpt.load_model(path)


def test_resuming_a_huge_stored_model_is_refused_before_anything_is_allocated(trained, tmp_path, monkeypatch):
    from binarynet.train import RunOptions, loop, train

    path = _altered(trained, tmp_path, lambda s: s["config"]["recipe"]["model_overrides"].update(hidden=30000))

    def refuse(recipe, device=None):
        assert device == "meta", "the run built its model before checking the stored weights' shapes"
        return ckpt.build_model(recipe, device=device)

    monkeypatch.setattr(loop, "build_model", refuse)
    with pytest.raises(CheckpointError, match=r"weights do not fit the recipe's model: 1.weight is \(16, 64\)"):
        train(None, RunOptions(resume=str(path), out=str(tmp_path / "resumed"), progress=False, threads=1))
