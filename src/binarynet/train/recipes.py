"""Named training configurations ("recipes"): the paper's settings and quick variants.

A :class:`Recipe` is a plain dataclass holding everything that decides what a training run
computes: model and its overrides, dataset and normalisation, splits, optimizer, learning-rate
schedule, batch size, epochs, loss, augmentation and seed. Run-time settings that do not change
the result (device, threads, output folder) live outside it.

The paper recipes follow the Theano code of Courbariaux, Hubara et al. 2016 (docs/paper.md §2.8, "TH"),
whose runs produced the "BNN (Theano)" row of Table 1: test error is reported at the epoch with
the best validation error, with no retraining on the validation set.
"""
from __future__ import annotations

import ast
import dataclasses
import json
from dataclasses import dataclass, field

from .. import data
from ..errors import BinarynetError
from .schedule import SCHEDULES

OPTIMIZERS = ("adam", "shift_adamax", "bop_adam")
LOSSES = ("squared_hinge", "cross_entropy")
LR_SCALINGS = ("sqrt", "linear", "none")
AUGMENTATIONS = ("none", *data.AUGMENTATIONS)  # crop_flip, shift
NORMALIZATIONS = ("paper", "meanstd")


class RecipeError(BinarynetError, ValueError):
    """A recipe field out of its range, or not fitting the data or the device; the message names
    the field. A ValueError too, as recipe errors have always been."""


