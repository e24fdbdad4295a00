"""``binarynet demo``: train a small BNN on MNIST, export it, run it packed, print the numbers
(thin layer over binarynet.demo)."""
from __future__ import annotations

import argparse

from ..errors import BinarynetError
from .options import non_negative_int


def register(subparsers) -> None:
    """Add the demo sub-command to the ``binarynet`` parser."""
    from ..demo import DEFAULT_EPOCHS, DEFAULT_HIDDEN

    p = subparsers.add_parser(
        "demo", help="train a small BNN on MNIST, export it, compare engine and PyTorch",
        description="End to end in a few minutes on 2 CPU cores: train the paper's MNIST MLP "
        "layout (binary weights and activations), export it to a packed model, run it in the "
        "XNOR-popcount engine, and print torch vs engine accuracy, float32 vs packed file size "
        "and the engine's speed-up over float PyTorch. MNIST comes from --data-dir, "
        "$BINARYNET_DATA or the user cache, and is downloaded (checksummed) when missing.")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help=f"training epochs (default {DEFAULT_EPOCHS}; the LR decay is compressed "
                   "into them)")
    p.add_argument("--hidden", type=int, default=DEFAULT_HIDDEN,
                   help=f"units per hidden layer (default {DEFAULT_HIDDEN}; the paper: 4096)")
    p.add_argument("--out", help="keep the run folder here (checkpoints, model.bnn, plots, "
                   "report.md); default: a temporary folder, removed at the end")
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="threads of torch and the engine (default 0: binarynet.threads' choice, "
                   "the cores that other work leaves free, or every core for layers as large as "
                   "the demo's beside no more busy threads than cores)")
    p.add_argument("--data-dir", help="dataset folder (default: $BINARYNET_DATA, then the user "
                   "cache)")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="download MNIST when it is missing (default: on)")
    p.add_argument("--limit-train", type=int, default=0, metavar="N",
                   help="train on the first N training images only (quick checks)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the training run")
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    """``binarynet demo``: exit 0 after printing the figures; DataError (exit 2) when MNIST
    is missing and cannot be downloaded."""
    from ..demo import run

    try:
        run(epochs=args.epochs, hidden=args.hidden, out=args.out,
            threads=args.threads,
            data_dir=args.data_dir, download=args.download, limit_train=args.limit_train,
            seed=args.seed)
    except ValueError as exc:
        raise BinarynetError(str(exc)) from None
    return 0
