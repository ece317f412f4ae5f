"""An edge-only install (`pip install ".[cpu]"`, no torch) encodes and decodes a package,
and sends codes to a running server (`latentwire send`, `fetch-encoder`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest

from latentwire.runtime import load

from .conftest import running_server

ROOT = Path(__file__).resolve().parents[1]
EDGE_BUDGET = 180_000_000
"""Bytes of site-packages a fresh `[cpu]` venv may hold, pip and setuptools left out (178.1 MB
on x86_64, 2026-12-04: onnxruntime 80.4, numpy 71.7, grpcio 19.2, protobuf 2.5, latentwire
2.2, constriction 1.0; it was 202 MB with Pillow and the server's packages)."""
_PIP = ("pip", "setuptools", "pkg_resources", "_distutils_hack", "distutils-precedence.pth")


def site_packages_bytes(env_dir: Path) -> int:
    """Bytes under a venv's site-packages, leaving out pip and setuptools (which any venv
    has) and their dist-info folders."""
    (site,) = env_dir.glob("lib/python*/site-packages")
    total = 0
    for entry in site.iterdir():
        if entry.name.split("-")[0] in _PIP or entry.name in _PIP:
            continue
        files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
        total += sum(p.stat().st_size for p in files)
    return total


@pytest.mark.slow
def test_edge_install_encodes_decodes_and_sends(
    digits_pkg: Path, image_pkg: Path, repo: Path, digits_x: np.ndarray, tmp_path: Path
) -> None:
    env_dir = tmp_path / "edge-venv"
    venv.create(env_dir, with_pip=True)
    bindir = env_dir / "bin"
    src = tmp_path / "src"  # a clean copy: no build/ or egg-info from the dev checkout
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv",
            ".git",
            "build",
            "*.egg-info",
            "__pycache__",
            "models",
            "runs",
            ".*_cache",
            "node_modules",
        ),
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = subprocess.run(
        [str(bindir / "python"), "-m", "pip", "install", "-q", f"{src}[cpu]"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr

    listed = subprocess.run(
        [str(bindir / "python"), "-m", "pip", "list"], capture_output=True, text=True, env=env
    ).stdout.lower()
    for absent in (
        "torch",
        "onnx ",
        "onnxscript",
        "scikit-learn",
        "pygrpc-native",
        "grpcio-health-checking",
        "grpcio-reflection",
        "prometheus",
        "pillow",
    ):
        assert f"\n{absent}" not in listed, f"{absent.strip()} got into the edge install"
    assert "onnxruntime" in listed and "grpcio" in listed
    size = site_packages_bytes(env_dir)
    print(f"edge install: {size / 1e6:.1f} MB of site-packages without pip/setuptools")
    assert size <= EDGE_BUDGET, f"the edge install is {size / 1e6:.1f} MB, over its budget"

    np.save(tmp_path / "x.npy", digits_x)
    cli = str(bindir / "latentwire")
    codes, recon = tmp_path / "x.codes", tmp_path / "recon.npy"
    for argv in (
        ["encode", "--model", str(digits_pkg), str(tmp_path / "x.npy"), "--out", str(codes)],
        ["decode", "--model", str(digits_pkg), str(codes), "--out", str(recon)],
    ):
        proc = subprocess.run([cli, *argv], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr

    model = load(digits_pkg, providers="cpu")  # the full install, in this process
    np.testing.assert_allclose(np.load(recon), model.decode(model.encode(digits_x)), atol=1e-6)

    # the edge client against a running server (served by this full-install process)
    sent, fetched = tmp_path / "sent.npy", tmp_path / "fetched"
    with running_server(repo) as server:
        target = f"127.0.0.1:{server.port}"
        for argv in (
            [
                "send",
                "--server",
                target,
                "--model",
                str(digits_pkg),
                str(tmp_path / "x.npy"),
                "--out",
                str(sent),
            ],
            ["fetch-encoder", "--server", target, "--name", "digits", "--out", str(fetched)],
        ):
            proc = subprocess.run(
                [cli, *argv], capture_output=True, text=True, env=env, timeout=120
            )
            assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(sent), model.decode(model.encode(digits_x)), atol=1e-6)
    assert sorted(p.name for p in fetched.iterdir()) == ["encoder.onnx", "manifest.json"]
    assert (fetched / "encoder.onnx").read_bytes() == (digits_pkg / "encoder.onnx").read_bytes()

    proc = subprocess.run([cli, "train", "--epochs", "1"], capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "latentwire[cpu,train]" in proc.stderr and "Traceback" not in proc.stderr
    # what an edge lacks says which extra brings it, in one line
    for argv, extra in (
        (["serve", "--models", str(repo)], "latentwire[server]"),
        (
            ["encode", "--model", str(image_pkg), str(tmp_path / "a.png"), "--out", "a.codes"],
            "latentwire[images]",
        ),
    ):
        (tmp_path / "a.png").write_bytes(b"not really a png")
        proc = subprocess.run(
            [cli, "-q", *argv], capture_output=True, text=True, env=env, timeout=60
        )
        assert proc.returncode == 1, proc.stderr
        assert extra in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