@dataclass
class Recipe:
    """Everything that decides what a training run computes.

    Learning rate: epoch ``e`` (0-based) trains with ``lr_at(e)`` (see
    :mod:`binarynet.train.schedule`); binary layers' latent weights get it times their Glorot
    scale (docs/paper.md §2.5, rounded to a power of two when ``pow2_lr_scale``). When the effective batch
    (per-process ``batch_size`` x world size) differs from ``batch_size``, both ``lr`` and
    ``lr_end`` are multiplied by ``lr_scaling`` applied to the ratio (``"sqrt"``: the square-root
    rule for Adam-type optimizers; ``"linear"``; ``"none"``).

    Modern BNN training (docs/training.md, "Modern BNNs"): ``optimizer="bop_adam"`` gives the
    binary weights to Bop (``bop_threshold``, ``bop_gamma``) and the rest to Adam; ``teacher``
    (a training checkpoint) adds the distributional loss with weight ``distill_weight``:
    ``loss = (1 - distill_weight) * task_loss + distill_weight * KL(p_teacher || p_student)``;
    ``two_step_epochs`` > 0 trains that many first epochs with real-valued weights (binary
    activations), then both binary; ``weight_decay`` applies by the rule of
    :mod:`binarynet.optim.decay` (``weight_decay_norm_bias`` widens it).
    """

    name: str
    description: str
    model: str
    dataset: str
    model_overrides: dict = field(default_factory=dict)
    normalization: str = "paper"        # x_f = x_u8 * scale + offset, see binarynet.data.normalization
    train_split: str = "train"
    val_split: str = "val"              # "" = no validation: the last epoch counts as best
    test_split: str = "test"            # "" = no test evaluation
    max_train_samples: int = 0          # > 0: use only the first N training examples
    max_eval_samples: int = 0           # > 0: use only the first N validation / test examples
    optimizer: str = "adam"
    optimizer_variant: str = "paper"    # shift_adamax only: "paper" or "torch7" (docs/paper.md §2.4)
    betas: tuple = ()                   # () = the optimizer's defaults
    bop_threshold: float = 1e-8         # bop_adam: Bop's tau
    bop_gamma: float = 1e-4             # bop_adam: Bop's gamma (momentum rate)
    glorot_lr_scale: bool = True        # latent weights' LR x their Glorot scale (the paper's rule)
    weight_decay: float = 0.0           # real-valued layers' weights only (binarynet.optim.decay)
    weight_decay_norm_bias: bool = False  # also decay BN, biases, shifts (never binary weights)
    lr: float = 1e-3                    # learning rate of the first epoch
    lr_end: float = 1e-3                # exponential: the rate the decay reaches after `epochs`
    lr_schedule: str = "exponential"
    lr_step_epochs: int = 0             # step: multiply by lr_step_gamma every this many epochs
    lr_step_gamma: float = 0.5
    lr_warmup_epochs: int = 0           # cosine: linear warm-up; one_cycle: rise (0 = 30% of epochs)
    lr_scaling: str = "sqrt"
    pow2_lr_scale: bool = False
    batch_size: int = 100               # per process
    eval_batch_size: int = 1000
    epochs: int = 1
    loss: str = "squared_hinge"
    label_smoothing: float = 0.0        # cross_entropy only: targets (1 - s) onehot + s / classes
    teacher: str = ""                   # training checkpoint (file or run folder) of a float teacher
    distill_weight: float = 1.0         # with a teacher: weight of the distributional loss
    distill_temperature: float = 1.0
    two_step_epochs: int = 0            # > 0: epochs of step 1 (real weights, binary activations)
    augment: str = "none"
    seed: int = 1234

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise RecipeError naming the field when a value is out of its domain."""
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("optimizer_variant", self.optimizer_variant, ("paper", "torch7"))
        _choice("loss", self.loss, LOSSES)
        _choice("lr_schedule", self.lr_schedule, SCHEDULES)
        _choice("lr_scaling", self.lr_scaling, LR_SCALINGS)
        _choice("augment", self.augment, AUGMENTATIONS)
        _choice("normalization", self.normalization, NORMALIZATIONS)
        for name in ("batch_size", "eval_batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise RecipeError(f"recipe {self.name}: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) < 0:
                raise RecipeError(f"recipe {self.name}: {name} must be >= 0, got {getattr(self, name)}")
        if not (self.lr > 0 and self.lr_end > 0):
            raise RecipeError(f"recipe {self.name}: lr and lr_end must be > 0, got {self.lr}, {self.lr_end}")
        if self.lr_schedule == "step" and self.lr_step_epochs < 1:
            raise RecipeError(f"recipe {self.name}: lr_schedule 'step' needs lr_step_epochs >= 1")
        if not 0.0 < self.lr_step_gamma <= 1.0:
            raise RecipeError(f"recipe {self.name}: lr_step_gamma must be in (0, 1], got {self.lr_step_gamma}")
        if self.betas and (len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas)):
            raise RecipeError(f"recipe {self.name}: betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.weight_decay < 0:
            raise RecipeError(f"recipe {self.name}: weight_decay must be >= 0, got {self.weight_decay}")
        self._validate_modern()
        if self.seed < 0:
            raise RecipeError(f"recipe {self.name}: seed must be >= 0, got {self.seed}")
        if not self.train_split:
            raise RecipeError(f"recipe {self.name}: train_split must not be empty")

    def _validate_modern(self) -> None:
        """The fields of modern BNN training (Bop, schedules, label smoothing, distillation, two-step)."""
        def bad(name, rule):
            raise RecipeError(f"recipe {self.name}: {name} {rule}, got {getattr(self, name)!r}")
        if not self.bop_threshold >= 0:
            bad("bop_threshold", "must be >= 0")
        if not 0.0 < self.bop_gamma <= 1.0:
            bad("bop_gamma", "must be in (0, 1]")
        if not 0 <= self.lr_warmup_epochs < self.epochs:
            bad("lr_warmup_epochs", f"must be in [0, epochs = {self.epochs})")
        if not 0.0 <= self.label_smoothing < 1.0:
            bad("label_smoothing", "must be in [0, 1)")
        if self.label_smoothing and self.loss != "cross_entropy":
            bad("label_smoothing", "needs loss cross_entropy")
        if not 0.0 <= self.distill_weight <= 1.0:
            bad("distill_weight", "must be in [0, 1]")
        if not self.distill_temperature > 0:
            bad("distill_temperature", "must be > 0")
        if not 0 <= self.two_step_epochs < self.epochs:
            bad("two_step_epochs", f"must be in [0, epochs = {self.epochs})")
        if self.dataset == "imagenet" and self.augment != "none":
            bad("augment", "must be none for imagenet (its random resized crop + flip are built in)")
        if self.two_step_epochs and self.optimizer == "bop_adam":
            bad("two_step_epochs", "needs latent weights (optimizer adam): Bop keeps binary weights only")

    def to_dict(self) -> dict:
        """JSON-compatible dict of all fields (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict) -> "Recipe":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown recipe field(s) {sorted(unknown)}; fields: {field_names()}")
        values = dict(values)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise RecipeError(f"recipe field {name} must be one of {list(allowed)}, got {value!r}")


def field_names() -> list:
    """Names of the recipe fields that ``--set`` accepts (plus ``model.<override>``)."""
    return [f.name for f in dataclasses.fields(Recipe) if f.name not in ("name", "description")]


_RECIPES: dict = {}


def register(recipe: Recipe) -> Recipe:
    """Add a recipe to the registry (its name must be new)."""
    if recipe.name in _RECIPES:
        raise ValueError(f"a recipe named {recipe.name!r} is already registered")
    _RECIPES[recipe.name] = recipe
    return recipe


