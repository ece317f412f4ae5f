"""Training flags of `latentwire train` (latentwire/training/cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from latentwire.runtime.cli import build_parser, main


def _small_npy(tmp_path: Path) -> Path:
    path = tmp_path / "small.npy"
    np.save(path, np.random.default_rng(0).random((200, 16)).astype(np.float32))
    return path


def _linear_nodes(path: Path) -> int:
    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(node.op_type in {"Gemm", "MatMul"} for node in graph.node)


@pytest.mark.slow
def test_hidden_none_trains_a_linear_autoencoder(tmp_path: Path) -> None:
    out = tmp_path / "m"
    code = main(
        [
            "-q",
            "train",
            "--data",
            str(_small_npy(tmp_path)),
            "--hidden",
            "none",
            "--latent-dim",
            "4",
            "--epochs",
            "2",
            "--out",
            str(out),
            "--checkpoint",
            str(tmp_path / "c.pt"),
            "--no-progress",
        ]
    )
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["hidden"] == []
    assert _linear_nodes(out / "encoder.onnx") == 1
    assert _linear_nodes(out / "decoder.onnx") == 1


@pytest.mark.parametrize("text", ["none", "None", "NONE", " none "])
def test_hidden_none_is_case_insensitive(text: str) -> None:
    args = build_parser().parse_args(["train", "--hidden", text])
    assert args.hidden == ()
    assert build_parser().parse_args(["train", "--hidden", "32,16"]).hidden == (32, 16)


@pytest.mark.parametrize("flag", ["--hidden", "--channels"])
@pytest.mark.parametrize("value", ["", ",", "0", "-3", "64,abc"])
def test_bad_widths_are_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", "digits", flag, value, "--out", str(tmp_path / "m")])
    assert info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_channels_none_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--channels", "none", "--out", str(tmp_path / "m")])
    assert info.value.code == 2
    assert "argument --channels" in capsys.readouterr().err


def test_hidden_help_mentions_none(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "none = no hidden layers" in help_text
