"""The denoisers `evaluate --task denoise` compares: the packages themselves (encode to
codes, decode, as deployed) and the baselines (scikit-image's non-local means, wavelet and
TV denoisers for pictures, the PCA-Wiener filter for array data), with the noise and the
tuning set they are measured with. See `eval_denoise` for the protocol."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentwire.runtime.errors import DataError
from latentwire.runtime.manifest import Manifest, Normalization
from latentwire.runtime.model import Model

from .baselines import psnr, ssim
from .evaluate import TestSet

CROP = 96
"""Side of the training-image crops the classic denoisers are tuned on."""
DEFAULT_TUNE = {"samples": 200, "crops": 8}
GRIDS: dict[str, tuple[float, ...]] = {
    "nl-means": (0.4, 0.6, 0.8, 1.0, 1.2),  # h = k * sigma
    "wavelet": (0.5, 0.75, 1.0, 1.5),  # sigma given = k * sigma (BayesShrink, soft)
    "tv": (0.25, 0.5, 1.0, 1.5, 2.0),  # weight = k * sigma (Chambolle)
    "pca-wiener": (0.5, 0.75, 1.0, 1.25),  # noise variance = (k * sigma)^2
}
"""Each baseline's one tuned parameter, as multiples k of the true sigma."""


@dataclass(frozen=True)
class Corruption:
    """Gaussian noise added in a model's units, clipped to [0, 1] or not."""

    norm: Normalization
    clip: bool
    """Effective: requested and the clean test data lies in [0, 1] in model units."""
    seed: int

    @classmethod
    def of(cls, manifest: Manifest, ts: TestSet, *, clip: bool, seed: int) -> Corruption:
        norm = manifest.normalization
        in_unit = all(
            float(z.min()) >= 0.0 and float(z.max()) <= 1.0 for z in (norm.forward(x) for x in ts.x)
        )
        return cls(norm, clip and in_unit, seed)

    def describe(self) -> str:
        return "gaussian, clipped to [0, 1]" if self.clip else "gaussian, not clipped"

    def apply(self, xs: list[np.ndarray], sigma: float, *, stream: int) -> list[np.ndarray]:
        """Noisy copies of `xs` (user units in and out), repeatable for (seed, stream)."""
        rng = np.random.default_rng([self.seed, stream])
        out = []
        for x in xs:
            z = np.asarray(self.norm.forward(x), dtype=np.float64)
            z = z + sigma * rng.standard_normal(z.shape)
            if self.clip:
                z = np.clip(z, 0.0, 1.0)
            out.append(np.asarray(self.norm.inverse(z), dtype=np.float32))
        return out


@dataclass(frozen=True)
class TuningSet:
    clean: list[np.ndarray]

    @property
    def count(self) -> int:
        """Samples or crops."""
        return sum(len(x) for x in self.clean)

    """Arrays like the test set's: one (N, ...) array, or (1, C, H, W) crops."""


def tuning_set(
    ts: TestSet, manifest: dict[str, Any], package: Path, corr: Corruption, n: int | None
) -> TuningSet:
    """Training samples (array data) or CROP x CROP crops of the training images (image
    models) that the baselines are tuned on; never test data."""
    if not (ts.is_image and ts.image_shape is None):
        count = n or DEFAULT_TUNE["samples"]
        return TuningSet([ts.x_train[:count]])
    from .data import load_whole_images, resolve_source

    trained_on = resolve_source(str((manifest.get("training") or {}).get("data") or ""), package)
    try:
        images = load_whole_images(trained_on)
    except DataError:
        images = []
    if not images:
        raise DataError(
            f"the classic denoisers are tuned on the model's training images "
            f"({trained_on or 'unknown'}), which cannot be loaded as whole images"
        )
    rng = np.random.default_rng([corr.seed, 7])
    crops = []
    for k in range(n or DEFAULT_TUNE["crops"]):
        img = images[k % len(images)]
        h, w = img.shape[2:]
        side = min(CROP, h, w)
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crops.append(img[:, :, top : top + side, left : left + side])
    return TuningSet(crops)


