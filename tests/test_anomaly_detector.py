"""runtime/anomaly.py with hand-made densities: scores, flags, p-values, thresholds, errors."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pytest

from latentwire.runtime.anomaly import Detector, load_arrays, threshold_at
from latentwire.runtime.errors import InputError, PackageError

K = 3


def _detector(**changes: Any) -> Detector:
    arrays = {
        "mahalanobis_mean": np.array([1.0, 0.0, -1.0]),
        "mahalanobis_precision": np.diag([1.0, 4.0, 0.25]),
        "gmm_weights": np.array([1.0]),
        "gmm_means": np.zeros((1, K)),
        "gmm_precisions_cholesky": np.eye(K)[None],
        "knn_bank": np.array([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [5, 5, 5]]),
        **{f"heldout_{s}": np.arange(100.0) for s in ("recon", "gmm", "mahalanobis", "knn")},
    }
    section: dict[str, Any] = {
        "scores": ["recon", "gmm", "mahalanobis", "knn"],
        "default_codes_score": "gmm",
        "thresholds": {"recon": 98.5, "gmm": 50.0, "mahalanobis": 3.0, "knn": 1.0},
        "knn_k": 2,
    }
    for key, value in changes.items():
        if key in arrays:
            arrays[key] = value
        else:
            section[key] = value
    return Detector.from_package(section, arrays)


def test_mahalanobis_is_the_squared_distance_under_the_precision() -> None:
    z = np.array([[1.0, 0, -1], [2, 1, 1], [0, 0, 0]])
    r = _detector().score_latents(z, "mahalanobis")
    assert r.score == "mahalanobis"
    np.testing.assert_allclose(r.scores, [0.0, 1 + 4 + 1, 1 + 0 + 0.25])
    assert r.flags.tolist() == [False, True, False] and r.threshold == 3.0


def test_gmm_is_the_negative_log_likelihood() -> None:
    z = np.array([[0.0, 0, 0], [1, 2, 3]])
    r = _detector().score_latents(z)  # the default codes score
    assert r.score == "gmm"
    want = [0.5 * float(v @ v) + 1.5 * math.log(2 * math.pi) for v in z]
    np.testing.assert_allclose(r.scores, want)


def test_gmm_matches_scikit_learn() -> None:
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(1)
    data = np.concatenate([rng.normal(0, 1, (200, K)), rng.normal(4, 0.5, (200, K))])
    gm = GaussianMixture(2, random_state=0).fit(data)
    det = _detector(
        gmm_weights=gm.weights_,
        gmm_means=gm.means_,
        gmm_precisions_cholesky=gm.precisions_cholesky_,
    )
    q = rng.normal(2, 3, (50, K))
    np.testing.assert_allclose(det.score_latents(q, "gmm").scores, -gm.score_samples(q), rtol=1e-9)


def test_knn_is_the_mean_distance_to_the_k_nearest_training_latents() -> None:
    z = np.array([[0.0, 0, 0], [0, 1, 0]])
    r = _detector().score_latents(z, "knn")
    np.testing.assert_allclose(r.scores, [(0 + 1) / 2, (1 + 1) / 2])  # [0,1,0]: 1 from two


def test_p_values_are_the_share_of_heldout_scores_at_least_as_high() -> None:
    det = _detector()
    r = det.result("recon", np.array([-1.0, 0.0, 50.0, 99.0, 99.5]))
    np.testing.assert_allclose(r.p_values, [1.0, 1.0, 0.5, 0.01, 0.0])
    assert r.flags.tolist() == [False, False, False, True, True]


def test_reconstruction_error_in_model_units() -> None:
    x = np.array([[0.0, 0.0], [2.0, 4.0]])
    r = _detector().score_reconstruction(x, np.zeros_like(x), scale=np.array([2.0, 2.0]))
    np.testing.assert_allclose(r.scores, [0.0, (1 + 4) / 2])


def test_rethreshold_at_another_rate_from_the_heldout_scores() -> None:
    det = _detector()
    assert det.threshold_for("gmm") == 50.0
    assert det.threshold_for("gmm", fpr=0.05) == pytest.approx(np.quantile(np.arange(100.0), 0.95))
    r = det.result("gmm", np.arange(100.0), fpr=0.1)
    assert r.flags.mean() == pytest.approx(0.1)


@pytest.mark.parametrize("rate", [0.01, 0.05])
def test_thresholds_hold_the_false_positive_rate_on_fresh_normals(rate: float) -> None:
    rng = np.random.default_rng(7)
    heldout = rng.chisquare(4, 5000)
    fresh = rng.chisquare(4, 20000)
    realised = float((fresh > threshold_at(heldout, rate)).mean())
    assert abs(realised - rate) <= 0.01


def test_unknown_score_names_the_choices() -> None:
    det = _detector()
    with pytest.raises(InputError, match="gmm, mahalanobis, knn"):
        det.score_latents(np.zeros((1, K)), "recon")
    with pytest.raises(InputError, match="recon, gmm"):
        det.threshold_for("iforest")


def test_latents_of_the_wrong_size_or_nan_are_input_errors() -> None:
    det = _detector()
    with pytest.raises(InputError, match=r"\(N, 3\)"):
        det.score_latents(np.zeros((2, 4)))
    with pytest.raises(InputError, match="NaN"):
        det.score_latents(np.full((1, K), np.nan))
    with pytest.raises(InputError, match="rate"):
        det.threshold_for("gmm", fpr=1.5)


@pytest.mark.parametrize(
    "change",
    [
        {"scores": ["gmm", "iforest"]},
        {"default_codes_score": "knn2"},
        {"thresholds": {"gmm": 1.0}},
        {"knn_k": 9},
        {"gmm_precisions_cholesky": -np.eye(K)[None]},
        {"mahalanobis_precision": np.eye(2)},
        {"heldout_gmm": np.array([np.nan])},
        {"gmm_means": np.array(["a"])},
    ],
)
def test_malformed_packages_are_package_errors(change: dict[str, Any]) -> None:
    with pytest.raises(PackageError):
        _detector(**change)


def test_npz_is_read_without_pickle() -> None:
    buf = io.BytesIO()
    np.savez(buf, ok=np.arange(3.0), bad=np.array([{"a": 1}], dtype=object))
    with pytest.raises(PackageError, match="cannot read"):
        load_arrays(buf.getvalue())["bad"]
    with pytest.raises(PackageError, match="cannot read"):
        load_arrays(b"not a zip")
