"""The modern BNN recipes (CIFAR-10 for each model, ImageNet cluster recipes, the CPU-quick variant).

The models arrive from the model zoo (binarynet.models); tests that build them skip, naming the
missing model, until it is registered."""
import pytest
import torch

import binarynet as bn
from binarynet.train import recipes
from binarynet.train.builders import build_model, build_optimizer

CIFAR = ["birealnet18_cifar10", "reactnet18_cifar10", "reactnet_a_cifar10", "quicknet_cifar10",
         "reactnet18_cifar10_cpu_quick"]
IMAGENET = ["reactnet18_imagenet", "quicknet_imagenet"]


def require_model(recipe):
    if recipe.model not in bn.models.names():
        pytest.skip(f"model {recipe.model!r} is not registered in binarynet.models yet (model zoo)")


@pytest.mark.parametrize("name", CIFAR + IMAGENET)
def test_recipe_is_valid_and_round_trips(name):
    recipe = recipes.get(name)
    assert recipes.Recipe.from_dict(recipe.to_dict()) == recipe
    assert recipe.loss == "cross_entropy" and recipe.lr_schedule in ("cosine", "one_cycle")
    assert not recipe.glorot_lr_scale
    if name in CIFAR:
        assert (recipe.dataset, recipe.augment, recipe.model_overrides["input_size"]) == ("cifar10", "crop_flip", 32)
    else:
        assert (recipe.dataset, recipe.augment, recipe.model_overrides["input_size"]) == ("imagenet", "none", 224)
        assert "top-1" in recipe.description


def test_quicknet_cifar10_trains_with_bop():
    recipe = recipes.get("quicknet_cifar10")
    assert (recipe.optimizer, recipe.bop_threshold, recipe.bop_gamma) == ("bop_adam", 1e-8, 1e-4)


@pytest.mark.parametrize("name", CIFAR + IMAGENET)
def test_recipe_model_builds_with_the_right_output(name):
    recipe = recipes.get(name)
    require_model(recipe)
    model = build_model(recipe, device="meta")
    size = recipe.model_overrides["input_size"]
    scores = model.eval()(torch.empty(2, 3, size, size, device="meta"))
    assert tuple(scores.shape) == (2, recipe.model_overrides["num_classes"])


@pytest.mark.parametrize("name", ["reactnet18_cifar10", "quicknet_cifar10"])
def test_recipe_optimizer_covers_every_parameter_once(name):
    recipe = recipes.get(name)
    require_model(recipe)
    model = build_model(recipe)
    optimizer = build_optimizer(recipe, model, recipe.lr)
    held = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(held) == sorted(id(p) for p in model.parameters())
