"""Measurements of the anomaly-detection core (train --task anomaly, latentwire score).

    OMP_NUM_THREADS=1 python benchmarks/anomaly_core.py [--quick]

Writes benchmarks/results/anomaly-core/results.json and results.md:
1. calibration: realised false-positive rate on 20,000 fresh normal samples of a synthetic
   set (3-D manifold in 12 features; 3,000 to train, half held out), at the stored 1%
   thresholds and re-thresholded at 5%, f32 and int8 codes, seeds 0 and 1; and on the
   breast-cancer test normals (about 107 per seed; too few to pin 1%, reported as is);
2. int8 vs f32 codes: AP and ROC-AUC of every score on breast-cancer (clean protocol),
   seeds 0-2, the package's default settings (ANOMALY_DEFAULTS);
3. edge scoring graph: scorer.onnx bytes over encoder.onnx, and anomaly.npz bytes;
4. robust option: unsup protocol (anomalies left in the training data) with and without
   --robust, breast-cancer and digits, seeds 0-1.
Only quality numbers and sizes: no timings (the VM is shared).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from latentwire.runtime import load
from latentwire.runtime.anomaly import ALL_SCORES
from latentwire.training.anomaly import anomaly_data
from latentwire.training.anomaly_data import split_from_spec
from latentwire.training.data import Dataset
from latentwire.training.pipeline import AnomalyOptions, train_and_export

OUT = Path(__file__).parent / "results" / "anomaly-core"


def synthetic(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(0).normal(size=(3, 12))
    return (np.tanh(rng.normal(size=(n, 3))) @ mix + 0.05 * rng.normal(size=(n, 12))).astype(
        np.float32
    )


def package(tmp: Path, tag: str, data: Dataset, **kw: Any) -> Path:
    out = tmp / tag
    opts = kw.pop("anomaly", AnomalyOptions(edge_score=True))
    train_and_export(
        data, name=tag, out=out, checkpoint=None, resume=False, progress=False, anomaly=opts, **kw
    )
    return out


def calibration(tmp: Path, seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    fresh = synthetic(20000, seed=99)
    for seed in seeds:
        for codec in ("f32", "int8"):
            data = Dataset(synthetic(3000, seed=seed + 1), "syn", "syn", False, "standard")
            pkg = package(
                tmp,
                f"syn-{codec}-{seed}",
                data,
                seed=seed,
                codec=codec,
                epochs=30,
                hidden=(32,),
                latent_dim=4,
                val_fraction=0.5,
            )
            model = load(pkg, providers="cpu")
            for fpr in (0.01, 0.05):
                for name in ALL_SCORES:
                    r = model.score(fresh, name, fpr=None if fpr == 0.01 else fpr)
                    rows.append(
                        {
                            "data": "synthetic",
                            "codec": codec,
                            "seed": seed,
                            "target": fpr,
                            "score": name,
                            "n_heldout": 1500,
                            "n_fresh": len(fresh),
                            "realised": round(float(r.flags.mean()), 5),
                        }
                    )
    return rows


def labelled(data: str, seed: int, protocol: str = "clean") -> tuple[Dataset, dict[str, Any]]:
    ds, spec = anomaly_data(data, protocol=protocol, seed=seed)
    assert spec is not None
    return ds, spec


def quality(model_dir: Path, spec: dict[str, Any]) -> dict[str, Any]:
    split = split_from_spec(spec)
    model = load(model_dir, providers="cpu")
    manifest = json.loads((model_dir / "manifest.json").read_text())
    out: dict[str, Any] = {"default_codes_score": manifest["anomaly"]["default_codes_score"]}
    normals = split.y_test == 0
    for name in ALL_SCORES:
        r = model.score(split.x_test, name)
        out[name] = {
            "ap": round(float(average_precision_score(split.y_test, r.scores)), 4),
            "roc": round(float(roc_auc_score(split.y_test, r.scores)), 4),
            "fpr_at_stored_1pct": round(float(r.flags[normals].mean()), 4),
        }
    out["n_test"], out["n_test_normals"] = len(split.y_test), int(normals.sum())
    out["n_validation"] = manifest["anomaly"]["calibration"]["n"]
    return out


def int8_vs_f32(tmp: Path, seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    for seed in seeds:
        ds, spec = labelled("breast-cancer", seed)
        for codec in ("f32", "int8"):
            pkg = package(
                tmp,
                f"bc-{codec}-{seed}",
                ds,
                seed=seed,
                codec=codec,
                anomaly=AnomalyOptions(split=spec, edge_score=True),
            )
            m = json.loads((pkg / "manifest.json").read_text())
            files = m["files"]
            rows.append(
                {
                    "data": "breast-cancer",
                    "protocol": "clean",
                    "seed": seed,
                    "codec": codec,
                    **quality(pkg, spec),
                    "bytes": {
                        "encoder": files["encoder"]["bytes"],
                        "decoder": files["decoder"]["bytes"],
                        "scorer": files["scorer"]["bytes"],
                        "scorer_over_encoder": files["scorer"]["extra_bytes_over_encoder"],
                        "anomaly_npz": files["anomaly"]["bytes"],
                    },
                }
            )
    return rows


def robust(tmp: Path, seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    for data in ("breast-cancer", "digits"):
        for seed in seeds:
            ds, spec = labelled(data, seed, protocol="unsup")
            for flag in (False, True):
                pkg = package(
                    tmp,
                    f"{data}-unsup-{seed}-{flag}",
                    ds,
                    seed=seed,
                    anomaly=AnomalyOptions(split=spec, robust=flag),
                )
                m = json.loads((pkg / "manifest.json").read_text())
                rows.append(
                    {
                        "data": data,
                        "protocol": "unsup",
                        "seed": seed,
                        "robust": flag,
                        "dropped": (m["anomaly"]["robust"] or {}).get("dropped", 0),
                        **quality(pkg, spec),
                    }
                )
    return rows


def markdown(res: dict[str, Any]) -> str:
    lines = [f"# anomaly-core measurements ({res['date']}, {res['machine']})", ""]
    lines += [
        "## 1. Realised FPR on 20,000 fresh synthetic normals (target ±1 pp)",
        "",
        "| codec | seed | target | recon | gmm | mahalanobis | knn |",
        "|---|---|---|---|---|---|---|",
    ]
    cal = res["calibration"]
    keys = sorted({(r["codec"], r["seed"], r["target"]) for r in cal})
    for codec, seed, target in keys:
        vals = {
            r["score"]: r["realised"]
            for r in cal
            if (r["codec"], r["seed"], r["target"]) == (codec, seed, target)
        }
        lines.append(
            f"| {codec} | {seed} | {target:.0%} | "
            + " | ".join(f"{100 * vals[s]:.2f}%" for s in ALL_SCORES)
            + " |"
        )
    lines += [
        "",
        "## 2. breast-cancer, clean protocol: AP / ROC-AUC (test split), f32 vs int8 codes",
        "",
        "| seed | codec | default codes score | recon | gmm | mahalanobis | knn "
        "| test-normal FPR at 1% (recon, gmm) | n val |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["int8_vs_f32"]:
        lines.append(
            f"| {r['seed']} | {r['codec']} | {r['default_codes_score']} | "
            + " | ".join(f"{r[s]['ap']:.3f} / {r[s]['roc']:.3f}" for s in ALL_SCORES)
            + f" | {r['recon']['fpr_at_stored_1pct']:.3f}, {r['gmm']['fpr_at_stored_1pct']:.3f}"
            + f" | {r['n_validation']} |"
        )
    for codec in ("f32", "int8"):
        sel = [r for r in res["int8_vs_f32"] if r["codec"] == codec]
        lines.append("")
        lines.append(
            f"mean AP {codec}: "
            + ", ".join(f"{s} {np.mean([r[s]['ap'] for r in sel]):.3f}" for s in ALL_SCORES)
        )
    b = res["int8_vs_f32"][0]["bytes"]
    lines += [
        "",
        "## 3. Edge scoring graph (breast-cancer, 30 features, K=8, hidden 128,64)",
        "",
        f"encoder.onnx {b['encoder']:,} B; scorer.onnx {b['scorer']:,} B "
        f"(+{b['scorer_over_encoder']:,} B over the encoder, which it replaces on an edge "
        f"that scores); anomaly.npz {b['anomaly_npz']:,} B (kNN bank of training codes, "
        "GMM, Mahalanobis, held-out scores).",
    ]
    lines += [
        "",
        "## 4. Contaminated training data (unsup protocol): AP of recon / default codes score",
        "",
        "| data | seed | plain | --robust (dropped) |",
        "|---|---|---|---|",
    ]
    rob = res["robust"]
    for data, seed in sorted({(r["data"], r["seed"]) for r in rob}):
        a = next(r for r in rob if (r["data"], r["seed"], r["robust"]) == (data, seed, False))
        c = next(r for r in rob if (r["data"], r["seed"], r["robust"]) == (data, seed, True))
        da, dc = a["default_codes_score"], c["default_codes_score"]
        lines.append(
            f"| {data} | {seed} | {a['recon']['ap']:.3f} / {a[da]['ap']:.3f} ({da}) | "
            f"{c['recon']['ap']:.3f} / {c[dc]['ap']:.3f} ({dc}) ({c['dropped']}) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="one seed each")
    args = p.parse_args()
    torch.set_num_threads(1)
    seeds = [0] if args.quick else [0, 1]
    res: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "machine": "2-vCPU AMD EPYC VM, shared with other jobs (quality numbers only)",
        "command": "OMP_NUM_THREADS=1 python benchmarks/anomaly_core.py",
    }
    with tempfile.TemporaryDirectory() as tmp:
        res["calibration"] = calibration(Path(tmp), seeds)
        res["int8_vs_f32"] = int8_vs_f32(Path(tmp), [0] if args.quick else [0, 1, 2])
        res["robust"] = robust(Path(tmp), seeds)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    (OUT / "results.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
