"""argparse types for numeric flags, shared by every `latentwire` command."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def _bounded(kind: type, ok: Callable[[Any], bool], rule: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not ok(value):  # NaN fails every comparison, so it is refused too
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


def positive(kind: type) -> Callable[[str], Any]:
    """argparse type: a number of `kind` that is > 0."""
    return _bounded(kind, lambda v: v > 0, "> 0")


def non_negative(kind: type) -> Callable[[str], Any]:
    """argparse type: a number of `kind` that is >= 0."""
    return _bounded(kind, lambda v: v >= 0, ">= 0")


_port = _bounded(int, lambda v: 0 <= v <= 65535, "a port in 0..65535 (0 = any free port)")


def port(text: str) -> int:
    """argparse type: a TCP port, 0..65535 (0 = any free port)."""
    return int(_port(text))


def add_session_args(p: argparse.ArgumentParser) -> None:
    """--providers and --threads: how a command's ONNX Runtime sessions run."""
    p.add_argument(
        "--providers",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="execution provider: auto = CUDA when it loads, else CPU (default: auto)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="ONNX Runtime intra-op threads, 0 = one per core (default: 0)",
    )
