"""Several replicas: client-side balancing (`lb_policy`, `--lb`), the server's connection
age (`--max-connection-age-s`) and the in-flight gauge an autoscaler reads
(`latentwire_inflight_requests`), against in-process servers on free ports."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentwire.runtime._proto.v1 import codec_pb2
from latentwire.runtime.cli import build_parser, main
from latentwire.runtime.client import AsyncClient, Client, lb_policy_for
from latentwire.runtime.errors import DeadlineExceeded, FingerprintMismatch
from latentwire.runtime.model import Model
from latentwire.runtime.server import cli as serve_cli
from latentwire.runtime.server.app import (
    ServeConfig,
    Server,
    choose_frontend,
    connection_age_options,
)
from latentwire.runtime.server.batcher import Batcher
from latentwire.runtime.server.codec import CodecService

from .conftest import error_line, require_native, running_server

INFLIGHT = "latentwire_inflight_requests"


def _wait_for(what: str, ok: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _decoded(srv: Any) -> int:
    """Decode calls the server answered OK (its own request counter)."""
    value = srv.metrics.registry.get_sample_value(
        "latentwire_requests_total", {"method": "Decode", "code": "OK"}
    )
    return int(value or 0)


def _inflight(srv: Any) -> dict[str, float]:
    """latentwire_inflight_requests by method, as /metrics shows it."""
    return {
        s.labels["method"]: s.value
        for family in srv.metrics.registry.collect()
        if family.name == INFLIGHT
        for s in family.samples
    }


@pytest.fixture(scope="module")
def codes(local: Model, digits_x: np.ndarray) -> codec_pb2.Codes:
    return next(iter(local.encode_codes(digits_x[:2])))


# -- client-side balancing ---------------------------------------------------------------
def test_lb_policy_defaults_and_refusal() -> None:
    assert lb_policy_for("dns:///latentwire-headless.ns.svc:8001") == "round_robin"
    assert lb_policy_for("ipv4:10.0.0.1:8001,10.0.0.2:8001") == "round_robin"
    assert lb_policy_for("ipv6:[::1]:8001,[::2]:8001") == "round_robin"
    assert lb_policy_for("ipv4:10.0.0.1:8001") == "pick_first"
    assert lb_policy_for("decoder.example:8001") == "pick_first"
    assert lb_policy_for("dns:///x:1", "pick_first") == "pick_first"
    with pytest.raises(ValueError, match="lb_policy must be None"):
        Client("127.0.0.1:1", lb_policy="least_request")
    with Client("ipv4:127.0.0.1:1,127.0.0.1:2") as c:
        assert c.lb_policy == "round_robin" and "round_robin" in repr(c)


def test_two_servers_share_a_round_robin_clients_calls(
    repo: Path, server: Any, serve: Any, local: Model, codes: codec_pb2.Codes
) -> None:
    with serve(repo) as other:
        servers = (server, other)
        target = f"ipv4:127.0.0.1:{server.port},127.0.0.1:{other.port}"

        def spread(client: Client) -> list[int]:
            before = [_decoded(s) for s in servers]
            for _ in range(20):
                client.decode(codes)
            _wait_for("the counts", lambda: sum(map(_decoded, servers)) - sum(before) == 20)
            return [_decoded(s) - b for s, b in zip(servers, before, strict=True)]

        with Client(target, timeout=10) as rr:  # auto: round_robin for a multi-address target
            assert rr.lb_policy == "round_robin"
            rr.health()  # connect; round_robin then connects to every address
            _wait_for("both connections", lambda: min(spread(rr)) > 0)
        with Client(target, timeout=10, lb_policy="pick_first") as pf:
            assert sorted(spread(pf)) == [0, 20]  # gRPC's default: one connection


def test_dns_target(server: Any, local: Model, codes: codec_pb2.Codes) -> None:
    target = f"dns:///localhost:{server.port}"
    with Client(target, timeout=10) as c:
        assert c.lb_policy == "round_robin"
        assert c.decode(codes).fingerprint == local.fingerprint

    async def decode() -> str:
        async with AsyncClient(target, timeout=10, lb_policy="pick_first") as c:
            assert c.lb_policy == "pick_first"
            return (await c.decode(codes)).fingerprint

    assert asyncio.run(decode()) == local.fingerprint


def test_cli_lb_flag_reaches_the_client(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}

    class Spy(Client):
        def __init__(self, target: str, **kwargs: Any) -> None:
            seen.update(kwargs, target=target)
            raise SystemExit(7)

    from latentwire.runtime import client, client_cli

    monkeypatch.setattr(client, "Client", Spy)  # client_cli imports it when a command runs
    assert ("auto", *client.LB_POLICIES) == client_cli.LB_CHOICES
    base = ["fetch-encoder", "--name", "m", "--out", "x", "--server", "dns:///h:1"]
    for flag, policy in (([], None), (["--lb", "pick_first"], "pick_first")):
        with pytest.raises(SystemExit):
            main([*base, *flag])
        assert seen["lb_policy"] == policy and seen["target"] == "dns:///h:1"
    for command in ("send", "fetch-encoder"):
        capsys.readouterr()
        with pytest.raises(SystemExit):
            main([command, "--help"])
        help_text = " ".join(capsys.readouterr().out.split())
        assert "--lb {auto,pick_first,round_robin}" in help_text and "headless" in help_text


# -- connection age ----------------------------------------------------------------------
def test_max_connection_age_flags_map_to_grpc_options(tmp_path: Path) -> None:
    argv = ["serve", "--models", str(tmp_path), "--max-connection-age-s", "30"]
    args = build_parser().parse_args([*argv, "--max-connection-age-grace-s", "5"])
    cfg = serve_cli.config_from_args(args)
    assert (cfg.max_connection_age, cfg.max_connection_age_grace) == (30.0, 5.0)
    assert connection_age_options(cfg) == [
        ("grpc.max_connection_age_ms", 30000),
        ("grpc.max_connection_age_grace_ms", 5000),
    ]
    off = serve_cli.config_from_args(build_parser().parse_args(argv[:3]))
    assert off.max_connection_age is None and connection_age_options(off) == []
    # auto picks grpcio when the option is given, and says why
    front, why = choose_frontend(ServeConfig(models=tmp_path, max_connection_age=30))
    assert front == "grpcio" and "--max-connection-age-s" in why


def test_native_front_refuses_max_connection_age(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_native()
    argv = ["serve", "--models", str(repo), "--port", "0", "--frontend", "native"]
    assert main([*argv, "--max-connection-age-s", "30"]) == 1
    line = error_line(capsys)
    assert "native" in line and "--frontend grpcio" in line, line
    assert main([*argv[:-2], "--max-connection-age-grace-s", "5"]) == 1
    assert "needs --max-connection-age-s" in error_line(capsys)


def test_connections_are_renewed_by_age_without_errors(
    repo: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "latentwire.server")
    peers: list[str] = []
    list_models = CodecService.list_models

    def recording(self: CodecService, request: Any, context: Any) -> Any:
        peers.append(context.peer())  # ipv4:127.0.0.1:<the client's port>: one per connection
        return list_models(self, request, context)

    monkeypatch.setattr(CodecService, "list_models", recording)
    with (
        running_server(repo, frontend="grpcio", max_connection_age=0.5) as srv,
        Client(f"127.0.0.1:{srv.port}", timeout=5, retries=0) as c,  # any error would raise
    ):
        end = time.monotonic() + 1.6
        while time.monotonic() < end:
            assert [m.name for m in c.list_models()] == ["digits"]
            time.sleep(0.02)
    assert "connections get a GOAWAY after 0.5s (+-10%), then calls under way finish" in caplog.text
    assert len(peers) > 40
    assert len(set(peers)) >= 2, set(peers)  # the client reconnected after each GOAWAY


# -- the in-flight gauge -----------------------------------------------------------------
@pytest.fixture()
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Every graph run waits until the event is set (set on exit, whatever happened)."""
    release = threading.Event()
    run_split = Batcher.run_split

    def waiting(self: Batcher, x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
        release.wait(10)
        return run_split(self, x, sizes)

    monkeypatch.setattr(Batcher, "run_split", waiting)
    try:
        yield release
    finally:
        release.set()


def test_inflight_gauge_counts_calls_until_they_end(
    server: Any, local: Model, codes: codec_pb2.Codes, held: threading.Event
) -> None:
    assert _inflight(server).get("Decode") == 0.0  # the series exists before any call
    total = lambda: sum(_inflight(server).values())  # noqa: E731
    n = 4
    with Client(f"127.0.0.1:{server.port}", timeout=10) as c, ThreadPoolExecutor(n) as pool:
        bad = codec_pb2.Codes()
        bad.CopyFrom(codes)
        bad.fingerprint = "0" * len(codes.fingerprint)
        with pytest.raises(FingerprintMismatch):  # refused before it reaches a graph
            c.decode(bad)
        _wait_for("the refused call to end", lambda: total() == 0)
        calls = [pool.submit(c.decode, codes) for _ in range(n)]
        _wait_for(f"{n} calls in flight", lambda: total() == n)
        assert _inflight(server)["Decode"] == n
        with pytest.raises(DeadlineExceeded):  # its deadline passes while it waits
            c.decode(codes, timeout=0.3)
        _wait_for("the expired call to end", lambda: total() == n)
        held.set()
        for call in calls:
            assert call.result().fingerprint == local.fingerprint
    _wait_for("every call to end", lambda: total() == 0)
    text = server.metrics.exposition().decode()
    assert f'{INFLIGHT}{{method="Decode"}} 0.0' in text


def test_grpcio_health_answers_while_every_handler_thread_is_busy(
    repo: Path, local: Model, codes: codec_pb2.Codes, held: threading.Event
) -> None:
    """--threads 2 with 2 calls running and a third waiting for a thread: Health/Check
    still answers within 1 s (it has threads of its own), and the waiting call is in
    flight too, under method=""."""
    with (
        running_server(repo, frontend="grpcio", threads=2) as srv,
        Client(f"127.0.0.1:{srv.port}", timeout=10) as c,
        ThreadPoolExecutor(3) as pool,
    ):
        calls = [pool.submit(c.decode, codes) for _ in range(3)]
        busy = lambda: {m: n for m, n in _inflight(srv).items() if n}  # noqa: E731
        _wait_for("3 calls in flight", lambda: busy() == {"": 1, "Decode": 2})
        t0 = time.monotonic()
        assert c.health(timeout=1.0) == "SERVING"
        assert time.monotonic() - t0 < 1.0
        held.set()
        for call in calls:
            assert call.result().fingerprint == local.fingerprint
        _wait_for("every call to end", lambda: sum(_inflight(srv).values()) == 0)


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6(), reason="this host has no IPv6 loopback")
def test_metrics_listen_on_ipv6_and_ipv4_by_default(tmp_path: Path) -> None:
    """--host [::] (the default): /metrics answers over IPv6 too (IPv6-only clusters)."""
    srv = Server(
        ServeConfig(models=tmp_path, port=0, metrics_port=0, poll_seconds=0, frontend="grpcio")
    )
    srv.start(load=False)
    try:
        for host in ("127.0.0.1", "[::1]"):
            url = f"http://{host}:{srv.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as reply:
                assert INFLIGHT in reply.read().decode(), url
    finally:
        srv.stop(grace=0)
