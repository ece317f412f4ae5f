"""`latentwire evaluate --task anomaly`: baselines, metrics and the report, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latentwire.runtime.cli import main
from latentwire.runtime.errors import DataError
from latentwire.training.anomaly_metrics import check_labels, score_metrics
from latentwire.training.detectors import BASELINES, run_baselines

from .conftest import error_line

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x_fit = rng.normal(size=(200, 6))
    x_test = np.concatenate([rng.normal(size=(60, 6)), rng.normal(4.0, 1.0, size=(6, 6))])
    y = np.r_[np.zeros(60), np.ones(6)].astype(np.int64)
    return x_fit, x_test, y


def _check_baselines(which: tuple[str, ...]) -> None:
    x_fit, x_test, y = _blobs()
    scores = run_baselines(x_fit, x_test, which=which, seed=3, pca_k=2)
    assert tuple(scores) == which
    for name, s in scores.items():
        assert s.shape == (66,) and s.dtype == np.float64
        assert score_metrics(y, s)["roc_auc"] > 0.95, name
    again = run_baselines(x_fit, x_test, which=which, seed=3, pca_k=2)
    for name in which:
        np.testing.assert_array_equal(again[name], scores[name])


def test_baselines_find_shifted_points_and_repeat_for_a_seed() -> None:
    _check_baselines(("iforest", "ecod", "pca"))
    with pytest.raises(DataError, match="unknown baseline"):
        run_baselines(*_blobs()[:2], which=("lof",))


@pytest.mark.slow
def test_pyod_autoencoder_baseline() -> None:
    """Slow: importing PyOD's torch models and training 10 epochs."""
    assert BASELINES == ("iforest", "ecod", "pyod-ae", "pca")
    _check_baselines(("pyod-ae",))


def test_metrics_of_known_rankings() -> None:
    y = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    perfect = np.arange(10.0)
    m = score_metrics(y, perfect, threshold=7.5)
    assert m["roc_auc"] == m["ap"] == m["precision_at_n"] == 1.0
    assert m["recall_at_fpr"] == {"0.01": 1.0, "0.05": 1.0}
    assert m["threshold"] == {"value": 7.5, "fpr": 0.0, "recall": 1.0}
    # one anomaly ranked first, the other below every normal
    mixed = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 0.0])
    m = score_metrics(y, mixed, threshold=6.5)
    assert m["precision_at_n"] == 0.5 and m["recall_at_fpr"]["0.01"] == 0.5
    assert m["ap"] == pytest.approx((1 + 2 / 10) / 2)
    assert m["threshold"]["fpr"] == pytest.approx(2 / 8) and m["threshold"]["recall"] == 0.5
    with pytest.raises(DataError, match="both"):
        check_labels(np.zeros(10), 10)
    with pytest.raises(DataError, match="0 \\(normal\\) or 1"):
        check_labels(np.full(10, 2), 10)
    with pytest.raises(DataError, match="expected 9 labels"):
        check_labels(y, 9)


