"""`latentwire evaluate --task anomaly`: how well a package's anomaly scores find labelled
anomalies, next to IsolationForest, ECOD, PyOD's AutoEncoder and PCA reconstruction error
fitted on the same data and scored on the same test samples in the same run.

The test set: for a package trained with ``--task anomaly`` on built-in data (breast-cancer,
digits, wine), the split its manifest records (`anomaly_data.split_from_spec`), so the test
samples are ones it never saw; for your own data, ``--data test.csv --labels labels.csv``
(1 = anomaly) and the baselines fit on the model's training data (or ``--fit-data``).

Every score the package carries is measured through the runtime, codes-only densities
included, each on the package's codes and on the other of f32 latents / int8 codes, so
the report shows what int8 costs. A package without anomaly scoring is measured by its
reconstruction error alone.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from latentwire.runtime.errors import DataError

log = logging.getLogger("latentwire.training")


def add_arguments(group: Any) -> None:
    """Flags of this task beyond --task, --labels and --noise."""
    group.add_argument(
        "--fit-data",
        metavar="PATH",
        help="anomaly: the data the baselines fit on (default: the model's training data, "
        "or the fit part of a built-in split)",
    )
    group.add_argument(
        "--detectors",
        default="iforest,ecod,pyod-ae,pca",
        metavar="LIST",
        help="anomaly: baselines to run beside the model, comma-separated from iforest, "
        "ecod, pyod-ae, pca, or none (default: all four)",
    )
    group.add_argument(
        "--split-seed",
        type=int,
        metavar="N",
        help="anomaly, built-in data: test on the split of another seed (a model trained "
        "with --task anomaly records its own split, which is the default; another seed's "
        "test samples may include ones it trained on, so a warning says so) (default: the "
        "recorded split, else seed 0)",
    )


# -- the test set -----------------------------------------------------------------------


def recorded_spec(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The anomaly split a package records (read leniently: any object with "data" and
    "protocol" in its "anomaly" or "training" section)."""
    for section in (manifest.get("anomaly"), manifest.get("training")):
        if not isinstance(section, dict):
            continue
        for value in (section, *section.values()):
            if isinstance(value, dict) and "data" in value and "protocol" in value:
                return value
    return None


def _read_labels(path: str) -> np.ndarray:
    from latentwire.runtime.arrays import read_array

    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: no such labels file")
    return np.asarray(read_array(p)).reshape(-1)


