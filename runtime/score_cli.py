"""`latentwire score`: anomaly scores, flags and the threshold for each sample.

Needs a package trained with `latentwire train --task anomaly` and ONNX Runtime only (an
edge install, latentwire[cpu], runs it). It loads the graphs the package has: scorer.onnx
(`--edge-score`) for the reconstruction error in one call, else the encoder and decoder,
else only the encoder (code densities).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .anomaly import RECON, ScoreResult
from .argtypes import add_session_args
from .arrays import ARRAY_SUFFIXES, check_writable, read_array
from .errors import DataError, InputError
from .manifest import SCORER, Manifest
from .model import Model

OUT_SUFFIXES = (".csv", ".npy", ".json")
TABLE_ROWS = 50
"""Rows printed on stdout without --out (then a line saying how many more there are)."""


def add_command(sub: Any) -> None:
    p = sub.add_parser(
        "score",
        help="anomaly scores, flags and the threshold for each sample",
        description="Score each sample of INPUT (rows in your own units: .npy, .npz or "
        ".csv) with a package trained by `latentwire train --task anomaly`: one column per "
        "score the package can compute (recon = reconstruction error, needs the decoder or "
        "scorer.onnx; gmm, mahalanobis, knn = densities of the codes, what a server that "
        "sees only codes computes), then the flagging score's p-value (the share of held-out "
        "normal samples scoring at least as high), flag (1 = anomalous: score > threshold) "
        "and threshold (calibrated at training on held-out normal data, see --fpr). Higher "
        "scores are more anomalous. Runs on ONNX Runtime and numpy only.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model package directory")
    p.add_argument("input", metavar="INPUT", help="samples: .npy, .npz or .csv")
    p.add_argument("--key", help="array name inside an .npz holding several")
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help=".csv (a header row), .npy (a structured array, loads without pickle) or .json "
        "(the rows plus the threshold and its calibration) (default: a table on stdout)",
    )
    p.add_argument(
        "--score",
        metavar="NAME",
        help="the score that flags: recon, gmm, mahalanobis or knn (default: recon when "
        "the package's decoder or scorer graph is there, else the code density the package "
        "chose at training without labels)",
    )
    p.add_argument(
        "--fpr",
        type=float,
        metavar="RATE",
        help="re-threshold to flag this share of the held-out normal samples, e.g. 0.05, "
        "without retraining (default: the package's threshold)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    add_session_args(p)
    p.set_defaults(func=run)


def _roles(path: Path) -> tuple[str, ...]:
    """The graphs to load: scorer.onnx when present, else encoder and decoder, else the
    encoder (an edge package may ship only its encoder)."""
    files = Manifest.load(path).files
    present = {role for role, entry in files.items() if (path / entry["path"]).is_file()}
    if SCORER in present:
        return (SCORER,)
    if "decoder" in present:
        return ("encoder", "decoder")
    return ("encoder",)


def score_all(
    model: Model, x: np.ndarray, flag_by: str | None, fpr: float | None
) -> tuple[dict[str, np.ndarray], ScoreResult]:
    """Every score the loaded package can compute, and the flagging one's result."""
    det = model.detector
    if det is None:
        raise InputError(
            f"model {model.name!r} was not trained for anomaly detection: train it with "
            "`latentwire train --task anomaly`"
        )
    names = [s for s in det.scores if s != RECON or model.can_score_recon]
    chosen = flag_by or (RECON if model.can_score_recon else det.default_codes_score)
    if chosen not in det.scores:
        det.threshold_for(chosen)  # the error naming the choices
    if chosen == RECON and not model.can_score_recon:
        raise InputError(
            "the recon score needs the package's decoder.onnx or scorer.onnx, which are not "
            f"in {model.path}; choose a code score: {', '.join(det.codes_scores)}"
        )
    w, flagging = model.encode_scored(x, chosen, fpr=fpr)
    z = model.manifest.codes.dequantize(w)
    columns: dict[str, np.ndarray] = {}
    for name in names:
        if name == chosen:
            columns[name] = flagging.scores
        elif name == RECON:
            columns[name] = model.score(x, RECON).scores
        else:
            columns[name] = det.score_latents(z, name).scores
    return columns, flagging


