"""Serving benchmark: `latentwire serve` against Triton, MLServer and in-process ONNX Runtime.

Builds one model package (a dense 784 -> 128 -> 64 autoencoder, random weights, seed 0) and
serves its decoder.onnx (z [B, 64] -> x_hat [B, 784]) with every server, one after another,
so all of them run the identical graph. Each server is started as a subprocess on its own
port and measured with the peers' closed-loop KServe V2 load generator (load_v2.py,
unchanged), then stopped by PID (SIGTERM, SIGKILL after 20 s, leftover children killed).

Targets (--targets, all by default):
  inproc               in-process ONNX Runtime on decoder.onnx, batch 1/64/1024, no RPC;
                       1 intra-op thread and ORT's default (this venv)
  latentwire           latentwire serve, batching on, server --cpu 1, load generator on CPU 0
  latentwire_unpinned  the same, nothing pinned
  latentwire_nobatch   --no-batching, pinned like `latentwire`
  triton               Triton 2.51 Python backend (serve_triton_raw.py, its dynamic batcher),
                       load generator on CPU 0
  mlserver             MLServer 1.7.1 (serve_mlserver.py --parallel-workers 0), load
                       generator on CPU 0

The peers' harness (load_v2.py, serve_*.py and their venvs venv-load, venv-triton,
venv-mlserver) is found with --peers (or $LATENTWIRE_PEERS, default /work/peers-work); a
target whose pieces are missing is skipped with the reason logged and recorded.

Writes to --out (default benchmarks/results):
  serve.json   machine, settings, every point (samples/s, req/s, p50/p99, CPU split), ratios
  serve.md     markdown tables and ratio lines, ready to paste into a README
  serve.png    samples/s and p99 per point and server (log scale)
  repo/        the model package (reused when present), logs/ and raw/ (load_v2 JSON lines)

example:
  .venv/bin/python benchmarks/serve.py --duration 2 --warmup 1 --sweep 1x1,64x64   # quick look
  .venv/bin/python benchmarks/serve.py                                           # full, ~15 min
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SWEEP = "1x1,16x1,64x1,1x64,16x64,64x64"
DEFAULT_PEERS = "/work/peers-work"
PACKAGE = "bench"
V2_MODEL = f"{PACKAGE}.decoder"
INPROC_BATCHES = (1, 64, 1024)
TARGETS = (
    "inproc",
    "latentwire",
    "latentwire_unpinned",
    "latentwire_nobatch",
    "triton",
    "mlserver",
)
STOP_GRACE_S = 20.0


def log(msg: str) -> None:
    print(f"[serve-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- processes


def _proc_table() -> dict[int, tuple[int, int]]:
    """{pid: (ppid, start time in clock ticks)} for every process in /proc."""
    table: dict[int, tuple[int, int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        table[int(d)] = (int(rest[1]), int(rest[19]))
    return table


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every descendant of pid, so a later kill can check identity."""
    table = _proc_table()
    kids: dict[int, list[int]] = {}
    for p, (pp, _) in table.items():
        kids.setdefault(pp, []).append(p)
    out: list[tuple[int, int]] = []
    stack = list(kids.get(pid, []))
    while stack:
        p = stack.pop()
        out.append((p, table[p][1]))
        stack.extend(kids.get(p, []))
    return out


