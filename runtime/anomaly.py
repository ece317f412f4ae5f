"""Anomaly scores of a model package: code densities, reconstruction error, calibrated
thresholds. numpy only (no torch, onnx or scikit-learn), so edges and servers can score.

A package trained with `latentwire train --task anomaly` carries a manifest section
``"anomaly"`` and a small ``anomaly.npz`` beside the graphs (sha256 in
``manifest["files"]["anomaly"]``; read with ``allow_pickle=False``)::

    "anomaly": {
      "scores": ["recon", "gmm", "mahalanobis", "knn"],  # what the package can compute
      "codes_scores": ["gmm", "mahalanobis", "knn"],     # densities on the codes
      "default_codes_score": "gmm",   # chosen at export without labels (see "selection")
      "thresholds": {"recon": 0.012, "gmm": -3.1, ...},  # flags = score > threshold
      "calibration": {"target": "fpr", "rate": 0.01, "split": "validation", "n": 288},
      "knn_k": 5, ...                  # and how the densities were fitted and chosen
    }

The npz holds the densities' parameters (``mahalanobis_mean``/``_precision``,
``gmm_weights``/``_means``/``_precisions_cholesky``, ``knn_bank``) and, per score, the
sorted scores of the held-out normal samples the thresholds were calibrated on
(``heldout_<score>``): p-values and re-thresholding at another false-positive rate read
them. Every score is "higher = more anomalous":

- ``recon``: mean squared reconstruction error per value, in the model's normalised units
  (``(x - x_hat) / scale``), so no feature dominates by its units;
- ``mahalanobis``: squared Mahalanobis distance of the latents (shrunk covariance);
- ``gmm``: negative log-likelihood under a Gaussian mixture of the latents;
- ``knn``: mean Euclidean distance to the k nearest training latents.

Densities see the latents as the decoder (and a server) sees them: the package's codes
after dequantisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError, PackageError

__all__ = [
    "ALL_SCORES",
    "ANOMALY_FILE",
    "CODE_SCORES",
    "RECON",
    "Detector",
    "ScoreResult",
    "threshold_at",
]

CODE_SCORES = ("gmm", "mahalanobis", "knn")
"""Densities on codes: what a server, which sees only codes, can compute."""
RECON = "recon"
ALL_SCORES = (RECON, *CODE_SCORES)
ANOMALY_FILE = "anomaly.npz"
MAX_BANK = 1 << 16
"""Most training latents a kNN bank may hold (bounds memory and time per query)."""
_CHUNK = 1024
"""Query rows per distance block in kNN scoring."""


@dataclass(frozen=True)
class ScoreResult:
    """Anomaly scores of a batch, with the flags at the package's calibrated threshold."""

    score: str
    """Which score ("recon", "gmm", "mahalanobis", "knn")."""
    scores: np.ndarray
    """float64 [N], higher = more anomalous."""
    flags: np.ndarray
    """bool [N] = scores > threshold."""
    threshold: float
    p_values: np.ndarray
    """float64 [N]: share of held-out normal scores >= each score (small = unusual)."""


def threshold_at(heldout: np.ndarray, rate: float) -> float:
    """The threshold that flags a share `rate` of the held-out scores: their (1 - rate)
    quantile (linear interpolation)."""
    if not 0.0 < rate < 1.0:
        raise InputError(f"a false-positive or contamination rate is in (0, 1), got {rate}")
    if len(heldout) == 0:
        raise PackageError("the package holds no held-out scores to calibrate a threshold on")
    return float(np.quantile(np.asarray(heldout, dtype=np.float64), 1.0 - rate))


