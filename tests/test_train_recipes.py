"""Recipes: the paper's settings, overrides from the command line, validation."""
import math
import pathlib
import re

import pytest

from binarynet.train import recipe_results, recipes, schedule
from binarynet.train.recipes import Recipe


def test_paper_recipes_hold_the_theano_settings():
    mnist, cifar, svhn = recipes.get("mnist_mlp"), recipes.get("cifar10_vgg"), recipes.get("svhn_vgg")
    assert (mnist.model, mnist.dataset, mnist.batch_size, mnist.epochs) == ("mnist_mlp", "mnist", 100, 1000)
    assert (mnist.lr, mnist.lr_end, mnist.optimizer, mnist.loss) == (3e-3, 3e-7, "adam", "squared_hinge")
    assert mnist.model_overrides == {}  # the builder's defaults are the paper network (3x4096, dropout .2/.5)
    assert (cifar.model, cifar.batch_size, cifar.epochs, cifar.lr, cifar.lr_end) == ("cifar10_vgg", 50, 500, 1e-3, 3e-7)
    assert (svhn.model, svhn.batch_size, svhn.epochs, svhn.lr, svhn.lr_end) == ("svhn_vgg", 50, 200, 1e-3, 1e-6)
    for r in (mnist, cifar, svhn):
        assert (r.normalization, r.train_split, r.val_split, r.test_split, r.augment) == (
            "paper", "train", "val", "test", "none")


def test_names_list_paper_and_quick_recipes():
    names = recipes.names()
    for name in ("mnist_mlp", "cifar10_vgg", "svhn_vgg", "mnist_mlp_quick", "mnist_mlp_cpu_hour", "cifar10_vgg_quick",
                 "synthetic_mlp"):
        assert name in names
    assert all(recipes.get(n).description for n in names)


def test_get_returns_an_independent_copy():
    r = recipes.get("mnist_mlp_quick")
    r.model_overrides["hidden"] = 7
    r.epochs = 99
    fresh = recipes.get("mnist_mlp_quick")
    assert fresh.model_overrides["hidden"] == 1024 and fresh.epochs == 10


def test_unknown_recipe_lists_names():
    with pytest.raises(ValueError, match="unknown recipe 'nope'.*mnist_mlp"):
        recipes.get("nope")


def test_overrides_parse_and_coerce_command_line_text():
    r = recipes.apply_overrides(recipes.get("mnist_mlp"), {
        "epochs": "20", "lr": "1e-4", "pow2_lr_scale": "true", "betas": "[0.8, 0.99]",
        "model.hidden": "1024", "model.batchnorm": "shift", "model.in_shape": "(1, 8, 8)", "lr_end": 1,
    })
    assert r.epochs == 20 and isinstance(r.epochs, int)
    assert r.lr == 1e-4 and r.lr_end == 1.0 and isinstance(r.lr_end, float)
    assert r.pow2_lr_scale is True and r.betas == (0.8, 0.99)
    assert r.model_overrides == {"hidden": 1024, "batchnorm": "shift", "in_shape": [1, 8, 8]}
    assert recipes.get("mnist_mlp").epochs == 1000  # the registry is untouched


@pytest.mark.parametrize("key,value,message", [
    ("bogus", "1", "unknown recipe field 'bogus'"),
    ("epochs", "many", "epochs expects type int"),
    ("epochs", "2.5", "epochs expects type int"),
    ("lr", "fast", "lr expects type float"),
    ("optimizer", "sgd", "optimizer must be one of"),
    ("batch_size", "0", "batch_size must be >= 1"),
    ("lr_schedule", "linear", "lr_schedule must be one of"),
    ("pow2_lr_scale", "maybe", "pow2_lr_scale expects type bool"),
    ("model.", "3", "empty model override"),
])
def test_bad_overrides_name_the_field(key, value, message):
    with pytest.raises(ValueError, match=message):
        recipes.apply_overrides(recipes.get("mnist_mlp"), {key: value})


def test_switching_model_drops_the_old_models_overrides():
    r = recipes.apply_overrides(recipes.get("cifar10_vgg_quick"), {"model": "svhn_vgg", "model.fc": "[64]"})
    assert r.model == "svhn_vgg" and r.model_overrides == {"fc": [64]}


def test_parse_assignments():
    assert recipes.parse_assignments(["a=1", "model.hidden = 1024", "x=y=z"]) == {
        "a": "1", "model.hidden": "1024", "x": "y=z"}
    with pytest.raises(ValueError, match="key=value"):
        recipes.parse_assignments(["novalue"])


def test_parse_value():
    assert recipes.parse_value("3") == 3 and recipes.parse_value("3e-3") == 3e-3
    assert recipes.parse_value("(1, 2)") == (1, 2) and recipes.parse_value("[1, 2]") == [1, 2]
    assert recipes.parse_value("True") is True and recipes.parse_value("shift") == "shift"


def test_dict_round_trip_and_unknown_keys():
    r = recipes.get("mnist_mlp_t7")
    assert Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError, match="unknown recipe field"):
        Recipe.from_dict(dict(r.to_dict(), colour="red"))


