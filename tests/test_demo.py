"""`latentwire demo` meets the issue's bar: K=8 beats PCA(8) by at least 1 dB on held-out digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latentwire.runtime.cli import main


@pytest.mark.slow
def test_demo_beats_pca_by_1db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_path = tmp_path / "demo.json"
    assert (
        main(
            [
                "demo",
                "--out",
                str(tmp_path / "digits-demo"),
                "--json",
                str(report_path),
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert report["latent_dim"] == 8 and report["n_test"] == 359
    assert report["code_bytes_per_sample"] == 32 and report["raw_float32_bytes_per_sample"] == 256
    assert report["compression_ratio"] == 8.0
    assert report["psnr_db"] >= report["pca_psnr_db"] + 1.0, report
    assert "PCA (8 components)" in out and f"{report['psnr_db']:.2f} dB" in out
    assert Path(report["codes_file"]).stat().st_size == report["codes_file_bytes"]


def test_demo_runs_again_over_its_own_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's command works twice in a row: the demo replaces its own earlier
    package (and codes file and picture)."""
    argv = ["-q", "demo", "--out", str(tmp_path / "digits-demo"), "--epochs", "2"]
    argv += ["--threads", "1", "--no-progress"]
    assert main(argv) == 0
    assert main([*argv, "--seed", "1"]) == 0
    assert "seed 1" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "digits-demo",
        "digits-demo.heldout.codes",
        "digits-demo.png",
    ]


def test_demo_does_not_replace_another_package(
    digits_pkg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from .conftest import error_line

    out = tmp_path / "mine"
    shutil.copytree(digits_pkg, out)
    before = (out / "manifest.json").read_bytes()
    assert main(["-q", "demo", "--out", str(out), "--epochs", "1", "--no-progress"]) == 1
    line = error_line(capsys)
    assert str(out) in line and "--force" in line
    assert (out / "manifest.json").read_bytes() == before
