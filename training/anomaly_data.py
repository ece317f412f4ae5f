"""Labelled built-in data for anomaly detection, split by a repeatable protocol.

scikit-learn's bundled sets, turned into anomaly tasks:

- ``breast-cancer``: benign is normal, malignant the anomaly;
- ``digits`` and ``wine``: one class is normal (default: the largest; ``digits:3`` or
  ``normal=3`` picks digit 3), every other class is an anomaly.

The data set is first reduced to its normals plus anomalies drawn at ``prevalence``
(ADBench-style downsampling: breast-cancer keeps all 357 benign cases and about 19
malignant ones). Normals and anomalies are split apart (stratified) into a fit part and a
held-out test part of ``test_fraction``. Under the ``clean`` protocol the fit part keeps
its normals only ("learn normal"); under ``unsup`` (ADBench's unsupervised protocol) its
anomalies stay in, unlabelled. The test part always has anomalies at ``prevalence``, at
least one. Features are raw, in the units of the built-in data set (`load_data`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from latentwire.runtime.errors import DataError

LABELLED = ("breast-cancer", "digits", "wine")
"""scikit-learn's bundled sets that carry labels for anomaly tasks."""
PROTOCOLS = ("clean", "unsup")
"""clean: fit on normals only; unsup: fit on normals plus anomalies, labels unseen."""
SPEC_KEYS = ("data", "normal", "protocol", "seed", "test_fraction", "prevalence")


@dataclass(frozen=True)
class AnomalySplit:
    """One labelled anomaly task: what detectors fit on and what they are tested on."""

    name: str
    """e.g. "breast-cancer", "digits:3" (normal class 3)."""
    x_fit: np.ndarray
    """float32 (N, F): what the model and every baseline train on."""
    y_fit: np.ndarray
    """int64 0/1 (N,), never shown to a detector (all 0 under "clean")."""
    x_test: np.ndarray
    """float32 (M, F): held-out normals and held-out anomalies at `prevalence`."""
    y_test: np.ndarray
    """int64 0/1 (M,), 1 = anomaly."""
    spec: dict[str, Any]
    """JSON-able; `split_from_spec(spec)` rebuilds this split exactly."""


def _labelled(data: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Features (as `load_data` gives them), class labels and class names."""
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine

    from .data import load_data

    loaders = {"breast-cancer": load_breast_cancer, "digits": load_digits, "wine": load_wine}
    bunch = loaders[data]()
    names = tuple(str(n) for n in bunch.target_names)
    return load_data(data).x, np.asarray(bunch.target, dtype=np.int64), names


def normal_classes(data: str) -> tuple[int | str, ...]:
    """The values `normal` can take for a labelled set (breast-cancer: only "benign")."""
    base, _, _ = data.partition(":")
    if base == "breast-cancer":
        return ("benign",)
    if base == "digits":
        return tuple(range(10))
    if base == "wine":
        return (0, 1, 2)
    raise DataError(f"unknown labelled dataset {data!r}; choose from {', '.join(LABELLED)}")


def _resolve_normal(data: str, normal: int | str | None, y: np.ndarray) -> int | str:
    choices = normal_classes(data)
    if normal is None:
        return choices[0] if data == "breast-cancer" else int(np.bincount(y).argmax())
    if data == "breast-cancer":
        if str(normal) not in ("benign", "1"):
            raise DataError("breast-cancer: benign is the normal class (malignant the anomaly)")
        return "benign"
    try:
        value = int(normal)
    except ValueError:
        value = -1
    if value not in choices:
        raise DataError(
            f"{data}: normal class must be one of {', '.join(map(str, choices))}, got {normal!r}"
        )
    return value


def _count(n_normals: int, prevalence: float) -> int:
    """Anomalies that make `prevalence` of a set with `n_normals` normals."""
    return round(n_normals * prevalence / (1.0 - prevalence))


def anomaly_split(
    data: str,
    *,
    normal: int | str | None = None,
    protocol: str = "clean",
    seed: int = 0,
    test_fraction: float = 0.3,
    prevalence: float = 0.05,
) -> AnomalySplit:
    """Build a repeatable anomaly task from a labelled built-in set (see the module doc)."""
    base, sep, suffix = data.partition(":")
    if sep and normal is None:
        normal = suffix
    if base not in LABELLED:
        raise DataError(
            f"{data!r} has no anomaly labels built in; labelled sets are {', '.join(LABELLED)} "
            "(for your own data pass --labels)"
        )
    if protocol not in PROTOCOLS:
        raise DataError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction must be between 0 and 1, got {test_fraction}")
    if not 0.0 < prevalence < 0.5:
        raise DataError(f"prevalence must be between 0 and 0.5, got {prevalence}")
    x, y, _ = _labelled(base)
    resolved = _resolve_normal(base, normal, y)
    normal_label = 1 if base == "breast-cancer" else int(resolved)
    is_normal = y == normal_label
    rng = np.random.default_rng(seed)
    normals = rng.permutation(np.flatnonzero(is_normal))
    pool = rng.permutation(np.flatnonzero(~is_normal))
    n_test = max(1, round(len(normals) * test_fraction))
    test_norm, fit_norm = normals[:n_test], normals[n_test:]
    n_test_anom = max(1, _count(len(test_norm), prevalence))
    n_fit_anom = _count(len(fit_norm), prevalence) if protocol == "unsup" else 0
    if n_test_anom + n_fit_anom > len(pool):
        raise DataError(f"{data}: too few anomalies for prevalence {prevalence}")
    test_anom = pool[:n_test_anom]
    fit_anom = pool[n_test_anom : n_test_anom + n_fit_anom]
    # the test part first: both protocols get the same test set for a seed
    test = rng.permutation(np.concatenate([test_norm, test_anom]))
    fit = rng.permutation(np.concatenate([fit_norm, fit_anom]))
    label = (~is_normal).astype(np.int64)
    name = base if base == "breast-cancer" else f"{base}:{resolved}"
    spec: dict[str, Any] = {
        "data": base,
        "normal": resolved,
        "protocol": protocol,
        "seed": int(seed),
        "test_fraction": float(test_fraction),
        "prevalence": float(prevalence),
    }
    return AnomalySplit(name, x[fit], label[fit], x[test], label[test], spec)


def split_from_spec(spec: dict[str, Any]) -> AnomalySplit:
    """Rebuild the split a manifest or report recorded (`AnomalySplit.spec`)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("data"), str):
        raise DataError(f"not an anomaly split spec (needs 'data'): {spec!r}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise DataError(f"anomaly split spec: unknown key(s) {', '.join(unknown)}")
    try:
        return anomaly_split(
            spec["data"],
            normal=spec.get("normal"),
            protocol=str(spec.get("protocol", "clean")),
            seed=int(spec.get("seed", 0)),
            test_fraction=float(spec.get("test_fraction", 0.3)),
            prevalence=float(spec.get("prevalence", 0.05)),
        )
    except (TypeError, ValueError) as exc:
        raise DataError(f"anomaly split spec: {exc}") from None
