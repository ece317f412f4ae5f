"""Data -> trained model -> model package, as `latentwire train` and `export` run it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentwire.runtime.anomaly import recon_error
from latentwire.runtime.errors import DataError
from latentwire.runtime.formats import FORMATS, CodeFormat
from latentwire.runtime.manifest import MANIFEST_FILE, Normalization
from latentwire.runtime.model import Model

from . import distributed
from .anomaly import ANOMALY_DEFAULTS, calibrate_detector, fit_densities, robust_keep
from .baselines import psnr
from .data import Dataset, load_data, resolve_source, split
from .export import ExportError, check_destination, export_package
from .models import Autoencoder, ModelConfig, latent_shape
from .trainer import (
    TrainConfig,
    TrainResult,
    load_checkpoint,
    model_from_checkpoint,
    normalizer,
    train,
)

log = logging.getLogger("latentwire.training")

__all__ = ["check_outputs", "export_checkpoint", "psnr", "train_and_export"]


def reconstruct(model: Autoencoder, x: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    """Torch reconstruction in the user's units (for reporting during training)."""
    n = normalizer(norm, x.shape[1:])
    with torch.no_grad():
        out = model(torch.from_numpy(n.forward(x).astype(np.float32))).numpy()
    return n.inverse(out)


@torch.no_grad()
def latents_of(model: Autoencoder, x_normed: np.ndarray, batch: int = 512) -> np.ndarray:
    """Float latents of normalised samples, in batches."""
    parts = [
        model.encoder(torch.from_numpy(np.ascontiguousarray(x_normed[s : s + batch]))).numpy()
        for s in range(0, len(x_normed), batch)
    ]
    return np.concatenate(parts)


def calibrate(model: Autoencoder, x_normed_train: np.ndarray, codec: str) -> CodeFormat:
    """The code format `codec` calibrated on the training split: per-channel latent range
    (int8's scale and offset come from it) and, for entropy, the prior's integer tables on
    the support the training symbols use."""
    if codec not in FORMATS:
        raise DataError(f"--codec must be one of {', '.join(FORMATS)}, got {codec!r}")
    z = latents_of(model, x_normed_train)
    prior = None
    if codec == "entropy":
        if model.prior is None:
            raise DataError(
                "--codec entropy needs a model trained with its prior: train it with "
                "`latentwire train --codec entropy`"
            )
        prior = model.prior.tables(np.rint(z).astype(np.int64))
    return CodeFormat.calibrated(codec, z, prior)


def measure_package(out: Path, x: np.ndarray, data_range: float) -> dict[str, float]:
    """Encode and decode `x` through the exported package (ONNX Runtime, the real codes
    messages); returns code bytes per sample and PSNR."""
    pkg = Model(out, providers="cpu")
    messages = list(pkg.encode_codes(x))
    x_hat = pkg.decode_codes(messages)
    payload = sum(len(m.tensor.data) for m in messages)
    return {"bytes_per_sample": payload / len(x), "psnr_db": psnr(x, x_hat, data_range)}


@dataclass
class TrainedPackage:
    result: TrainResult
    manifest: dict[str, Any]
    out: Path
    val_psnr: float
    measured: dict[str, float]

    def summary(self) -> str:
        m, r = self.manifest, self.result
        lat = latent_shape(r.model_config)
        raw = int(np.prod(r.model_config.input_shape)) * 4
        code_bytes = self.measured["bytes_per_sample"]
        fmt = m["codes"]["format"]
        return (
            f"trained {m['name']}: {r.epochs_run} epochs, best val loss {r.best_val:.6g}, "
            f"val PSNR {self.val_psnr:.2f} dB (float latents)\n"
            f"package {self.out} (fingerprint {m['fingerprint']}): latent {lat}, codes {fmt}: "
            f"{code_bytes:.1f} bytes/sample vs {raw} raw float32 ({raw / code_bytes:.1f}x), "
            f"val PSNR {self.measured['psnr_db']:.2f} dB through the package"
        ) + self._anomaly_summary()

    def _anomaly_summary(self) -> str:
        a = self.manifest.get("anomaly")
        if a is None:
            return ""
        cal = a["calibration"]
        scorer = self.manifest["files"].get("scorer")
        edge = (
            f"; scorer.onnx {scorer['bytes']:,} bytes (+{scorer['extra_bytes_over_encoder']:,} "
            "over the encoder)"
            if scorer
            else ""
        )
        return (
            f"\nanomaly: scores {', '.join(a['scores'])} (codes default "
            f"{a['default_codes_score']}, chosen by held-out likelihood); thresholds at "
            f"{cal['target']} {cal['rate']:g} on "
            f"{cal['n']} validation samples (gmm, mahalanobis: {cal['n_codes']} with out-of-fold "
            f"training codes){edge}\n"
            f"score new samples: latentwire score --model {self.out} DATA.csv"
        )


