"""How exactly the engine follows torch on a trained run's test split: differing predictions, and
:func:`binarynet.export.exactness.agreement`'s decision-by-decision counts (near-ties).

The run's best checkpoint is exported as ``binarynet export`` does (uint8 input, the run's
normalisation folded in). Predictions: torch on the normalised images against the engine on the
uint8 images (what ``binarynet predict`` runs). Agreement: both on the same normalised float
images, in chunks; a sample "diverges" at its first differing sign decision, each counted with
its distance from the threshold relative to the typical size of that input. A paper chain's
decisions are exact integer thresholds (checked at export): only its predictions are compared.

    python benchmarks/agreement_trained.py runs/reactnet_quick        # the whole test split
    python benchmarks/agreement_trained.py runs/reactnet_quick --limit 1000
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from binarynet import data, timing
from binarynet.export import export
from binarynet.export.exactness import agreement
from binarynet.train import RunOptions
from binarynet.train.checkpoint import load_model
from binarynet.train.inputs import load_split


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a training run folder (its best.pt)")
    parser.add_argument("--split", default="", help="dataset split (default: the recipe's test split)")
    parser.add_argument("--limit", type=int, default=0, help="first N samples only (0: all)")
    parser.add_argument("--chunk", type=int, default=500, help="samples per agreement call")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default: $BINARYNET_DATA)")
    args = parser.parse_args(argv)
    model, recipe, normalization = load_model(os.path.join(args.run, "best.pt"))
    model.eval()
    dataset = load_split(recipe, args.split or recipe.test_split,
                         RunOptions(data_dir=args.data_dir), args.limit)
    packed = export(model, dataset.images[:256], input_scale=normalization[0],
                    input_offset=normalization[1])
    labels = dataset.labels.numpy()
    with torch.no_grad():
        chunks = [x for x, _ in data.batches(dataset, args.chunk, normalization=normalization)]
        torch_pred = torch.cat([model(x).argmax(1) for x in chunks]).numpy()
    engine_pred = packed.predict(dataset.images.numpy()).argmax(1)
    print(f"{args.run}: {recipe.name}, {len(labels)} samples of {recipe.dataset} "
          f"{args.split or recipe.test_split}; {timing.cpu_description()}")
    print(f"predictions (engine on uint8, torch on float): torch accuracy "
          f"{np.mean(torch_pred == labels):.4f}, engine {np.mean(engine_pred == labels):.4f}, "
          f"{int(np.sum(torch_pred != engine_pred))} differ")
    totals = {"differing_predictions": int(np.sum(torch_pred != engine_pred))}
    if packed.export_report["path"] != "dag":
        print("a chain: its sign decisions are integer thresholds, exact by construction")
        return totals
    totals.update({"samples": 0, "diverged_samples": 0, "decisions": 0, "near_ties": 0,
                   "argmax_agreement": 0.0, "max_margin_scale": 0.0,
                   "max_logit_relative_exact": 0.0})
    for x in chunks:
        r = agreement(model, packed, x.numpy())
        totals["samples"] += r["samples"]
        totals["diverged_samples"] += r["diverged_samples"]
        totals["decisions"] += sum(s["decisions"] for s in r["signs"].values())
        totals["near_ties"] += sum(s["differ"] for s in r["signs"].values())
        totals["argmax_agreement"] += r["argmax_agreement"] * r["samples"]
        totals["max_margin_scale"] = max(totals["max_margin_scale"],
                                         *(s["max_margin_scale"] for s in r["signs"].values()))
        totals["max_logit_relative_exact"] = max(totals["max_logit_relative_exact"],
                                                 r["max_logit_relative_exact"])
    totals["argmax_agreement"] /= totals["samples"]
    print(f"agreement on float input: argmax {totals['argmax_agreement']:.4f}, "
          f"{totals['diverged_samples']} samples with a differing decision, "
          f"{totals['near_ties']} near-ties in {totals['decisions']:,} decisions (largest "
          f"|x - t| / mean |x|: {totals['max_margin_scale']:.1e}), logits of the other samples "
          f"within {totals['max_logit_relative_exact']:.1e} of their largest")
    return totals


if __name__ == "__main__":
    main()