def _table(columns: dict[str, np.ndarray], r: ScoreResult, limit: int | None) -> str:
    head = ["sample", *columns, "p_value", "flag", "threshold"]
    n = len(r.scores)
    shown = n if limit is None else min(n, limit)
    rows = [head]
    for i in range(shown):
        rows.append(
            [
                str(i),
                *(f"{v[i]:.6g}" for v in columns.values()),
                f"{r.p_values[i]:.4f}",
                str(int(r.flags[i])),
                f"{r.threshold:.6g}",
            ]
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    if shown < n:
        lines.append(f"... {n - shown} more rows (write them all with --out scores.csv)")
    return "\n".join(lines)


def _write(
    path: Path, columns: dict[str, np.ndarray], r: ScoreResult, meta: dict[str, Any]
) -> None:
    """Write beside `path`, then rename: an interrupted run leaves no half-written file."""
    suffix = path.suffix.lower()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            if suffix == ".csv":
                names = [*columns, "p_value", "flag", "threshold"]
                table = np.column_stack(
                    [
                        *columns.values(),
                        r.p_values,
                        r.flags.astype(np.float64),
                        np.full(len(r.scores), r.threshold),
                    ]
                )
                np.savetxt(
                    f, table, delimiter=",", fmt="%.10g", header=",".join(names), comments=""
                )
            elif suffix == ".npy":
                dtype = [(n, "f8") for n in columns] + [
                    ("p_value", "f8"),
                    ("flag", "?"),
                    ("threshold", "f8"),
                ]
                rec = np.zeros(len(r.scores), dtype=dtype)
                for n, v in columns.items():
                    rec[n] = v
                rec["p_value"], rec["flag"], rec["threshold"] = r.p_values, r.flags, r.threshold
                np.save(f, rec, allow_pickle=False)
            else:
                rows = [
                    {
                        **{n: float(v[i]) for n, v in columns.items()},
                        "p_value": float(r.p_values[i]),
                        "flag": bool(r.flags[i]),
                    }
                    for i in range(len(r.scores))
                ]
                f.write((json.dumps({**meta, "samples": rows}, indent=1) + "\n").encode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    path = Path(args.model)
    if args.out is not None:
        check_writable(args.out, OUT_SUFFIXES)
        if args.out.exists() and not args.force:
            raise DataError(f"{args.out} exists: pass --force to replace it, or another --out")
    if Path(args.input).suffix.lower() not in ARRAY_SUFFIXES:
        raise DataError(f"{args.input}: give samples as .npy, .npz or .csv")
    if args.fpr is not None and not 0.0 < args.fpr < 1.0:
        raise DataError(f"--fpr must be between 0 and 1, got {args.fpr}")
    roles = _roles(path) if path.is_dir() else ("encoder",)
    model = Model(path, providers=args.providers, threads=args.threads, roles=roles)
    x = read_array(args.input, key=args.key)
    columns, r = score_all(model, x, args.score, args.fpr)
    det = model.detector
    assert det is not None
    cal = det.calibration
    how = (
        f"flags {args.fpr:g} of the held-out normal scores (--fpr)"
        if args.fpr is not None
        else f"calibrated at {cal.get('target', '?')} {cal.get('rate', '?')} on "
        f"{(cal.get('n_heldout') or {}).get(r.score, cal.get('n', '?'))} held-out "
        "normal samples"
    )
    meta = {
        "model": model.name,
        "fingerprint": model.fingerprint,
        "score": r.score,
        "threshold": r.threshold,
        "threshold_from": how,
        "flagged": int(r.flags.sum()),
        "n": len(r.scores),
    }
    if args.out is None:
        print(_table(columns, r, TABLE_ROWS))
    else:
        _write(args.out, columns, r, meta)
    n, k = len(r.scores), int(r.flags.sum())
    print(
        f"flagged {k} of {n} samples ({100 * k / max(n, 1):.1f}%) by {r.score} > "
        f"{r.threshold:.6g} ({how})" + (f" -> {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    return 0
