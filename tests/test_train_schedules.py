"""Cosine and one-cycle schedules against their formulas, and the validation of the modern recipe fields."""
import math

import pytest

from binarynet.train import recipes, schedule
from binarynet.train.recipes import RecipeError


def test_cosine_schedule_values():
    kw = dict(schedule="cosine", lr=1e-3, lr_end=1e-5, epochs=10)
    assert schedule.lr_at(0, **kw) == 1e-3
    assert math.isclose(schedule.lr_at(5, **kw), (1e-3 + 1e-5) / 2, rel_tol=1e-12)
    lrs = [schedule.lr_at(e, **kw) for e in range(10)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert math.isclose(schedule.lr_at(10, **kw), 1e-5, rel_tol=1e-12)  # reached after the last epoch
    warm = dict(kw, warmup_epochs=2)
    assert [schedule.lr_at(e, **warm) for e in (0, 1, 2)] == [0.5e-3, 1e-3, 1e-3]
    assert math.isclose(schedule.lr_at(6, **warm), (1e-3 + 1e-5) / 2, rel_tol=1e-12)


def test_one_cycle_schedule_values():
    kw = dict(schedule="one_cycle", lr=1e-2, lr_end=1e-6, epochs=10)  # W = 3
    assert schedule.lr_at(0, **kw) == pytest.approx(1e-2 / 25)
    assert schedule.lr_at(1, **kw) == pytest.approx(1e-2 / 25 + (1e-2 - 1e-2 / 25) / 3)
    assert schedule.lr_at(3, **kw) == pytest.approx(1e-2)
    assert schedule.lr_at(10, **kw) == pytest.approx(1e-6)
    with pytest.raises(ValueError, match="lr_warmup_epochs"):
        schedule.lr_at(0, **dict(kw, warmup_epochs=10))


@pytest.mark.parametrize("key,value,message", [
    ("optimizer", "bop", "optimizer must be one of"),
    ("bop_gamma", "0", "bop_gamma must be in"),
    ("bop_threshold", "-1", "bop_threshold must be >= 0"),
    ("label_smoothing", "0.1", "label_smoothing needs loss cross_entropy"),
    ("distill_weight", "1.5", "distill_weight must be in"),
    ("distill_temperature", "0", "distill_temperature must be > 0"),
    ("two_step_epochs", "5", "two_step_epochs must be in"),
    ("lr_warmup_epochs", "5", "lr_warmup_epochs must be in"),
])
def test_bad_modern_fields_name_the_field(key, value, message):
    base = recipes.apply_overrides(recipes.get("synthetic_mlp"), {"epochs": 5})
    with pytest.raises(RecipeError, match=message):
        recipes.apply_overrides(base, {key: value})


def test_two_step_needs_latent_weights():
    base = recipes.apply_overrides(recipes.get("synthetic_mlp"), {"optimizer": "bop_adam"})
    with pytest.raises(RecipeError, match="two_step_epochs needs latent weights"):
        recipes.apply_overrides(base, {"two_step_epochs": 2})
