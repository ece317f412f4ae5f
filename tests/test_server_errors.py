"""Errors are part of the interface: every bad request to the decoding server gets the
status code ../shared/DESIGN.md names, a message saying what was expected, the error class
in the trailing metadata key "latentwire-error", and leaves the server answering the next
good request correctly."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from latentwire.runtime import Model
from latentwire.runtime._proto.v1 import codec_pb2, codec_pb2_grpc
from latentwire.runtime.codes import tensor_to_array
from latentwire.runtime.server.batcher import BatchPolicy

from .conftest import concurrently, error_class, rpc_fails, running_server

NAME = "digits"
CERTS = Path(__file__).parent / "certs"


# -- helpers ------------------------------------------------------------------------------
@pytest.fixture()
def stub(server: Any) -> Iterator[codec_pb2_grpc.CodecStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield codec_pb2_grpc.CodecStub(ch)


def _z(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)


def _good_decode(stub: codec_pb2_grpc.CodecStub, local: Model, **kw: Any) -> None:
    """A correct request right after a bad one gets the right answer."""
    z = _z(3, seed=99)
    response = stub.Decode(codec_pb2.DecodeRequest(codes=local.to_codes(z)), timeout=10, **kw)
    np.testing.assert_allclose(tensor_to_array(response.reconstruction), local.decode(z), atol=1e-6)


def _request(codes: codec_pb2.Codes, **kw: Any) -> codec_pb2.DecodeRequest:
    return codec_pb2.DecodeRequest(codes=codes, **kw)


# -- malformed codes: INVALID_ARGUMENT -----------------------------------------------------
def test_tensor_one_byte_short(stub: codec_pb2_grpc.CodecStub, local: Model) -> None:
    codes = local.to_codes(_z(5))
    codes.tensor.data = codes.tensor.data[:-1]
    rpc_fails(
        lambda: stub.Decode(_request(codes), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "needs 160 bytes",
        "got 159",
        kind="CodesError",
    )
    _good_decode(stub, local)


def test_codes_of_the_wrong_width(stub: codec_pb2_grpc.CodecStub, local: Model) -> None:
    codes = local.to_codes(_z(5)[:, :7])  # 7 values per sample, the model expects 8
    rpc_fails(
        lambda: stub.Decode(_request(codes), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "expects 8",
        "7",
        kind="InputError",
    )
    _good_decode(stub, local)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_codes(stub: codec_pb2_grpc.CodecStub, local: Model, value: float) -> None:
    z = _z(4)
    z[2, 5] = value
    rpc_fails(
        lambda: stub.Decode(_request(local.to_codes(z)), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "NaN/Inf",
        "(2, 5)",
        kind="InputError",
    )
    _good_decode(stub, local)


def test_empty_batch(stub: codec_pb2_grpc.CodecStub, local: Model) -> None:
    codes = local.to_codes(np.zeros((0, 8), dtype=np.float32))
    assert codes.count == 0 and list(codes.tensor.shape) == [0, 8]
    rpc_fails(
        lambda: stub.Decode(_request(codes), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "empty batch",
        "at least one sample",
        kind="InputError",
    )
    _good_decode(stub, local)


def test_other_malformed_requests(stub: codec_pb2_grpc.CodecStub, local: Model) -> None:
    bad = grpc.StatusCode.INVALID_ARGUMENT
    decode = stub.Decode
    rpc_fails(lambda: decode(codec_pb2.DecodeRequest(), timeout=10), bad, "no codes")
    counted = local.to_codes(_z(4))
    counted.count = 5
    rpc_fails(lambda: decode(_request(counted), timeout=10), bad, "count=5", "(4, 8)")
    wide = local.to_codes(_z(4))
    wide.tensor.dtype = "float64"
    wide.tensor.data = _z(4).astype(np.float64).tobytes()
    rpc_fails(lambda: decode(_request(wide), timeout=10), bad, "float32", "'float64'")
    huge = local.to_codes(_z(4))
    del huge.tensor.shape[:]
    huge.tensor.shape.extend([1 << 62, 8])
    rpc_fails(lambda: decode(_request(huge), timeout=10), bad, "needs", "got 128")
    negative = local.to_codes(_z(4))
    negative.tensor.shape[0] = -4
    rpc_fails(lambda: decode(_request(negative), timeout=10), bad, "negative")
    fmt = local.to_codes(_z(4))
    fmt.format = "q8"
    rpc_fails(lambda: decode(_request(fmt), timeout=10), bad, "'q8'")
    good = local.to_codes(_z(4))
    rpc_fails(
        lambda: decode(_request(good, output_dtype="float64"), timeout=10),
        bad,
        "float32",
        "float16",
        "'float64'",
        kind="InputError",
    )
    _good_decode(stub, local)


def test_encode_input_of_the_wrong_shape(stub: codec_pb2_grpc.CodecStub, local: Model) -> None:
    from latentwire.runtime.codes import array_to_tensor

    x = np.zeros((3, 63), dtype=np.float32)
    rpc_fails(
        lambda: stub.Encode(
            codec_pb2.EncodeRequest(model_name=NAME, inputs=array_to_tensor(x)), timeout=10
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "expects 64",
        "63",
        kind="InputError",
    )
    _good_decode(stub, local)


# -- unknown model: NOT_FOUND --------------------------------------------------------------
def test_unknown_model(stub: codec_pb2_grpc.CodecStub, local: Model) -> None:
    codes = local.to_codes(_z(2))
    codes.model_name = "nosuch"
    codes.fingerprint = "ffffffffffffffff"
    rpc_fails(
        lambda: stub.Decode(_request(codes), timeout=10),
        grpc.StatusCode.NOT_FOUND,
        "ffffffffffffffff",
        "digits",  # what is loaded
        kind="ModelNotFound",
    )
    rpc_fails(
        lambda: stub.GetModel(codec_pb2.GetModelRequest(name="nosuch"), timeout=10),
        grpc.StatusCode.NOT_FOUND,
        "'nosuch'",
        "digits",
        kind="ModelNotFound",
    )
    rpc_fails(
        lambda: stub.FetchEncoder(
            codec_pb2.FetchEncoderRequest(name=NAME, version="9"), timeout=10
        ),
        grpc.StatusCode.NOT_FOUND,
        "'9'",
        "loaded: 1",
        kind="ModelNotFound",
    )
    _good_decode(stub, local)


def test_unknown_v2_model(server: Any, stub: codec_pb2_grpc.CodecStub, local: Model) -> None:
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    client = tc.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    z = _z(2)
    inp = tc.InferInput("z", [2, 8], "FP32")
    inp.set_data_from_numpy(z)
    try:
        for model, version, words in (
            ("nosuch.decoder", "", ("'nosuch'",)),
            ("digits", "", ("<name>.decoder", "digits.decoder")),
            ("digits.decoder", "7", ("'7'",)),
        ):
            with pytest.raises(InferenceServerException) as info:
                client.infer(model, [inp], model_version=version)
            assert info.value.status() == "StatusCode.NOT_FOUND", info.value
            for word in words:
                assert word in info.value.message(), info.value.message()
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata("nosuch.decoder")
        assert info.value.status() == "StatusCode.NOT_FOUND"
        # the input under the wrong name: INVALID_ARGUMENT naming the right one
        wrong = tc.InferInput("x", [2, 8], "FP32")
        wrong.set_data_from_numpy(z)
        with pytest.raises(InferenceServerException) as info:
            client.infer("digits.decoder", [wrong])
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "'z'" in info.value.message()
        result = client.infer("digits.decoder", [inp])
        np.testing.assert_allclose(result.as_numpy("x_hat"), local.decode(z), atol=1e-6)
    finally:
        client.close()
    _good_decode(stub, local)


# -- fingerprint mismatch: FAILED_PRECONDITION ---------------------------------------------
def test_codes_from_another_encoder(
    stub: codec_pb2_grpc.CodecStub, local: Model, other_local: Model
) -> None:
    """Codes exactly as another package's encoder makes them. That package has the same
    manifest name ("digits-test") as the served one, which is served as "digits"."""
    codes = other_local.to_codes(_z(3))
    rpc_fails(
        lambda: stub.Decode(_request(codes), timeout=10),
        grpc.StatusCode.FAILED_PRECONDITION,
        other_local.fingerprint,
        local.fingerprint,
        kind="FingerprintMismatch",
    )
    _good_decode(stub, local)


def test_codes_from_another_encoder_naming_the_served_model(
    stub: codec_pb2_grpc.CodecStub, local: Model, other_local: Model
) -> None:
    codes = other_local.to_codes(_z(3))
    codes.model_name = NAME
    rpc_fails(
        lambda: stub.Decode(_request(codes), timeout=10),
        grpc.StatusCode.FAILED_PRECONDITION,
        other_local.fingerprint,
        local.fingerprint,
        "another encoder",
        kind="FingerprintMismatch",
    )
    _good_decode(stub, local)


def test_v2_fingerprint_parameter_mismatch(
    server: Any, stub: codec_pb2_grpc.CodecStub, local: Model, other_local: Model
) -> None:
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    client = tc.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    inp = tc.InferInput("z", [2, 8], "FP32")
    inp.set_data_from_numpy(_z(2))
    try:
        with pytest.raises(InferenceServerException) as info:
            client.infer(
                "digits.decoder", [inp], parameters={"fingerprint": other_local.fingerprint}
            )
        assert info.value.status() == "StatusCode.FAILED_PRECONDITION"
        assert other_local.fingerprint in info.value.message()
        assert local.fingerprint in info.value.message()
        result = client.infer(
            "digits.decoder", [inp], parameters={"fingerprint": local.fingerprint}
        )
        np.testing.assert_allclose(result.as_numpy("x_hat"), local.decode(_z(2)), atol=1e-6)
    finally:
        client.close()
    _good_decode(stub, local)


# -- resource limits -----------------------------------------------------------------------
def test_message_over_the_receive_limit(repo: Path, local: Model, serve: Any) -> None:
    with (
        serve(repo, max_receive_bytes=64 << 10) as srv,
        grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch,
    ):
        stub = codec_pb2_grpc.CodecStub(ch)
        big = _request(local.to_codes(_z(3200)))  # 102,400 bytes of codes
        assert big.ByteSize() > 100_000
        rpc_fails(
            lambda: stub.Decode(big, timeout=10),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            str(64 << 10),  # the limit
            str(big.ByteSize()),  # what came
        )
        _good_decode(stub, local)


def test_response_over_the_send_limit(repo: Path, local: Model, serve: Any) -> None:
    """300 reconstructions are 76.8 kB, over a 64 KiB send limit: RESOURCE_EXHAUSTED, and
    the server's metrics count the call as such, not as OK."""
    with (
        serve(repo, max_send_bytes=64 << 10) as srv,
        grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch,
    ):
        stub = codec_pb2_grpc.CodecStub(ch)
        rpc_fails(
            lambda: stub.Decode(_request(local.to_codes(_z(300))), timeout=10),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            str(64 << 10),
        )
        _good_decode(stub, local)
        get = srv.metrics.registry.get_sample_value
        ok = get("latentwire_requests_total", {"method": "Decode", "code": "OK"})
        refused = get(
            "latentwire_requests_total", {"method": "Decode", "code": "RESOURCE_EXHAUSTED"}
        )
        assert (ok, refused) == (1, 1)


