"""A native load generator for any KServe V2 gRPC server: h2load (Debian's nghttp2-client)
replays one gRPC-framed ModelInferRequest over HTTP/2, closed loop.

Why: the Python generator (load_v2.py) spends 175-270 µs of CPU per request itself, which
on a 2-CPU box caps every server near 4-6k requests/s and hides the differences. h2load
costs a few µs per request.

What h2load cannot see, and how it is covered:
- gRPC status: an error is HTTP 200 with `grpc-status` in the trailers. Every point checks
  that the DATA bytes per request are at least the reply's tensor (errors carry no body),
  and 16 replies are then fetched with tritonclient and compared with ONNX Runtime run
  in this process on the same input.
- percentiles: h2load prints min/mean/max only; p50/p99 come from its per-request log
  (`--log-file`), keeping requests that started after the warm-up.

Concurrency: C clients = min(C, 4) connections × C / min(C, 4) streams each (64 = 4 × 16, as
an edge fleet multiplexing calls over a few connections would).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from .procs import TICK_S, orphan_safe, tree_cpu_ticks

PATH = "/inference.GRPCInferenceService/ModelInfer"


def available() -> str | None:
    """None when h2load can run, else why not."""
    if shutil.which("h2load") is None:
        return "h2load not found (apt-get install nghttp2-client)"
    return None


def layout(clients: int) -> tuple[int, int]:
    """(connections, streams per connection) for `clients` concurrent requests."""
    conns = min(clients, 4)
    if clients % conns:
        raise ValueError(f"{clients} clients do not split over {conns} connections")
    return conns, clients // conns


def request_body(model: str, batch: int, dim: int, seed: int = 0) -> tuple[bytes, np.ndarray]:
    """A gRPC-framed ModelInferRequest (input `z`, FP32 raw contents) and its input array."""
    from latentwire.runtime._proto.kserve.v2 import inference_pb2 as pb  # standard field numbers

    z = np.random.default_rng(seed).standard_normal((batch, dim), dtype=np.float32)
    request = pb.ModelInferRequest(
        model_name=model,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="z", datatype="FP32", shape=z.shape)],
        raw_input_contents=[z.tobytes()],
    )
    data = request.SerializeToString()
    return b"\x00" + struct.pack(">I", len(data)) + data, z


def _proc_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rfind(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


def _number(pattern: str, text: str) -> float | None:
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def run_point(
    port: int,
    body_file: Path,
    clients: int,
    batch: int,
    *,
    duration: float,
    warmup: float,
    server_pid: int,
    log_file: Path,
    reply_floats: int,
) -> dict[str, Any]:
    """One closed-loop point; samples/s, p50/p99, CPU µs per request (server, client)."""
    conns, streams = layout(clients)
    cmd = ["h2load", "-D", f"{duration:g}", "--warm-up-time", f"{warmup:g}"]
    cmd += ["-c", str(conns), "-m", str(streams), "-d", str(body_file)]
    cmd += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    cmd += ["--log-file", str(log_file), f"http://127.0.0.1:{port}{PATH}"]
    started = time.time()
    proc = subprocess.Popen(
        orphan_safe(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        # CPU of server and h2load over a window inside the measured phase, both alive
        time.sleep(warmup + 0.3)
        w0, s0, c0 = time.monotonic(), tree_cpu_ticks(server_pid), _proc_ticks(proc.pid)
        time.sleep(max(0.5, duration - 0.6))
        w1, s1, c1 = time.monotonic(), tree_cpu_ticks(server_pid), _proc_ticks(proc.pid)
        out, _ = proc.communicate(timeout=duration + warmup + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    req_s = _number(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = _number(r"requests: \d+ total, \d+ started, (\d+) done", out)
    failed = _number(r"(\d+) failed", out)
    errored = _number(r"(\d+) errored", out)
    timeouts = _number(r"(\d+) timeout", out)
    data = _number(r"traffic: .*?, [\d.]+\w*B \((\d+)\) data", out)
    if req_s is None or done is None:
        raise RuntimeError(f"cannot read h2load's output:\n{out}")
    lat = _latencies(log_file, since_us=(started + warmup) * 1e6)
    window = w1 - w0
    in_window = req_s * window
    point: dict[str, Any] = {
        "clients": clients,
        "batch": batch,
        "connections": conns,
        "streams": streams,
        "samples_per_s": req_s * batch,
        "req_per_s": req_s,
        "requests": int(done),
        # not "done - 2xx": h2load counts a status when the headers come and "done" when the
        # stream ends, so calls astride the end of the warm-up differ by one or two
        "errors": int((failed or 0) + (errored or 0) + (timeouts or 0)),
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "max_ms": float(lat.max()) if len(lat) else None,
        "data_bytes_per_request": (data or 0) / done if done else 0,
        "server_us_per_req": (s1 - s0) * TICK_S / in_window * 1e6 if in_window else None,
        "client_us_per_req": (
            (c1 - c0) * TICK_S / in_window * 1e6
            if in_window and c0 is not None and c1 is not None
            else None
        ),
        "cpu_server_cores": (s1 - s0) * TICK_S / window,
        "h2load_summary": [
            ln.strip() for ln in out.splitlines() if ln.startswith(("requests:", "status codes:"))
        ],
    }
    if point["data_bytes_per_request"] < reply_floats * 4:
        point["errors"] = max(point["errors"], 1)
        point["first_error"] = (
            f"{point['data_bytes_per_request']:.0f} data bytes per request, less than the "
            f"{reply_floats * 4} of the reply tensor: the server answered with gRPC errors"
        )
    return point


def _latencies(log_file: Path, since_us: float) -> np.ndarray:
    """Per-request latency in ms of the requests that started after `since_us`."""
    ms: list[float] = []
    try:
        for line in log_file.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and float(parts[0]) >= since_us:
                ms.append(float(parts[2]) / 1000.0)
    except OSError:
        pass
    return np.array(ms)


def check_replies(
    port: int, model: str, z: np.ndarray, expected: np.ndarray, n: int = 16
) -> str | None:
    """Fetch `n` replies to the replayed request with tritonclient; None if all match."""
    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(url=f"127.0.0.1:{port}")
    try:
        for _ in range(n):
            inp = tc.InferInput("z", list(z.shape), "FP32")
            inp.set_data_from_numpy(z)
            got = client.infer(model, [inp]).as_numpy("x_hat")
            if got is None or got.shape != expected.shape:
                return f"reply of shape {None if got is None else got.shape}, want {expected.shape}"
            if not np.allclose(got, expected, atol=1e-5):
                return f"wrong reply: max abs error {np.abs(got - expected).max():.3g}"
    except Exception as exc:  # any client failure is a failed check, with its message
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None
