"""The denoising report of `latentwire evaluate --task denoise`: report.json (schema
"latentwire.denoise-report" version 1), report.md, psnr.png (PSNR against sigma, one
curve per denoiser) and, for pictures, crops.png (clean, noisy, each model and non-local
means at every sigma).

report.json: {schema, schema_version, data {name, source, n_test, is_image, data_range,
test_images, n_tune}, noise {kind, sigmas, units, clipped, seed}, models [{path, name,
fingerprint, model, codes, trained_noise, training}], ceilings_db {model: PSNR on clean
test data}, rows [{sigma, method, kind ("baseline" | "model"), label, psnr_db, ssim,
params? (baselines: the tuned k and its PSNR on the tuning set), ceiling_db? (models)}],
summary {sigma: {noisy_psnr_db, models {label: {psnr_db, gain_db, vs_db {baseline: dB},
below_noisy, ceiling_db}}}}, warnings [text], created_utc, latentwire_version}.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from latentwire.runtime import __version__

SCHEMA = "latentwire.denoise-report"
SCHEMA_VERSION = 1
_PANEL_SAMPLES = 6
"""Digits-like data: how many samples the crops panel shows per row."""
_CROP = 128


def _doc(result: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in result.items() if not k.startswith("_")}
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        **body,
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "latentwire_version": __version__,
    }


def format_table(result: dict[str, Any]) -> str:
    """PSNR (SSIM) per sigma and denoiser, models last, with each model's ceiling."""
    sigmas = result["noise"]["sigmas"]
    labels: list[str] = []
    for r in result["rows"]:
        if r["label"] not in labels:
            labels.append(r["label"])
    cell = {(r["label"], r["sigma"]): r for r in result["rows"]}
    width = max(len(x) for x in [*labels, "denoiser"]) + 2
    head = "denoiser".ljust(width) + "".join(f"{'sigma ' + format(s, 'g'):>22}" for s in sigmas)
    lines = [head]
    for label in labels:
        parts = []
        for s in sigmas:
            r = cell.get((label, s))
            if r is None:
                parts.append(f"{'-':>22}")
                continue
            ssim = "" if r["ssim"] is None else f" ({r['ssim']:.3f})"
            parts.append(f"{r['psnr_db']:>13.2f} dB{ssim:>7}")
        lines.append(label.ljust(width) + "".join(parts))
    noisy = {r["sigma"]: r["psnr_db"] for r in result["rows"] if r["method"] == "noisy"}
    for label, ceiling in result["ceilings_db"].items():
        gains = ", ".join(
            f"{r['psnr_db'] - noisy[r['sigma']]:+.2f} dB at {r['sigma']:g}"
            for r in result["rows"]
            if r["kind"] == "model" and r["label"] == label
        )
        lines.append(f"{label}: clean ceiling {ceiling:.2f} dB; gain over the noisy input {gains}")
    clip = "clipped to [0, 1]" if result["noise"]["clipped"] else "not clipped"
    lines.append(
        f"PSNR (SSIM) on {result['data']['n_test']} held-out sample(s) of "
        f"{result['data']['name']}; "
        f"gaussian noise {clip}; baselines tuned on {result['data']['n_tune']} training "
        "sample(s)/crop(s) per sigma"
    )
    return "\n".join(lines)


def _markdown(doc: dict[str, Any]) -> str:
    out = [
        f"# Denoising: {doc['data']['name']}",
        "",
        f"Noise: gaussian, sigma {', '.join(f'{s:g}' for s in doc['noise']['sigmas'])} in "
        f"{doc['noise']['units']}; "
        f"{'clipped to [0, 1]' if doc['noise']['clipped'] else 'not clipped'}; "
        f"seed {doc['noise']['seed']}.",
        "",
        "| sigma | denoiser | PSNR dB | SSIM | gain dB | parameter |",
        "|---:|---|---:|---:|---:|---|",
    ]
    noisy = {r["sigma"]: r["psnr_db"] for r in doc["rows"] if r["method"] == "noisy"}
    for r in doc["rows"]:
        ssim = "" if r["ssim"] is None else f"{r['ssim']:.4f}"
        param = f"k = {r['params']['k']:g} x sigma" if r.get("params") else ""
        out.append(
            f"| {r['sigma']:g} | {r['label']} | {r['psnr_db']:.2f} | {ssim} | "
            f"{r['psnr_db'] - noisy[r['sigma']]:+.2f} | {param} |"
        )
    out += ["", "Clean ceilings (PSNR of each model on the clean test data):", ""]
    out += [f"- {k}: {v:.2f} dB" for k, v in doc["ceilings_db"].items()]
    if doc["warnings"]:
        out += ["", "Warnings:", ""] + [f"- {w}" for w in doc["warnings"]]
    return "\n".join(out) + "\n"