def names() -> list:
    """Registered recipe names, in registration order."""
    return list(_RECIPES)


def get(name: str) -> Recipe:
    """A fresh copy of the named recipe; unknown name -> ValueError listing the names."""
    if name not in _RECIPES:
        raise ValueError(f"unknown recipe {name!r}; available: {', '.join(names())}")
    return dataclasses.replace(_RECIPES[name], model_overrides=dict(_RECIPES[name].model_overrides))


def parse_value(text: str):
    """Turn the text of ``--set key=value`` into a Python value.

    JSON first (``3``, ``1e-3``, ``true``, ``[128, 256]``, ``"x"``), then Python literals
    (``(128, 256)``, ``True``, ``None``), else the text itself as a string.
    """
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _coerce(name: str, value, annotation: str):
    """Convert ``value`` to the type of recipe field ``name`` (annotations are strings here)."""
    kind = {"int": int, "float": float, "str": str, "bool": bool, "tuple": tuple, "dict": dict}[annotation]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if value in (0, 1):
            return bool(value)
    elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    elif kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    elif kind is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    elif kind is dict and isinstance(value, dict):
        return value
    raise ValueError(f"recipe field {name} expects type {annotation}, got {value!r}")


def apply_overrides(recipe: Recipe, overrides: dict) -> Recipe:
    """A copy of ``recipe`` with ``{"field": value, "model.arg": value}`` applied and validated.

    Values may be strings from the command line (parsed with :func:`parse_value`). Unknown fields
    raise ValueError listing the valid ones; model overrides are checked when the model is built.
    """
    types = {f.name: f.type for f in dataclasses.fields(Recipe)}
    changes = {}
    # Switching to another model drops the recipe's overrides, which belong to its own model.
    switches_model = "model" in overrides and parse_value(str(overrides["model"])) != recipe.model
    model_overrides = {} if switches_model else dict(recipe.model_overrides)
    for key, value in overrides.items():
        if isinstance(value, str):
            value = parse_value(value)
        if key.startswith("model."):
            arg = key[len("model."):]
            if not arg:
                raise ValueError("empty model override name in 'model.=...'")
            model_overrides[arg] = list(value) if isinstance(value, tuple) else value
        elif key in types and key not in ("name", "description", "model_overrides"):
            changes[key] = _coerce(key, value, types[key])
        else:
            raise ValueError(
                f"unknown recipe field {key!r}; fields: {', '.join(field_names())}, "
                f"or model.<argument> for the model builder"
            )
    return dataclasses.replace(recipe, model_overrides=model_overrides, **changes)


def parse_assignments(items) -> dict:
    """``["a=1", "model.hidden=1024"]`` -> ``{"a": "1", "model.hidden": "1024"}`` (values unparsed)."""
    result = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        result[key.strip()] = value.strip()
    return result


# ---------------------------------------------------------------------------------------------
# The paper's recipes (TH code, docs/paper.md §2.8) and quick variants for a small CPU.

