"""latentwire's installs resolve to binary wheels on x86_64 and on 64-bit ARM Linux.

`pip install --dry-run --platform ...` asks PyPI which wheels a machine of another kind
would get, without installing anything. pip evaluates environment markers against the
machine it runs on, not the target (pypa/pip#11664), so the test evaluates our markers for
the target itself (packaging.markers) and hands pip the requirements that apply there;
pip resolves their own dependencies. Needs PyPI (as CI's install step does).

The slow, opt-in tests/test_aarch64.py then installs the real aarch64 wheels in an
emulated arm64 Debian and encodes there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.markers import Marker
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SERVER_ONLY = {"grpcio-health-checking", "grpcio-reflection", "prometheus-client", "pygrpc-native"}


def requirements(extras: tuple[str, ...], machine: str, python: str) -> list[Requirement]:
    """latentwire's requirements with `extras` on Linux `machine`, markers evaluated there."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = {
        "platform_machine": machine,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    out = []
    for line in lines:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
            req.marker = None
            out.append(req)
    return out


def resolve(reqs: list[Requirement], machine: str, python: str, tmp: Path) -> dict[str, str]:
    """{package: wheel file name} pip picks for a manylinux `machine`, binary wheels only."""
    report = tmp / "report.json"
    platforms = [
        f"manylinux_2_28_{machine}",
        f"manylinux_2_17_{machine}",
        f"manylinux2014_{machine}",
    ]
    argv = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--quiet",
        "--target",
        str(tmp / "never"),
        "--only-binary=:all:",
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--report",
        str(report),
    ]
    for p in platforms:
        argv += ["--platform", p]
    proc = subprocess.run([*argv, *map(str, reqs)], capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert proc.returncode == 0, "\n".join(errors) or proc.stderr[-2000:]
    assert not (tmp / "never").exists()
    rows = json.loads(report.read_text())["install"]
    return {
        Requirement(r["metadata"]["name"]).name.lower().replace("_", "-"): r["download_info"][
            "url"
        ].rsplit("/", 1)[-1]
        for r in rows
    }


CASES = [
    ("aarch64", "3.11", ("cpu",)),
    ("aarch64", "3.13", ("cpu",)),
    ("aarch64", "3.11", ("cpu", "server")),
    ("x86_64", "3.11", ("cpu",)),
    ("x86_64", "3.11", ("cpu", "server")),
    ("x86_64", "3.11", ("gpu", "server")),
]


@pytest.mark.parametrize(("machine", "python", "extras"), CASES)
def test_installs_resolve_to_binary_wheels(
    machine: str, python: str, extras: tuple[str, ...], tmp_path: Path
) -> None:
    reqs = requirements(extras, machine, python)
    wheels = resolve(reqs, machine, python, tmp_path)
    for name, wheel in wheels.items():
        assert wheel.endswith(".whl"), f"{name}: {wheel} is not a wheel"
        tag = wheel.rsplit("-", 1)[-1]
        assert tag.endswith(("any.whl", f"{machine}.whl")), f"{name}: {wheel} is for elsewhere"
    assert "torch" not in wheels and "pillow" not in wheels
    assert ("constriction" in wheels) == (machine == "x86_64")
    if "server" in extras:
        assert set(wheels) >= SERVER_ONLY
    else:
        assert not SERVER_ONLY & set(wheels), "a server-only package got into the edge install"


def test_markers_keep_constriction_where_it_has_wheels() -> None:
    """constriction publishes wheels for glibc x86_64, macOS and Windows x64 only."""
    line = next(
        r
        for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ]["cpu"]
        if r.startswith("constriction")
    )
    marker = Requirement(line).marker
    assert isinstance(marker, Marker)
    for machine, platform, wanted in (
        ("x86_64", "linux", True),
        ("aarch64", "linux", False),
        ("armv7l", "linux", False),
        ("arm64", "darwin", True),
        ("AMD64", "win32", True),
        ("ARM64", "win32", False),
    ):
        env = {"platform_machine": machine, "sys_platform": platform, "extra": ""}
        assert marker.evaluate(env) is wanted, (machine, platform)
