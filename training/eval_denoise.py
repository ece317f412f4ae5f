"""`latentwire evaluate --task denoise` (implied by `--noise`): a denoising report.

Protocol (PSNR on the data's range, i.e. on [0, 1] for digits and 8-bit images):
- the test samples are those of `latentwire evaluate`'s rate-distortion report (the
  model's validation split for array data, whole held-out images for conv models);
- noise N(0, sigma^2) is added in the first model's units (after its normalisation, as
  `train --noise` does) with a fixed seed, and clipped to [0, 1] when the clean data lies
  in [0, 1] (`--no-clip` keeps it);
- each model denoises through its package as deployed (encode to codes, decode);
- baselines: the noisy input itself; for pictures, scikit-image's non-local means,
  wavelet (BayesShrink) and total-variation denoisers, given the true sigma, with their
  strength tuned per sigma on noisy *training* samples (or crops of training images); for
  array data the PCA-Wiener filter, the linear MMSE denoiser in the PCA basis of the clean
  training split;
- each model's clean ceiling: its PSNR on the clean test samples. A denoiser cannot do
  better than it, so the report warns at every sigma where it lies below the noisy input.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from latentwire.runtime.argtypes import positive
from latentwire.runtime.errors import DataError

log = logging.getLogger("latentwire.training")


def add_arguments(group: Any) -> None:
    """Flags of this task beyond --task, --labels and --noise."""
    group.add_argument(
        "--no-clip",
        action="store_true",
        help="denoise: keep noisy values outside [0, 1] (by default the noisy test data is "
        "clipped to [0, 1] when the clean data lies there, as a saturating sensor does; "
        "clipped noise is no longer zero-mean, which hurts the classic denoisers)",
    )
    group.add_argument(
        "--tune-on",
        type=positive(int),
        metavar="N",
        help="denoise: how many training samples (array data) or 96x96 crops of training "
        "images (image models) the classic denoisers' strengths are tuned on, per sigma "
        "(default: 200 samples, 8 crops)",
    )
    group.add_argument(
        "--max-samples",
        type=positive(int),
        metavar="N",
        help="denoise: use only the first N held-out samples of array data (a quicker, "
        "noisier measurement; whole test images are always used whole) (default: all)",
    )
    group.add_argument(
        "--noise-seed",
        type=int,
        default=0,
        metavar="S",
        help="denoise: seed of the noise added to the test and tuning data (default: 0)",
    )


def run(args: argparse.Namespace) -> int:
    """The extras were checked by `run_evaluate` (training/cli.py) before dispatch."""
    from .denoise_report import format_table, write_report
    from .noise import parse_sigmas

    if not args.noise:
        raise DataError(
            "evaluate --task denoise needs --noise gaussian:SIGMA[,SIGMA...], "
            "e.g. --noise gaussian:0.1,0.3,0.5"
        )
    sigmas, clip = parse_sigmas(args.noise)
    result = evaluate_denoising(
        [Path(m) for m in args.model],
        args.data,
        sigmas,
        clip=clip and not args.no_clip,
        tune_on=args.tune_on,
        seed=args.noise_seed,
        max_samples=args.max_samples,
    )
    paths = write_report(Path(args.report), result)
    if args.json:
        print(paths["json"].read_text(), end="")
        return 0
    print(format_table(result))
    print(f"report: {', '.join(str(p) for p in paths.values())}")
    return 0


def evaluate_denoising(
    models: list[Path],
    data: str,
    sigmas: list[float],
    *,
    clip: bool = True,
    tune_on: int | None = None,
    seed: int = 0,
    max_samples: int | None = None,
) -> dict[str, Any]:
    """Measure every model and the baselines at every sigma; returns the report's document
    (see `denoise_report`), with the arrays of the picture panel under "_panel"."""
    from latentwire.runtime.manifest import Manifest
    from latentwire.runtime.model import Model

    from .denoise_methods import (
        Corruption,
        classic_rows,
        has_pywavelets,
        model_rows,
        tuning_set,
    )
    from .evaluate import load_test_set

    first = Manifest.load(models[0])
    ts = load_test_set(data, first.raw, models[0])
    if max_samples and len(ts.x) == 1 and len(ts.x[0]) > max_samples:
        ts = dataclasses.replace(ts, x=[ts.x[0][:max_samples]])
    corr = Corruption.of(first, ts, clip=clip, seed=seed)
    tune = tuning_set(ts, first.raw, models[0], corr, tune_on)
    log.info(
        "denoise: %d test sample(s) of %s; noise %s; classic denoisers tuned on %d %s",
        sum(len(x) for x in ts.x),
        ts.name,
        corr.describe(),
        tune.count,
        "crops" if ts.is_image and ts.image_shape is None else "training samples",
    )
    rows: list[dict[str, Any]] = []
    ceilings: dict[str, float] = {}
    cache: dict[str, float] = {}
    loaded = [(path, Model(path, providers="cpu")) for path in models]
    panel: dict[str, Any] = {"clean": ts.x, "shape": ts.image_shape, "by_sigma": {}}
    for i, sigma in enumerate(sigmas):
        noisy = corr.apply(ts.x, sigma, stream=i)
        base, outs = classic_rows(ts, tune, corr, noisy, sigma, stream=i)
        rows += base
        m_rows, m_outs, m_ceilings = model_rows(loaded, ts, noisy, sigma, cache)
        rows += m_rows
        ceilings.update(m_ceilings)
        panel["by_sigma"][sigma] = {"noisy": noisy, **outs, **m_outs}
        log.info(
            "sigma %g: %s",
            sigma,
            ", ".join(f"{r['label']} {r['psnr_db']:.2f} dB" for r in base + m_rows),
        )
    warnings = _ceiling_warnings(rows, ceilings)
    if (ts.is_image or ts.image_shape is not None) and not has_pywavelets():
        warnings.append(
            "the wavelet baseline is left out: it needs PyWavelets (pip install PyWavelets)"
        )
    for w in warnings:
        log.warning("%s", w)
    infos = [_model_info(m) for m in models]
    return {
        "data": {
            "name": ts.name,
            "source": ts.source,
            "n_test": sum(len(x) for x in ts.x),
            "is_image": ts.is_image or ts.image_shape is not None,
            "data_range": ts.data_range,
            "test_images": [list(x.shape[1:]) for x in ts.x] if ts.image_shape is None else None,
            "n_tune": tune.count,
        },
        "noise": {
            "kind": "gaussian",
            "sigmas": sigmas,
            "units": "model units (after the first model's normalisation): a fraction of "
            "the full range for [0, 1] data",
            "clipped": corr.clip,
            "seed": seed,
        },
        "models": infos,
        "ceilings_db": ceilings,
        "rows": rows,
        "summary": _summary(rows, sigmas, ceilings),
        "warnings": warnings,
        "_panel": panel,
    }


def _ceiling_warnings(rows: list[dict[str, Any]], ceilings: dict[str, float]) -> list[str]:
    out = []
    for label, ceiling in ceilings.items():
        below = [r["sigma"] for r in rows if r["method"] == "noisy" and r["psnr_db"] > ceiling]
        if below:
            out.append(
                f"model {label} reconstructs clean test data at {ceiling:.2f} dB, below the "
                f"noisy input's PSNR at sigma {', '.join(f'{s:g}' for s in below)}: its "
                "bottleneck caps it, so it makes such inputs worse (a compression model is a "
                "poor denoiser at low noise; train a denoiser with --noise and a wider latent)"
            )
    return out


def _summary(
    rows: list[dict[str, Any]], sigmas: list[float], ceilings: dict[str, float]
) -> dict[str, Any]:
    """Per sigma and model: gain over the noisy input and margins over each baseline."""
    out: dict[str, Any] = {}
    for s in sigmas:
        at = [r for r in rows if r["sigma"] == s]
        noisy = next(r["psnr_db"] for r in at if r["method"] == "noisy")
        baselines = {r["method"]: r["psnr_db"] for r in at if r["kind"] == "baseline"}
        per_model = {}
        for r in (r for r in at if r["kind"] == "model"):
            per_model[r["label"]] = {
                "psnr_db": round(r["psnr_db"], 3),
                "gain_db": round(r["psnr_db"] - noisy, 3),
                "vs_db": {
                    m: round(r["psnr_db"] - v, 3) for m, v in baselines.items() if m != "noisy"
                },
                "below_noisy": r["psnr_db"] < noisy,
                "ceiling_db": ceilings.get(r["label"]),
            }
        out[f"{s:g}"] = {"noisy_psnr_db": round(noisy, 3), "models": per_model}
    return out


def _model_info(path: Path) -> dict[str, Any]:
    from latentwire.runtime.manifest import Manifest

    raw = Manifest.load(path).raw
    training = raw.get("training") or {}
    return {
        "path": str(path),
        "name": raw.get("name"),
        "fingerprint": raw.get("fingerprint"),
        "model": raw.get("model"),
        "codes": (raw.get("codes") or {}).get("format"),
        "trained_noise": training.get("noise"),
        "training": training,
    }
