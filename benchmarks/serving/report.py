"""serve.json -> ratios, serve.md (tables to paste) and serve.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

GENERATORS = {
    "h2load": "h2load (native HTTP/2 client)",
    "python": "load_v2.py (Python, tritonclient)",
}
LW, GRPCIO, NOBATCH, TRITON = "latentwire", "latentwire_grpcio", "latentwire_nobatch", "triton"
INPROC_1 = "ort_inproc_t1"


def point(
    records: list[dict[str, Any]], label: str, c: int, b: int, gen: str | None = None
) -> dict[str, Any] | None:
    for rec in records:
        if rec["label"] != label:
            continue
        for p in rec["points"]:
            if p["clients"] == c and p["batch"] == b and (gen is None or p.get("generator") == gen):
                return p  # type: ignore[no-any-return]
    return None


def compute_ratios(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ratios: list[dict[str, Any]] = []

    def ratio(name: str, text: str, num: tuple[Any, ...], den: tuple[Any, ...], key: str) -> None:
        a, b = point(records, *num), point(records, *den)
        if a is None or b is None or not a.get(key) or not b.get(key):
            ratios.append({"name": name, "value": None, "text": f"{text}: n/a (not measured)"})
            return
        v = a[key] / b[key]
        fmt = "{:,.0f}" if key == "samples_per_s" else "{:.2f}"
        unit = {"samples_per_s": "samples/s", "p99_ms": "ms p99"}.get(key, key)
        # repeated runs: the ratio within each run (the two servers measured minutes apart)
        b_runs = {r["run"]: r.get(key) for r in b.get("runs", [])}
        paired = [
            r[key] / b_runs[r["run"]]
            for r in a.get("runs", [])
            if r.get(key) and b_runs.get(r["run"])
        ]
        spread = f"; per run {min(paired):.2f}-{max(paired):.2f}x" if len(paired) > 1 else ""
        ratios.append(
            {
                "name": name,
                "value": round(v, 3),
                "metric": key,
                "per_run": [round(x, 3) for x in paired],
                "numerator": {"label": num[0], "point": f"{num[1]}x{num[2]}", "value": a[key]},
                "denominator": {"label": den[0], "point": f"{den[1]}x{den[2]}", "value": b[key]},
                "text": f"{text}: {v:.2f}x ({fmt.format(a[key])} vs {fmt.format(b[key])} "
                f"{unit}{spread})",
            }
        )

    for gen, gname in (("h2load", "h2load"), ("python", "Python load generator")):
        for c, b in ((64, 1), (64, 64), (16, 1), (16, 64)):
            ratio(
                f"{gen}_latentwire_vs_triton_samples_{c}x{b}",
                f"{gname}, {c}x{b}: latentwire / Triton samples/s",
                (LW, c, b, gen),
                (TRITON, c, b, gen),
                "samples_per_s",
            )
        for c, b in ((1, 1), (64, 1), (64, 64)):
            ratio(
                f"{gen}_latentwire_vs_triton_p99_{c}x{b}",
                f"{gname}, {c}x{b}: latentwire / Triton p99 (lower is better)",
                (LW, c, b, gen),
                (TRITON, c, b, gen),
                "p99_ms",
            )
        ratio(
            f"{gen}_batching_on_vs_off_64x1",
            f"{gname}, 64x1: native front, batching on / off samples/s",
            (LW, 64, 1, gen),
            (NOBATCH, 64, 1, gen),
            "samples_per_s",
        )
        for c, b in ((64, 1), (64, 64)):
            ratio(
                f"{gen}_native_vs_grpcio_{c}x{b}",
                f"{gname}, {c}x{b}: native front / grpcio front samples/s",
                (LW, c, b, gen),
                (GRPCIO, c, b, gen),
                "samples_per_s",
            )
    return ratios


def _n(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def _ms(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _us(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def cpu_summary(records: list[dict[str, Any]]) -> list[str]:
    """Server CPU per request at 64x1 (h2load) beside what ONNX Runtime alone costs."""
    lines = []
    ort = point(records, INPROC_1, 1, 64)
    ort_us = 1e6 / ort["samples_per_s"] if ort else None
    for label, title in (
        (LW, "latentwire (native front)"),
        (GRPCIO, "grpcio front"),
        (TRITON, "Triton"),
    ):
        p = point(records, label, 64, 1, "h2load")
        if p and p.get("server_us_per_req") is not None:
            us = p["server_us_per_req"]
            lines.append(f"- {title}: {us:.0f} µs of server CPU per request at 64x1 (h2load)")
    if ort_us is not None:
        lines.append(
            f"- in-process ONNX Runtime, 1 thread, batch 64: {ort_us:.1f} µs per sample "
            "(what the graph itself costs)"
        )
    return lines


def write_markdown(result: dict[str, Any], path: Path) -> str:
    m, s = result["machine"], result["settings"]
    sweep = [tuple(x) for x in s["sweep_points"]]
    records = result["targets"]
    servers = [r for r in records if r["kind"] == "server"]
    inproc = [r for r in records if r["kind"] == "inproc"]
    steal = result.get("steal_pct_run")
    lines = [
        f"### Serving benchmark: decoder 64→128→784 over KServe V2 (`benchmarks/serve.py`, "
        f"{m['date'][:10]})",
        "",
        f"{m['cpu_model']}, {m['cores']} CPUs, {m['ram_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, ONNX Runtime {m['onnxruntime']}, {m.get('h2load') or 'no h2load'}; "
        f"steal {'n/a' if steal is None else f'{steal}%'} over the run. Every server runs the "
        f"same `decoder.onnx`, started as a user would (nothing pinned), one after another; "
        f"{s['duration']:g} s per point after {s['warmup']:g} s of warm-up"
        + (
            f"; each point is the median of {s['repeat']} runs, taken in turns."
            if s.get("repeat", 1) > 1
            else "."
        ),
    ]
    for gen, gtitle in GENERATORS.items():
        if not any(p.get("generator") == gen for r in servers for p in r["points"]):
            continue
        lines += [
            "",
            f"**{gtitle}**: samples/s (p50 / p99 ms), clients × samples per request",
            "",
            "| server | " + " | ".join(f"{c} × {b}" for c, b in sweep) + " |",
            "|---|" + "---:|" * len(sweep),
        ]
        for rec in servers:
            cells = []
            for c, b in sweep:
                p = point([rec], rec["label"], c, b, gen)
                if p is None:
                    cells.append(rec["status"] if rec["status"] != "ok" else "—")
                    continue
                err = f", {p['errors']} err" if p.get("errors") else ""
                cells.append(
                    f"{_n(p['samples_per_s'])} ({_ms(p['p50_ms'])} / {_ms(p['p99_ms'])}{err})"
                )
            lines.append(f"| {rec['title']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "CPU µs per request, server / load generator (from /proc, over the measured window):",
        "",
        "| server | generator | " + " | ".join(f"{c} × {b}" for c, b in sweep) + " |",
        "|---|---|" + "---:|" * len(sweep),
    ]
    for rec in servers:
        for gen in GENERATORS:
            cells = []
            for c, b in sweep:
                p = point([rec], rec["label"], c, b, gen)
                cells.append(
                    "—"
                    if p is None
                    else f"{_us(p.get('server_us_per_req'))} / {_us(p.get('client_us_per_req'))}"
                )
            if any(c != "—" for c in cells):
                lines.append(f"| {rec['title']} | {gen} | " + " | ".join(cells) + " |")
    if inproc:
        batches = sorted({p["batch"] for r in inproc for p in r["points"]})
        lines += [
            "",
            "In-process ONNX Runtime on the same graph, no RPC, one caller "
            "(samples/s, p50 / p99 ms per call): the limit.",
            "",
            "| ORT intra-op threads | " + " | ".join(f"batch {b}" for b in batches) + " |",
            "|---|" + "---:|" * len(batches),
        ]
        for rec in inproc:
            cells = []
            for b in batches:
                p = point([rec], rec["label"], 1, b)
                cells.append(
                    "—"
                    if p is None
                    else f"{_n(p['samples_per_s'])} ({_ms(p['p50_ms'])} / {_ms(p['p99_ms'])})"
                )
            lines.append(f"| {rec['intra_op_threads']} | " + " | ".join(cells) + " |")
    lines += ["", "Ratios (same run):", ""]
    lines += [f"- {r['text']}" for r in result["ratios"]]
    lines += ["", "Server CPU per request:", "", *cpu_summary(records)]
    notes = [r for r in records if r["status"] != "ok" or r.get("reason")]
    if notes:
        lines += ["", "Not measured or with errors:", ""]
        lines += [f"- {r['title']}: {r['status']}: {r.get('reason')}" for r in notes]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def write_plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sweep = [tuple(x) for x in result["settings"]["sweep_points"]]
    servers = [r for r in result["targets"] if r["kind"] == "server" and r["points"]]
    gens = [
        g for g in GENERATORS if any(p.get("generator") == g for r in servers for p in r["points"])
    ]
    fig, axes = plt.subplots(
        2, max(1, len(gens)), figsize=(7 * max(1, len(gens)), 8.5), squeeze=False
    )
    x = np.arange(len(sweep))
    width = 0.8 / max(1, len(servers))
    for col, gen in enumerate(gens):
        ax1, ax2 = axes[0][col], axes[1][col]
        for i, rec in enumerate(servers):
            sps, p99 = [], []
            for c, b in sweep:
                p = point([rec], rec["label"], c, b, gen)
                sps.append(p["samples_per_s"] if p else np.nan)
                p99.append(p["p99_ms"] if p and p.get("p99_ms") is not None else np.nan)
            off = x - 0.4 + width * (i + 0.5)
            ax1.bar(off, sps, width, label=rec["title"], color=f"C{i}")
            ax2.bar(off, p99, width, label=rec["title"], color=f"C{i}")
        ax1.set_yscale("log")
        ax1.set_ylabel("samples/s (log)")
        ax1.set_title(f"{GENERATORS[gen]}: throughput (higher is better)", fontsize=10)
        ax2.set_yscale("log")
        ax2.set_ylabel("p99 latency, ms (log)")
        ax2.set_title("p99 latency per request (lower is better)", fontsize=10)
        for ax in (ax1, ax2):
            ax.grid(axis="y", which="both", alpha=0.3)
        for ax in (ax1, ax2):
            ax.set_xticks(x, [f"{c}×{b}" for c, b in sweep])
        ax2.set_xlabel("clients × samples per request")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.01), ncol=5, fontsize=8)
    m = result["machine"]
    fig.suptitle(
        f"decoder 64→128→784 over KServe V2 gRPC — {m['cpu_model']}, {m['cores']} CPUs, "
        f"{m['date'][:10]}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
