"""`latentwire info` shows and checks what `--task anomaly` adds to a package."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from latentwire.runtime.cli import main


def test_info_shows_the_detector_and_checks_its_files(
    anomaly_pkg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", str(anomaly_pkg)]) == 0
    out = capsys.readouterr().out
    assert "scorer       scorer.onnx" in out and "anomaly      anomaly.npz" in out
    assert out.count("sha256 ok") == 4  # encoder, decoder, scorer, anomaly
    assert "detector     scores recon, gmm" in out
    assert "thresholds   " in out and "held-out samples" in out


def test_info_flags_an_altered_density_file(
    anomaly_pkg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg = tmp_path / "pkg"
    shutil.copytree(anomaly_pkg, pkg)
    with open(pkg / "anomaly.npz", "ab") as f:
        f.write(b"x")
    assert main(["info", str(pkg)]) == 1
    captured = capsys.readouterr()
    assert "anomaly.npz" in captured.out and "PROBLEM: sha256 differs" in captured.out
    assert "1 problem(s)" in captured.err
