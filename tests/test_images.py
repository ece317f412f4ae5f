"""PNG/JPEG in, PNG out: `latentwire encode IMAGES... ` and `decode --out X.png` with the
convolutional image model, plus the image helpers of latentwire.runtime.images."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from latentwire.runtime import load
from latentwire.runtime.cli import main
from latentwire.runtime.codes import read_codes_file
from latentwire.runtime.errors import DataError
from latentwire.runtime.images import (
    bits_for,
    is_image_path,
    numbered_paths,
    read_images,
    write_png,
)
from latentwire.runtime.manifest import Normalization

from .conftest import error_line


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """scikit-learn's two sample photos, (427, 640, 3) uint8 each."""
    from sklearn.datasets import load_sample_images

    return [np.asarray(img) for img in load_sample_images().images]


def _save(path: Path, pixels: np.ndarray, **kwargs: Any) -> Path:
    Image.fromarray(pixels).save(path, **kwargs)
    return path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse) if mse > 0 else float("inf")


def _check_output(pkg: Path, src: Path, out: Path) -> None:
    """`out` has the size and mode of `src`, a sane PSNR, and the pixels the Python API
    gives for the same image (rounded to 8 bits)."""
    model = load(pkg, providers="cpu")
    with Image.open(src) as a, Image.open(out) as b:
        assert (b.size, b.mode) == (a.size, a.mode)
        x, y = np.asarray(a), np.asarray(b)
    api = model.decode_codes(list(model.encode_codes(x.transpose(2, 0, 1)[None].astype("f4"))))
    want = np.clip(np.rint(api[0].transpose(1, 2, 0)), 0, 255)
    assert np.abs(y - want).max() <= 1
    assert 10 < psnr(x, y) < np.inf, psnr(x, y)


