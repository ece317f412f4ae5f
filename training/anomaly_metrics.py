"""Anomaly detection metrics of one score on a labelled test set (higher = more anomalous).

- ``roc_auc`` and ``ap`` (average precision, the area under the precision-recall curve
  as scikit-learn computes it): threshold-free; AP is the headline at low prevalence,
  where ROC-AUC looks good for almost any detector;
- ``precision_at_n``: precision among the n highest scores, n = the number of anomalies;
- ``recall_at_fpr``: the share of anomalies caught at the best threshold whose false
  positive rate on the test normals stays within 1% / 5%;
- at a stored threshold (a package's calibrated one): the realised false positive rate
  and recall, ``flags = score > threshold``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latentwire.runtime.errors import DataError

FPRS = (0.01, 0.05)


def check_labels(y: np.ndarray, n: int) -> np.ndarray:
    """0/1 labels (1 = anomaly) for n samples, with both classes present."""
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or len(arr) != n:
        raise DataError(f"labels: expected {n} labels (one per test sample), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf" or not np.all(np.isin(arr, (0, 1))):
        raise DataError("labels must be 0 (normal) or 1 (anomaly)")
    labels = arr.astype(np.int64)
    if labels.min() == labels.max():
        raise DataError("labels: the test set needs both normal (0) and anomalous (1) samples")
    return labels


def score_metrics(
    y: np.ndarray, scores: np.ndarray, threshold: float | None = None
) -> dict[str, Any]:
    """Every metric of one score (see the module doc) as JSON-able numbers."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    s = np.asarray(scores, dtype=np.float64)
    n_anom = int(y.sum())
    fpr, tpr, _ = roc_curve(y, s)
    top = np.argsort(-s, kind="stable")[:n_anom]
    out: dict[str, Any] = {
        "roc_auc": float(roc_auc_score(y, s)),
        "ap": float(average_precision_score(y, s)),
        "precision_at_n": float(y[top].mean()),
        "recall_at_fpr": {f"{a:g}": float(tpr[fpr <= a + 1e-12].max()) for a in FPRS},
    }
    if threshold is not None:
        flags = s > threshold
        out["threshold"] = {
            "value": float(threshold),
            "fpr": float(flags[y == 0].mean()),
            "recall": float(flags[y == 1].mean()),
        }
    return out


def curves(y: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """ROC (fpr, tpr) and precision-recall (recall, precision) points for plotting."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(y, scores)
    precision, recall, _ = precision_recall_curve(y, scores)
    return {"fpr": fpr, "tpr": tpr, "recall": recall, "precision": precision}
