"""Serving benchmark: `latentwire serve` against Triton and in-process ONNX Runtime, with a
native and a Python load generator.

Builds one model package (a dense 784 -> 128 -> 64 autoencoder, random weights, seed 0) and
serves its decoder.onnx (z [B, 64] -> x_hat [B, 784]) with every server, one after another,
so all of them run the identical graph. Each server is started as a subprocess on its own
port, the way a user starts it (default flags, nothing pinned), measured, then stopped by
PID (SIGTERM, SIGKILL after 20 s, leftover children killed).

Targets (--targets, all by default):
  inproc               in-process ONNX Runtime on decoder.onnx, batch 1/64/1024, no RPC;
                       1 intra-op thread and ORT's default: the limit
  latentwire           `latentwire serve` as the README starts it (native front, batching)
  latentwire_grpcio    the same with --frontend grpcio (the pure-Python fallback)
  latentwire_nobatch   the native front with --no-batching
  triton               Triton 2.51, Python backend running ORT, its dynamic batcher
                       (the peers' serve_triton_raw.py)
  mlserver             MLServer 1.7.1 --parallel-workers 0 (skipped unless its venv exists)

Load generators (--generators, both by default), each over the whole sweep:
  h2load   h2load replaying one gRPC-framed ModelInferRequest (serving/h2load.py): costs the
           client a few µs per request, so the servers are what is measured; replies are
           checked (reply size per request, 16 replies compared through tritonclient)
  python   the peers' closed-loop load_v2.py (tritonclient, 2 processes): what a Python
           client fleet sees; it costs 175-270 µs of CPU per request itself

The peers' harness (load_v2.py, serve_*.py and their venvs) is found with --peers (or
$LATENTWIRE_PEERS, default /work/peers-work); a target or generator whose pieces are
missing is skipped with the reason recorded.

Writes to --out (default benchmarks/results):
  serve.json   machine, settings, every point (samples/s, req/s, p50/p99, server and client
               CPU µs per request), ratios
  serve.md     markdown tables and ratio lines, ready to paste into a README
  serve.png    samples/s and p99 per point, server and generator (log scale)
  repo/        the model package (reused when present), logs/, raw/, work/

example:
  .venv/bin/python benchmarks/serve.py --duration 2 --warmup 1 --sweep 1x1,64x64   # quick look
  .venv/bin/python benchmarks/serve.py                                           # full, ~20 min
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving import h2load
from serving.procs import (
    ROOT,
    cpu_times,
    free_port_block,
    latentwire_command,
    log,
    machine_info,
    orphan_safe,
    steal_pct,
    stop_tree,
    venv_versions,
)
from serving.report import compute_ratios, write_markdown, write_plot

DEFAULT_SWEEP = "1x1,16x1,64x1,1x64,16x64,64x64"
DEFAULT_PEERS = "/work/peers-work"
PACKAGE = "bench"
V2_MODEL = f"{PACKAGE}.decoder"
INPROC_BATCHES = (1, 64, 1024)
TARGETS = ("inproc", "latentwire", "latentwire_grpcio", "latentwire_nobatch", "triton", "mlserver")
GENERATORS = ("h2load", "python")
LATENT_DIM, OUTPUT_DIM = 64, 784


# --------------------------------------------------------------------------- model


def build_package(repo: Path, rebuild: bool) -> dict[str, Any]:
    """The dense 784-128-64 autoencoder as package repo/bench/1 (reused when it loads)."""
    pkg = repo / PACKAGE / "1"
    if not rebuild and (pkg / "manifest.json").exists():
        try:
            from latentwire.runtime import load

            model = load(pkg)
            log(f"reusing package {pkg} (fingerprint {model.fingerprint})")
            return _package_info(pkg)
        except Exception as exc:  # any load failure: rebuild
            log(f"package {pkg} does not load ({exc}); rebuilding")
    import numpy as np
    import torch

    from latentwire.training.export import export_package
    from latentwire.training.models import ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(kind="dense", input_shape=(784,), latent_dim=64, hidden=(128,))
    model_t = build_model(cfg).eval()
    samples = np.random.default_rng(0).random((64, 784), dtype=np.float32)
    pkg.mkdir(parents=True, exist_ok=True)
    export_package(
        model_t, cfg, out=pkg, name=PACKAGE, normalization={"kind": "none"}, samples=samples
    )
    log(f"built package {pkg}")
    return _package_info(pkg)


def _package_info(pkg: Path) -> dict[str, Any]:
    manifest = json.loads((pkg / "manifest.json").read_text())
    return {
        "path": str(pkg),
        "decoder_onnx": str(pkg / "decoder.onnx"),
        "fingerprint": manifest.get("fingerprint"),
        "latent_shape": manifest.get("latent", {}).get("shape"),
        "output_shape": manifest.get("output", {}).get("shape"),
        "architecture": "dense 784 -> 128 -> 64 -> 128 -> 784, random init, seed 0",
    }


# --------------------------------------------------------------------------- in-process ORT


def inproc_measure(
    model: str, threads: int, batches: Sequence[int], seconds: float, warmup: float
) -> list[dict[str, Any]]:
    """Closed loop of session.run in this process; per-call latency and process CPU."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    out_name = sess.get_outputs()[0].name
    dim = int(inp.shape[1])
    rng = np.random.default_rng(0)
    points: list[dict[str, Any]] = []
    for b in batches:
        feed = {inp.name: rng.standard_normal((b, dim), dtype=np.float32)}
        end = time.perf_counter() + warmup
        while time.perf_counter() < end:
            sess.run([out_name], feed)
        lat: list[float] = []
        c0, t0 = time.process_time(), time.perf_counter()
        end = t0 + seconds
        while True:
            s = time.perf_counter()
            sess.run([out_name], feed)
            e = time.perf_counter()
            lat.append(e - s)
            if e >= end:
                break
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        ms = np.array(lat) * 1e3
        points.append(
            {
                "clients": 1,
                "batch": b,
                "samples_per_s": len(lat) * b / wall,
                "req_per_s": len(lat) / wall,
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
                "requests": len(lat),
                "errors": 0,
                "cpu_server_cores": round(cpu / wall, 2),
            }
        )
        print(
            f"  threads={threads or 'default'} batch={b:<5} "
            f"samples/s={points[-1]['samples_per_s']:>10.0f} p50={points[-1]['p50_ms']:.3f} "
            f"p99={points[-1]['p99_ms']:.3f} ms cpu={cpu / wall:.2f} cores",
            file=sys.stderr,
            flush=True,
        )
    return points


