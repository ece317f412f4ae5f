"""The rate–distortion report: ``report.json``, ``rd.png`` and ``report.md`` in one folder.

``latentwire evaluate`` measures the autoencoder and the classical baselines
(`latentwire.training.baselines`) on the same test split and writes three files:

* ``report.json``: everything, machine-readable (schema below);
* ``rd.png``: PSNR against bytes per sample (bits per pixel for images), and for images a
  second panel with SSIM against bits per pixel;
* ``report.md``: the same points as a Markdown table, plus the summary.

report.json, schema ``latentwire.rd-report`` version 1
------------------------------------------------------

::

    {
      "schema": "latentwire.rd-report",
      "schema_version": 1,
      "data": {
        "name": "digits",                 # dataset name
        "source": "digits",               # what --data said
        "n_train": 1437,                  # samples the models and baselines were fitted on
        "n_test": 360,                    # samples every point is measured on
        "sample_shape": [64],             # one sample's shape ([C, H, W] for images,
                                          # [C, null, null] for test images of several sizes)
        "is_image": false,
        "pixels_per_sample": null,        # H * W for images (the mean over test images of
                                          # several sizes), else null
        "data_range": 16.0,               # the PSNR peak, in the user's units
        "raw_bytes_per_sample": 256.0,    # one sample as stored (uint8 images, float32 else)
        "test_images": null               # whole test images: each one's [C, H, W]
      },
      "x_axis": "bytes_per_sample",       # or "bpp" for images: what rd.png plots
      "models": [{...}, ...],             # one free-form object per autoencoder evaluated
      "points": [                         # one object per operating point:
        {
          "method": "pca",                # "ae" | "pca" | "jpeg" | "webp" | "zlib" | "zstd"
          "label": "PCA k=8 int8",        # human label
          "format": "int8",               # ae/pca code format: f32 | f16 | int8 | entropy
          "bytes_per_sample": 8.0,        # payload bytes per sample (see below)
          "file_bytes_per_sample": null,  # JPEG/WebP: whole-file bytes per sample
          "bpp": null,                    # images: 8 * bytes_per_sample / (H * W)
          "file_bpp": null,               # images: 8 * file_bytes_per_sample / (H * W)
          "psnr_db": 27.1,                # one MSE over the whole test set; null if lossless
          "ssim": null,                   # images: mean SSIM (Gaussian window, sigma 1.5)
          "lossless": false,              # true for zlib/zstd
          "model": null,                  # ae points: the model package
          "params": {"k": 8}              # method settings: k, quality, step, level, ...
        }
      ],
      "summary": {...},                   # free-form: targets met or not, best points, ...
      "created_utc": "2025-01-01T00:00:00Z",
      "latentwire_version": "0.1.0"
    }

Payload bytes: for the autoencoder and PCA, the code itself (k values times the format's
size, or the measured ANS stream for "entropy"; entropy models are side information, not
counted). For JPEG, the entropy-coded scan data (no markers, headers or tables); for WebP,
the VP8/VP8L chunk's data (no RIFF/WEBP/chunk headers). ``file_bytes_per_sample`` gives the
whole files. With several test images every point covers all of them: JPEG and WebP
apply each quality to every image (one point per quality), bytes per sample are the mean
per image, PSNR is one MSE over all pixels and SSIM the mean over the images, exactly as
for the autoencoder's points. Numbers that are not finite (an exact reconstruction's
infinite PSNR) are written as null; the file never holds NaN or Infinity.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latentwire.runtime import __version__

from .baselines import Point, _jsonable

__all__ = [
    "REPORT_SCHEMA",
    "REPORT_SCHEMA_VERSION",
    "format_table",
    "write_report",
]

REPORT_SCHEMA = "latentwire.rd-report"
REPORT_SCHEMA_VERSION = 1

_DATA_KEYS = (
    "name",
    "source",
    "n_train",
    "n_test",
    "sample_shape",
    "is_image",
    "pixels_per_sample",
    "data_range",
    "raw_bytes_per_sample",
)
_METHOD_ORDER = ("ae", "pca", "jpeg", "webp", "zlib", "zstd")
_FORMAT_ORDER = ("f32", "f16", "int8", "entropy")
_COLORS = {"pca": "tab:blue", "jpeg": "tab:orange", "webp": "tab:green"}
_PCA_STYLES = {"f32": ":", "f16": "-.", "int8": "--", "entropy": "-"}
_AE_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")
_AE_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "black", "tab:olive")
_LOSSLESS_COLORS = {"zlib": "0.35", "zstd": "0.6"}


def _count(n: Any, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _data_line(data: dict[str, Any], is_image: bool, shape: Any) -> str:
    source, n_train = data.get("source", "?"), data.get("n_train", "?")
    if is_image:
        sizes = data.get("test_images") or []
        if len({tuple(s) for s in sizes}) > 1:  # whole images of several sizes
            dims = [f"{s[1]}x{s[2]}" for s in sizes]
            listed = ", ".join(dims[:-1]) + f" and {dims[-1]}" if len(dims) < 9 else "sizes vary"
            shape = f"{sizes[0][0]} channels, {listed}"
        else:
            shape = f"shape {shape}"
        return (
            f"- data: `{source}`, {_count(data.get('n_test', '?'), 'test image')} "
            f"({shape}); the PCA baseline is fitted on {n_train} 8x8 blocks of the "
            "model's training images"
        )
    n_test = data.get("n_test", "?")
    return f"- data: `{source}`, {n_train} training and {n_test} test samples of shape {shape}"


def _sort_key(p: Point) -> tuple[int, str, float, str]:
    method = _METHOD_ORDER.index(p.method) if p.method in _METHOD_ORDER else len(_METHOD_ORDER)
    return (method, p.model or "", p.bytes_per_sample, p.label)


def _num(value: float | None, digits: int) -> str:
    if value is None:
        return "–"
    if math.isinf(value):
        return "∞"
    if math.isnan(value):
        return "–"
    return f"{value:.{digits}f}"


def format_table(points: Sequence[Point], is_image: bool) -> str:
    """A Markdown table of the points, sorted by method, then model, then bytes per sample.

    Columns: method, label, format, bytes/sample, whole-file bytes/sample, PSNR dB, and for
    images also bpp and SSIM. Lossless points show "lossless" in the PSNR column.
    """
    head = ["method", "label", "format", "bytes/sample", "file bytes/sample"]
    if is_image:
        head += ["bpp", "file bpp"]
    head += ["PSNR dB"]
    if is_image:
        head += ["SSIM"]
    rows = [head, ["---"] * 3 + ["---:"] * (len(head) - 3)]
    for p in sorted(points, key=_sort_key):
        row = [p.method, p.label, p.format or "–"]
        row += [_num(p.bytes_per_sample, 2), _num(p.file_bytes_per_sample, 2)]
        if is_image:
            row += [_num(p.bpp, 3), _num(p.file_bpp, 3)]
        row += ["lossless" if p.lossless else _num(p.psnr_db, 2)]
        if is_image:
            row += [_num(p.ssim, 4)]
        rows.append(row)
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def _summary_lines(summary: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in summary.items():
        if isinstance(value, (dict, list)):
            text = json.dumps(_jsonable(value), allow_nan=False)
        elif isinstance(value, float):
            text = _num(value, 3)
        else:
            text = str(value)
        lines.append(f"- **{key}**: {text}")
    return lines


def _markdown(
    data: dict[str, Any],
    models: list[dict[str, Any]],
    points: Sequence[Point],
    summary: dict[str, Any],
) -> str:
    is_image = bool(data.get("is_image"))
    shape = data.get("sample_shape")
    lines = [
        f"# Rate–distortion report: {data.get('name', '?')}",
        "",
        _data_line(data, is_image, shape),
        f"- PSNR peak (data range): {data.get('data_range', '?')}; "
        f"raw bytes per sample: {data.get('raw_bytes_per_sample', '?')}",
        "- bytes/sample is the payload only (JPEG: scan data, WebP: VP8 chunk); "
        "file bytes/sample is the whole file",
    ]
    for m in models:
        name = m.get("name") or m.get("path") or m.get("model") or "?"
        lines.append(f"- model: `{name}`")
    if is_image:
        lines.append(f"- bpp = 8 × bytes / {data.get('pixels_per_sample', 'H·W')} pixels")
    n_test = data.get("n_test")
    if is_image and isinstance(n_test, int) and n_test > 1:
        lines.append(
            f"- JPEG and WebP: every quality is applied to all {n_test} test images (one "
            "point per quality); bytes are the mean per image, PSNR is one MSE over all their "
            "pixels, SSIM the mean over the images, as for the autoencoder; zlib and zstd "
            "compress each image on its own"
        )
    lines += ["", "![rate–distortion](rd.png)", "", format_table(points, is_image), ""]
    if summary:
        lines += ["## Summary", "", *_summary_lines(summary), ""]
    return "\n".join(lines)


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _pixels(data: dict[str, Any], points: Sequence[Point]) -> int | None:
    """Pixels per sample when the x axis is bits per pixel, else None (bytes per sample)."""
    if not data.get("is_image"):
        return None
    pixels = data.get("pixels_per_sample")
    if isinstance(pixels, int) and pixels > 0:
        return pixels
    for p in points:  # recover H * W from any image point
        if p.bpp and p.bytes_per_sample:
            return round(8 * p.bytes_per_sample / p.bpp)
    return None


def _xval(p: Point, pixels: int | None, *, whole_file: bool = False) -> float | None:
    nbytes = p.file_bytes_per_sample if whole_file else p.bytes_per_sample
    if nbytes is None or not math.isfinite(nbytes):
        return None
    return 8.0 * nbytes / pixels if pixels else float(nbytes)


def _series(
    sel: Sequence[Point], attr: str, pixels: int | None, *, whole_file: bool = False
) -> tuple[list[float], list[float]]:
    """Sorted (x, y) of the points with both values finite."""
    pairs = []
    for p in sel:
        x = _xval(p, pixels, whole_file=whole_file)
        y = getattr(p, attr)
        if _finite(x) and _finite(y):
            pairs.append((float(x or 0.0), float(y)))
    pairs.sort()
    return [a for a, _ in pairs], [b for _, b in pairs]


def _plot(path: Path, data: dict[str, Any], points: Sequence[Point]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pixels = _pixels(data, points)
    panels: list[tuple[str, str]] = [("psnr_db", "PSNR (dB)")]
    if pixels and any(p.ssim is not None for p in points):
        panels.append(("ssim", "SSIM"))
    fig = Figure(figsize=(5.6 * len(panels) + 2.4, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    xs = [
        x
        for p in points
        for x in (_xval(p, pixels), _xval(p, pixels, whole_file=True))
        if x is not None and x > 0
    ]
    log_x = bool(xs) and max(xs) / min(xs) > 20
    unit = "bits per pixel" if pixels else "bytes per sample"
    has_files = any(p.file_bytes_per_sample is not None for p in points)

    pca = [p for p in points if p.method == "pca"]
    formats = sorted(
        {p.format or "?" for p in pca},
        key=lambda f: _FORMAT_ORDER.index(f) if f in _FORMAT_ORDER else len(_FORMAT_ORDER),
    )
    ae_models = list(dict.fromkeys(p.model or p.label for p in points if p.method == "ae"))
    for ax, (attr, ylabel) in zip(axes, panels, strict=True):
        for fmt in formats:
            x, y = _series([p for p in pca if (p.format or "?") == fmt], attr, pixels)
            if x:
                style = _PCA_STYLES.get(fmt, "-")
                ax.plot(x, y, style, marker=".", color=_COLORS["pca"], label=f"PCA {fmt}")
        for method, name in (("jpeg", "JPEG"), ("webp", "WebP")):
            sel = [p for p in points if p.method == method]
            x, y = _series(sel, attr, pixels)
            if x:
                ax.plot(x, y, "-", marker=".", color=_COLORS[method], label=f"{name} (payload)")
            x, y = _series(sel, attr, pixels, whole_file=True)
            if x:
                color = _COLORS[method]
                ax.plot(x, y, "--", color=color, alpha=0.4, label=f"{name} (whole file)")
        for i, model in enumerate(ae_models):
            color = _AE_COLORS[i % len(_AE_COLORS)]
            marker = _AE_MARKERS[i % len(_AE_MARKERS)]
            label: str | None = f"AE {Path(model).name}"
            for p in points:
                if p.method != "ae" or (p.model or p.label) != model:
                    continue
                x0, y0 = _xval(p, pixels), getattr(p, attr)
                if not (_finite(x0) and _finite(y0)):
                    continue
                ax.plot([x0], [y0], linestyle="none", marker=marker, ms=8, color=color, label=label)
                label = None
                ax.annotate(
                    p.format or "",
                    (float(x0 or 0.0), float(y0)),
                    textcoords="offset points",
                    xytext=(5, 4),
                    fontsize=8,
                    color=color,
                )
        lossless = sorted(
            (xl, p.method)
            for p in points
            if p.lossless and (xl := _xval(p, pixels)) is not None and math.isfinite(xl)
        )
        for j, (xl, method) in enumerate(lossless):
            color = _LOSSLESS_COLORS.get(method, "0.5")
            text = f"{method} (lossless)"
            ax.axvline(xl, linestyle=":", color=color, linewidth=1.5, label=text)
            left = j % 2 == 0  # neighbours' labels on opposite sides of their lines
            ax.annotate(
                text,
                (xl, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(-3 if left else 3, -4),
                textcoords="offset points",
                rotation=90,
                ha="right" if left else "left",
                va="top",
                fontsize=7,
                color=color,
            )
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(f"{unit} (payload; dashed: whole file)" if has_files else unit)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.4)
        ax.grid(True, which="minor", alpha=0.12)
        ax.set_title(f"{ylabel.split(' ')[0]} vs {unit} (up and left is better)", fontsize=10)

    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
    n_test = data.get("n_test")
    tail = (
        f" ({_count(n_test, 'test image' if data.get('is_image') else 'test sample')})"
        if n_test
        else ""
    )
    fig.suptitle(f"Rate–distortion: {data.get('name', '')}{tail}")
    fig.savefig(path, dpi=120)


def write_report(
    outdir: Path,
    *,
    data: dict[str, Any],
    models: list[dict[str, Any]],
    points: list[Point],
    summary: dict[str, Any],
) -> dict[str, Path]:
    """Write report.json, rd.png and report.md into `outdir` (created); return their paths.

    `data` should hold the keys documented in this module's docstring (missing ones are
    written as null; extra ones are kept). Returns {"json": ..., "png": ..., "md": ...}.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    data_out = {k: data.get(k) for k in _DATA_KEYS} | {
        k: v for k, v in data.items() if k not in _DATA_KEYS
    }
    doc = {
        "schema": REPORT_SCHEMA,
        "schema_version": REPORT_SCHEMA_VERSION,
        "data": _jsonable(data_out),
        "x_axis": "bpp" if _pixels(data_out, points) else "bytes_per_sample",
        "models": _jsonable(models),
        "points": [p.to_dict() for p in points],
        "summary": _jsonable(summary),
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "latentwire_version": __version__,
    }
    paths = {"json": outdir / "report.json", "png": outdir / "rd.png", "md": outdir / "report.md"}
    text = json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=False)
    paths["json"].write_text(text + "\n", encoding="utf-8")
    _plot(paths["png"], data_out, points)
    paths["md"].write_text(_markdown(data_out, models, points, summary), encoding="utf-8")
    return paths
