"""Tests for the training loop (training/trainer.py) and pipeline.make_config.

All runs are short (a few epochs on the 1797-sample digits data, on the CPU).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from latentwire.runtime.errors import DataError
from latentwire.training import trainer as trainer_mod
from latentwire.training.data import Dataset, load_data
from latentwire.training.models import ModelConfig
from latentwire.training.pipeline import make_config
from latentwire.training.trainer import (
    TrainConfig,
    TrainResult,
    load_checkpoint,
    model_from_checkpoint,
    parse_noise,
    train,
)

HIDDEN = (32, 16)  # small and fast; the defaults are (128, 64)
CHANNELS = (64, 96, 128)


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models train faster on one thread, and do not stall when other work shares the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_data("digits")


@pytest.fixture(scope="module")
def breast_cancer() -> Dataset:
    return load_data("breast-cancer")


def _config(data: Dataset, *, latent_dim: int | None = None) -> ModelConfig:
    return make_config(data, model="auto", latent_dim=latent_dim, hidden=HIDDEN, channels=CHANNELS)


def _tconfig(**kwargs: Any) -> TrainConfig:
    """TrainConfig for tests: CPU, no progress bar, a few epochs unless told otherwise."""
    base: dict[str, Any] = {"epochs": 3, "device": "cpu", "progress": False}
    return TrainConfig(**{**base, **kwargs})


def _run(
    data: Dataset,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    normalization: str = "auto",
    latent_dim: int | None = None,
    **kwargs: Any,
) -> TrainResult:
    return train(
        data,
        model_config=_config(data, latent_dim=latent_dim),
        config=_tconfig(**kwargs),
        normalization=normalization,
        checkpoint=checkpoint,
        resume=resume,
    )


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _image_dataset(height: int, width: int | None = None, channels: int = 3) -> Dataset:
    shape = (4, channels, height, width or height)
    x = np.random.default_rng(0).integers(0, 256, shape).astype(np.float32)
    return Dataset(x=x, name="imgs", source="imgs", is_image=True, default_normalization="scale")


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_weights(digits: Dataset) -> None:
    a = _run(digits, seed=3)
    b = _run(digits, seed=3)
    assert _same_state(_state(a.model), _state(b.model))
    assert a.history == b.history
    assert a.best_val == b.best_val
    assert a.epochs_run == b.epochs_run == 3
    np.testing.assert_array_equal(a.val_index, b.val_index)


def test_different_seed_different_weights(digits: Dataset) -> None:
    a = _run(digits, seed=0)
    b = _run(digits, seed=1)
    sa, sb = _state(a.model), _state(b.model)
    assert sa.keys() == sb.keys()
    assert not any(torch.equal(sa[k], sb[k]) for k in sa if sa[k].numel() > 1)
    assert a.history != b.history


def test_result_fields(digits: Dataset) -> None:
    r = _run(digits, epochs=2)
    assert r.epochs_run == 2
    assert [h["epoch"] for h in r.history] == [1, 2]
    assert r.best_val == min(h["val_loss"] for h in r.history)
    assert r.train_index is not None and r.val_index is not None
    assert len(r.train_index) + len(r.val_index) == len(digits.x)
    assert not r.model.training
    assert next(r.model.parameters()).device.type == "cpu"
    assert r.checkpoint is None


# --------------------------------------------------------------------------- checkpoints


def test_resume_matches_uninterrupted_run(
    digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight_ckpt = tmp_path / "straight.pt"
    straight = _run(digits, epochs=6, checkpoint=straight_ckpt)
    assert straight.epochs_run == 6

    # Interrupt a second, identical run at the start of epoch 4 (after epoch 3's checkpoint
    # was written): the trainer asks cosine_lr for each epoch's learning rate first.
    original_lr = trainer_mod.cosine_lr
    armed = {"on": True}
    epoch_steps: list[int] = []

    def interrupting_lr(base: float, epoch: int, epochs: int) -> float:
        if armed["on"] and epoch == 4:
            raise KeyboardInterrupt
        epoch_steps.append(epoch)
        return original_lr(base, epoch, epochs)

    monkeypatch.setattr(trainer_mod, "cosine_lr", interrupting_lr)
    ckpt = tmp_path / "interrupted.pt"
    with pytest.raises(KeyboardInterrupt):
        _run(digits, epochs=6, checkpoint=ckpt)
    saved = load_checkpoint(ckpt)
    assert saved["epoch"] == 3
    assert [h["epoch"] for h in saved["history"]] == [1, 2, 3]
    assert epoch_steps == [1, 2, 3]
    armed["on"] = False
    epoch_steps.clear()

    resumed = _run(digits, epochs=6, checkpoint=ckpt, resume=True)
    assert epoch_steps == [4, 5, 6]  # it really resumed: only epochs 4-6 were trained
    assert resumed.epochs_run == 6
    assert resumed.history == straight.history
    assert resumed.best_val == straight.best_val
    assert _same_state(_state(resumed.model), _state(straight.model))
    # the last-epoch weights and optimizer state in the checkpoints agree too
    a, b = load_checkpoint(straight_ckpt), load_checkpoint(ckpt)
    assert a["epoch"] == b["epoch"] == 6
    assert _same_state(a["model_state"], b["model_state"])
    assert _same_state(a["best_state"], b["best_state"])
    assert a["history"] == b["history"]


def test_resume_with_more_epochs_follows_the_longer_schedule(
    digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Extending --epochs on resume continues the cosine decay of the longer run."""
    ckpt = tmp_path / "c.pt"
    _run(digits, epochs=3, checkpoint=ckpt)
    seen: list[tuple[int, int]] = []
    original_lr = trainer_mod.cosine_lr

    def spy(base: float, epoch: int, epochs: int) -> float:
        seen.append((epoch, epochs))
        return original_lr(base, epoch, epochs)

    monkeypatch.setattr(trainer_mod, "cosine_lr", spy)
    resumed = _run(digits, epochs=5, checkpoint=ckpt, resume=True)
    assert resumed.epochs_run == 5 and seen == [(4, 5), (5, 5)]
    lrs = [original_lr(1.0, e, 5) for e in range(1, 6)]
    assert lrs[0] == 1.0 and all(a > b for a, b in itertools.pairwise(lrs))
    assert original_lr(1.0, 4, 5) > original_lr(1.0, 3, 3)  # not stuck at the old floor