def run_inproc(args: argparse.Namespace, decoder: Path) -> list[dict[str, Any]]:
    recs: list[dict[str, Any]] = []
    for threads in (1, 0):
        label = f"ort_inproc_t{threads or 'default'}"
        title = f"in-process ORT, {threads or 'default'} thread{'s' if threads != 1 else ''}"
        log(f"{label}: batches {','.join(map(str, INPROC_BATCHES))}")
        cmd = [sys.executable, __file__, "--inproc-child", f"{decoder},{threads}"]
        cmd += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        rec: dict[str, Any] = {
            "label": label,
            "title": title,
            "kind": "inproc",
            "intra_op_threads": threads or "default",
            "command": cmd,
            "points": [],
        }
        if proc.returncode != 0:
            rec.update(status="failed", reason=f"exit code {proc.returncode}")
        else:
            rec["points"] = [{"label": label, **p} for p in json.loads(proc.stdout)]
            rec.update(status="ok", reason="")
        recs.append(rec)
    return recs


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    key: str
    label: str
    title: str
    command: list[str] = field(default_factory=list)
    port: int = 0
    skip: str | None = None


@dataclass
class Peers:
    root: Path
    load_python: Path | None
    load_py: Path | None
    triton_python: Path | None
    mlserver_python: Path | None
    reasons: dict[str, str]


