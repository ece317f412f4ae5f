"""The client SDK (sync and asyncio) and the `send` / `fetch-encoder` commands, against
in-process servers on free ports."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from latentwire.runtime import client as client_mod
from latentwire.runtime._proto.v1 import codec_pb2
from latentwire.runtime.cli import main
from latentwire.runtime.client import AsyncClient, Client, StreamResult
from latentwire.runtime.codes import array_to_tensor, tensor_to_array
from latentwire.runtime.errors import (
    DeadlineExceeded,
    FingerprintMismatch,
    InputError,
    IntegrityError,
    ModelNotFound,
    PackageError,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from latentwire.runtime.model import Model

from .conftest import error_line, free_port, running_server

NAME = "digits"  # the served name: the repository folder, not the manifest's "digits-test"


@pytest.fixture(scope="module")
def address(server: Any) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture()
def client(address: str) -> Iterator[Client]:
    with Client(address, timeout=10) as c:
        yield c


# -- decode -------------------------------------------------------------------------------
def test_decode_matches_local(client: Client, local: Model, digits_x: np.ndarray) -> None:
    messages = list(local.encode_codes(digits_x, chunk=30))
    assert len(messages) == 4
    result = client.decode(messages)
    expected = local.decode(local.encode(digits_x))
    assert result.x.shape == expected.shape and result.x.dtype == np.float32
    np.testing.assert_allclose(result.x, expected, atol=1e-6)
    assert (result.model_name, result.model_version) == (NAME, "1")
    assert result.fingerprint == local.fingerprint
    one = client.decode(messages[1])  # a single message works too
    np.testing.assert_allclose(one.x, expected[30:60], atol=1e-6)


def test_decode_float16(client: Client, local: Model, digits_x: np.ndarray) -> None:
    messages = list(local.encode_codes(digits_x))
    result = client.decode(messages, output_dtype="float16")
    assert result.x.dtype == np.float16 and result.x.shape == digits_x.shape
    expected = local.decode(local.encode(digits_x))
    np.testing.assert_allclose(result.x.astype(np.float32), expected, atol=2e-3)
    with pytest.raises(InputError, match="output_dtype"):
        client.decode(messages, output_dtype="int8")


def test_decode_errors_raise_the_servers_class(
    client: Client, local: Model, digits_x: np.ndarray
) -> None:
    bad = local.to_codes(local.encode(digits_x[:3]))
    bad.model_name, bad.fingerprint = NAME, "0" * 16
    with pytest.raises(FingerprintMismatch, match="0000000000000000"):
        client.decode(bad)
    with pytest.raises(ModelNotFound, match="nope"):
        client.encode("nope", digits_x[:2])


# -- DecodeStream -------------------------------------------------------------------------
def _with_bad_middle(local: Model, x: np.ndarray) -> list[codec_pb2.Codes]:
    messages = list(local.encode_codes(x, chunk=40))  # 40 + 40 + 20
    bad = codec_pb2.Codes()
    bad.CopyFrom(messages[1])
    bad.model_name, bad.fingerprint = NAME, "f" * 16
    return [messages[0], bad, messages[2]]


def _check_stream(results: list[StreamResult], local: Model, x: np.ndarray) -> None:
    assert sorted(r.id for r in results) == ["0", "1", "2"]
    by_id = {r.id: r for r in results}
    expected = local.decode(local.encode(x))
    np.testing.assert_allclose(by_id["0"].unwrap(), expected[:40], atol=1e-6)
    np.testing.assert_allclose(by_id["2"].unwrap(), expected[80:], atol=1e-6)
    assert by_id["0"].model_version == "1" and by_id["0"].fingerprint == local.fingerprint
    failed = by_id["1"]
    assert not failed.ok and failed.x is None and failed.error is not None
    assert failed.error.status == "FAILED_PRECONDITION"
    assert isinstance(failed.error, FingerprintMismatch)  # the server named the class
    assert "ffffffffffffffff" in str(failed.error)
    with pytest.raises(type(failed.error)):
        failed.unwrap()


def test_decode_stream_ids_and_per_item_error(
    client: Client, local: Model, digits_x: np.ndarray
) -> None:
    messages = _with_bad_middle(local, digits_x)
    results = list(client.decode_stream(iter(messages)))  # a one-shot iterator is enough
    _check_stream(results, local, digits_x)
    f16 = list(client.decode_stream(messages[::2], output_dtype="float16"))
    assert [r.unwrap().dtype for r in f16] == [np.float16, np.float16]


def test_decode_stream_raises_the_inputs_error_after_the_answers(
    client: Client, address: str, local: Model, digits_x: np.ndarray
) -> None:
    messages = list(local.encode_codes(digits_x, chunk=50))

    def broken() -> Iterator[codec_pb2.Codes]:
        yield messages[0]
        raise InputError("sensor unplugged")

    got: list[StreamResult] = []
    with pytest.raises(InputError, match="sensor unplugged"):
        got.extend(client.decode_stream(broken()))
    assert [r.id for r in got] == ["0"] and got[0].ok

    async def abroken() -> AsyncIterator[codec_pb2.Codes]:
        yield messages[0]
        raise InputError("sensor unplugged")

    async def run() -> list[StreamResult]:
        out: list[StreamResult] = []
        async with AsyncClient(address) as c:
            with pytest.raises(InputError, match="sensor unplugged"):
                async for r in c.decode_stream(abroken()):
                    out.append(r)
        return out

    assert [r.id for r in asyncio.run(run())] == ["0"]


# -- Encode, discovery, health ------------------------------------------------------------
def test_encode_on_server_equals_local(client: Client, local: Model, digits_x: np.ndarray) -> None:
    codes = client.encode(NAME, digits_x)
    assert codes.fingerprint == local.fingerprint and codes.count == len(digits_x)
    np.testing.assert_allclose(tensor_to_array(codes.tensor), local.encode(digits_x), atol=1e-6)
    assert client.encode(NAME, digits_x[:5], version="1").count == 5


def test_models_and_health(client: Client, local: Model) -> None:
    (info,) = client.list_models()
    assert (info.name, info.version, info.fingerprint, info.latest) == (
        NAME,
        "1",
        local.fingerprint,
        True,
    )
    assert json.loads(info.manifest_json)["fingerprint"] == local.fingerprint
    assert client.get_model(NAME).version == "1"
    assert client.get_model("", fingerprint=local.fingerprint).name == NAME
    with pytest.raises(ModelNotFound):
        client.get_model(NAME, "7")
    assert client.health() == "SERVING"
    assert client.health("latentwire.v1.Codec") == "SERVING"
    assert client.health("no.such.Service") == "SERVICE_UNKNOWN"


# -- FetchEncoder -------------------------------------------------------------------------
def test_fetch_encoder_writes_a_loadable_edge_package(
    client: Client, tmp_path: Path, digits_x: np.ndarray
) -> None:
    out = client.fetch_encoder(NAME, tmp_path / "edge" / "digits")
    assert sorted(p.name for p in out.iterdir()) == ["encoder.onnx", "manifest.json"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left
    edge = Model(out, providers="cpu", roles=("encoder",))
    server_codes = client.encode(NAME, digits_x)
    np.testing.assert_array_equal(edge.encode(digits_x), tensor_to_array(server_codes.tensor))
    with pytest.raises(PackageError, match="not empty"):
        client.fetch_encoder(NAME, out)
    (tmp_path / "empty").mkdir()  # an existing empty folder is fine
    assert client.fetch_encoder(NAME, tmp_path / "empty", version="1") == tmp_path / "empty"
    (tmp_path / "file").write_text("x")
    with pytest.raises(PackageError, match="not a folder"):
        client.fetch_encoder(NAME, tmp_path / "file")


def test_fetch_encoder_refuses_damaged_bytes(client: Client, tmp_path: Path) -> None:
    resp = client._call(client._stub.FetchEncoder, codec_pb2.FetchEncoderRequest(name=NAME), 10)
    good = bytes(resp.encoder_onnx)
    resp.encoder_onnx = good[:-1] + bytes([good[-1] ^ 1])
    with pytest.raises(IntegrityError, match="transfer was damaged"):
        client_mod._write_encoder_package(resp, tmp_path / "a")
    resp.sha256 = hashlib.sha256(resp.encoder_onnx).hexdigest()  # a server that lies along
    with pytest.raises(IntegrityError, match="manifest expects"):
        client_mod._write_encoder_package(resp, tmp_path / "b")
    assert not list(tmp_path.iterdir())  # nothing written


# -- retries ------------------------------------------------------------------------------
def test_unavailable_is_retried_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    delays: list[float] = []
    monkeypatch.setattr(client_mod, "_sleep", delays.append)
    with Client(f"127.0.0.1:{free_port()}", retries=2, backoff=0.05, timeout=10) as c:
        with pytest.raises(Unavailable):
            c.list_models()
        assert len(delays) == 2
        for i, d in enumerate(delays):  # exponential, with jitter of +-50%
            assert 0.5 * 0.05 * 2**i <= d <= 1.5 * 0.05 * 2**i
        delays.clear()
        with pytest.raises(Unavailable):
            list(c.decode_stream([codec_pb2.Codes()]))
        assert len(delays) == 2


@pytest.fixture()
def fake() -> Iterator[tuple[str, dict[str, Any]]]:
    """A stand-in Codec server whose Decode answers UNAVAILABLE `unavailable` times (naming
    the class as the real server does), then sleeps `sleep` seconds and answers zeros."""
    state: dict[str, Any] = {"unavailable": 0, "sleep": 0.0, "calls": 0}

    def decode(req: codec_pb2.DecodeRequest, context: Any) -> codec_pb2.DecodeResponse:
        state["calls"] += 1
        if state["unavailable"] > 0:
            state["unavailable"] -= 1
            context.set_trailing_metadata((("latentwire-error", "Unavailable"),))
            context.abort(grpc.StatusCode.UNAVAILABLE, "still loading its models")
        time.sleep(state["sleep"])
        zeros = np.zeros((req.codes.count, 2), np.float32)
        return codec_pb2.DecodeResponse(id=req.id, reconstruction=array_to_tensor(zeros))

    handler = grpc.unary_unary_rpc_method_handler(
        decode,
        request_deserializer=codec_pb2.DecodeRequest.FromString,
        response_serializer=codec_pb2.DecodeResponse.SerializeToString,
    )
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("latentwire.v1.Codec", {"Decode": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", state
    finally:
        server.stop(0)


def test_server_unavailable_is_retried_until_it_answers(
    fake: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, state = fake
    delays: list[float] = []
    monkeypatch.setattr(client_mod, "_sleep", delays.append)
    codes = codec_pb2.Codes(count=3)
    state["unavailable"] = 2
    with Client(address, retries=3, backoff=0.01) as c:
        assert c.decode(codes).x.shape == (3, 2)
    assert state["calls"] == 3 and len(delays) == 2
    state.update(unavailable=10, calls=0)
    delays.clear()
    with Client(address, retries=2, backoff=0.01) as c, pytest.raises(Unavailable, match="still"):
        c.decode(codes)
    assert state["calls"] == 3 and len(delays) == 2


def test_deadline(fake: tuple[str, dict[str, Any]]) -> None:
    address, state = fake
    state["sleep"] = 1.0
    with Client(address, timeout=0.1) as c:
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            c.decode(codec_pb2.Codes(count=1))
        with pytest.raises(DeadlineExceeded):
            c.decode(codec_pb2.Codes(count=1), timeout=0.05)  # per call
        assert time.monotonic() - t0 < 0.9


def test_other_errors_are_not_retried(
    client: Client, digits_x: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays: list[float] = []
    monkeypatch.setattr(client_mod, "_sleep", delays.append)
    with pytest.raises(ModelNotFound):
        client.encode("nope", digits_x[:1])
    assert delays == []


def test_retry_reaches_a_server_that_comes_up(
    repo: Path,
    local: Model,
    digits_x: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
    frontend: Any,
) -> None:
    """The stream fails before the server answers anything, so it is replayed whole."""
    port = free_port()
    started: list[Any] = []
    real_sleep = client_mod._sleep

    def sleep_and_start(seconds: float) -> None:
        if not started:
            from latentwire.runtime.server.app import ServeConfig, Server

            config = ServeConfig(
                models=repo, host="127.0.0.1", port=port, poll_seconds=0, frontend=frontend
            )
            srv = Server(config)
            srv.start()
            started.append(srv)
        real_sleep(seconds)

    monkeypatch.setattr(client_mod, "_sleep", sleep_and_start)
    try:
        with Client(f"127.0.0.1:{port}", retries=8, backoff=0.02, timeout=10) as c:
            results = list(c.decode_stream(_with_bad_middle(local, digits_x)))
        assert started
        _check_stream(results, local, digits_x)
    finally:
        for srv in started:
            srv.stop(grace=0)


def test_stream_requests_not_answered_are_replayed() -> None:
    requests = client_mod._Requests((codec_pb2.Codes(count=i) for i in range(6)), "float16")
    first = iter(requests)
    assert [next(first).id, next(first).id] == ["0", "1"]
    assert requests.restart()
    assert next(first, None) is None  # the abandoned attempt stops
    second = iter(requests)
    sent = [next(second) for _ in range(4)]
    assert [(r.id, r.codes.count, r.output_dtype) for r in sent] == [
        ("0", 0, "float16"),
        ("1", 1, "float16"),
        ("2", 2, "float16"),
        ("3", 3, "float16"),
    ]
    assert requests.answered("0") and requests.answered("2")
    assert not requests.answered("0")  # a second answer to an id is a duplicate
    assert requests.unanswered == 2
    assert requests.restart()  # after answers too: what is unanswered goes again, in order
    third = iter(requests)
    assert [next(third).id for _ in range(4)] == ["1", "3", "4", "5"]
    assert next(third, None) is None
    for i in ("1", "3", "4", "5"):
        assert requests.answered(i)
    assert requests.unanswered == 0
    requests.check_complete()


def test_a_stream_closed_with_requests_unanswered_raises() -> None:
    requests = client_mod._Requests([codec_pb2.Codes(count=1)] * 3, "float32")
    assert [r.id for r in requests] == ["0", "1", "2"]
    assert requests.answered("1")
    with pytest.raises(ServerError, match=r"without answering 2 request\(s\) \(ids 0, 2\)"):
        requests.check_complete()


# -- asyncio ------------------------------------------------------------------------------
def test_async_client(address: str, local: Model, digits_x: np.ndarray) -> None:
    messages = _with_bad_middle(local, digits_x)

    async def agen() -> AsyncIterator[codec_pb2.Codes]:
        for m in messages:
            yield m

    async def run() -> tuple[Any, list[StreamResult], list[StreamResult], str, Any]:
        async with AsyncClient(address, timeout=10) as c:
            decoded = await c.decode(list(local.encode_codes(digits_x, chunk=30)))
            from_list = [r async for r in c.decode_stream(messages)]
            from_agen = [r async for r in c.decode_stream(agen())]
            health = await c.health()
            codes = await c.encode(NAME, digits_x)
            try:
                await c.get_model("nope")
            except ModelNotFound as exc:
                missing: Any = exc
            return decoded, from_list, from_agen, health, (codes, missing)

    decoded, from_list, from_agen, health, (codes, missing) = asyncio.run(run())
    np.testing.assert_allclose(decoded.x, local.decode(local.encode(digits_x)), atol=1e-6)
    _check_stream(from_list, local, digits_x)
    _check_stream(from_agen, local, digits_x)
    assert health == "SERVING" and isinstance(missing, ModelNotFound)
    np.testing.assert_allclose(tensor_to_array(codes.tensor), local.encode(digits_x), atol=1e-6)


def test_async_fetch_encoder(address: str, tmp_path: Path) -> None:
    async def run() -> Path:
        async with AsyncClient(address) as c:
            return await c.fetch_encoder(NAME, tmp_path / "edge")

    out = asyncio.run(run())
    assert Model(out, providers="cpu", roles=("encoder",)).name == "digits-test"


# -- token and TLS ------------------------------------------------------------------------
def test_bearer_token(repo: Path, digits_x: np.ndarray, serve: Any) -> None:
    with serve(repo, token="s3cret", warmup=False) as srv:
        target = f"127.0.0.1:{srv.port}"
        with Client(target) as c:
            assert c.health() == "SERVING"  # health checks need no token
            with pytest.raises(Unauthenticated, match="missing"):
                c.list_models()
        with Client(target, token="wrong") as c, pytest.raises(Unauthenticated, match="wrong"):
            c.list_models()
        with Client(target, token="s3cret") as c:
            assert c.encode(NAME, digits_x[:2]).count == 2


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_with_token(repo: Path, tmp_path: Path, digits_x: np.ndarray) -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=latentwire test CA", cwd=tmp_path)  # fmt: skip
    _openssl("req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=decoder",
             cwd=tmp_path)  # fmt: skip
    (tmp_path / "san.cnf").write_text("subjectAltName=DNS:decoder.test\n")
    _openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "srv.pem", "-days", "1", "-extfile", "san.cnf",
             cwd=tmp_path)  # fmt: skip
    ca = (tmp_path / "ca.pem").read_bytes()
    with running_server(
        repo, tls_cert=tmp_path / "srv.pem", tls_key=tmp_path / "srv.key", token="t0k",
        warmup=False,
    ) as srv:  # fmt: skip
        target = f"127.0.0.1:{srv.port}"
        with Client(
            target, root_certificates=ca, token="t0k", server_name_override="decoder.test"
        ) as c:
            assert c.encode(NAME, digits_x[:3]).count == 3
        no_token = Client(target, root_certificates=ca, server_name_override="decoder.test")
        with no_token as c, pytest.raises(Unauthenticated):
            c.list_models()
        with Client(target, timeout=5, retries=0) as c, pytest.raises(Unavailable):
            c.list_models()  # plaintext to a TLS port


# -- the command line ---------------------------------------------------------------------
def test_cli_send(
    address: str,
    digits_pkg: Path,
    local: Model,
    digits_x: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    np.save(tmp_path / "x.npy", digits_x)
    expected = local.decode(local.encode(digits_x))
    base = ["send", "--server", address, "--model", str(digits_pkg), str(tmp_path / "x.npy")]
    assert main([*base, "--out", str(tmp_path / "r.npy"), "--chunk", "30"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "r.npy"), expected, atol=1e-6)
    err = capsys.readouterr().err
    assert "sent 100 samples" in err and "4 message(s)" in err
    assert "25,600 raw float32 bytes" in err  # 100 x 64 x 4
    assert f"decoded by {NAME} version 1" in err and "PSNR" in err and "round trip" in err

    out16 = tmp_path / "r16.npy"
    assert main([*base, "--out", str(out16), "--stream", "--output-dtype", "float16"]) == 0
    r16 = np.load(out16)
    assert r16.dtype == np.float16
    np.testing.assert_allclose(r16.astype(np.float32), expected, atol=2e-3)
    assert "over one stream" in capsys.readouterr().err

    # the output is checked before any work; a server nobody listens on is one line
    assert main([*base, "--out", str(tmp_path / "no" / "r.npy")]) == 1
    assert "does not exist" in error_line(capsys)
    dead = ["send", "--server", f"127.0.0.1:{free_port()}", "--timeout", "0.5"]
    assert main([*dead, "--model", str(digits_pkg), str(tmp_path / "x.npy")]) == 1
    assert error_line(capsys)
    with pytest.raises(SystemExit) as exc:
        main([*base, "--cert", str(tmp_path / "x.npy")])
    assert exc.value.code == 2


def test_cli_fetch_encoder_then_send(
    address: str,
    local: Model,
    digits_x: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "edge"
    assert main(["fetch-encoder", "--server", address, "--name", NAME, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert local.fingerprint in err and "encoder.onnx" in err and str(out) in err
    assert sorted(p.name for p in out.iterdir()) == ["encoder.onnx", "manifest.json"]

    # the fetched encoder-only package is all an edge device needs to send
    np.savetxt(tmp_path / "x.csv", digits_x, delimiter=",")
    assert main(["send", "--server", address, "--model", str(out), str(tmp_path / "x.csv"),
                 "--out", str(tmp_path / "r.csv")]) == 0  # fmt: skip
    np.testing.assert_allclose(
        np.loadtxt(tmp_path / "r.csv", delimiter=","),
        local.decode(local.encode(digits_x)),
        atol=1e-5,
    )
    capsys.readouterr()
    assert main(["fetch-encoder", "--server", address, "--name", NAME, "--out", str(out)]) == 1
    assert "not empty" in error_line(capsys)
    assert main(["fetch-encoder", "--server", address, "--name", "nope", "--out",
                 str(tmp_path / "x2")]) == 1  # fmt: skip
    assert "nope" in error_line(capsys)
