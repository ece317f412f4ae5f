"""Running the decoding server: hot reload of versions, broken packages (at startup and
dropped in under load), a server that loaded nothing, SIGTERM draining, large requests
beside small ones, lifecycle, and the `latentwire serve` command line."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from latentwire.runtime import Model
from latentwire.runtime._proto.v1 import codec_pb2, codec_pb2_grpc
from latentwire.runtime.cli import main
from latentwire.runtime.codes import tensor_to_array

from .conftest import free_port, health_of

NAME = "digits"


# -- helpers ------------------------------------------------------------------------------
def _z(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)


def _wait_for(what: str, condition: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def _versions(stub: codec_pb2_grpc.CodecStub) -> dict[str, bool]:
    """version -> latest, for the served model."""
    models = stub.ListModels(codec_pb2.ListModelsRequest(), timeout=5).models
    return {m.version: m.latest for m in models if m.name == NAME}


def _drop_in(pkg: Path, root: Path, version: str) -> Path:
    """Copy a package next to the versions, then rename it into place (atomic)."""
    staging = root / NAME / ".incoming"
    shutil.copytree(pkg, staging)
    target = root / NAME / version
    os.rename(staging, target)
    return target


class _Hammer:
    """A background thread decoding the same codes over and over, recording any failure."""

    def __init__(self, port: int, model: Model, version: str) -> None:
        self.z = _z(4, seed=42)
        self.expected = model.decode(self.z)
        self.request = codec_pb2.DecodeRequest(codes=model.to_codes(self.z))
        self.version = version
        self.port = port
        self.calls = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as ch:
            stub = codec_pb2_grpc.CodecStub(ch)
            while not self._stop.is_set():
                try:
                    r = stub.Decode(self.request, timeout=10)
                    got = tensor_to_array(r.reconstruction)
                    if r.model_version != self.version:
                        self.failures.append(f"decoded by version {r.model_version}")
                    elif not np.allclose(got, self.expected, atol=1e-6):
                        self.failures.append("wrong reconstruction")
                except grpc.RpcError as exc:
                    self.failures.append(f"{exc.code()}: {exc.details()}")
                self.calls += 1
                time.sleep(0.002)

    def __enter__(self) -> _Hammer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


@pytest.fixture()
def root(tmp_path: Path, digits_pkg: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(digits_pkg, root / NAME / "1")
    return root


def _decode(stub: codec_pb2_grpc.CodecStub, model: Model, z: np.ndarray) -> Any:
    return stub.Decode(codec_pb2.DecodeRequest(codes=model.to_codes(z)), timeout=10)


# -- hot reload ----------------------------------------------------------------------------
def test_new_version_loads_while_serving(
    root: Path,
    other_pkg: Path,
    local: Model,
    other_local: Model,
    serve: Any,
) -> None:
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    with (
        serve(root, poll_seconds=0.2) as srv,
        grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch,
    ):
        stub = codec_pb2_grpc.CodecStub(ch)
        assert _versions(stub) == {"1": True}
        with _Hammer(srv.port, local, "1") as hammer:
            _wait_for("a few decodes", lambda: hammer.calls >= 5)
            _drop_in(other_pkg, root, "2")
            _wait_for("version 2 in ListModels", lambda: "2" in _versions(stub))
            time.sleep(0.3)  # keep decoding across the switch a little longer
        assert hammer.calls > 10
        assert hammer.failures == []
        assert _versions(stub) == {"1": False, "2": True}

        z = _z(3, seed=7)
        old = _decode(stub, local, z)  # codes with v1's fingerprint still go to v1
        assert (old.model_version, old.fingerprint) == ("1", local.fingerprint)
        np.testing.assert_allclose(tensor_to_array(old.reconstruction), local.decode(z), atol=1e-6)
        new = _decode(stub, other_local, z)  # v2's codes go to v2
        assert (new.model_version, new.fingerprint) == ("2", other_local.fingerprint)
        np.testing.assert_allclose(
            tensor_to_array(new.reconstruction), other_local.decode(z), atol=1e-6
        )
        assert not np.allclose(local.decode(z), other_local.decode(z), atol=1e-3)

        client = tc.InferenceServerClient(url=f"127.0.0.1:{srv.port}")
        try:
            inp = tc.InferInput("z", [3, 8], "FP32")
            inp.set_data_from_numpy(z)
            # no version and no fingerprint: two encoders' versions loaded, so the server
            # cannot know whose codes these are and refuses (tests/test_v2_versions.py)
            with pytest.raises(InferenceServerException) as refused:
                client.infer("digits.decoder", [inp])
            assert refused.value.status() == "StatusCode.FAILED_PRECONDITION"
            latest = client.infer(
                "digits.decoder", [inp], parameters={"fingerprint": other_local.fingerprint}
            )
            assert latest.get_response().model_version == "2"
            np.testing.assert_allclose(latest.as_numpy("x_hat"), other_local.decode(z), atol=1e-6)
            pinned = client.infer("digits.decoder", [inp], model_version="1")
            assert pinned.get_response().model_version == "1"
            np.testing.assert_allclose(pinned.as_numpy("x_hat"), local.decode(z), atol=1e-6)
            assert list(client.get_model_metadata("digits.decoder").versions) == ["1", "2"]
        finally:
            client.close()


def test_removed_version_stops_serving_its_codes(
    root: Path,
    other_pkg: Path,
    local: Model,
    other_local: Model,
    serve: Any,
) -> None:
    _drop_in(other_pkg, root, "2")
    with (
        serve(root, poll_seconds=0.2) as srv,
        grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch,
    ):
        stub = codec_pb2_grpc.CodecStub(ch)
        assert _versions(stub) == {"1": False, "2": True}
        with _Hammer(srv.port, other_local, "2") as hammer:
            _wait_for("a few decodes", lambda: hammer.calls >= 5)
            shutil.rmtree(root / NAME / "1")
            _wait_for("version 1 to go", lambda: "1" not in _versions(stub))
            time.sleep(0.3)
        assert hammer.failures == []
        z = _z(2)
        np.testing.assert_allclose(
            tensor_to_array(_decode(stub, other_local, z).reconstruction),
            other_local.decode(z),
            atol=1e-6,
        )
        with pytest.raises(grpc.RpcError) as info:
            _decode(stub, local, z)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, info.value.details()
        assert local.fingerprint in (info.value.details() or "")


def test_broken_version_is_logged_and_skipped(
    root: Path,
    digits_pkg: Path,
    local: Model,
    caplog: pytest.LogCaptureFixture,
    serve: Any,
) -> None:
    caplog.set_level(logging.WARNING, logger="latentwire.server")
    broken = root / NAME / "2"
    shutil.copytree(digits_pkg, broken)
    (broken / "decoder.onnx").unlink()
    with (
        serve(root, poll_seconds=0.2) as srv,
        grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch,
    ):
        stub = codec_pb2_grpc.CodecStub(ch)
        assert _versions(stub) == {"1": True}
        assert any("digits/2" in r.getMessage() for r in caplog.records), caplog.text
        # one dropped in while serving is skipped the same way, and logged once
        late = root / NAME / "3"
        shutil.copytree(broken, late)
        _wait_for(
            "the warning about digits/3",
            lambda: any("digits/3" in r.getMessage() for r in caplog.records),
        )
        time.sleep(0.5)  # a few more polls
        assert sum("digits/3" in r.getMessage() for r in caplog.records) == 1
        assert _versions(stub) == {"1": True}
        z = _z(3)
        response = _decode(stub, local, z)
        assert response.model_version == "1"
        np.testing.assert_allclose(
            tensor_to_array(response.reconstruction), local.decode(z), atol=1e-6
        )


def test_version_copied_in_file_by_file_loads_once_complete(
    root: Path,
    other_pkg: Path,
    other_local: Model,
    caplog: pytest.LogCaptureFixture,
    serve: Any,
) -> None:
    """`cp -r pkg DIR/digits/2` is not atomic: a poll can see manifest.json before the
    graphs. Once the copy is complete, the version must load."""
    caplog.set_level(logging.WARNING, logger="latentwire.server")
    with (
        serve(root, poll_seconds=0.2) as srv,
        grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch,
    ):
        stub = codec_pb2_grpc.CodecStub(ch)
        target = root / NAME / "2"
        target.mkdir()
        shutil.copy(other_pkg / "manifest.json", target)
        _wait_for(
            "a poll to see the half-copied version",
            lambda: any("digits/2" in r.getMessage() for r in caplog.records),
        )
        for f in sorted(other_pkg.iterdir()):
            if f.name != "manifest.json":
                shutil.copy(f, target)
        _wait_for("version 2 to load once complete", lambda: "2" in _versions(stub), 5.0)
        assert _decode(stub, other_local, _z(2)).model_version == "2"


def _break(pkg: Path) -> None:
    """Damage a package the way an interrupted copy does: decoder.onnx cut in half."""
    graph = pkg / "decoder.onnx"
    data = graph.read_bytes()
    graph.write_bytes(data[: len(data) // 2])


def _load_failures(srv: Any) -> dict[tuple[str, str], float]:
    """latentwire_model_load_failures_total by (model, version), from /metrics' text."""
    out: dict[tuple[str, str], float] = {}
    for line in srv.metrics.exposition().decode().splitlines():
        if line.startswith("latentwire_model_load_failures_total{"):
            labels, value = line[line.index("{") + 1 :].split("} ")
            pairs = dict(kv.split("=") for kv in labels.split(","))
            out[(pairs["model"].strip('"'), pairs["version"].strip('"'))] = float(value)
    return out


