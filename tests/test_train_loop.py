"""The training loop in-process, on the generated dataset (no downloads, seconds per run)."""
import importlib.util
import json
import math

import pytest
import torch

from binarynet import optim
from binarynet.errors import BinarynetError, CheckpointError
from binarynet.train import RunOptions, checkpoint, metrics, recipes, schedule, train


pytestmark = pytest.mark.usefixtures("one_thread")


def small_recipe(**overrides):
    values = {"epochs": 2, "max_train_samples": 1000, "max_eval_samples": 500, "model.hidden": 64,
              "lr": 0.03, "lr_end": 0.003}
    values.update(overrides)
    return recipes.apply_overrides(recipes.get("synthetic_mlp"), values)


def run(tmp_path, name, recipe, **options):
    return train(recipe, RunOptions(out=str(tmp_path / name), progress=False, **options))


def weights(path):
    return checkpoint.load(path)["model"]


def test_run_writes_config_metrics_and_checkpoints(tmp_path):
    recipe = small_recipe()
    summary = run(tmp_path, "a", recipe)
    out = tmp_path / "a"
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "last.pt", "metrics.jsonl"]
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == recipe.to_dict()
    assert (config["global_batch_size"], config["steps_per_epoch"], config["world_size"]) == (100, 10, 1)
    records = metrics.read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("train_loss", "train_error", "val_loss", "val_error", "test_error", "lr", "epoch_time_s"):
        assert all(isinstance(r[key], float) and math.isfinite(r[key]) for r in records), key
    assert [r["lr"] for r in records] == [schedule.recipe_lr(recipe, e) for e in (0, 1)]
    best = min(records, key=lambda r: (r["val_error"], r["epoch"]))
    assert summary["best_epoch"] == best["epoch"] == records[-1]["best_epoch"]
    assert summary["test_error_at_best"] == best["test_error"]
    assert summary["test_error_at_best"] < 0.3  # it learned: chance is 0.9
    last = checkpoint.load(out / "last.pt")
    assert last["progress"]["epoch"] == 2 and last["progress"]["epoch_position"] == 0
    assert last["progress"]["global_step"] == 20
    assert last["normalization"] == {"scale": [2 / 255], "offset": [-1.0]}
    assert last["config"]["recipe"]["name"] == "synthetic_mlp"
    assert checkpoint.load(out / "best.pt")["progress"]["best_epoch"] == best["epoch"]


def test_latent_weights_stay_clipped_and_groups_follow_the_schedule(tmp_path):
    recipe = small_recipe(lr=0.1, lr_end=0.01)  # large steps: clipping must act
    run(tmp_path, "a", recipe)
    state = checkpoint.load(tmp_path / "a" / "last.pt")
    latent = [state["model"][k] for k in ("1.weight", "4.weight", "7.weight")]  # BinaryLinear layers
    assert all(w.abs().max() <= 1.0 for w in latent)
    assert any((w.abs() == 1.0).any() for w in latent)
    groups = state["optimizer"]["param_groups"]
    lr_last_epoch = schedule.recipe_lr(recipe, 1)
    first = groups[0]
    assert first["latent_clip"] is True
    assert math.isclose(first["lr_scale"], 1 / math.sqrt(1.5 / (64 + 64)), rel_tol=1e-12)
    for group in groups:
        assert math.isclose(group["lr"], lr_last_epoch * group["lr_scale"], rel_tol=1e-12)
    assert groups[-1]["latent_clip"] is False and groups[-1]["lr_scale"] == 1.0


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    run(tmp_path, "a", small_recipe())
    run(tmp_path, "b", small_recipe())
    run(tmp_path, "c", small_recipe(seed=7))
    a, b, c = (weights(tmp_path / n / "last.pt") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["1.weight"], c["1.weight"])


