"""The README's two commands stay true: CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [line for block in blocks for line in block.splitlines() if "python3 -m venv" in line]


def test_ci_runs_the_readme_test_command() -> None:
    setup_and_test = [c for c in _commands() if c.rstrip().endswith("pytest")]
    assert len(setup_and_test) == 1
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert setup_and_test[0] in ci


def test_readme_main_command_installs_cpu_torch_first_and_runs_the_demo() -> None:
    demo = [c for c in _commands() if c.rstrip().endswith("latentwire demo")]
    assert len(demo) == 1
    assert demo[0].index("pip install torch==2.13.0") < demo[0].index(
        'pip install -e ".[cpu,server,train]"'
    )
