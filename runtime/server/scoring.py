"""Anomaly scores on the server, from codes alone: the Score RPC and V2's `<name>.scorer`.

A package trained with `--task anomaly` carries densities of its codes and calibrated
thresholds (manifest section "anomaly", `runtime/anomaly.py`). The server sees only codes,
so it offers the code densities (`Detector.codes_scores`: "gmm", "mahalanobis", "knn"),
never the reconstruction error (that needs the raw samples: `latentwire score` on the edge).

Each (loaded version, score) gets one `Scorer`: a Batcher whose `prepare` is the decoder's
(`Model.prepare_codes`: the same checks, the same float latents the decoder sees) and whose
run is `Detector.score_latents`. Score calls therefore take the path Decode calls take on
both fronts: parse -> route by fingerprint -> job -> batched with concurrent calls for the
same version and score -> finish -> reply. Scorers are built on first use and kept on the
version (`Version.cache`), so a Decode never pays for any of this.

A scorer's graph output is float64 [N, 2] (score, p-value); each request's flags are its
scores against the threshold it asked for (the calibrated one, its own, or the one at a
false-positive rate on the held-out normal scores), so requests with different overrides
still share one batch.

Refusals: a package without anomaly scoring is FAILED_PRECONDITION (PackageError, saying
how to make one); an unknown score name INVALID_ARGUMENT naming the choices; a threshold
that is not finite, an fpr outside (0, 1), or both at once INVALID_ARGUMENT. Samples
scored and flagged are counted per model (`latentwire_scored_samples_total`,
`latentwire_anomalies_total`).
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

import numpy as np

from ..anomaly import Detector
from ..errors import InputError, PackageError
from .batcher import Batcher

if TYPE_CHECKING:
    from .registry import Registry, Version

__all__ = ["Scorer", "has_detector", "no_detector", "scorer_of"]


def detector_of(v: Version) -> Detector | None:
    """The version's fitted code densities, or None for a package without anomaly scoring."""
    return v.model.detector


def has_detector(v: Version) -> bool:
    """Whether `v` can score codes (a package trained with --task anomaly)."""
    d = detector_of(v)
    return d is not None and bool(d.codes_scores)


def no_detector(v: Version) -> PackageError:
    """The refusal for a version that cannot score codes."""
    what = (
        "its package was not trained with --task anomaly"
        if detector_of(v) is None
        else "its package carries no density of the codes (only the reconstruction error, "
        "which needs the samples: score them on the edge with `latentwire score`)"
    )
    return PackageError(
        f"model {v.name!r} version {v.version} has no anomaly scores of codes: {what}. Train "
        "one with `latentwire train --task anomaly ...` (it fits densities of the codes and "
        "calibrates a threshold) and serve that package"
    )


class Scorer:
    """One score of one loaded version, run through its own Batcher."""

    def __init__(self, v: Version, detector: Detector, score: str, registry: Registry) -> None:
        self.version = v
        self.score = score
        self._detector = detector
        self.threshold = detector.threshold_for(score)
        """the package's calibrated threshold of this score"""
        self.graph: Batcher = registry.graph(v, f"scorer-{score}", self._run, v.model.prepare_codes)

    def _run(self, z: np.ndarray) -> np.ndarray:
        result = self._detector.score_latents(z, self.score)
        out = np.empty((len(z), 2), dtype=np.float64)
        out[:, 0] = result.scores
        out[:, 1] = result.p_values
        return out

    def threshold_of(self, threshold: float | None = None, fpr: float | None = None) -> float:
        """The threshold a request asks for: its own `threshold`, the one that flags a share
        `fpr` of the held-out normal scores, or (neither) the calibrated one."""
        if threshold is not None and fpr is not None:
            raise InputError("give a threshold or an fpr, not both")
        if fpr is not None:
            if not 0.0 < fpr < 1.0:  # NaN included
                raise InputError(f"fpr must be a rate between 0 and 1 (exclusive), got {fpr}")
            return self._detector.threshold_for(self.score, fpr)
        if threshold is None:
            return self.threshold
        if not math.isfinite(threshold):
            raise InputError(f"threshold must be a finite number, got {threshold}")
        return threshold

    @staticmethod
    def split(y: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores float64, flags bool = scores > threshold, p-values float64) of a
        request's slice of the graph output."""
        scores = np.ascontiguousarray(y[:, 0])
        return scores, scores > threshold, np.ascontiguousarray(y[:, 1])


_build_lock = threading.Lock()


def scorer_of(registry: Registry, v: Version, score: str) -> Scorer:
    """The Scorer of `score` ("" = the package's default codes score), built on first use.
    Refuses a package without anomaly scoring and a score it does not carry."""
    found = v.cache.get(("score", score))
    if found is not None:
        assert isinstance(found, Scorer)
        return found
    detector = detector_of(v)
    if detector is None or not detector.codes_scores:
        raise no_detector(v)
    name = score or detector.default_codes_score
    if name not in detector.codes_scores:
        raise InputError(
            f"model {v.name!r} has no score {score!r}; its scores from codes are "
            f"{', '.join(detector.codes_scores)} (default {detector.default_codes_score}; "
            "the reconstruction error needs the samples: `latentwire score` on the edge)"
        )
    with _build_lock:  # one Batcher per (version, score), so concurrent calls share it
        built = v.cache.get(("score", name))
        if not isinstance(built, Scorer):
            built = Scorer(v, detector, name, registry)
            v.cache["score", name] = built
        v.cache["score", score] = built
    return built
