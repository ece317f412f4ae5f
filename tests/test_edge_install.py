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


@pytest.mark.slow
def test_edge_install_encodes_decodes_and_sends(
    digits_pkg: Path, repo: Path, digits_x: np.ndarray, tmp_path: Path
) -> None:
    env_dir = tmp_path / "edge-venv"
    venv.create(env_dir, with_pip=True)
    bindir = env_dir / "bin"
    src = tmp_path / "src"  # a clean copy: no build/ or egg-info from the dev checkout
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "*.egg-info", "__pycache__", "models", "runs", ".*_cache"
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
    for absent in ("torch", "onnx ", "onnxscript", "scikit-learn", "pygrpc-native"):
        assert f"\n{absent}" not in listed, f"{absent.strip()} got into the edge install"
    assert "onnxruntime" in listed and "grpcio" in listed

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
