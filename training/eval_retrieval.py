"""`latentwire evaluate --task retrieval`: nearest-neighbour recall of coded vectors.

For vectors such as sentence embeddings: the database vectors go through each model
package exactly as deployed (ONNX Runtime, the Codes messages: an entropy stream's bytes
are real ANS bytes), the queries stay float32, and each query's top-k by inner product over
the decoded database is compared with the exact top-k over the float32 database. Reported
per model: k-recall@k, recall with the queries coded too, mean cosine to the original
vectors, and bytes per vector (in batches of the default message size, and one vector per
message). Baselines on the same split (`latentwire.training.retrieval`): float16, binary
sign codes, PCA + int8 at each budget, and with faiss installed SQ8, SQ4, PQ and OPQ+PQ at
each budget. Writes OUTDIR/report.json, report.md and recall.png (recall against bytes).

--data is a .npz holding `queries` and `db` (what `python -m latentwire.training.text`
writes), or a .npy whose first --queries rows are the queries and the rest the database.
The baselines are fitted on --train-vectors (default: the first model's training data).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from latentwire.runtime.errors import DataError

log = logging.getLogger("latentwire.training")

SCHEMA = "latentwire.retrieval-report"
_SINGLE_SAMPLE = 1000
"""Vectors coded one per message to measure the single-message bytes."""


def _ints(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 8,16,32, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def add_arguments(group: Any) -> None:
    """Flags of this task beyond --task, --labels and --noise."""
    group.add_argument(
        "--train-vectors",
        metavar="PATH",
        type=Path,
        help="retrieval: .npy vectors the baselines (PCA, PQ, OPQ, ...) are fitted on "
        "(default: the first model's training data)",
    )
    group.add_argument(
        "--queries",
        type=int,
        default=1000,
        metavar="N",
        help="retrieval: with a .npy --data, its first N rows are the queries and the rest "
        "the database (default: 1000)",
    )
    group.add_argument(
        "--budgets",
        type=_ints,
        default=[8, 16, 32, 64],
        metavar="B1,B2,...",
        help="retrieval: bytes per vector of the PCA/PQ/OPQ baselines (default: 8,16,32,64)",
    )
    group.add_argument(
        "--top-k",
        type=int,
        default=10,
        metavar="K",
        help="retrieval: k of k-recall@k (default: 10)",
    )
    group.add_argument(
        "--unit-vectors",
        action="store_true",
        help="retrieval: the vectors are unit length (as MiniLM's are): rescale every "
        "method's decoded vectors to unit length before searching",
    )
    group.add_argument(
        "--no-faiss",
        action="store_true",
        help="retrieval: leave out the faiss baselines (SQ, PQ, OPQ)",
    )


def load_vectors(path: Path, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """(queries, db) from a .npz with both arrays or a .npy split at row `queries`."""
    if not path.is_file():
        raise DataError(f"--data {path}: no such file")
    if path.suffix == ".npz":
        with np.load(path) as z:
            missing = {"queries", "db"} - set(z.files)
            if missing:
                raise DataError(f"{path} lacks the arrays {sorted(missing)} (has {z.files})")
            q, db = z["queries"], z["db"]
    elif path.suffix == ".npy":
        arr = np.load(path)
        if arr.ndim != 2 or not 1 <= queries < len(arr) - 1:
            raise DataError(
                f"{path}: need (N, D) vectors with more than --queries {queries} rows, "
                f"got shape {arr.shape}"
            )
        q, db = arr[:queries], arr[queries:]
    else:
        raise DataError(f"--data {path}: expected a .npz (queries, db) or a .npy")
    return np.asarray(q, np.float32), np.asarray(db, np.float32)


def _train_vectors(args: argparse.Namespace) -> Path:
    if args.train_vectors is not None:
        return Path(args.train_vectors)
    from latentwire.runtime.manifest import Manifest

    from .data import resolve_source

    first = Path(args.model[0])
    info = Manifest.load(first).raw.get("training") or {}
    stored = str(info.get("data") or "")
    path = Path(resolve_source(stored, first)) if stored else None
    if path is None or path.suffix != ".npy" or not path.is_file():
        raise DataError(
            f"the baselines need training vectors: {first} was trained on {stored!r}; "
            "pass --train-vectors PATH.npy"
        )
    return path


def model_point(path: Path, bench: Any) -> tuple[Any, dict[str, Any]]:
    """One package's point: the database through its Codes messages as deployed."""
    from latentwire.runtime.model import Model

    model = Model(path, providers="cpu")
    m = model.manifest
    messages = list(model.encode_codes(bench.db))
    payload = sum(len(msg.tensor.data) for msg in messages)
    db_hat = np.asarray(model.decode_codes(messages), np.float32)
    one = bench.db[:_SINGLE_SAMPLE]
    single = sum(len(msg.tensor.data) for msg in model.encode_codes(one, chunk=1)) / len(one)

    def code(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.decode_codes(model.encode_codes(x)), np.float32)

    label = f"{path.name if path.name != m.name else m.name} {m.code_format}"
    latent = list(m.raw["latent"]["shape"])
    p = bench.point(
        "ae",
        label,
        payload / len(bench.db),
        code,
        db_hat=db_hat,
        params={
            "model": str(path),
            "format": m.code_format,
            "latent": latent,
            "messages": len(messages),
            "bytes_per_vector_one_per_message": round(single, 3),
        },
    )
    info = {
        "path": str(path),
        "name": m.name,
        "fingerprint": m.fingerprint,
        "format": m.code_format,
        "latent_shape": latent,
        "model": m.raw.get("model"),
        "training": m.raw.get("training"),
    }
    return p, info