def find_peers(root: Path) -> Peers:
    reasons: dict[str, str] = {}

    def need(*paths: Path) -> str | None:
        missing = [str(p) for p in paths if not p.exists()]
        return f"missing {', '.join(missing)}" if missing else None

    load_py = root / "load_v2.py"
    load_python = root / "venv-load" / "bin" / "python"
    why = need(load_py)
    if why is None and not load_python.exists():
        ok = subprocess.run(
            [sys.executable, "-c", "import tritonclient.grpc"], capture_output=True
        ).returncode
        if ok == 0:
            log(f"{load_python} missing; running load_v2.py with {sys.executable}")
            load_python = Path(sys.executable)
        else:
            why = f"missing {load_python} (and this venv has no tritonclient[grpc])"
    if why:
        reasons["load"] = why
    triton_python = root / "venv-triton" / "bin" / "python"
    if w := need(triton_python, root / "serve_triton_raw.py"):
        reasons["triton"] = w
    mlserver_python = root / "venv-mlserver" / "bin" / "python"
    if w := need(mlserver_python, root / "serve_mlserver.py"):
        reasons["mlserver"] = w
    return Peers(
        root=root,
        load_python=None if "load" in reasons else load_python,
        load_py=None if "load" in reasons else load_py,
        triton_python=None if "triton" in reasons else triton_python,
        mlserver_python=None if "mlserver" in reasons else mlserver_python,
        reasons=reasons,
    )


def plan_targets(args: argparse.Namespace, peers: Peers, decoder: Path, work: Path) -> list[Target]:
    keys = [k.strip() for k in args.targets.split(",") if k.strip()]
    lw = latentwire_command()
    repo = str(Path(args.out) / "repo")
    port = args.base_port
    targets: list[Target] = []
    for key in keys:
        if key == "inproc":
            continue
        port = free_port_block(port)
        # as the README starts it; --poll-seconds 0 only stops rescanning the repository
        lw_args = ["serve", "--models", repo, "--host", "127.0.0.1", "--port", str(port)]
        lw_args += ["--poll-seconds", "0", *args.serve_arg]
        t: Target
        if key == "latentwire":
            t = Target(key, "latentwire", "latentwire serve (native front)", lw + lw_args, port)
        elif key == "latentwire_grpcio":
            title = "latentwire serve --frontend grpcio"
            t = Target(key, key, title, [*lw, *lw_args, "--frontend", "grpcio"], port)
        elif key == "latentwire_nobatch":
            title = "latentwire serve --no-batching (native)"
            t = Target(key, key, title, [*lw, *lw_args, "--no-batching"], port)
        elif key == "triton":
            t = Target(key, "triton", "Triton 2.51, Python backend", port=port)
            if peers.triton_python is None:
                t.skip = f"Triton: {peers.reasons['triton']}"
            else:
                t.command = [str(peers.triton_python), str(peers.root / "serve_triton_raw.py")]
                t.command += [str(decoder), str(port), "--model-name", V2_MODEL]
                t.command += ["--workdir", str(work / f"triton_{port}")]
        elif key == "mlserver":
            t = Target(key, "mlserver", "MLServer 1.7.1 (workers=0)", port=port)
            if peers.mlserver_python is None:
                t.skip = f"MLServer: {peers.reasons['mlserver']}"
            else:
                t.command = [str(peers.mlserver_python), str(peers.root / "serve_mlserver.py")]
                t.command += [str(decoder), str(port), "--parallel-workers", "0"]
                t.command += ["--model-name", V2_MODEL, "--workdir", str(work / f"mlserver_{port}")]
        else:
            raise SystemExit(f"unknown target {key!r}; choose from {', '.join(TARGETS)}")
        targets.append(t)
        port += 10
    return targets


def wait_ready(port: int, server: subprocess.Popen[bytes], timeout: float) -> str | None:
    """None once the V2 model answers ready, else why not."""
    import tritonclient.grpc as tc

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.poll() is not None:
            return f"server exited with code {server.returncode}"
        try:
            client = tc.InferenceServerClient(url=f"127.0.0.1:{port}")
            try:
                if client.is_server_ready() and client.is_model_ready(V2_MODEL):
                    return None
            finally:
                client.close()
        except Exception:  # not listening yet
            pass
        time.sleep(0.5)
    return f"not ready after {timeout:.0f} s"


def reference(decoder: Path, z: Any) -> Any:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(decoder), providers=["CPUExecutionProvider"])
    return sess.run(["x_hat"], {"z": z})[0]


