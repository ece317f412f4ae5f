"""Denoising: the --noise spec (training/noise.py), `latentwire denoise` on arrays and
images, the server's Encode -> Decode giving the same output, and `evaluate --task
denoise` (report files, clean ceiling and its warning)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from latentwire.runtime.cli import main
from latentwire.runtime.errors import DataError
from latentwire.runtime.model import Model
from latentwire.training.noise import parse_noise, parse_sigmas, parse_spec

from .conftest import _train, error_line, running_server


# -- the --noise spec ---------------------------------------------------------------------
def test_spec_forms() -> None:
    assert parse_spec("gaussian:0.3") == parse_spec("gaussian:0.3..0.3")
    s = parse_spec("gaussian:0..0.6")
    assert (s.kind, s.low, s.high, s.blind, s.clip) == ("gaussian", 0.0, 0.6, True, True)
    assert parse_spec("gaussian:0.2:noclip").clip is False
    assert "U(0, 0.6)" in s.describe()
    assert parse_spec("mask:0.25").kind == "mask"


@pytest.mark.parametrize(
    "spec",
    [
        "gaussian:0.5..0.1",
        "gaussian:0..x",
        "gaussian:0.1:clip",
        "mask:0.1..0.2",
        "mask:0.1:noclip",
        "gaussian:",
        "gaussian:..0.3",
        "gaussian:0.1..inf",
    ],
)
def test_spec_refused(spec: str) -> None:
    with pytest.raises(DataError, match="--noise"):
        parse_spec(spec)


def test_blind_noise_draws_one_sigma_per_sample() -> None:
    corrupt = parse_noise("gaussian:0.1..0.5:noclip")
    assert corrupt is not None
    x = torch.full((2000, 400), 0.5)
    sigmas = (corrupt(x, torch.Generator().manual_seed(0)) - x).std(dim=1)
    assert float(sigmas.min()) > 0.085 and float(sigmas.max()) < 0.56  # +-3.5% sampling
    assert float(sigmas.mean()) == pytest.approx(0.3, abs=0.01)  # U(0.1, 0.5)
    assert float(sigmas.std()) == pytest.approx(0.4 / 12**0.5, rel=0.1)
    again = corrupt(x, torch.Generator().manual_seed(0)) - x
    assert torch.equal(again.std(dim=1), sigmas)  # repeatable for a seed


def test_clipping_only_for_unit_data() -> None:
    gen = torch.Generator().manual_seed(0)
    unit = torch.rand(100, 64)
    clipped = parse_noise("gaussian:0.5")(unit, gen)  # type: ignore[misc]
    assert float(clipped.min()) == 0.0 and float(clipped.max()) == 1.0
    kept = parse_noise("gaussian:0.5:noclip")(unit, gen)  # type: ignore[misc]
    assert float(kept.min()) < -0.5 and float(kept.max()) > 1.5
    wide = torch.rand(100, 64) * 4 - 2  # standardised-like data is never clipped
    out = parse_noise("gaussian:0.5")(wide, gen)  # type: ignore[misc]
    assert float(out.min()) < -2 and float(out.max()) > 2


def test_evaluate_sigmas() -> None:
    assert parse_sigmas("gaussian:0.1,0.3,0.5") == ([0.1, 0.3, 0.5], True)
    assert parse_sigmas("gaussian:0.2:noclip") == ([0.2], False)
    for bad in ("gaussian:0", "mask:0.1", "gaussian:0.1,,0.2", "gaussian:0..0.5"):
        with pytest.raises(DataError, match="evaluate --noise"):
            parse_sigmas(bad)


# -- a small denoiser ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def denoiser(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A blind digits denoiser (sigma ~ U(0, 0.6)), briefly trained."""
    return _train(
        tmp_path_factory.mktemp("pkg") / "dn",
        seed=0,
        epochs=25,
        hidden=(128,),
        latent_dim=32,
        noise="gaussian:0..0.6",
    )


