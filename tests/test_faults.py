"""Faults of a `latentwire serve` process under load, on both fronts: killed with SIGKILL in
the middle of a DecodeStream and restarted on the same port (the client sends again what was
not answered; every message gets exactly one, correct result), the same across a graceful
stop and restart, and SIGTERM while clients send unary Decode and V2 ModelInfer calls (each
call is answered correctly or refused with UNAVAILABLE/CANCELLED; none hangs or gets another
error; the process exits 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from latentwire.runtime import Model
from latentwire.runtime import client as client_mod
from latentwire.runtime._proto.kserve.v2 import inference_pb2 as pb
from latentwire.runtime._proto.v1 import codec_pb2, codec_pb2_grpc
from latentwire.runtime.client import Client
from latentwire.runtime.codes import tensor_to_array

from .conftest import free_port, health_of

SERVING = health_pb2.HealthCheckResponse.SERVING


# -- a server in a process of its own ----------------------------------------------------
class _ServerProcess:
    """`latentwire serve` on `port`, its log in a file (a pipe nobody reads could fill up
    and block the server); its temporary files go under `tmp`."""

    def __init__(self, repo: Path, port: int, frontend: str, tmp: Path, *extra: str) -> None:
        cmd = [sys.executable, "-m", "latentwire.runtime.cli", "serve", "--models", str(repo)]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--frontend", frontend]
        cmd += ["--poll-seconds", "0", "--providers", "cpu", *extra]
        env = {k: v for k, v in os.environ.items() if k != "LATENTWIRE_TOKEN"}
        env["TMPDIR"] = str(tmp)
        self.port = port
        self.log_path = tmp / f"server-{port}-{time.monotonic_ns()}.log"
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_serving(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while health_of(self.port) != SERVING:
            assert self.proc.poll() is None, f"the server exited:\n{self.log()}"
            assert time.monotonic() < end, f"not SERVING after {timeout:.0f}s:\n{self.log()}"
            time.sleep(0.05)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture()
def servers() -> Iterator[list[_ServerProcess]]:
    """Servers a test starts; whatever is still running at the end is killed."""
    started: list[_ServerProcess] = []
    yield started
    for s in started:
        s.close()


# -- SIGKILL during a DecodeStream -------------------------------------------------------
def test_kill_9_during_a_stream_each_message_gets_exactly_one_result(
    repo: Path,
    local: Model,
    frontend: str,
    tmp_path: Path,
    servers: list[_ServerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server is killed (SIGKILL) after 100 of 300 answers, with up to 40 more requests
    sent and unanswered, and started again on the same port. The client waits for it
    (UNAVAILABLE is retried) and sends the unanswered requests again: each message's id
    comes back once, with the right reconstructions."""
    n, window, kill_after = 300, 40, 100
    rng = np.random.default_rng(3)
    zs = [rng.normal(size=(2, 8)).astype(np.float32) for _ in range(n)]
    port = free_port()
    servers.append(_ServerProcess(repo, port, frontend, tmp_path))
    servers[0].wait_serving()

    answered = threading.Condition()
    state = {"answers": 0, "pulled": 0}

    def messages() -> Iterator[codec_pb2.Codes]:
        """At most `window` messages ahead of the answers: the stream is far from done
        when the server dies, and some requests are in flight."""
        for i, z in enumerate(zs):
            end = time.monotonic() + 60
            with answered:
                while i >= state["answers"] + window and time.monotonic() < end:
                    answered.wait(0.5)
                state["pulled"] += 1
            yield local.to_codes(z)

    delays: list[float] = []
    real_sleep = client_mod._sleep

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(client_mod, "_sleep", sleep)
    results: dict[str, list[Any]] = {}
    pulled_at_kill = 0
    with Client(f"127.0.0.1:{port}", retries=40, backoff=0.05, timeout=120) as client:
        for r in client.decode_stream(messages()):
            results.setdefault(r.id, []).append(r)
            with answered:
                state["answers"] += 1
                answered.notify_all()
            if state["answers"] == kill_after:
                with answered:
                    pulled_at_kill = state["pulled"]
                servers[0].proc.send_signal(signal.SIGKILL)
                servers[0].proc.wait(timeout=10)
                servers.append(_ServerProcess(repo, port, frontend, tmp_path))
    assert servers[0].proc.returncode == -signal.SIGKILL
    assert pulled_at_kill > kill_after, "no request was in flight when the server died"
    assert delays, "the client never had to wait for the restarted server"
    assert sorted(results, key=int) == [str(i) for i in range(n)]
    twice = {i: len(rs) for i, rs in results.items() if len(rs) != 1}
    assert twice == {}, f"ids answered more than once: {twice}"
    for i, z in enumerate(zs):
        (r,) = results[str(i)]
        assert r.ok, r.error
        np.testing.assert_allclose(r.unwrap(), local.decode(z), atol=1e-6)
    second = servers[1]
    assert health_of(port) == SERVING
    second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(timeout=30) == 0, second.log()
    assert "Traceback" not in second.log()


