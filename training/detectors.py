"""Baseline anomaly detectors, fitted on the same data as the model and scored on the same
test samples, so a report compares like with like.

- ``iforest``: scikit-learn IsolationForest, 100 trees (ADBench's and PyOD's default);
- ``ecod``: PyOD ECOD (empirical-CDF tails per feature, no parameters);
- ``pyod-ae``: PyOD AutoEncoder with its defaults (hidden [64, 32], 10 epochs, its own
  standardisation), as ADBench runs it;
- ``pca``: PCA reconstruction error (the Q/SPE statistic) on standardised features, with
  the model's latent size as the number of components (the same bottleneck), or the
  components that explain 90% of the variance when no size is given.

Every score is "higher = more anomalous". Samples of any shape are flattened to vectors.
Fitting never sees labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from latentwire.runtime.errors import DataError

BASELINES = ("iforest", "ecod", "pyod-ae", "pca")
LABELS = {
    "iforest": "IsolationForest",
    "ecod": "ECOD",
    "pyod-ae": "PyOD AutoEncoder",
    "pca": "PCA recon. error",
}
"""How reports name each baseline."""


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)


def iforest_scores(x_fit: np.ndarray, x_test: np.ndarray, *, seed: int = 0) -> np.ndarray:
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(n_estimators=100, random_state=seed, n_jobs=1).fit(_flat(x_fit))
    out: np.ndarray = -forest.score_samples(_flat(x_test))
    return out


def ecod_scores(x_fit: np.ndarray, x_test: np.ndarray, *, seed: int = 0) -> np.ndarray:
    from pyod.models.ecod import ECOD

    det = ECOD().fit(_flat(x_fit))
    return np.asarray(det.decision_function(_flat(x_test)), dtype=np.float64)


def pyod_ae_scores(x_fit: np.ndarray, x_test: np.ndarray, *, seed: int = 0) -> np.ndarray:
    from pyod.models.auto_encoder import AutoEncoder

    det = AutoEncoder(random_state=seed, verbose=0, device="cpu")
    det.fit(_flat(x_fit).astype(np.float32))
    return np.asarray(det.decision_function(_flat(x_test).astype(np.float32)), dtype=np.float64)


def pca_scores(
    x_fit: np.ndarray, x_test: np.ndarray, *, seed: int = 0, k: int | None = None
) -> np.ndarray:
    from sklearn.decomposition import PCA

    fit, test = _flat(x_fit), _flat(x_test)
    mean, std = fit.mean(axis=0), fit.std(axis=0)
    std[std < 1e-12] = 1.0
    fit, test = (fit - mean) / std, (test - mean) / std
    most = min(fit.shape) - 1
    if most < 1:
        raise DataError(f"PCA baseline: needs at least 2 samples and 2 features, got {fit.shape}")
    n: int | float = 0.9 if k is None else max(1, min(int(k), most))
    pca = PCA(n_components=n, random_state=seed).fit(fit)
    residual = test - pca.inverse_transform(pca.transform(test))
    out: np.ndarray = (residual**2).mean(axis=1)
    return out


_SCORERS: dict[str, Callable[..., np.ndarray]] = {
    "iforest": iforest_scores,
    "ecod": ecod_scores,
    "pyod-ae": pyod_ae_scores,
    "pca": pca_scores,
}


def run_baselines(
    x_fit: np.ndarray,
    x_test: np.ndarray,
    *,
    which: Sequence[str] = BASELINES,
    seed: int = 0,
    pca_k: int | None = None,
    log: Callable[[str], Any] | None = None,
) -> dict[str, np.ndarray]:
    """Fit each named baseline on `x_fit` and score `x_test`: name -> float64 scores."""
    unknown = [w for w in which if w not in _SCORERS]
    if unknown:
        raise DataError(f"unknown baseline(s) {', '.join(unknown)}; choose from {BASELINES}")
    if len(x_fit) < 2:
        raise DataError(f"baselines need at least 2 samples to fit on, got {len(x_fit)}")
    out: dict[str, np.ndarray] = {}
    for name in which:
        if log is not None:
            log(f"baseline {LABELS[name]}: fitting on {len(x_fit)} samples")
        extra: dict[str, Any] = {"k": pca_k} if name == "pca" else {}
        scores = _SCORERS[name](x_fit, x_test, seed=seed, **extra)
        if scores.shape != (len(x_test),) or not np.all(np.isfinite(scores)):
            raise DataError(f"baseline {LABELS[name]} gave no finite score per test sample")
        out[name] = scores
    return out
