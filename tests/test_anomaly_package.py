"""`train --task anomaly` packages: the detector in the package, scores through ONNX Runtime,
the edge scoring graph, integrity, calibration on held-out normals, determinism."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from latentwire.runtime import load
from latentwire.runtime.anomaly import ALL_SCORES, CODE_SCORES
from latentwire.runtime.errors import InputError, IntegrityError, PackageError


def _test_split(pkg: Path) -> tuple[np.ndarray, np.ndarray]:
    from latentwire.training.anomaly_data import split_from_spec

    manifest = json.loads((pkg / "manifest.json").read_text())
    split = split_from_spec(manifest["anomaly"]["split"])
    return split.x_test, split.y_test


def test_the_package_carries_a_detector_outside_the_fingerprint(anomaly_pkg: Path) -> None:
    m = json.loads((anomaly_pkg / "manifest.json").read_text())
    section = m["anomaly"]
    assert section["scores"] == list(ALL_SCORES)
    assert section["default_codes_score"] in CODE_SCORES
    assert section["calibration"]["target"] == "fpr" and section["calibration"]["rate"] == 0.01
    assert section["split"]["data"] == "breast-cancer"
    assert {"anomaly", "scorer"} <= set(m["files"])
    assert m["files"]["scorer"]["extra_bytes_over_encoder"] > 0
    model = load(anomaly_pkg, providers="cpu")
    assert model.detector is not None and model.detector.codes_scores == CODE_SCORES


def test_scores_separate_the_held_out_anomalies(anomaly_pkg: Path) -> None:
    from sklearn.metrics import roc_auc_score

    x, y = _test_split(anomaly_pkg)
    model = load(anomaly_pkg, providers="cpu")
    for name in ALL_SCORES:
        r = model.score(x, name)
        assert r.scores.shape == (len(x),) and r.flags.dtype == bool
        assert roc_auc_score(y, r.scores) > 0.8, name
    assert model.score(x).score == "recon"  # the decoder is there


def test_the_edge_scorer_gives_codes_and_the_recon_score_in_one_call(anomaly_pkg: Path) -> None:
    x, _ = _test_split(anomaly_pkg)
    full = load(anomaly_pkg, providers="cpu")
    edge = load(anomaly_pkg, providers="cpu", roles=("scorer",))
    w, r = edge.encode_scored(x)
    np.testing.assert_array_equal(w, full.encode(x))
    np.testing.assert_allclose(r.scores, full.score(x, "recon").scores, rtol=1e-4, atol=1e-6)
    # an encoder-only edge scores its codes with the package's default density
    enc = load(anomaly_pkg, providers="cpu", roles=("encoder",))
    assert enc.score(x).score == enc.detector.default_codes_score  # type: ignore[union-attr]


def test_codes_scores_match_what_a_server_computes_from_codes(anomaly_pkg: Path) -> None:
    x, _ = _test_split(anomaly_pkg)
    model = load(anomaly_pkg, providers="cpu")
    assert model.detector is not None
    z = model.prepare_codes(model.encode(x))  # what a server gets: codes, dequantised
    for name in CODE_SCORES:
        np.testing.assert_allclose(
            model.detector.score_latents(z, name).scores, model.score(x, name).scores
        )


def test_a_changed_npz_or_a_package_without_anomaly_training(
    anomaly_pkg: Path, digits_pkg: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(anomaly_pkg, bad)
    with open(bad / "anomaly.npz", "ab") as f:
        f.write(b"\0")
    with pytest.raises(IntegrityError, match=r"anomaly\.npz"):
        load(bad, providers="cpu")
    m = json.loads((bad / "manifest.json").read_text())
    del m["anomaly"]  # a files.anomaly entry without its section
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(PackageError, match="section anomaly"):
        load(bad, providers="cpu")
    plain = load(digits_pkg, providers="cpu")
    assert plain.detector is None
    with pytest.raises(InputError, match="--task anomaly"):
        plain.score(np.zeros((1, 64)))


def test_anomaly_packages_of_tabular_data_are_min_max_normalised(anomaly_pkg: Path) -> None:
    """--normalize auto under --task anomaly is min-max where it would be standard (the
    measured default; digits keeps its own "none")."""
    from latentwire.training.anomaly import ANOMALY_DEFAULTS
    from latentwire.training.data import load_data
    from latentwire.training.pipeline import anomaly_normalization

    m = json.loads((anomaly_pkg / "manifest.json").read_text())
    assert m["normalization"]["kind"] == ANOMALY_DEFAULTS["normalize"] == "minmax"
    assert anomaly_normalization("auto", load_data("breast-cancer")) == "minmax"
    assert anomaly_normalization("auto", load_data("digits")) == "auto"  # = none
    assert anomaly_normalization("standard", load_data("breast-cancer")) == "standard"


def test_int8_anomaly_codes_keep_latents_beyond_the_training_range(anomaly_pkg: Path) -> None:
    """The int8 range has headroom around the training codes' range, so an anomaly's
    far-out latent is not clipped onto the normal range (what cost int8 its AP)."""
    from latentwire.runtime.formats import CodeFormat
    from latentwire.training.anomaly import ANOMALY_DEFAULTS
    from latentwire.training.pipeline import with_headroom

    fmt = load(anomaly_pkg, providers="cpu").codes
    assert fmt.name == "int8"
    lo, hi = np.asarray(fmt.lo), np.asarray(fmt.hi)
    tight = CodeFormat.build("int8", (lo + hi) / 2 - (hi - lo) / 8, (lo + hi) / 2 + (hi - lo) / 8)
    wide = with_headroom(tight, ANOMALY_DEFAULTS["int8_headroom"])
    np.testing.assert_allclose(wide.lo, lo, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(wide.hi, hi, rtol=1e-6, atol=1e-6)
    # a latent twice as far out as the training codes reach survives int8
    far = ((tight.hi - (lo + hi) / 2) * 2 + (lo + hi) / 2)[None, :].astype(np.float32)
    back = fmt.dequantize(fmt.quantize(far))
    np.testing.assert_allclose(back, far, atol=float(np.max(hi - lo)) / 254 + 1e-6)
    assert np.all(tight.dequantize(tight.quantize(far)) < far - 1e-3)  # the tight one clips
    assert with_headroom(tight, 1.0) is tight
