"""The decoding server (`latentwire serve`) over raw gRPC: KServe V2 through tritonclient,
health, reflection, the latentwire.v1.Codec methods, Prometheus metrics and batching.

Every server here is in-process on a free port (tests/conftest.py). The reference for
every numerical answer is the same package decoded locally with `latentwire.runtime.load`.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from latentwire.runtime import Model
from latentwire.runtime._proto.v1 import codec_pb2, codec_pb2_grpc
from latentwire.runtime.codes import array_to_tensor, tensor_to_array
from latentwire.runtime.server.app import ServeConfig, Server
from latentwire.runtime.server.batcher import BatchPolicy

from .conftest import concurrently

NAME = "digits"  # the served name is the repository folder (the manifest says "digits-test")


# -- helpers ------------------------------------------------------------------------------
@pytest.fixture()
def channel(server: Any) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture()
def stub(channel: grpc.Channel) -> codec_pb2_grpc.CodecStub:
    return codec_pb2_grpc.CodecStub(channel)


def _z(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)


def _decode(stub: codec_pb2_grpc.CodecStub, model: Model, z: np.ndarray, **kw: Any) -> Any:
    return stub.Decode(codec_pb2.DecodeRequest(codes=model.to_codes(z), **kw), timeout=10)


def _health(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(response.status)


# -- KServe V2 through tritonclient -------------------------------------------------------
@pytest.fixture()
def triton(server: Any) -> Iterator[Any]:
    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    yield client
    client.close()


def _v2_input(name: str, array: np.ndarray) -> Any:
    import tritonclient.grpc as tc

    inp = tc.InferInput(name, list(array.shape), "FP32")
    inp.set_data_from_numpy(array)
    return inp


def test_v2_health_and_readiness(triton: Any) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("digits.decoder")
    assert triton.is_model_ready("digits.encoder")
    assert triton.is_model_ready("digits.decoder", "1")
    assert not triton.is_model_ready("digits.decoder", "2")
    assert not triton.is_model_ready("nosuch.decoder")
    assert not triton.is_model_ready("digits")  # no role suffix


def test_v2_model_metadata(triton: Any) -> None:
    meta = triton.get_model_metadata("digits.decoder")
    assert meta.name == "digits.decoder"
    assert list(meta.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("z", "FP32", [-1, 8])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("x_hat", "FP32", [-1, 64])
    ]
    enc = triton.get_model_metadata("digits.encoder")
    assert [(t.name, list(t.shape)) for t in enc.inputs] == [("x", [-1, 64])]
    assert [(t.name, list(t.shape)) for t in enc.outputs] == [("z", [-1, 8])]


def test_v2_decoder_infer_equals_local_decode(triton: Any, local: Model) -> None:
    z = _z(5)
    result = triton.infer("digits.decoder", [_v2_input("z", z)], request_id="r-1")
    x_hat = result.as_numpy("x_hat")
    assert x_hat.shape == (5, 64) and x_hat.dtype == np.float32
    np.testing.assert_allclose(x_hat, local.decode(z), atol=1e-6)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (
        "digits.decoder",
        "1",
        "r-1",
    )


def test_v2_encoder_infer_equals_local_encode(
    triton: Any, local: Model, digits_x: np.ndarray
) -> None:
    x = digits_x[:5]
    result = triton.infer("digits.encoder", [_v2_input("x", x)])
    np.testing.assert_allclose(result.as_numpy("z"), local.encode(x), atol=1e-6)


def test_v2_model_version_empty_means_latest_and_explicit_works(triton: Any, local: Model) -> None:
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    z = _z(3, seed=1)
    for version in ("", "1"):
        result = triton.infer("digits.decoder", [_v2_input("z", z)], model_version=version)
        assert result.get_response().model_version == "1"
        np.testing.assert_allclose(result.as_numpy("x_hat"), local.decode(z), atol=1e-6)
    with pytest.raises(InferenceServerException) as info:
        triton.infer("digits.decoder", [_v2_input("z", z)], model_version="2")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    # an explicitly requested output by its right name is fine
    out = tc.InferRequestedOutput("x_hat")
    result = triton.infer("digits.decoder", [_v2_input("z", z)], outputs=[out])
    np.testing.assert_allclose(result.as_numpy("x_hat"), local.decode(z), atol=1e-6)


def test_v2_typed_contents_are_accepted(channel: grpc.Channel, local: Model) -> None:
    """Clients that send `contents.fp32_contents` instead of raw bytes get the same answer."""
    from latentwire.runtime._proto.kserve.v2 import inference_pb2 as pb

    infer = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    z = _z(4, seed=2)
    tensor = pb.ModelInferRequest.InferInputTensor(name="z", datatype="FP32", shape=[4, 8])
    tensor.contents.fp32_contents.extend(z.ravel().tolist())
    response = infer(pb.ModelInferRequest(model_name="digits.decoder", inputs=[tensor]), timeout=10)
    assert list(response.outputs[0].shape) == [4, 64]
    x_hat = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(4, 64)
    np.testing.assert_allclose(x_hat, local.decode(z), atol=1e-6)


def test_tritonclient_and_our_kserve_messages_coexist() -> None:
    """Both define the KServe V2 messages; ours live in another proto package, so they load
    into one process in either order, and their wire bytes are interchangeable."""
    import tritonclient.grpc  # noqa: F401
    from tritonclient.grpc import service_pb2 as triton_pb

    from latentwire.runtime._proto.kserve.v2 import inference_pb2 as ours

    assert triton_pb.ModelInferRequest.DESCRIPTOR.full_name == "inference.ModelInferRequest"
    assert ours.ModelInferRequest.DESCRIPTOR.full_name == "latentwire.kserve.v2.ModelInferRequest"
    msg = ours.ModelInferRequest(model_name="digits.decoder", model_version="1", id="x")
    msg.inputs.add(name="z", datatype="FP32", shape=[1, 8])
    msg.raw_input_contents.append(b"\0" * 32)
    msg.parameters["fingerprint"].string_param = "abc"
    theirs = triton_pb.ModelInferRequest.FromString(msg.SerializeToString())
    assert (theirs.model_name, theirs.model_version, theirs.id) == ("digits.decoder", "1", "x")
    assert theirs.inputs[0].name == "z" and list(theirs.inputs[0].shape) == [1, 8]
    assert theirs.parameters["fingerprint"].string_param == "abc"
    assert theirs.SerializeToString(deterministic=True) == msg.SerializeToString(deterministic=True)
    # the order this process imported them in is whatever pytest did; check both orders fresh
    ours_mod = "latentwire.runtime._proto.kserve.v2.inference_pb2"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", f"import {a}; import {b}"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for a, b in ((ours_mod, "tritonclient.grpc"), ("tritonclient.grpc", ours_mod))
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err


# -- health --------------------------------------------------------------------------------
def test_health_serving_after_start(channel: grpc.Channel) -> None:
    for service in ("", "latentwire.v1.Codec", "inference.GRPCInferenceService"):
        assert _health(channel, service) == health_pb2.HealthCheckResponse.SERVING


def test_health_follows_load_and_stop(repo: Path, local: Model, frontend: Any) -> None:
    config = ServeConfig(models=repo, host="127.0.0.1", port=0, poll_seconds=0, frontend=frontend)
    srv = Server(config)
    port = srv.start(load=False)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = codec_pb2_grpc.CodecStub(ch)
            assert _health(ch) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert _health(ch, "latentwire.v1.Codec") == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as info:
                _decode(stub, local, _z(2))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "loading" in (info.value.details() or "")
            ready = ch.unary_unary(
                "/inference.GRPCInferenceService/ServerReady",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=_v2_pb().ServerReadyResponse.FromString,
            )
            assert ready(_v2_pb().ServerReadyRequest(), timeout=5).ready is False

            srv.load()
            assert _health(ch) == health_pb2.HealthCheckResponse.SERVING
            assert ready(_v2_pb().ServerReadyRequest(), timeout=5).ready is True
            response = _decode(stub, local, _z(2))
            np.testing.assert_allclose(
                tensor_to_array(response.reconstruction), local.decode(_z(2)), atol=1e-6
            )
    finally:
        srv.stop(grace=1.0)
    # the port is closed now; ask the health servicer itself
    request = health_pb2.HealthCheckRequest(service="")
    assert srv.health.Check(request, _FakeContext()).status == (
        health_pb2.HealthCheckResponse.NOT_SERVING
    )
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError) as info:
        _health(ch)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def _v2_pb() -> Any:
    from latentwire.runtime._proto.kserve.v2 import inference_pb2

    return inference_pb2


class _FakeContext:
    def set_code(self, code: Any) -> None:
        raise AssertionError(f"health servicer answered {code}")


# -- reflection ----------------------------------------------------------------------------
def test_reflection_lists_services_and_resolves_v2(channel: grpc.Channel) -> None:
    from google.protobuf import descriptor_pool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    assert {
        "latentwire.v1.Codec",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
    } <= services
    file = db.FindFileContainingSymbol("inference.GRPCInferenceService")
    assert file.package == "inference"
    pool = descriptor_pool.DescriptorPool(db)
    v2 = pool.FindServiceByName("inference.GRPCInferenceService")
    methods = {m.name: m for m in v2.methods}
    assert {"ServerLive", "ServerReady", "ModelReady", "ModelMetadata", "ModelInfer"} <= set(
        methods
    )
    infer_in = methods["ModelInfer"].input_type
    assert infer_in.full_name == "inference.ModelInferRequest"
    assert "raw_input_contents" in infer_in.fields_by_name
    assert infer_in.fields_by_name["inputs"].message_type.full_name == (
        "inference.ModelInferRequest.InferInputTensor"
    )
    codec = pool.FindServiceByName("latentwire.v1.Codec")
    assert {"Decode", "DecodeStream", "Encode", "GetModel", "ListModels", "FetchEncoder"} <= {
        m.name for m in codec.methods
    }


# -- latentwire.v1.Codec ------------------------------------------------------------------
def test_decode_float32_equals_local(stub: codec_pb2_grpc.CodecStub, local: Model) -> None:
    z = _z(5)
    for dtype in ("", "float32"):
        response = _decode(stub, local, z, id="a", output_dtype=dtype)
        assert (response.id, response.model_name, response.model_version) == ("a", NAME, "1")
        assert response.fingerprint == local.fingerprint
        assert not response.HasField("error")
        x_hat = tensor_to_array(response.reconstruction)
        assert x_hat.dtype == np.float32 and x_hat.shape == (5, 64)
        np.testing.assert_allclose(x_hat, local.decode(z), atol=1e-6)


def test_decode_float16(stub: codec_pb2_grpc.CodecStub, local: Model) -> None:
    z = _z(5, seed=3)
    response = _decode(stub, local, z, output_dtype="float16")
    assert response.reconstruction.dtype == "float16"
    x_hat = tensor_to_array(response.reconstruction)
    assert x_hat.dtype == np.float16 and x_hat.shape == (5, 64)
    assert len(response.reconstruction.data) == 5 * 64 * 2
    expected = local.decode(z)
    # float16 keeps 11 significant bits: values in [0, 1] are within 2**-11 of the float32 ones
    np.testing.assert_allclose(x_hat.astype(np.float32), expected, atol=2**-11, rtol=0)


def test_decode_stream_acknowledges_every_id_and_survives_a_bad_request(
    stub: codec_pb2_grpc.CodecStub, local: Model, other_local: Model
) -> None:
    zs = [_z(i + 1, seed=10 + i) for i in range(5)]
    bad = other_local.to_codes(zs[2])  # another encoder's codes...
    bad.model_name = NAME  # ...naming the served model (see test_server_errors for the rest)

    def requests() -> Iterator[codec_pb2.DecodeRequest]:
        for i, z in enumerate(zs):
            codes = bad if i == 2 else local.to_codes(z)
            yield codec_pb2.DecodeRequest(id=f"req-{i}", codes=codes)

    responses = list(stub.DecodeStream(requests(), timeout=20))
    assert [r.id for r in responses] == [f"req-{i}" for i in range(5)]
    for i, (r, z) in enumerate(zip(responses, zs, strict=True)):
        if i == 2:
            assert r.HasField("error")
            assert r.error.code == "FAILED_PRECONDITION", r.error
            assert r.error.kind == "FingerprintMismatch"
            assert other_local.fingerprint in r.error.message
            assert local.fingerprint in r.error.message  # what the server has loaded
            assert len(r.reconstruction.data) == 0
        else:
            assert not r.HasField("error"), r.error
            assert r.model_version == "1"
            np.testing.assert_allclose(
                tensor_to_array(r.reconstruction), local.decode(z), atol=1e-6
            )


def test_encode_equals_local(
    stub: codec_pb2_grpc.CodecStub, local: Model, digits_x: np.ndarray
) -> None:
    x = digits_x[:7]
    for version in ("", "1"):
        response = stub.Encode(
            codec_pb2.EncodeRequest(
                model_name=NAME, model_version=version, inputs=array_to_tensor(x)
            ),
            timeout=10,
        )
        assert response.model_version == "1"
        codes = response.codes
        assert codes.fingerprint == local.fingerprint and codes.count == 7
        np.testing.assert_allclose(local.from_codes(codes), local.encode(x), atol=1e-6)
    # and the codes round-trip through Decode
    decoded = stub.Decode(codec_pb2.DecodeRequest(codes=codes), timeout=10)
    np.testing.assert_allclose(
        tensor_to_array(decoded.reconstruction), local.decode(local.encode(x)), atol=1e-5
    )


def test_list_get_and_fetch_encoder(
    stub: codec_pb2_grpc.CodecStub, local: Model, digits_pkg: Path
) -> None:
    manifest = (digits_pkg / "manifest.json").read_text()
    listed = stub.ListModels(codec_pb2.ListModelsRequest(), timeout=5).models
    assert [(m.name, m.version, m.fingerprint, m.latest) for m in listed] == [
        (NAME, "1", local.fingerprint, True)
    ]
    assert listed[0].manifest_json == manifest
    for request in (
        codec_pb2.GetModelRequest(name=NAME),
        codec_pb2.GetModelRequest(name=NAME, version="1"),
        codec_pb2.GetModelRequest(fingerprint=local.fingerprint),
    ):
        info = stub.GetModel(request, timeout=5)
        assert (info.name, info.version, info.fingerprint) == (NAME, "1", local.fingerprint)
        assert info.manifest_json == manifest
    fetched = stub.FetchEncoder(codec_pb2.FetchEncoderRequest(name=NAME), timeout=5)
    onnx_bytes = (digits_pkg / "encoder.onnx").read_bytes()
    assert fetched.encoder_onnx == onnx_bytes
    assert fetched.sha256 == hashlib.sha256(fetched.encoder_onnx).hexdigest()
    assert fetched.model.fingerprint == local.fingerprint
    assert fetched.model.manifest_json == manifest


def test_get_model_by_fingerprint_accepts_the_package_name(
    stub: codec_pb2_grpc.CodecStub, local: Model
) -> None:
    """Codes carry the package's own name ("digits-test"), which Decode routing accepts
    beside the served name ("digits"); GetModel with the name and fingerprint that codes
    carry must find the same model."""
    for name in (NAME, local.name):
        request = codec_pb2.GetModelRequest(name=name, fingerprint=local.fingerprint)
        info = stub.GetModel(request, timeout=5)
        assert (info.name, info.version, info.fingerprint) == (NAME, "1", local.fingerprint)


# -- metrics -------------------------------------------------------------------------------
def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text: str = r.read().decode()
    return text


def _value(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name` with exactly these labels in an exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"{name}{labels} not in the metrics:\n{text}")


def test_metrics_endpoint(repo: Path, local: Model, serve: Any) -> None:
    with serve(repo, metrics_port=0) as srv:
        assert srv.metrics_port
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            stub = codec_pb2_grpc.CodecStub(ch)
            sent = 0
            for i in range(3):
                request = codec_pb2.DecodeRequest(id=str(i), codes=local.to_codes(_z(i + 1)))
                sent += request.ByteSize()
                stub.Decode(request, timeout=10)
            bad = local.to_codes(_z(2))
            bad.fingerprint = "0123456789abcdef"
            bad.model_name = NAME
            sent += codec_pb2.DecodeRequest(codes=bad).ByteSize()
            with pytest.raises(grpc.RpcError):
                stub.Decode(codec_pb2.DecodeRequest(codes=bad), timeout=10)
        text = _scrape(srv.metrics_port)
    assert _value(text, "latentwire_requests_total", method="Decode", code="OK") == 3
    failed = _value(text, "latentwire_requests_total", method="Decode", code="FAILED_PRECONDITION")
    assert failed == 1
    assert _value(text, "latentwire_request_seconds_count", method="Decode") == 4
    assert _value(text, "latentwire_bytes_received_total", method="Decode") == sent
    assert _value(text, "latentwire_bytes_sent_total", method="Decode") > 3 * 64 * 4
    graph = {"model": "digits", "version": "1", "role": "decoder"}
    assert _value(text, "latentwire_batch_samples_count", **graph) == 3
    assert _value(text, "latentwire_batch_samples_sum", **graph) == 1 + 2 + 3
    assert _value(text, "latentwire_batch_requests_count", **graph) == 3
    assert _value(text, "latentwire_queue_seconds_count", **graph) == 3
    assert _value(text, "latentwire_models_loaded") == 1


# -- batching ------------------------------------------------------------------------------
def _batch_counts(srv: Any) -> tuple[float, float, float]:
    """(batches, samples, batches of exactly one sample) of digits/1's decoder."""
    labels = {"model": "digits", "version": "1", "role": "decoder"}
    get = srv.metrics.registry.get_sample_value
    count = get("latentwire_batch_samples_count", labels) or 0.0
    total = get("latentwire_batch_samples_sum", labels) or 0.0
    ones = get("latentwire_batch_samples_bucket", {**labels, "le": "1.0"}) or 0.0
    return count, total, ones


