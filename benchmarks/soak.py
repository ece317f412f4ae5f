"""Soak test of `latentwire serve`: many concurrent clients for a long while; does the server
stay correct, and does its memory stay flat?

Trains a tiny digits package (dense 64 -> 8, a few epochs; or takes --package), starts
`latentwire serve` on it as a user does (default flags; --host 127.0.0.1 and a free port
only), and runs --clients concurrent calls (asyncio tasks over grpc.aio, spread over
--procs client processes, each task with a channel of its own) for --minutes. Each task
sends, at random, Codec Decode (45%), KServe V2 ModelInfer (45%) and a DecodeStream of 8
messages (10%), and every --bad-every-th call a request the server must refuse (codes from
another encoder, a wrong tensor shape, an unknown model, bytes that are no message, in
turn). Every answer is checked against ONNX Runtime run on the same input in the client.

Recorded: calls by kind; unexpected errors (any failed call that was not a bad request,
a bad request answered with another status or accepted, a wrong answer: must be 0);
expected errors by status; the server's RSS, open fds and threads from /proc every
--sample-seconds; its CPU; requests/s over time. RSS drift = mean RSS of the last window
over the mean of the window right after the warm-up (windows of 1 minute: minute 1-2
against the last minute; shorter runs use thirds), judged against --max-drift for runs of
3 minutes or more. The server is stopped with SIGTERM at the end and must exit 0.

Writes to --out (default benchmarks/results): soak.json, soak.md, soak.png; the package,
client configs and server log under work/soak/. Exit status 1 when a check failed.

    .venv/bin/python benchmarks/soak.py                 # 10 minutes, 64 concurrent calls
    .venv/bin/python benchmarks/soak.py --minutes 0.2 --clients 8 --procs 1   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving.procs import (
    TICK_S,
    cpu_times,
    free_port_block,
    latentwire_command,
    machine_info,
    orphan_safe,
    steal_pct,
    stop_tree,
    tree_cpu_ticks,
)

PACKAGE = "soak"
KINDS = ("Decode", "ModelInfer", "DecodeStream")
WEIGHTS = (45, 45, 10)
BAD = {  # bad request -> the status the server must answer it with
    "bad_foreign_codes": "FAILED_PRECONDITION",
    "bad_wrong_shape": "INVALID_ARGUMENT",
    "bad_unknown_model": "NOT_FOUND",
    "bad_not_a_message": "INVALID_ARGUMENT",
}
STREAM_MESSAGES = 8
CALL_TIMEOUT_S = 30.0
INPUTS = 16
"""distinct inputs per client process (batch 1 to 4), answers checked against ORT"""
MAX_SAMPLES_KEPT = 20
LAT_BASE = 1.1  # latency histogram: bucket k holds [1.1^k, 1.1^(k+1)) µs


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- the package


def build_package(repo: Path, source: Path | None) -> Path:
    """repo/soak/1: a copy of `source`, or a tiny digits model trained now."""
    pkg = repo / PACKAGE / "1"
    if source is not None and source.resolve() == pkg.resolve():
        log(f"package: {pkg} as it is")
        return pkg
    if pkg.exists():
        shutil.rmtree(pkg)
    pkg.parent.mkdir(parents=True, exist_ok=True)
    if source is not None:
        shutil.copytree(source, pkg)
        log(f"package: copy of {source}")
        return pkg
    from latentwire.training.data import load_data
    from latentwire.training.pipeline import train_and_export

    t0 = time.monotonic()
    train_and_export(
        load_data("digits"),
        name=PACKAGE,
        out=pkg,
        checkpoint=None,
        resume=False,
        seed=0,
        progress=False,
        epochs=3,
    )
    log(f"package: digits, dense 64 -> 8, 3 epochs, trained in {time.monotonic() - t0:.0f} s")
    return pkg


# --------------------------------------------------------------------------- a client process


class Tally:
    """What one client process saw; kept small whatever the duration (counters, a
    latency histogram, per-second counts, the first few unexpected errors)."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.calls: dict[str, int] = {}
        self.ok: dict[str, int] = {}
        self.expected: dict[str, dict[str, int]] = {}
        self.unexpected: dict[str, int] = {}
        self.unexpected_samples: list[str] = []
        self.stream_messages = 0
        self.per_second: dict[int, int] = {}
        self.latency: dict[str, dict[int, int]] = {}

    def done(self, kind: str, t0: float, t1: float) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1
        sec = int(t1 - self.start)
        self.per_second[sec] = self.per_second.get(sec, 0) + 1
        us = max((t1 - t0) * 1e6, 1.0)
        hist = self.latency.setdefault(kind, {})
        k = int(math.log(us, LAT_BASE))
        hist[k] = hist.get(k, 0) + 1

    def good(self, kind: str) -> None:
        self.ok[kind] = self.ok.get(kind, 0) + 1

    def refused_as_expected(self, kind: str, code: str) -> None:
        by = self.expected.setdefault(kind, {})
        by[code] = by.get(code, 0) + 1

    def bad(self, kind: str, what: str) -> None:
        self.unexpected[kind] = self.unexpected.get(kind, 0) + 1
        if len(self.unexpected_samples) < MAX_SAMPLES_KEPT:
            self.unexpected_samples.append(f"{time.time() - self.start:.1f}s {kind}: {what}")

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "ok": self.ok,
            "expected_errors": self.expected,
            "unexpected_errors": self.unexpected,
            "unexpected_samples": self.unexpected_samples,
            "stream_messages": self.stream_messages,
            "per_second": {str(k): v for k, v in sorted(self.per_second.items())},
            "latency_hist": {
                kind: {str(k): v for k, v in sorted(h.items())} for kind, h in self.latency.items()
            },
        }