def _interp_log(points: list[Any], nbytes: float) -> float | None:
    """Recall of a method's curve at `nbytes`, linear in log(bytes); None outside it."""
    pts = sorted((p.bytes_per_vector, p.recall) for p in points)
    if not pts or not pts[0][0] <= nbytes <= pts[-1][0]:
        return None
    xs = np.log([b for b, _ in pts])
    return float(np.interp(np.log(nbytes), xs, [r for _, r in pts]))


def summarize(points: list[Any]) -> dict[str, Any]:
    """Each model point against OPQ+PQ, PQ and PCA + int8 at the same bytes."""
    rows = []
    for p in (p for p in points if p.method == "ae"):
        row: dict[str, Any] = {"ae": p.label, "bytes_per_vector": round(p.bytes_per_vector, 3)}
        row["recall"] = round(p.recall, 4)
        for method in ("opq", "pq", "pca"):
            at = _interp_log([q for q in points if q.method == method], p.bytes_per_vector)
            row[f"{method}_recall_same_bytes"] = None if at is None else round(at, 4)
            row[f"above_{method}"] = None if at is None else round(p.recall - at, 4)
        rows.append(row)
    return {"ae_vs_baselines": rows}


def format_table(points: list[Any], k: int) -> str:
    head = f"| method | bytes/vector | {k}-recall@{k} | recall, coded query | mean cos |"
    lines = [head, "|---|---:|---:|---:|---:|"]
    for p in sorted(points, key=lambda p: (p.bytes_per_vector, p.label)):
        cq = "–" if p.recall_coded_query is None else f"{p.recall_coded_query:.3f}"
        lines.append(
            f"| {p.label} | {p.bytes_per_vector:.1f} | {p.recall:.3f} | {cq} | {p.mean_cos:.3f} |"
        )
    return "\n".join(lines)


def plot(points: list[Any], path: Path, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"ae": "o-", "opq": "s--", "pq": "^--", "pca": "v:", "sq": "D", "binary": "x"}
    for method, style in styles.items():
        pts = sorted((p for p in points if p.method == method), key=lambda p: p.bytes_per_vector)
        if not pts:
            continue
        if method == "ae":  # one marker per model (they are separate packages)
            for p in pts:
                ax.plot(p.bytes_per_vector, p.recall, "o", ms=7, label=p.label)
            continue
        xs, ys = [p.bytes_per_vector for p in pts], [p.recall for p in pts]
        names = {"opq": "faiss OPQ+PQ", "pq": "faiss PQ", "pca": "PCA + int8", "sq": "faiss SQ"}
        ax.plot(xs, ys, style, label=names.get(method, pts[0].label))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per database vector")
    ax.set_ylabel(f"{k}-recall@{k} (float queries)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from .retrieval import Bench, faiss_points, numpy_points

    queries, db = load_vectors(Path(args.data), args.queries)
    train_path = _train_vectors(args)
    train = np.asarray(np.load(train_path), np.float32)
    bench = Bench(train, queries, db, args.top_k, unit=args.unit_vectors)
    log.info(
        "retrieval: %d queries, %d database vectors, baselines fitted on %d (%s)",
        len(queries), len(db), len(train), train_path,
    )
    points, infos = [], []
    for path in args.model:
        p, info = model_point(Path(path), bench)
        points.append(p)
        infos.append(info)
        log.info("%s: %.1f B/vector, recall %.3f", p.label, p.bytes_per_vector, p.recall)
    points += numpy_points(bench, args.budgets)
    if args.no_faiss:
        log.info("faiss baselines left out (--no-faiss)")
    else:
        log.info("fitting the faiss baselines (SQ8, SQ4, PQ, OPQ at %s bytes)", args.budgets)
        points += faiss_points(bench, args.budgets)
    return {
        "schema": SCHEMA,
        "schema_version": 1,
        "data": {
            "source": str(args.data),
            "train_vectors": str(train_path),
            "n_train": len(train),
            "n_queries": len(queries),
            "n_db": len(db),
            "dim": int(db.shape[1]),
            "raw_bytes_per_vector": int(db.shape[1]) * 4,
            "k": args.top_k,
            "search": "inner product; float32 queries, decoded database vectors"
            + (" rescaled to unit length" if args.unit_vectors else ""),
            "unit_vectors": bool(args.unit_vectors),
        },
        "models": infos,
        "points": points,
        "summary": summarize(points),
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def write(result: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    k = result["data"]["k"]
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "recall.png"}
    doc = dict(result, points=[p.as_dict() for p in result["points"]])
    paths["json"].write_text(json.dumps(doc, indent=2) + "\n")
    d = result["data"]
    md = [
        f"# Retrieval report: {d['source']}",
        "",
        f"{d['n_queries']} float32 queries, {d['n_db']} database vectors of {d['dim']} "
        f"values ({d['raw_bytes_per_vector']} B as float32); baselines fitted on "
        f"{d['n_train']} training vectors. {k}-recall@{k} against exact inner-product "
        f"search over the float32 database (search: {d['search']}).",
        "",
        format_table(result["points"], k),
        "",
        "```json",
        json.dumps(result["summary"], indent=2),
        "```",
        "",
    ]
    paths["md"].write_text("\n".join(md))
    plot(result["points"], paths["png"], k)
    return paths


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise DataError(f"--top-k must be >= 1, got {args.top_k}")
    result = evaluate(args)
    paths = write(result, Path(args.report))
    if args.json:
        print(paths["json"].read_text(), end="")
        return 0
    print(format_table(result["points"], args.top_k))
    print(json.dumps(result["summary"], indent=2))
    print(f"report: {', '.join(str(p) for p in paths.values())}")
    return 0
