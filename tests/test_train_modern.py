"""Modern BNN training in the loop: Bop + Adam (flip ratio, exact resume), distillation from a
teacher, two-step training, label smoothing and weight decay of a recipe."""
import copy

import pytest
import torch
import torch.nn.functional as F

import binarynet as bn
from binarynet.losses import DistillationError
from binarynet.train import RunOptions, checkpoint, metrics, recipes, train, two_step
from binarynet.train.builders import build_model, build_optimizer, loss_function
from binarynet.train.loop import Trainer
from binarynet.train.recipes import RecipeError

pytestmark = pytest.mark.usefixtures("one_thread")

# 2 epochs x 4 steps of 100 samples; no dropout.
SMALL = {"epochs": 2, "max_train_samples": 400, "max_eval_samples": 200, "model.hidden": 64, "batch_size": 100}


def recipe_with(**changes):
    return recipes.apply_overrides(recipes.get("synthetic_mlp"), {**SMALL, **changes})


def run(recipe, out, teacher=None, **options):
    return train(recipe, RunOptions(out=str(out), progress=False, **options), teacher=teacher)


def test_bop_run_logs_the_flip_ratio_and_keeps_binary_weights(tmp_path):
    recipe = recipe_with(optimizer="bop_adam", bop_threshold=1e-7, bop_gamma=1e-2, loss="cross_entropy")
    run(recipe, tmp_path / "run")
    records = metrics.read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert all(0.0 < r["flip_ratio"] < 0.5 for r in records), [r["flip_ratio"] for r in records]
    state = checkpoint.load(tmp_path / "run" / "last.pt")
    for name, p in bn.optim.named_binary_params(build_model(recipe)):
        assert set(state["model"][name].unique().tolist()) == {-1.0, 1.0}, name
    assert records[-1]["train_error"] < 0.8  # learns something (10 classes)


def test_bop_run_resumes_exactly_from_a_mid_epoch_checkpoint(tmp_path, monkeypatch):
    recipe = recipe_with(optimizer="bop_adam", bop_threshold=1e-7, bop_gamma=1e-2, loss="cross_entropy")
    run(recipe, tmp_path / "straight")
    original = Trainer.train_step

    def stop_at_step_6(self, indices):
        if self.progress["global_step"] == 6:
            raise RuntimeError("killed")
        return original(self, indices)

    monkeypatch.setattr(Trainer, "train_step", stop_at_step_6)
    with pytest.raises(RuntimeError, match="killed"):
        run(recipe, tmp_path / "cut", checkpoint_every_steps=5)
    monkeypatch.setattr(Trainer, "train_step", original)
    run(None, tmp_path / "cut", resume=str(tmp_path / "cut" / "last.pt"))
    got, want = checkpoint.load(tmp_path / "cut" / "last.pt"), checkpoint.load(tmp_path / "straight" / "last.pt")
    for key, value in want["model"].items():
        assert torch.equal(got["model"][key], value), key
    keep = lambda rs: [(r["flip_ratio"], r["train_loss"]) for r in rs]  # noqa: E731
    assert keep(metrics.read_metrics(tmp_path / "cut" / "metrics.jsonl")) == keep(
        metrics.read_metrics(tmp_path / "straight" / "metrics.jsonl"))


class Spy(torch.nn.Module):
    """A float teacher that records what it is given and how it is run."""

    def __init__(self, classes=10):
        super().__init__()
        self.linear = torch.nn.Linear(64, classes)
        self.calls = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.linear(x.flatten(1))


def test_a_run_with_a_teacher_works_and_the_teacher_gets_no_gradients(tmp_path):
    teacher = Spy()
    before = copy.deepcopy(teacher.state_dict())
    recipe = recipe_with(loss="cross_entropy", distill_weight=0.5)
    run(recipe, tmp_path / "run", teacher=teacher)
    assert teacher.calls and set(teacher.calls) == {(False, False)}  # eval mode, no_grad
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    # The distilled loss differs from training without a teacher.
    plain = run(recipe, tmp_path / "plain")
    got = metrics.read_metrics(tmp_path / "run" / "metrics.jsonl")[0]["train_loss"]
    assert got != metrics.read_metrics(tmp_path / "plain" / "metrics.jsonl")[0]["train_loss"]
    assert plain["epochs"] == 2


def test_a_teacher_checkpoint_path_in_the_recipe(tmp_path):
    run(recipe_with(loss="cross_entropy", epochs=1), tmp_path / "teacher")
    summary = run(recipe_with(loss="cross_entropy", epochs=1, teacher=str(tmp_path / "teacher")), tmp_path / "student")
    assert summary["epochs"] == 1


def test_a_teacher_with_other_classes_is_a_clear_error(tmp_path):
    with pytest.raises(DistillationError, match="teacher outputs 7 classes, the student 10"):
        run(recipe_with(loss="cross_entropy"), tmp_path / "run", teacher=Spy(classes=7))


def test_two_step_weight_quantizer_is_identity_then_sign(tmp_path, monkeypatch):
    seen = []
    original = Trainer.train_step

    def record(self, indices):
        layers = [m for m in self.model.modules() if isinstance(m, bn.nn.BinaryLayer)]
        seen.append((self.progress["epoch"], {m.weight_quantizer for m in layers}))
        return original(self, indices)

    monkeypatch.setattr(Trainer, "train_step", record)
    run(recipe_with(epochs=3, two_step_epochs=1), tmp_path / "run")
    assert {q for e, qs in seen if e == 0 for q in qs} == {None}
    assert {q for e, qs in seen if e >= 1 for q in qs} == {bn.quantizers.ste_sign}


def test_two_step_forward_uses_the_real_weight_in_step_one():
    layer = bn.nn.BinaryLinear(3, 2, bias=False)
    x = torch.tensor([[1.0, -1.0, 1.0]])
    two_step.set_step(layer, 1)
    assert torch.equal(layer(x), x @ layer.weight.t())
    two_step.set_step(layer, 2)
    assert torch.equal(layer(x), x @ bn.quantizers.sign(layer.weight).t())


def test_label_smoothing_and_weight_decay_reach_the_optimizer():
    recipe = recipe_with(loss="cross_entropy", label_smoothing=0.1, weight_decay=5e-4)
    scores, labels = torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
    assert torch.equal(loss_function(recipe)(scores, labels), F.cross_entropy(scores, labels, label_smoothing=0.1))
    model = build_model(recipe)
    # mnist_mlp has no real-valued weight matrix: decay would reach nothing
    with pytest.raises(RecipeError, match="weight_decay 0.0005 reaches no parameter"):
        build_optimizer(recipe, model, 1e-3)
    widened = recipes.apply_overrides(recipe, {"weight_decay_norm_bias": True})
    groups = build_optimizer(widened, model, 1e-3).param_groups
    latent = {id(p) for p in bn.optim.binary_params(model)}
    decayed = [p for g in groups if g["weight_decay"] == 5e-4 for p in g["params"]]
    assert decayed and not any(id(p) in latent for p in decayed)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
