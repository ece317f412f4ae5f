"""`latentwire evaluate` end to end: the report's files, its points and its errors."""

from __future__ import annotations

import json
import os
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


# ---- issue 11: several test images, and evaluate run from another directory -------------


def _save_crops(folder: Path, sizes: list[tuple[int, int]], photo: int) -> Path:
    """Crops of one of scikit-learn's photos as PNGs, (height, width) each."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True)
    img = load_sample_images().images[photo]
    for i, (h, w) in enumerate(sizes):
        top, left = 40 * i + 100, 30 * i + 150
        Image.fromarray(img[top : top + h, left : left + w]).save(folder / f"crop{i}.png")
    return folder


@pytest.fixture(scope="module")
def folder_pkg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An image model trained with a relative --data folder: (root, package)."""
    root = tmp_path_factory.mktemp("trained-here")
    _save_crops(root / "imgs", [(32, 32)] * 8, photo=0)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        argv = ["-q", "train", "--data", "imgs", "--channels", "8,8", "--latent-dim", "4"]
        argv += ["--epochs", "1", "--threads", "1", "--no-progress"]
        assert main([*argv, "--out", "models/pkg", "--checkpoint", "runs/c.pt"]) == 0
    finally:
        os.chdir(cwd)
    return root, root / "models" / "pkg"


def _evaluate_elsewhere(
    pkg: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> int:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    monkeypatch.chdir(elsewhere)
    argv = ["evaluate", "--model", str(pkg), "--data", str(data), "--report", "rep", "--json"]
    return main(argv)


def test_manifest_stores_the_resolved_data_path(folder_pkg: tuple[Path, Path]) -> None:
    root, pkg = folder_pkg
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["training"]["data"] == str((root / "imgs").resolve())


def test_several_test_images_from_another_directory(
    folder_pkg: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Three test images of different sizes, evaluated from another directory: one JPEG and
    one WebP point per quality over all three images (bytes summed, one MSE), rising with
    the quality, no 'first image only' warning, lossless sizes of all three."""
    _, pkg = folder_pkg
    tests = _save_crops(tmp_path / "test", [(48, 40), (32, 64), (40, 40)], photo=1)
    assert _evaluate_elsewhere(pkg, tests, tmp_path, monkeypatch) == 0
    err = capsys.readouterr().err
    assert "first test image" not in err
    report = _report(tmp_path / "elsewhere" / "rep")
    assert report["data"]["n_test"] == 3
    pixels = (48 * 40 + 32 * 64 + 40 * 40) / 3
    for method in ("jpeg", "webp"):
        pts = [p for p in report["points"] if p["method"] == method]
        qualities = [p["params"]["quality"] for p in pts]
        assert qualities == sorted(set(qualities)) and len(qualities) >= 5, qualities
        assert all(p["params"]["images"] == 3 for p in pts)
        rates = [p["bytes_per_sample"] for p in pts]
        assert rates == sorted(rates)
        assert [p["psnr_db"] for p in pts] == sorted(p["psnr_db"] for p in pts)
        for p in pts:
            assert p["bpp"] == pytest.approx(8 * p["bytes_per_sample"] / pixels, rel=1e-3)
    lossless = [p for p in report["points"] if p["lossless"]]
    assert sorted(p["method"] for p in lossless) == ["zlib", "zstd"]
    assert all(p["params"]["images"] == 3 for p in lossless)
    assert report["data"]["sample_shape"] == [3, None, None]  # the sizes differ
    assert report["data"]["test_images"] == [[3, 48, 40], [3, 32, 64], [3, 40, 40]]
    md = (tmp_path / "elsewhere" / "rep" / "report.md").read_text()
    assert "3 test images (3 channels, 48x40, 32x64 and 40x40)" in md
    assert "every quality is applied to all 3 test images" in md


def test_old_relative_data_path_is_found_near_the_package(
    folder_pkg: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Packages made before the path was stored resolved hold it relative to where `train`
    ran: evaluate finds it from the package's folders up, or says clearly what is missing."""
    import shutil

    root, pkg = folder_pkg
    old_root = tmp_path / "old"
    shutil.copytree(root / "imgs", old_root / "imgs")
    old_pkg = old_root / "models" / "pkg"
    shutil.copytree(pkg, old_pkg)
    manifest = json.loads((old_pkg / "manifest.json").read_text())
    manifest["training"]["data"] = "imgs"
    (old_pkg / "manifest.json").write_text(json.dumps(manifest))
    tests = _save_crops(tmp_path / "test", [(32, 32)], photo=1)
    assert _evaluate_elsewhere(old_pkg, tests, tmp_path, monkeypatch) == 0
    capsys.readouterr()
    shutil.rmtree(old_root / "imgs")
    assert _evaluate_elsewhere(old_pkg, tests, tmp_path, monkeypatch) == 1
    line = error_line(capsys)
    assert "'imgs'" in line and str(old_pkg) in line and "relative" in line, line


def test_array_model_evaluated_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model trained on ./data.npy is evaluated on the same file from elsewhere: it is
    recognised as its training data (its validation split is the test set, no warning)."""
    import numpy as np

    trained_here = tmp_path / "here"
    trained_here.mkdir()
    rng = np.random.default_rng(0)
    np.save(trained_here / "data.npy", (rng.normal(size=(300, 4)) @ rng.normal(size=(4, 12))))
    monkeypatch.chdir(trained_here)
    argv = ["-q", "train", "--data", "data.npy", "--epochs", "1", "--hidden", "8"]
    argv += ["--latent-dim", "2", "--threads", "1", "--no-progress"]
    assert main([*argv, "--out", "m", "--checkpoint", "c.pt"]) == 0
    capsys.readouterr()
    pkg = trained_here / "m"
    assert _evaluate_elsewhere(pkg, trained_here / "data.npy", tmp_path, monkeypatch) == 0
    assert "was trained on" not in capsys.readouterr().err
    report = _report(tmp_path / "elsewhere" / "rep")
    assert report["data"]["n_test"] == 60
