"""`latentwire evaluate`: a rate–distortion report for one or more model packages.

Every point is measured on the same test samples, never used for training:
- the model's validation split (by the seed and fraction in its manifest) for array data;
- whole images for image models (e.g. `sample-images:flower` for a model trained on
  patches of `sample-images:china`), padded to the model's stride and cropped back.

For each model: every code format it can emit. Its own format goes through the package
exactly as deployed (ONNX Runtime, the Codes messages, payload bytes counted); the other
fixed formats (f32, f16, int8 with the package's calibration) are computed from the
encoder's float latents, the same arithmetic as the folded quantiser. Baselines: PCA at
the same bytes and the same quantisation (for images: PCA of 8x8 blocks), JPEG and WebP at
a sweep of qualities (payload-only and whole-file bytes), zlib and zstd of the raw data.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentwire.runtime.errors import DataError
from latentwire.runtime.formats import FORMATS, CodeFormat
from latentwire.runtime.model import Model

from .baselines import (
    Point,
    image_stats,
    jpeg_points,
    lossless_points,
    pca_points,
    psnr,
    ssim,
    webp_points,
)
from .data import load_data, load_whole_images, resolve_source, same_source, split
from .report import format_table, write_report

log = logging.getLogger("latentwire.training")

BLOCK = 8
"""Side of the blocks the image PCA baseline codes (JPEG's block size)."""
_ITEMSIZE = {"f32": 4, "f16": 2, "int8": 1}


@dataclass
class TestSet:
    """What every point is measured on."""

    name: str
    source: str
    x: list[np.ndarray]
    """Array data: one (N, *shape) array. Images: one (1, C, H, W) array per image."""
    x_train: np.ndarray
    """Samples the baselines are fitted on (blocks for images)."""
    is_image: bool
    data_range: float
    image_shape: tuple[int, ...] | None
    """(C, H, W) of a sample when samples are images (digits: (1, 8, 8))."""
    n_train: int


def _array_test_set(spec: str, manifest: dict[str, Any], package: Path) -> TestSet:
    data = load_data(spec)
    info = manifest.get("training") or {}
    if not same_source(info.get("data"), spec, package):
        log.warning(
            "model %s was trained on %r, not %r: using a fresh 80/20 split of %r as the test set",
            manifest["name"],
            info.get("data"),
            spec,
            spec,
        )
    seed = int(info.get("seed", 0))
    frac = float(info.get("val_fraction", 0.2))
    train_idx, test_idx = split(len(data.x), frac, seed)
    x_tr, x_te = data.x[train_idx], data.x[test_idx]
    data_range = float(info.get("data_range") or (x_tr.max() - x_tr.min()) or 1.0)
    # digits are 8x8 pictures stored as 64 values: JPEG/WebP apply, the axis stays bytes
    image_shape: tuple[int, ...] | None = (1, 8, 8) if spec == "digits" else None
    if data.x.ndim == 4:
        image_shape = tuple(int(s) for s in data.x.shape[1:])
    return TestSet(
        data.name, spec, [x_te], x_tr, data.x.ndim == 4, data_range, image_shape, len(x_tr)
    )


def _blocks(images: list[np.ndarray]) -> np.ndarray:
    """Non-overlapping BLOCK x BLOCK blocks (N, C*B*B) of (1, C, H, W) images (edges cut)."""
    out = []
    for img in images:
        c, h, w = img.shape[1:]
        hb, wb = h // BLOCK, w // BLOCK
        v = img[0, :, : hb * BLOCK, : wb * BLOCK].reshape(c, hb, BLOCK, wb, BLOCK)
        out.append(v.transpose(1, 3, 0, 2, 4).reshape(hb * wb, c * BLOCK * BLOCK))
    return np.concatenate(out)


def _image_test_set(spec: str, manifest: dict[str, Any], package: Path) -> TestSet:
    images = load_whole_images(spec)
    info = manifest.get("training") or {}
    trained_on = resolve_source(str(info.get("data") or ""), package)
    try:
        train_images = load_whole_images(trained_on)
    except DataError:
        train_images = []
    if not train_images:
        raise DataError(
            f"the image PCA baseline is fitted on the model's training images "
            f"({trained_on or 'unknown'}), which cannot be loaded as whole images"
        )
    if same_source(trained_on, spec, package):
        log.warning("evaluating %s on its own training images: the numbers flatter it", spec)
    return TestSet(
        spec,
        spec,
        images,
        _blocks(train_images),
        True,
        255.0,
        None,
        sum(int(np.prod(i.shape[2:])) // (BLOCK * BLOCK) for i in train_images),
    )


def load_test_set(spec: str, manifest: dict[str, Any], package: Path) -> TestSet:
    """The test samples for `--data`, in the light of the (first) model's manifest;
    `package` is where that model lives (relative training-data paths of older packages
    are looked up from there)."""
    input_shape = manifest["input"]["shape"]
    if None in input_shape:  # a convolutional model: whole images
        return _image_test_set(spec, manifest, package)
    return _array_test_set(spec, manifest, package)


def _pixels(ts: TestSet) -> int | None:
    if ts.image_shape is not None:
        return int(ts.image_shape[1] * ts.image_shape[2])
    if ts.is_image:
        return int(sum(int(np.prod(i.shape[2:])) for i in ts.x) / len(ts.x))
    return None


def _finish_point(p: Point, ts: TestSet, x: list[np.ndarray], x_hat: list[np.ndarray]) -> Point:
    """Fill PSNR (one MSE over the whole set), bpp and SSIM of a point."""
    err = sum(float(np.sum((a.astype(np.float64) - b) ** 2)) for a, b in zip(x, x_hat, strict=True))
    n = sum(a.size for a in x)
    p.psnr_db = float("inf") if err == 0 else 10 * math.log10(ts.data_range**2 / (err / n))
    pixels = _pixels(ts)
    if pixels:
        p.bpp = 8 * p.bytes_per_sample / pixels
        if p.file_bytes_per_sample is not None:
            p.file_bpp = 8 * p.file_bytes_per_sample / pixels
        shape = ts.image_shape
        vals = [
            ssim(
                a.reshape(len(a), *shape) if shape else a,
                b.reshape(len(b), *shape) if shape else b,
                ts.data_range,
            )
            for a, b in zip(x, x_hat, strict=True)
        ]
        p.ssim = float(np.mean(vals))
    return p


def model_points(path: Path, ts: TestSet) -> tuple[list[Point], dict[str, Any]]:
    """The points of one package: its own format through the codes messages, the other
    fixed formats from its float latents with its calibration."""
    model = Model(path, providers="cpu")
    m = model.manifest
    label = path.name if path.name != m.name else m.name
    points: list[Point] = []
    n = sum(len(x) for x in ts.x)

    # the package's own format, exactly as deployed
    t0 = time.perf_counter()
    payload = whole = 0
    x_hat = []
    for x in ts.x:
        messages = list(model.encode_codes(x))
        payload += sum(len(msg.tensor.data) for msg in messages)
        whole += sum(len(msg.SerializeToString()) for msg in messages)
        x_hat.append(model.decode_codes(messages))
    seconds = time.perf_counter() - t0
    own = Point(
        method="ae",
        label=f"{label} {m.code_format}",
        format=m.code_format,
        bytes_per_sample=payload / n,
        psnr_db=None,
        file_bytes_per_sample=whole / n,
        model=str(path),
        params={"through": "package codes messages", "seconds": round(seconds, 3)},
    )
    points.append(_finish_point(own, ts, ts.x, x_hat))

    # the other fixed formats, from the float latents and the package's calibration
    latents = []  # (float latents, per-sample shape before padding) per test array
    for x in ts.x:
        padded, original = model.pad_inputs(x)
        latents.append((model.encode_latents(padded), original))
    for fmt in ("f32", "f16", "int8"):
        if fmt == m.code_format:
            continue
        cf = CodeFormat.build(fmt, m.codes.lo, m.codes.hi)
        outs = []
        nbytes = 0
        for z, original in latents:
            w = cf.quantize(z)
            nbytes += w.nbytes
            outs.append(model.crop(model.run_decoder(cf.dequantize(w)), original))
        p = Point(
            method="ae",
            label=f"{label} {fmt}",
            format=fmt,
            bytes_per_sample=nbytes / n,
            psnr_db=None,
            model=str(path),
            params={"through": "float latents + the package's calibration"},
        )
        points.append(_finish_point(p, ts, ts.x, outs))
    info = {
        "path": str(path),
        "name": m.name,
        "fingerprint": m.fingerprint,
        "format": m.code_format,
        "latent_shape": list(m.raw["latent"]["shape"]),
        "model": m.raw.get("model"),
        "training": m.raw.get("training"),
        "encoder_bytes": m.files["encoder"].get("bytes"),
        "int8_weights": m.files["encoder"].get("int8_weights"),
    }
    return points, info


def baseline_points(ts: TestSet, ae: list[Point], qualities: tuple[int, ...]) -> list[Point]:
    """PCA at the autoencoder's budgets and formats, JPEG/WebP, zlib/zstd."""
    points: list[Point] = []
    pixels = _pixels(ts)
    budgets = sorted({(p.format or "f32", round(p.bytes_per_sample, 3)) for p in ae})
    if ts.image_shape is None and ts.is_image:  # whole images: PCA of 8x8 blocks
        block_pixels = BLOCK * BLOCK
        assert pixels is not None
        block_budgets = [(f, b * block_pixels / pixels) for f, b in budgets]
        blocks = _blocks(ts.x)
        for p in pca_points(ts.x_train, blocks, block_budgets, data_range=ts.data_range):
            p.bpp = 8 * p.bytes_per_sample / block_pixels
            p.bytes_per_sample = p.bpp * pixels / 8
            p.label = p.label.replace("PCA", f"PCA {BLOCK}x{BLOCK} blocks")
            p.params["blocks"] = f"{BLOCK}x{BLOCK}"
            points.append(p)
    else:
        points += pca_points(
            ts.x_train, ts.x[0], budgets, data_range=ts.data_range, image_shape=ts.image_shape
        )
    if ts.image_shape is not None:  # array data that are pictures (digits): one array
        scale = 255.0 / ts.data_range
        imgs = ts.x[0].reshape(len(ts.x[0]), *ts.image_shape) * scale
        for fn in (jpeg_points, webp_points):
            points += fn(imgs, qualities, data_range=255.0)
        points += lossless_points(np.clip(np.rint(ts.x[0] * scale), 0, 255).astype(np.uint8))
    elif ts.is_image:  # whole images, maybe of several sizes: one point per quality over all
        scale = 255.0 / ts.data_range
        images = [x * scale for x in ts.x]
        coded = [p for fn in (jpeg_points, webp_points) for p in fn(images, qualities)]
        raw = [np.clip(np.rint(x), 0, 255).astype(np.uint8) for x in images]
        coded += lossless_points(raw if len(raw) > 1 else raw[0])
        assert pixels is not None
        for p in coded:  # bits per pixel on the same pixels per image as the AE's points
            p.bpp = 8 * p.bytes_per_sample / pixels
            if p.file_bytes_per_sample is not None:
                p.file_bpp = 8 * p.file_bytes_per_sample / pixels
        points += coded
    else:
        points += lossless_points(ts.x[0].astype(np.float32))
    return points


def _interp(points: list[Point], x: float, *, use_file: bool = False) -> float | None:
    """PSNR of a rate curve at rate x (linear in rate; None outside its range)."""
    key = "file_bytes_per_sample" if use_file else "bytes_per_sample"
    pts = sorted(
        (getattr(p, key), p.psnr_db) for p in points if p.psnr_db is not None and getattr(p, key)
    )
    if len(pts) < 2 or not pts[0][0] <= x <= pts[-1][0]:
        return None
    return float(np.interp(x, [a for a, _ in pts], [b for _, b in pts]))


def summarize(points: list[Point], ts: TestSet) -> dict[str, Any]:
    """How the points compare with the issue's targets (reported, not asserted)."""
    ae = [p for p in points if p.method == "ae"]
    pca = [p for p in points if p.method == "pca"]
    out: dict[str, Any] = {}
    by_model: dict[str, dict[str, Point]] = {}
    for p in ae:
        by_model.setdefault(str(p.model), {})[str(p.format)] = p
    out["int8_vs_f32_db"] = {
        m: round(f["int8"].psnr_db - f["f32"].psnr_db, 4)
        for m, f in by_model.items()
        if "int8" in f and "f32" in f and f["int8"].psnr_db is not None and f["f32"].psnr_db
    }
    best: dict[str, Any] | None = None
    for e in (p for p in ae if p.format == "entropy" and p.psnr_db is not None):
        for i in (p for p in ae if p.format == "int8" and p.psnr_db is not None):
            assert e.psnr_db is not None and i.psnr_db is not None
            if e.psnr_db >= i.psnr_db - 0.3:
                saving = 1 - e.bytes_per_sample / i.bytes_per_sample
                if best is None or saving > best["bytes_saved"]:
                    best = {
                        "entropy": e.label,
                        "int8": i.label,
                        "bytes_saved": round(saving, 4),
                        "db_difference": round(e.psnr_db - i.psnr_db, 4),
                    }
    out["entropy_vs_int8"] = best
    margins: list[dict[str, Any]] = []
    for p in ae:
        match = [
            q
            for q in pca
            if q.format == p.format
            and abs(q.bytes_per_sample - p.bytes_per_sample) <= 0.05 * p.bytes_per_sample
        ]
        if match and p.psnr_db is not None and match[0].psnr_db is not None:
            margins.append(
                {
                    "ae": p.label,
                    "pca": match[0].label,
                    "bytes_per_sample": round(p.bytes_per_sample, 3),
                    "db_above_pca": round(p.psnr_db - match[0].psnr_db, 3),
                }
            )
    out["ae_vs_pca"] = margins
    in_band = [m["db_above_pca"] for m in margins if 4 <= m["bytes_per_sample"] <= 32]
    out["ae_vs_pca_min_db_4_to_32_bytes"] = min(in_band) if in_band else None
    if ts.is_image or ts.image_shape is not None:
        jpeg = [p for p in points if p.method == "jpeg"]
        vs = []
        for p in ae:
            if p.psnr_db is None:
                continue
            at = _interp(jpeg, p.bytes_per_sample)
            at_file = _interp(jpeg, p.file_bytes_per_sample or p.bytes_per_sample, use_file=True)
            vs.append(
                {
                    "ae": p.label,
                    "bpp": round(p.bpp or 0, 4),
                    "psnr_db": round(p.psnr_db, 3),
                    "jpeg_psnr_db_same_payload_bpp": None if at is None else round(at, 3),
                    "jpeg_psnr_db_same_file_bpp": None if at_file is None else round(at_file, 3),
                }
            )
        out["ae_vs_jpeg"] = vs
    return out


def evaluate(
    models: list[Path],
    data: str,
    report: Path,
    *,
    qualities: tuple[int, ...] = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
) -> dict[str, Any]:
    """Measure every model and the baselines on `data`; write the report into `report`."""
    from latentwire.runtime.manifest import Manifest

    first = Manifest.load(models[0]).raw
    ts = load_test_set(data, first, models[0])
    points: list[Point] = []
    infos = []
    for path in models:
        pts, info = model_points(path, ts)
        points += pts
        infos.append(info)
        log.info("evaluated %s: %s", path, ", ".join(f"{p.format} {p.psnr_db:.2f} dB" for p in pts))
    ae = [p for p in points if p.method == "ae"]
    points += baseline_points(ts, ae, qualities)
    n_test = sum(len(x) for x in ts.x)
    sample_shape: list[int | None] = list(ts.image_shape or ts.x[0].shape[1:])
    if len({x.shape[1:] for x in ts.x}) > 1:  # whole images of several sizes
        sample_shape = [sample_shape[0], None, None]
    raw_bytes = (
        float(np.mean([x[0].size for x in ts.x])) if ts.is_image else float(ts.x[0][0].nbytes)
    )
    meta = {
        "name": ts.name,
        "source": ts.source,
        "n_train": ts.n_train,
        "n_test": n_test,
        "sample_shape": sample_shape,
        "is_image": ts.is_image,
        "pixels_per_sample": _pixels(ts),
        "data_range": ts.data_range,
        "raw_bytes_per_sample": raw_bytes,
        "test_images": [list(x.shape[1:]) for x in ts.x] if ts.image_shape is None else None,
    }
    summary = summarize(points, ts)
    paths = write_report(report, data=meta, models=infos, points=points, summary=summary)
    return {
        "paths": {k: str(v) for k, v in paths.items()},
        "points": points,
        "summary": summary,
        "is_image": ts.is_image,
    }


__all__ = ["FORMATS", "evaluate", "format_table", "image_stats", "psnr"]
