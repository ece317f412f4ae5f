"""Fitting and calibration (training/anomaly.py): the realised false-positive rate on fresh
normal samples, choosing the density without labels, determinism, the robust pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentwire.runtime import load
from latentwire.runtime.anomaly import ALL_SCORES, CODE_SCORES, Detector
from latentwire.training.anomaly import calibrate_detector, fit_densities, robust_keep


def _latents(n: int, seed: int, modes: int = 3) -> np.ndarray:
    """Normal latents: an equal mixture of `modes` Gaussians in 4-D."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(0, 4, (modes, 4))
    return centres[np.arange(n) % modes] + rng.normal(size=(n, 4))  # equal shares


def _detector(z_fit: np.ndarray, z_val: np.ndarray, **rate: float) -> Detector:
    notes, arrays = fit_densities(z_fit, z_val, seed=0, defaults={"gmm_components": (1, 3)})
    recon = np.random.default_rng(5).chisquare(3, len(z_val))
    section, arrays = calibrate_detector(
        notes, arrays, z_val, recon, fpr=rate.get("fpr"), contamination=rate.get("contamination")
    )
    return Detector.from_package(section, arrays)


@pytest.mark.parametrize("fpr", [0.01, 0.05])
def test_realised_fpr_on_fresh_normals_is_within_one_point(fpr: float) -> None:
    det = _detector(_latents(2000, 1), _latents(3000, 2), fpr=fpr)
    fresh = _latents(10000, 3)
    for name in CODE_SCORES:
        realised = float(det.score_latents(fresh, name).flags.mean())
        assert abs(realised - fpr) <= 0.01, (name, realised)
    recon = np.random.default_rng(6).chisquare(3, 10000)
    realised = float(det.result("recon", recon).flags.mean())
    assert abs(realised - fpr) <= 0.01


def test_out_of_fold_training_codes_join_a_small_validation_split() -> None:
    """60 validation codes alone cannot place a 1% threshold; with out-of-fold scores of
    the 2,000 training codes the GMM's and Mahalanobis' realised rate on fresh normals is
    within a point."""
    z_fit, z_val = _latents(2000, 1), _latents(60, 2)
    notes, arrays = fit_densities(z_fit, z_val, seed=0, defaults={"gmm_components": (1, 3)})
    section, arrays = calibrate_detector(
        notes, arrays, z_val, None, fpr=0.01, contamination=None, z_fit=z_fit
    )
    assert section["calibration"]["n_codes"] == 2060 and section["calibration"]["n"] == 60
    det = Detector.from_package(section, arrays)
    fresh = _latents(10000, 3)
    for name in ("gmm", "mahalanobis"):  # kNN calibrates on the validation split only
        assert abs(float(det.score_latents(fresh, name).flags.mean()) - 0.01) <= 0.01, name
    assert section["calibration"]["n_heldout"]["knn"] == 60


def test_the_density_is_chosen_by_held_out_likelihood() -> None:
    multimodal = _detector(_latents(2000, 1), _latents(1000, 2))
    assert multimodal.default_codes_score == "gmm"
    assert multimodal.section["gmm"]["components"] > 1
    one = _detector(_latents(2000, 1, modes=1), _latents(1000, 2, modes=1))
    assert one.section["gmm"]["components"] == 1
    ll = one.section["selection"]["heldout_loglik"]
    assert one.default_codes_score == ("gmm" if ll["gmm"] >= ll["gaussian"] else "mahalanobis")


def test_contamination_flags_that_share_of_the_validation_split() -> None:
    det = _detector(_latents(2000, 1), _latents(1000, 2), contamination=0.1)
    assert det.calibration["target"] == "contamination"
    assert det.score_latents(_latents(1000, 2)).flags.mean() == pytest.approx(0.1, abs=0.002)


def test_fitting_is_deterministic() -> None:
    a = fit_densities(_latents(1000, 1), _latents(500, 2), seed=0)
    b = fit_densities(_latents(1000, 1), _latents(500, 2), seed=0)
    assert a[0] == b[0]
    for key in a[1]:
        np.testing.assert_array_equal(a[1][key], b[1][key])


def test_robust_keep_drops_the_highest_scores() -> None:
    scores = np.array([0.1, 5.0, 0.2, 0.3, 9.0, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert robust_keep(scores, 0.2).tolist() == [0, 2, 3, 5, 6, 7, 8, 9]


def _synthetic(n: int, seed: int) -> np.ndarray:
    """Normal samples on a 3-D manifold embedded in 12 features, plus small noise."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(0).normal(size=(3, 12))
    return (np.tanh(rng.normal(size=(n, 3))) @ mix + 0.05 * rng.normal(size=(n, 12))).astype(
        np.float32
    )


@pytest.mark.slow
@pytest.mark.parametrize("codec", ["f32", "int8"])
def test_a_trained_package_holds_its_fpr_on_fresh_normals(tmp_path: Path, codec: str) -> None:
    """End to end through ONNX Runtime: train on 6,000 normals (half held out), score
    20,000 fresh ones at 1% (the stored thresholds) and 5% (re-thresholded).

    6,000 rather than 3,000: a threshold set on n held-out scores realises its rate with a
    sampling spread of sqrt(p(1-p)/n); with 3,000 (validation + out-of-fold) the 5% cells'
    spread is 0.4 pp, so one of the 16 cells lands past 1 pp in about one seed of ten
    (measured: Mahalanobis 6.02% and 5.95% at seed 0 under two normalisations, 4.2-5.3%
    at seeds 1-2). 6,000 gives 0.28 pp: measured at most 0.68 pp off, seeds 0-2."""
    from latentwire.training.data import Dataset
    from latentwire.training.pipeline import AnomalyOptions, train_and_export

    data = Dataset(_synthetic(6000, seed=1), "synthetic", "synthetic", False, "standard")
    train_and_export(
        data,
        name="synthetic",
        out=tmp_path / "pkg",
        checkpoint=None,
        resume=False,
        seed=0,
        progress=False,
        epochs=5,
        hidden=(32,),
        latent_dim=4,
        val_fraction=0.5,
        codec=codec,
        anomaly=AnomalyOptions(edge_score=True),
    )
    model = load(tmp_path / "pkg", providers="cpu")
    fresh = _synthetic(20000, seed=2)
    for fpr in (None, 0.05):
        for name in ALL_SCORES:
            realised = float(model.score(fresh, name, fpr=fpr).flags.mean())
            assert abs(realised - (fpr or 0.01)) <= 0.01, (name, fpr, realised)
