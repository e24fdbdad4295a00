"""Argument types shared by the sub-commands: a bad count is refused by the parser, in one
line naming the option, before any work starts."""
from __future__ import annotations

import argparse


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = _count(1)
non_negative_int = _count(0)
