"""The ``binarynet`` command line: one thin sub-command module per area.

Each module in ``binarynet.commands`` exposes ``register(subparsers)``, which adds its
sub-commands and sets ``func`` on them; ``func(args)`` returns the exit status.
"""
import argparse
import importlib
import sys

from .errors import BinarynetError

# train, eval, recipes | export, predict, bench | summary, report | demo
COMMAND_MODULES = ("train", "deploy", "inspect", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="binarynet",
        description="Binarized Neural Networks: train (PyTorch), export to 1-bit packed models, "
        "run them with XNOR-popcount kernels, and report accuracy, size and speed.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"binarynet.commands.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BinarynetError as exc:
        print(f"binarynet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"binarynet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