# -- a graceful stop during a DecodeStream -------------------------------------------------
def _stream_across_a_restart(
    repo: Path, local: Model, frontend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DecodeStream of 40 paced messages; after 10 answers the server stops (grace
    0.2 s) and another starts on the same port. The 15th message waits for the new server,
    so the old one stops while its handler waits for the client's next message."""
    from latentwire.runtime.server.app import ServeConfig, Server

    def config(port: int) -> ServeConfig:
        return ServeConfig(
            models=repo,
            host="127.0.0.1",
            port=port,
            poll_seconds=0,
            frontend="native" if frontend == "native" else "grpcio",
        )

    first = Server(config(0))
    port = first.start()
    started: list[Any] = [first]
    zs = [np.full((1, 8), i / 10, np.float32) for i in range(40)]

    restarted = threading.Event()

    def messages() -> Iterator[codec_pb2.Codes]:
        for i, z in enumerate(zs):
            time.sleep(0.01)
            if i == 15:
                restarted.wait(30)
            yield local.to_codes(z)

    def restart() -> None:
        first.stop(grace=0.2)
        second = Server(config(port))
        second.start()
        started.append(second)
        restarted.set()

    real_sleep = client_mod._sleep
    monkeypatch.setattr(client_mod, "_sleep", lambda s: real_sleep(min(s, 0.05)))
    results: list[Any] = []
    restarter = threading.Thread(target=restart)
    try:
        with Client(f"127.0.0.1:{port}", retries=40, backoff=0.02, timeout=60) as client:
            for r in client.decode_stream(messages()):
                results.append(r)
                if len(results) == 10:
                    restarter.start()
        restarter.join(timeout=30)
    finally:
        restarted.set()
        for srv in started:
            srv.stop(grace=0)
    assert len(started) == 2, "the second server never started"
    assert [r.id for r in results] == [str(i) for i in range(len(zs))]
    for r, z in zip(results, zs, strict=True):
        np.testing.assert_allclose(r.unwrap(), local.decode(z), atol=1e-6)


def test_a_stream_goes_on_across_a_graceful_restart(
    repo: Path, local: Model, frontend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling restart: the stream the stopping server ends is resumed on the new one,
    each message answered once."""
    _stream_across_a_restart(repo, local, frontend, monkeypatch)


# -- SIGTERM under load --------------------------------------------------------------------
def _decode_call(ch: grpc.Channel, local: Model, z: np.ndarray) -> Callable[[], np.ndarray]:
    stub = codec_pb2_grpc.CodecStub(ch)
    request = codec_pb2.DecodeRequest(codes=local.to_codes(z))

    def call() -> np.ndarray:
        return tensor_to_array(stub.Decode(request, timeout=15).reconstruction)

    return call


def _infer_call(ch: grpc.Channel, local: Model, z: np.ndarray) -> Callable[[], np.ndarray]:
    infer = ch.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    tensor = pb.ModelInferRequest.InferInputTensor(name="z", datatype="FP32", shape=z.shape)
    request = pb.ModelInferRequest(
        model_name="digits.decoder", inputs=[tensor], raw_input_contents=[z.tobytes()]
    )

    def call() -> np.ndarray:
        reply = infer(request, timeout=15)
        shape = tuple(reply.outputs[0].shape)
        return np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(shape)

    return call


class _Caller(threading.Thread):
    """Sends one kind of call over and over on a channel of its own, checking every answer,
    until the first refusal (and a few after it, while the process still answers)."""

    def __init__(self, port: int, kind: str, local: Model, seed: int) -> None:
        super().__init__(daemon=True)
        self.port, self.kind, self.local = port, kind, local
        self.z = np.random.default_rng(seed).normal(size=(3, 8)).astype(np.float32)
        self.expected = local.decode(self.z)
        self.ok = 0
        self.wrong = 0
        self.refused: list[tuple[str, str]] = []
        self.ready = threading.Event()

    def run(self) -> None:
        make = _decode_call if self.kind == "Decode" else _infer_call
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as ch:
            call = make(ch, self.local, self.z)
            while len(self.refused) < 3:
                try:
                    got = call()
                except grpc.RpcError as exc:
                    self.refused.append((exc.code().name, exc.details() or ""))
                    time.sleep(0.02)
                    continue
                if got.shape == self.expected.shape and np.allclose(got, self.expected, atol=1e-6):
                    self.ok += 1
                else:
                    self.wrong += 1
                if self.ok >= 5:
                    self.ready.set()


def test_sigterm_under_load_answers_or_refuses_every_call_and_exits_0(
    repo: Path, local: Model, frontend: str, tmp_path: Path, servers: list[_ServerProcess]
) -> None:
    port = free_port()
    # a 2 ms batching window: calls sit in the queue when the signal comes
    servers.append(_ServerProcess(repo, port, frontend, tmp_path, "--max-delay-ms", "2"))
    server = servers[0]
    server.wait_serving()
    callers = [_Caller(port, kind, local, i) for i, kind in enumerate(["Decode", "ModelInfer"] * 4)]
    for c in callers:
        c.start()
    for c in callers:
        assert c.ready.wait(30), f"{c.kind}: only {c.ok} calls answered"
    server.proc.send_signal(signal.SIGTERM)
    sent_at = time.monotonic()
    rc = server.proc.wait(timeout=30)
    for c in callers:
        c.join(timeout=30)
    assert not any(c.is_alive() for c in callers), "a call never came back"
    log = server.log()
    assert rc == 0, log
    assert time.monotonic() - sent_at < 15
    assert "SIGTERM: draining" in log and "Traceback" not in log, log
    for c in callers:
        assert c.wrong == 0, f"{c.kind}: {c.wrong} wrong answers"
        assert c.ok >= 5
        codes = {code for code, _ in c.refused}
        assert codes <= {"UNAVAILABLE", "CANCELLED"}, (c.kind, c.refused)
