"""`latentwire train --embed-loss`: neighbourhood-preserving terms on the latents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from latentwire.runtime.cli import main
from latentwire.runtime.errors import DataError
from latentwire.training.embed_loss import local_stress, parse_embed_loss, sne

from .conftest import error_line


def test_terms_vanish_on_an_isometry_and_grow_when_neighbours_break() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 10, generator=gen)
    rotation, _ = torch.linalg.qr(torch.randn(10, 10, generator=gen))
    z = x @ rotation  # distances kept exactly
    assert float(local_stress(x, z)) < 1e-6 and float(sne(x, z)) < 1e-4
    shuffled = z[torch.randperm(64, generator=gen)]
    assert float(local_stress(x, shuffled)) > 0.05 and float(sne(x, shuffled)) > 0.2
    assert float(local_stress(x, 3 * z)) > 1  # local keeps the data's units...
    assert float(sne(x, 3 * z)) < 1e-4  # ...sne does not care about scale


def test_spec_parsing_and_gradients() -> None:
    term = parse_embed_loss("local:5+sne:0.01")
    assert term is not None and parse_embed_loss(None) is None
    x = torch.rand(32, 8)
    z = torch.randn(32, 3, requires_grad=True)
    loss = term(x, z)
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and loss.item() > 0
    assert float(term(x[:2], z[:2]).detach()) == 0.0  # too few samples for neighbours
    for bad in ("umap:1", "local", "local:-1", "local:nan", "local:1+"):
        with pytest.raises(DataError, match="--embed-loss must be"):
            parse_embed_loss(bad)


def test_train_flag_reaches_the_loss_and_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["-q", "train", "--data", "digits", "--latent-dim", "2", "--epochs", "1"]
    argv += ["--threads", "1", "--no-progress", "--checkpoint", str(tmp_path / "ck.pt")]
    assert main([*argv, "--embed-loss", "local:5", "--out", str(tmp_path / "m")]) == 0
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["training"]["embed_loss"] == "local:5"
    ck = torch.load(tmp_path / "ck.pt", weights_only=False)
    assert ck["identity"]["embed_loss"] == "local:5"
    entropy = ["--codec", "entropy", "--embed-loss", "sne:1", "--out", str(tmp_path / "e")]
    assert main([*argv, "--force", *entropy]) == 1
    assert "not entropy" in error_line(capsys)