# -- pictures -------------------------------------------------------------------------
def _pictures(ts: TestSet, xs: list[np.ndarray], norm: Normalization) -> list[np.ndarray]:
    """(H, W, C) float64 pictures in model units of every sample in xs."""
    out = []
    for x in xs:
        z = np.asarray(norm.forward(x), dtype=np.float64)
        z = z.reshape(len(z), *ts.image_shape) if ts.image_shape is not None else z
        out += [p.transpose(1, 2, 0) for p in z]
    return out


def _unpictures(
    ts: TestSet, pics: list[np.ndarray], like: list[np.ndarray], norm: Normalization
) -> list[np.ndarray]:
    out, i = [], 0
    for x in like:
        part = np.stack([p.transpose(2, 0, 1) for p in pics[i : i + len(x)]])
        i += len(x)
        out.append(np.asarray(norm.inverse(part.reshape(x.shape)), dtype=np.float32))
    return out


Filter = Callable[[np.ndarray, float, float], np.ndarray]
"""(picture (H, W, C) in model units, sigma, k) -> denoised picture."""


def _nl_means(small: bool) -> Filter:
    from skimage.restoration import denoise_nl_means

    size, dist = (3, 2) if small else (5, 6)

    def run(p: np.ndarray, sigma: float, k: float) -> np.ndarray:
        out: np.ndarray = denoise_nl_means(
            p,
            h=k * sigma,
            sigma=sigma,
            patch_size=size,
            patch_distance=dist,
            fast_mode=True,
            channel_axis=-1,
        )
        return out

    return run


def _wavelet(p: np.ndarray, sigma: float, k: float) -> np.ndarray:
    from skimage.restoration import denoise_wavelet

    out: np.ndarray = denoise_wavelet(
        p,
        sigma=k * sigma,
        method="BayesShrink",
        mode="soft",
        rescale_sigma=True,
        channel_axis=-1,
        convert2ycbcr=p.shape[-1] == 3,
    )
    return out


def has_pywavelets() -> bool:
    """scikit-image's wavelet denoiser needs PyWavelets, which is optional: without it the
    report leaves the wavelet baseline out (and says so)."""
    import importlib.util

    return importlib.util.find_spec("pywt") is not None


def _tv(p: np.ndarray, sigma: float, k: float) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    out: np.ndarray = denoise_tv_chambolle(  # type: ignore[no-untyped-call]
        p, weight=k * sigma, channel_axis=-1
    )
    return out


def _score(
    ts: TestSet, clean: list[np.ndarray], out: list[np.ndarray]
) -> tuple[float, float | None]:
    """(PSNR, SSIM or None) of `out` against `clean`, user units, one MSE over all."""
    a = np.concatenate([x.reshape(-1) for x in clean])
    b = np.concatenate([x.reshape(-1) for x in out])
    value = psnr(a, b, ts.data_range)
    if ts.image_shape is not None:
        shape = ts.image_shape
        return value, ssim(clean[0].reshape(-1, *shape), out[0].reshape(-1, *shape), ts.data_range)
    if ts.is_image:
        return value, float(
            np.mean([ssim(x, y, ts.data_range) for x, y in zip(clean, out, strict=True)])
        )
    return value, None


def _row(
    ts: TestSet,
    method: str,
    kind: str,
    sigma: float,
    clean: list[np.ndarray],
    out: list[np.ndarray],
    **extra: Any,
) -> dict[str, Any]:
    value, s = _score(ts, clean, out)
    return {
        "sigma": sigma,
        "method": method,
        "kind": kind,
        "label": method,
        "psnr_db": round(value, 4),
        "ssim": None if s is None else round(s, 4),
        **extra,
    }


class _Wiener:
    """Linear MMSE in the PCA basis of clean training samples (model units)."""

    def __init__(self, x_train: np.ndarray, norm: Normalization) -> None:
        z = np.asarray(norm.forward(x_train), dtype=np.float64).reshape(len(x_train), -1)
        self.norm = norm
        self.mean = z.mean(axis=0)
        lam, self.basis = np.linalg.eigh(np.cov(z - self.mean, rowvar=False))
        self.lam = np.clip(lam, 0.0, None)

    def __call__(self, xs: list[np.ndarray], sigma: float, k: float) -> list[np.ndarray]:
        gain = self.lam / (self.lam + (k * sigma) ** 2)
        out = []
        for x in xs:
            y = np.asarray(self.norm.forward(x), dtype=np.float64).reshape(len(x), -1) - self.mean
            z = ((y @ self.basis) * gain) @ self.basis.T + self.mean
            out.append(np.asarray(self.norm.inverse(z.reshape(x.shape)), dtype=np.float32))
        return out