def load_task(
    data: str, manifest: dict[str, Any], package: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """x_fit, x_test, y_test and a description of where they came from."""
    from .anomaly_data import LABELLED, anomaly_split, split_from_spec
    from .anomaly_metrics import check_labels
    from .data import load_data, resolve_source

    base = data.partition(":")[0]
    if base in LABELLED and not args.labels:
        spec = recorded_spec(manifest)
        if spec is not None and spec.get("data") == base:
            if ":" in data and str(spec.get("normal")) != data.partition(":")[2]:
                raise DataError(
                    f"the model was trained with normal class {spec.get('normal')!r}, not "
                    f"{data.partition(':')[2]!r}: pass --data {base}:{spec.get('normal')}"
                )
            if args.split_seed is not None and args.split_seed != spec.get("seed"):
                log.warning(
                    "--split-seed %d: not the split the model trained on (seed %s); the "
                    "model may have trained on some of the test samples",
                    args.split_seed,
                    spec.get("seed"),
                )
                spec = {**spec, "seed": args.split_seed}
            s = split_from_spec(spec)
        else:
            log.warning(
                "model %s %s: using %s's default split (seed %d); the model may have "
                "trained on some of its test samples",
                manifest.get("name"),
                "records no anomaly split"
                if spec is None
                else f"was trained on a split of {spec.get('data')}",
                data,
                args.split_seed or 0,
            )
            s = anomaly_split(data, seed=args.split_seed or 0)
        x_fit = load_data(args.fit_data).x if args.fit_data else s.x_fit
        return {
            "name": s.name,
            "source": data,
            "spec": s.spec,
            "x_fit": x_fit,
            "x_test": s.x_test,
            "y_test": s.y_test,
        }
    if not args.labels:
        raise DataError(
            f"--task anomaly on {data!r} needs --labels (one 0/1 label per sample, "
            f"1 = anomaly); built-in labelled data: {', '.join(LABELLED)}"
        )
    test = load_data(data)
    y = check_labels(_read_labels(args.labels), len(test.x))
    if args.fit_data:
        fit_source = args.fit_data
    else:
        stored = (manifest.get("training") or {}).get("data")
        if not stored:
            raise DataError("the model records no training data: pass --fit-data PATH")
        fit_source = resolve_source(str(stored), package)
    return {
        "name": test.name,
        "source": test.source,
        "spec": None,
        "x_fit": load_data(fit_source).x,
        "x_test": test.x,
        "y_test": y,
    }


# -- the model's scores -----------------------------------------------------------------


def _row(
    ident: str, label: str, scores: np.ndarray, *, kind: str, codes_only: bool, **extra: Any
) -> dict[str, Any]:
    return {
        "id": ident,
        "label": label,
        "kind": kind,
        "codes_only": codes_only,
        "scores": np.asarray(scores, dtype=np.float64),
        **extra,
    }


def model_rows(path: Path, x_test: np.ndarray) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row per score the package carries (codes-only ones on both f32 latents and int8
    codes), each with its scores on `x_test` and its stored threshold."""
    from latentwire.runtime import load
    from latentwire.runtime.anomaly import RECON, recon_error
    from latentwire.runtime.formats import CodeFormat

    model = load(path, threads=1)
    m = model.manifest
    det = getattr(model, "detector", None)
    info = {
        "path": str(path),
        "name": m.name,
        "fingerprint": m.fingerprint,
        "codes": m.codes.name,
        "latent_values": int(np.prod([d or 1 for d in m.latent.shape[1:]])),
        "scores": list(det.scores) if det is not None else [RECON],
        "default_codes_score": det.default_codes_score if det is not None else None,
        "anomaly_section": det is not None,
    }
    rows: list[dict[str, Any]] = []
    if det is None:
        normed = model.prepare_inputs(x_test)
        x_hat = m.normalization.forward(model.decode(model.encode(x_test)))
        rows.append(
            _row(RECON, "recon", recon_error(normed, x_hat), kind="model", codes_only=False)
        )
        return rows, info
    fmt = m.codes.name
    z32 = model.encode_latents(x_test) if det.codes_scores else None
    for name in det.scores:
        r = model.score(x_test, score=name)
        codes_only = name != RECON
        variant = fmt if codes_only else None
        rows.append(
            _row(
                name,
                f"{name} ({fmt} codes)" if codes_only else name,
                r.scores,
                kind="model",
                codes_only=codes_only,
                variant=variant,
                threshold=r.threshold,
                default=name == det.default_codes_score,
            )
        )
        if not codes_only or z32 is None:
            continue
        if fmt != "f32":  # the same density on unquantised latents
            other, z = "f32", z32
        else:  # what int8 codes of these latents would score
            q = CodeFormat.build("int8", m.codes.lo, m.codes.hi)
            other, z = "int8", q.dequantize(q.quantize(z32))
        rows.append(
            _row(
                f"{name}@{other}",
                f"{name} ({other} {'latents' if other == 'f32' else 'codes'})",
                det.score_latents(z, name).scores,
                kind="model",
                codes_only=True,
                variant=other,
                threshold=det.thresholds[name],
            )
        )
    return rows, info


def baseline_rows(
    x_fit: np.ndarray, x_test: np.ndarray, which: list[str], *, seed: int, pca_k: int | None
) -> list[dict[str, Any]]:
    from .detectors import LABELS, run_baselines

    scores = run_baselines(x_fit, x_test, which=which, seed=seed, pca_k=pca_k, log=log.info)
    return [_row(k, LABELS[k], v, kind="baseline", codes_only=False) for k, v in scores.items()]


def parse_detectors(text: str) -> list[str]:
    from .detectors import BASELINES

    names = [t.strip() for t in text.split(",") if t.strip()]
    if names == ["none"]:
        return []
    bad = [n for n in names if n not in BASELINES]
    if bad or not names:
        raise DataError(
            f"--detectors: unknown {', '.join(bad) or 'empty list'}; choose from "
            f"{', '.join(BASELINES)} or none"
        )
    return names


def evaluate_rows(
    rows: list[dict[str, Any]], y: np.ndarray
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Metrics per row (scores dropped, curves kept for plotting) and the summary."""
    from .anomaly_metrics import curves, score_metrics

    out = []
    for r in rows:
        metrics = score_metrics(y, r["scores"], r.get("threshold"))
        entry = {k: v for k, v in r.items() if k not in ("scores", "threshold")}
        out.append(entry | {"metrics": metrics, "curves": curves(y, r["scores"])})
    return out, summarize(out)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Best model score, best codes-only score, best baseline, int8 - f32 AP per density."""

    def best(sel: list[dict[str, Any]]) -> dict[str, Any] | None:
        if not sel:
            return None
        r = max(sel, key=lambda r: r["metrics"]["ap"])
        return {"id": r["id"], "ap": r["metrics"]["ap"], "roc_auc": r["metrics"]["roc_auc"]}

    model = [r for r in rows if r["kind"] == "model"]
    packaged = [r for r in model if "@" not in r["id"]]
    by_id = {r["id"]: r for r in rows}
    int8_gap: dict[str, float] = {}
    for r in model:
        if r.get("variant") not in ("f32", "int8"):
            continue
        base = r["id"].split("@")[0]
        pair = [x for x in model if x["id"].split("@")[0] == base and x.get("variant")]
        v = {x["variant"]: x["metrics"]["ap"] for x in pair}
        if "f32" in v and "int8" in v:
            int8_gap[base] = v["int8"] - v["f32"]
    return {
        "best_model": best(packaged),
        "best_codes_only": best([r for r in packaged if r["codes_only"]]),
        "default_codes_score": next(
            ({"id": r["id"], "ap": r["metrics"]["ap"]} for r in packaged if r.get("default")),
            None,
        ),
        "best_baseline": best([r for r in rows if r["kind"] == "baseline"]),
        "iforest_ap": by_id["iforest"]["metrics"]["ap"] if "iforest" in by_id else None,
        "int8_minus_f32_ap": int8_gap,
    }


def evaluate_anomaly(
    path: Path,
    task: dict[str, Any],
    *,
    detectors: list[str],
    seed: int = 0,
) -> dict[str, Any]:
    """Score the package and the baselines on one task; the report's content (no files)."""
    rows, info = model_rows(path, task["x_test"])
    rows += baseline_rows(
        task["x_fit"], task["x_test"], detectors, seed=seed, pca_k=info["latent_values"]
    )
    y = task["y_test"]
    scored, summary = evaluate_rows(rows, y)
    data = {
        "name": task["name"],
        "source": task["source"],
        "split": task["spec"],
        "n_fit": len(task["x_fit"]),
        "n_test": len(y),
        "n_anomalies": int(y.sum()),
        "prevalence": float(y.mean()),
    }
    return {"task": "anomaly", "data": data, "model": info, "rows": scored, "summary": summary}


def run(args: argparse.Namespace) -> int:
    """The extras were checked by `run_evaluate` (training/cli.py) before dispatch."""
    from latentwire.runtime.manifest import Manifest

    from .report_anomaly import format_table, write_report

    if len(args.model) != 1:
        raise DataError("--task anomaly evaluates one --model at a time")
    path = args.model[0]
    detectors = parse_detectors(args.detectors)
    manifest = Manifest.load(path).raw
    task = load_task(args.data, manifest, path, args)
    log.info(
        "anomaly task %s: %d test samples (%d anomalies), baselines fit on %d",
        task["name"],
        len(task["y_test"]),
        int(task["y_test"].sum()),
        len(task["x_fit"]),
    )
    result = evaluate_anomaly(path, task, detectors=detectors, seed=args.split_seed or 0)
    paths = write_report(args.report, result)
    if args.json:
        print(Path(paths["json"]).read_text(), end="")
        return 0
    print(format_table(result))
    print(f"report: {', '.join(str(p) for p in paths.values())}")
    return 0
