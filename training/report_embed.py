"""The report that `latentwire evaluate --task embed` writes into OUTDIR:

- ``report.json``: ``{"task": "embed", "data": {name, source, n, labels}, "neighbors",
  "umap" ("measured" or "not installed ..."), "models": [{package, name, fingerprint, dims,
  seed, loss, embed_loss, val_psnr_db}], "rows": [...], "summary": [...], "verdicts":
  [...], "created_utc", "latentwire_version"}``. Each row is one method on one split:
  method (``latentwire[VARIANT]``: the model's --embed-loss, or its reconstruction loss
  when trained without one; ``pca``, ``umap``, ``raw``), dims, seed, knn_acc, logreg_acc,
  trust@5, trust@10 (not for raw), psnr_db (latentwire, pca). ``summary``: per (method,
  dims) the mean of each metric over seeds and its standard deviation (``<metric>_std``).
  ``verdicts``: per latentwire method and dims, PCA's mean over the same seeds
  (pca_<metric>) and the difference (<metric>_minus_pca) on knn_acc, trust@5 and psnr_db,
  and ``beats_pca`` (kNN accuracy and trustworthiness@5 both higher);
- ``report.md``: the summary as a table, and the verdicts;
- ``embed.png``: test codes in 2-D coloured by label (a 2-D model's codes as they are,
  larger ones through the first two principal components of their codes) beside PCA-2 of
  the inputs, and kNN accuracy and trustworthiness@5 against dims for each method.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from latentwire.runtime import __version__

_COLUMNS = (
    ("knn_acc", "kNN acc"),
    ("logreg_acc", "logreg acc"),
    ("trust@5", "trust@5"),
    ("trust@10", "trust@10"),
    ("psnr_db", "PSNR dB"),
)


def _cell(s: dict[str, Any], key: str) -> str:
    if key not in s:
        return "-"
    digits = 2 if key == "psnr_db" else 3
    std = s.get(f"{key}_std")
    spread = f" ± {std:.{digits}f}" if std and len(s["seeds"]) > 1 else ""
    return f"{s[key]:.{digits}f}{spread}"


def table_lines(result: dict[str, Any]) -> list[str]:
    """The summary as a Markdown table, one line per (dims, method)."""
    lines = [
        "| dims | method | seeds | " + " | ".join(label for _, label in _COLUMNS) + " |",
        "|---:|---|---|" + "---:|" * len(_COLUMNS),
    ]
    for s in result["summary"]:
        seeds = ",".join(str(x) for x in s["seeds"])
        cells = " | ".join(_cell(s, key) for key, _ in _COLUMNS)
        lines.append(f"| {s['dims']} | {s['method']} | {seeds} | {cells} |")
    return lines


def verdict_lines(result: dict[str, Any]) -> list[str]:
    out = []
    for v in result["verdicts"]:
        word = "beats" if v["beats_pca"] else "does NOT beat"
        out.append(
            f"- {v['dims']} dims (seeds {','.join(str(s) for s in v['seeds'])}): {v['method']} "
            f"{word} PCA: kNN {v.get('knn_acc_minus_pca', 0):+.4f}, trust@5 "
            f"{v.get('trust@5_minus_pca', 0):+.4f}, PSNR {v.get('psnr_db_minus_pca', 0):+.2f} dB"
        )
    return out


def format_table(result: dict[str, Any]) -> str:
    d = result["data"]
    head = (
        f"{d['name']}: codes as features on each model's test split; kNN k="
        f"{result['neighbors']}; UMAP: {result['umap']}"
    )
    return "\n".join([head, *table_lines(result), *verdict_lines(result)])


def _markdown(result: dict[str, Any]) -> str:
    d = result["data"]
    models = "\n".join(
        f"- `{m['package']}`: {m['name']}, {m['dims']} dims, seed {m['seed']}, loss "
        f"{m.get('loss')}{' + ' + m['embed_loss'] if m.get('embed_loss') else ''}"
        for m in result["models"]
    )
    return (
        f"# Codes as features: {d['name']}\n\n"
        "Each model's validation split is the test set; kNN, logistic regression and PCA "
        "are fitted on its training split. Mean ± standard deviation over seeds. "
        f"kNN k = {result['neighbors']}. UMAP: {result['umap']}.\n\n"
        + "\n".join(table_lines(result))
        + "\n\n"
        + "\n".join(verdict_lines(result))
        + f"\n\nModels:\n{models}\n\n![embed](embed.png)\n"
    )


def _two_d(z: np.ndarray) -> tuple[np.ndarray, str]:
    if z.shape[1] == 2:
        return z, "codes"
    c = z - z.mean(0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    return c @ vt[:2].T, "first 2 PCs of the codes"


def _plot(path: Path, result: dict[str, Any], plots: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    firsts: dict[int, dict[str, Any]] = {}
    for p in plots:
        firsts.setdefault(p["dims"], p)
    panels = [firsts[k] for k in sorted(firsts)]
    n = len(panels) + 1
    fig = plt.figure(figsize=(4.2 * max(n, 2), 8.4))
    grid = fig.add_gridspec(2, max(n, 2))
    ref = panels[0]
    x = ref["x"] - ref["x"].mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    pca2 = x @ vt[:2].T
    scatters = [(pca2, ref["y"], f"PCA-2 of the inputs (seed {ref['seed']})")]
    for p in panels:
        pts, how = _two_d(p["z"])
        scatters.append((pts, p["y"], f"{p['method']}: {p['dims']}-D, {how}"))
    for i, (pts, labels, title) in enumerate(scatters):
        ax = fig.add_subplot(grid[0, i])
        codes = np.unique(labels, return_inverse=True)[1]
        ax.scatter(pts[:, 0], pts[:, 1], c=codes, cmap="tab10", s=6, alpha=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for j, (key, label) in enumerate((("knn_acc", "kNN accuracy"), ("trust@5", "trust@5"))):
        ax = fig.add_subplot(grid[1, j])
        methods = dict.fromkeys(s["method"] for s in result["summary"] if s["method"] != "raw")
        for method in methods:
            rows = [s for s in result["summary"] if s["method"] == method and key in s]
            if not rows:
                continue
            dims = [s["dims"] for s in rows]
            ax.errorbar(
                dims,
                [s[key] for s in rows],
                yerr=[s.get(f"{key}_std", 0.0) for s in rows],
                marker="o",
                capsize=3,
                label=method,
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("dims")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{result['data']['name']}: codes as features (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: dict[str, Any], plots: list[dict[str, Any]], outdir: Path) -> list[Path]:
    """Write report.json, report.md and embed.png into `outdir` (created)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    doc = {
        **result,
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "latentwire_version": __version__,
    }
    paths = [outdir / "report.json", outdir / "report.md", outdir / "embed.png"]
    paths[0].write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths[1].write_text(_markdown(result), encoding="utf-8")
    _plot(paths[2], result, plots)
    return paths
