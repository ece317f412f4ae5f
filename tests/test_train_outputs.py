"""`latentwire train` never destroys earlier work: an existing package or checkpoint needs
--force, the package is swapped in atomically, and Ctrl-C says how to resume (issue 11)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from latentwire.runtime.cli import main
from latentwire.training import trainer as trainer_mod
from latentwire.training.trainer import load_checkpoint

from .conftest import error_line

TINY = ["--hidden", "16", "--latent-dim", "4", "--no-progress"]


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    """The CLI sets torch's threads for the whole process: put them back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _train(out: Path, ckpt: Path, *extra: str, epochs: int = 2) -> int:
    argv = ["-q", "train", "--data", "digits", "--epochs", str(epochs), "--threads", "1"]
    return main([*argv, *TINY, "--out", str(out), "--checkpoint", str(ckpt), *extra])


def _fingerprint(pkg: Path) -> str:
    return str(json.loads((pkg / "manifest.json").read_text())["fingerprint"])


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One finished run: (package, checkpoint)."""
    root = tmp_path_factory.mktemp("first")
    out, ckpt = root / "models" / "digits", root / "runs" / "digits" / "checkpoint.pt"
    assert _train(out, ckpt) == 0
    return out, ckpt


def test_second_run_refuses_an_existing_package(
    first_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = first_run
    before = (out / "manifest.json").read_bytes()
    ckpt = tmp_path / "other.pt"
    assert _train(out, ckpt, "--seed", "5") == 1
    line = error_line(capsys)
    assert str(out) in line and "--force" in line and "--out" in line, line
    assert (out / "manifest.json").read_bytes() == before
    assert not ckpt.exists()  # refused before any epoch ran


def test_second_run_refuses_an_existing_checkpoint(
    first_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, ckpt = first_run
    before = ckpt.read_bytes()
    new_out = tmp_path / "elsewhere"
    assert _train(new_out, ckpt, "--seed", "5") == 1
    line = error_line(capsys)
    assert str(ckpt) in line and "--resume" in line and "--force" in line, line
    assert ckpt.read_bytes() == before
    assert not new_out.exists()


def test_force_replaces_package_and_checkpoint(tmp_path: Path) -> None:
    out, ckpt = tmp_path / "pkg", tmp_path / "c.pt"
    assert _train(out, ckpt, epochs=1) == 0
    first = _fingerprint(out)
    assert _train(out, ckpt, "--seed", "5", epochs=1) == 1  # no --force
    assert _fingerprint(out) == first
    assert _train(out, ckpt, "--seed", "5", "--force", epochs=1) == 0
    assert _fingerprint(out) != first
    assert load_checkpoint(ckpt)["identity"]["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "pkg"]  # no temp leftovers


def test_resume_of_a_finished_run_needs_no_force_for_its_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--resume uses the checkpoint (no --force for it); the package it would replace still
    needs --force."""
    out, ckpt = tmp_path / "pkg", tmp_path / "c.pt"
    assert _train(out, ckpt, epochs=1) == 0
    assert _train(tmp_path / "pkg2", ckpt, "--resume", epochs=1) == 0
    assert _train(out, ckpt, "--resume", epochs=1) == 1
    assert "--force" in error_line(capsys)


