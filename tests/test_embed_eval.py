"""`latentwire evaluate --task embed`: codes as features against PCA, on held-out data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latentwire.runtime.cli import main

from .conftest import error_line


@pytest.fixture(scope="module")
def report(digits_pkg: Path, other_pkg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("embed") / "report"
    argv = ["-q", "evaluate", "--task", "embed", "--data", "digits", "--report", str(out)]
    assert main([*argv, "--model", str(digits_pkg), "--model", str(other_pkg)]) == 0
    return out


def test_report_groups_seeds_and_has_baselines(report: Path) -> None:
    doc = json.loads((report / "report.json").read_text())
    assert doc["task"] == "embed" and doc["data"]["n"] == 1797
    methods = {(r["method"], r["seed"]) for r in doc["rows"]}
    ours_rows = {("latentwire[mse]", 0), ("latentwire[mse]", 1)}
    assert ours_rows | {("pca", 0), ("pca", 1), ("raw", 0)} <= methods
    ours = next(s for s in doc["summary"] if s["method"] == "latentwire[mse]")
    assert ours["dims"] == 8 and ours["seeds"] == [0, 1]
    for key in ("knn_acc", "logreg_acc", "trust@5", "trust@10", "psnr_db"):
        assert key in ours and f"{key}_std" in ours
    assert 0.5 < ours["knn_acc"] <= 1 and 0.5 < ours["trust@5"] <= 1
    v = doc["verdicts"][0]
    assert v["dims"] == 8 and v["method"] == "latentwire[mse]" and isinstance(v["beats_pca"], bool)
    import importlib.util

    if importlib.util.find_spec("umap") is None:
        assert doc["umap"].startswith("not installed")
    assert (report / "embed.png").stat().st_size > 10_000
    assert "| 8 | latentwire[mse] | 0,1 |" in (report / "report.md").read_text()


def test_pca_row_is_sklearns_pca_on_the_models_split(report: Path) -> None:
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA
    from sklearn.manifold import trustworthiness
    from sklearn.neighbors import KNeighborsClassifier

    from latentwire.training.data import split

    doc = json.loads((report / "report.json").read_text())
    row = next(r for r in doc["rows"] if r["method"] == "pca" and r["seed"] == 1)
    d = load_digits()
    x, y = d.data / 16.0, d.target
    tr, te = split(len(x), 0.2, 1)
    pca = PCA(8, random_state=1).fit(x[tr])
    knn = KNeighborsClassifier(5).fit(pca.transform(x[tr]), y[tr])
    assert row["knn_acc"] == pytest.approx(knn.score(pca.transform(x[te]), y[te]), abs=1e-9)
    trust = trustworthiness(x[te], pca.transform(x[te]), n_neighbors=5)
    assert row["trust@5"] == pytest.approx(trust, abs=1e-6)


def test_own_labels_and_label_errors(
    digits_pkg: Path, tmp_path: Path, report: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sklearn.datasets import load_digits

    y = load_digits().target
    np.save(tmp_path / "y.npy", y)
    argv = ["-q", "evaluate", "--task", "embed", "--model", str(digits_pkg), "--data", "digits"]
    assert main([*argv, "--labels", str(tmp_path / "y.npy"), "--report", str(tmp_path / "r")]) == 0
    mine = json.loads((tmp_path / "r" / "report.json").read_text())["rows"][0]
    ref = json.loads((report / "report.json").read_text())["rows"][0]
    assert mine["knn_acc"] == ref["knn_acc"] and mine["trust@5"] == ref["trust@5"]
    np.save(tmp_path / "short.npy", y[:10])
    assert main([*argv, "--labels", str(tmp_path / "short.npy"), "--report", str(tmp_path)]) == 1
    assert "10 labels for 1797 samples" in error_line(capsys)
    np.save(tmp_path / "x.npy", load_digits().data)
    argv[argv.index("digits")] = str(tmp_path / "x.npy")
    assert main([*argv, "--report", str(tmp_path / "r2")]) == 1
    assert "needs --labels" in error_line(capsys)