def test_resume_without_checkpoint_starts_fresh(digits: Dataset, tmp_path: Path) -> None:
    fresh = _run(digits, epochs=2)
    resumed = _run(digits, epochs=2, checkpoint=tmp_path / "new.pt", resume=True)
    assert resumed.history == fresh.history
    assert (tmp_path / "new.pt").is_file()


def test_resume_finished_run_trains_no_more(digits: Dataset, tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    first = _run(digits, epochs=2, checkpoint=ckpt)
    again = _run(digits, epochs=2, checkpoint=ckpt, resume=True)
    assert again.epochs_run == 2
    assert again.history == first.history
    assert _same_state(_state(again.model), _state(first.model))


def test_checkpoint_holds_best_weights(digits: Dataset, tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    r = _run(digits, epochs=2, checkpoint=ckpt)
    assert r.checkpoint == ckpt
    model, cfg = model_from_checkpoint(load_checkpoint(ckpt))
    assert cfg == r.model_config
    assert _same_state(_state(model), _state(r.model))


def test_resume_with_other_seed_fails(digits: Dataset, tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    _run(digits, epochs=1, checkpoint=ckpt, seed=0)
    with pytest.raises(DataError, match="cannot resume") as info:
        _run(digits, epochs=2, checkpoint=ckpt, resume=True, seed=1)
    assert "seed" in str(info.value)


def test_resume_with_other_model_fails(digits: Dataset, tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    _run(digits, epochs=1, checkpoint=ckpt, latent_dim=8)
    with pytest.raises(DataError, match="cannot resume") as info:
        _run(digits, epochs=2, checkpoint=ckpt, resume=True, latent_dim=4)
    assert "model_config" in str(info.value)


def test_load_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not a readable latentwire checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"format": "something else"}, other)
    with pytest.raises(DataError, match="not a latentwire checkpoint"):
        load_checkpoint(other)


# --------------------------------------------------------------------------- early stopping


def test_early_stopping(digits: Dataset) -> None:
    r = _run(digits, epochs=60, patience=2, lr=1e-9)
    assert r.epochs_run < 15
    assert len(r.history) == r.epochs_run
    # it stopped because the last `patience` epochs did not beat the best
    best_epoch = min(r.history, key=lambda h: h["val_loss"])["epoch"]
    assert r.epochs_run - best_epoch == 2


# --------------------------------------------------------------------------- divergence


def _nan_mse(calls_that_fail: int | None) -> Any:
    """F.mse_loss that returns NaN for its first `calls_that_fail` training calls (None:
    every call), as a diverging model would."""
    real = torch.nn.functional.mse_loss
    calls = itertools.count()

    def mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = real(out, target)
        if out.requires_grad and (calls_that_fail is None or next(calls) < calls_that_fail):
            return loss * math.nan
        return loss

    return mse


def test_non_finite_steps_are_skipped(digits: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """A few NaN steps leave the weights untouched; training goes on and ends finite."""
    monkeypatch.setattr(torch.nn.functional, "mse_loss", _nan_mse(5))
    r = _run(digits, epochs=2)
    assert all(torch.isfinite(v).all() for v in r.model.state_dict().values())
    assert all(math.isfinite(h["train_loss"]) for h in r.history)
    assert math.isfinite(r.best_val)


def test_divergence_stops_with_a_clear_error(
    digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.nn.functional, "mse_loss", _nan_mse(None))
    with pytest.raises(DataError, match=r"training diverged at epoch \d+: 50 steps in a row") as e:
        _run(digits, epochs=5)
    assert "lower --lr" in str(e.value)


def _blowup_mse(at_val_calls: set[int]) -> Any:
    """F.mse_loss whose validation (no-grad) calls number `at_val_calls` come out 1000x."""
    real = torch.nn.functional.mse_loss
    calls = itertools.count()

    def mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = real(out, target)
        if not out.requires_grad and next(calls) in at_val_calls:
            return loss * 1000
        return loss

    return mse


def test_blow_up_restores_the_best_weights_and_halves_the_rate(
    digits: Dataset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: Any
) -> None:
    monkeypatch.setattr(torch.nn.functional, "mse_loss", _blowup_mse({2}))  # epoch 3
    ckpt = tmp_path / "b.pt"
    with caplog.at_level("WARNING", logger="latentwire.training"):
        r = _run(digits, epochs=4, checkpoint=ckpt)
    assert "epoch 3: validation loss" in caplog.text and "learning rate halved" in caplog.text
    c = load_checkpoint(ckpt)
    assert (c["lr_factor"], c["recoveries"]) == (0.5, 1)
    assert c["optimizer_state"]["param_groups"][0]["lr"] == pytest.approx(
        trainer_mod.cosine_lr(2e-3, 4, 4) * 0.5
    )
    assert r.best_val == min(h["val_loss"] for h in r.history)
    assert r.history[2]["val_loss"] > 100 * r.best_val


def test_repeated_blow_ups_stop_with_a_clear_error(
    digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.nn.functional, "mse_loss", _blowup_mse({1, 2, 3, 4}))
    with pytest.raises(DataError, match=r"training diverged 4 times .* lower --lr"):
        _run(digits, epochs=6)


def test_gradient_clipping_bounds_each_step(digits: Dataset) -> None:
    """With --clip-grad, the gradient that reaches the optimiser never has a larger global
    norm than the limit."""
    seen: list[float] = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params: Any, max_norm: float, **kw: Any) -> torch.Tensor:
        params = list(params)
        norm = real(params, max_norm, **kw)
        seen.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))))
        return norm

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.utils, "clip_grad_norm_", spy)
        _run(digits, epochs=1, clip_grad=0.01)
    assert seen and max(seen) <= 0.01 * (1 + 1e-4)