def test_interrupted_swap_keeps_the_previous_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the new package is being moved into place: the old one is still there,
    whole, and no temporary folder is left behind."""
    out, ckpt = tmp_path / "pkg", tmp_path / "c.pt"
    assert _train(out, ckpt, epochs=1) == 0
    old = _fingerprint(out)
    real_rename = Path.rename

    def rename(self: Path, target: str | Path) -> Path:
        new_pkg = (self / "manifest.json").exists() and _fingerprint(self) != old
        if Path(target) == out and new_pkg:
            raise KeyboardInterrupt
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    assert _train(out, ckpt, "--seed", "3", "--force", epochs=1) == 130
    assert _fingerprint(out) == old
    assert {p.name for p in tmp_path.iterdir()} == {"pkg", "c.pt"}


def test_ctrl_c_names_the_resume_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C during training: one line with the exact command that resumes; running it
    trains only the remaining epochs and exports the package."""
    out, ckpt = tmp_path / "my pkg", tmp_path / "c.pt"
    original_lr = trainer_mod.cosine_lr
    seen: list[int] = []

    def interrupting_lr(base: float, epoch: int, epochs: int) -> float:
        if epoch == 3 and not seen.count(-1):
            seen.append(-1)
            raise KeyboardInterrupt
        seen.append(epoch)
        return original_lr(base, epoch, epochs)

    monkeypatch.setattr(trainer_mod, "cosine_lr", interrupting_lr)
    assert _train(out, ckpt, "--rate-lambda", "0.02", epochs=4) == 130
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("latentwire:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err and str(ckpt) in lines[0] and "epoch 2" in lines[0]
    command = lines[0].split("resume with: ", 1)[1]
    argv = shlex.split(command)
    assert argv[:2] == ["latentwire", "train"] and "--resume" in argv
    assert not out.exists()
    seen.clear()
    seen.append(-1)  # disarmed
    assert main(argv[1:]) == 0
    assert seen[1:] == [3, 4]  # only the remaining epochs ran
    assert load_checkpoint(ckpt)["epoch"] == 4 and (out / "manifest.json").is_file()


def test_ctrl_c_in_the_first_epoch_says_nothing_was_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupt(base: float, epoch: int, epochs: int) -> float:
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "cosine_lr", interrupt)
    assert _train(tmp_path / "pkg", tmp_path / "c.pt") == 130
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("latentwire:")]
    assert len(lines) == 1 and "before the first epoch ended" in lines[0], err


def test_export_refuses_an_existing_package(
    first_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, ckpt = first_run
    target = tmp_path / "re"
    assert main(["-q", "export", str(ckpt), "--out", str(target)]) == 0
    before = (target / "manifest.json").read_bytes()
    again = ["-q", "export", str(ckpt), "--out", str(target), "--codec", "int8"]
    assert main(again) == 1
    line = error_line(capsys)
    assert str(target) in line and "--force" in line
    assert (target / "manifest.json").read_bytes() == before
    assert main([*again, "--force"]) == 0
    assert json.loads((target / "manifest.json").read_text())["codes"]["format"] == "int8"


def _relative_data_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run on ./data.npy whose checkpoint stores the path relative, as versions before
    issue 11 did (they stored --data as typed)."""
    import numpy as np

    here = tmp_path / "here"
    here.mkdir()
    rng = np.random.default_rng(0)
    np.save(here / "data.npy", rng.normal(size=(200, 3)) @ rng.normal(size=(3, 10)))
    monkeypatch.chdir(here)
    ckpt = here / "runs" / "c.pt"
    argv = ["-q", "train", "--data", "data.npy", "--epochs", "2", "--threads", "1", *TINY]
    assert main([*argv, "--out", "m", "--checkpoint", str(ckpt)]) == 0
    saved = torch.load(ckpt, weights_only=True)
    assert saved["identity"]["data"] == str(here / "data.npy")  # stored resolved now
    saved["identity"]["data"] = "data.npy"
    torch.save(saved, ckpt)
    return ckpt


def test_old_checkpoint_with_a_relative_data_path_resumes_and_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = _relative_data_checkpoint(tmp_path, monkeypatch)
    here = ckpt.parent.parent
    argv = ["-q", "train", "--data", "data.npy", "--epochs", "3", "--threads", "1", *TINY]
    assert main([*argv, "--out", "m2", "--checkpoint", str(ckpt), "--resume"]) == 0
    assert load_checkpoint(ckpt)["epoch"] == 3
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    saved = torch.load(ckpt, weights_only=True)
    saved["identity"]["data"] = "data.npy"  # relative again, now looked up near the checkpoint
    torch.save(saved, ckpt)
    assert main(["-q", "export", str(ckpt), "--out", "again"]) == 0
    assert (elsewhere / "again" / "manifest.json").is_file()
    assert here.is_dir()