def _per_picture(
    ts: TestSet, norm: Normalization, fn: Filter, sigma: float
) -> Callable[[list[np.ndarray], float], list[np.ndarray]]:
    """`fn` applied to every picture of a list of sample arrays, with strength k."""

    def apply(xs: list[np.ndarray], k: float) -> list[np.ndarray]:
        pics = [fn(p, sigma, k).reshape(p.shape) for p in _pictures(ts, xs, norm)]
        return _unpictures(ts, pics, xs, norm)

    return apply


def classic_rows(
    ts: TestSet,
    tune: TuningSet,
    corr: Corruption,
    noisy: list[np.ndarray],
    sigma: float,
    *,
    stream: int,
) -> tuple[list[dict[str, Any]], dict[str, list[np.ndarray]]]:
    """The noisy input's row and each baseline's, tuned on `tune` at this sigma; and the
    baselines' outputs (for the picture panel)."""
    rows = [_row(ts, "noisy", "baseline", sigma, ts.x, noisy)]
    outs: dict[str, list[np.ndarray]] = {}
    tune_noisy = corr.apply(tune.clean, sigma, stream=1000 + stream)
    methods: dict[str, Callable[[list[np.ndarray], float], list[np.ndarray]]] = {}
    if ts.is_image or ts.image_shape is not None:
        small = ts.image_shape is not None and min(ts.image_shape[1:]) < 16
        filters: dict[str, Filter] = {"nl-means": _nl_means(small), "wavelet": _wavelet, "tv": _tv}
        if not has_pywavelets():
            del filters["wavelet"]
        for name, fn in filters.items():
            methods[name] = _per_picture(ts, corr.norm, fn, sigma)
    if ts.image_shape is not None or not ts.is_image:  # arrays: one (N, D) training split
        wiener = _Wiener(ts.x_train, corr.norm)
        methods["pca-wiener"] = lambda xs, k: wiener(xs, sigma, k)
    tune_scores = _tune_scores(ts, tune, tune_noisy, methods)
    for name, apply in methods.items():
        best_k = max(tune_scores[name], key=lambda k: tune_scores[name][k])
        out = apply(noisy, best_k)
        outs[name] = out
        rows.append(
            _row(
                ts,
                name,
                "baseline",
                sigma,
                ts.x,
                out,
                params={"k": best_k, "tuned_psnr_db": round(tune_scores[name][best_k], 3)},
            )
        )
    return rows, outs


def _tune_scores(
    ts: TestSet,
    tune: TuningSet,
    tune_noisy: list[np.ndarray],
    methods: dict[str, Callable[[list[np.ndarray], float], list[np.ndarray]]],
) -> dict[str, dict[float, float]]:
    return {
        name: {k: _score(ts, tune.clean, apply(tune_noisy, k))[0] for k in GRIDS[name]}
        for name, apply in methods.items()
    }


def _through(model: Model, xs: list[np.ndarray]) -> list[np.ndarray]:
    """Encode to the package's codes and decode, one array (or image) at a time."""
    return [model.decode_codes(list(model.encode_codes(x))) for x in xs]


def model_rows(
    models: list[tuple[Path, Model]],
    ts: TestSet,
    noisy: list[np.ndarray],
    sigma: float,
    ceilings_cache: dict[str, float],
) -> tuple[list[dict[str, Any]], dict[str, list[np.ndarray]], dict[str, float]]:
    """Each model's row at this sigma, its outputs, and its clean ceiling (PSNR on the
    clean test samples, computed once per path into `ceilings_cache`)."""
    rows, outs, ceilings = [], {}, {}
    for path, model in models:
        label = path.name if path.name != model.name else model.name
        if str(path) not in ceilings_cache:
            ceilings_cache[str(path)] = _score(ts, ts.x, _through(model, ts.x))[0]
        ceilings[label] = round(ceilings_cache[str(path)], 4)
        out = _through(model, noisy)
        outs[label] = out
        rows.append(
            {
                **_row(ts, "model", "model", sigma, ts.x, out),
                "label": label,
                "path": str(path),
                "ceiling_db": ceilings[label],
            }
        )
    return rows, outs, ceilings
