"""``binarynet train``, ``binarynet eval`` and ``binarynet recipes`` (thin layer over binarynet.train)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..errors import BinarynetError, CheckpointError
from ..runs import LAST, checkpoint_path
from .files import require_checkpoint
from .options import non_negative_int, positive_int


def register(subparsers) -> None:
    """Add the train / eval / recipes sub-commands to the ``binarynet`` parser."""
    p = subparsers.add_parser(
        "train", help="train a recipe (single process, or DDP under torchrun)",
        description="Train a BNN recipe. Under `torchrun --nproc_per_node N -m binarynet train ...` "
        "each process trains on its shard with DistributedDataParallel (--batch-size is per process).")
    p.add_argument("--recipe", help="recipe name (see `binarynet recipes`); optional with --resume")
    p.add_argument("--epochs", type=int, help="number of epochs (the LR decay is compressed into them)")
    p.add_argument("--batch-size", type=int, help="batch size per process")
    p.add_argument("--lr", type=float, help="learning rate of the first epoch")
    p.add_argument("--seed", type=int, help="seed of initialisation, data order and dropout")
    p.add_argument("--teacher", metavar="CHECKPOINT",
                   help="distil from this float teacher: a training checkpoint or run folder (its best.pt) "
                   "with the same classes (recipe field `teacher`; weight: --set distill_weight=...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe field, e.g. --set lr_end=1e-5 --set model.hidden=1024 "
                   "(repeatable; see `binarynet recipes NAME` for the fields)")
    p.add_argument("--data-dir", help="dataset folder (default: $BINARYNET_DATA, then the user cache)")
    p.add_argument("--download", action="store_true", help="download missing dataset files first")
    p.add_argument("--out", help="run folder (default: runs/<recipe>-<timestamp>)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                   help="continue a run exactly: the last.pt in --out, or the given checkpoint file/folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="torch CPU threads (default 0: the cores that other work leaves free, or "
                   "every core for a recipe of large layers beside no more busy threads than "
                   "cores: binarynet.threads)")
    p.add_argument("--amp", action="store_true",
                   help="bfloat16 autocast (float16 + loss scaling on GPUs without bfloat16)")
    p.add_argument("--compile", action="store_true", help="GPU only: torch.compile the model")
    p.add_argument("--channels-last", action="store_true",
                   help="GPU only: NHWC convolutions (tensor cores)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log scalars to <out>/tensorboard (needs the tensorboard package)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--dist-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="under torchrun: how long a collective waits for a missing rank before failing")
    # Saves last.pt every N steps as well (used by the exact-resume tests).
    p.add_argument("--checkpoint-every-steps", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=run_train)

    p = subparsers.add_parser("eval", help="evaluate a training checkpoint on a dataset split",
                              description="Evaluate a checkpoint (last.pt / best.pt) in eval mode.")
    p.add_argument("checkpoint", help="checkpoint file, or a run folder (uses its best.pt)")
    p.add_argument("--split", default="test", help="train, val, test or train_full (default: test)")
    p.add_argument("--data-dir", help="dataset folder (default: $BINARYNET_DATA, then the user cache)")
    p.add_argument("--download", action="store_true", help="download missing dataset files first")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch-size", type=positive_int, default=1000)
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="torch CPU threads (default 0: the cores that other work leaves free)")
    p.add_argument("--max-samples", type=non_negative_int, default=0, metavar="N",
                   help="evaluate only the first N samples of the split (default: all)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run_eval)

    p = subparsers.add_parser("recipes", help="list the training recipes, or show one in full")
    p.add_argument("name", nargs="?", help="show this recipe: what it reached when run here, and "
                   "its fields as JSON")
    p.set_defaults(func=run_recipes)


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _resolve_recipe(args):
    from ..train import recipes

    overrides = recipes.parse_assignments(args.set)
    for flag in ("epochs", "batch_size", "lr", "seed", "teacher"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    if args.recipe is None:
        # Resuming the stored recipe: only the per-process batch may change (another world size).
        overrides.pop("batch_size", None)
        if overrides:
            raise BinarynetError("--resume continues the stored recipe (only --batch-size may change, for "
                                 f"another number of processes); remove {', '.join(sorted(overrides))}")
        return None
    return recipes.apply_overrides(recipes.get(args.recipe), overrides)


def _resume_checkpoint(args) -> str | None:
    if args.resume is None:
        return None
    if args.resume is True:
        if not args.out:
            raise BinarynetError("--resume without a checkpoint path needs --out RUN_FOLDER")
        path = os.path.join(args.out, LAST)
    else:
        path = checkpoint_path(args.resume, prefer=(LAST,))
    if not os.path.isfile(path):
        raise CheckpointError(f"nothing to resume: {path} does not exist")
    return path


def run_train(args) -> int:
    """``binarynet train``: run or resume a recipe; exit 0 on success, 128+signal if interrupted."""
    from ..threads import default_threads
    from ..train import RunOptions, TrainingInterrupted, train
    from ..summary import recipe_op_macs

    if args.recipe is None and args.resume is None:
        raise BinarynetError("give --recipe NAME (see `binarynet recipes`) or --resume")
    try:
        recipe = _resolve_recipe(args)
    except ValueError as exc:
        raise BinarynetError(str(exc)) from None
    options = RunOptions(
        out=args.out, resume=_resume_checkpoint(args), data_dir=args.data_dir, download=args.download,
        resume_batch_size=(args.batch_size or 0) if args.resume is not None else 0,
        device=args.device,
        threads=args.threads or default_threads(op_macs=recipe_op_macs(recipe) if recipe else 0.0),
        amp=args.amp,
        compile=args.compile, channels_last=args.channels_last, tensorboard=args.tensorboard,
        progress=not args.no_progress, checkpoint_every_steps=args.checkpoint_every_steps,
        dist_timeout_s=args.dist_timeout,
    )
    try:
        train(recipe, options)
    except TrainingInterrupted as exc:
        if _is_main_process():
            print(f"binarynet train: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def run_eval(args) -> int:
    """``binarynet eval``: loss and error of a checkpoint on a split."""
    import torch

    from ..threads import default_threads
    from ..train import checkpoint as ckpt
    from ..train import distributed, loop

    path = require_checkpoint(args.checkpoint, "eval")
    torch.set_num_threads(args.threads or default_threads())
    state = ckpt.load(path)
    model, recipe, normalization = ckpt.model_from_state(state, path)
    device = distributed.resolve_device(args.device)
    model.to(device)
    options = loop.RunOptions(data_dir=args.data_dir, download=args.download)
    try:
        dataset = loop.load_split(recipe, args.split, options, max_samples=args.max_samples)
    except ValueError as exc:  # unknown split: the message lists the known ones
        raise BinarynetError(str(exc)) from None
    totals = loop.evaluate(model, dataset, normalization, loop.loss_function(recipe),
                           batch_size=args.batch_size, device=device)
    progress = state["progress"]
    result = {"checkpoint": path, "recipe": recipe.name, "split": args.split, "samples": totals.count,
              "error": totals.error, "loss": totals.loss, "epochs_trained": progress["epoch"]}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{recipe.name} after {progress['epoch']} epochs ({path}): {args.split} error "
              f"{100 * totals.error:.2f}% ({totals.count - totals.correct} of {totals.count} wrong), "
              f"loss {totals.loss:.4f}")
    return 0


def run_recipes(args) -> int:
    """``binarynet recipes``: one line per recipe, or one recipe's fields as JSON."""
    from ..train import recipe_results, recipes

    if args.name:
        try:
            recipe = recipes.get(args.name)
        except ValueError as exc:
            raise BinarynetError(str(exc)) from None
        print(f"{recipe.name}: {recipe.description}")
        print(f"reached: {recipe_results.result(recipe.name) or 'no recorded run yet'}")
        print("fields (change any with --set KEY=VALUE):")
        print(json.dumps(recipe.to_dict(), indent=2))
        return 0
    width = max(len(n) for n in recipes.names())
    for name in recipes.names():
        print(f"{name:<{width}}  {recipes.get(name).description}")
    return 0