def worker(cfg: dict[str, Any]) -> None:
    """One client process: cfg["tasks"] asyncio tasks until cfg["end"] (time.time())."""
    import grpc
    import numpy as np

    from latentwire.runtime._proto.kserve.v2 import inference_pb2 as pb
    from latentwire.runtime._proto.v1 import codec_pb2
    from latentwire.runtime.model import Model

    model = Model(cfg["package"], providers="cpu", threads=1)
    latent = model.manifest.latent
    v2_model = f"{PACKAGE}.decoder"
    rng = np.random.default_rng(cfg["seed"])
    cases = []
    for i in range(INPUTS):
        z = rng.normal(size=(1 + i % 4, *latent.shape)).astype(np.float32)
        codes = model.to_codes(z)
        tensor = pb.ModelInferRequest.InferInputTensor(
            name=latent.name, datatype="FP32", shape=z.shape
        )
        infer = pb.ModelInferRequest(
            model_name=v2_model, inputs=[tensor], raw_input_contents=[z.tobytes()]
        )
        cases.append((codes, infer.SerializeToString(), model.decode(z)))
    bad_codes = codec_pb2.Codes()
    bad_codes.CopyFrom(cases[0][0])
    bad_codes.fingerprint = "0" * len(bad_codes.fingerprint)  # made by no encoder here
    bad_bodies = {
        "bad_foreign_codes": codec_pb2.DecodeRequest(codes=bad_codes).SerializeToString(),
        "bad_wrong_shape": pb.ModelInferRequest(
            model_name=v2_model,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name=latent.name, datatype="FP32", shape=[1, 7]
                )
            ],
            raw_input_contents=[b"\0" * 28],
        ).SerializeToString(),
        "bad_unknown_model": pb.ModelInferRequest(
            model_name="no-such-model.decoder",
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name=latent.name, datatype="FP32", shape=[1, 8]
                )
            ],
            raw_input_contents=[b"\0" * 32],
        ).SerializeToString(),
        "bad_not_a_message": b"\xff\xff\xff\xff not a DecodeRequest",
    }
    bad_methods = {
        "bad_foreign_codes": "/latentwire.v1.Codec/Decode",
        "bad_wrong_shape": "/inference.GRPCInferenceService/ModelInfer",
        "bad_unknown_model": "/inference.GRPCInferenceService/ModelInfer",
        "bad_not_a_message": "/latentwire.v1.Codec/Decode",
    }
    Path(cfg["ready"]).touch()  # set up; the run starts when the go file appears
    go = Path(cfg["go"])
    give_up = time.monotonic() + 120
    while not go.exists():
        if time.monotonic() > give_up:
            raise SystemExit("soak client: no go from the driver within 120 s")
        time.sleep(0.01)
    time.sleep(0.01)  # written whole by a rename, but be gentle
    cfg.update(json.loads(go.read_text()))
    tally = Tally(cfg["start"])
    address = f"127.0.0.1:{cfg['port']}"
    think = cfg["think_ms"] / 1000.0
    bad_every = cfg["bad_every"]
    max_calls = cfg["max_calls_per_task"]

    def check(kind: str, got: Any, expected: Any) -> None:
        if got.shape == expected.shape and np.allclose(got, expected, atol=1e-5):
            tally.good(kind)
        else:
            tally.bad(kind, f"wrong answer (shape {got.shape}, expected {expected.shape})")

    async def task(index: int) -> None:
        trng = random.Random(cfg["seed"] * 1000 + index)
        async with grpc.aio.insecure_channel(address) as ch:
            raw = {
                path: ch.unary_unary(path)  # bytes in, bytes out
                for path in (
                    "/latentwire.v1.Codec/Decode",
                    "/inference.GRPCInferenceService/ModelInfer",
                )
            }
            stream = ch.stream_stream(
                "/latentwire.v1.Codec/DecodeStream",
                request_serializer=codec_pb2.DecodeRequest.SerializeToString,
                response_deserializer=codec_pb2.DecodeResponse.FromString,
            )
            n = 0
            bad_turn = index  # tasks start at different bad kinds
            while time.time() < cfg["end"] and (not max_calls or n < max_calls):
                n += 1
                if bad_every and n % bad_every == 0:
                    kind = list(BAD)[bad_turn % len(BAD)]
                    bad_turn += 1
                else:
                    kind = trng.choices(KINDS, WEIGHTS)[0]
                codes, infer_body, expected = cases[trng.randrange(len(cases))]
                t0 = time.time()
                try:
                    if kind == "Decode":
                        body = codec_pb2.DecodeRequest(codes=codes).SerializeToString()
                        reply = await raw["/latentwire.v1.Codec/Decode"](
                            body, timeout=CALL_TIMEOUT_S
                        )
                        resp = codec_pb2.DecodeResponse.FromString(reply)
                        x = np.frombuffer(resp.reconstruction.data, "<f4").reshape(
                            tuple(resp.reconstruction.shape)
                        )
                        check(kind, x, expected)
                    elif kind == "ModelInfer":
                        reply = await raw["/inference.GRPCInferenceService/ModelInfer"](
                            infer_body, timeout=CALL_TIMEOUT_S
                        )
                        resp = pb.ModelInferResponse.FromString(reply)
                        x = np.frombuffer(resp.raw_output_contents[0], "<f4").reshape(
                            tuple(resp.outputs[0].shape)
                        )
                        check(kind, x, expected)
                    elif kind == "DecodeStream":
                        picks = [cases[trng.randrange(len(cases))] for _ in range(STREAM_MESSAGES)]
                        reqs = [
                            codec_pb2.DecodeRequest(id=str(i), codes=c[0])
                            for i, c in enumerate(picks)
                        ]
                        call = stream(iter(reqs), timeout=CALL_TIMEOUT_S)
                        answers = [r async for r in call]
                        ids = [r.id for r in answers]
                        if ids != [str(i) for i in range(STREAM_MESSAGES)]:
                            tally.bad(kind, f"answers for ids {ids}")
                        elif any(r.HasField("error") for r in answers):
                            first = next(r.error for r in answers if r.HasField("error"))
                            tally.bad(kind, f"item error {first.code}: {first.message}")
                        else:
                            good = all(
                                np.allclose(
                                    np.frombuffer(r.reconstruction.data, "<f4").reshape(
                                        tuple(r.reconstruction.shape)
                                    ),
                                    c[2],
                                    atol=1e-5,
                                )
                                for r, c in zip(answers, picks, strict=True)
                            )
                            if good:
                                tally.good(kind)
                            else:
                                tally.bad(kind, "wrong answer in the stream")
                        tally.stream_messages += len(answers)
                    else:
                        await raw[bad_methods[kind]](bad_bodies[kind], timeout=CALL_TIMEOUT_S)
                        tally.bad(kind, "a bad request was answered OK")
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                    if kind in BAD and code == BAD[kind]:
                        tally.refused_as_expected(kind, code)
                    else:
                        tally.bad(kind, f"{code}: {exc.details()}")
                except Exception as exc:  # e.g. an answer that does not parse: count it
                    tally.bad(kind, f"{type(exc).__name__}: {exc}")
                tally.done(kind, t0, time.time())
                if think:
                    await asyncio.sleep(think * trng.uniform(0.5, 1.5))

    async def run_all() -> None:
        delay = cfg["start"] - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await asyncio.gather(*(task(i) for i in range(cfg["tasks"])))

    c0 = time.process_time()
    asyncio.run(run_all())
    result = tally.to_json()
    result["cpu_s"] = time.process_time() - c0
    Path(cfg["result"]).write_text(json.dumps(result))