register(Recipe(
    name="mnist_mlp",
    description="Paper MNIST MLP 3x4096, dropout .2/.5, Adam 3e-3->3e-7 over 1000 epochs, batch 100 "
    "(Table 1 Theano: 0.96%)",
    model="mnist_mlp", dataset="mnist",
    optimizer="adam", lr=3e-3, lr_end=3e-7, batch_size=100, epochs=1000, seed=1234,
))
register(Recipe(
    name="cifar10_vgg",
    description="Paper CIFAR-10 ConvNet (2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC-10), Adam "
    "1e-3->3e-7 over 500 epochs, batch 50, no augmentation (Table 1 Theano: 11.40%)",
    model="cifar10_vgg", dataset="cifar10",
    optimizer="adam", lr=1e-3, lr_end=3e-7, batch_size=50, epochs=500, seed=1234,
))
register(Recipe(
    name="svhn_vgg",
    description="Paper SVHN ConvNet (CIFAR net with half conv widths), Adam 1e-3->1e-6 over 200 "
    "epochs, batch 50 (Table 1 Theano: 2.80%)",
    model="svhn_vgg", dataset="svhn",
    optimizer="adam", lr=1e-3, lr_end=1e-6, batch_size=50, epochs=200, seed=1234,
))
register(Recipe(
    name="mnist_mlp_t7",
    description="Torch7 flavour: MLP 3x2048, shift-BN, stochastic neurons, no dropout, shift-AdaMax "
    "2^-6 halved every 20 epochs, batch 100, mean/std input (Table 1 Torch7: 1.40%)",
    model="mnist_mlp", dataset="mnist", normalization="meanstd",
    model_overrides={"hidden": 2048, "batchnorm": "shift", "stochastic": True,
                     "dropout_in": 0.0, "dropout_hidden": 0.0, "bn_eps": 1e-5, "bn_momentum": 0.125},
    optimizer="shift_adamax", optimizer_variant="torch7", lr=2.0 ** -6, lr_end=2.0 ** -6,
    lr_schedule="step", lr_step_epochs=20, lr_step_gamma=0.5, batch_size=100, epochs=200, seed=432,
))
register(Recipe(
    name="mnist_mlp_quick",
    description="MNIST MLP 3x1024 (paper layout, dropout 0/.1 for a 10-epoch budget), Adam 3e-3 with "
    "a cosine decay to 3e-6 over 10 epochs, batch 100, all 60,000 training images (settings chosen on "
    "the 50k/10k validation split over two seeds, results/mnist_mlp_quick_cosine.md; the final "
    "training, results/mnist_mlp_quick_full.md)",
    model="mnist_mlp", dataset="mnist",
    model_overrides={"hidden": 1024, "dropout_in": 0.0, "dropout_hidden": 0.1},
    # cosine: the rate stays near its peak for half the budget instead of halving every epoch
    optimizer="adam", lr=3e-3, lr_end=3e-6, lr_schedule="cosine", batch_size=100, epochs=10, seed=1234,
    # The settings were chosen on the validation split; the final model then trains on it too
    # (the last epoch counts: with the cosine decay it was the best-validation one on both seeds).
    train_split="train_full", val_split="",
))
register(Recipe(
    name="mnist_mlp_cpu_hour",
    description="Paper MNIST MLP 3x4096 with dropout 0/.2, Adam 3e-3->3e-6 over 17 epochs, batch 100; "
    "43 minutes on the 2 CPU cores of its recorded run (about 38 with the fused Adam step), 1.44% test "
    "error (results/mnist_mlp_cpu_17ep.md; a cosine decay and 19 epochs lost on validation: "
    "results/mnist_mlp_cpu_hour_cosine.md, results/mnist_mlp_cpu_hour_19ep.md)",
    model="mnist_mlp", dataset="mnist", model_overrides={"dropout_in": 0.0, "dropout_hidden": 0.2},
    optimizer="adam", lr=3e-3, lr_end=3e-6, batch_size=100, epochs=17, seed=1234,
))
register(Recipe(
    name="cifar10_vgg_quick",
    description="CIFAR-10 ConvNet with widths 32-64-128 and FC 256x2, Adam 1e-3->1e-5 over 10 epochs, "
    "batch 50; shows learning on a CPU in tens of minutes",
    model="cifar10_vgg", dataset="cifar10",
    model_overrides={"widths": [32, 64, 128], "fc": [256, 256]},
    optimizer="adam", lr=1e-3, lr_end=1e-5, batch_size=50, epochs=10, seed=1234,
))
register(Recipe(
    name="synthetic_mlp",
    description="Smoke test without any dataset: MLP 2x256 on a generated 10-class image problem, "
    "5 epochs in seconds",
    model="mnist_mlp", dataset="synthetic",
    model_overrides={"hidden": 256, "depth": 2, "in_shape": [1, 8, 8], "dropout_in": 0.0, "dropout_hidden": 0.0},
    optimizer="adam", lr=3e-3, lr_end=3e-4, batch_size=100, epochs=5, seed=1234,
))


# ---------------------------------------------------------------------------------------------
# Modern BNNs (docs/training.md, "Modern BNNs"). All train on the 50000 CIFAR-10 training images
# and report the test error after the last epoch (no validation split), as those papers do.
# The models come from binarynet.models (registered there; a recipe is checked when it is built).

def _cifar10_modern(name: str, model: str, description: str, **fields) -> Recipe:
    settings = dict(
        name=name, description=description, model=model, dataset="cifar10",
        model_overrides={"num_classes": 10, "input_size": 32}, normalization="meanstd",
        train_split="train_full", val_split="", test_split="test", augment="crop_flip",
        optimizer="adam", glorot_lr_scale=False, lr=1e-3, lr_end=1e-6, lr_schedule="cosine",
        loss="cross_entropy", batch_size=128, eval_batch_size=500, epochs=200, seed=1234)
    settings.update(fields)
    return register(Recipe(**settings))


_cifar10_modern(
    "birealnet18_cifar10", "birealnet18",
    "Bi-Real Net 18 (real-valued shortcuts, ApproxSign) on CIFAR-10: crop+flip, Adam 1e-3 cosine to 1e-6 "
    "over 200 epochs, batch 128; published binary ResNet-18 results on CIFAR-10: 89-92% (GPU)")