def test_negative_clip_grad_fails(digits: Dataset) -> None:
    with pytest.raises(DataError, match="--clip-grad must be >= 0"):
        _run(digits, epochs=1, clip_grad=-1.0)


def test_validation_in_chunks_matches_one_pass(
    digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation runs in bounded chunks; the loss is the same as over the whole split."""
    whole = _run(digits, epochs=2)
    monkeypatch.setattr(trainer_mod, "VAL_CHUNK_VALUES", 64 * 50)  # 50 digits per chunk
    chunked = _run(digits, epochs=2)
    for a, b in zip(whole.history, chunked.history, strict=True):
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)


# --------------------------------------------------------------------------- prior


def test_prior_learns_faster_than_the_transforms(digits: Dataset, tmp_path: Path) -> None:
    """Entropy models: the prior's parameter group runs at prior_lr_scale x the scheduled
    rate; a model without a prior has one group at the scheduled rate."""
    from dataclasses import replace

    cfg = replace(_config(digits, latent_dim=4), prior=True)
    ckpt = tmp_path / "p.pt"
    r = train(
        digits,
        model_config=cfg,
        config=_tconfig(epochs=2, prior_lr_scale=4.0),
        checkpoint=ckpt,
    )
    groups = load_checkpoint(ckpt)["optimizer_state"]["param_groups"]
    assert [g["lr_scale"] for g in groups] == [1.0, 4.0]
    assert groups[1]["lr"] == pytest.approx(4 * groups[0]["lr"])
    assert len(groups[1]["params"]) == len(list(r.model.prior.parameters()))  # type: ignore[union-attr]
    with pytest.raises(DataError, match="prior_lr_scale"):
        train(
            digits,
            model_config=cfg,
            config=_tconfig(epochs=3, prior_lr_scale=2.0),
            checkpoint=ckpt,
            resume=True,
        )
    plain = tmp_path / "plain.pt"
    _run(digits, epochs=1, checkpoint=plain)
    groups = load_checkpoint(plain)["optimizer_state"]["param_groups"]
    assert len(groups) == 1 and groups[0]["lr_scale"] == 1.0


# --------------------------------------------------------------------------- noise


def test_parse_noise_empty() -> None:
    assert parse_noise(None) is None
    assert parse_noise("") is None


def test_mask_noise() -> None:
    corrupt = parse_noise("mask:0.25")
    assert corrupt is not None
    x = torch.rand(200, 500) + 1.0  # no zeros of its own
    out = corrupt(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    zeroed = out == 0
    assert float(zeroed.float().mean()) == pytest.approx(0.25, abs=0.01)
    assert torch.equal(out[~zeroed], x[~zeroed])  # the rest is untouched
    assert bool((x != 0).all())  # the input is not modified in place
    again = corrupt(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # repeatable for a generator seed


def test_gaussian_noise() -> None:
    corrupt = parse_noise("gaussian:0.3:noclip")  # clipping: tests/test_denoise_noise.py
    assert corrupt is not None
    x = torch.rand(200, 500)
    out = corrupt(x, torch.Generator().manual_seed(0))
    diff = out - x
    assert float(diff.std()) == pytest.approx(0.3, rel=0.02)
    assert float(diff.mean()) == pytest.approx(0.0, abs=0.01)
    assert float((diff == 0).float().mean()) < 0.001
    other = corrupt(x, torch.Generator().manual_seed(1))
    assert not torch.equal(out, other)


@pytest.mark.parametrize("spec", ["mask:0", "gaussian:0"])
def test_zero_noise_is_identity(spec: str) -> None:
    corrupt = parse_noise(spec)
    assert corrupt is not None
    x = torch.rand(10, 7) + 0.5
    assert torch.equal(corrupt(x, torch.Generator().manual_seed(0)), x)


@pytest.mark.parametrize(
    "spec",
    [
        "foo:1",
        "gaussian:x",
        "mask:1.5",
        "gaussian:-1",
        "mask:1",
        "mask:-0.1",
        "gaussian",
        "gaussian:nan",
        "gaussian:inf",
        "mask",
    ],
)
def test_bad_noise_spec(spec: str) -> None:
    with pytest.raises(DataError, match="--noise"):
        parse_noise(spec)


def test_denoising_run(digits: Dataset) -> None:
    r = _run(digits, epochs=3, noise="mask:0.25")
    assert math.isfinite(r.best_val)
    assert all(math.isfinite(h["val_loss"]) and math.isfinite(h["train_loss"]) for h in r.history)
    clean = _run(digits, epochs=3)
    assert r.history != clean.history  # the corruption really was applied


# --------------------------------------------------------------------------- loss and output


def test_bce_outside_unit_range_fails(breast_cancer: Dataset) -> None:
    with pytest.raises(DataError, match="--normalize minmax") as info:
        _run(breast_cancer, epochs=1, loss="bce")
    assert "--loss bce" in str(info.value)


def test_bce_on_unit_data_trains(digits: Dataset) -> None:
    r = _run(digits, epochs=2, loss="bce")
    assert math.isfinite(r.best_val)


def test_bce_with_minmax_trains(breast_cancer: Dataset) -> None:
    r = _run(breast_cancer, epochs=1, loss="bce", normalization="minmax")
    assert math.isfinite(r.best_val)


def test_unknown_loss_fails(digits: Dataset) -> None:
    with pytest.raises(DataError, match="--loss"):
        _run(digits, epochs=1, loss="l1")


def test_output_activation_sigmoid_for_digits(digits: Dataset) -> None:
    r = _run(digits, epochs=1)
    assert r.model_config.output_activation == "sigmoid"
    assert isinstance(r.model.decoder[-2], torch.nn.Sigmoid)
    assert r.normalization["kind"] == "none"


def test_output_activation_identity_for_standardized(
    digits: Dataset, breast_cancer: Dataset
) -> None:
    r = _run(breast_cancer, epochs=1)
    assert r.normalization["kind"] == "standard"
    assert r.model_config.output_activation == "identity"
    assert isinstance(r.model.decoder[-2], torch.nn.Identity)
    r = _run(digits, epochs=1, normalization="standard")
    assert r.model_config.output_activation == "identity"


# --------------------------------------------------------------------------- make_config


def test_make_config_dense_for_tables(digits: Dataset) -> None:
    cfg = make_config(digits, model="auto", latent_dim=None, hidden=(128, 64), channels=CHANNELS)
    assert cfg.kind == "dense"
    assert cfg.input_shape == (64,)
    assert cfg.latent_dim == 8
    assert cfg.hidden == (128, 64)


def test_make_config_conv_for_images() -> None:
    cfg = make_config(
        _image_dataset(16), model="auto", latent_dim=None, hidden=HIDDEN, channels=CHANNELS
    )
    assert cfg.kind == "conv"
    assert cfg.input_shape == (3, 16, 16)
    assert cfg.latent_dim == 16
    assert cfg.stride == 8
    dense = make_config(
        _image_dataset(12), model="dense", latent_dim=5, hidden=HIDDEN, channels=CHANNELS
    )
    assert dense.kind == "dense"
    assert dense.latent_dim == 5


def test_make_config_conv_needs_images(digits: Dataset) -> None:
    with pytest.raises(DataError, match="--model conv needs images") as info:
        make_config(digits, model="conv", latent_dim=None, hidden=HIDDEN, channels=CHANNELS)
    assert "(64,)" in str(info.value)


@pytest.mark.parametrize(
    ("height", "width", "channels", "stride"),
    [(20, 20, CHANNELS, 8), (16, 20, CHANNELS, 8), (12, 8, CHANNELS, 8), (7, 8, (8,), 2)],
)
def test_make_config_conv_side_not_multiple_of_stride(
    height: int, width: int, channels: tuple[int, ...], stride: int
) -> None:
    with pytest.raises(DataError, match=f"multiples of {stride}") as info:
        make_config(
            _image_dataset(height, width),
            model="conv",
            latent_dim=None,
            hidden=HIDDEN,
            channels=channels,
        )
    assert f"{height}x{width}" in str(info.value)


def test_make_config_conv_side_multiple_of_stride_ok() -> None:
    cfg = make_config(
        _image_dataset(24), model="conv", latent_dim=None, hidden=HIDDEN, channels=CHANNELS
    )
    assert cfg.input_shape == (3, 24, 24)