DENSE_HIDDEN = (128, 64)
ENTROPY_HIDDEN = (256, 128)


def default_hidden(codec: str) -> tuple[int, ...]:
    """--hidden when not given: 256,128 for the entropy codec, else 128,64.

    Measured on digits with `latentwire evaluate` against PCA (2-core VM, one thread): a
    K=16 entropy model behind 128,64 is only +0.70 dB above PCA at 16 bytes (its int8
    codes), short of the README's +1 dB; behind 256,128 it is +1.49 dB there and +3.0 dB
    at its entropy-coded 4.0 bytes; the default K=8 entropy model is +2.7 dB (3.5 bytes)
    to +3.6 dB above it with either width. f32/int8 models do not need the width (K=16
    behind 128,64: +1.93 dB at 16 bytes)."""
    return ENTROPY_HIDDEN if codec == "entropy" else DENSE_HIDDEN


def make_config(
    data: Dataset,
    *,
    model: str,
    latent_dim: int | None,
    hidden: tuple[int, ...] | None,
    channels: tuple[int, ...],
    activation: str = "gelu",
    codec: str = "f32",
) -> ModelConfig:
    """The architecture for `data`. None for `latent_dim` or `hidden` picks the defaults:
    K = 8 for dense models, 16 latent channels for conv models; hidden widths by
    `default_hidden(codec)`."""
    kind = ("conv" if data.is_image else "dense") if model == "auto" else model
    shape = tuple(int(s) for s in data.x.shape[1:])
    if kind == "conv":
        if len(shape) != 3:
            raise DataError(
                f"--model conv needs images (N, C, H, W); {data.source} has samples "
                f"of shape {shape}"
            )
        stride = 2 ** len(channels)
        if shape[1] % stride or shape[2] % stride:
            raise DataError(
                f"conv model with {len(channels)} stride-2 stages needs image sides that "
                f"are multiples of {stride}; got {shape[1]}x{shape[2]}"
            )
    default_k = 16 if kind == "conv" else 8
    return ModelConfig(
        kind=kind,
        input_shape=shape,
        latent_dim=latent_dim or default_k,
        hidden=default_hidden(codec) if hidden is None else tuple(hidden),
        channels=tuple(channels),
        activation=activation,
    )


def check_outputs(out: Path, checkpoint: Path | None, *, resume: bool, force: bool) -> None:
    """Before training: refuse to overwrite the package or checkpoint of an earlier run
    unless `force` (a checkpoint is fine when resuming from it). One error names everything
    in the way and the flags that get past it."""
    check_destination(out)  # a file or a folder of other things: refused even with force
    if force:
        return
    package = (out / MANIFEST_FILE).exists()
    stale = checkpoint is not None and checkpoint.exists() and not resume
    found = [f"{out} (a model package)"] * package + [f"{checkpoint} (a checkpoint)"] * stale
    if not found:
        return
    ways = [f"--force to replace {'them' if len(found) > 1 else 'it'}"]
    if stale:
        ways.append("--resume to continue that run")
    elsewhere = ["--out DIR"] * package + ["--checkpoint PATH"] * stale
    raise DataError(
        f"{' and '.join(found)} {'exist' if len(found) > 1 else 'exists'} from an earlier "
        f"run: pass {', '.join(ways)}, or {' and '.join(elsewhere)} to write elsewhere"
    )


