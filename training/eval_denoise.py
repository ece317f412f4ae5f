"""`latentwire evaluate --task denoise`: denoising report (being built)."""

from __future__ import annotations

import argparse
from typing import Any

from latentwire.runtime.errors import DataError


def add_arguments(group: Any) -> None:
    """Flags of this task beyond --task, --labels and --noise."""


def run(args: argparse.Namespace) -> int:
    raise DataError("`latentwire evaluate --task denoise` is not built yet")
