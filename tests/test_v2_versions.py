"""KServe V2 tensors carry no fingerprint, so codes could reach the decoder of another
encoder. With several versions loaded whose encoders differ, a V2 decode must say which one
it wants (the request parameter `fingerprint`, or `model_version`); otherwise it is refused
with FAILED_PRECONDITION, never decoded by whichever version is latest."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from latentwire.runtime import Model

from .conftest import error_class

NAME = "digits"


def _z(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def two_versions(
    tmp_path_factory: pytest.TempPathFactory, digits_pkg: Path, other_pkg: Path
) -> Path:
    """Version 1 = digits_pkg, version 2 = other_pkg: two different encoders."""
    root = tmp_path_factory.mktemp("two-versions")
    shutil.copytree(digits_pkg, root / NAME / "1")
    shutil.copytree(other_pkg, root / NAME / "2")
    return root


@pytest.fixture(scope="module")
def triton(two_versions: Path, serve: Any) -> Iterator[Any]:
    import tritonclient.grpc as tc

    with serve(two_versions) as srv:
        client = tc.InferenceServerClient(url=f"127.0.0.1:{srv.port}")
        try:
            yield client
        finally:
            client.close()


def _infer(client: Any, z: np.ndarray, role: str = "decoder", **kw: Any) -> Any:
    import tritonclient.grpc as tc

    inp = tc.InferInput("z", list(z.shape), "FP32")
    inp.set_data_from_numpy(z)
    return client.infer(f"{NAME}.{role}", [inp], **kw)


def _fails(call: Any, code: str, *words: str) -> str:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        call()
    err = info.value
    assert err.status() == f"StatusCode.{code}", err.message()
    for word in words:
        assert word in (err.message() or ""), f"{word!r} not in {err.message()!r}"
    return str(err.message())


def test_old_codes_without_version_or_fingerprint_are_refused(
    triton: Any, local: Model, other_local: Model
) -> None:
    """The bug: codes made by version 1's encoder, sent with no version named, were decoded
    by version 2 (RMSE 1.88 instead of 0.56) without an error."""
    z = local.encode(np.random.default_rng(1).random((3, 64), dtype=np.float32))
    message = _fails(
        lambda: _infer(triton, z),
        "FAILED_PRECONDITION",
        "fingerprint",
        "model_version",
        local.fingerprint,
        other_local.fingerprint,
    )
    assert "Traceback" not in message


def test_the_fingerprint_parameter_routes_to_the_matching_version(
    triton: Any, local: Model, other_local: Model
) -> None:
    z = _z(3)
    for model, version in ((local, "1"), (other_local, "2")):
        result = _infer(triton, z, parameters={"fingerprint": model.fingerprint})
        reply = result.get_response()
        assert reply.model_version == version
        assert reply.parameters["fingerprint"].string_param == model.fingerprint
        np.testing.assert_allclose(result.as_numpy("x_hat"), model.decode(z), atol=1e-6)


def test_an_unknown_fingerprint_is_refused(triton: Any, local: Model, other_local: Model) -> None:
    _fails(
        lambda: _infer(triton, _z(2), parameters={"fingerprint": "0123456789abcdef"}),
        "FAILED_PRECONDITION",
        "0123456789abcdef",
        local.fingerprint,
        other_local.fingerprint,
    )


def test_a_named_version_is_taken_as_asked_and_checked_against_the_fingerprint(
    triton: Any, local: Model, other_local: Model
) -> None:
    z = _z(2)
    pinned = _infer(triton, z, model_version="1")
    assert pinned.get_response().model_version == "1"
    np.testing.assert_allclose(pinned.as_numpy("x_hat"), local.decode(z), atol=1e-6)
    _fails(
        lambda: _infer(
            triton, z, model_version="1", parameters={"fingerprint": other_local.fingerprint}
        ),
        "FAILED_PRECONDITION",
        other_local.fingerprint,
        local.fingerprint,
    )


def test_encoding_without_a_version_takes_the_latest_and_says_its_fingerprint(
    triton: Any, other_local: Model
) -> None:
    """Encoding cannot go wrong that way: the reply names the version and its fingerprint,
    which the decode request then passes back."""
    import tritonclient.grpc as tc

    x = np.random.default_rng(2).random((2, 64), dtype=np.float32)
    inp = tc.InferInput("x", [2, 64], "FP32")
    inp.set_data_from_numpy(x)
    result = triton.infer(f"{NAME}.encoder", [inp])
    reply = result.get_response()
    assert reply.model_version == "2"
    assert reply.parameters["fingerprint"].string_param == other_local.fingerprint
    np.testing.assert_allclose(result.as_numpy("z"), other_local.encode(x), atol=1e-5)


def test_one_version_needs_no_fingerprint(server: Any, local: Model) -> None:
    """Nothing is ambiguous with one version loaded: plain tritonclient calls work."""
    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        z = _z(2)
        result = _infer(client, z)
        np.testing.assert_allclose(result.as_numpy("x_hat"), local.decode(z), atol=1e-6)
        assert result.get_response().parameters["fingerprint"].string_param == local.fingerprint
    finally:
        client.close()


def test_the_refusal_carries_the_error_class(two_versions: Path, serve: Any) -> None:
    from latentwire.runtime._proto.kserve.v2 import inference_pb2 as pb

    z = _z(1)
    request = pb.ModelInferRequest(model_name=f"{NAME}.decoder")
    request.inputs.add(name="z", datatype="FP32", shape=[1, 8])
    request.raw_input_contents.append(z.tobytes())
    with serve(two_versions) as srv, grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        with pytest.raises(grpc.RpcError) as info:
            infer = ch.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            infer(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_class(info.value) == "FingerprintMismatch"
