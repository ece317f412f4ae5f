"""Code formats through a real gRPC server: the Codec service (Decode, Encode,
DecodeStream), KServe V2 through tritonclient, and bad codes of every format.

One server (`format_repo`: digits-f32, digits-f16, digits-int8, digits-entropy, each
version 1) serves the whole module; the references are the same packages loaded here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from latentwire.runtime import Model, load
from latentwire.runtime._proto.v1 import codec_pb2, codec_pb2_grpc
from latentwire.runtime.client import Client
from latentwire.runtime.codes import array_to_tensor, tensor_to_array
from latentwire.runtime.errors import CodesError

from .conftest import FORMAT_NAMES, rpc_fails

K = 8
V2_DATATYPE = {"f32": "FP32", "f16": "FP16", "int8": "INT8", "entropy": "INT32"}
WIRE = {"f32": np.float32, "f16": np.float16, "int8": np.int8, "entropy": np.int32}


# -- fixtures and helpers ------------------------------------------------------------------
@pytest.fixture(scope="module")
def fserver(format_repo: Path, serve: Any) -> Iterator[Any]:
    with serve(format_repo) as srv:
        yield srv


@pytest.fixture(scope="module")
def locals_(format_pkgs: dict[str, Path]) -> dict[str, Model]:
    return {fmt: load(path, providers="cpu") for fmt, path in format_pkgs.items()}


@pytest.fixture(scope="module")
def channel(fserver: Any) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{fserver.port}") as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> codec_pb2_grpc.CodecStub:
    return codec_pb2_grpc.CodecStub(channel)


@pytest.fixture(scope="module")
def triton(fserver: Any) -> Iterator[Any]:
    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(url=f"127.0.0.1:{fserver.port}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def v2_infer(channel: grpc.Channel) -> Any:
    """Raw ModelInfer (unlike tritonclient it shows the trailing metadata of an error)."""
    from latentwire.runtime._proto.kserve.v2 import inference_pb2 as pb

    return channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )


def _v2_request(model: str, array: np.ndarray, datatype: str, name: str = "z") -> Any:
    from latentwire.runtime._proto.kserve.v2 import inference_pb2 as pb

    tensor = pb.ModelInferRequest.InferInputTensor(
        name=name, datatype=datatype, shape=list(array.shape)
    )
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[tensor],
        raw_input_contents=[
            np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        ],
    )


def _copy(msg: codec_pb2.Codes) -> codec_pb2.Codes:
    out = codec_pb2.Codes()
    out.CopyFrom(msg)
    return out


def _good_decode(stub: codec_pb2_grpc.CodecStub, local: Model, x: np.ndarray) -> None:
    """A correct request right after a bad one gets the right answer."""
    w = local.encode(x[:3])
    response = stub.Decode(codec_pb2.DecodeRequest(codes=local.to_codes(w)), timeout=10)
    np.testing.assert_array_equal(tensor_to_array(response.reconstruction), local.decode(w))


# -- edge -> server, bit-exact ---------------------------------------------------------------
def test_entropy_edge_to_server_is_bit_exact(
    fserver: Any, format_pkgs: dict[str, Path], locals_: dict[str, Model], digits_x: np.ndarray
) -> None:
    local = locals_["entropy"]
    edge = Model(format_pkgs["entropy"], providers="cpu", roles=("encoder",))
    messages = list(edge.encode_codes(digits_x, chunk=30))
    assert [m.count for m in messages] == [30, 30, 30, 10]
    with Client(f"127.0.0.1:{fserver.port}", timeout=10) as client:
        result = client.decode(messages)
        assert (result.model_name, result.model_version) == ("digits-entropy", "1")
        assert result.fingerprint == edge.fingerprint
        np.testing.assert_array_equal(result.x, local.decode(edge.encode(digits_x)))
        np.testing.assert_array_equal(result.x, local.decode_codes(messages))
        # the server encodes the same samples into the very same stream
        served = client.encode("digits-entropy", digits_x)
    edge_msg = edge.to_codes(edge.encode(digits_x))
    assert served.tensor.data == edge_msg.tensor.data
    assert served == edge_msg


# -- every format through the Codec service ---------------------------------------------------
@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_codec_decode_and_encode_every_format(
    stub: codec_pb2_grpc.CodecStub, locals_: dict[str, Model], digits_x: np.ndarray, fmt: str
) -> None:
    local = locals_[fmt]
    w = local.encode(digits_x)
    response = stub.Decode(codec_pb2.DecodeRequest(id="a", codes=local.to_codes(w)), timeout=10)
    assert (response.id, response.model_name, response.model_version) == ("a", f"digits-{fmt}", "1")
    np.testing.assert_array_equal(tensor_to_array(response.reconstruction), local.decode(w))

    request = codec_pb2.EncodeRequest(model_name=f"digits-{fmt}", inputs=array_to_tensor(digits_x))
    codes = stub.Encode(request, timeout=10).codes
    assert codes.format == fmt and codes.fingerprint == local.fingerprint
    assert codes.tensor.dtype == ("uint8" if fmt == "entropy" else np.dtype(WIRE[fmt]).name)
    served = local.from_codes(codes)
    assert served.dtype == WIRE[fmt]
    np.testing.assert_array_equal(served, w)


def test_decode_stream_mixes_formats_and_survives_a_bad_message(
    stub: codec_pb2_grpc.CodecStub, locals_: dict[str, Model], digits_x: np.ndarray
) -> None:
    messages = [locals_[fmt].to_codes(locals_[fmt].encode(digits_x[:7])) for fmt in FORMAT_NAMES]
    broken = _copy(messages[3])
    broken.tensor.CopyFrom(array_to_tensor(np.frombuffer(broken.tensor.data[:-4], np.uint8)))
    requests = [
        codec_pb2.DecodeRequest(id=str(i), codes=m) for i, m in enumerate([*messages, broken])
    ]
    responses = list(stub.DecodeStream(iter(requests), timeout=10))
    assert [r.id for r in responses] == ["0", "1", "2", "3", "4"]
    for fmt, resp in zip(FORMAT_NAMES, responses, strict=False):
        assert not resp.HasField("error")
        expected = locals_[fmt].decode(locals_[fmt].encode(digits_x[:7]))
        np.testing.assert_array_equal(tensor_to_array(resp.reconstruction), expected)
    err = responses[4].error
    assert (err.code, err.kind) == ("INVALID_ARGUMENT", "CodesError")
    assert "truncated or corrupted" in err.message


# -- every format through KServe V2 (tritonclient) -------------------------------------------
@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_v2_every_format(
    triton: Any, locals_: dict[str, Model], digits_x: np.ndarray, fmt: str
) -> None:
    import tritonclient.grpc as tc

    local = locals_[fmt]
    meta = triton.get_model_metadata(f"digits-{fmt}.decoder")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("z", V2_DATATYPE[fmt], [-1, K])
    ]
    meta = triton.get_model_metadata(f"digits-{fmt}.encoder")
    assert [(t.name, t.datatype) for t in meta.outputs] == [("z", V2_DATATYPE[fmt])]

    x = digits_x[:9]
    inp = tc.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = triton.infer(f"digits-{fmt}.encoder", [inp])
    assert result.get_output("z").datatype == V2_DATATYPE[fmt]
    w = result.as_numpy("z")
    assert w.dtype == WIRE[fmt] and w.shape == (9, K)
    np.testing.assert_array_equal(w, local.encode(x))

    z = tc.InferInput("z", list(w.shape), V2_DATATYPE[fmt])
    z.set_data_from_numpy(w)
    x_hat = triton.infer(f"digits-{fmt}.decoder", [z]).as_numpy("x_hat")
    assert x_hat.dtype == np.float32 and x_hat.shape == (9, 64)
    np.testing.assert_array_equal(x_hat, local.decode(w))


def test_v2_int8_typed_contents(
    v2_infer: Any, locals_: dict[str, Model], digits_x: np.ndarray
) -> None:
    """INT8 codes sent as `contents.int_contents` (no raw bytes) decode like raw ones."""
    from latentwire.runtime._proto.kserve.v2 import inference_pb2 as pb

    local = locals_["int8"]
    w = local.encode(digits_x[:4])
    tensor = pb.ModelInferRequest.InferInputTensor(name="z", datatype="INT8", shape=[4, K])
    tensor.contents.int_contents.extend(w.ravel().tolist())
    response = v2_infer(pb.ModelInferRequest(model_name="digits-int8.decoder", inputs=[tensor]))
    x_hat = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(4, 64)
    np.testing.assert_array_equal(x_hat, local.decode(w))


# -- bad codes over gRPC: INVALID_ARGUMENT, the class in the trailers, then a good request ---
def test_truncated_entropy_stream(
    stub: codec_pb2_grpc.CodecStub, locals_: dict[str, Model], digits_x: np.ndarray
) -> None:
    local = locals_["entropy"]
    codes = local.to_codes(local.encode(digits_x))
    for stream, words in (
        (codes.tensor.data[:-4], ("truncated or corrupted", "100 samples")),
        (codes.tensor.data[:-1], ("whole number of 32-bit words",)),
    ):
        bad = _copy(codes)
        bad.tensor.CopyFrom(array_to_tensor(np.frombuffer(stream, np.uint8)))
        rpc_fails(
            lambda b=bad: stub.Decode(codec_pb2.DecodeRequest(codes=b), timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT,
            *words,
            kind="CodesError",
        )
        _good_decode(stub, local, digits_x)


def test_empty_entropy_stream_is_refused(
    stub: codec_pb2_grpc.CodecStub, locals_: dict[str, Model], digits_x: np.ndarray
) -> None:
    local = locals_["entropy"]
    codes = local.to_codes(local.encode(digits_x[:10]))
    codes.tensor.CopyFrom(array_to_tensor(np.zeros(0, np.uint8)))
    rpc_fails(
        lambda: stub.Decode(codec_pb2.DecodeRequest(codes=codes), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        kind="CodesError",
    )
    _good_decode(stub, local, digits_x)


def test_truncated_entropy_stream_through_the_client(
    fserver: Any, locals_: dict[str, Model], digits_x: np.ndarray
) -> None:
    local = locals_["entropy"]
    codes = local.to_codes(local.encode(digits_x[:20]))
    codes.tensor.CopyFrom(array_to_tensor(np.frombuffer(codes.tensor.data[:-4], np.uint8)))
    with Client(f"127.0.0.1:{fserver.port}", timeout=10) as client:
        with pytest.raises(CodesError, match="truncated or corrupted"):
            client.decode(codes)
        good = list(local.encode_codes(digits_x[:20]))
        np.testing.assert_array_equal(client.decode(good).x, local.decode_codes(good))


def test_out_of_range_symbols_over_v2_int32(
    v2_infer: Any, stub: codec_pb2_grpc.CodecStub, locals_: dict[str, Model], digits_x: np.ndarray
) -> None:
    local = locals_["entropy"]
    prior = local.codes.prior
    assert prior is not None
    w = local.encode(digits_x[:5])
    w[2, 6] = int(prior.high[6]) + 1
    rpc_fails(
        lambda: v2_infer(_v2_request("digits-entropy.decoder", w, "INT32"), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "outside the entropy model's range",
        "index (2, 6)",
        f"channel 6 takes {int(prior.low[6])} .. {int(prior.high[6])}",
        kind="CodesError",
    )
    _good_decode(stub, local, digits_x)
    good = local.encode(digits_x[:5])
    response = v2_infer(_v2_request("digits-entropy.decoder", good, "INT32"), timeout=10)
    x_hat = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(5, 64)
    np.testing.assert_array_equal(x_hat, local.decode(good))


def test_wrong_format_tag(
    stub: codec_pb2_grpc.CodecStub, locals_: dict[str, Model], digits_x: np.ndarray
) -> None:
    local = locals_["int8"]
    codes = local.to_codes(local.encode(digits_x[:5]))
    codes.format = "f32"
    rpc_fails(
        lambda: stub.Decode(codec_pb2.DecodeRequest(codes=codes), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "codes have format 'f32'",
        "uses 'int8'",
        kind="CodesError",
    )
    _good_decode(stub, local, digits_x)


def test_wrong_tensor_dtype_in_codes(
    stub: codec_pb2_grpc.CodecStub, locals_: dict[str, Model], digits_x: np.ndarray
) -> None:
    local = locals_["int8"]
    w = local.encode(digits_x[:5])
    codes = local.to_codes(w)
    codes.tensor.CopyFrom(array_to_tensor(w.astype(np.int16)))
    rpc_fails(
        lambda: stub.Decode(codec_pb2.DecodeRequest(codes=codes), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "carries int8 codes, got 'int16'",
        kind="CodesError",
    )
    _good_decode(stub, local, digits_x)


@pytest.mark.parametrize(
    ("fmt", "array", "datatype", "words", "kind"),
    [
        # f32 wants floats: INT8 codes (e.g. meant for an int8 model) are refused
        ("f32", np.zeros((3, K), np.int8), "INT8", ("float dtype", "int8"), "InputError"),
        ("f16", np.zeros((3, K), np.int32), "INT32", ("float dtype",), "InputError"),
        # int8 wants integers in -128 .. 127
        ("int8", np.zeros((3, K), np.float32), "FP32", ("must be integers",), "InputError"),
        ("int8", np.full((3, K), 300, np.int16), "INT16", ("-128 .. 127", "300"), "CodesError"),
        # entropy wants integer symbols
        ("entropy", np.zeros((3, K), np.float32), "FP32", ("must be integers",), "InputError"),
        ("entropy", np.full((3, K), 1 << 40, np.int64), "INT64", ("1099511627776",), "CodesError"),
    ],
)
def test_v2_wrong_datatype_for_the_format(
    v2_infer: Any,
    stub: codec_pb2_grpc.CodecStub,
    locals_: dict[str, Model],
    digits_x: np.ndarray,
    fmt: str,
    array: np.ndarray,
    datatype: str,
    words: tuple[str, ...],
    kind: str,
) -> None:
    rpc_fails(
        lambda: v2_infer(_v2_request(f"digits-{fmt}.decoder", array, datatype), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        *words,
        kind=kind,
    )
    _good_decode(stub, locals_[fmt], digits_x)


def test_v2_int8_tensor_to_f32_through_tritonclient(
    triton: Any, stub: codec_pb2_grpc.CodecStub, locals_: dict[str, Model], digits_x: np.ndarray
) -> None:
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    w = locals_["int8"].encode(digits_x[:3])
    inp = tc.InferInput("z", list(w.shape), "INT8")
    inp.set_data_from_numpy(w)
    with pytest.raises(InferenceServerException) as info:
        triton.infer("digits-f32.decoder", [inp])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "float dtype" in info.value.message()
    _good_decode(stub, locals_["f32"], digits_x)
