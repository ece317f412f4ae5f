"""What issue 10 asked of the server, on both fronts: health never starves and follows the
repository, batches mix only what can share a graph run, one bad request in a batch fails
alone, and the front is chosen (and refused) as documented."""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from latentwire.runtime import Model, load
from latentwire.runtime._proto.kserve.v2 import inference_pb2 as pb
from latentwire.runtime._proto.v1 import codec_pb2, codec_pb2_grpc
from latentwire.runtime.codes import array_to_tensor, tensor_to_array
from latentwire.runtime.errors import Unavailable
from latentwire.runtime.server.app import ServeConfig, Server, choose_frontend
from latentwire.runtime.server.batcher import BatchPolicy

from .conftest import concurrently, error_class, require_native, rpc_fails

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _z(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)


def _health(ch: grpc.Channel, timeout: float = 1.0) -> int:
    stub = health_pb2_grpc.HealthStub(ch)
    return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout).status)


def _server_ready(ch: grpc.Channel) -> bool:
    ready = ch.unary_unary(
        "/inference.GRPCInferenceService/ServerReady",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.ServerReadyResponse.FromString,
    )
    return bool(ready(pb.ServerReadyRequest(), timeout=5).ready)


def _infer(ch: grpc.Channel, z: np.ndarray, timeout: float = 5.0) -> np.ndarray:
    infer = ch.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    request = pb.ModelInferRequest(
        model_name="digits.decoder",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="z", datatype="FP32", shape=z.shape)],
        raw_input_contents=[z.tobytes()],
    )
    reply = infer(request, timeout=timeout)
    return np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(reply.outputs[0].shape)


# -- health ------------------------------------------------------------------------------------
def test_health_answers_within_1s_while_32_decode_streams_sit_idle(
    repo: Path, local: Model, serve: Any
) -> None:
    """32 idle DecodeStreams (twice the default handler threads) starve nothing: health
    says SERVING within 1 s and a ModelInfer gets the right answer meanwhile."""
    with serve(repo) as srv, grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        stub = codec_pb2_grpc.CodecStub(ch)
        feeds: list[queue.Queue[Any]] = []
        answers: list[Any] = []

        def requests(q: queue.Queue[Any]) -> Iterator[codec_pb2.DecodeRequest]:
            while (item := q.get()) is not None:
                yield item

        def hold(q: queue.Queue[Any]) -> None:
            answers.extend(stub.DecodeStream(requests(q), timeout=30))

        threads = []
        for _ in range(32):
            q: queue.Queue[Any] = queue.Queue()
            feeds.append(q)
            threads.append(threading.Thread(target=hold, args=(q,)))
            threads[-1].start()
        try:
            # every stream is open on the server: each answers one request, then idles
            for i, q in enumerate(feeds):
                q.put(codec_pb2.DecodeRequest(id=str(i), codes=local.to_codes(_z(1, i))))
            end = time.monotonic() + 20
            while len(answers) < 32 and time.monotonic() < end:
                time.sleep(0.05)
            assert len(answers) == 32, f"only {len(answers)} of 32 streams answered"
            t0 = time.monotonic()
            assert _health(ch, timeout=1.0) == SERVING
            assert time.monotonic() - t0 < 1.0
            z = _z(3, seed=7)
            np.testing.assert_allclose(_infer(ch, z, timeout=1.0), local.decode(z), atol=1e-6)
        finally:
            for q in feeds:
                q.put(None)
            for t in threads:
                t.join(timeout=10)


def test_an_empty_repository_is_not_serving_until_a_package_appears(
    tmp_path: Path, digits_pkg: Path, local: Model, serve: Any
) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    with serve(root, poll_seconds=0.2) as srv, grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        assert _health(ch) == NOT_SERVING
        assert _server_ready(ch) is False
        shutil.copytree(digits_pkg, root / "digits" / "1")
        end = time.monotonic() + 10
        while _health(ch) != SERVING and time.monotonic() < end:
            time.sleep(0.1)
        assert _health(ch) == SERVING
        assert _server_ready(ch) is True
        z = _z(2)
        np.testing.assert_allclose(_infer(ch, z), local.decode(z), atol=1e-6)
        shutil.rmtree(root / "digits")  # the last model goes: not serving again
        end = time.monotonic() + 10
        while _health(ch) != NOT_SERVING and time.monotonic() < end:
            time.sleep(0.1)
        assert _health(ch) == NOT_SERVING


# -- batching ------------------------------------------------------------------------------
def test_a_bad_request_in_a_batch_fails_alone(repo: Path, local: Model, serve: Any) -> None:
    """Eight requests share a batch (50 ms batching window); the one holding a NaN gets
    INVALID_ARGUMENT naming the index in its own array, the seven others their answers."""
    zs = [_z(3, seed=i) for i in range(8)]
    zs[5] = zs[5].copy()
    zs[5][2, 4] = np.nan
    with serve(repo, policy=BatchPolicy(max_delay=0.05)) as srv:
        calls = [
            (lambda stub, z=z: stub.Decode(codec_pb2.DecodeRequest(codes=local.to_codes(z))))
            for z in zs
        ]
        outcomes = concurrently(srv.port, calls)
        get = srv.metrics.registry.get_sample_value
        labels = {"model": "digits", "version": "1", "role": "decoder"}
        batches = get("latentwire_batch_samples_count", labels)
    for i, (z, outcome) in enumerate(zip(zs, outcomes, strict=True)):
        if i == 5:
            assert isinstance(outcome, grpc.RpcError)
            assert outcome.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "1 NaN/Inf value(s), the first at index (2, 4)" in (outcome.details() or "")
            assert error_class(outcome) == "InputError"
        else:
            assert isinstance(outcome, codec_pb2.DecodeResponse), outcome
            got = tensor_to_array(outcome.reconstruction)
            np.testing.assert_allclose(got, local.decode(z), atol=1e-6)
    assert batches is not None and batches < 7, "the good requests did not share a batch"


