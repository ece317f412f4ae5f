"""Anomaly scores served from codes alone (Score RPC) against the package scoring locally.

For each labelled built-in set and seed: train a package with `latentwire train --task
anomaly --codec int8` (the CLI, one thread), serve every package from one repository,
send the labelled test split's codes to Score for each code score the package carries,
and record per (set, seed, score):

- parity: max |served - local| of the scores (`Model.score`), and whether flags and
  p-values are identical;
- AP and ROC-AUC of the served scores on the test labels, and the realised FPR of the
  served flags on the test normals (the calibrated target is the package's --fpr);
- bytes on the wire per sample: the Score request (codes) against raw float32 samples.

Quality numbers only (timings on the shared VM mean nothing).

    python benchmarks/score_server.py [--out benchmarks/results/score-server] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETS = ("breast-cancer", "digits")


def train(data: str, seed: int, out: Path) -> Path:
    if (out / "manifest.json").is_file():
        return out
    cmd = [
        sys.executable, "-m", "latentwire.runtime.cli", "-q", "train", "--data", data,
        "--task", "anomaly", "--codec", "int8", "--seed", str(seed), "--threads", "1",
        "--out", str(out), "--force",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from latentwire.runtime import Model
    from latentwire.runtime.client import Client
    from latentwire.runtime.server.app import ServeConfig, Server
    from latentwire.training.anomaly_data import split_from_spec

    work = Path(args.work)
    repo = work / "repo"
    packages = {}
    for data in SETS:
        for seed in args.seeds:
            key = f"{data}-s{seed}"
            pkg = train(data, seed, work / "packages" / key)
            dst = repo / key / "1"
            if not dst.exists():
                shutil.copytree(pkg, dst)
            packages[key] = pkg
    server = Server(ServeConfig(models=repo, host="127.0.0.1", port=0, poll_seconds=0))
    server.start()
    rows = []
    try:
        with Client(f"127.0.0.1:{server.port}") as client:
            for key, pkg in packages.items():
                model = Model(pkg, providers="cpu", threads=1)
                det = model.detector
                assert det is not None
                split = split_from_spec(model.manifest.raw["anomaly"]["split"])
                codes = list(model.encode_codes(split.x_test))
                wire = sum(m.ByteSize() for m in codes) / len(split.x_test)
                normal = split.y_test == 0
                for name in det.codes_scores:
                    got = client.score(codes, score=name)
                    local = model.score(split.x_test, name)
                    rows.append(
                        {
                            "package": key,
                            "score": name,
                            "default": name == det.default_codes_score,
                            "test_samples": len(split.y_test),
                            "test_anomalies": int(split.y_test.sum()),
                            "max_abs_diff": float(np.abs(got.scores - local.scores).max()),
                            "flags_equal": bool(np.array_equal(got.flags, local.flags)),
                            "p_values_equal": bool(np.array_equal(got.p_values, local.p_values)),
                            "ap": float(average_precision_score(split.y_test, got.scores)),
                            "roc_auc": float(roc_auc_score(split.y_test, got.scores)),
                            "threshold": got.threshold,
                            "target_fpr": det.calibration.get("rate"),
                            "realised_fpr": float(got.flags[normal].mean()),
                            "recall_at_threshold": float(got.flags[~normal].mean()),
                            "wire_bytes_per_sample": wire,
                            "raw_bytes_per_sample": 4 * int(np.prod(split.x_test.shape[1:])),
                        }
                    )
                    logging.info("%s %s: AP %.3f", key, name, rows[-1]["ap"])
        front = server.frontend
    finally:
        server.stop(grace=1.0)
    return {
        "what": "Score RPC (codes only) vs Model.score on labelled test splits",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": "2-vCPU AMD EPYC VM, shared" if args.shared else platform.processor(),
        "frontend": front,
        "codec": "int8",
        "seeds": args.seeds,
        "command": "python benchmarks/score_server.py " + " ".join(sys.argv[1:]),
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Score RPC vs local scoring ({result['date']}, {result['machine']}, "
        f"{result['frontend']} front, {result['codec']} codes, seeds {result['seeds']})",
        "",
        "| package | score | default | max abs diff | flags = | p = | AP | ROC-AUC "
        "| FPR (target) | recall | wire B/sample (raw) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['package']} | {r['score']} | {'yes' if r['default'] else ''} | "
            f"{r['max_abs_diff']:.1e} | {r['flags_equal']} | {r['p_values_equal']} | "
            f"{r['ap']:.3f} | {r['roc_auc']:.3f} | {r['realised_fpr']:.3f} "
            f"({r['target_fpr']}) | {r['recall_at_threshold']:.3f} | "
            f"{r['wire_bytes_per_sample']:.1f} ({r['raw_bytes_per_sample']}) |"
        )
    by_set: dict[str, list[float]] = {}
    for r in result["rows"]:
        if r["default"]:
            by_set.setdefault(r["package"].rsplit("-s", 1)[0], []).append(r["ap"])
    lines += ["", "Default code score, AP mean ± std over seeds:", ""]
    for data, aps in by_set.items():
        lines.append(f"- {data}: {np.mean(aps):.3f} ± {np.std(aps):.3f} (n={len(aps)})")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "score-server"))
    p.add_argument("--work", default="/tmp/latentwire-score-server")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--shared", action="store_true", help="label the machine as the shared VM")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = measure(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "score_server.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "score_server.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