def _noisy(x: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(x + sigma * rng.standard_normal(x.shape), 0, 1).astype(np.float32)


def test_manifest_records_noise(denoiser: Path) -> None:
    manifest = json.loads((denoiser / "manifest.json").read_text())
    assert manifest["training"]["noise"] == "gaussian:0..0.6"


def test_reexport_keeps_the_noise(denoiser: Path, tmp_path: Path) -> None:
    """`latentwire export` of a denoiser's checkpoint still says it is one."""
    from latentwire.training.pipeline import export_checkpoint

    manifest = export_checkpoint(denoiser.parent / f"{denoiser.name}.ckpt", out=tmp_path / "re")
    assert manifest["training"]["noise"] == "gaussian:0..0.6"


def test_denoise_arrays(denoiser: Path, digits_x: np.ndarray, tmp_path: Path) -> None:
    noisy = _noisy(digits_x, 0.5)
    np.save(tmp_path / "noisy.npy", noisy)
    out = tmp_path / "clean.npy"
    assert (
        main(["denoise", "--model", str(denoiser), str(tmp_path / "noisy.npy"), "--out", str(out)])
        == 0
    )
    clean = np.load(out)
    model = Model(denoiser, providers="cpu")
    np.testing.assert_allclose(
        clean, model.decode_codes(list(model.encode_codes(noisy))), atol=1e-6
    )
    err_noisy = float(np.mean((noisy - digits_x) ** 2))
    err_clean = float(np.mean((clean - digits_x) ** 2))
    assert err_clean < 0.5 * err_noisy  # it removes noise (> 3 dB), a reconstruction would not


def test_denoise_refuses_to_overwrite(
    denoiser: Path, digits_x: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "noisy.npy", digits_x[:5])
    out = tmp_path / "clean.csv"
    out.write_text("mine\n")
    args = ["denoise", "--model", str(denoiser), str(tmp_path / "noisy.npy"), "--out", str(out)]
    assert main(args) == 1
    assert "exists; pass --force" in error_line(capsys)
    assert out.read_text() == "mine\n"
    assert main([*args, "--force"]) == 0
    assert np.loadtxt(out, delimiter=",").shape == (5, 64)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (["a.npy", "b.png"], "not a mix"),
        (["a.txt"], "unsupported file type"),
        (["a.npy", "b.npy"], "give one .npy"),
    ],
)
def test_denoise_bad_inputs(
    denoiser: Path,
    inputs: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = [str(tmp_path / p) for p in inputs]
    assert (
        main(["denoise", "--model", str(denoiser), *paths, "--out", str(tmp_path / "o.npy")]) == 1
    )
    assert message in error_line(capsys)


def test_plain_model_warns(
    digits_pkg: Path, digits_x: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "x.npy", digits_x[:3])
    assert (
        main(
            [
                "denoise",
                "--model",
                str(digits_pkg),
                str(tmp_path / "x.npy"),
                "--out",
                str(tmp_path / "y.npy"),
            ]
        )
        == 0
    )
    assert "trained without --noise" in capsys.readouterr().err


def test_denoise_images_of_any_size(image_pkg: Path, tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(37, 50), (16, 16)]  # (H, W): neither side a multiple of the stride (4) first
    inputs = []
    for i, (h, w) in enumerate(sizes):
        path = tmp_path / f"in{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        inputs.append(str(path))
    out = tmp_path / "out.png"
    assert main(["denoise", "--model", str(image_pkg), *inputs, "--out", str(out)]) == 0
    model = Model(image_pkg, providers="cpu")
    for i, (h, w) in enumerate(sizes):
        with Image.open(tmp_path / f"out-{i}.png") as im:
            got = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
        assert got.shape == (3, h, w)
        with Image.open(inputs[i]) as im:
            x = np.asarray(im.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)[None]
        want = np.clip(np.rint(model.decode_codes(list(model.encode_codes(x)))[0]), 0, 255)
        np.testing.assert_array_equal(got, want)


def test_server_encode_decode_matches_cli(
    denoiser: Path, digits_x: np.ndarray, tmp_path: Path
) -> None:
    from latentwire.runtime.client import Client

    noisy = _noisy(digits_x[:20], 0.3, seed=1)
    np.save(tmp_path / "noisy.npy", noisy)
    assert (
        main(
            [
                "denoise",
                "--model",
                str(denoiser),
                str(tmp_path / "noisy.npy"),
                "--out",
                str(tmp_path / "c.npy"),
            ]
        )
        == 0
    )
    root = tmp_path / "repo"
    shutil.copytree(denoiser, root / "dn" / "1")
    with running_server(root) as srv, Client(f"127.0.0.1:{srv.port}", timeout=10) as client:
        codes = client.encode("dn", noisy)
        served = client.decode(codes).x
    np.testing.assert_allclose(served, np.load(tmp_path / "c.npy"), atol=1e-6)


# -- evaluate --task denoise --------------------------------------------------------------
def test_evaluate_report(
    digits_pkg: Path, denoiser: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "rep"
    args = [
        "evaluate",
        "--model",
        str(denoiser),
        "--model",
        str(digits_pkg),
        "--data",
        "digits",
        "--noise",
        "gaussian:0.05,0.5",
        "--tune-on",
        "20",
        "--max-samples",
        "60",
        "--report",
        str(report),
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    doc = json.loads((report / "report.json").read_text())
    assert doc["schema"] == "latentwire.denoise-report"
    assert {p.name for p in report.iterdir()} == {
        "report.json",
        "report.md",
        "psnr.png",
        "crops.png",
    }
    methods = {r["method"] for r in doc["rows"]}
    assert {"noisy", "nl-means", "tv", "pca-wiener", "model"} <= methods
    noisy = {r["sigma"]: r["psnr_db"] for r in doc["rows"] if r["method"] == "noisy"}
    assert noisy[0.05] > 25 > noisy[0.5]
    ceilings = doc["ceilings_db"]
    assert set(ceilings) == {"dn", "digits"}
    # a short-trained K=8 codec is far below a sigma-0.05 input: warned, both in the log
    # and in the report; at sigma 0.5 it is not
    assert ceilings["digits"] < noisy[0.05]
    warned = [w for w in doc["warnings"] if "model digits " in w]
    assert len(warned) == 1 and "sigma 0.05:" in warned[0]
    assert "model digits reconstructs clean test data" in captured.err
    dn = doc["summary"]["0.5"]["models"]["dn"]
    assert dn["gain_db"] > 3 and not dn["below_noisy"]
    assert "clean ceiling" in captured.out
    for r in doc["rows"]:
        if r["kind"] == "baseline" and r["method"] != "noisy":
            assert r["params"]["k"] > 0  # the tuned strength is recorded


def test_evaluate_needs_sigmas(
    digits_pkg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["evaluate", "--model", str(digits_pkg), "--data", "digits", "--report", str(tmp_path)]
    assert main([*base, "--task", "denoise"]) == 1
    assert "needs --noise" in error_line(capsys)
    assert main([*base, "--noise", "gaussian:0.1..0.3"]) == 1
    assert "evaluate --noise must be" in error_line(capsys)