@distributed.joins_torchrun
def train_and_export(
    data: Dataset,
    *,
    name: str,
    out: Path,
    checkpoint: Path | None,
    resume: bool,
    force: bool = False,
    model: str = "auto",
    latent_dim: int | None = None,
    hidden: tuple[int, ...] | None = None,
    channels: tuple[int, ...] = (64, 96, 128),
    activation: str = "gelu",
    normalize: str = "auto",
    codec: str = "f32",
    int8_weights: bool = False,
    data_options: dict[str, Any] | None = None,
    anomaly: AnomalyOptions | None = None,
    **train_kwargs: Any,
) -> TrainedPackage:
    """Train on `data` and export the package to `out`. An existing package at `out` or
    checkpoint at `checkpoint` (unless resuming from it) is refused before training unless
    `force`. With `anomaly`, the package also carries fitted code densities and calibrated
    thresholds (training/anomaly.py), and `data` is taken as normal samples.

    Under torchrun every process trains its shard (DistributedDataParallel, see
    training/distributed.py); rank 0 exports, the others end with status 0 (SystemExit)
    after training."""
    check_outputs(out, checkpoint, resume=resume, force=force)  # before training, not after
    if codec not in FORMATS:
        raise DataError(f"--codec must be one of {', '.join(FORMATS)}, got {codec!r}")
    robust_info: dict[str, Any] | None = None
    if anomaly is not None:
        if data.is_image:
            raise DataError(
                "--task anomaly scores array data (samples x features); images are not "
                "supported yet"
            )
        hidden = ANOMALY_DEFAULTS["hidden"] if hidden is None else hidden
        latent_dim = latent_dim or ANOMALY_DEFAULTS["latent_dim"]
        train_kwargs.setdefault("epochs", ANOMALY_DEFAULTS["epochs"])
        train_kwargs.setdefault("patience", ANOMALY_DEFAULTS["patience"])
        normalize = anomaly_normalization(normalize, data)
        if anomaly.robust:
            data, robust_info = _robust_first_pass(
                data, anomaly, model, latent_dim, hidden, normalize, train_kwargs
            )
    cfg = make_config(
        data,
        model=model,
        latent_dim=latent_dim,
        hidden=hidden,
        channels=channels,
        activation=activation,
        codec=codec,
    )
    cfg = replace(cfg, prior=codec == "entropy")
    tcfg = TrainConfig(**train_kwargs)
    result = train(
        data,
        model_config=cfg,
        config=tcfg,
        normalization=normalize,
        checkpoint=checkpoint,
        resume=resume,
        name=name,
        data_options=data_options,
    )
    distributed.finish_worker(distributed.current())  # ranks other than 0 end: 0 exports
    assert result.train_index is not None and result.val_index is not None
    x_tr, x_val = data.x[result.train_index], data.x[result.val_index]
    data_range = float(x_tr.max() - x_tr.min()) or 1.0
    val_psnr = psnr(x_val, reconstruct(result.model, x_val, result.normalization), data_range)
    norm = normalizer(result.normalization, x_val.shape[1:])
    samples = norm.forward(x_val[:256])
    codes = calibrate(result.model, norm.forward(x_tr).astype(np.float32), codec)
    if anomaly is not None:
        codes = with_headroom(codes, ANOMALY_DEFAULTS["int8_headroom"])
    info = {
        "data": data.source,
        "n_train": len(x_tr),
        "n_val": len(x_val),
        "seed": tcfg.seed,
        "val_fraction": tcfg.val_fraction,
        "epochs": result.epochs_run,
        "loss": result.loss,
        "noise": tcfg.noise,
        "embed_loss": tcfg.embed_loss,
        "best_val_loss": round(result.best_val, 8),
        "val_psnr_db": round(val_psnr, 3),
        "data_range": data_range,
    }
    if result.model_config.prior:
        info["rate_lambda"] = tcfg.rate_lambda
    section = None
    if anomaly is not None:
        section = _fit_anomaly(result.model, norm, x_tr, x_val, codes, anomaly, tcfg.seed)
        section[0]["robust"] = robust_info
    try:
        manifest = export_package(
            result.model,
            result.model_config,
            out=out,
            name=name,
            normalization=result.normalization,
            samples=samples,
            info=info,
            codes=codes,
            int8_weights=int8_weights,
            replace=force,
            anomaly=section,
            edge_score=anomaly is not None and anomaly.edge_score,
        )
    except ExportError as exc:
        if checkpoint is None or not checkpoint.exists():
            raise
        raise ExportError(
            f"{exc}; the trained weights are kept in {checkpoint} "
            f"(`latentwire export {checkpoint} --out DIR` exports them again)"
        ) from None
    measured = measure_package(out, x_val, data_range)
    return TrainedPackage(result, manifest, out, val_psnr, measured)


