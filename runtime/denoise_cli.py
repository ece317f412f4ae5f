"""`latentwire denoise`: denoise samples or images (being built)."""

from __future__ import annotations

import argparse
from typing import Any

from .errors import DataError


def add_command(sub: Any) -> None:
    p = sub.add_parser("denoise", help="denoise samples or images (a model trained with --noise)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise DataError("`latentwire denoise` is not built yet")
