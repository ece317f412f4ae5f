"""`latentwire embed`: float latents of each sample, as features for other tools (being built)."""

from __future__ import annotations

import argparse
from typing import Any

from .errors import DataError


def add_command(sub: Any) -> None:
    p = sub.add_parser("embed", help="float latents of each sample, as features for other tools")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise DataError("`latentwire embed` is not built yet")
