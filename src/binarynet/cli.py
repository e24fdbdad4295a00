"""The ``binarynet`` command line: one thin sub-command module per area.

Each module in ``binarynet.commands`` exposes ``register(subparsers)``, which adds its
sub-commands and sets ``func`` on them; ``func(args)`` returns the exit status. Library code
never imports this layer.
"""
import argparse
import importlib
import os
import sys

from . import __version__, threads
from .errors import BinarynetError

# train, eval, recipes | export, predict, bench | summary, report | demo
COMMAND_MODULES = ("train", "deploy", "analysis", "demo")

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="binarynet",
        description="Binarized Neural Networks: train (PyTorch), export to 1-bit packed models, "
        "run them with XNOR-popcount kernels, and report accuracy, size and speed.",
    )
    parser.add_argument("--version", action="version", version=f"binarynet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"binarynet.commands.{name}").register(sub)
    return parser


def _silence_stdout() -> None:
    """After the reader of stdout went away (``binarynet ... | head -1``): point stdout at
    /dev/null, so that the interpreter's final flush does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv=None) -> int:
    threads.set_passive_wait_policy()  # before any command imports torch: OpenMP reads it once
    command = "binarynet"
    try:
        args = build_parser().parse_args(argv)
        command = f"binarynet {args.command}"
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not at exit
        return status
    except BinarynetError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