def test_images_of_different_sizes_in_one_batching_window(
    tmp_path: Path, image_pkg: Path, serve: Any
) -> None:
    """A conv model takes any multiple of its stride: requests of different sizes arriving
    together are run in separate graph calls, each answered correctly."""
    root = tmp_path / "repo"
    shutil.copytree(image_pkg, root / "img" / "1")
    model = load(image_pkg, providers="cpu")
    rng = np.random.default_rng(0)
    sizes = [(16, 16), (24, 32), (16, 16), (32, 24), (24, 32), (16, 16)]
    images = [rng.random((2, 3, *hw), dtype=np.float32) for hw in sizes]
    with serve(root, policy=BatchPolicy(max_delay=0.05)) as srv:
        calls = [
            (
                lambda stub, x=x: stub.Encode(
                    codec_pb2.EncodeRequest(model_name="img", inputs=array_to_tensor(x))
                )
            )
            for x in images
        ]
        outcomes = concurrently(srv.port, calls)
    for x, outcome in zip(images, outcomes, strict=True):
        assert isinstance(outcome, codec_pb2.EncodeResponse), outcome
        np.testing.assert_array_equal(
            model.from_codes(outcome.codes), model.from_codes(next(model.encode_codes(x)))
        )


# -- malformed bytes and stream limits -------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("/latentwire.v1.Codec/Decode", "DecodeRequest"),
        ("/latentwire.v1.Codec/Encode", "EncodeRequest"),
        ("/inference.GRPCInferenceService/ModelInfer", "ModelInferRequest"),
        ("/latentwire.v1.Codec/GetModel", "GetModelRequest"),
    ],
)
def test_bytes_that_are_no_request_are_invalid_argument(
    server: Any, local: Model, path: str, what: str
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        call = ch.unary_unary(path)
        rpc_fails(
            lambda: call(b"\xff\xff\xff", timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            f"not a valid {what} message",
            kind="InputError",
        )
        z = _z(2)
        np.testing.assert_allclose(_infer(ch, z), local.decode(z), atol=1e-6)


def test_streams_over_the_limit_are_refused(repo: Path, local: Model, serve: Any) -> None:
    with serve(repo, max_streams=2) as srv, grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        stub = codec_pb2_grpc.CodecStub(ch)
        feeds = [queue.Queue[Any]() for _ in range(2)]
        opened: list[Any] = []

        def requests(q: queue.Queue[Any]) -> Iterator[Any]:
            while (item := q.get()) is not None:
                yield item

        streams = [stub.DecodeStream(requests(q), timeout=20) for q in feeds]
        for i, (q, s) in enumerate(zip(feeds, streams, strict=True)):
            q.put(codec_pb2.DecodeRequest(id=str(i), codes=local.to_codes(_z(1))))
            opened.append(next(s))
        assert [r.id for r in opened] == ["0", "1"]
        one = codec_pb2.DecodeRequest(id="x", codes=local.to_codes(_z(1)))
        rpc_fails(
            lambda: list(stub.DecodeStream(iter([one]), timeout=5)),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "--max-streams 2",
            kind="Overloaded",
        )
        feeds[0].put(None)
        assert list(streams[0]) == []
        assert [r.id for r in stub.DecodeStream(iter([one]), timeout=5)] == ["x"]
        feeds[1].put(None)


# -- choosing the front ----------------------------------------------------------------------
CERTS = Path(__file__).parent / "certs"


def test_auto_takes_the_native_front_without_tls(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    require_native()
    caplog.set_level(logging.INFO, logger="latentwire.server")
    srv = Server(ServeConfig(models=repo, host="127.0.0.1", port=0, poll_seconds=0))
    srv.start(load=False)
    try:
        assert srv.frontend == "native"
        assert "native front: pygrpc-native is installed and no TLS was asked for" in caplog.text
    finally:
        srv.stop(grace=0)


def test_auto_falls_back_to_grpcio_for_tls_and_native_refuses_it(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="latentwire.server")
    tls: dict[str, Any] = {"tls_cert": CERTS / "server.pem", "tls_key": CERTS / "server.key"}
    srv = Server(ServeConfig(models=repo, host="127.0.0.1", port=0, poll_seconds=0, **tls))
    srv.start(load=False)
    try:
        assert srv.frontend == "grpcio"
        assert "grpcio front: TLS was asked for and the native front has no TLS" in caplog.text
    finally:
        srv.stop(grace=0)
    with pytest.raises(Unavailable, match="--frontend native does not speak TLS"):
        choose_frontend(ServeConfig(models=repo, frontend="native", **tls))
    assert choose_frontend(ServeConfig(models=repo, frontend="grpcio")) == (
        "grpcio",
        "--frontend grpcio",
    )


def test_native_refused_without_pygrpc_native(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from latentwire.runtime.server import app

    monkeypatch.setattr(app, "native_available", lambda: False)
    with pytest.raises(Unavailable, match=r"pip install 'latentwire\[server\]'"):
        choose_frontend(ServeConfig(models=repo, frontend="native"))
    front, why = choose_frontend(ServeConfig(models=repo))
    assert front == "grpcio" and "pygrpc-native is not installed" in why