def _array(arrays: dict[str, np.ndarray], key: str, ndim: int) -> np.ndarray:
    if key not in arrays:
        raise PackageError(f"{ANOMALY_FILE} has no array {key!r}")
    arr = np.asarray(arrays[key])
    if arr.dtype.kind != "f" or arr.ndim != ndim:
        raise PackageError(
            f"{ANOMALY_FILE}: {key} must be a {ndim}-D float array, got {arr.dtype} {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise PackageError(f"{ANOMALY_FILE}: {key} holds NaN/Inf values")
    return arr.astype(np.float64)


def _logsumexp(a: np.ndarray) -> np.ndarray:
    peak = a.max(axis=1, keepdims=True)
    out: np.ndarray = (peak + np.log(np.exp(a - peak).sum(axis=1, keepdims=True)))[:, 0]
    return out


class Detector:
    """A package's fitted code densities and calibrated thresholds (see the module doc).

    Build it with `Detector.from_package(section, arrays)`: `section` is the manifest's
    ``"anomaly"`` object, `arrays` the contents of its npz. Anything malformed is a
    PackageError raised here, before any scoring."""

    def __init__(self, section: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if not isinstance(section, dict):
            raise PackageError(f"manifest anomaly must be an object, got {type(section).__name__}")
        scores = section.get("scores")
        if not isinstance(scores, list) or not scores or any(s not in ALL_SCORES for s in scores):
            raise PackageError(
                f"anomaly.scores must be a non-empty list of {ALL_SCORES}, got {scores!r:.80}"
            )
        self.scores: tuple[str, ...] = tuple(scores)
        self.codes_scores: tuple[str, ...] = tuple(s for s in scores if s in CODE_SCORES)
        default = section.get("default_codes_score")
        if self.codes_scores and default not in self.codes_scores:
            raise PackageError(
                f"anomaly.default_codes_score {default!r:.40} is not one of {self.codes_scores}"
            )
        self.default_codes_score: str = str(default) if self.codes_scores else ""
        thresholds = section.get("thresholds")
        if not isinstance(thresholds, dict):
            raise PackageError("anomaly.thresholds must be an object of score -> threshold")
        self.thresholds: dict[str, float] = {}
        self.heldout: dict[str, np.ndarray] = {}
        for s in self.scores:
            t = thresholds.get(s)
            if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t):
                raise PackageError(f"anomaly.thresholds.{s} must be a finite number, got {t!r:.40}")
            self.thresholds[s] = float(t)
            self.heldout[s] = np.sort(_array(arrays, f"heldout_{s}", 1))
        self.calibration: dict[str, Any] = dict(section.get("calibration") or {})
        self.section = section
        self.dim = 0
        dims: set[int] = set()
        if "mahalanobis" in self.codes_scores:
            self._mean = _array(arrays, "mahalanobis_mean", 1)
            self._precision = _array(arrays, "mahalanobis_precision", 2)
            k = len(self._mean)
            if self._precision.shape != (k, k):
                raise PackageError(
                    f"{ANOMALY_FILE}: mahalanobis_precision is {self._precision.shape}, "
                    f"expected ({k}, {k})"
                )
            dims.add(k)
        if "gmm" in self.codes_scores:
            self._weights = _array(arrays, "gmm_weights", 1)
            self._means = _array(arrays, "gmm_means", 2)
            self._chol = _array(arrays, "gmm_precisions_cholesky", 3)
            c, k = self._means.shape
            if len(self._weights) != c or self._chol.shape != (c, k, k) or c < 1:
                raise PackageError(
                    f"{ANOMALY_FILE}: GMM shapes disagree: weights {self._weights.shape}, "
                    f"means {self._means.shape}, precisions_cholesky {self._chol.shape}"
                )
            if np.any(self._weights <= 0):
                raise PackageError(f"{ANOMALY_FILE}: gmm_weights must be positive")
            diag = np.diagonal(self._chol, axis1=1, axis2=2)
            if np.any(diag <= 0):
                raise PackageError(
                    f"{ANOMALY_FILE}: gmm_precisions_cholesky needs a positive diagonal"
                )
            self._log_norm = (
                np.log(self._weights / self._weights.sum())
                + np.log(diag).sum(axis=1)
                - 0.5 * k * math.log(2 * math.pi)
            )
            dims.add(k)
        if "knn" in self.codes_scores:
            self._bank = _array(arrays, "knn_bank", 2)
            k_near = section.get("knn_k")
            n = len(self._bank)
            if not isinstance(k_near, int) or not 1 <= k_near <= n or n > MAX_BANK:
                raise PackageError(
                    f"anomaly.knn_k must be 1 .. the bank's {n} latents (at most {MAX_BANK}), "
                    f"got {k_near!r:.20}"
                )
            self._k: int = k_near
            self._bank_sq = (self._bank**2).sum(axis=1)
            dims.add(self._bank.shape[1])
        if len(dims) > 1:
            raise PackageError(f"{ANOMALY_FILE}: the densities disagree on the latent size {dims}")
        self.dim = dims.pop() if dims else 0

    @classmethod
    def from_package(cls, section: dict[str, Any], arrays: dict[str, np.ndarray]) -> Detector:
        return cls(section, arrays)

    def __repr__(self) -> str:
        return (
            f"Detector(scores={self.scores}, default_codes_score={self.default_codes_score!r}, "
            f"calibration={self.calibration})"
        )

    # -- thresholds -----------------------------------------------------------------------
    def threshold_for(self, score: str, fpr: float | None = None) -> float:
        """The stored threshold of `score`, or the one that flags a share `fpr` of the
        held-out normal scores (re-thresholding without retraining)."""
        self._check_name(score, self.scores)
        if fpr is None:
            return self.thresholds[score]
        return threshold_at(self.heldout[score], fpr)

    def _check_name(self, score: str, allowed: tuple[str, ...]) -> None:
        if score not in allowed:
            what = "code scores" if allowed == self.codes_scores else "scores"
            raise InputError(
                f"unknown score {score!r}: this package's {what} are {', '.join(allowed)}"
            )

    def result(self, score: str, values: np.ndarray, fpr: float | None = None) -> ScoreResult:
        """Flags and p-values of computed `values` of `score`."""
        values = np.asarray(values, dtype=np.float64)
        threshold = self.threshold_for(score, fpr)
        held = self.heldout[score]
        at_least = len(held) - np.searchsorted(held, values, side="left")
        return ScoreResult(
            score=score,
            scores=values,
            flags=values > threshold,
            threshold=threshold,
            p_values=at_least.astype(np.float64) / len(held),
        )

    # -- scoring --------------------------------------------------------------------------
    def score_latents(
        self, z: np.ndarray, score: str | None = None, *, fpr: float | None = None
    ) -> ScoreResult:
        """Score float latents exactly as the decoder sees them (after the code format's
        dequantisation), shape [N, K] (or [N, ...] flattening to K values)."""
        if not self.codes_scores:
            raise InputError("this package carries no code densities; score samples instead")
        name = score or self.default_codes_score
        self._check_name(name, self.codes_scores)
        arr = np.asarray(z)
        if arr.dtype.kind not in "fiu" or arr.ndim < 2 or math.prod(arr.shape[1:]) != self.dim:
            raise InputError(
                f"latents must be a float array of shape (N, {self.dim}), got "
                f"{arr.dtype} {arr.shape}"
            )
        flat = arr.reshape(len(arr), self.dim).astype(np.float64)
        if not np.all(np.isfinite(flat)):
            raise InputError("latents hold NaN/Inf values")
        values = getattr(self, f"_{name}")(flat)
        return self.result(name, values, fpr)

    def score_reconstruction(
        self,
        x: np.ndarray,
        x_hat: np.ndarray,
        *,
        scale: np.ndarray | float = 1.0,
        fpr: float | None = None,
    ) -> ScoreResult:
        """The "recon" score: mean squared error per value of (x - x_hat) / scale, where
        `scale` is the package's normalisation scale (a Model passes it), so the error is
        in the units the model was trained in."""
        self._check_name(RECON, self.scores)
        a, b = np.asarray(x, dtype=np.float64), np.asarray(x_hat, dtype=np.float64)
        if a.shape != b.shape or a.ndim < 2:
            raise InputError(f"x and x_hat must have one shape (N, ...), got {a.shape}, {b.shape}")
        return self.result(RECON, recon_error(a / scale, b / scale), fpr)

    def _mahalanobis(self, z: np.ndarray) -> np.ndarray:
        d = z - self._mean
        out: np.ndarray = np.einsum("ni,ij,nj->n", d, self._precision, d)
        return out

    def _gmm(self, z: np.ndarray) -> np.ndarray:
        # log N(z | mu_c, P_c^-1) = log|L_c| - K/2 log 2pi - |(z - mu_c) L_c|^2 / 2
        y = np.einsum("nk,ckj->ncj", z, self._chol) - np.einsum(
            "ck,ckj->cj", self._means, self._chol
        )
        log_prob = self._log_norm - 0.5 * (y**2).sum(axis=2)
        return -_logsumexp(log_prob)

    def _knn(self, z: np.ndarray) -> np.ndarray:
        out = np.empty(len(z))
        k = self._k
        for s in range(0, len(z), _CHUNK):
            q = z[s : s + _CHUNK]
            d2 = (q**2).sum(axis=1)[:, None] + self._bank_sq[None, :] - 2.0 * q @ self._bank.T
            near = np.partition(np.maximum(d2, 0.0), k - 1, axis=1)[:, :k]
            out[s : s + _CHUNK] = np.sqrt(near).mean(axis=1)
        return out


def recon_error(x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    """Mean squared error per sample over all its values (float64)."""
    diff = np.asarray(x, dtype=np.float64) - np.asarray(x_hat, dtype=np.float64)
    out: np.ndarray = (diff.reshape(len(diff), -1) ** 2).mean(axis=1)
    return out


MAX_ANOMALY_BYTES = 64 << 20
"""Largest anomaly.npz read (a full kNN bank of MAX_BANK latents of 64 values is 32 MiB)."""


def load_arrays(blob: bytes, shown: str = ANOMALY_FILE) -> dict[str, np.ndarray]:
    """The arrays of an anomaly.npz (never unpickled: object arrays are refused)."""
    import io
    import zipfile

    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise PackageError(f"cannot read {shown}: {exc}") from None
