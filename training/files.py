"""Writing folders whole: a finished folder replaces an older one in one rename (used by
`export` for model packages and `export-triton` for Triton repositories; imports neither
torch nor onnx)."""

from __future__ import annotations

import shutil
from pathlib import Path


def move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder `tmp` (a package, a Triton repository) to `out`. An older
    one at `out` is moved aside first and deleted only once the new one is in place; if the
    move fails or is interrupted, the older one goes back, so `out` never ends up
    half-written."""
    if not out.exists():
        tmp.rename(out)
        return
    aside = out.parent / f"{tmp.name}.previous"
    out.rename(aside)
    try:
        tmp.rename(out)
    except BaseException:
        if not out.exists():
            aside.rename(out)
        raise
    shutil.rmtree(aside, ignore_errors=True)
