"""Speed of the two ANS coders: constriction (Rust) and latentwire's own (runtime/ans.py).

Both write the same streams (tests/test_ans.py); this measures what the pure-Python coder
costs where constriction has no wheel (64-bit ARM Linux). Two workloads, the streams a
user's codes make:

- `dense`: 4,096 samples of an 8-channel dense model (the digits demo's shape), 32,768
  symbols, tables of 9-41 symbols;
- `photo-512`: one 512x512 photo through a stride-8 convolutional model with 16 latent
  channels (the shape `latentwire train --data photos` makes), 65,536 symbols, tables of
  Laplace-shaped priors 7-101 symbols wide.

    .venv/bin/python benchmarks/entropy_coder.py             # -> results/entropy-coder.{json,png}
    .venv/bin/python benchmarks/entropy_coder.py --repeat 3  # quick look

Run it on a quiet machine: another job on 2 cores changes the ratio by 2x.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from latentwire.runtime.entropy import FactorizedPrior

RESULTS = Path(__file__).parent / "results"


def laplace_prior(widths: list[float], rng: np.random.Generator) -> FactorizedPrior:
    offsets, pmfs = [], []
    for b in widths:
        half = int(np.ceil(6 * b)) + 3
        k = np.arange(-half, half + 1)
        pmfs.append(np.exp(-np.abs(k - rng.uniform(-0.3, 0.3)) / b))
        offsets.append(-half)
    return FactorizedPrior.from_pmfs(offsets, pmfs)


def draw(prior: FactorizedPrior, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    cols = [
        rng.choice(f.size, size=shape, p=f / f.sum()) + o
        for o, f in zip(prior.offsets, prior.freqs, strict=True)
    ]
    return np.stack(cols, axis=1).astype(np.int32)


def workloads() -> dict[str, tuple[FactorizedPrior, np.ndarray]]:
    rng = np.random.default_rng(0)
    dense = laplace_prior(list(np.linspace(1.0, 6.0, 8)), rng)
    photo = laplace_prior(list(np.geomspace(0.6, 16.0, 16)), rng)
    return {
        "dense": (dense, draw(dense, (4096,), rng)),
        "photo-512": (photo, draw(photo, (1, 64, 64), rng)),
    }


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeat", type=int, default=15, help="runs per figure; the minimum counts")
    p.add_argument("--out", type=Path, default=RESULTS / "entropy-coder")
    args = p.parse_args(argv)
    rows = []
    for name, (prior, symbols) in workloads().items():
        n = symbols.size
        shape = list(symbols.shape[1:])
        streams = {}
        for coder in ("constriction", "python"):
            stream = prior.encode(symbols, coder=coder)
            streams[coder] = stream
            enc = best_of(functools.partial(prior.encode, symbols, coder=coder), args.repeat)
            dec = best_of(
                functools.partial(prior.decode, stream, len(symbols), shape, coder=coder),
                args.repeat,
            )
            rows.append(
                {
                    "workload": name,
                    "coder": coder,
                    "symbols": n,
                    "stream_bytes": len(stream),
                    "encode_ms": round(enc * 1e3, 3),
                    "decode_ms": round(dec * 1e3, 3),
                    "encode_msym_per_s": round(n / enc / 1e6, 3),
                    "decode_msym_per_s": round(n / dec / 1e6, 3),
                }
            )
            print(
                f"{name:10} {coder:12} {n:6} symbols -> {len(stream):6} B  encode "
                f"{enc * 1e3:7.2f} ms ({n / enc / 1e6:6.2f} Msym/s)  decode {dec * 1e3:7.2f} ms "
                f"({n / dec / 1e6:6.2f} Msym/s)"
            )
        assert streams["constriction"] == streams["python"], f"{name}: the streams differ"
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {cpu_model()}",
        "python": platform.python_version(),
        "repeat": args.repeat,
        "identical_streams": True,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    plot(rows, args.out.with_suffix(".png"), meta)
    print(f"wrote {args.out.with_suffix('.json')} and .png")
    return 0


def plot(rows: list[dict[str, object]], path: Path, meta: dict[str, object]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    labels, values, colors = [], [], []
    for r in rows:
        for op in ("encode", "decode"):
            labels.append(f"{r['workload']}\n{op}")
            values.append(float(r[f"{op}_msym_per_s"]))  # type: ignore[arg-type]
            colors.append("#4c72b0" if r["coder"] == "constriction" else "#dd8452")
    order = sorted(range(len(labels)), key=lambda i: (labels[i], colors[i]))
    ax.barh(
        [f"{labels[i]} ({'constriction' if colors[i] == '#4c72b0' else 'python'})" for i in order],
        [values[i] for i in order],
        color=[colors[i] for i in order],
    )
    ax.set_xscale("log")
    ax.set_xlabel("million symbols per second (log scale)")
    ax.set_title(f"ANS coders, identical streams ({meta['date']}, {meta['machine']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
