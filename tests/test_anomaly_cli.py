"""`latentwire score`: columns, output files, re-thresholding, edge packages, errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from latentwire.runtime import cli, load
from tests.conftest import error_line


@pytest.fixture(scope="module")
def x_file(anomaly_pkg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from latentwire.training.anomaly_data import split_from_spec

    spec = json.loads((anomaly_pkg / "manifest.json").read_text())["anomaly"]["split"]
    path = tmp_path_factory.mktemp("score") / "x.npy"
    np.save(path, split_from_spec(spec).x_test)
    return path


def test_a_table_on_stdout(
    anomaly_pkg: Path, x_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["-q", "score", "--model", str(anomaly_pkg), str(x_file)]) == 0
    out, err = capsys.readouterr()
    head = out.splitlines()[0].split()
    assert head == ["sample", "recon", "gmm", "mahalanobis", "knn", "p_value", "flag", "threshold"]
    assert "more rows" in out.splitlines()[-1]  # the test split has over 50 samples
    assert err.startswith("flagged ") and "by recon >" in err


@pytest.mark.parametrize("suffix", [".csv", ".npy", ".json"])
def test_output_files_hold_the_package_scores(
    anomaly_pkg: Path, x_file: Path, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"scores{suffix}"
    argv = ["-q", "score", "--model", str(anomaly_pkg), str(x_file), "--out", str(out)]
    assert cli.main([*argv, "--score", "gmm"]) == 0
    want = load(anomaly_pkg, providers="cpu").score(np.load(x_file), "gmm")
    if suffix == ".csv":
        with out.open() as f:
            rows = list(csv.DictReader(f))
        got = np.array([float(r["gmm"]) for r in rows])
        flags = np.array([r["flag"] == "1" for r in rows])
    elif suffix == ".npy":
        rec = np.load(out, allow_pickle=False)
        got, flags = rec["gmm"], rec["flag"]
    else:
        doc = json.loads(out.read_text())
        assert doc["score"] == "gmm" and doc["threshold"] == pytest.approx(want.threshold)
        got = np.array([s["gmm"] for s in doc["samples"]])
        flags = np.array([s["flag"] for s in doc["samples"]])
    np.testing.assert_allclose(got, want.scores, rtol=1e-8)
    np.testing.assert_array_equal(flags, want.flags)


def test_fpr_rethresholds_from_the_held_out_scores(
    anomaly_pkg: Path, x_file: Path, tmp_path: Path
) -> None:
    counts = []
    for fpr in ("0.01", "0.2"):
        out = tmp_path / f"{fpr}.npy"
        argv = ["-q", "score", "--model", str(anomaly_pkg), str(x_file), "--out", str(out)]
        assert cli.main([*argv, "--fpr", fpr, "--score", "knn"]) == 0
        counts.append(int(np.load(out)["flag"].sum()))
    assert counts[1] > counts[0]


def test_an_encoder_only_edge_package_scores_its_codes(
    anomaly_pkg: Path, x_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edge = tmp_path / "edge"
    shutil.copytree(anomaly_pkg, edge)
    (edge / "decoder.onnx").unlink()
    (edge / "scorer.onnx").unlink()
    assert cli.main(["-q", "score", "--model", str(edge), str(x_file)]) == 0
    out, err = capsys.readouterr()
    assert out.split()[1:4] == ["gmm", "mahalanobis", "knn"]
    default = json.loads((edge / "manifest.json").read_text())["anomaly"]["default_codes_score"]
    assert f"by {default} >" in err
    assert cli.main(["-q", "score", "--model", str(edge), str(x_file), "--score", "recon"]) == 1
    assert "decoder.onnx or scorer.onnx" in error_line(capsys)


def test_errors_are_one_line(
    anomaly_pkg: Path,
    digits_pkg: Path,
    x_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["-q", "score", "--model", str(anomaly_pkg), str(x_file)]
    assert cli.main([*base, "--score", "iforest"]) == 1
    assert "recon, gmm, mahalanobis, knn" in error_line(capsys)
    out = tmp_path / "s.csv"
    out.write_text("mine\n")
    assert cli.main([*base, "--out", str(out)]) == 1
    assert "--force" in error_line(capsys) and out.read_text() == "mine\n"
    assert cli.main([*base, "--out", str(out), "--force"]) == 0
    capsys.readouterr()
    np.save(tmp_path / "d.npy", np.zeros((3, 64)))
    assert cli.main(["-q", "score", "--model", str(digits_pkg), str(tmp_path / "d.npy")]) == 1
    assert "--task anomaly" in error_line(capsys)


@pytest.mark.slow
def test_train_robust_on_contaminated_data_drops_the_worst_fitted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--robust --contamination 0.05 on a CSV of normals with 5% far-off rows: the second
    pass trains without (most of) them, and the package says what it dropped."""
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(3, 12))
    x = np.tanh(rng.normal(size=(1000, 3))) @ mix + 0.05 * rng.normal(size=(1000, 12))
    x[:50] = rng.normal(0, 3, size=(50, 12))
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")
    out = tmp_path / "pkg"
    argv = ["-q", "train", "--task", "anomaly", "--data", str(tmp_path / "x.csv"), "--robust"]
    argv += ["--contamination", "0.05", "--epochs", "20", "--hidden", "32", "--latent-dim", "3"]
    assert cli.main([*argv, "--out", str(out), "--checkpoint", str(tmp_path / "c.pt")]) == 0
    assert "anomaly: scores recon" in capsys.readouterr().out
    robust = json.loads((out / "manifest.json").read_text())["anomaly"]["robust"]
    assert robust["dropped"] == 50 and robust["of"] == 1000
    scores = load(out, providers="cpu").score(x).scores
    assert np.mean(scores[:50]) > 10 * np.median(scores[50:])