def anomaly_normalization(normalize: str, data: Dataset) -> str:
    """What `--normalize auto` means under --task anomaly: ANOMALY_DEFAULTS["normalize"]
    (min-max) where the data's own default is standardisation (tabular data). Measured on
    breast-cancer, 4 seeds: codes-only AP 0.61 -> 0.76 and reconstruction-error AP 0.47 ->
    0.56 (benchmarks/README.md#anomaly-detection): standardisation lets a few heavy-tailed
    features dominate the squared error and the codes."""
    if normalize == "auto" and data.default_normalization == "standard":
        return str(ANOMALY_DEFAULTS["normalize"])
    return normalize


def with_headroom(fmt: CodeFormat, factor: float) -> CodeFormat:
    """`fmt` with its calibrated range widened `factor` times about its centre, so that the
    int8 format keeps anomalies' latents (which often fall outside the normal training
    codes' range: 67% of breast-cancer's test anomalies against 6.5% of its normals) instead
    of clipping them onto the normal range. f32 and f16 carry the range as information only;
    the entropy format's integer support is left as trained."""
    if fmt.name == "entropy" or factor <= 1.0:
        return fmt
    centre, half = (fmt.hi + fmt.lo) / 2, (fmt.hi - fmt.lo) / 2 * factor
    return CodeFormat.build(fmt.name, centre - half, centre + half, fmt.prior)


@dataclass(frozen=True)
class AnomalyOptions:
    """`train --task anomaly`: how the detector is fitted and calibrated."""

    fpr: float | None = None
    """Target false-positive rate on held-out normals (default ANOMALY_DEFAULTS["fpr"])."""
    contamination: float | None = None
    """Share of anomalies the data holds (PyOD style); thresholds flag that share."""
    robust: bool = False
    """Train twice: drop the highest-error share of the data before the second pass."""
    edge_score: bool = False
    """Also export scorer.onnx (codes and reconstruction error in one call)."""
    split: dict[str, Any] | None = None
    """The labelled built-in split the data came from (anomaly_data.AnomalySplit.spec)."""


def _robust_first_pass(
    data: Dataset,
    opts: AnomalyOptions,
    model: str,
    latent_dim: int | None,
    hidden: tuple[int, ...] | None,
    normalize: str,
    train_kwargs: dict[str, Any],
) -> tuple[Dataset, dict[str, Any]]:
    """Train once on everything, score every sample by reconstruction error and keep all
    but the highest-scoring share (--contamination, else ANOMALY_DEFAULTS["robust_drop"])."""
    rate = opts.contamination or ANOMALY_DEFAULTS["robust_drop"]
    cfg = make_config(data, model=model, latent_dim=latent_dim, hidden=hidden, channels=())
    tcfg = TrainConfig(**train_kwargs)
    log.info(
        "robust: first pass on all %d samples, to drop the %.1f%% it fits worst",
        len(data.x),
        100 * rate,
    )
    first = train(data, model_config=cfg, config=tcfg, normalization=normalize)
    n = normalizer(first.normalization, data.x.shape[1:])
    xn = n.forward(data.x).astype(np.float32)
    with torch.no_grad():
        out = first.model(torch.from_numpy(xn)).numpy()
    keep = robust_keep(recon_error(xn, out), rate)
    log.info("robust: second pass on %d samples (%d dropped)", len(keep), len(data.x) - len(keep))
    kept = replace(data, x=data.x[keep])
    return kept, {
        "rule": "second pass without the highest-reconstruction-error share of the data",
        "drop_rate": rate,
        "dropped": len(data.x) - len(keep),
        "of": len(data.x),
        "first_pass_epochs": first.epochs_run,
    }