def test_deadline_exceeded_while_batching(repo: Path, local: Model, serve: Any) -> None:
    policy = BatchPolicy(max_delay=0.5, max_batch=100_000)
    with (
        serve(repo, policy=policy) as srv,
        grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch,
    ):
        stub = codec_pb2_grpc.CodecStub(ch)
        grpc.channel_ready_future(ch).result(timeout=10)
        t0 = time.monotonic()
        rpc_fails(
            lambda: stub.Decode(_request(local.to_codes(_z(2))), timeout=0.05),
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        assert time.monotonic() - t0 < 0.4
        _good_decode(stub, local)
        # the server saw the deadline pass too, and counted it (not an OK or INTERNAL)
        labels = {"method": "Decode", "code": "DEADLINE_EXCEEDED"}
        get = srv.metrics.registry.get_sample_value
        end = time.monotonic() + 5
        while not get("latentwire_requests_total", labels) and time.monotonic() < end:
            time.sleep(0.05)
        assert get("latentwire_requests_total", labels) == 1
        assert not get("latentwire_requests_total", {"method": "Decode", "code": "INTERNAL"})


def test_queue_full(repo: Path, local: Model, serve: Any) -> None:
    n = 8
    policy = BatchPolicy(max_delay=0.3, max_queue=2)
    with serve(repo, policy=policy) as srv:
        zs = [_z(1, seed=i) for i in range(n)]
        calls = [
            (lambda stub, z=z: stub.Decode(_request(local.to_codes(z)), timeout=10)) for z in zs
        ]
        outcomes = concurrently(srv.port, calls)
        refused = [o for o in outcomes if isinstance(o, grpc.RpcError)]
        answered = [
            (z, o) for z, o in zip(zs, outcomes, strict=True) if not isinstance(o, grpc.RpcError)
        ]
        assert refused, "8 requests fit in a queue of 2"
        assert answered
        for err in refused:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
            assert "max-queue 2" in (err.details() or "")
            assert error_class(err) == "Overloaded"
        for z, response in answered:
            np.testing.assert_allclose(
                tensor_to_array(response.reconstruction), local.decode(z), atol=1e-6
            )
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            _good_decode(codec_pb2_grpc.CodecStub(ch), local)


# -- authentication ------------------------------------------------------------------------
def test_bearer_token(repo: Path, local: Model, serve: Any) -> None:
    with (
        serve(repo, token="s3cret") as srv,
        grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch,
    ):
        stub = codec_pb2_grpc.CodecStub(ch)
        request = _request(local.to_codes(_z(2)))
        rpc_fails(
            lambda: stub.Decode(request, timeout=10),
            grpc.StatusCode.UNAUTHENTICATED,
            "missing bearer token",
            "authorization: Bearer",
            kind="Unauthenticated",
        )
        for wrong in ("Bearer nope", "s3cret", "Bearer s3cret "):
            rpc_fails(
                lambda wrong=wrong: stub.Decode(
                    request, timeout=10, metadata=(("authorization", wrong),)
                ),
                grpc.StatusCode.UNAUTHENTICATED,
                "wrong bearer token",
                kind="Unauthenticated",
            )
        rpc_fails(
            lambda: stub.ListModels(codec_pb2.ListModelsRequest(), timeout=10),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        rpc_fails(
            lambda: list(stub.DecodeStream(iter([request]), timeout=10)),
            grpc.StatusCode.UNAUTHENTICATED,
            kind="Unauthenticated",
        )
        # health checks need no token (load balancers and probes)
        health = health_pb2_grpc.HealthStub(ch)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        auth = (("authorization", "Bearer s3cret"),)
        _good_decode(stub, local, metadata=auth)
        assert len(stub.ListModels(codec_pb2.ListModelsRequest(), metadata=auth).models) == 1
        refused = srv.metrics.registry.get_sample_value(
            "latentwire_requests_total", {"method": "Decode", "code": "UNAUTHENTICATED"}
        )
        assert refused == 4


# -- TLS and mutual TLS --------------------------------------------------------------------
def _tls_channel(port: int, *, client_cert: bool) -> grpc.Channel:
    ca = (CERTS / "ca.pem").read_bytes()
    if client_cert:
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=(CERTS / "client.key").read_bytes(),
            certificate_chain=(CERTS / "client.pem").read_bytes(),
        )
    else:
        creds = grpc.ssl_channel_credentials(root_certificates=ca)
    return grpc.secure_channel(
        f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", "localhost")]
    )


def _tls(**extra: Any) -> dict[str, Any]:
    return {"tls_cert": CERTS / "server.pem", "tls_key": CERTS / "server.key", **extra}


def test_mutual_tls(repo: Path, local: Model) -> None:
    with running_server(repo, **_tls(tls_client_ca=CERTS / "ca.pem")) as srv:
        with _tls_channel(srv.port, client_cert=False) as ch:
            stub = codec_pb2_grpc.CodecStub(ch)
            with pytest.raises(grpc.RpcError) as info:
                stub.Decode(_request(local.to_codes(_z(2))), timeout=5)
            assert info.value.code() != grpc.StatusCode.OK
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake failed
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:  # no TLS at all
            with pytest.raises(grpc.RpcError) as info:
                codec_pb2_grpc.CodecStub(ch).ListModels(codec_pb2.ListModelsRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        with _tls_channel(srv.port, client_cert=True) as ch:
            _good_decode(codec_pb2_grpc.CodecStub(ch), local)


def test_plain_tls(repo: Path, local: Model) -> None:
    with (
        running_server(repo, **_tls()) as srv,
        _tls_channel(srv.port, client_cert=False) as ch,
    ):
        _good_decode(codec_pb2_grpc.CodecStub(ch), local)


def test_tls_with_token(repo: Path, local: Model) -> None:
    with (
        running_server(repo, token="s3cret", **_tls()) as srv,
        _tls_channel(srv.port, client_cert=False) as ch,
    ):
        stub = codec_pb2_grpc.CodecStub(ch)
        rpc_fails(
            lambda: stub.Decode(_request(local.to_codes(_z(2))), timeout=5),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        _good_decode(stub, local, metadata=(("authorization", "Bearer s3cret"),))