def run_h2load(
    t: Target,
    args: argparse.Namespace,
    sweep: list[tuple[int, int]],
    server: subprocess.Popen[bytes],
    decoder: Path,
    out: Path,
) -> tuple[list[dict[str, Any]], str]:
    points: list[dict[str, Any]] = []
    bodies: dict[int, tuple[Path, Any, Any]] = {}
    for c, b in sweep:
        if b not in bodies:
            body, z = h2load.request_body(V2_MODEL, b, LATENT_DIM, seed=b)
            path = out / "work" / f"modelinfer_b{b}.bin"
            path.write_bytes(body)
            bodies[b] = (path, z, reference(decoder, z))
        path, z, expected = bodies[b]
        p = h2load.run_point(
            t.port,
            path,
            c,
            b,
            duration=args.duration,
            warmup=args.warmup,
            server_pid=server.pid,
            log_file=out / "raw" / f"h2load_{t.label}_{c}x{b}.log",
            reply_floats=b * OUTPUT_DIM,
        )
        if server.poll() is not None:
            problem: str | None = f"the server exited ({server.returncode}) during this point"
        else:
            problem = h2load.check_replies(t.port, V2_MODEL, z, expected)
        if problem:
            p["errors"] = max(p.get("errors", 0), 1)
            p["first_error"] = p.get("first_error") or f"reply check: {problem}"
        points.append({"label": t.label, "generator": "h2load", **p})
        log(
            f"{t.label} h2load {c}x{b}: {p['samples_per_s']:,.0f} samples/s, p99 "
            f"{p['p99_ms'] or float('nan'):.2f} ms, server {p['server_us_per_req'] or 0:.0f} µs/req"
            + (f", ERRORS: {p.get('first_error')}" if p.get("errors") else "")
        )
        if server.poll() is not None:
            return points, f"server exited with code {server.returncode}"
    return points, ""


def run_python_load(
    t: Target,
    args: argparse.Namespace,
    peers: Peers,
    server: subprocess.Popen[bytes],
    out: Path,
) -> tuple[list[dict[str, Any]], str]:
    assert peers.load_python is not None and peers.load_py is not None
    jsonl = out / "raw" / f"load_v2_{t.label}.jsonl"
    jsonl.unlink(missing_ok=True)
    cmd = [str(peers.load_python), str(peers.load_py), "--url", f"127.0.0.1:{t.port}"]
    cmd += ["--model", V2_MODEL, "--input", "z", "--output", "x_hat", "--sweep", args.sweep]
    cmd += ["--duration", str(args.duration), "--warmup", str(args.warmup), "--json", str(jsonl)]
    cmd += ["--label", t.label, "--server-pid", str(server.pid)]
    n_points = len(args.sweep.split(","))
    budget = n_points * (args.warmup + args.duration + 60) + 60
    status = ""
    loadgen = subprocess.Popen(orphan_safe(cmd))
    try:
        loadgen.wait(timeout=budget)
        if loadgen.returncode != 0:
            status = f"load generator exited with code {loadgen.returncode}"
    except subprocess.TimeoutExpired:
        status = f"load generator ran past {budget:.0f} s"
    finally:
        if loadgen.poll() is None:
            stop_tree(loadgen, f"{t.label} load generator", grace=5.0)  # type: ignore[arg-type]
    points = []
    if jsonl.exists():
        for line in jsonl.read_text().splitlines():
            r = json.loads(line)
            rps = r["req_per_s"] or None
            points.append(
                {
                    "label": t.label,
                    "generator": "python",
                    "clients": r["concurrency"],
                    "batch": r["batch"],
                    "samples_per_s": r["samples_per_s"],
                    "req_per_s": r["req_per_s"],
                    "p50_ms": r["p50_ms"],
                    "p99_ms": r["p99_ms"],
                    "max_ms": r["max_ms"],
                    "requests": r["requests"],
                    "errors": r["errors"],
                    "first_error": r.get("first_error"),
                    "server_us_per_req": r["cpu_server_cores"] / rps * 1e6 if rps else None,
                    "client_us_per_req": r["cpu_loadgen_cores"] / rps * 1e6 if rps else None,
                    **{k: v for k, v in r.items() if k.startswith("cpu_")},
                }
            )
    return points, status