def _plot_curves(path: Path, doc: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels: list[str] = []
    for r in doc["rows"]:
        if r["label"] not in labels:
            labels.append(r["label"])
    for label in labels:
        pts = sorted((r["sigma"], r["psnr_db"]) for r in doc["rows"] if r["label"] == label)
        model = any(r["kind"] == "model" and r["label"] == label for r in doc["rows"])
        style = "-o" if model else ("k--" if label == "noisy" else "-.s")
        ax.plot(
            [p[0] for p in pts], [p[1] for p in pts], style, label=label, ms=4, lw=2 if model else 1
        )
    for label, ceiling in doc["ceilings_db"].items():
        ax.axhline(ceiling, color="grey", lw=0.8, ls=":")
        ax.annotate(
            f"{label} clean ceiling",
            (doc["noise"]["sigmas"][0], ceiling),
            fontsize=7,
            color="grey",
            va="bottom",
        )
    ax.set_xlabel("noise sigma (fraction of the data range)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"Denoising {doc['data']['name']} (held out)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _tiles(xs: list[np.ndarray], doc: dict[str, Any], shape: tuple[int, ...] | None) -> np.ndarray:
    """One (H, W, C) picture in [0, 1] from samples: a strip of the first samples
    (digit-like data) or a central crop of the first image."""
    scale = float(doc["data"]["data_range"]) or 1.0
    x = xs[0]
    if shape is not None:  # digit-like: a strip of samples side by side
        pics = x[:_PANEL_SAMPLES].reshape(-1, *shape).transpose(0, 2, 3, 1)
        strip = np.concatenate(list(pics), axis=1)
    else:
        img = x[0].transpose(1, 2, 0)
        h, w = img.shape[:2]
        top, left = max(0, h // 2 - _CROP // 2), max(0, w // 2 - _CROP // 2)
        strip = img[top : top + _CROP, left : left + _CROP]
    out: np.ndarray = np.clip(strip / scale, 0.0, 1.0)
    return out


def _plot_crops(path: Path, doc: dict[str, Any], panel: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = tuple(panel["shape"]) if panel.get("shape") else None
    sigmas = list(panel["by_sigma"])
    columns = ["clean", "noisy", *[k for k in panel["by_sigma"][sigmas[0]] if k != "noisy"]]
    columns = [c for c in columns if c in ("clean", "noisy", "nl-means") or c in doc["ceilings_db"]]
    fig, axes = plt.subplots(
        len(sigmas),
        len(columns),
        squeeze=False,
        figsize=(2.4 * len(columns) * (2 if shape else 1), (1.1 if shape else 2.4) * len(sigmas)),
    )
    rows = {(r["label"], r["sigma"]): r for r in doc["rows"]}
    for i, s in enumerate(sigmas):
        for j, col in enumerate(columns):
            xs = panel["clean"] if col == "clean" else panel["by_sigma"][s][col]
            tile = _tiles(xs, doc, shape)
            ax = axes[i][j]
            ax.imshow(
                tile[..., 0] if tile.shape[-1] == 1 else tile,
                cmap="gray",
                vmin=0,
                vmax=1,
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            r = rows.get((col, s))
            title = col if r is None else f"{col} {r['psnr_db']:.1f} dB"
            ax.set_title(title, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"sigma {s:g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(outdir: Path, result: dict[str, Any]) -> dict[str, Path]:
    """Write report.json, report.md, psnr.png and (pictures) crops.png into `outdir`."""
    outdir.mkdir(parents=True, exist_ok=True)
    doc = _doc(result)
    paths = {"json": outdir / "report.json", "md": outdir / "report.md", "png": outdir / "psnr.png"}
    paths["json"].write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths["md"].write_text(_markdown(doc), encoding="utf-8")
    _plot_curves(paths["png"], doc)
    panel = result.get("_panel")
    if panel and doc["data"]["is_image"]:
        paths["crops"] = outdir / "crops.png"
        _plot_crops(paths["crops"], doc, panel)
    return paths
