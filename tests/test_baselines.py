"""Tests for the rate–distortion baselines and the report writer.

Covers latentwire/training/baselines.py and latentwire/training/report.py.
"""

from __future__ import annotations

import io
import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from latentwire.training import baselines as bl
from latentwire.training.baselines import (
    Point,
    image_stats,
    jpeg_payload_bytes,
    jpeg_points,
    lossless_points,
    pca_points,
    psnr,
    ssim,
    webp_payload_bytes,
    webp_points,
)
from latentwire.training.report import REPORT_SCHEMA, format_table, write_report

# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn digits in 0..1, a fixed 80/20 split."""
    x = load_digits().data.astype(np.float32) / 16.0
    idx = np.random.default_rng(0).permutation(len(x))
    n_train = int(0.8 * len(x))
    return x[idx[:n_train]], x[idx[n_train:]]


def _smooth_images(n: int, channels: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth random images (N, C, H, W) in 0..255: gradients plus a few blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, channels, size, size), dtype=np.float32)
    for i in range(n):
        for c in range(channels):
            a, b, ph = rng.uniform(1, 4, size=3)
            img = 0.5 + 0.35 * np.sin(a * 3 * xx + ph) * np.cos(b * 3 * yy)
            out[i, c] = 255 * np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    return out


def _encode(img_hwc: np.ndarray, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img_hwc).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _rgb(size: int = 48) -> np.ndarray:
    return np.ascontiguousarray(
        np.clip(_smooth_images(1, 3, size, seed=3)[0].transpose(1, 2, 0), 0, 255).astype(np.uint8)
    )


# --------------------------------------------------------------------------- metrics


def test_psnr_is_one_mse_over_the_whole_set() -> None:
    x = np.zeros((2, 4))
    x_hat = np.zeros((2, 4))
    x_hat[0] = 0.1  # sample 0: MSE 0.01, sample 1: exact
    assert psnr(x, x_hat, 1.0) == pytest.approx(10 * math.log10(1 / 0.005))
    assert psnr(x, x, 1.0) == math.inf
    assert psnr(x, x_hat, 2.0) == pytest.approx(psnr(x, x_hat, 1.0) + 20 * math.log10(2))
    with pytest.raises(ValueError):
        psnr(x, x_hat[:1], 1.0)


@pytest.mark.parametrize(("channels", "size"), [(1, 8), (3, 8), (1, 32), (3, 5)])
def test_ssim_identity_and_noise(channels: int, size: int) -> None:
    x = _smooth_images(4, channels, size)
    assert ssim(x, x, 255.0) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(1)
    values = [ssim(x, x + rng.normal(0, s, x.shape), 255.0) for s in (2.0, 10.0, 40.0)]
    assert 1.0 > values[0] > values[1] > values[2]
    noisy = x + rng.normal(0, 10.0, x.shape)
    assert ssim(x, noisy, 255.0) == pytest.approx(ssim(noisy, x, 255.0))


def test_ssim_of_a_constant_shift_is_below_one_and_range_matters() -> None:
    x = _smooth_images(2, 1, 16)
    assert ssim(x, x + 20.0, 255.0) < 0.999
    # the same images in 0..1 units with data_range 1 give the same SSIM
    assert ssim(x / 255, (x + 20.0) / 255, 1.0) == pytest.approx(ssim(x, x + 20.0, 255.0))


def test_image_stats() -> None:
    st = image_stats(np.zeros((2, 3, 5, 7)))
    assert (st.channels, st.height, st.width, st.pixels_per_sample) == (3, 5, 7, 35)
    assert image_stats((1, 8, 8)).pixels_per_sample == 64
    with pytest.raises(ValueError):
        image_stats(np.zeros((2, 64)))


# --------------------------------------------------------------------------- PCA