def run_target(
    t: Target,
    args: argparse.Namespace,
    peers: Peers,
    sweep: list[tuple[int, int]],
    decoder: Path,
    out: Path,
    running: list[Any],
) -> dict[str, Any]:
    """Start the server, run every generator's sweep against it, stop it."""
    rec: dict[str, Any] = {
        "label": t.label,
        "title": t.title,
        "kind": "server",
        "command": t.command,
        "port": t.port,
        "points": [],
    }
    gens = [g.strip() for g in args.generators.split(",") if g.strip()]
    skipped = {g: why for g in gens if (why := generator_missing(g, peers))}
    if t.skip or len(skipped) == len(gens):
        rec.update(status="skipped", reason=t.skip or "; ".join(skipped.values()))
        log(f"{t.label}: SKIPPED ({rec['reason']})")
        return rec
    server_log = out / "logs" / f"server_{t.label}.log"
    rec["server_log"] = str(server_log)
    log(f"{t.label}: starting on port {t.port}: {' '.join(t.command)}")
    cpu0, t0 = cpu_times(), time.monotonic()
    with server_log.open("wb") as fh:
        server = subprocess.Popen(
            orphan_safe(t.command),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # same session as the load generator, as `latentwire serve &` in the README's
            # shell: with Linux's autogroup a server in a session of its own gets half the
            # CPUs as a group and squeezes the client (measured: 0.81 vs 0.57 server cores,
            # p99 62 vs 36 ms at 64x1 with load_v2.py)
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    running.append((server, t.label))
    rec["server_pid"] = server.pid
    problems = [f"{g}: {why}" for g, why in skipped.items()]
    try:
        why = wait_ready(t.port, server, args.ready_timeout)
        if why:
            problems.append(why)
        for gen in [] if why else gens:
            if gen in skipped:
                continue
            if server.poll() is not None:
                problems.append(f"{gen}: not run, the server exited ({server.returncode})")
                continue
            try:
                if gen == "h2load":
                    points, problem = run_h2load(t, args, sweep, server, decoder, out)
                else:
                    points, problem = run_python_load(t, args, peers, server, out)
            except Exception as exc:  # record it and go on with the other servers
                points, problem = [], f"{type(exc).__name__}: {exc}"
            rec["points"] += points
            if problem:
                problems.append(f"{gen}: {problem}")
    except KeyboardInterrupt as exc:
        rec.update(status="interrupted", reason=str(exc) or "interrupted")
    finally:
        log(f"{t.label}: stopping server pid {server.pid}")
        stop_tree(server, t.label)  # type: ignore[arg-type]
        running[:] = [r for r in running if r[0].poll() is None]
    rec["wall_s"] = round(time.monotonic() - t0, 1)
    rec["steal_pct"] = steal_pct(cpu0, cpu_times())
    rec["server_exit_code"] = server.returncode
    errs = sum(p.get("errors") or 0 for p in rec["points"])
    if errs:
        problems.append(f"{errs} failed requests")
    if "status" not in rec:
        rec["status"] = "failed" if not rec["points"] else "ok"
        rec["reason"] = "; ".join(problems)
    if problems:
        tail = server_log.read_text(errors="replace").splitlines()[-15:]
        rec["server_log_tail"] = tail
        log(f"{t.label}: {rec['reason']}; server log tail:\n    " + "\n    ".join(tail))
    return rec


_MEDIAN_KEYS = (
    "samples_per_s",
    "req_per_s",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "server_us_per_req",
    "client_us_per_req",
    "cpu_server_cores",
    "cpu_loadgen_cores",
    "cpu_other_cores",
)


def merge_runs(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """One record for a target measured several times: each point the median of its runs
    (errors and requests added up); every run's samples/s and p99 kept under "runs"."""
    if len(recs) == 1:
        return recs[0]
    merged = {k: v for k, v in recs[0].items() if k not in ("points", "status", "reason")}
    merged["status"] = "ok" if all(r["status"] == "ok" for r in recs) else recs[-1]["status"]
    merged["reason"] = "; ".join(sorted({r["reason"] for r in recs if r.get("reason")}))
    by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for rep, rec in enumerate(recs):
        for p in rec["points"]:
            by_key.setdefault((p["generator"], p["clients"], p["batch"]), []).append(
                {**p, "run": rep}
            )
    points = []
    for ps in by_key.values():
        point = dict(ps[0])
        for key in _MEDIAN_KEYS:
            values = [p[key] for p in ps if p.get(key) is not None]
            point[key] = statistics.median(values) if values else None
        point["errors"] = sum(p.get("errors") or 0 for p in ps)
        point["requests"] = sum(p.get("requests") or 0 for p in ps)
        point["first_error"] = next((p["first_error"] for p in ps if p.get("first_error")), None)
        point["runs"] = [
            {"run": p["run"], "samples_per_s": p["samples_per_s"], "p99_ms": p["p99_ms"]}
            for p in ps
        ]
        points.append(point)
    merged["points"] = points
    return merged


def generator_missing(gen: str, peers: Peers) -> str | None:
    if gen == "h2load":
        return h2load.available()
    if gen == "python":
        return peers.reasons.get("load")
    raise SystemExit(f"unknown generator {gen!r}; choose from {', '.join(GENERATORS)}")


def parse_sweep(text: str) -> list[tuple[int, int]]:
    out = []
    for tok in text.split(","):
        c, sep, b = tok.strip().lower().partition("x")
        if not sep or not c.isdigit() or not b.isdigit() or int(c) < 1 or int(b) < 1:
            raise argparse.ArgumentTypeError(f"bad sweep point {tok!r}; want CLIENTSxBATCH")
        out.append((int(c), int(b)))
    return out


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="benchmarks/serve.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    ap.add_argument(
        "--out",
        default=str(ROOT / "benchmarks" / "results"),
        help="output folder (default: benchmarks/results)",
    )
    ap.add_argument(
        "--peers",
        default=os.environ.get("LATENTWIRE_PEERS", DEFAULT_PEERS),
        help="peers' harness folder (default: $LATENTWIRE_PEERS or %(default)s)",
    )
    ap.add_argument(
        "--sweep", default=DEFAULT_SWEEP, help="CLIENTSxBATCH points (default: %(default)s)"
    )
    ap.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds per point (default: 10)"
    )
    ap.add_argument(
        "--warmup", type=float, default=2.0, help="warm-up seconds per point (default: 2)"
    )
    ap.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help="what to measure, in this order (default: all: %(default)s)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of the whole sweep per server, taken in turns; points are the median "
        "(default: 1)",
    )
    ap.add_argument(
        "--generators",
        default=",".join(GENERATORS),
        help="load generators, each over the whole sweep (default: %(default)s)",
    )
    ap.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every `latentwire serve` (repeat; e.g. --serve-arg=--io-threads "
        "--serve-arg=1)",
    )
    ap.add_argument(
        "--base-port",
        type=int,
        default=18100,
        help="first port tried; each server gets a free block of 3 (default: %(default)s)",
    )
    ap.add_argument(
        "--ready-timeout",
        type=float,
        default=120.0,
        help="seconds a server may take to become ready (default: %(default)s)",
    )
    ap.add_argument(
        "--rebuild",
        action="store_true",
        help="re-export the model package even if OUT/repo has one",
    )
    ap.add_argument(
        "--render",
        action="store_true",
        help="measure nothing: rewrite serve.md and serve.png from OUT/serve.json",
    )
    ap.add_argument("--inproc-child", help=argparse.SUPPRESS)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.inproc_child:  # internal: one in-process ORT measurement, JSON on stdout
        model, threads = args.inproc_child.rsplit(",", 1)
        pts = inproc_measure(model, int(threads), INPROC_BATCHES, args.duration, args.warmup)
        print(json.dumps(pts))
        return 0
    if args.render:
        out = Path(args.out)
        result = json.loads((out / "serve.json").read_text())
        print(write_markdown(result, out / "serve.md"))
        write_plot(result, out / "serve.png")
        return 0
    try:
        sweep = parse_sweep(args.sweep)
        for c, _ in sweep:
            h2load.layout(c)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        build_parser().error(str(exc))
    args.sweep = ",".join(f"{c}x{b}" for c, b in sweep)
    out = Path(args.out).resolve()
    args.out = str(out)
    for sub in ("logs", "raw", "work"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    machine = machine_info()
    peers = find_peers(Path(args.peers))
    for what, why in peers.reasons.items():
        log(f"peers ({args.peers}): {what}: {why}")
    machine["venvs"] = {
        "latentwire": venv_versions(Path(sys.executable)),
        **{
            name: venv_versions(p)
            for name, p in (
                ("load", peers.load_python),
                ("triton", peers.triton_python),
                ("mlserver", peers.mlserver_python),
            )
            if p is not None
        },
    }
    package = build_package(out / "repo", args.rebuild)
    decoder = Path(package["decoder_onnx"])
    targets = plan_targets(args, peers, decoder, out / "work")
    records: list[dict[str, Any]] = []
    runs: dict[str, list[dict[str, Any]]] = {}
    running: list[Any] = []
    interrupted = ""
    cpu_start = cpu_times()
    keys = [k.strip() for k in args.targets.split(",") if k.strip()]

    def write_results(out: Path, partial: bool) -> None:
        """serve.json/.md/.png from what is measured so far (after every server run, so a
        crash or Ctrl-C loses nothing measured)."""
        targets_done = records + [merge_runs(recs) for recs in runs.values()]
        result: dict[str, Any] = {
            "benchmark": "latentwire serving: decoder 64->128->784 over KServe V2 gRPC",
            "command_line": [sys.executable, *sys.argv],
            "machine": machine,
            "settings": {
                "sweep": args.sweep,
                "sweep_points": sweep,
                "duration": args.duration,
                "warmup": args.warmup,
                "targets": args.targets,
                "generators": args.generators,
                "repeat": args.repeat,
                "serve_args": args.serve_arg,
                "peers": str(peers.root),
                "peers_missing": peers.reasons,
                "h2load_layout": {f"{c}": h2load.layout(c) for c, _ in sweep},
                "v2_model": V2_MODEL,
            },
            "model": package,
            "steal_pct_run": steal_pct(cpu_start, cpu_times()),
            "wall_s": round(time.monotonic() - started, 1),
            "partial": partial,
            "interrupted": interrupted or None,
            "targets": targets_done,
            "points": [p for r in targets_done for p in r["points"]],
        }
        result["ratios"] = compute_ratios(targets_done)
        (out / "serve.json").write_text(json.dumps(result, indent=1) + "\n")
        md = write_markdown(result, out / "serve.md")
        try:
            write_plot(result, out / "serve.png")
        except Exception as exc:  # the numbers matter more than the picture
            log(f"plot failed: {exc!r}")
        if not partial:
            print("\n" + md, flush=True)
            log(f"wrote serve.json, serve.md, serve.png to {out} in {result['wall_s']:.0f} s")

    try:
        # repeats go round all targets, so slow drifts of the machine hit every server alike
        for rep in range(args.repeat):
            for key in keys:
                if key == "inproc":
                    if rep == 0:
                        records += run_inproc(args, decoder)
                    continue
                t = next(t for t in targets if t.key == key)
                if args.repeat > 1:
                    log(f"{t.label}: run {rep + 1} of {args.repeat}")
                rec = run_target(t, args, peers, sweep, decoder, out, running)
                runs.setdefault(key, []).append(rec)
                write_results(out, partial=True)
                if rec["status"] == "interrupted":
                    raise KeyboardInterrupt(rec["reason"])
                for d in (out / "work").glob(f"*_{t.port}"):
                    shutil.rmtree(d, ignore_errors=True)  # scratch model repositories
    except KeyboardInterrupt as exc:
        interrupted = str(exc) or "interrupted"
        log(f"interrupted ({interrupted}); stopping what runs and writing partial results")
    finally:
        for proc, name in reversed(running):
            stop_tree(proc, name)
    write_results(out, partial=False)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