def test_corrupt_version_under_load_keeps_the_old_one_serving(
    root: Path,
    digits_pkg: Path,
    local: Model,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    serve: Any,
) -> None:
    """Three clients decode with version 1 while a damaged version 2 and a version 3 whose
    warm-up fails in ONNX Runtime are dropped in: every request succeeds, version 1 stays
    the latest, each failure is logged once (version and reason) and counted in
    latentwire_model_load_failures_total."""
    from latentwire.runtime.server import registry as registry_mod

    caplog.set_level(logging.INFO, logger="latentwire.server")
    real_warm_up = registry_mod._warm_up

    def warm_up(v: Any, max_batch: int) -> None:
        if v.version == "3":  # not a LatentwireError: what an ORT failure at run time is
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status")
        real_warm_up(v, max_batch)

    monkeypatch.setattr(registry_mod, "_warm_up", warm_up)
    staging = root.parent / "staging"
    shutil.copytree(digits_pkg, staging)
    _break(staging)

    def logged(version: str) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.getMessage().startswith(f"cannot load {NAME}/{version}:")
        ]

    with (
        serve(root, poll_seconds=0.1) as srv,
        grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch,
    ):
        stub = codec_pb2_grpc.CodecStub(ch)
        assert _load_failures(srv) == {}
        hammers = [_Hammer(srv.port, local, "1") for _ in range(3)]
        for h in hammers:
            h.__enter__()
        try:
            _wait_for("a few decodes", lambda: all(h.calls >= 5 for h in hammers))
            _drop_in(staging, root, "2")
            _wait_for("the failure of digits/2", lambda: bool(logged("2")))
            _drop_in(digits_pkg, root, "3")
            _wait_for("the failure of digits/3", lambda: bool(logged("3")))
            before = [h.calls for h in hammers]
            time.sleep(0.5)  # more polls, more requests
            assert all(h.calls > b for h, b in zip(hammers, before, strict=True))
        finally:
            for h in hammers:
                h.__exit__()
        for h in hammers:
            assert h.failures == [], h.failures[:5]
        assert _versions(stub) == {"1": True}
        (two,) = logged("2")  # once: an unchanged failed version is not retried every poll
        assert "decoder.onnx has sha256" in two and "changed after export" in two, two
        assert two.endswith(f"({NAME}/1 keeps serving)"), two
        (three,) = logged("3")
        assert "RuntimeError: [ONNXRuntimeError]" in three, three
        assert _load_failures(srv) == {(NAME, "2"): 1.0, (NAME, "3"): 1.0}
        assert srv.registry.failures().keys() == {(NAME, "2"), (NAME, "3")}
        z = _z(3)
        response = _decode(stub, local, z)
        assert response.model_version == "1"
        np.testing.assert_allclose(
            tensor_to_array(response.reconstruction), local.decode(z), atol=1e-6
        )
        # a fixed version 2 (its files changed) is tried again and loads
        monkeypatch.setattr(registry_mod, "_warm_up", real_warm_up)
        shutil.copy(digits_pkg / "decoder.onnx", root / NAME / "2" / "decoder.onnx")
        _wait_for("the repaired version 2", lambda: "2" in _versions(stub))
        assert (NAME, "2") not in srv.registry.failures()
        assert _load_failures(srv)[(NAME, "2")] == 1.0