def test_report_on_builtin_split(
    digits_pkg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A package without anomaly scoring: its reconstruction error beside the baselines, on
    a built-in one-class split; report.json, report.md and the PNG."""
    out = tmp_path / "rep"
    argv = ["evaluate", "--task", "anomaly", "--model", str(digits_pkg), "--data", "digits:4"]
    assert main([*argv, "--report", str(out), "--detectors", "iforest,pca"]) == 0
    printed = capsys.readouterr()
    assert "| score |" in printed.out and "records no anomaly split" in printed.err
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "anomaly"
    assert report["data"]["name"] == "digits:4" and report["data"]["split"]["normal"] == 4
    assert [r["id"] for r in report["rows"]] == ["recon", "iforest", "pca"]
    for r in report["rows"]:
        assert 0.0 <= r["metrics"]["ap"] <= 1.0
        assert set(r["metrics"]["recall_at_fpr"]) == {"0.01", "0.05"}
    assert report["summary"]["best_baseline"]["id"] in ("iforest", "pca")
    assert report["summary"]["iforest_ap"] == report["rows"][1]["metrics"]["ap"]
    assert (out / "anomaly.png").read_bytes().startswith(PNG_MAGIC)
    assert "| PCA recon. error | baseline |" in (out / "report.md").read_text()


def test_user_data_with_labels(
    digits_pkg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentwire.training.anomaly_data import anomaly_split

    s = anomaly_split("digits", normal=1, seed=2)
    np.save(tmp_path / "test.npy", s.x_test)
    np.save(tmp_path / "fit.npy", s.x_fit)
    np.savetxt(tmp_path / "y.csv", s.y_test, fmt="%d")
    out = tmp_path / "rep"
    base = ["evaluate", "--task", "anomaly", "--model", str(digits_pkg), "--report", str(out)]
    argv = [*base, "--data", str(tmp_path / "test.npy"), "--detectors", "pca", "--json"]
    fit = ["--fit-data", str(tmp_path / "fit.npy")]
    assert main([*argv, "--labels", str(tmp_path / "y.csv"), *fit]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["data"]["n_fit"] == len(s.x_fit) and report["data"]["split"] is None
    assert report["data"]["n_anomalies"] == int(s.y_test.sum())
    # errors a user can make: one line each
    assert main(argv) == 1
    assert "needs --labels" in error_line(capsys)
    np.savetxt(tmp_path / "short.csv", s.y_test[:-1], fmt="%d")
    assert main([*argv, "--labels", str(tmp_path / "short.csv")]) == 1
    assert f"expected {len(s.y_test)} labels" in error_line(capsys)
    assert main([*base, "--data", "digits", "--detectors", "lof"]) == 1
    assert "--detectors: unknown lof" in error_line(capsys)


def test_anomaly_package_every_score_on_its_recorded_split(
    anomaly_pkg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A package trained with --task anomaly (int8 codes): its recorded split is the test
    set; every score it carries, each density also on f32 latents, with the stored
    thresholds' realised FPR and recall."""
    from latentwire.training.anomaly_data import split_from_spec

    manifest = json.loads((anomaly_pkg / "manifest.json").read_text())
    split = split_from_spec(manifest["anomaly"]["split"])
    out = tmp_path / "rep"
    argv = ["evaluate", "--task", "anomaly", "--model", str(anomaly_pkg), "--report", str(out)]
    assert main([*argv, "--data", "breast-cancer", "--detectors", "iforest", "--json"]) == 0
    printed = capsys.readouterr()
    assert "records no anomaly split" not in printed.err
    report = json.loads(printed.out)
    assert report["data"]["split"] == manifest["anomaly"]["split"]
    assert report["data"]["n_test"] == len(split.y_test)
    assert report["data"]["n_fit"] == len(split.x_fit)
    rows = {r["id"]: r for r in report["rows"]}
    assert set(rows) == {
        "recon", "gmm", "mahalanobis", "knn", "gmm@f32", "mahalanobis@f32", "knn@f32", "iforest"
    }  # fmt: skip
    for name in ("gmm", "mahalanobis", "knn"):
        assert rows[name]["codes_only"] and rows[name]["variant"] == "int8"
        assert rows[f"{name}@f32"]["variant"] == "f32"
        t = rows[name]["metrics"]["threshold"]
        assert t["value"] == manifest["anomaly"]["thresholds"][name]
        assert 0.0 <= t["fpr"] <= 1.0 and 0.0 <= t["recall"] <= 1.0
    assert not rows["recon"]["codes_only"] and "threshold" in rows["recon"]["metrics"]
    assert "threshold" not in rows["iforest"]["metrics"]
    default = manifest["anomaly"]["default_codes_score"]
    assert [r["id"] for r in report["rows"] if r.get("default")] == [default]
    summary = report["summary"]
    assert set(summary["int8_minus_f32_ap"]) == {"gmm", "mahalanobis", "knn"}
    gap = rows["gmm"]["metrics"]["ap"] - rows["gmm@f32"]["metrics"]["ap"]
    assert summary["int8_minus_f32_ap"]["gmm"] == pytest.approx(gap)
    assert summary["best_codes_only"]["id"] in ("gmm", "mahalanobis", "knn")
    # another seed's split is possible, with a warning
    assert main([*argv, "--data", "breast-cancer", "--split-seed", "1", "--detectors", "none"]) == 0
    assert "not the split the model trained on" in capsys.readouterr().err
    assert json.loads((out / "report.json").read_text())["data"]["split"]["seed"] == 1