def test_pca_int8_point_matches_the_runtime_formula(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    xtr, xte = digits
    (pt,) = pca_points(xtr, xte, [("int8", 8)], data_range=1.0, image_shape=(1, 8, 8))
    assert (pt.method, pt.format, pt.label) == ("pca", "int8", "PCA k=8 int8")
    assert pt.bytes_per_sample == 8.0 and pt.params["k"] == 8
    assert pt.bpp == pytest.approx(1.0)
    assert pt.ssim is not None and 0.5 < pt.ssim < 1.0

    pca = PCA(n_components=8, svd_solver="full").fit(xtr.astype(np.float64))
    ztr, zte = pca.transform(xtr.astype(np.float64)), pca.transform(xte.astype(np.float64))
    lo, hi = ztr.min(0), ztr.max(0)
    # the runtime's rule: offset = middle of the range, 254 steps span it, codes -127..127
    scale = (np.maximum(hi - lo, 1e-6) / 254).astype(np.float32)
    offset = ((lo + hi) / 2).astype(np.float32)
    q = np.clip(np.rint((zte.astype(np.float32) - offset) / scale), -128, 127).astype(np.int8)
    x_hat = pca.inverse_transform(q.astype(np.float64) * scale + offset)
    assert pt.psnr_db == pytest.approx(psnr(xte, x_hat, 1.0), abs=1e-6)
    # int8 costs a little over f32 at the same k, far less than a smaller k
    (f32,) = pca_points(xtr, xte, [("f32", 32)], data_range=1.0)
    assert f32.params["k"] == 8 and f32.bytes_per_sample == 32.0
    assert f32.psnr_db is not None and pt.psnr_db is not None
    assert f32.psnr_db - 0.2 < pt.psnr_db <= f32.psnr_db + 1e-9


def test_pca_fixed_formats_k_and_skips(digits: tuple[np.ndarray, np.ndarray]) -> None:
    xtr, xte = digits
    pts = pca_points(xtr, xte, [("f32", 3), ("f16", 16), ("int8", 1000)], data_range=1.0)
    assert [(p.format, p.params["k"], p.bytes_per_sample) for p in pts] == [
        ("f16", 8, 16.0),
        ("int8", 64, 64.0),  # capped at D
    ]
    assert all(p.bpp is None and p.ssim is None for p in pts)
    with pytest.raises(ValueError, match="unknown format"):
        pca_points(xtr, xte, [("f8", 8)], data_range=1.0)


def test_pca_f32_with_all_components_is_near_lossless(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    xtr, xte = digits
    (pt,) = pca_points(xtr, xte, [("f32", 4 * 64)], data_range=1.0)
    assert pt.params["k"] == 64
    assert pt.psnr_db is not None and pt.psnr_db > 100


@pytest.mark.parametrize("budget", [4.0, 12.0])
def test_pca_entropy_hits_the_budget(digits: tuple[np.ndarray, np.ndarray], budget: float) -> None:
    xtr, xte = digits
    (pt,) = pca_points(xtr, xte, [("entropy", budget)], data_range=1.0)
    assert pt.format == "entropy" and pt.params["k"] == 64
    assert abs(pt.bytes_per_sample - budget) <= 0.05 * budget
    assert pt.params["step"] > 0
    # the measured stream is what a coder of the same symbols produces
    pca = PCA(svd_solver="full").fit(xtr.astype(np.float64))
    z_train, z_test = pca.transform(xtr.astype(np.float64)), pca.transform(xte.astype(np.float64))
    sym, words, tables = bl._entropy_at(z_train, z_test, pt.params["step"])
    assert np.array_equal(bl._decode(words, tables, len(xte)), sym)
    assert 4 * len(words) / len(xte) == pytest.approx(pt.bytes_per_sample)
    # transform coding at ~12 bytes beats 12 int8 components
    if budget == 12.0:
        (int8,) = pca_points(xtr, xte, [("int8", 12)], data_range=1.0)
        assert pt.psnr_db is not None and int8.psnr_db is not None
        assert pt.psnr_db > int8.psnr_db


def test_entropy_stream_round_trips_with_clipping_and_constant_components() -> None:
    rng = np.random.default_rng(0)
    z_train = rng.normal(0, [3.0, 1.0, 0.0], size=(500, 3))  # last component is constant
    z_test = rng.normal(0, [3.0, 1.0, 0.0], size=(50, 3))
    z_test[0, 0] = 1000.0  # far outside the training support: clipped
    sym, words, tables = bl._entropy_at(z_train, z_test, 0.5)
    assert tables.models[2] is None
    assert sym[0, 0] == tables.hi[0]
    decoded = bl._decode(words, tables, len(z_test))
    assert np.array_equal(decoded, sym)
    decoded[1, 1] += 1
    assert not np.array_equal(decoded, sym)


def test_the_pca_entropy_baseline_gives_the_same_stream_without_constriction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where constriction has no wheel (aarch64) latentwire's coder measures the baseline:
    float probabilities quantised and coded to the very same words."""
    rng = np.random.default_rng(1)
    z_train = rng.normal(0, [3.0, 1.0, 0.0, 7.0], size=(800, 4))
    z_test = rng.normal(0, [3.0, 1.0, 0.0, 7.0], size=(120, 4))
    sym, words, _ = bl._entropy_at(z_train, z_test, 0.3)
    monkeypatch.setattr(bl, "default_coder", lambda: "python")
    sym2, words2, tables2 = bl._entropy_at(z_train, z_test, 0.3)
    assert np.array_equal(sym, sym2) and np.array_equal(words, words2)
    assert np.array_equal(bl._decode(words2, tables2, len(z_test)), sym)


# --------------------------------------------------------------------------- JPEG/WebP


def _jpeg_scan_bounds(data: bytes) -> tuple[int, int]:
    """(end of the single SOS header, offset of EOI) for a baseline file."""
    sos = data.index(b"\xff\xda")
    length = int.from_bytes(data[sos + 2 : sos + 4], "big")
    return sos + 2 + length, len(data) - 2


@pytest.mark.parametrize("gray", [True, False])
def test_jpeg_payload_is_the_scan_data(gray: bool) -> None:
    img = _rgb()[:, :, 0] if gray else _rgb()
    for kwargs in ({"quality": 50, "optimize": True}, {"quality": 80, "restart_marker_blocks": 1}):
        data = _encode(img, "JPEG", **kwargs)
        start, eoi = _jpeg_scan_bounds(data)
        assert data[eoi:] == b"\xff\xd9"
        assert jpeg_payload_bytes(data) == eoi - start
        assert 0 < jpeg_payload_bytes(data) < len(data)


def test_jpeg_payload_sums_the_scans_of_a_progressive_file() -> None:
    data = _encode(_rgb(64), "JPEG", quality=75, progressive=True)
    assert data.count(b"\xff\xda") > 1
    payload = jpeg_payload_bytes(data)
    baseline = jpeg_payload_bytes(_encode(_rgb(64), "JPEG", quality=75, optimize=True))
    # several scans plus their headers: less than the file, in the baseline's ballpark
    assert 0.5 * baseline < payload < len(data) - 300


def test_jpeg_payload_rejects_broken_files() -> None:
    data = _encode(_rgb(), "JPEG", quality=50)
    with pytest.raises(ValueError, match="SOI"):
        jpeg_payload_bytes(b"\x89PNG" + data)
    with pytest.raises(ValueError, match="EOI"):
        jpeg_payload_bytes(data[:-2])


def test_webp_payload_is_the_vp8_chunk() -> None:
    img = _rgb()
    plain = _encode(img, "WEBP", quality=50, method=6)
    assert plain[12:16] == b"VP8 "
    assert int.from_bytes(plain[4:8], "little") == len(plain) - 8  # RIFF size
    payload = webp_payload_bytes(plain)
    assert payload == int.from_bytes(plain[16:20], "little")
    assert len(plain) - 21 <= payload <= len(plain) - 20
    # extended format (VP8X + VP8 + EXIF): same VP8 chunk, more file
    exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00"
    extended = _encode(img, "WEBP", quality=50, method=6, exif=exif)
    assert extended[12:16] == b"VP8X"
    assert webp_payload_bytes(extended) == payload
    assert len(extended) > len(plain)
    lossless = _encode(img, "WEBP", lossless=True)
    assert 0 < webp_payload_bytes(lossless) < len(lossless)
    with pytest.raises(ValueError):
        webp_payload_bytes(b"RIFF\x04\x00\x00\x00WEBP")


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_and_webp_points(channels: int) -> None:
    images = _smooth_images(6, channels, 24)
    for fn, method in ((jpeg_points, "jpeg"), (webp_points, "webp")):
        pts = fn(images, (10, 90), data_range=255.0)
        assert [p.params["quality"] for p in pts] == [10, 90]
        lo, hi = pts
        for p in pts:
            assert p.method == method and p.format is None and not p.lossless
            assert p.file_bytes_per_sample is not None and p.file_bpp is not None
            assert 0 < p.bytes_per_sample < p.file_bytes_per_sample
            assert p.bpp == pytest.approx(8 * p.bytes_per_sample / (24 * 24))
            assert p.psnr_db is not None and 15 < p.psnr_db < 60
            assert p.ssim is not None and 0 < p.ssim <= 1
        assert hi.bytes_per_sample > lo.bytes_per_sample
        assert hi.psnr_db is not None and lo.psnr_db is not None and hi.psnr_db > lo.psnr_db
        assert lo.label == ("JPEG q=10" if method == "jpeg" else "WebP q=10")
    # one image: the file size is exactly what Pillow writes for its uint8 version
    u8 = np.clip(np.rint(images[0]), 0, 255).astype(np.uint8)
    hwc = np.ascontiguousarray(u8[0] if channels == 1 else u8.transpose(1, 2, 0))
    (one,) = jpeg_points(images[:1], (50,))
    assert one.file_bytes_per_sample == len(_encode(hwc, "JPEG", quality=50, optimize=True))
    with pytest.raises(ValueError):
        jpeg_points(np.repeat(images[:, :1], 2, axis=1), (50,))


def test_codec_points_over_images_of_different_sizes() -> None:
    """A list of images of different sizes gives one point per quality: bytes summed over
    the images, PSNR from one MSE over every pixel, SSIM the mean over the images."""
    small, big = _smooth_images(1, 3, 16, seed=1), _smooth_images(1, 3, 40, seed=2)
    for fn in (jpeg_points, webp_points):
        (both,) = fn([small, big], (50,))
        (a,), (b,) = fn(small, (50,)), fn(big, (50,))
        assert both.params == {"quality": 50, "images": 2}
        assert both.bytes_per_sample == (a.bytes_per_sample + b.bytes_per_sample) / 2
        assert both.file_bytes_per_sample == pytest.approx(
            ((a.file_bytes_per_sample or 0) + (b.file_bytes_per_sample or 0)) / 2
        )
        assert a.psnr_db is not None and b.psnr_db is not None and both.psnr_db is not None
        se = [10 ** (-p / 10) * n for p, n in ((a.psnr_db, small.size), (b.psnr_db, big.size))]
        pooled = -10 * math.log10(sum(se) / (small.size + big.size))
        assert both.psnr_db == pytest.approx(pooled, abs=1e-9)
        assert both.ssim == pytest.approx(((a.ssim or 0) + (b.ssim or 0)) / 2)
        assert both.bpp == pytest.approx(8 * both.bytes_per_sample / ((16 * 16 + 40 * 40) / 2))
    u8 = [np.clip(np.rint(i), 0, 255).astype(np.uint8) for i in (small, big)]
    zl, _ = lossless_points(u8)
    assert zl.bytes_per_sample == sum(len(zlib.compress(i.tobytes(), 9)) for i in u8) / 2
    assert zl.params["images"] == 2


def test_lossless_points() -> None:
    x = (np.arange(40 * 64) % 17).astype(np.uint8).reshape(40, 1, 8, 8)
    zl, zs = lossless_points(x)
    assert (zl.method, zs.method) == ("zlib", "zstd")
    assert zl.lossless and zl.psnr_db is None and zl.format is None
    assert zl.bytes_per_sample == len(zlib.compress(x.tobytes(), 9)) / 40
    assert zl.params["raw_bytes_per_sample"] == 64.0
    assert 0 < zs.bytes_per_sample < 64.0
    assert zl.bpp == pytest.approx(8 * zl.bytes_per_sample / 64)
    flat = lossless_points(x.reshape(40, 64).astype(np.float32))
    assert flat[0].params["raw_bytes_per_sample"] == 256.0 and flat[0].bpp is None


# --------------------------------------------------------------------------- report


def _points() -> list[Point]:
    images = _smooth_images(3, 1, 16)
    pts = jpeg_points(images, (20, 80)) + webp_points(images, (20, 80))
    pts += lossless_points(images.astype(np.uint8))
    pts.append(Point("ae", "m int8", "int8", 4.0, 30.0, bpp=2.0, ssim=0.9, model="models/m"))
    pts.append(Point("ae", "m f32", "f32", 16.0, math.inf, bpp=8.0, ssim=1.0, model="models/m"))
    pts.append(Point("pca", "PCA k=2 f32", "f32", 8.0, float("nan"), bpp=4.0, params={"k": 2}))
    return pts


def test_write_report(tmp_path: Path) -> None:
    data = {
        "name": "tiny",
        "source": "synthetic",
        "n_train": 10,
        "n_test": 3,
        "sample_shape": [1, 16, 16],
        "is_image": True,
        "pixels_per_sample": 256,
        "data_range": 255.0,
        "raw_bytes_per_sample": 256.0,
    }
    pts = _points()
    paths = write_report(
        tmp_path / "out",
        data=data,
        models=[{"name": "m", "psnr": float("nan")}],
        points=pts,
        summary={"target": "met", "gap_db": np.float64(1.5), "bad": float("inf")},
    )
    assert set(paths) == {"json", "png", "md"}
    text = paths["json"].read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    doc = json.loads(text)
    assert doc["schema"] == REPORT_SCHEMA and doc["schema_version"] == 1
    assert set(doc) >= {"data", "x_axis", "models", "points", "summary", "created_utc"}
    assert doc["x_axis"] == "bpp"
    assert doc["data"]["pixels_per_sample"] == 256
    assert len(doc["points"]) == len(pts)
    assert doc["models"][0]["psnr"] is None and doc["summary"]["bad"] is None
    assert doc["summary"]["gap_db"] == 1.5
    ae_f32 = next(p for p in doc["points"] if p["label"] == "m f32")
    assert ae_f32["psnr_db"] is None and ae_f32["ssim"] == 1.0
    assert doc["latentwire_version"]
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    md = paths["md"].read_text(encoding="utf-8")
    assert "| method | label |" in md and "JPEG q=20" in md and "target" in md


def test_write_report_for_vectors_uses_bytes(tmp_path: Path) -> None:
    pts = [p for p in _points() if p.method in ("ae", "pca")]
    for p in pts:
        p.bpp = p.ssim = None
    data = {"name": "v", "n_test": 3, "is_image": False, "sample_shape": [64]}
    paths = write_report(tmp_path, data=data, models=[], points=pts, summary={})
    doc = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert doc["x_axis"] == "bytes_per_sample"
    assert doc["data"]["data_range"] is None  # missing keys are written as null
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_format_table_sorts_and_marks_lossless() -> None:
    table = format_table(_points(), is_image=True)
    lines = table.splitlines()
    assert lines[0].startswith("| method | label | format | bytes/sample | file bytes/sample")
    assert "SSIM" in lines[0] and "bpp" in lines[0]
    methods = [line.split("|")[1].strip() for line in lines[2:]]
    assert methods == sorted(methods, key=["ae", "pca", "jpeg", "webp", "zlib", "zstd"].index)
    assert "lossless" in next(line for line in lines if "zlib" in line)
    ae_rows = [line for line in lines if line.startswith("| ae")]
    assert "m int8" in ae_rows[0] and "∞" in ae_rows[1]  # sorted by bytes
    vec = format_table(_points(), is_image=False)
    assert "SSIM" not in vec.splitlines()[0]
