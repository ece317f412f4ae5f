"""The hand-encoded hot replies (runtime/server/wire.py) are exactly what protobuf's own
serializer writes, for many random names, ids, shapes and dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from latentwire.runtime._proto.kserve.v2 import inference_pb2 as pb
from latentwire.runtime._proto.v1 import codec_pb2
from latentwire.runtime.codes import array_to_tensor
from latentwire.runtime.server import wire

DTYPES = ("float32", "float16", "int8", "int32", "uint8", "float64", "int64", "int16")
TEXTS = ("", "d", "digits.decoder", "ünïcødé-模型", "x" * 300)


def _cases(seed: int, n: int) -> list[tuple[str, str, str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        shape = tuple(int(s) for s in rng.integers(1, 40, size=rng.integers(1, 4)))
        if rng.random() < 0.1:
            shape = (int(rng.integers(200, 20000)), 3)  # long raw payloads: multi-byte lengths
        dtype = DTYPES[rng.integers(len(DTYPES))]
        y = (rng.normal(size=shape) * 100).astype(dtype)
        texts = [TEXTS[i] for i in rng.integers(len(TEXTS), size=3)]
        cases.append((texts[0], texts[1], texts[2], y))
    return cases


@pytest.mark.parametrize("seed", range(4))
def test_infer_response_is_protobufs_own_bytes(seed: int) -> None:
    for name, version, request_id, y in _cases(seed, 50):
        ours = wire.infer_response(name, version, request_id, "x_hat", "FP32", y)
        expected = pb.ModelInferResponse(
            model_name=name,
            model_version=version,
            id=request_id,
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(
                    name="x_hat", datatype="FP32", shape=y.shape
                )
            ],
            raw_output_contents=[y.tobytes()],
        )
        assert ours == expected.SerializeToString()
        assert pb.ModelInferResponse.FromString(ours) == expected
        # the cached prefix is reused, and gives the same bytes the second time
        assert wire.infer_response(name, version, request_id, "x_hat", "FP32", y) == ours


@pytest.mark.parametrize("seed", range(2))
def test_infer_response_with_the_fingerprint_parameter(seed: int) -> None:
    for name, fingerprint, request_id, y in _cases(seed + 50, 50):
        ours = wire.infer_response(name, "3", request_id, "z", "INT8", y, fingerprint)
        expected = pb.ModelInferResponse(
            model_name=name,
            model_version="3",
            id=request_id,
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(name="z", datatype="INT8", shape=y.shape)
            ],
            raw_output_contents=[y.tobytes()],
        )
        if fingerprint:
            expected.parameters["fingerprint"].string_param = fingerprint
        assert pb.ModelInferResponse.FromString(ours) == expected
        # protobuf writes map entries in insertion order: one entry, so the same bytes
        assert ours == expected.SerializeToString(deterministic=True)


@pytest.mark.parametrize("seed", range(4))
def test_decode_response_is_protobufs_own_bytes(seed: int) -> None:
    for request_id, name, fingerprint, x in _cases(seed + 100, 50):
        ours = wire.decode_response(request_id, name, "7", fingerprint, x)
        expected = codec_pb2.DecodeResponse(
            id=request_id,
            model_name=name,
            model_version="7",
            fingerprint=fingerprint,
            reconstruction=array_to_tensor(x),
        )
        assert ours == expected.SerializeToString()


def test_big_endian_and_strided_arrays_go_out_little_endian_and_contiguous() -> None:
    y = np.arange(24, dtype=">f4").reshape(4, 6)[:, ::2]
    reply = pb.ModelInferResponse.FromString(wire.infer_response("m", "1", "", "y", "FP32", y))
    got = np.frombuffer(reply.raw_output_contents[0], dtype="<f4").reshape(reply.outputs[0].shape)
    np.testing.assert_array_equal(got, y)


def test_varint_matches_protobuf_for_every_size() -> None:
    for n in (0, 1, 127, 128, 300, 16383, 16384, 2**21, 2**35, 2**63 - 1):
        field = b"\x12" + wire.varint(len(wire.varint(n))) + wire.varint(n)  # shape, packed
        assert codec_pb2.Tensor(shape=[n]).SerializeToString() == field