def test_a_server_that_loaded_nothing_says_why_and_waits_not_serving(
    tmp_path: Path,
    digits_pkg: Path,
    local: Model,
    caplog: pytest.LogCaptureFixture,
    serve: Any,
) -> None:
    """Every package broken: each failure is named with its reason, the summary says 0 of
    N (not "no model packages yet"), health is NOT_SERVING, and a good version dropped in
    later is served."""
    caplog.set_level(logging.INFO, logger="latentwire.server")
    root = tmp_path / "repo"
    shutil.copytree(digits_pkg, root / NAME / "1")
    (root / NAME / "1" / "decoder.onnx").unlink()
    shutil.copytree(digits_pkg, root / NAME / "2")
    _break(root / NAME / "2")
    with serve(root, poll_seconds=0.2) as srv:
        lines = [r.getMessage() for r in caplog.records]
        (one,) = [ln for ln in lines if ln.startswith(f"cannot load {NAME}/1:")]
        assert "decoder.onnx" in one and "No such file or directory" in one, one
        (two,) = [ln for ln in lines if ln.startswith(f"cannot load {NAME}/2:")]
        assert "decoder.onnx has sha256" in two, two
        (summary,) = [ln for ln in lines if "model version(s) under" in ln]
        assert summary.startswith("loaded 0 of 2 model version(s) under "), summary
        assert f"not loaded: {NAME}/1, {NAME}/2" in summary and "NOT_SERVING" in summary
        assert not any("no model packages" in ln for ln in lines), lines
        assert [r.levelname for r in caplog.records if r.getMessage() == summary] == ["ERROR"]
        assert health_of(srv.port) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert _load_failures(srv) == {(NAME, "1"): 1.0, (NAME, "2"): 1.0}
        _drop_in(digits_pkg, root, "3")
        _wait_for(
            "SERVING once version 3 loads",
            lambda: health_of(srv.port) == health_pb2.HealthCheckResponse.SERVING,
        )
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            assert _decode(codec_pb2_grpc.CodecStub(ch), local, _z(2)).model_version == "3"