_cifar10_modern(
    "reactnet18_cifar10", "reactnet18",
    "ReActNet-18 (ResNet-18 backbone, RSign/RPReLU) on CIFAR-10: crop+flip, Adam 1e-3 cosine to 1e-6 over "
    "200 epochs, batch 256, label smoothing 0.1, weight decay 5e-6 on real layers; target >= 92% test "
    "accuracy (GPU); add --teacher CKPT for distillation, --set two_step_epochs=N for two-step training",
    batch_size=256, label_smoothing=0.1, weight_decay=5e-6)
_cifar10_modern(
    "reactnet_a_cifar10", "reactnet_a",
    "ReActNet-A (MobileNet-v1 backbone) on CIFAR-10: crop+flip, Adam 1e-3 cosine to 1e-6 over 200 "
    "epochs, batch 256, label smoothing 0.1, weight decay 5e-6 on real layers (GPU)",
    batch_size=256, label_smoothing=0.1, weight_decay=5e-6)
_cifar10_modern(
    "quicknet_cifar10", "quicknet",
    "QuickNet (small) on CIFAR-10 with Bop + Adam (Helwegen et al. 2019's CIFAR-10 Bop settings: "
    "tau 1e-8, gamma 1e-4; Adam 1e-3 cosine for the real-valued parameters), crop+flip, 200 epochs, "
    "batch 128, label smoothing 0.1 (GPU)",
    model_overrides={"num_classes": 10, "input_size": 32, "size": "small"}, optimizer="bop_adam",
    bop_threshold=1e-8, bop_gamma=1e-4, label_smoothing=0.1)
_cifar10_modern(
    "reactnet18_cifar10_cpu_quick", "reactnet18",
    "ReActNet-18 at half width (32-256 channels, 2.8 M parameters) on 20000 CIFAR-10 training images "
    "for 5 epochs (crop+flip, batch 64, Adam 2e-3 cosine, label smoothing 0.1, test on 2000 images): "
    "shows learning on 2 CPU cores in about 16 minutes (43.9% test error)",
    model_overrides={"num_classes": 10, "input_size": 32, "width": 32},
    max_train_samples=20000, max_eval_samples=2000, batch_size=64, eval_batch_size=250, epochs=5,
    lr=2e-3, lr_end=1e-4, label_smoothing=0.1)

# ImageNet cluster recipes (not run here): <data dir>/imagenet/{train,val}/<wnid>/*.JPEG, streamed
# from disk; batch_size is per process (lr_scaling sqrt: tuned for one process of 256 images).
register(Recipe(
    name="reactnet18_imagenet",
    description="ReActNet-18 on ImageNet, cluster recipe (torchrun): two-step training 128 + 128 epochs, "
    "Adam 5e-4 cosine, batch 256 per process, weight decay 5e-6 on real layers, label smoothing 0.1; "
    "ReActNet (Liu et al. 2020) reports 65.5% top-1 for its ResNet-18 variant with 2 x 256 epochs "
    "and distillation from a ResNet-34 (--teacher): not reproduced here",
    model="reactnet18", dataset="imagenet", model_overrides={"num_classes": 1000, "input_size": 224},
    train_split="train", val_split="", test_split="val", optimizer="adam", glorot_lr_scale=False,
    lr=5e-4, lr_end=1e-7, lr_schedule="cosine", weight_decay=5e-6, loss="cross_entropy", label_smoothing=0.1,
    two_step_epochs=128, batch_size=256, eval_batch_size=250, epochs=256, seed=1234,
))
register(Recipe(
    name="quicknet_imagenet",
    description="QuickNet (medium) on ImageNet, cluster recipe (torchrun): Adam 2.5e-3 one-cycle (5 warm-up "
    "epochs) to 1e-7 over 120 epochs, batch 256 per process, label smoothing 0.1; the larq zoo reports "
    "63.3% top-1 for QuickNet (small 59.4%, large 66.9%, trained with distillation): not reproduced here",
    model="quicknet", dataset="imagenet", model_overrides={"num_classes": 1000, "input_size": 224, "size": "medium"},
    train_split="train", val_split="", test_split="val", optimizer="adam", glorot_lr_scale=False,
    lr=2.5e-3, lr_end=1e-7, lr_schedule="one_cycle", lr_warmup_epochs=5, loss="cross_entropy", label_smoothing=0.1,
    batch_size=256, eval_batch_size=250, epochs=120, seed=1234,
))