def _concurrent_decodes(port: int, local: Model, n: int) -> list[tuple[np.ndarray, Any]]:
    zs = [_z(1, seed=100 + i) for i in range(n)]
    calls = [(lambda stub, z=z: _decode(stub, local, z)) for z in zs]
    return list(zip(zs, concurrently(port, calls), strict=True))


def test_batching_coalesces_concurrent_requests(repo: Path, local: Model, serve: Any) -> None:
    with serve(repo, policy=BatchPolicy(max_delay=0.05)) as srv:
        outcomes = _concurrent_decodes(srv.port, local, 16)
        count, total, ones = _batch_counts(srv)
    for z, response in outcomes:
        assert isinstance(response, codec_pb2.DecodeResponse), response
        np.testing.assert_allclose(
            tensor_to_array(response.reconstruction), local.decode(z), atol=1e-6
        )
    assert total == 16
    assert count < 16, "no two requests shared an ONNX Runtime call"
    assert ones < count  # at least one batch held more than one sample


def test_batching_disabled_runs_every_request_alone(repo: Path, local: Model, serve: Any) -> None:
    with serve(repo, policy=BatchPolicy(enabled=False)) as srv:
        outcomes = _concurrent_decodes(srv.port, local, 16)
        count, total, ones = _batch_counts(srv)
    for z, response in outcomes:
        assert isinstance(response, codec_pb2.DecodeResponse), response
        np.testing.assert_allclose(
            tensor_to_array(response.reconstruction), local.decode(z), atol=1e-6
        )
    assert (count, total, ones) == (16, 16, 16)


def test_greedy_batching_never_waits_for_a_lone_request(
    repo: Path, local: Model, serve: Any
) -> None:
    """The default policy (max_delay 0) runs a lone request at once: no queueing delay."""
    with serve(repo) as srv, grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        stub = codec_pb2_grpc.CodecStub(ch)
        for i in range(20):
            z = _z(1, seed=i)
            response = _decode(stub, local, z)
            np.testing.assert_allclose(
                tensor_to_array(response.reconstruction), local.decode(z), atol=1e-6
            )
        labels = {"model": "digits", "version": "1", "role": "decoder"}
        get = srv.metrics.registry.get_sample_value
        count = get("latentwire_queue_seconds_count", labels)
        fast = get("latentwire_queue_seconds_bucket", {**labels, "le": "0.001"})
    assert count == 20
    # even a fixed 1 ms wait would put none of them under 1 ms; allow a few preemptions
    assert fast is not None and fast >= 15, f"only {fast} of 20 lone requests ran within 1 ms"
