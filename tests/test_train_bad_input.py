"""Bad recipe fields and run options: one clear error naming the field, before anything is written."""
import dataclasses

import pytest

from binarynet import cli, data
from binarynet.errors import BinarynetError
from binarynet.train import RunOptions, loop, recipes, train
from binarynet.train.options import RunOptionError
from binarynet.train.recipes import RecipeError

pytestmark = pytest.mark.usefixtures("one_thread")


def small_recipe(**overrides):
    values = {"epochs": 1, "max_train_samples": 300, "max_eval_samples": 100, "model.hidden": 32}
    values.update(overrides)
    return recipes.apply_overrides(recipes.get("synthetic_mlp"), values)


@pytest.mark.parametrize("field, value", [("betas", (1.5, 0.9)), ("weight_decay", -1.0), ("lr_step_gamma", 0.0),
                                          ("seed", -3), ("epochs", 0), ("augment", "mixup")])
def test_recipe_field_out_of_range_names_the_field(field, value):
    with pytest.raises(RecipeError, match=field):
        dataclasses.replace(recipes.get("synthetic_mlp"), **{field: value})
    assert issubclass(RecipeError, BinarynetError) and issubclass(RecipeError, ValueError)


@pytest.mark.parametrize("option, value, message", [
    ("compile", True, "compile needs a CUDA device"), ("channels_last", True, "channels_last needs a CUDA"),
    ("threads", -1, "threads must be >= 0"), ("checkpoint_every_steps", -2, "checkpoint_every_steps"),
    ("dist_timeout_s", 0.0, "dist_timeout_s must be > 0")])
def test_run_option_errors_name_the_option(tmp_path, option, value, message):
    with pytest.raises(RunOptionError, match=message):
        train(small_recipe(), RunOptions(out=str(tmp_path / "a"), device="cpu", progress=False, **{option: value}))
    assert not (tmp_path / "a").exists()


def test_batch_larger_than_the_dataset_is_a_one_line_cli_error(tmp_path, capsys):
    status = cli.main(["train", "--recipe", "synthetic_mlp", "--set", "max_train_samples=300", "--batch-size",
                       "500", "--out", str(tmp_path / "a"), "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "batch_size 500" in err and "300 samples" in err
    assert not (tmp_path / "a").exists()


def test_crop_flip_needs_mirror_proof_images_of_enough_size(tmp_path, monkeypatch):
    data.check_crop_flip("cifar10", (3, 32, 32))
    data.check_crop_flip("synthetic", (1, 8, 8))
    with pytest.raises(ValueError, match="crop_flip needs .* at least 8x8 .* shape \\(1, 4, 4\\)"):
        data.check_crop_flip("synthetic", (1, 4, 4))
    # MNIST's digits (images faked here: no download) change class in a mirror.
    real_load = loop.load_split
    monkeypatch.setattr(loop, "load_split", lambda recipe, split, *a: dataclasses.replace(
        real_load(small_recipe(), split, *a), name="mnist"))
    recipe = dataclasses.replace(small_recipe(augment="crop_flip"), dataset="mnist")
    with pytest.raises(RecipeError, match="augment crop_flip mirrors images, which changes the classes of "
                                          "dataset mnist"):
        train(recipe, RunOptions(out=str(tmp_path / "a"), device="cpu", progress=False))
    assert not (tmp_path / "a").exists()
