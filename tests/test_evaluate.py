"""`latentwire evaluate` end to end: the report's files, its points and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latentwire.runtime.cli import main
from latentwire.training.report import REPORT_SCHEMA

from .conftest import error_line

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _report(out: Path) -> dict:  # type: ignore[type-arg]
    assert (out / "rd.png").read_bytes().startswith(PNG_MAGIC)
    assert (out / "report.md").read_text().startswith("# Rate–distortion report")
    report: dict = json.loads((out / "report.json").read_text())  # type: ignore[type-arg]
    assert report["schema"] == REPORT_SCHEMA
    for p in report["points"]:
        assert {"method", "bytes_per_sample", "psnr_db"} <= p.keys()
    return report


def test_digits_models_on_one_report(
    format_pkgs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Several models on one plot: every model's formats, PCA at each model point's bytes
    and format, JPEG/WebP with payload and whole-file bytes, zlib/zstd; the summary's
    targets."""
    out = tmp_path / "rep"
    argv = ["evaluate", "--data", "digits", "--report", str(out)]
    for fmt in ("int8", "entropy"):
        argv += ["--model", str(format_pkgs[fmt])]
    assert main(argv) == 0
    assert "| method |" in capsys.readouterr().out  # the table
    report = _report(out)
    ae = [p for p in report["points"] if p["method"] == "ae"]
    assert {(p["label"].split()[0], p["format"]) for p in ae} == {
        (f"digits-{m}", f) for m in ("int8", "entropy") for f in ("f32", "f16", "int8")
    } | {("digits-entropy", "entropy")}
    by_label = {p["label"]: p for p in ae}
    assert by_label["digits-int8 int8"]["bytes_per_sample"] == 8.0  # K=8 bytes, no header
    pca = {(p["format"], p["bytes_per_sample"]) for p in report["points"] if p["method"] == "pca"}
    for p in ae:
        if p["format"] != "entropy":
            assert (p["format"], p["bytes_per_sample"]) in pca
    pca_entropy = [p for p in report["points"] if p["method"] == "pca" and p["format"] == "entropy"]
    assert pca_entropy[0]["bytes_per_sample"] == pytest.approx(
        by_label["digits-entropy entropy"]["bytes_per_sample"], rel=0.05
    )
    jpeg = [p for p in report["points"] if p["method"] == "jpeg"]
    assert len(jpeg) >= 5
    assert all(p["file_bytes_per_sample"] > p["bytes_per_sample"] for p in jpeg)
    assert {p["method"] for p in report["points"]} >= {"webp", "zlib", "zstd"}
    summary = report["summary"]
    assert set(summary["int8_vs_f32_db"]) == {str(format_pkgs["int8"]), str(format_pkgs["entropy"])}
    assert summary["entropy_vs_int8"]["entropy"] == "digits-entropy entropy"
    assert summary["ae_vs_pca"]


def test_image_model_reports_bpp_and_ssim(
    image_pkg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An image model on a whole photo: bits per pixel and SSIM on every image point; --json
    prints the report."""
    out = tmp_path / "img"
    argv = ["evaluate", "--model", str(image_pkg), "--data", "sample-images:flower"]
    assert main([*argv, "--report", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    report = _report(out)
    assert printed == report
    assert report["data"]["is_image"] and report["data"]["n_test"] == 1
    pixels = 427 * 640
    for p in report["points"]:
        assert p["bpp"] == pytest.approx(8 * p["bytes_per_sample"] / pixels)
        if p["psnr_db"] is not None and p["method"] != "pca":
            assert 0 < p["ssim"] <= 1
    assert any(p["method"] == "ae" for p in report["points"])
    assert report["summary"]["ae_vs_jpeg"]


def test_bad_inputs_give_one_line(
    digits_pkg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    assert main(["evaluate", "--model", str(tmp_path / "nope"), "--data", "digits",
                 "--report", str(out)]) == 1  # fmt: skip
    assert "nope" in error_line(capsys)
    assert main(["evaluate", "--model", str(digits_pkg), "--data", "breast-cancer",
                 "--report", str(out)]) == 1  # fmt: skip
    assert "64" in error_line(capsys)  # the feature count the model expects
    assert not (out / "report.json").exists()