def _round_trip(pkg: Path, src: Path, tmp: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    codes, out = tmp / f"{src.stem}.lwc", tmp / f"{src.stem}-out.png"
    assert main(["encode", "--model", str(pkg), str(src), "--out", str(codes)]) == 0
    assert main(["decode", "--model", str(pkg), str(codes), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "encoded 1 image (" in err and "decoded 1 image (" in err, err
    _check_output(pkg, src, out)
    return out


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_round_trip_sides_multiple_of_stride(
    image_pkg: Path,
    photos: list[np.ndarray],
    suffix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    crop = np.ascontiguousarray(photos[0][240:288, :64])  # 48 x 64, sides multiples of 8
    src = _save(tmp_path / f"in{suffix}", crop, quality=95)
    out = _round_trip(image_pkg, src, tmp_path, capsys)
    with Image.open(out) as b:
        assert (b.size, b.mode) == ((64, 48), "RGB")


def test_round_trip_any_size(
    image_pkg: Path, photos: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """45 x 61 is no multiple of the stride: the runtime pads and crops it back."""
    crop = np.ascontiguousarray(photos[0][240:285, 260:321])
    src = _save(tmp_path / "odd.png", crop)
    out = _round_trip(image_pkg, src, tmp_path, capsys)
    with Image.open(out) as b:
        assert (b.size, b.mode) == ((61, 45), "RGB")


def test_several_images_of_different_sizes(
    image_pkg: Path, photos: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crops = [photos[0][240:288, :64], photos[0][288:320, 384:480], photos[0][288:336, 448:512]]
    srcs = [
        _save(tmp_path / "a.png", np.ascontiguousarray(crops[0])),
        _save(tmp_path / "b.jpg", np.ascontiguousarray(crops[1]), quality=95),
        _save(tmp_path / "c.png", np.ascontiguousarray(crops[2])),
    ]
    codes = tmp_path / "all.lwc"
    assert main(["encode", "--model", str(image_pkg), *map(str, srcs), "--out", str(codes)]) == 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    size = codes.stat().st_size
    assert re.fullmatch(
        rf"encoded 3 images \(64x48, 96x32\) -> {re.escape(str(codes))}: {size:,} bytes, "
        rf"{size / 3:,.0f} bytes/image, \d+\.\d\d bpp",
        line,
    ), line
    bpp = float(line.split()[-2])
    assert bpp == pytest.approx(8 * size / (2 * 48 * 64 + 32 * 96), abs=0.01)
    messages = read_codes_file(codes)
    assert [m.count for m in messages] == [1, 1, 1]  # one image per message, in order

    out = tmp_path / "out.png"
    assert main(["decode", "--model", str(image_pkg), str(codes), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "decoded 3 images (64x48, 96x32)" in err and "out-0.png .. " in err, err
    assert not out.exists()
    for i, src in enumerate(srcs):
        _check_output(image_pkg, src, tmp_path / f"out-{i}.png")

    # the same size only: one array is fine
    same = tmp_path / "same.lwc"
    argv = ["encode", "--model", str(image_pkg), str(srcs[0]), str(srcs[2]), "--out", str(same)]
    assert main(argv) == 0
    npy = tmp_path / "same.npy"
    assert main(["decode", "--model", str(image_pkg), str(same), "--out", str(npy)]) == 0
    assert np.load(npy).shape == (2, 3, 48, 64)


def test_image_errors_give_one_line(
    image_pkg: Path,
    digits_pkg: Path,
    photos: list[np.ndarray],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rgb = _save(tmp_path / "rgb.png", np.ascontiguousarray(photos[0][:32, :32]))
    wide = _save(tmp_path / "wide.png", np.ascontiguousarray(photos[0][:32, :64]))
    grey = _save(tmp_path / "grey.png", np.ascontiguousarray(photos[0][:32, :32, 0]))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(rgb.read_bytes()[:60])
    notpng = tmp_path / "text.png"
    notpng.write_text("hello")
    mixed = tmp_path / "mixed.lwc"
    assert (
        main(["-q", "encode", "--model", str(image_pkg), str(rgb), str(wide), "--out", str(mixed)])
        == 0
    )
    np.save(tmp_path / "x.npy", np.zeros((2, 64), np.float32))
    enc = ["encode", "--model", str(image_pkg)]
    out = ["--out", str(tmp_path / "c.lwc")]
    cases = {
        "corrupt png": ([*enc, str(corrupt), *out], f"{corrupt}: cannot read the image"),
        "not an image": ([*enc, str(notpng), *out], f"{notpng}: cannot read the image"),
        "missing image": ([*enc, str(tmp_path / "nope.jpg"), *out], "no such file"),
        "grey to rgb": ([*enc, str(grey), *out], "model 'sample-images-test' expects 3 channel"),
        "image to dense": (
            ["encode", "--model", str(digits_pkg), str(rgb), *out],
            "samples of shape (64), not images",
        ),
        "png from dense": (
            ["decode", "--model", str(digits_pkg), str(mixed), "--out", str(tmp_path / "o.png")],
            "not images",
        ),
        "mixed sizes to npy": (
            ["decode", "--model", str(image_pkg), str(mixed), "--out", str(tmp_path / "o.npy")],
            "write .png instead",
        ),
        "images and arrays": ([*enc, str(rgb), str(tmp_path / "x.npy"), *out], "not a mix"),
        "two arrays": ([*enc, str(tmp_path / "x.npy"), str(tmp_path / "x.npy"), *out], "one .npy"),
        "unknown type": ([*enc, str(tmp_path / "x.gif"), *out], "use .npy, .npz, .csv or PNG"),
    }
    capsys.readouterr()
    for label, (argv, expected) in cases.items():
        assert main(argv) == 1, label
        line = error_line(capsys)
        assert expected in line, (label, line)


def test_help_mentions_images(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("encode", "decode"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "PNG" in text
    assert "out.png -> out-0.png, out-1.png" in text


# -- the helpers ------------------------------------------------------------------------
def test_read_images_modes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((5, 7), 128, np.uint8)])
    grey = rgb[..., 0].copy()
    deep = (rng.integers(0, 65536, (5, 7))).astype(np.uint16)
    files = {
        "rgb.png": Image.fromarray(rgb),
        "rgba.png": Image.fromarray(rgba),
        "grey.png": Image.fromarray(grey),
        "la.png": Image.fromarray(grey).convert("LA"),
        "p.png": Image.fromarray(rgb).convert("P"),
        "deep.png": Image.fromarray(deep),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
    }
    for name, im in files.items():
        im.save(tmp_path / name)
    with caplog.at_level(logging.INFO, logger="latentwire.runtime"):
        got = dict(zip(files, read_images(tmp_path / n for n in files), strict=True))
    assert all(x.dtype == np.float32 for x in got.values())
    np.testing.assert_array_equal(got["rgb.png"], rgb.transpose(2, 0, 1))
    np.testing.assert_array_equal(got["rgba.png"], rgb.transpose(2, 0, 1))
    np.testing.assert_array_equal(got["grey.png"], grey[None])
    np.testing.assert_array_equal(got["la.png"], grey[None])
    np.testing.assert_array_equal(got["deep.png"], deep[None])  # not cut to 8 bits
    assert got["p.png"].shape == got["cmyk.jpg"].shape == (3, 5, 7)
    assert "rgba.png: dropped the alpha channel (mode RGBA)" in caplog.text
    assert "la.png: dropped the alpha channel" in caplog.text
    assert "rgb.png:" not in caplog.text


def test_write_png(tmp_path: Path) -> None:
    x = np.array([[[-3.0, 0.4, 0.6, 254.6, 300.0]]], np.float32)
    write_png(tmp_path / "g.png", x)
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), [[0, 0, 1, 255, 255]])
    write_png(tmp_path / "d.png", x * 300, bits=16)
    np.testing.assert_array_equal(
        read_images([tmp_path / "d.png"])[0], [[[0, 120, 180, 65535, 65535]]]
    )
    rgb = np.arange(3 * 2 * 4, dtype=np.float32).reshape(3, 2, 4)
    write_png(tmp_path / "c.png", rgb)
    np.testing.assert_array_equal(read_images([tmp_path / "c.png"])[0], rgb)
    for bad, bits in ((np.zeros((2, 4, 4)), 8), (np.zeros((4, 4)), 8), (rgb, 16)):
        with pytest.raises(DataError):
            write_png(tmp_path / "bad.png", bad, bits=bits)


def test_small_helpers() -> None:
    assert is_image_path("a/B.PNG") and is_image_path("x.jpeg") and not is_image_path("x.npy")
    assert numbered_paths("d/out.png", 1) == [Path("d/out.png")]
    assert numbered_paths("d/out.png", 2) == [Path("d/out-0.png"), Path("d/out-1.png")]

    def norm(kind: str, offset: float, scale: float) -> Normalization:
        return Normalization.from_dict({"kind": kind, "offset": [offset], "scale": [scale]}, (1,))

    assert bits_for(norm("scale", 0, 255)) == 8
    assert bits_for(norm("standard", 120, 60)) == 8
    assert bits_for(norm("scale", 0, 65535)) == 16
    assert bits_for(norm("minmax", 1000, 200)) == 16


def test_pillow_missing_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` -> ImportError
    hint = r"^reading images needs Pillow: pip install 'latentwire\[images\]' \(Pillow\)$"
    with pytest.raises(DataError, match=hint):
        read_images([tmp_path / "a.png"])