# --------------------------------------------------------------------------- the server


def proc_status(pid: int) -> dict[str, int] | None:
    """RSS (bytes), threads and open fds of a process, from /proc; None once it is gone."""
    try:
        rss = threads = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError):
        return None
    return {"rss": rss, "threads": threads, "fds": fds}


def wait_serving(port: int, server: subprocess.Popen[bytes], timeout: float) -> str | None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.poll() is not None:
            return f"the server exited with code {server.returncode}"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            try:
                status = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    return None
            except grpc.RpcError:
                pass
        time.sleep(0.25)
    return f"not SERVING after {timeout:.0f} s"


# --------------------------------------------------------------------------- the run


def windows(duration: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """(reference, final) windows in seconds since the load began: the minute after a
    one-minute warm-up and the last minute; thirds of shorter runs."""
    w = min(60.0, duration / 3.0)
    return (w, 2 * w), (duration - w, duration)


def mean_in(samples: list[dict[str, Any]], key: str, lo: float, hi: float) -> float | None:
    vals = [s[key] for s in samples if lo <= s["t"] <= hi and s.get(key) is not None]
    return statistics.fmean(vals) if vals else None


def percentile(hist: dict[str, int], q: float) -> float | None:
    """The q-th percentile (ms) of a latency histogram (bucket k = [1.1^k, 1.1^(k+1)) µs)."""
    total = sum(hist.values())
    if not total:
        return None
    need, seen = q / 100.0 * total, 0
    for k in sorted(hist, key=int):
        seen += hist[k]
        if seen >= need:
            return round(float(LAT_BASE ** (int(k) + 0.5)) / 1000.0, 3)
    return None


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    def add(into: dict[str, Any], d: dict[str, Any]) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                add(into.setdefault(k, {}), v)
            else:
                into[k] = into.get(k, 0) + v

    out: dict[str, Any] = {}
    samples: list[str] = []
    for r in results:
        samples += r.pop("unexpected_samples", [])
        add(out, r)
    out["unexpected_samples"] = samples[:MAX_SAMPLES_KEPT]
    return out


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    work = out / "work" / "soak"
    work.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    pkg = build_package(work / "repo", Path(args.package) if args.package else None)
    port = free_port_block(args.base_port, width=1)
    cmd = [*latentwire_command(), "serve", "--models", str(work / "repo")]
    cmd += ["--host", "127.0.0.1", "--port", str(port), *args.serve_arg]
    server_log = work / "server.log"
    log(f"server: {' '.join(cmd)}")
    with server_log.open("wb") as fh:
        server = subprocess.Popen(orphan_safe(cmd), stdout=fh, stderr=subprocess.STDOUT)
    workers: list[subprocess.Popen[bytes]] = []
    problems: list[str] = []
    try:
        why = wait_serving(port, server, 120)
        if why:
            raise SystemExit(f"soak: {why}; see {server_log}")
        idle = proc_status(server.pid)
        duration = args.minutes * 60.0
        go = work / "go.json"
        go.unlink(missing_ok=True)
        per_proc = [
            args.clients // args.procs + (i < args.clients % args.procs) for i in range(args.procs)
        ]
        max_calls = math.ceil(args.max_requests / args.clients) if args.max_requests else 0
        for i, tasks in enumerate(per_proc):
            cfg = {
                "port": port,
                "package": str(pkg),
                "tasks": tasks,
                "ready": str(work / f"client-{i}.ready"),
                "go": str(go),
                "think_ms": args.think_ms,
                "bad_every": args.bad_every,
                "seed": i + 1,
                "max_calls_per_task": max_calls,
                "result": str(work / f"client-{i}.json"),
            }
            Path(cfg["result"]).unlink(missing_ok=True)
            Path(cfg["ready"]).unlink(missing_ok=True)
            path = work / f"client-{i}.cfg.json"
            path.write_text(json.dumps(cfg))
            workers.append(
                subprocess.Popen(orphan_safe([sys.executable, __file__, "--worker", str(path)]))
            )
        log(
            f"{args.clients} concurrent calls from {args.procs} process(es) for "
            f"{args.minutes:g} min against port {port} (think {args.think_ms:g} ms, a bad "
            f"request every {args.bad_every} calls)"
        )
        give_up = time.monotonic() + 120
        while not all(Path(f"{work}/client-{i}.ready").exists() for i in range(args.procs)):
            if any(w.poll() is not None for w in workers) or time.monotonic() > give_up:
                raise SystemExit("soak: a client process failed to start")
            time.sleep(0.02)
        start = time.time() + 0.1
        end = start + duration
        tmp = go.with_suffix(".tmp")
        tmp.write_text(json.dumps({"start": start, "end": end}))
        os.replace(tmp, go)
        samples: list[dict[str, Any]] = []
        stat0, cpu0 = cpu_times(), tree_cpu_ticks(server.pid)
        while time.time() < start:
            time.sleep(0.01)
        next_at = start
        while True:
            now = time.time()
            if server.poll() is not None:
                problems.append(f"the server died (exit code {server.returncode}) during the run")
                break
            st = proc_status(server.pid)
            if st is not None:
                samples.append(
                    {"t": round(now - start, 2), **st, "cpu_ticks": tree_cpu_ticks(server.pid)}
                )
            if now >= end or all(w.poll() is not None for w in workers):
                break
            if len(samples) % 12 == 0:
                s = samples[-1]
                log(
                    f"t={now - start:5.0f}s rss={s['rss'] / 2**20:.1f} MiB "
                    f"threads={s['threads']} fds={s['fds']}"
                )
            next_at += args.sample_seconds
            time.sleep(max(0.0, min(next_at, end) - time.time()))
        stat1, cpu1 = cpu_times(), tree_cpu_ticks(server.pid)
        for w in workers:
            try:
                w.wait(timeout=CALL_TIMEOUT_S + 30)
            except subprocess.TimeoutExpired:
                problems.append(f"client process {w.pid} did not finish; killed")
                w.kill()
                w.wait()
            if w.returncode != 0:
                problems.append(f"client process {w.pid} exited with code {w.returncode}")
        after = proc_status(server.pid)
        rc: int | None = None
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                rc = server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                problems.append("the server did not exit within 30 s of SIGTERM")
        else:
            rc = server.returncode
        if rc != 0:
            problems.append(f"the server exited with code {rc} after SIGTERM")
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        stop_tree(server, "latentwire serve")  # nothing left when it exited already

    server_text = server_log.read_text(errors="replace")
    tracebacks = server_text.count("Traceback")
    internal = sum("internal error" in line for line in server_text.splitlines())
    if tracebacks or internal:
        problems.append(
            f"the server log holds {tracebacks} traceback(s) and {internal} internal error(s)"
        )
    results = []
    for i in range(args.procs):
        path = work / f"client-{i}.json"
        if path.exists():
            results.append(json.loads(path.read_text()))
        else:
            problems.append(f"client process {i} wrote no result")
    tally = merge(results)
    ref, final = windows(duration)
    rss_ref = mean_in(samples, "rss", *ref)
    rss_final = mean_in(samples, "rss", *final)
    drift = (rss_final / rss_ref - 1.0) if rss_ref and rss_final else None
    judged = args.minutes >= 3
    per_second = {k: v for k, v in tally.get("per_second", {}).items() if int(k) < int(duration)}
    calls = tally.get("calls", {})
    total = sum(calls.values())
    unexpected = sum(tally.get("unexpected_errors", {}).values())
    expected = sum(sum(v.values()) for v in tally.get("expected_errors", {}).values())
    server_cpu = (cpu1 - cpu0) * TICK_S
    summary = {
        "duration_s": round(duration, 1),
        "requests": total,
        "requests_by_kind": dict(sorted(calls.items())),
        "stream_messages": tally.get("stream_messages", 0),
        "req_per_s": round(total / duration, 1) if duration else None,
        "unexpected_errors": unexpected,
        "unexpected_by_kind": tally.get("unexpected_errors", {}),
        "unexpected_samples": tally.get("unexpected_samples", []),
        "expected_errors": expected,
        "expected_by_kind": tally.get("expected_errors", {}),
        "latency_ms": {
            kind: {"p50": percentile(h, 50), "p99": percentile(h, 99)}
            for kind, h in sorted(tally.get("latency_hist", {}).items())
        },
        "rss_mib": {
            "idle_before_load": round(idle["rss"] / 2**20, 2) if idle else None,
            "start": round(samples[0]["rss"] / 2**20, 2) if samples else None,
            "end": round(samples[-1]["rss"] / 2**20, 2) if samples else None,
            "max": round(max(s["rss"] for s in samples) / 2**20, 2) if samples else None,
            "reference_window_s": list(ref),
            "reference_mean": round(rss_ref / 2**20, 2) if rss_ref else None,
            "final_window_s": list(final),
            "final_mean": round(rss_final / 2**20, 2) if rss_final else None,
        },
        "rss_drift": round(drift, 4) if drift is not None else None,
        "rss_drift_limit": args.max_drift,
        "rss_drift_judged": judged,
        "fds": _span(samples, "fds", after),
        "threads": _span(samples, "threads", after),
        "server_cpu_cores": round(server_cpu / duration, 2) if duration else None,
        "client_cpu_cores": round(sum(r.get("cpu_s", 0) for r in results) / duration, 2)
        if duration
        else None,
        "steal_pct": steal_pct(stat0, stat1),
        "loadavg_at_end": list(os.getloadavg()),
        "server_exit_code": rc,
        "server_log_tracebacks": tracebacks,
        "server_log_internal_errors": internal,
        "problems": problems,
    }
    if unexpected:
        problems.append(f"{unexpected} unexpected error(s)")
    if judged and drift is not None and drift >= args.max_drift:
        problems.append(f"RSS drift {drift:.1%} >= {args.max_drift:.0%}")
    summary["passed"] = not problems
    record = {
        "machine": machine,
        "settings": {
            "minutes": args.minutes,
            "clients": args.clients,
            "procs": args.procs,
            "think_ms": args.think_ms,
            "bad_every": args.bad_every,
            "sample_seconds": args.sample_seconds,
            "max_requests": args.max_requests,
            "mix": dict(zip(KINDS, WEIGHTS, strict=True)),
            "stream_messages": STREAM_MESSAGES,
            "serve_args": args.serve_arg,
            "package_source": args.package,
            "server_command": cmd,
            "package": _package_info(pkg),
        },
        "summary": summary,
        "samples": samples,
        "per_second": per_second,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(record, indent=1) + "\n")
    write_markdown(record, out / "soak.md")
    write_plot(record, out / "soak.png")
    log(
        f"{total:,} calls ({', '.join(f'{k} {v:,}' for k, v in sorted(calls.items()))}), "
        f"unexpected errors {unexpected}, expected {expected}; RSS "
        f"{summary['rss_mib']['start']} -> {summary['rss_mib']['end']} MiB (max "
        f"{summary['rss_mib']['max']}), drift "
        + (f"{drift:+.2%}" if drift is not None else "n/a")
        + ("" if judged else " (not judged: under 3 minutes)")
    )
    for p in problems:
        log(f"PROBLEM: {p}")
    log(f"wrote {out / 'soak.json'}, soak.md, soak.png")
    return 0 if not problems else 1


def _span(samples: list[dict[str, Any]], key: str, after: dict[str, int] | None) -> dict[str, Any]:
    vals = [s[key] for s in samples]
    return {
        "start": vals[0] if vals else None,
        "end": vals[-1] if vals else None,
        "max": max(vals) if vals else None,
        "after_clients_left": after[key] if after else None,
    }


def _package_info(pkg: Path) -> dict[str, Any]:
    m = json.loads((pkg / "manifest.json").read_text())
    return {
        "name": m.get("name"),
        "fingerprint": m.get("fingerprint"),
        "input": m.get("input", {}).get("shape"),
        "latent": m.get("latent", {}).get("shape"),
        "codes": m.get("codes", {}).get("format"),
    }


# --------------------------------------------------------------------------- reports


def write_markdown(record: dict[str, Any], path: Path) -> None:
    s, m, st = record["summary"], record["machine"], record["settings"]
    rss = s["rss_mib"]
    drift = s["rss_drift"]
    lines = [
        "# Soak: `latentwire serve` under mixed load",
        "",
        f"{m.get('date')} · {m.get('cpu_model')} · {m.get('cores')} CPUs · "
        f"{m.get('ram_gib')} GiB · Python {m.get('python')} · onnxruntime "
        f"{m.get('onnxruntime')} · grpcio {m.get('grpcio')} · git {m.get('latentwire_git')}",
        "",
        f"{st['clients']} concurrent calls from {st['procs']} client processes for "
        f"{st['minutes']:g} min (think time {st['think_ms']:g} ms), against `latentwire serve` "
        + (f"with {' '.join(st['serve_args'])}" if st["serve_args"] else "with default flags")
        + (
            f" on a copy of {st['package_source']}"
            if st.get("package_source")
            else " on a freshly trained digits package"
        )
        + ". Mix: Decode 45%, ModelInfer "
        f"45%, DecodeStream of {st['stream_messages']} messages 10%; every "
        f"{st['bad_every']}th call a bad request (4 kinds in turn). The machine was shared "
        f"with other work (load average at the end {s['loadavg_at_end'][0]:.1f}).",
        "",
        "| | |",
        "|---|---|",
        f"| calls | {s['requests']:,} ({s['req_per_s']:,} /s) |",
    ]
    for kind, n in s["requests_by_kind"].items():
        lat = s["latency_ms"].get(kind, {})
        lines.append(f"| · {kind} | {n:,} (p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms) |")
    lines += [
        f"| unexpected errors | **{s['unexpected_errors']}** |",
        f"| expected errors (bad requests refused) | {s['expected_errors']:,} |",
        f"| server RSS idle / start / end / max | {rss['idle_before_load']} / {rss['start']} / "
        f"{rss['end']} / {rss['max']} MiB |",
        f"| RSS drift (mean of {rss['final_window_s'][0]:.0f}-{rss['final_window_s'][1]:.0f} s "
        f"vs {rss['reference_window_s'][0]:.0f}-{rss['reference_window_s'][1]:.0f} s) | "
        + (f"{drift:+.2%}" if drift is not None else "n/a")
        + (
            f" (limit {s['rss_drift_limit']:.0%})"
            if s["rss_drift_judged"]
            else " (not judged: under 3 min)"
        )
        + " |",
        f"| open fds start / end / max | {s['fds']['start']} / {s['fds']['end']} / "
        f"{s['fds']['max']} |",
        f"| threads start / end / max | {s['threads']['start']} / {s['threads']['end']} / "
        f"{s['threads']['max']} |",
        f"| CPU: server / clients | {s['server_cpu_cores']} / {s['client_cpu_cores']} cores |",
        f"| server exit after SIGTERM | {s['server_exit_code']} |",
        f"| verdict | {'passed' if s['passed'] else 'FAILED: ' + '; '.join(s['problems'])} |",
        "",
        "![RSS and requests/s over time](soak.png)",
        "",
    ]
    path.write_text("\n".join(lines))


def write_plot(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = record["samples"]
    s = record["summary"]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    t = [x["t"] / 60 for x in samples]
    ax = axes[0]
    ax.plot(t, [x["rss"] / 2**20 for x in samples], color="tab:blue")
    for (lo, hi), label in zip(
        (s["rss_mib"]["reference_window_s"], s["rss_mib"]["final_window_s"]),
        ("reference window", "final window"),
        strict=True,
    ):
        ax.axvspan(lo / 60, hi / 60, alpha=0.12, color="grey")
        ax.text(lo / 60, ax.get_ylim()[0], label, fontsize=7, va="bottom")
    drift = s["rss_drift"]
    ax.set_ylabel("server RSS (MiB)")
    ax.set_title(
        f"latentwire serve soak: {s['requests']:,} calls, {s['unexpected_errors']} unexpected "
        f"errors, RSS drift {drift:+.2%}"
        if drift is not None
        else "latentwire serve soak"
    )
    ax.grid(alpha=0.3)
    per_second = record["per_second"]
    secs = sorted(int(k) for k in per_second)
    ax = axes[1]
    if secs:
        counts = [per_second.get(str(k), 0) for k in range(secs[0], secs[-1] + 1)]
        win = 5
        smooth = [
            sum(counts[max(0, i - win + 1) : i + 1]) / min(i + 1, win) for i in range(len(counts))
        ]
        ax.plot([(secs[0] + i + 1) / 60 for i in range(len(counts))], smooth, color="tab:green")
    ax.set_ylabel("calls/s (5 s mean)")
    ax.grid(alpha=0.3)
    ax = axes[2]
    ax.plot(t, [x["threads"] for x in samples], label="threads", color="tab:orange")
    ax.plot(t, [x["fds"] for x in samples], label="open fds", color="tab:purple")
    ax.set_ylabel("count")
    ax.set_xlabel("minutes since the load began")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=10.0, help="load duration (default: 10)")
    p.add_argument("--clients", type=int, default=64, help="concurrent calls (default: 64)")
    p.add_argument(
        "--procs", type=int, default=2, help="client processes sharing --clients (default: 2)"
    )
    p.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="pause of each client task between calls, x0.5-1.5 at random (default: 0, a "
        "closed loop)",
    )
    p.add_argument(
        "--bad-every",
        type=int,
        default=50,
        help="every Nth call of a task is a bad request (default: 50; 0 = none)",
    )
    p.add_argument(
        "--max-requests",
        type=int,
        default=0,
        help="stop after about N calls in all (default: 0 = only the time bounds)",
    )
    p.add_argument(
        "--sample-seconds",
        type=float,
        default=5.0,
        help="server /proc sampling period (default: 5)",
    )
    p.add_argument(
        "--max-drift",
        type=float,
        default=0.10,
        help="largest RSS drift that passes (default: 0.10)",
    )
    p.add_argument("--package", help="serve a copy of this package instead of training one")
    p.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra `latentwire serve` argument, repeatable (--serve-arg=--frontend "
        "--serve-arg=grpcio); the default is none: default flags",
    )
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--base-port", type=int, default=18600)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.worker:
        if args.minutes <= 0 or args.clients < 1 or not 1 <= args.procs <= args.clients:
            p.error("--minutes > 0, --clients >= 1 and 1 <= --procs <= --clients")
        if args.sample_seconds <= 0 or args.bad_every < 0 or args.max_requests < 0:
            p.error("--sample-seconds > 0, --bad-every >= 0 and --max-requests >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(json.loads(Path(args.worker).read_text()))
        return 0

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(f"soak: stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    return run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
