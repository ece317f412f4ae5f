"""The anomaly report that `latentwire evaluate --task anomaly` writes into OUTDIR:

- ``report.json``: ``{"task": "anomaly", "data": {...}, "model": {...}, "rows": [...],
  "summary": {...}}``. ``data``: name, source, split (the spec that rebuilds a built-in
  split, else null), n_fit, n_test, n_anomalies, prevalence. ``model``: path, name,
  fingerprint, codes, scores, default_codes_score. Each row: id (``recon``, ``gmm``,
  ``gmm@int8``, ``iforest``, ...), label, kind (model/baseline), codes_only, variant (the
  code format a density saw), and metrics: roc_auc, ap, precision_at_n, recall_at_fpr
  {"0.01", "0.05"} and, for the model's scores, threshold {value, fpr, recall} at the
  package's stored threshold. ``summary``: best_model, best_codes_only, best_baseline,
  default_codes_score, iforest_ap, int8_minus_f32_ap per density;
- ``report.md``: the same as a table;
- ``anomaly.png``: ROC and precision-recall curves of every score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def _json_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "curves"} for r in rows]


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table_lines(result: dict[str, Any]) -> list[str]:
    """A Markdown table: one line per score."""
    lines = [
        "| score | kind | ROC-AUC | AP | P@n | recall@FPR1% | recall@FPR5% "
        "| FPR at threshold | recall at threshold |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        m = r["metrics"]
        t = m.get("threshold") or {}
        kind = "codes only" if r["codes_only"] else r["kind"]
        lines.append(
            f"| {r['label']}{' (default)' if r.get('default') else ''} | {kind} "
            f"| {_f(m['roc_auc'])} | {_f(m['ap'])} | {_f(m['precision_at_n'])} "
            f"| {_f(m['recall_at_fpr']['0.01'])} | {_f(m['recall_at_fpr']['0.05'])} "
            f"| {_f(t.get('fpr'))} | {_f(t.get('recall'))} |"
        )
    return lines


def format_table(result: dict[str, Any]) -> str:
    d, s = result["data"], result["summary"]
    head = (
        f"{d['name']}: {d['n_test']} test samples, {d['n_anomalies']} anomalies "
        f"({d['prevalence']:.1%}); baselines fit on {d['n_fit']}"
    )
    best = s.get("best_model") or {}
    base = s.get("best_baseline") or {}
    tail = f"best latentwire score: {best.get('id')} AP {_f(best.get('ap'))}"
    if base:
        tail += f"; best baseline: {base.get('id')} AP {_f(base.get('ap'))}"
    return "\n".join([head, *table_lines(result), tail])


def _markdown(result: dict[str, Any]) -> str:
    d, m, s = result["data"], result["model"], result["summary"]
    split = d.get("split")
    lines = [
        f"# Anomaly detection: {m['name']} on {d['name']}",
        "",
        f"- model: `{m['path']}` (fingerprint {m['fingerprint']}, {m['codes']} codes); "
        f"scores: {', '.join(m['scores'])}",
        f"- test set: {d['n_test']} samples, {d['n_anomalies']} anomalies "
        f"({d['prevalence']:.1%}); baselines fitted on {d['n_fit']} samples "
        "(the same data the model trained on)",
        f"- split: `{json.dumps(split)}`" if split else f"- data: {d['source']} with --labels",
        "- AP (average precision) is the headline at low prevalence; P@n is the precision "
        "among the n highest scores (n = the number of anomalies); recall@FPR is the share "
        "of anomalies caught at a false-positive rate on the test normals within 1% / 5%; "
        "the last two columns apply the package's stored threshold.",
        "",
        *table_lines(result),
        "",
    ]
    best, codes, base = s.get("best_model"), s.get("best_codes_only"), s.get("best_baseline")
    if best:
        lines.append(f"Best latentwire score: **{best['id']}**, AP {best['ap']:.3f}.")
    if codes:
        lines.append(f"Best codes-only score: **{codes['id']}**, AP {codes['ap']:.3f}.")
    if base:
        lines.append(f"Best baseline: **{base['id']}**, AP {base['ap']:.3f}.")
    for name, gap in s.get("int8_minus_f32_ap", {}).items():
        lines.append(f"{name}: int8 codes minus f32 latents: {gap:+.3f} AP.")
    lines += ["", "![ROC and precision-recall curves](anomaly.png)", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """ROC (left) and precision-recall (right) curves of every row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.8))
    FigureCanvasAgg(fig)
    roc, pr = fig.subplots(1, 2)
    colors = [f"C{i}" for i in range(10)] + ["black", "olive", "navy", "teal", "maroon"]
    for i, r in enumerate(result["rows"]):
        c, m = r["curves"], r["metrics"]
        style = ":" if "@" in r["id"] else ("-" if r["kind"] == "model" else "--")
        kw = {"color": colors[i % len(colors)], "linestyle": style, "lw": 1.3}
        roc.plot(c["fpr"], c["tpr"], label=f"{r['label']} ({m['roc_auc']:.3f})", **kw)
        pr.step(
            c["recall"], c["precision"], where="post", label=f"{r['label']} ({m['ap']:.3f})", **kw
        )
    roc.plot([0, 1], [0, 1], color="0.7", lw=0.8)
    pr.axhline(result["data"]["prevalence"], color="0.7", lw=0.8)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (AUC)")
    pr.set(xlabel="recall", ylabel="precision", title="precision-recall (AP)")
    for ax in (roc, pr):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7, loc="lower right" if ax is roc else "lower left")
        ax.grid(alpha=0.3)
    d = result["data"]
    fig.suptitle(
        f"model {result['model']['name']}, test data {d['name']}: {d['n_anomalies']} anomalies "
        f"in {d['n_test']} samples (solid: latentwire, dotted: other code format, dashed: "
        "baselines)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def write_report(outdir: Path, result: dict[str, Any]) -> dict[str, Path]:
    """report.json, report.md and anomaly.png into `outdir` (made if missing)."""
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": outdir / "report.json",
        "markdown": outdir / "report.md",
        "plot": outdir / "anomaly.png",
    }
    body = {k: v for k, v in result.items() if k != "rows"} | {"rows": _json_rows(result["rows"])}
    paths["json"].write_text(json.dumps(_jsonable(body), indent=2) + "\n")
    paths["markdown"].write_text(_markdown(result))
    plot(result, paths["plot"])
    return paths