def test_require_model_exits_1_when_nothing_loads(tmp_path: Path, digits_pkg: Path) -> None:
    """`latentwire serve --require-model` over broken packages: exit status 1 with one error
    line naming each version and why, no traceback, and the port is free again."""
    root = tmp_path / "repo"
    shutil.copytree(digits_pkg, root / NAME / "1")
    (root / NAME / "1" / "decoder.onnx").unlink()
    port = free_port()
    cmd = [sys.executable, "-m", "latentwire.runtime.cli", "serve", "--models", str(root)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--providers", "cpu", "--require-model"]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("latentwire: error:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("latentwire: error: --require-model: 0 of 1 model version(s)")
    assert f"{NAME}/1: cannot read" in errors[0] and "decoder.onnx" in errors[0], errors[0]
    assert "No such file or directory" in errors[0], errors[0]
    assert "no model packages" not in proc.stderr and "NOT_SERVING" not in proc.stderr
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the gRPC port is still open"
    assert not list(tmp_path.glob("latentwire-*")), "the native front's socket folder is left"


def test_require_model_refuses_an_empty_repository_and_a_missing_provider(
    tmp_path: Path, digits_pkg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["--host", "127.0.0.1", "--port", "0", "--require-model", "--poll-seconds", "0"]
    line = _serve_error(["--models", str(empty), *argv], capsys)
    assert "--require-model: no model packages under" in line and str(empty) in line, line
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return  # the provider loads here: nothing to refuse
    line = _serve_error(["--models", str(digits_pkg), "--providers", "cuda", *argv], capsys)
    assert "0 of 1 model version(s)" in line and "CUDA was asked for" in line, line


# -- large requests beside small ones ------------------------------------------------------
def test_large_request_does_not_stall_small_ones(
    repo: Path,
    local: Model,
    monkeypatch: pytest.MonkeyPatch,
    serve: Any,
) -> None:
    """A request above max_batch runs on its own; small requests keep flowing meanwhile.
    The big run is made to take 1 s (sleeping releases the GIL, as ONNX Runtime does) so
    that the check does not depend on this machine's speed."""
    big_z = _z(20_000, seed=5)
    with serve(repo) as srv:
        version = srv.registry.resolve(NAME)
        real_run = version.decoder._run

        def slow_for_big(x: np.ndarray) -> np.ndarray:
            if len(x) > 1024:
                time.sleep(1.0)
            out: np.ndarray = real_run(x)
            return out

        monkeypatch.setattr(version.decoder, "_run", slow_for_big)
        big_result: list[Any] = []
        options = [("grpc.max_receive_message_length", 64 << 20)]

        def send_big() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{srv.port}", options=options) as ch:
                big_result.append(_decode(codec_pb2_grpc.CodecStub(ch), local, big_z))

        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            stub = codec_pb2_grpc.CodecStub(ch)
            _decode(stub, local, _z(1))  # connected
            big = threading.Thread(target=send_big)
            big.start()
            time.sleep(0.2)  # the big request is running now
            latencies: list[float] = []
            while big.is_alive() and len(latencies) < 200:
                z = _z(1, seed=len(latencies))
                t0 = time.perf_counter()
                response = _decode(stub, local, z)
                latencies.append(time.perf_counter() - t0)
                np.testing.assert_allclose(
                    tensor_to_array(response.reconstruction), local.decode(z), atol=1e-6
                )
            big.join(timeout=30)
    assert len(latencies) >= 3, "small requests did not complete while the big one ran"
    assert max(latencies) < 0.5, f"a small request took {max(latencies):.2f}s"
    (response,) = big_result
    x_hat = tensor_to_array(response.reconstruction)
    assert x_hat.shape == (20_000, 64)
    np.testing.assert_allclose(x_hat, local.decode(big_z), atol=1e-6)


# -- lifecycle -----------------------------------------------------------------------------
def test_stop_releases_both_ports(repo: Path, local: Model, serve: Any) -> None:
    with serve(repo, metrics_port=0) as srv:
        port, metrics_port = srv.port, srv.metrics_port
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            assert r.status == 200
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError) as info:
        _decode(codec_pb2_grpc.CodecStub(ch), local, _z(1))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2)


