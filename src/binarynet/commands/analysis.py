"""``binarynet summary TARGET`` and ``binarynet report RUN_DIR`` (thin layer over
binarynet.summary and binarynet.report)."""
from __future__ import annotations

import json
import re

from ..errors import BinarynetError
from .options import positive_int


def register(subparsers) -> None:
    """Add the summary / report sub-commands to the ``binarynet`` parser."""
    p = subparsers.add_parser(
        "summary", help="per-layer bits, memory (float32 vs packed), MACs and energy estimate",
        description="Summarise a model: TARGET is a packed .bnn file, a training checkpoint "
        "(or a run folder: its best.pt), a recipe name (see `binarynet recipes`) or a model "
        "name (mnist_mlp, cifar10_vgg, svhn_vgg).")
    p.add_argument("target", metavar="TARGET", help="a .bnn file, checkpoint, run folder, recipe "
                   "or model name")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field or model option, e.g. --set model.hidden=1024")
    p.add_argument("--input-shape", metavar="C,H,W",
                   help="one sample's shape (default: from the recipe's dataset or the model)")
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                   help="output form (default: text table)")
    p.set_defaults(func=run_summary)

    p = subparsers.add_parser(
        "report", help="plots and a Markdown report of a training run folder",
        description="Write loss.png, error.png and report.md into RUN_DIR (made by `binarynet "
        "train --out RUN_DIR`): the run's config, best epoch, test error beside the paper's "
        "Table 1, the model summary and the exported model's accuracy, size and speed in the "
        "engine against float PyTorch: the model is --model FILE.bnn, else RUN_DIR/model.bnn "
        "(where `binarynet export RUN_DIR` writes it). Needs matplotlib.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--model", metavar="FILE.bnn",
                   help="the exported model to measure (default: RUN_DIR/model.bnn, else the "
                   "only *.bnn in RUN_DIR)")
    p.add_argument("--data-dir", help="dataset folder for the engine check (default: "
                   "$BINARYNET_DATA, then the user cache)")
    p.add_argument("--threads", type=positive_int, default=2,
                   help="threads of torch and the engine in the speed comparison (default 2)")
    p.add_argument("--no-engine", action="store_true",
                   help="skip the exported model's accuracy and speed measurement")
    p.set_defaults(func=run_report)


def _shape(text: str | None):
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in re.split(r"[,x]", text))
    except ValueError:
        shape = ()
    if not shape or any(v < 1 for v in shape):
        raise BinarynetError(f"--input-shape expects positive integers like 1,28,28, got {text!r}")
    return shape


def run_summary(args) -> int:
    """``binarynet summary``: print the summary table in the chosen form."""
    from ..summary import summary_of_target
    from ..train.recipes import parse_assignments

    try:
        result = summary_of_target(args.target, _shape(args.input_shape),
                                   parse_assignments(args.set))
    except ValueError as exc:
        raise BinarynetError(str(exc)) from None
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
    elif args.format == "markdown":
        print(result.to_markdown())
    else:
        print(result.to_text())
    return 0


def run_report(args) -> int:
    """``binarynet report``: write the plots and report.md, print where they are."""
    from ..report import find_packed_model, write_report

    path = write_report(args.run_dir, data_dir=args.data_dir, threads=args.threads,
                        engine=not args.no_engine, model_file=args.model)
    print(f"binarynet report: wrote {path} (and its plots)")
    if find_packed_model(args.run_dir, args.model) is None:
        print(f"binarynet report: no exported model in {args.run_dir}, so no engine section: run "
              f"`binarynet export {args.run_dir}` first (or give --model FILE.bnn)")
    return 0
