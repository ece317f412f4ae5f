"""Data -> trained model -> model package, as `latentwire train` and `export` run it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentwire.runtime.errors import DataError

from .data import Dataset
from .export import check_destination, export_package
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


def psnr(x: np.ndarray, x_hat: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(range^2 / MSE)."""
    mse = float(np.mean((np.asarray(x, np.float64) - np.asarray(x_hat, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(data_range**2 / mse))


def reconstruct(model: Autoencoder, x: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    """Torch reconstruction in the user's units (for reporting during training)."""
    n = normalizer(norm, x.shape[1:])
    with torch.no_grad():
        out = model(torch.from_numpy(n.forward(x).astype(np.float32))).numpy()
    return n.inverse(out)


@dataclass
class TrainedPackage:
    result: TrainResult
    manifest: dict[str, Any]
    out: Path
    val_psnr: float

    def summary(self) -> str:
        m, r = self.manifest, self.result
        lat = latent_shape(r.model_config)
        code_bytes = int(np.prod(lat)) * 4
        raw = int(np.prod(r.model_config.input_shape)) * 4
        return (
            f"trained {m['name']}: {r.epochs_run} epochs, best val loss {r.best_val:.6g}, "
            f"val PSNR {self.val_psnr:.2f} dB\n"
            f"package {self.out} (fingerprint {m['fingerprint']}): latent {lat} float32 = "
            f"{code_bytes} bytes/sample vs {raw} raw float32 ({raw / code_bytes:.1f}x)"
        )


def make_config(
    data: Dataset,
    *,
    model: str,
    latent_dim: int | None,
    hidden: tuple[int, ...],
    channels: tuple[int, ...],
) -> ModelConfig:
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
        hidden=tuple(hidden),
        channels=tuple(channels),
    )


def train_and_export(
    data: Dataset,
    *,
    name: str,
    out: Path,
    checkpoint: Path | None,
    resume: bool,
    model: str = "auto",
    latent_dim: int | None = None,
    hidden: tuple[int, ...] = (128, 64),
    channels: tuple[int, ...] = (64, 96, 128),
    normalize: str = "auto",
    **train_kwargs: Any,
) -> TrainedPackage:
    check_destination(out)  # before training, not after it
    cfg = make_config(data, model=model, latent_dim=latent_dim, hidden=hidden, channels=channels)
    tcfg = TrainConfig(**train_kwargs)
    result = train(
        data,
        model_config=cfg,
        config=tcfg,
        normalization=normalize,
        checkpoint=checkpoint,
        resume=resume,
        name=name,
    )
    assert result.train_index is not None and result.val_index is not None
    x_tr, x_val = data.x[result.train_index], data.x[result.val_index]
    data_range = float(x_tr.max() - x_tr.min()) or 1.0
    val_psnr = psnr(x_val, reconstruct(result.model, x_val, result.normalization), data_range)
    samples = normalizer(result.normalization, x_val.shape[1:]).forward(x_val[:256])
    info = {
        "data": data.source,
        "n_train": len(x_tr),
        "n_val": len(x_val),
        "seed": tcfg.seed,
        "epochs": result.epochs_run,
        "loss": result.loss,
        "noise": tcfg.noise,
        "best_val_loss": round(result.best_val, 8),
        "val_psnr_db": round(val_psnr, 3),
        "data_range": data_range,
    }
    manifest = export_package(
        result.model,
        result.model_config,
        out=out,
        name=name,
        normalization=result.normalization,
        samples=samples,
        info=info,
    )
    return TrainedPackage(result, manifest, out, val_psnr)


def export_checkpoint(path: Path, *, out: Path, name: str | None = None) -> dict[str, Any]:
    """Re-export the best weights of a checkpoint (same parity checks as training)."""
    ckpt = load_checkpoint(path)
    model, cfg = model_from_checkpoint(ckpt)
    samples = ckpt["parity_samples"].numpy()
    info = {
        "data": ckpt["identity"]["data"],
        "seed": ckpt["identity"]["seed"],
        "epochs": ckpt["epoch"],
        "loss": ckpt["loss"],
        "best_val_loss": round(ckpt["best_val"], 8),
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
    )