@pytest.mark.slow
def test_sigterm_drains_requests_in_flight(repo: Path, local: Model, frontend: Any) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LATENTWIRE_TOKEN"}
    cmd = [sys.executable, "-m", "latentwire.runtime.cli", "serve", "--models", str(repo)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--max-delay-ms", "300"]
    cmd += ["--frontend", frontend]
    cmd += ["--poll-seconds", "0", "--providers", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for(
            "the server to report SERVING",
            lambda: (
                proc.poll() is not None or health_of(port) == health_pb2.HealthCheckResponse.SERVING
            ),
            timeout=60,
        )
        assert proc.poll() is None, proc.communicate()[1]
        z = _z(3)
        outcome: list[Any] = []
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = codec_pb2_grpc.CodecStub(ch)
            grpc.channel_ready_future(ch).result(timeout=10)

            def call() -> None:
                try:
                    outcome.append(_decode(stub, local, z))
                except grpc.RpcError as exc:
                    outcome.append(exc)
                outcome.append(time.monotonic())

            t = threading.Thread(target=call)
            t.start()
            time.sleep(0.1)  # the call now waits in the batcher (max delay 300 ms)
            sent_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            t.join(timeout=10)
        response, done_at = outcome
        assert isinstance(response, codec_pb2.DecodeResponse), response
        assert done_at > sent_at  # it was still in flight when the signal came
        np.testing.assert_allclose(
            tensor_to_array(response.reconstruction), local.decode(z), atol=1e-6
        )
        # calls after the signal are refused (draining, or gone once drained)
        assert health_of(port) != health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError) as info:
            _decode(codec_pb2_grpc.CodecStub(ch), local, z)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        rc = proc.wait(timeout=10)
        _, err = proc.communicate(timeout=5)
        assert time.monotonic() - sent_at < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, err
    assert "SIGTERM" in err and "draining" in err, err
    assert "Traceback" not in err


# -- the command line ----------------------------------------------------------------------
def test_serve_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--models", "--max-batch", "--max-delay-ms", "--max-queue", "--tls-client-ca"):
        assert flag in out
    assert "--token-file" in out and "--metrics-port" in out
    assert "--require-model" in out


def test_serve_refuses_a_missing_repository(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--models", "/nonexistent", "--port", "0"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("latentwire: error:")
    assert "/nonexistent" in lines[0]


def test_serve_refuses_client_ca_without_tls(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = Path(__file__).parent / "certs" / "ca.pem"
    assert main(["serve", "--models", str(repo), "--port", "0", "--tls-client-ca", str(ca)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latentwire: error:"), lines
    assert "--tls-cert" in lines[0]


def _serve_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run `latentwire serve ARGV` in-process; it must print one error line and return 1."""
    try:
        rc = main(["serve", *argv])
    except Exception as exc:  # anything escaping main() is a traceback for the user
        pytest.fail(f"`latentwire serve` raised {exc!r} instead of printing one error line")
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("latentwire: error:")]
    assert rc == 1, err
    assert len(lines) == 1, err
    return lines[0]


def test_serve_refuses_a_busy_port(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = _serve_error(
            ["--models", str(repo), "--host", "127.0.0.1", "--port", str(port)], capsys
        )
    assert str(port) in line


def test_serve_refuses_a_busy_metrics_port_and_closes_its_grpc_port(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        metrics_port = busy.getsockname()[1]
        argv = ["--models", str(repo), "--host", "127.0.0.1", "--port", str(port)]
        line = _serve_error([*argv, "--metrics-port", str(metrics_port)], capsys)
    with socket.socket() as probe:  # a server that failed to start listens nowhere
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the gRPC port is still open"
    assert str(metrics_port) in line, line


@pytest.mark.parametrize(
    ("tls", "words"),
    [
        (["--tls-cert", "server.pem"], ["--tls-key"]),
        (["--tls-cert", "missing.pem", "--tls-key", "server.key"], ["missing.pem"]),
    ],
)
def test_serve_refuses_incomplete_tls(
    repo: Path, tls: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    certs = Path(__file__).parent / "certs"
    tls = [str(certs / a) if a.endswith((".pem", ".key")) else a for a in tls]
    argv = ["--models", str(repo), "--host", "127.0.0.1", "--port", "0", *tls]
    line = _serve_error(argv, capsys)
    for word in words:
        assert word in line, line


@pytest.mark.parametrize("flag", [["--max-batch", "0"], ["--max-delay-ms", "-1"]])
def test_serve_refuses_bad_numbers(
    repo: Path, flag: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--models", str(repo), *flag])
    assert info.value.code == 2
    assert flag[0] in capsys.readouterr().err
