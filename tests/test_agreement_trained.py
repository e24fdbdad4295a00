"""benchmarks/agreement_trained.py on tiny synthetic runs: a residual network (the DAG path:
predictions and decision-by-decision counts) and a paper chain (predictions only)."""
import pytest

from binarynet.train import RunOptions, recipes, train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"epochs": 1, "max_train_samples": 200, "max_eval_samples": 100, "batch_size": 50}


def run(tmp_path, **changes):
    recipe = recipes.apply_overrides(recipes.get("synthetic_mlp"), {**TINY, **changes})
    train(recipe, RunOptions(out=str(tmp_path), progress=False))
    return str(tmp_path)


def test_a_residual_run_is_compared_decision_by_decision(tmp_path, load_script, capsys):
    folder = run(tmp_path, **{"model": "reactnet18", "model.width": 8, "model.blocks": [1, 1, 1],
                              "model.in_channels": 1, "model.input_size": 8})
    totals = load_script("benchmarks/agreement_trained.py").main(
        [folder, "--limit", "60", "--chunk", "25"])
    out = capsys.readouterr().out
    assert "60 samples of synthetic test" in out and "agreement on float input" in out
    assert totals["samples"] == 60  # three chunks, the last one short
    assert totals["decisions"] > 0 and totals["decisions"] % 60 == 0  # summed over the chunks
    assert totals["near_ties"] == totals["diverged_samples"] <= 1
    assert totals["argmax_agreement"] >= 59 / 60 and totals["differing_predictions"] <= 1
    assert totals["max_logit_relative_exact"] < 1e-4


def test_a_chain_run_compares_predictions_only(tmp_path, load_script, capsys):
    folder = run(tmp_path, **{"model.hidden": 64})
    totals = load_script("benchmarks/agreement_trained.py").main([folder, "--limit", "50"])
    assert totals == {"differing_predictions": 0}
    assert "integer thresholds, exact by construction" in capsys.readouterr().out
