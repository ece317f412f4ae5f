"""The training loop: Adam, early stopping on validation loss, checkpoints and resume,
denoising corruption, mixed precision on CUDA, several processes under torchrun (DDP, see
training/distributed.py)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentwire.runtime.errors import DataError
from latentwire.runtime.manifest import Normalization

from . import distributed
from .data import Dataset, fit_normalization, same_source, split
from .embed_loss import parse_embed_loss
from .models import Autoencoder, ModelConfig, build_model, latent_shape
from .noise import parse_noise as parse_noise  # re-exported: tests and older imports
from .objective import Objective

log = logging.getLogger("latentwire.training")

CHECKPOINT_FORMAT = "latentwire.checkpoint"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """How to train; every field is a `latentwire train` flag."""

    epochs: int = 300
    """Upper bound on epochs; early stopping usually ends sooner."""
    batch_size: int = 64
    lr: float = 2e-3
    """Adam learning rate (cosine-decayed to 5% over `epochs`)."""
    weight_decay: float = 0.0
    patience: int = 30
    """Stop after this many epochs without a better validation loss."""
    val_fraction: float = 0.2
    seed: int = 0
    loss: str = "auto"
    """mse | bce | auto (mse; bce needs data in [0, 1] after normalisation)."""
    noise: str | None = None
    """Denoising: "gaussian:SIGMA" or "mask:P" corrupts inputs, the target stays clean."""
    device: str = "auto"
    """auto | cpu | cuda; mixed precision is used on CUDA."""
    clip_grad: float = 1.0
    """Clip the gradient's global norm to this before each step (0 = off); steps whose loss
    or gradient is not finite are skipped. May change on resume."""
    prior_lr_scale: float = 10.0
    """Models with a prior: its density network learns this many times faster than the
    transforms, so the rate the transforms are trained against tracks their latents (at
    the same learning rate it lags far behind on short runs and overstates the bits)."""
    rate_lambda: float = 0.01
    """Models with a prior (the entropy format): loss = distortion + rate_lambda * bits per
    input value (bits per sample / values per sample)."""
    embed_loss: str | None = None
    """Neighbourhood-preserving terms on the latents, e.g. "local:5+sne:0.01" (see
    training/embed_loss.py); added to the training loss only, validation stays
    reconstruction. Not with a prior (the entropy format)."""
    progress: bool = True


@dataclass
class TrainResult:
    model: Autoencoder
    model_config: ModelConfig
    normalization: dict[str, Any]
    train_config: TrainConfig
    best_val: float
    epochs_run: int
    loss: str
    """The loss actually used (auto resolved)."""
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    train_index: np.ndarray | None = None
    val_index: np.ndarray | None = None


BLOWUP_FACTOR = 4
"""A validation loss over this many times the best one means training blew up (seen with
GDN models at high learning rates): the best weights come back and the rate is halved."""
MAX_RECOVERIES = 3
"""Blow-ups after which training stops with an error."""
VAL_CHUNK_VALUES = 1 << 22
"""Validation runs in chunks of about this many input values (bounded memory)."""
LONG_RUN_SECONDS = 600
"""Runs estimated to take longer are told how many epochs fit in this time."""
MAX_BAD_STEPS = 50
"""Consecutive skipped (non-finite) steps after which training stops with an error."""


def _clipped_step_ok(
    model: torch.nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, clip: float
) -> bool:
    """Clip the gradient norm and step; False (and no step) when the gradient is not finite.

    float16 AMP: the scaler's own inf check skips the step and lowers its scale, as usual.
    """
    if scaler.is_enabled():
        scaler.unscale_(opt)
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
    if not torch.isfinite(norm) and not scaler.is_enabled():
        opt.zero_grad(set_to_none=True)
        return False
    scaler.step(opt)
    scaler.update()
    return True


def _param_groups(model: Autoencoder, prior_lr_scale: float) -> list[dict[str, Any]]:
    """Adam parameter groups, each with the factor ("lr_scale") on the scheduled rate."""
    prior = model.prior
    if prior is None:
        return [{"params": list(model.parameters()), "lr_scale": 1.0}]
    own = {id(p) for p in prior.parameters()}
    rest = [p for p in model.parameters() if id(p) not in own]
    return [
        {"params": rest, "lr_scale": 1.0},
        {"params": list(prior.parameters()), "lr_scale": prior_lr_scale},
    ]


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """Learning rate of 1-based `epoch`: cosine decay from `base` to 5% of it over `epochs`."""
    floor = base * 0.05
    return floor + (base - floor) * (1 + math.cos(math.pi * (epoch - 1) / epochs)) / 2


def normalizer(norm: dict[str, Any], sample_shape: tuple[int, ...]) -> Normalization:
    """The runtime's Normalization for a fitted normalisation dict (one implementation)."""
    return Normalization.from_dict(norm, tuple(sample_shape))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda was asked for but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise DataError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def cpu_count() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_threads() -> int:
    """Torch CPU threads when --threads is not given: half the cores, at most 4, at least 1;
    under torchrun, half the cores shared by the processes on this machine.

    torch's own default (every core) oversubscribes a shared machine: on a 2-core VM with
    other jobs running, 20 digits epochs took 2-6 s on 1 thread and 28-135 s on torch's
    default of 2 (2.4 s on 2 when the machine was idle)."""
    return max(1, min(4, cpu_count() // 2 // distributed.local_world_size()))


def use_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (and inter-op threads, where torch still allows it) to
    `threads`, or `default_threads()` when None; returns the number set."""
    n = threads or default_threads()
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # once per process, before any parallel work
        torch.set_num_interop_threads(n)
    return n


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _save_atomic(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `train` (plain tensors and JSON-like values only)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"checkpoint {p} not found")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(
            f"{p} is not a readable latentwire checkpoint ({exc.__class__.__name__})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{p} is not a latentwire checkpoint")
    return ckpt


def _checkpoint_if_any(path: Path) -> dict[str, Any] | None:
    return load_checkpoint(path) if path.exists() else None


def train(
    data: Dataset,
    *,
    model_config: ModelConfig,
    config: TrainConfig,
    normalization: str = "auto",
    checkpoint: Path | None = None,
    resume: bool = False,
    name: str | None = None,
    data_options: dict[str, Any] | None = None,
) -> TrainResult:
    """Train an autoencoder on `data` and return the best model (by validation loss)."""
    if not config.clip_grad >= 0:
        raise DataError(f"--clip-grad must be >= 0 (0 = off), got {config.clip_grad}")
    train_idx, val_idx = split(len(data.x), config.val_fraction, config.seed)
    kind = data.default_normalization if normalization == "auto" else normalization
    norm = fit_normalization(data.x[train_idx], kind, is_image=data.is_image)
    x_n = normalizer(norm, data.x.shape[1:]).forward(data.x).astype(np.float32)
    lo, hi = float(x_n[train_idx].min()), float(x_n[train_idx].max())
    in_unit = lo >= 0.0 and hi <= 1.0
    model_config = ModelConfig.from_dict(
        {**model_config.to_dict(), "output_activation": "sigmoid" if in_unit else "identity"}
    )
    loss_name = "mse" if config.loss == "auto" else config.loss
    if loss_name not in ("mse", "bce"):
        raise DataError(f"--loss must be mse, bce or auto, got {config.loss!r}")
    if loss_name == "bce" and not in_unit:
        raise DataError(
            f"--loss bce needs data in [0, 1] after normalisation (got [{lo:.3g}, {hi:.3g}]); "
            "use --normalize minmax or --loss mse"
        )
    corrupt = parse_noise(config.noise)
    embed_term = parse_embed_loss(config.embed_loss)
    if embed_term is not None and model_config.prior:
        raise DataError("--embed-loss works with the f32, f16 and int8 codecs, not entropy")
    world = distributed.current()
    device = distributed.device_of(resolve_device(config.device), world)
    batch = distributed.per_rank_batch(config.batch_size, world)
    amp_dtype = None
    if device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    torch.manual_seed(config.seed)
    model = build_model(model_config).to(device)
    objective = Objective(
        model,
        loss=loss_name,
        rate_lambda=config.rate_lambda,
        embed_term=embed_term,
        device_type=device.type,
        amp_dtype=amp_dtype,
    )
    opt = torch.optim.Adam(
        _param_groups(model, config.prior_lr_scale), lr=config.lr, weight_decay=config.weight_decay
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    gen = torch.Generator().manual_seed(config.seed)  # the order: the same on every rank
    xt = torch.from_numpy(x_n[train_idx]).to(device)
    xv = torch.from_numpy(x_n[val_idx]).to(device)

    start_epoch, best_val, bad_epochs = 0, math.inf, 0
    lr_factor, recoveries = 1.0, 0  # halved at each blow-up (see BLOWUP_FACTOR)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    history: list[dict[str, float]] = []
    identity = {
        "model_config": model_config.to_dict(),
        "data": data.source,
        "seed": config.seed,
        "normalization": norm,
        "val_fraction": config.val_fraction,
        # what changes the optimisation itself; --epochs may grow on resume (see below)
        "loss": loss_name,
        "noise": config.noise,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "rate_lambda": config.rate_lambda if model_config.prior else None,
        "prior_lr_scale": config.prior_lr_scale if model_config.prior else None,
        "embed_loss": config.embed_loss,
    }
    if (
        resume
        and checkpoint is not None  # read where rank 0 runs; the other ranks get a copy
        and (ckpt := distributed.on_main(partial(_checkpoint_if_any, checkpoint), world))
    ):
        stored = ckpt["identity"]
        mismatch = [
            k
            for k, v in identity.items()
            if stored.get(k) != v
            and not (k == "data" and same_source(stored.get(k), data.source, checkpoint))
        ]
        if mismatch:
            raise DataError(
                f"cannot resume from {checkpoint}: it was trained with different "
                f"{', '.join(mismatch)}"
            )
        model.load_state_dict(ckpt["model_state"])
        opt.load_state_dict(ckpt["optimizer_state"])
        if ckpt["scaler_state"]:  # empty when the checkpoint's run had no float16 AMP
            scaler.load_state_dict(ckpt["scaler_state"])
        gen.set_state(ckpt["generator_state"])
        best_state = ckpt["best_state"]
        start_epoch, best_val, bad_epochs = ckpt["epoch"], ckpt["best_val"], ckpt["bad_epochs"]
        lr_factor, recoveries = ckpt.get("lr_factor", 1.0), ckpt.get("recoveries", 0)
        history = list(ckpt["history"])
        log.info("resumed from %s at epoch %d (best val %.6g)", checkpoint, start_epoch, best_val)

    prior, latent = model.prior, latent_shape(model_config)
    step = distributed.wrap(objective, world)  # DDP over the whole loss (objective.py)
    if world.distributed:
        log.info("DDP: world %d, backend %s, per-rank batch %d", world.size, world.backend, batch)

    def noise_for(epoch: int) -> torch.Generator:
        """The corruption and rate noise: the order's generator in a single process (as
        ever); under DDP one per rank and epoch, so that ranks differ and a resume repeats."""
        if not world.distributed:
            return gen
        seed = np.random.SeedSequence([config.seed, epoch, world.rank]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(seed))

    val_chunk = max(1, VAL_CHUNK_VALUES // max(1, math.prod(xv.shape[1:])))

    @torch.no_grad()
    def validate() -> tuple[float, float]:
        """(loss, bits per sample) over the validation split, in chunks of bounded size;
        the same corruption every epoch. Every rank runs it on the whole split; rank 0's
        numbers decide on all of them."""
        noise = torch.Generator().manual_seed(config.seed + 1)
        loss_sum, bits_sum = 0.0, 0.0
        for s in range(0, len(xv), val_chunk):
            target = xv[s : s + val_chunk]
            loss, bits = objective(corrupt(target, noise) if corrupt else target, target)
            per_sample = float(bits) / len(target)
            loss_sum += float(loss) * len(target)
            bits_sum += per_sample * len(target)
        val, bits = distributed.broadcast_floats([loss_sum / len(xv), bits_sum / len(xv)], world)
        return val, bits

    progress = config.progress and world.is_main
    show = progress and sys.stderr.isatty()
    steps_per_epoch = math.ceil(len(distributed.shard(torch.arange(len(xt)), world)) / batch)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(  # the bar counts steps, so slow epochs (photos) still show progress
            total=config.epochs * steps_per_epoch,  # and an honest ETA
            initial=start_epoch * steps_per_epoch,
            desc=f"train {data.name}",
            unit="step",
            disable=not show,
            dynamic_ncols=True,
        )
    t0 = last_log = time.perf_counter()
    bad_steps = 0
    epoch = start_epoch
    estimated = False

    def estimate(seconds_per_epoch: float, how: str) -> None:
        """One log line, early in a run: how long the epochs left may take."""
        left = config.epochs - start_epoch
        hint = "--epochs N bounds the run"
        if seconds_per_epoch * left > LONG_RUN_SECONDS:
            n = max(1, int(LONG_RUN_SECONDS // seconds_per_epoch))
            hint = f"--epochs {n} takes about {_duration(n * seconds_per_epoch)}"
        log.info(
            "%s on %d torch thread(s): estimate %s for up to %d epochs%s (early stopping "
            "after %d epochs without improvement may end sooner; %s; --threads N sets the "
            "threads)",
            how,
            torch.get_num_threads(),
            _duration(seconds_per_epoch * left),
            left,
            " left" if start_epoch else "",
            config.patience,
            hint,
        )

    for epoch in range(start_epoch + 1, config.epochs + 1):
        if bad_epochs >= config.patience:
            epoch -= 1
            break
        for group in opt.param_groups:  # closed form, so a resume with more --epochs is right
            scale = group.get("lr_scale", 1.0) * lr_factor
            group["lr"] = cosine_lr(config.lr, epoch, config.epochs) * scale
        objective.train()
        order = torch.randperm(len(xt), generator=gen)
        mine = distributed.shard(order, world).to(device)
        noise = noise_for(epoch)
        total, seen = 0.0, 0
        for s in range(0, len(mine), batch):
            target = xt[mine[s : s + batch]]
            inp = corrupt(target, noise) if corrupt else target
            u = None
            if prior is not None:  # drawn after the corruption, from the same generator
                u = objective.rate_noise(len(target), latent, noise).to(device)
            loss, _ = step(inp, target, u)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            if not _clipped_step_ok(model, opt, scaler, config.clip_grad):
                bad_steps += 1
                if bad_steps >= MAX_BAD_STEPS:
                    raise DataError(
                        f"training diverged at epoch {epoch}: {bad_steps} steps in a row had "
                        f"a non-finite loss or gradient; try a lower --lr (now {config.lr:g})"
                        + (f" or --clip-grad {config.clip_grad / 2:g}" if config.clip_grad else "")
                    )
                continue
            bad_steps = 0
            total += loss.item() * len(target)
            seen += len(target)
            if bar is not None:
                bar.update(1)
            done = s // batch + 1
            spent = time.perf_counter() - t0
            if not estimated and spent > 20 and done < steps_per_epoch:  # slow epochs
                estimated = True
                per_epoch = spent / done * steps_per_epoch
                estimate(per_epoch, f"{done} of {steps_per_epoch} steps took {spent:.0f} s")
        objective.eval()
        total, samples = distributed.sum_floats([total, seen], world)  # over the ranks
        val, val_bits = validate()
        if not estimated:
            estimated = True
            spent = time.perf_counter() - t0
            estimate(spent, f"epoch {epoch} took {spent:.1f} s")
        train_loss = total / samples if samples else math.nan
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val})
        if prior is not None:
            history[-1]["val_bits_per_sample"] = val_bits
        if val < best_val:
            best_val, bad_epochs = val, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        if not val <= BLOWUP_FACTOR * best_val:  # blown up (or NaN): back to the best weights
            recoveries += 1
            if recoveries > MAX_RECOVERIES:
                raise DataError(
                    f"training diverged {recoveries} times (last at epoch {epoch}: validation "
                    f"loss {val:.4g}, best {best_val:.4g}); try a lower --lr (now {config.lr:g})"
                )
            lr_factor /= 2
            model.load_state_dict(best_state)
            opt.state.clear()  # Adam's moments belong to the weights that blew up
            log.warning(
                "epoch %d: validation loss %.4g is over %d x the best (%.4g): back to the best "
                "weights, learning rate halved (x%g)",
                epoch,
                val,
                BLOWUP_FACTOR,
                best_val,
                lr_factor,
            )
        if bar is not None:
            extra = {"bits": f"{val_bits:.1f}"} if prior is not None else {}
            bar.set_postfix(
                epoch=f"{epoch}/{config.epochs}",
                loss=f"{train_loss:.5f}",
                val=f"{val:.5f}",
                best=f"{best_val:.5f}",
                **extra,
            )
        # without a terminal: a log line every 25 epochs, or every 30 s when epochs are slow
        if (
            not show
            and progress
            and (epoch % 25 == 0 or epoch == 1 or time.perf_counter() - last_log > 30)
        ):
            last_log = time.perf_counter()
            rate = f", {val_bits:.1f} bits/sample" if prior is not None else ""
            log.info(
                "epoch %d/%d: loss %.6f, val %.6f (best %.6f%s)",
                epoch,
                config.epochs,
                train_loss,
                val,
                best_val,
                rate,
            )
        if checkpoint is not None and world.is_main:
            _save_atomic(
                {
                    "format": CHECKPOINT_FORMAT,
                    "version": CHECKPOINT_VERSION,
                    "identity": identity,
                    "name": name or data.name,
                    "data_options": data_options or {},
                    "is_image": data.is_image,
                    "loss": loss_name,
                    "train_config": asdict(config),
                    "epoch": epoch,
                    "best_val": best_val,
                    "bad_epochs": bad_epochs,
                    "lr_factor": lr_factor,
                    "recoveries": recoveries,
                    "history": history,
                    "model_state": model.state_dict(),
                    "best_state": best_state,
                    "optimizer_state": opt.state_dict(),
                    "generator_state": gen.get_state(),
                    "scaler_state": scaler.state_dict(),
                    "parity_samples": torch.from_numpy(x_n[val_idx][:256].copy()),
                },
                checkpoint,
            )
        if checkpoint is not None:
            distributed.barrier(world)  # the others go on once rank 0's checkpoint is down
    if bar is not None:
        bar.close()
    stopped = "early stop" if bad_epochs >= config.patience else "epoch limit"
    log.info(
        "trained %d epochs in %.1fs (%s), best val loss %.6g",
        epoch,
        time.perf_counter() - t0,
        stopped,
        best_val,
    )
    model.load_state_dict(best_state)
    model.to("cpu").eval()
    return TrainResult(
        model,
        model_config,
        norm,
        config,
        best_val,
        epoch,
        loss_name,
        history,
        checkpoint,
        train_idx,
        val_idx,
    )


def model_from_checkpoint(ckpt: dict[str, Any]) -> tuple[Autoencoder, ModelConfig]:
    cfg = ModelConfig.from_dict(ckpt["identity"]["model_config"])
    model = build_model(cfg)
    model.load_state_dict(ckpt["best_state"])
    return model.eval(), cfg
