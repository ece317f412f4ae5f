"""`latentwire evaluate --task anomaly`: anomaly detection report (being built)."""

from __future__ import annotations

import argparse
from typing import Any

from latentwire.runtime.errors import DataError


def add_arguments(group: Any) -> None:
    """Flags of this task beyond --task, --labels and --noise."""


def run(args: argparse.Namespace) -> int:
    raise DataError("`latentwire evaluate --task anomaly` is not built yet")