def _same_process(pid: int, start: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    rest = stat[stat.rfind(")") + 2 :].split()
    return int(rest[19]) == start and rest[0] != "Z"


def stop_tree(proc: subprocess.Popen[bytes], name: str, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM proc, SIGKILL it after `grace` s, then kill its leftover descendants by PID."""
    kids = descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log(f"{name}: pid {proc.pid} still alive after {grace:.0f} s, sending SIGKILL")
            proc.kill()
            proc.wait()
    leftovers = [(p, s) for p, s in kids if _same_process(p, s)]
    if leftovers:
        time.sleep(3.0)  # Triton's stubs exit on their own shortly after the server
    for p, s in leftovers:
        if _same_process(p, s):
            log(f"{name}: leftover child {p}, SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def _child_setup(cpu: int | None) -> Callable[[], None]:
    """preexec_fn: optionally pin to one CPU; ask for SIGTERM when this script dies."""

    def setup() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return setup


def free_port_block(start: int, width: int = 3) -> int:
    """First port p >= start (step 10) with p .. p+width-1 free on 127.0.0.1."""
    port = start
    while port < 65000:
        ok = True
        for p in range(port, port + width):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
        port += 10
    raise RuntimeError(f"no free port block from {start}")


# --------------------------------------------------------------------------- machine


def _cpu_times() -> list[int] | None:
    try:
        return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None


def steal_pct(a: list[int] | None, b: list[int] | None) -> float | None:
    """Steal time between two /proc/stat samples, in % of all CPU time (None if unknown)."""
    if not a or not b or len(a) < 8 or len(b) < 8:
        return None
    total = sum(b[:8]) - sum(a[:8])
    return round(100.0 * (b[7] - a[7]) / total, 2) if total > 0 else None


def _first_match(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _venv_versions(python: Path) -> dict[str, str]:
    """Versions of the packages that matter, read from a venv's dist-info names."""
    want = ("onnxruntime", "grpcio", "tritonclient", "numpy", "mlserver", "nvidia_pytriton")
    out: dict[str, str] = {}
    for sp in python.parent.parent.glob("lib/python*/site-packages"):
        for d in sp.glob("*.dist-info"):
            name, _, version = d.name[: -len(".dist-info")].rpartition("-")
            if name.lower() in want:
                out[name.lower()] = version
    return out


def machine_info() -> dict[str, Any]:
    import grpc
    import onnxruntime as ort

    mem = _first_match("/proc/meminfo", "MemTotal")
    ram_gib = round(int(mem.split()[0]) / 1024**2, 1) if mem else None
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = []
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cpu_model": _first_match("/proc/cpuinfo", "model name") or platform.processor(),
        "cores": os.cpu_count(),
        "affinity": affinity,
        "ram_gib": ram_gib,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "grpcio": grpc.__version__,
        "latentwire_git": commit,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_at_start": list(os.getloadavg()),
        "steal_in_proc_stat": _cpu_times() is not None,
    }


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


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    key: str
    label: str
    title: str
    command: list[str] = field(default_factory=list)
    port: int = 0
    server_cpu: int | None = None  # pinned by the server itself (latentwire --cpu)
    preexec_cpu: int | None = None  # pinned by us before exec (--pin-peers)
    client_cpu: int | None = None
    notes: list[str] = field(default_factory=list)
    skip: str | None = None
    env: dict[str, str] | None = None


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


def latentwire_command() -> list[str]:
    exe = Path(sys.executable).parent / "latentwire"
    if exe.exists():
        return [str(exe)]
    code = "from latentwire.runtime.cli import main; raise SystemExit(main())"
    return [sys.executable, "-c", code]


def plan_targets(args: argparse.Namespace, peers: Peers, decoder: Path, work: Path) -> list[Target]:
    allowed = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()
    pin_note: str | None = None
    srv_cpu: int | None = args.server_cpu
    cli_cpu: int | None = args.client_cpu
    if not {srv_cpu, cli_cpu} <= allowed or srv_cpu == cli_cpu:
        pin_note = (
            f"pinning off: CPUs {srv_cpu} and {cli_cpu} are not two distinct CPUs of "
            f"this process's affinity {sorted(allowed)}"
        )
        log(pin_note)
        srv_cpu = cli_cpu = None
    keys = [k.strip() for k in args.targets.split(",") if k.strip()]
    lw = latentwire_command()
    repo = str(Path(args.out) / "repo")
    port = args.base_port
    targets: list[Target] = []
    for key in keys:
        if key == "inproc":
            continue
        port = free_port_block(port)
        lw_args = ["serve", "--models", repo, "--host", "127.0.0.1", "--port", str(port)]
        lw_args += ["--poll-seconds", "0", *args.serve_arg]
        t: Target
        if key == "latentwire":
            t = Target(key, "latentwire", "latentwire (batching, pinned)", port=port)
            t.server_cpu, t.client_cpu = srv_cpu, cli_cpu
            t.command = lw + lw_args + ([] if srv_cpu is None else ["--cpu", str(srv_cpu)])
        elif key == "latentwire_unpinned":
            t = Target(key, "latentwire_unpinned", "latentwire (batching, unpinned)", port=port)
            t.command = lw + lw_args
        elif key == "latentwire_nobatch":
            t = Target(key, "latentwire_nobatch", "latentwire (no batching, pinned)", port=port)
            t.server_cpu, t.client_cpu = srv_cpu, cli_cpu
            t.command = [*lw, *lw_args, "--no-batching"]
            if srv_cpu is not None:
                t.command += ["--cpu", str(srv_cpu)]
        elif key == "triton":
            t = Target(key, "triton_pybackend", "Triton Python backend", port=port)
            t.client_cpu = cli_cpu
            if args.pin_peers:
                t.preexec_cpu = srv_cpu
            if peers.triton_python is None:
                t.skip = f"Triton: {peers.reasons['triton']}"
            else:
                t.command = [
                    str(peers.triton_python),
                    str(peers.root / "serve_triton_raw.py"),
                    str(decoder),
                    str(port),
                    "--model-name",
                    V2_MODEL,
                    "--workdir",
                    str(work / f"triton_{port}"),
                ]
        elif key == "mlserver":
            t = Target(key, "mlserver_w0", "MLServer (workers=0)", port=port)
            t.client_cpu = cli_cpu
            if args.pin_peers:
                t.preexec_cpu = srv_cpu
            if peers.mlserver_python is None:
                t.skip = f"MLServer: {peers.reasons['mlserver']}"
            else:
                t.command = [
                    str(peers.mlserver_python),
                    str(peers.root / "serve_mlserver.py"),
                    str(decoder),
                    str(port),
                    "--parallel-workers",
                    "0",
                    "--model-name",
                    V2_MODEL,
                    "--workdir",
                    str(work / f"mlserver_{port}"),
                ]
        else:
            raise SystemExit(f"unknown target {key!r}; choose from {', '.join(TARGETS)}")
        if t.skip is None and peers.load_py is None:
            t.skip = f"load generator: {peers.reasons['load']}"
        if pin_note and key in ("latentwire", "latentwire_nobatch", "triton", "mlserver"):
            t.notes.append(pin_note)
        targets.append(t)
        port += 10
    return targets


def run_target(
    t: Target, args: argparse.Namespace, peers: Peers, out: Path, running: list[Any]
) -> dict[str, Any]:
    """Start the server, run the sweep against it, stop it; returns the target's record."""
    rec: dict[str, Any] = {
        "label": t.label,
        "title": t.title,
        "kind": "server",
        "command": t.command,
        "port": t.port,
        "server_cpu": t.server_cpu if t.server_cpu is not None else t.preexec_cpu,
        "client_cpu": t.client_cpu,
        "notes": t.notes,
        "points": [],
    }
    if t.skip:
        log(f"{t.label}: SKIPPED ({t.skip})")
        rec.update(status="skipped", reason=t.skip)
        return rec
    assert peers.load_python is not None and peers.load_py is not None
    logs, raw = out / "logs", out / "raw"
    logs.mkdir(parents=True, exist_ok=True)
    raw.mkdir(parents=True, exist_ok=True)
    jsonl = raw / f"{t.label}.jsonl"
    jsonl.unlink(missing_ok=True)
    server_log = logs / f"server_{t.label}.log"
    rec["server_log"] = str(server_log)
    log(f"{t.label}: starting server on port {t.port}: {' '.join(t.command)}")
    cpu0 = _cpu_times()
    t0 = time.monotonic()
    with server_log.open("wb") as fh:
        server = subprocess.Popen(
            t.command,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches only us; we stop it in order
            preexec_fn=_child_setup(t.preexec_cpu),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    running.append((server, t.label))
    rec["server_pid"] = server.pid
    load_cmd = [
        str(peers.load_python),
        str(peers.load_py),
        "--url",
        f"127.0.0.1:{t.port}",
        "--model",
        V2_MODEL,
        "--input",
        "z",
        "--output",
        "x_hat",
        "--sweep",
        args.sweep,
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--json",
        str(jsonl),
        "--label",
        t.label,
        "--server-pid",
        str(server.pid),
        "--ready-timeout",
        str(args.ready_timeout),
    ]
    rec["load_command"] = (
        [] if t.client_cpu is None else ["taskset", "-c", str(t.client_cpu)]
    ) + load_cmd
    n_points = len(args.sweep.split(","))
    budget = args.ready_timeout + n_points * (args.warmup + args.duration + 60) + 30
    status, reason = "ok", ""
    loadgen: subprocess.Popen[bytes] | None = None
    try:
        loadgen = subprocess.Popen(load_cmd, preexec_fn=_child_setup(t.client_cpu))
        running.append((loadgen, f"{t.label} load generator"))
        deadline = time.monotonic() + budget
        while loadgen.poll() is None:
            if server.poll() is not None:
                status, reason = "failed", f"server exited with code {server.returncode}"
                break
            if time.monotonic() > deadline:
                status, reason = "failed", f"load generator ran past {budget:.0f} s"
                break
            time.sleep(0.2)
    except KeyboardInterrupt as exc:
        status, reason = "interrupted", str(exc) or "interrupted"
    finally:
        if loadgen is not None and loadgen.poll() is None:
            stop_tree(loadgen, f"{t.label} load generator", grace=5.0)
        elif loadgen is not None and loadgen.returncode != 0 and status == "ok":
            status, reason = "failed", f"load generator exited with code {loadgen.returncode}"
        log(f"{t.label}: stopping server pid {server.pid}")
        stop_tree(server, t.label)
        running[:] = [r for r in running if r[0].poll() is None]
    rec["wall_s"] = round(time.monotonic() - t0, 1)
    rec["steal_pct"] = steal_pct(cpu0, _cpu_times())
    rec["server_exit_code"] = server.returncode
    if jsonl.exists():
        for line in jsonl.read_text().splitlines():
            r = json.loads(line)
            rec["points"].append(
                {
                    "label": t.label,
                    "clients": r["concurrency"],
                    "batch": r["batch"],
                    "samples_per_s": r["samples_per_s"],
                    "req_per_s": r["req_per_s"],
                    "p50_ms": r["p50_ms"],
                    "p90_ms": r["p90_ms"],
                    "p99_ms": r["p99_ms"],
                    "max_ms": r["max_ms"],
                    "requests": r["requests"],
                    "errors": r["errors"],
                    "first_error": r.get("first_error"),
                    **{k: v for k, v in r.items() if k.startswith("cpu_")},
                }
            )
    errs = sum(p["errors"] for p in rec["points"])
    if status == "ok" and len(rec["points"]) < n_points:
        status, reason = "failed", f"{len(rec['points'])} of {n_points} points measured"
    if status == "failed":
        tail = server_log.read_text(errors="replace").splitlines()[-15:]
        rec["server_log_tail"] = tail
        log(f"{t.label}: FAILED ({reason}); server log tail:\n    " + "\n    ".join(tail))
    elif errs:
        reason = f"{errs} failed requests"
        log(f"{t.label}: {reason}")
    rec.update(status=status, reason=reason)
    return rec


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


# --------------------------------------------------------------------------- reporting


def _point(records: list[dict[str, Any]], label: str, c: int, b: int) -> dict[str, Any] | None:
    for rec in records:
        if rec["label"] == label:
            for p in rec["points"]:
                if p["clients"] == c and p["batch"] == b:
                    return p  # type: ignore[no-any-return]
    return None


def _where(label: str, c: int, b: int) -> str:
    return f"{label} batch {b}" if label.startswith("ort_inproc") else f"{label} {c}x{b}"


def compute_ratios(records: list[dict[str, Any]], sweep: list[tuple[int, int]]) -> list[Any]:
    ratios: list[dict[str, Any]] = []

    def ratio(
        name: str,
        text: str,
        num: tuple[str, int, int],
        den: tuple[str, int, int],
        key: str = "samples_per_s",
    ) -> None:
        a, b = _point(records, *num), _point(records, *den)
        if a is None or b is None or not a.get(key) or not b.get(key):
            missing = [_where(*x) for x, p in ((num, a), (den, b)) if not p]
            ratios.append(
                {
                    "name": name,
                    "value": None,
                    "text": f"{text}: n/a (missing {', '.join(missing) or 'values'})",
                }
            )
            return
        v = a[key] / b[key]
        unit = "samples/s" if key == "samples_per_s" else "ms"
        fa = f"{a[key]:,.0f}" if unit == "samples/s" else f"{a[key]:.2f}"
        fb = f"{b[key]:,.0f}" if unit == "samples/s" else f"{b[key]:.2f}"
        ratios.append(
            {
                "name": name,
                "value": round(v, 3),
                "metric": key,
                "numerator": {"label": num[0], "point": f"{num[1]}x{num[2]}", "value": a[key]},
                "denominator": {"label": den[0], "point": f"{den[1]}x{den[2]}", "value": b[key]},
                "text": f"{text}: {v:.2f}x ({fa} vs {fb} {unit})",
            }
        )

    for c, b in ((64, 1), (64, 64)):
        ratio(
            f"latentwire_vs_triton_samples_{c}x{b}",
            f"latentwire / Triton samples/s at {c}x{b}",
            ("latentwire", c, b),
            ("triton_pybackend", c, b),
        )
    for c, b in ((64, 1), (64, 64)):
        ratio(
            f"latentwire_unpinned_vs_triton_samples_{c}x{b}",
            f"latentwire unpinned / Triton samples/s at {c}x{b}",
            ("latentwire_unpinned", c, b),
            ("triton_pybackend", c, b),
        )
    for c, b in sweep:
        ratio(
            f"latentwire_vs_triton_p99_{c}x{b}",
            f"p99 latentwire / Triton at {c}x{b} (lower is better)",
            ("latentwire", c, b),
            ("triton_pybackend", c, b),
            key="p99_ms",
        )
    ratio(
        "batching_on_vs_off_samples_64x1",
        "latentwire batching on / off samples/s at 64x1",
        ("latentwire", 64, 1),
        ("latentwire_nobatch", 64, 1),
    )
    ratio(
        "batching_on_vs_off_p99_64x1",
        "latentwire batching on / off p99 at 64x1",
        ("latentwire", 64, 1),
        ("latentwire_nobatch", 64, 1),
        key="p99_ms",
    )
    b64 = [(c, b) for c, b in sweep if b == 64]
    best = max(
        (p for c, b in b64 if (p := _point(records, "latentwire", c, b))),
        key=lambda p: p["samples_per_s"],
        default=None,
    )
    bc = best["clients"] if best else 64
    for lbl, thr in (("ort_inproc_t1", "1 thread"), ("ort_inproc_tdefault", "default threads")):
        ratio(
            f"latentwire_vs_{lbl}_b64",
            f"latentwire best batch-64 point ({bc}x64) / in-process ORT batch 64 ({thr})",
            ("latentwire", bc, 64),
            (lbl, 1, 64),
        )
    return ratios


def _fmt_n(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def write_markdown(result: dict[str, Any], path: Path) -> str:
    m, s = result["machine"], result["settings"]
    sweep = [tuple(x) for x in s["sweep_points"]]
    servers = [r for r in result["targets"] if r["kind"] == "server"]
    inproc = [r for r in result["targets"] if r["kind"] == "inproc"]
    steal = result.get("steal_pct_run")
    lines = [
        f"### Serving benchmark: decoder 64→128→784 (`benchmarks/serve.py`, {m['date'][:10]})",
        "",
        f"{m['cpu_model']}, {m['cores']} CPUs, {m['ram_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, ONNX Runtime {m['onnxruntime']}, grpcio {m['grpcio']}; "
        f"steal {'n/a' if steal is None else f'{steal}%'} over the run. "
        f"{s['duration']:g} s per point after {s['warmup']:g} s warm-up; closed-loop V2 gRPC "
        f"load generator (`load_v2.py`, {s['load_mode']} mode, {s['load_procs']} processes). "
        "Every server runs the same `decoder.onnx`.",
        "",
        "samples/s (p50 / p99 ms), clients × samples per request:",
        "",
        "| server | " + " | ".join(f"{c} × {b}" for c, b in sweep) + " |",
        "|---|" + "---:|" * len(sweep),
    ]
    for rec in servers:
        cells = []
        for c, b in sweep:
            p = _point([rec], rec["label"], c, b)
            if p is None:
                cells.append(rec["status"] if rec["status"] != "ok" else "—")
            else:
                err = f", {p['errors']} err" if p["errors"] else ""
                cells.append(
                    f"{_fmt_n(p['samples_per_s'])} ({_fmt_ms(p['p50_ms'])} / "
                    f"{_fmt_ms(p['p99_ms'])}{err})"
                )
        lines.append(f"| {rec['title']} | " + " | ".join(cells) + " |")
    if inproc:
        lines += [
            "",
            "In-process ONNX Runtime on the same graph, no RPC, one caller "
            "(samples/s, p50 / p99 ms per call):",
            "",
            "| ORT intra-op threads | " + " | ".join(f"batch {b}" for b in INPROC_BATCHES) + " |",
            "|---|" + "---:|" * len(INPROC_BATCHES),
        ]
        for rec in inproc:
            cells = []
            for b in INPROC_BATCHES:
                p = _point([rec], rec["label"], 1, b)
                cells.append(
                    "—"
                    if p is None
                    else f"{_fmt_n(p['samples_per_s'])} "
                    f"({_fmt_ms(p['p50_ms'])} / {_fmt_ms(p['p99_ms'])})"
                )
            lines.append(f"| {rec['intra_op_threads']} | " + " | ".join(cells) + " |")
    lines += ["", "Ratios:", ""]
    lines += [f"- {r['text']}" for r in result["ratios"]]
    lines += [
        "",
        "CPU used during each point, in cores (load generator / server / everything else):",
        "",
        "| server | pinning | " + " | ".join(f"{c} × {b}" for c, b in sweep) + " |",
        "|---|---|" + "---:|" * len(sweep),
    ]
    for rec in servers:
        srv = "—" if rec.get("server_cpu") is None else f"CPU {rec['server_cpu']}"
        cli = "—" if rec.get("client_cpu") is None else f"CPU {rec['client_cpu']}"
        cells = []
        for c, b in sweep:
            p = _point([rec], rec["label"], c, b)
            cells.append(
                "—"
                if p is None or "cpu_loadgen_cores" not in p
                else f"{p['cpu_loadgen_cores']:.2f} / {p['cpu_server_cores']:.2f} / "
                f"{p['cpu_other_cores']:.2f}"
            )
        lines.append(f"| {rec['title']} | server {srv}, client {cli} | " + " | ".join(cells) + " |")
    other = [
        (p["cpu_other_cores"], p["label"], p["clients"], p["batch"])
        for p in result["points"]
        if p.get("cpu_other_cores") is not None
    ]
    if other and max(other)[0] > 0.1:
        worst = max(other)
        lines += [
            "",
            f"Foreign load: processes outside the benchmark used up to {worst[0]:.2f} cores "
            f"({worst[1]} at {worst[2]} × {worst[3]}); those points understate the servers.",
        ]
    notes = [r for r in result["targets"] if r["status"] != "ok" or r.get("reason")]
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
    inproc = {r["label"]: r for r in result["targets"] if r["kind"] == "inproc"}
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 8.5), sharex=True)
    x = np.arange(len(sweep))
    width = 0.8 / max(1, len(servers))
    for i, rec in enumerate(servers):
        sps, p99 = [], []
        for c, b in sweep:
            p = _point([rec], rec["label"], c, b)
            sps.append(p["samples_per_s"] if p else np.nan)
            p99.append(p["p99_ms"] if p and p["p99_ms"] is not None else np.nan)
        off = x - 0.4 + width * (i + 0.5)
        ax1.bar(off, sps, width, label=rec["title"], color=f"C{i}")
        ax2.bar(off, p99, width, label=rec["title"], color=f"C{i}")
    for lbl, style in (("ort_inproc_t1", "--"), ("ort_inproc_tdefault", ":")):
        rec = inproc.get(lbl)
        if not rec:
            continue
        first = True
        for j, (_, b) in enumerate(sweep):
            p = _point([rec], lbl, 1, b)
            if p:
                ax1.hlines(
                    p["samples_per_s"],
                    j - 0.45,
                    j + 0.45,
                    colors="k",
                    linestyles=style,
                    label=f"{rec['title']}, same batch" if first else None,
                )
                first = False
    ax1.set_yscale("log")
    ax1.set_ylabel("samples/s (log)")
    ax1.set_title("decoder 64→128→784 over KServe V2 gRPC: throughput (higher is better)")
    ax1.grid(axis="y", which="both", alpha=0.3)
    ax2.set_yscale("log")
    ax2.set_ylabel("p99 latency, ms (log)")
    ax2.set_title("p99 latency per request (lower is better)")
    ax2.grid(axis="y", which="both", alpha=0.3)
    ax2.set_xticks(x, [f"{c} client{'s' if c > 1 else ''} × {b}" for c, b in sweep])
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.02), ncol=4, fontsize=8)
    m = result["machine"]
    fig.text(
        0.01,
        0.005,
        f"{m['cpu_model']}, {m['cores']} CPUs, {m['date'][:10]}; "
        f"{result['settings']['duration']:g} s per point",
        fontsize=7,
    )
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse_sweep(text: str) -> list[tuple[int, int]]:
    out = []
    for tok in text.split(","):
        c, sep, b = tok.strip().lower().partition("x")
        if not sep or not c.isdigit() or not b.isdigit() or int(c) < 1 or int(b) < 1:
            raise argparse.ArgumentTypeError(f"bad sweep point {tok!r}; want CLIENTSxBATCH")
        out.append((int(c), int(b)))
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="benchmarks/serve.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        "--sweep",
        default=DEFAULT_SWEEP,
        help="CLIENTSxBATCH points, comma separated (default: %(default)s)",
    )
    ap.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="measured seconds per point (default: %(default)s)",
    )
    ap.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="warm-up seconds before each point (default: %(default)s)",
    )
    ap.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help="what to measure, in this order (default: all: %(default)s)",
    )
    ap.add_argument(
        "--server-cpu",
        type=int,
        default=1,
        help="CPU for pinned latentwire servers (--cpu K) (default: %(default)s)",
    )
    ap.add_argument(
        "--client-cpu",
        type=int,
        default=0,
        help="CPU for the pinned load generator (default: %(default)s)",
    )
    ap.add_argument(
        "--pin-peers",
        action="store_true",
        help="also pin Triton and MLServer to --server-cpu (default: unpinned)",
    )
    ap.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every `latentwire serve` (repeat; e.g. "
        "--serve-arg=--threads --serve-arg=8)",
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
    ap.add_argument("--inproc-child", help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.inproc_child:  # internal: one in-process ORT measurement, JSON on stdout
        model, threads = args.inproc_child.rsplit(",", 1)
        pts = inproc_measure(model, int(threads), INPROC_BATCHES, args.duration, args.warmup)
        print(json.dumps(pts))
        return 0
    try:
        sweep = parse_sweep(args.sweep)
    except argparse.ArgumentTypeError as exc:
        build_parser().error(str(exc))
    args.sweep = ",".join(f"{c}x{b}" for c, b in sweep)
    out = Path(args.out).resolve()
    args.out = str(out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    machine = machine_info()
    peers = find_peers(Path(args.peers))
    for what, why in peers.reasons.items():
        log(f"peers ({args.peers}): {what}: {why}")
    machine["venvs"] = {
        "latentwire": _venv_versions(Path(sys.executable)),
        **{
            name: _venv_versions(p)
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
    targets = plan_targets(args, peers, decoder, work)
    records: list[dict[str, Any]] = []
    running: list[Any] = []
    interrupted = ""
    cpu_start = _cpu_times()
    try:
        for key in [k.strip() for k in args.targets.split(",") if k.strip()]:
            if key == "inproc":
                records += run_inproc(args, decoder)
                continue
            t = next(t for t in targets if t.key == key)
            records.append(run_target(t, args, peers, out, running))
            if records[-1]["status"] == "interrupted":
                raise KeyboardInterrupt(records[-1]["reason"])
            for d in work.glob(f"*_{t.port}"):
                shutil.rmtree(d, ignore_errors=True)  # scratch model repositories
    except KeyboardInterrupt as exc:
        interrupted = str(exc) or "interrupted"
        log(f"interrupted ({interrupted}); stopping what runs and writing partial results")
    finally:
        for proc, name in reversed(running):
            stop_tree(proc, name)
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
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
            "pin_peers": args.pin_peers,
            "serve_args": args.serve_arg,
            "peers": str(peers.root),
            "peers_missing": peers.reasons,
            "load_generator": str(peers.load_py) if peers.load_py else None,
            "load_python": str(peers.load_python) if peers.load_python else None,
            "load_mode": "thread",
            "load_procs": 2,
            "v2_model": V2_MODEL,
        },
        "model": package,
        "steal_pct_run": steal_pct(cpu_start, _cpu_times()),
        "wall_s": round(time.monotonic() - started, 1),
        "interrupted": interrupted or None,
        "targets": records,
        "points": [p for r in records for p in r["points"]],
    }
    result["ratios"] = compute_ratios(records, sweep)
    (out / "serve.json").write_text(json.dumps(result, indent=1) + "\n")
    md = write_markdown(result, out / "serve.md")
    try:
        write_plot(result, out / "serve.png")
    except Exception as exc:  # the numbers matter more than the picture
        log(f"plot failed: {exc!r}")
    print("\n" + md, flush=True)
    log(
        f"wrote {out / 'serve.json'}, {out / 'serve.md'}, {out / 'serve.png'} "
        f"in {result['wall_s']:.0f} s"
    )
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
