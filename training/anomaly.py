"""Anomaly detection at training time: the data, the fitted code densities, the density
chosen without labels, calibrated thresholds and the robust second pass.

`latentwire train --task anomaly` trains the autoencoder on normal data (every row of a
user's array is taken as normal; built-in labelled sets are split by
`anomaly_data.anomaly_split`), then `fit_detector` fits, on the training split's codes
*as the package's code format gives them to the decoder* (int8 dequantised, ...):

- Mahalanobis distance with a Ledoit-Wolf shrunk covariance;
- Gaussian mixtures with full covariances, one per component count in
  ANOMALY_DEFAULTS["gmm_components"], keeping the count with the best mean log-likelihood
  on the validation split;
- kNN: mean distance to the `knn_k` nearest of (at most `knn_bank`) training codes;

and the default code score is chosen **without labels**: the GMM when its held-out mean
log-likelihood is at least the single Gaussian's (Ledoit-Wolf, the Mahalanobis model),
else Mahalanobis. kNN is never the default (no likelihood to compare; it came second to
the GMM in the measurements of ../shared/research/applications.md §1.3).

Thresholds are quantiles of the scores of the **validation split** (held out from training;
training scores are optimistically low): the (1 - fpr) quantile for a target false-positive
rate, or the (1 - contamination) quantile when the data holds anomalies at that rate (PyOD's
rule, on held-out rather than training scores). The validation scores are stored, so the
runtime reports p-values and re-thresholds at another rate without retraining.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from latentwire.runtime.anomaly import CODE_SCORES, RECON, Detector, threshold_at
from latentwire.runtime.errors import DataError

from .data import Dataset, load_data

log = logging.getLogger("latentwire.training")

ANOMALY_DEFAULTS: dict[str, Any] = {
    "hidden": (128, 64),  # dense hidden widths of anomaly models (the research's AE_K)
    "latent_dim": 8,
    "epochs": 150,
    "patience": 30,
    "gmm_components": (1, 2, 4, 8),  # tried; the best held-out likelihood is kept
    "gmm_min_samples_per_parameter": 2.0,  # a GMM is tried only with this many codes/param
    "knn_k": 5,
    "knn_bank": 4096,  # most training codes kept for kNN (a seeded subsample beyond)
    "fpr": 0.01,  # target false-positive rate without --fpr or --contamination
    "robust_drop": 0.05,  # --robust without --contamination: share dropped for pass two
    "calibration_folds": 5,  # code scores also calibrate on out-of-fold training codes; 0 = off
    "normalize": "minmax",  # what --normalize auto means for tabular data (auto: standard)
    "int8_headroom": 4.0,  # int8 range = this many times the training codes' range
}
"""Tunable defaults of the anomaly task (the anomaly benchmark changes them here only)."""

POOLED_SCORES = ("gmm", "mahalanobis")
"""Code scores whose thresholds also use out-of-fold training codes. Not kNN: a fold's bank
holds fewer codes, so its distances run longer (measured: 2.9-3.5% realised at a 5% target
on synthetic data, against 4.5-6.0% from the validation split alone)."""

TASKS = ("reconstruct", "anomaly")


def anomaly_data(
    spec: str,
    *,
    normal: int | str | None = None,
    protocol: str = "clean",
    seed: int = 0,
    key: str | None = None,
) -> tuple[Dataset, dict[str, Any] | None]:
    """What `train --task anomaly` trains on, and the labelled split's spec (None for the
    user's own data, where every row is taken as normal)."""
    from .anomaly_data import LABELLED, anomaly_split

    base = spec.partition(":")[0]
    if base not in LABELLED:
        if normal is not None or protocol != "clean":
            raise DataError(
                f"--normal and --protocol pick a class of a labelled built-in set "
                f"({', '.join(LABELLED)}); {spec} is taken as normal data, every row of it"
            )
        return load_data(spec, key=key), None
    split = anomaly_split(spec, normal=normal, protocol=protocol, seed=seed)
    own = load_data(base)
    name = split.name.replace(":", "-")
    data = Dataset(split.x_fit, name, base, False, own.default_normalization)
    log.info(
        "anomaly data %s (%s protocol): %d samples to fit on, %d labelled test samples held "
        "out (evaluate --task anomaly rebuilds them from the manifest)",
        split.name,
        protocol,
        len(split.x_fit),
        len(split.x_test),
    )
    return data, split.spec


