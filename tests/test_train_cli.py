"""`latentwire train | export | demo` flags (issue 11): comma lists, --threads, the defaults
that depend on the codec, and the up-front time estimate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from latentwire.runtime.cli import build_parser, main
from latentwire.training import trainer as trainer_mod


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("flag", ["--hidden", "--channels"])
@pytest.mark.parametrize(
    "value", ["128,,64", "128,", ",128", " , ", "64,0", "0", "64,-1", "1.5", "64;32", "128 64"]
)
def test_comma_lists_refuse_empty_zero_and_negative_items(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["train", flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and repr(value) in err, err


def test_comma_lists_take_spaces_around_items() -> None:
    args = build_parser().parse_args(["train", "--hidden", " 128, 64 ", "--channels", "8,16"])
    assert args.hidden == (128, 64) and args.channels == (8, 16)


@pytest.mark.parametrize("command", ["train", "export", "demo"])
@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5"])
def test_threads_must_be_a_positive_integer(
    command: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["ckpt.pt", "--out", "o"] if command == "export" else []
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, *extra, "--threads", value])
    assert info.value.code == 2
    assert "argument --threads" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "export", "demo"])
def test_threads_help_names_the_default(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--threads N" in text and "half the CPU cores, at most 4" in text


@pytest.mark.parametrize(("cpus", "want"), [(1, 1), (2, 1), (3, 1), (4, 2), (8, 4), (64, 4)])
def test_default_threads_leave_half_the_cores(
    cpus: int, want: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trainer_mod, "cpu_count", lambda: cpus)
    assert trainer_mod.default_threads() == want


def test_train_uses_the_threads_asked_for(tmp_path: Path) -> None:
    argv = ["-q", "train", "--data", "digits", "--epochs", "1", "--hidden", "8", "--no-progress"]
    argv += ["--out", str(tmp_path / "m"), "--checkpoint", str(tmp_path / "c.pt")]
    torch.set_num_threads(1)
    assert main([*argv, "--threads", "2"]) == 0
    assert torch.get_num_threads() == 2


def test_train_sets_the_default_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer_mod, "cpu_count", lambda: 64)
    torch.set_num_threads(1)
    argv = ["-q", "train", "--data", "digits", "--epochs", "1", "--hidden", "8", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "m"), "--checkpoint", str(tmp_path / "c")]) == 0
    assert torch.get_num_threads() == 4


def test_entropy_on_digits_defaults_to_the_settings_that_beat_pca() -> None:
    """--codec entropy without --hidden gets the README's digits widths, 256,128 (a K=16
    entropy model was +1.5 dB over PCA at 16 bytes with them, +0.7 with 128,64); other
    codecs keep 128,64; K stays 8; explicit flags win."""
    from latentwire.training.data import load_data
    from latentwire.training.pipeline import make_config

    digits = load_data("digits")

    def chosen(**kwargs: Any) -> tuple[tuple[int, ...], int]:
        args: dict[str, Any] = {"latent_dim": None, "hidden": None, **kwargs}
        cfg = make_config(digits, model="auto", channels=(8,), **args)
        return cfg.hidden, cfg.latent_dim

    assert chosen(codec="entropy") == ((256, 128), 8)
    assert chosen(codec="f32") == ((128, 64), 8)
    assert chosen(codec="int8") == ((128, 64), 8)
    assert chosen(codec="int8", latent_dim=16) == ((128, 64), 16)
    assert chosen(codec="entropy", latent_dim=8) == ((256, 128), 8)
    assert chosen(codec="entropy", hidden=(32,), latent_dim=4) == ((32,), 4)
    assert chosen(codec="entropy", hidden=()) == ((), 8)
    args = build_parser().parse_args(["train", "--codec", "entropy"])
    assert args.hidden is None and args.latent_dim is None  # resolved by make_config


@pytest.mark.parametrize("progress", [[], ["--no-progress"]])
def test_first_epoch_logs_an_estimate_of_the_whole_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], progress: list[str]
) -> None:
    """Runs say after their first epoch how long the rest may take and what bounds it."""
    argv = ["train", "--data", "digits", "--epochs", "3", "--hidden", "8", "--threads", "1"]
    argv += ["--out", str(tmp_path / "m"), "--checkpoint", str(tmp_path / "c.pt"), *progress]
    assert main(argv) == 0
    err = capsys.readouterr().err
    estimates = [ln for ln in err.splitlines() if "estimate" in ln]
    assert len(estimates) == 1, err
    assert "3 epochs" in estimates[0] and "--epochs" in estimates[0]


def test_a_long_run_is_told_how_many_epochs_fit_in_ten_minutes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trainer_mod, "LONG_RUN_SECONDS", 1e-6)  # every run is "long"
    argv = ["train", "--data", "digits", "--epochs", "3", "--hidden", "8", "--threads", "1"]
    argv += ["--out", str(tmp_path / "m"), "--checkpoint", str(tmp_path / "c.pt")]
    assert main([*argv, "--no-progress"]) == 0
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "estimate" in ln]
    assert "--epochs 1 takes about" in line, line