def test_step_schedule_needs_a_period():
    with pytest.raises(ValueError, match="lr_step_epochs"):
        recipes.apply_overrides(recipes.get("mnist_mlp"), {"lr_schedule": "step"})



def test_quick_mnist_recipe_holds_its_validation_choice():
    # results/mnist_mlp_quick_cosine.md: chosen on the validation split over two seeds; the final
    # training (results/mnist_mlp_quick_full.md) then uses all 60,000 training images
    r = recipes.get("mnist_mlp_quick")
    assert (r.lr_schedule, r.lr, r.lr_end, r.lr_warmup_epochs) == ("cosine", 3e-3, 3e-6, 0)
    assert (r.epochs, r.batch_size, r.augment, r.train_split, r.val_split) == (10, 100, "none", "train_full", "")
    assert r.model_overrides == {"hidden": 1024, "dropout_in": 0.0, "dropout_hidden": 0.1}
    assert "results/mnist_mlp_quick_full.md" in recipe_results.result("mnist_mlp_quick")


def test_demo_keeps_a_validation_split_for_its_best_epoch():
    from binarynet import demo
    r = demo.demo_recipe(epochs=3, hidden=64, limit_train=0, seed=1)
    assert (r.train_split, r.val_split, r.lr_schedule, r.lr_end) == ("train", "val", "exponential", 3e-5)


def test_recorded_results_cite_pages_that_exist():
    root = pathlib.Path(__file__).resolve().parents[1]
    for name, text in recipe_results.RESULTS.items():
        assert name in recipes.names()
        pages = re.findall(r"results/[\w.-]+\.md", text)
        assert pages and all((root / page).is_file() for page in pages), (name, pages)

# -- schedules ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,factor", [("mnist_mlp", 0.99083), ("cifar10_vgg", 0.98391), ("svhn_vgg", 0.96605)])
def test_theano_decay_factors_of_spec_2_8(name, factor):
    r = recipes.get(name)
    assert round(schedule.decay_factor(r.lr, r.lr_end, r.epochs), 5) == factor


def test_exponential_schedule_values():
    kw = dict(schedule="exponential", lr=1e-2, lr_end=1e-4, epochs=4)
    assert schedule.lr_at(0, **kw) == 1e-2
    assert math.isclose(schedule.lr_at(2, **kw), 1e-3, rel_tol=1e-12)
    assert math.isclose(schedule.lr_at(4, **kw), 1e-4, rel_tol=1e-12)  # reached after the last epoch
    assert math.isclose(schedule.lr_at(1, **kw) / schedule.lr_at(0, **kw), 10 ** -0.5, rel_tol=1e-12)


def test_step_and_constant_schedules():
    kw = dict(schedule="step", lr=2.0 ** -6, lr_end=1.0, epochs=100, step_epochs=20, step_gamma=0.5)
    assert [schedule.lr_at(e, **kw) for e in (0, 19, 20, 39, 40, 99)] == [
        2.0 ** -6, 2.0 ** -6, 2.0 ** -7, 2.0 ** -7, 2.0 ** -8, 2.0 ** -10]
    assert schedule.lr_at(7, schedule="constant", lr=0.5, lr_end=0.1, epochs=3) == 0.5
    with pytest.raises(ValueError, match="unknown lr schedule"):
        schedule.lr_at(0, schedule="linear", lr=1.0, lr_end=1.0, epochs=1)


def test_recipe_lr_scales_both_ends():
    r = recipes.apply_overrides(recipes.get("mnist_mlp"), {"epochs": 2})
    assert schedule.recipe_lr(r, 0, factor=2.0) == 6e-3
    assert math.isclose(schedule.recipe_lr(r, 1, factor=2.0), 2 * math.sqrt(3e-3 * 3e-7), rel_tol=1e-12)


def test_batch_scaling_rules():
    assert schedule.batch_scaling_factor("sqrt", 400, 100) == 2.0
    assert schedule.batch_scaling_factor("linear", 400, 100) == 4.0
    assert schedule.batch_scaling_factor("none", 400, 100) == 1.0
    with pytest.raises(ValueError, match="scaling rule"):
        schedule.batch_scaling_factor("cubic", 400, 100)


def test_recipe_op_macs_is_a_middle_layer_over_one_batch():
    from binarynet.summary import recipe_op_macs

    quick = recipes.get("mnist_mlp_quick")  # 3x1024: layers 784, 1024, 1024, 1024 -> 10
    assert recipe_op_macs(quick) == 1024 * 1024 * quick.batch_size
    wide = recipes.apply_overrides(quick, {"model.hidden": 256, "batch_size": 50})
    assert recipe_op_macs(wide) == 256 * 256 * 50  # sorted: 2560, 65536, 65536, 200704
    synthetic = recipes.get("synthetic_mlp")  # 2x256 on 8x8 images: 2560, 16384, 65536
    assert recipe_op_macs(synthetic) == 64 * 256 * synthetic.batch_size
    assert recipe_op_macs(recipes.get("reactnet18_imagenet")) == 0.0  # an image folder's
    convnet = recipes.get("cifar10_vgg_quick")
    assert recipe_op_macs(convnet) > 1e8  # counted through the convolutions