def _gaussian_loglik(z: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> float:
    """Mean log-likelihood of `z` under N(mean, cov)."""
    sign, logdet = np.linalg.slogdet(cov)
    if sign <= 0:
        return -math.inf
    d = z - mean
    m2 = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
    return float(np.mean(-0.5 * (m2 + logdet + z.shape[1] * math.log(2 * math.pi))))


def fit_densities(
    z_fit: np.ndarray, z_val: np.ndarray, *, seed: int, defaults: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Fit the code densities on `z_fit` and choose the default on `z_val` (no labels);
    returns the manifest section's fitting notes and the npz arrays."""
    from sklearn.covariance import LedoitWolf
    from sklearn.mixture import GaussianMixture

    cfg = {**ANOMALY_DEFAULTS, **(defaults or {})}
    z_fit = np.asarray(z_fit, dtype=np.float64).reshape(len(z_fit), -1)
    z_val = np.asarray(z_val, dtype=np.float64).reshape(len(z_val), -1)
    n, k = z_fit.shape
    if n < 2 * k + 2:
        raise DataError(
            f"{n} training samples are too few to fit densities on {k} latent values "
            f"(at least {2 * k + 2})"
        )
    arrays: dict[str, np.ndarray] = {}
    lw = LedoitWolf().fit(z_fit)
    arrays["mahalanobis_mean"] = lw.location_
    arrays["mahalanobis_precision"] = lw.precision_
    gaussian_ll = _gaussian_loglik(z_val, lw.location_, lw.covariance_)

    reg = 1e-6 * max(float(np.mean(np.var(z_fit, axis=0))), 1e-12)
    per_component = k + k * (k + 1) / 2 + 1
    tried: dict[str, float] = {}
    best: Any = None
    for c in cfg["gmm_components"]:
        if c > 1 and n < cfg["gmm_min_samples_per_parameter"] * c * per_component:
            continue
        gm = GaussianMixture(
            int(c), covariance_type="full", reg_covar=reg, n_init=2, random_state=seed
        )
        gm.fit(z_fit)
        ll = float(gm.score(z_val))
        tried[str(c)] = round(ll, 6)
        if best is None or ll > best[0]:
            best = (ll, gm)
    gmm_ll, gm = best
    arrays["gmm_weights"] = gm.weights_
    arrays["gmm_means"] = gm.means_
    arrays["gmm_precisions_cholesky"] = gm.precisions_cholesky_

    bank = z_fit
    if len(bank) > cfg["knn_bank"]:
        pick = np.random.default_rng(seed).choice(len(bank), cfg["knn_bank"], replace=False)
        bank = bank[np.sort(pick)]
    arrays["knn_bank"] = bank.astype(np.float32)
    knn_k = int(min(cfg["knn_k"], len(bank)))

    default = "gmm" if gmm_ll >= gaussian_ll else "mahalanobis"
    notes = {
        "codes_scores": list(CODE_SCORES),
        "default_codes_score": default,
        "selection": {
            "rule": "held-out likelihood: gmm when its mean log-likelihood on the validation "
            "split is at least the Ledoit-Wolf Gaussian's (the Mahalanobis model), else "
            "mahalanobis; no labels used",
            "heldout_loglik": {"gmm": round(gmm_ll, 6), "gaussian": round(gaussian_ll, 6)},
            "gmm_components_loglik": tried,
        },
        "gmm": {"components": int(gm.n_components), "covariance": "full", "reg_covar": reg},
        "mahalanobis": {"covariance": "ledoit-wolf", "shrinkage": round(float(lw.shrinkage_), 6)},
        "knn_k": knn_k,
        "knn": {"bank": len(bank), "of": n},
    }
    return notes, arrays


def calibrate_detector(
    notes: dict[str, Any],
    arrays: dict[str, np.ndarray],
    z_val: np.ndarray,
    recon_val: np.ndarray | None,
    *,
    fpr: float | None,
    contamination: float | None,
    z_fit: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Held-out scores of every score on the validation split (computed by the runtime's
    own Detector, so the package scores exactly as calibrated) and their thresholds;
    returns the manifest's "anomaly" section and the npz arrays.

    With `z_fit` (the training codes the densities were fitted on), the code scores'
    held-out scores also include out-of-fold scores of the training codes (each fold
    scored by densities fitted on the other folds, ANOMALY_DEFAULTS["calibration_folds"]):
    several times more held-out scores than a small validation split gives, which steadies
    the tail a 1% threshold sits in. (The reconstruction error has no such scores: the
    autoencoder has seen every training sample.)"""
    if fpr is not None and contamination is not None:
        raise DataError("give --fpr or --contamination, not both")
    target, rate = (
        ("contamination", contamination)
        if contamination is not None
        else (
            "fpr",
            fpr if fpr is not None else ANOMALY_DEFAULTS["fpr"],
        )
    )
    if not 0.0 < rate < 0.5:
        raise DataError(f"--{target} must be between 0 and 0.5, got {rate}")
    scores = ([RECON] if recon_val is not None else []) + list(CODE_SCORES)
    placeholder = {s: 0.0 for s in scores}
    heldout = {f"heldout_{s}": np.zeros(1) for s in scores}
    section = {**notes, "scores": scores, "thresholds": placeholder}
    det = Detector.from_package(section, {**arrays, **heldout})
    values = {s: det.score_latents(z_val, s).scores for s in CODE_SCORES}
    folds = int(ANOMALY_DEFAULTS["calibration_folds"])
    if z_fit is not None and folds >= 2:
        try:
            oof = out_of_fold_scores(notes, z_fit, folds=folds, seed=seed)
        except DataError:  # folds too small to fit on: the validation split alone
            oof = None
        if oof is not None:
            for s in POOLED_SCORES:
                values[s] = np.concatenate([values[s], oof[s]])
    if recon_val is not None:
        values[RECON] = np.asarray(recon_val, dtype=np.float64)
    thresholds = {s: threshold_at(v, rate) for s, v in values.items()}
    realised = {s: round(float((values[s] > thresholds[s]).mean()), 6) for s in scores}
    section = {
        **section,
        "default_score": RECON if recon_val is not None else notes["default_codes_score"],
        "thresholds": thresholds,
        "calibration": {
            "target": target,
            "rate": rate,
            "split": "validation",
            "n": len(z_val),
            "n_codes": len(values[POOLED_SCORES[0]]),
            "n_heldout": {s: len(v) for s, v in values.items()},
            "codes_heldout": f"gmm, mahalanobis: validation + {folds}-fold out-of-fold "
            "training codes; knn: validation"
            if len(values[POOLED_SCORES[0]]) > len(z_val)
            else "validation",
            "realised_on_split": realised,
            "note": "with n held-out samples a threshold at rate r rests on about n*r of "
            "them; hundreds of validation samples make a 1% rate reliable",
        },
    }
    arrays = {**arrays, **{f"heldout_{s}": np.sort(v) for s, v in values.items()}}
    return section, arrays


def out_of_fold_scores(
    notes: dict[str, Any], z_fit: np.ndarray, *, folds: int, seed: int
) -> dict[str, np.ndarray]:
    """Code scores of every training code from densities fitted without its fold (the
    GMM keeps the component count chosen on all of them)."""
    z_fit = np.asarray(z_fit, dtype=np.float64).reshape(len(z_fit), -1)
    order = np.random.default_rng(seed).permutation(len(z_fit))
    parts = np.array_split(order, folds)
    fixed = {
        "gmm_components": (notes["gmm"]["components"],),
        "gmm_min_samples_per_parameter": 0.0,
        "knn_k": notes["knn_k"],
    }
    out: dict[str, list[np.ndarray]] = {s: [] for s in CODE_SCORES}
    for i, held in enumerate(parts):
        rest = np.concatenate([p for j, p in enumerate(parts) if j != i])
        fold_notes, fold_arrays = fit_densities(z_fit[rest], z_fit[held], seed=seed, defaults=fixed)
        section = {
            **fold_notes,
            "scores": list(CODE_SCORES),
            "thresholds": {s: 0.0 for s in CODE_SCORES},
        }
        heldout = {f"heldout_{s}": np.zeros(1) for s in CODE_SCORES}
        det = Detector.from_package(section, {**fold_arrays, **heldout})
        for s in CODE_SCORES:
            out[s].append(det.score_latents(z_fit[held], s).scores)
    return {s: np.concatenate(v) for s, v in out.items()}


def robust_keep(train_scores: np.ndarray, rate: float) -> np.ndarray:
    """Indices of the training samples a robust second pass keeps: all but the share
    `rate` with the highest first-pass reconstruction error."""
    if not 0.0 < rate < 0.5:
        raise DataError(f"the robust pass drops a share in (0, 0.5) of the data, got {rate}")
    n_drop = round(len(train_scores) * rate)
    order = np.argsort(train_scores, kind="stable")
    return np.sort(order[: len(train_scores) - n_drop])