def test_variants_shift_bn_shift_adamax_stochastic_dropout_cross_entropy(tmp_path):
    recipe = small_recipe(**{
        "model.batchnorm": "shift", "model.stochastic": True, "model.dropout_in": 0.1, "model.dropout_hidden": 0.2,
        "optimizer": "shift_adamax", "optimizer_variant": "torch7", "lr": 2.0 ** -6, "lr_schedule": "step",
        "lr_step_epochs": 1, "pow2_lr_scale": True, "loss": "cross_entropy", "epochs": 2,
    })
    summary = run(tmp_path, "a", recipe)
    assert summary["test_error_at_best"] < 0.4
    state = checkpoint.load(tmp_path / "a" / "last.pt")
    assert any(k.endswith(".running_inv_std") for k in state["model"])  # shift BN
    groups = state["optimizer"]["param_groups"]
    assert groups[0]["lr"] == 2.0 ** -7 * groups[0]["lr_scale"]  # halved after epoch 1
    assert math.log2(groups[0]["lr_scale"]).is_integer()  # pow2 scales
    run(tmp_path, "b", recipe)
    assert all(torch.equal(v, weights(tmp_path / "b" / "last.pt")[k]) for k, v in state["model"].items())


def test_augmentation_is_applied_and_reproducible(tmp_path):
    # Random crops (padding 4) of 8x8 images change what is learned; the same seed repeats it.
    run(tmp_path, "plain", small_recipe(epochs=1))
    run(tmp_path, "a", small_recipe(epochs=1, augment="crop_flip"))
    run(tmp_path, "b", small_recipe(epochs=1, augment="crop_flip"))
    plain, a, b = (weights(tmp_path / n / "last.pt")["1.weight"] for n in ("plain", "a", "b"))
    assert torch.equal(a, b) and not torch.equal(a, plain)


def test_amp_bfloat16_on_cpu_trains(tmp_path):
    summary = run(tmp_path, "a", small_recipe(epochs=1), amp=True)
    assert summary["test_error_at_best"] < 0.5


def test_no_validation_split_takes_the_last_epoch(tmp_path):
    summary = run(tmp_path, "a", small_recipe(val_split=""))
    assert summary["best_epoch"] == 2 and summary["best_val_error"] is None
    assert summary["test_error_at_best"] == metrics.read_metrics(tmp_path / "a" / "metrics.jsonl")[-1]["test_error"]


def test_refuses_to_overwrite_a_run_and_to_change_a_resumed_recipe(tmp_path):
    run(tmp_path, "a", small_recipe(epochs=1))
    with pytest.raises(BinarynetError, match="already holds a run"):
        run(tmp_path, "a", small_recipe(epochs=1))
    with pytest.raises(CheckpointError, match="differ from the checkpoint: epochs, lr"):
        run(tmp_path, "a", small_recipe(epochs=3, lr=0.1), resume=str(tmp_path / "a" / "last.pt"))
    # A finished run resumes to a no-op with the same summary.
    summary = run(tmp_path, "a", None, resume=str(tmp_path / "a" / "last.pt"))
    assert summary["epochs"] == 1 and summary["global_step"] == 10


def test_bad_model_override_is_a_clear_error(tmp_path):
    with pytest.raises(BinarynetError, match="model mnist_mlp: .*bogus"):
        run(tmp_path, "a", small_recipe(**{"model.bogus": 1}))


def test_too_small_training_set(tmp_path):
    with pytest.raises(ValueError, match="fewer than one global batch of 100"):
        run(tmp_path, "a", small_recipe(max_train_samples=50))


def test_default_param_groups_match_the_library(tmp_path):
    # The loop uses binarynet.optim.param_groups: one group per binary layer plus "other".
    state = run(tmp_path, "a", small_recipe(epochs=1)) and checkpoint.load(tmp_path / "a" / "last.pt")
    names = [g["name"] for g in state["optimizer"]["param_groups"]]
    assert names == ["1", "4", "7", "other"]
    assert optim.Adam.clips_latent_weights


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_missing_fails_before_writing_anything(tmp_path):
    with pytest.raises(BinarynetError, match="pip install tensorboard"):
        run(tmp_path, "a", small_recipe(epochs=1), tensorboard=True)
    assert not (tmp_path / "a").exists()
