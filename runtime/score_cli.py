"""`latentwire score`: anomaly scores, flags and the threshold for each sample (being built)."""

from __future__ import annotations

import argparse
from typing import Any

from .errors import DataError


def add_command(sub: Any) -> None:
    p = sub.add_parser("score", help="anomaly scores, flags and the threshold for each sample")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise DataError("`latentwire score` is not built yet")