def _fit_anomaly(
    model: Autoencoder,
    norm: Normalization,
    x_tr: np.ndarray,
    x_val: np.ndarray,
    codes: CodeFormat,
    opts: AnomalyOptions,
    seed: int,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Densities on the codes as the package's format delivers them (quantised and
    dequantised), reconstruction error through those codes, thresholds on the validation
    split; returns the manifest section "anomaly" and the npz arrays."""
    xn_tr = norm.forward(x_tr).astype(np.float32)
    xn_val = norm.forward(x_val).astype(np.float32)
    z_tr = codes.dequantize(codes.quantize(latents_of(model, xn_tr)))
    z_val = codes.dequantize(codes.quantize(latents_of(model, xn_val)))
    with torch.no_grad():
        out_val = model.decoder(torch.from_numpy(z_val)).numpy()
    notes, arrays = fit_densities(z_tr, z_val, seed=seed)
    section, arrays = calibrate_detector(
        notes,
        arrays,
        z_val,
        recon_error(xn_val, out_val),
        fpr=opts.fpr,
        contamination=opts.contamination,
        z_fit=z_tr,
        seed=seed,
    )
    rate = section["calibration"]["rate"]
    if len(z_val) * rate < 5:
        log.warning(
            "anomaly: the recon threshold rests on %d validation samples, about %.1f of them "
            "above a %g rate (gmm and mahalanobis: on %d, with out-of-fold training codes): its "
            "realised rate on new normal data will vary; more normal data or a larger "
            "--val-fraction steadies it (scores and ranking are unaffected)",
            len(z_val),
            len(z_val) * rate,
            rate,
            section["calibration"]["n_codes"],
        )
    section["codes"] = f"{codes.name} codes, dequantised (as the decoder sees them)"
    section["split"] = opts.split
    log.info(
        "anomaly: default code score %s (held-out log-likelihood %s), thresholds at %s %g on "
        "%d validation samples (gmm, mahalanobis: %d held-out codes)",
        section["default_codes_score"],
        section["selection"]["heldout_loglik"],
        section["calibration"]["target"],
        section["calibration"]["rate"],
        len(z_val),
        section["calibration"]["n_codes"],
    )
    return section, arrays


def _training_split(ckpt: dict[str, Any], path: Path) -> np.ndarray:
    """The checkpoint's training split, normalised, reloaded from its data (for calibration)."""
    ident = ckpt["identity"]
    opts = dict(ckpt.get("data_options") or {})
    try:
        source = resolve_source(ident["data"], path)  # older checkpoints: maybe relative
        data = load_data(source, key=opts.get("key"), patch=int(opts.get("patch", 32)))
    except DataError as exc:
        raise DataError(
            f"export calibrates the codes on the training data of {path}, which cannot be "
            f"loaded again: {exc}"
        ) from None
    train_idx, _ = split(len(data.x), ident["val_fraction"], ident["seed"])
    x_tr = data.x[train_idx]
    return normalizer(ident["normalization"], x_tr.shape[1:]).forward(x_tr).astype(np.float32)


def export_checkpoint(
    path: Path,
    *,
    out: Path,
    name: str | None = None,
    codec: str | None = None,
    int8_weights: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Re-export the best weights of a checkpoint (same parity checks as training), with
    code format `codec` (default: entropy for a model trained with a prior, else f32). An
    existing package at `out` is replaced only with `force`."""
    check_destination(out, replace=force)
    ckpt = load_checkpoint(path)
    model, cfg = model_from_checkpoint(ckpt)
    samples = ckpt["parity_samples"].numpy()
    codec = codec or ("entropy" if cfg.prior else "f32")
    codes = calibrate(model, _training_split(ckpt, path), codec)
    info = {
        "data": ckpt["identity"]["data"],
        "seed": ckpt["identity"]["seed"],
        "epochs": ckpt["epoch"],
        "loss": ckpt["loss"],
        "best_val_loss": round(ckpt["best_val"], 8),
        "noise": ckpt["identity"].get("noise"),  # `denoise` and evaluate read it
        "embed_loss": ckpt["identity"].get("embed_loss"),
        "exported_from": str(path),
    }
    return export_package(
        model,
        cfg,
        out=out,
        name=name or ckpt["name"],
        normalization=ckpt["identity"]["normalization"],
        samples=samples,
        info=info,
        codes=codes,
        int8_weights=int8_weights,
        replace=force,
    )
