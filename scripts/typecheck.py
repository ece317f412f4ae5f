"""Run mypy on latentwire as installed names (latentwire.runtime, latentwire.training).

setuptools maps the top-level folders runtime/ and training/ to latentwire.runtime and
latentwire.training; editable installs do that with an import hook mypy cannot follow. This
script lays out the same mapping as symlinks in a temporary folder and points mypy at it,
so every module is checked once, under its real name.

    python scripts/typecheck.py [extra mypy args]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="latentwire-mypy-") as tmp:
        pkg = Path(tmp) / "latentwire"
        pkg.mkdir()
        for sub in ("runtime", "training"):
            (pkg / sub).symlink_to(ROOT / sub, target_is_directory=True)
        (Path(tmp) / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
        env = {**os.environ, "MYPYPATH": os.pathsep.join([tmp, str(ROOT / "scripts")])}
        cmd = [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "-p",
            "latentwire.runtime",
            "-p",
            "latentwire.training",
            "-p",
            "tests",
            *[f"-m={p.stem}" for p in sorted((ROOT / "scripts").glob("*.py"))],
            *argv,
        ]
        return subprocess.call(cmd, env=env, cwd=tmp)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
