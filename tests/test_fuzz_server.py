"""Fuzzing the decoding server: Codec Decode (Codes messages and raw request bytes),
DecodeStream, and KServe V2 ModelInfer, on one in-process server per front.

Each call must end in the answer the same package gives in this process (the reference),
or in the status the reference's error maps to: INVALID_ARGUMENT, NOT_FOUND,
FAILED_PRECONDITION or RESOURCE_EXHAUSTED. Never INTERNAL, never a hang; the server answers
a good request afterwards and logs no internal error.

The repository holds the trained digits package (f32) and three decode-side variants of it
(f16, int8, entropy): the same decoder graph under a manifest of another code format, with
the fingerprint rewritten into both graphs. Their encoders still emit float32 codes, so only
their decoders are compared with the reference. See tests/_fuzz.py for the budget.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from latentwire.runtime import LatentwireError, Model, load
from latentwire.runtime._proto.kserve.v2 import inference_pb2 as pb
from latentwire.runtime._proto.v1 import codec_pb2, codec_pb2_grpc
from latentwire.runtime.codes import tensor_to_array
from latentwire.runtime.entropy import FactorizedPrior
from latentwire.runtime.formats import CodeFormat
from latentwire.runtime.manifest import FINGERPRINT_KEY, ROLES, compute_fingerprint
from latentwire.runtime.server.codec import check_output_dtype

from ._fuzz import codes_messages, fuzz, mutated, outcome, shapes
from .conftest import FRONTENDS, require_native, running_server

ALLOWED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
TIMEOUT = 20


def _variant(src: Path, dst: Path, fmt: str) -> None:
    """A copy of `src` whose manifest declares code format `fmt` (decode side only)."""
    import onnx

    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    cal = m["codes"]["calibration"]
    rng = np.random.default_rng(1)
    k = len(cal["min"])
    prior = FactorizedPrior.from_pmfs([-8] * k, [rng.dirichlet(np.ones(17)) for _ in range(k)])
    m["codes"] = CodeFormat.build(fmt, np.array(cal["min"]), np.array(cal["max"]), prior).to_dict()
    m["name"] = f"digits-{fmt}"
    m["fingerprint"] = fp = compute_fingerprint(m)
    for role in ROLES:
        graph = onnx.load(str(dst / f"{role}.onnx"))
        for prop in graph.metadata_props:
            if prop.key == FINGERPRINT_KEY:
                prop.value = fp
        blob = graph.SerializeToString()
        (dst / f"{role}.onnx").write_bytes(blob)
        m["files"][role]["sha256"] = hashlib.sha256(blob).hexdigest()
    (dst / "manifest.json").write_text(json.dumps(m))


@pytest.fixture(scope="module")
def fuzz_repo(tmp_path_factory: pytest.TempPathFactory, digits_pkg: Path) -> Path:
    root = tmp_path_factory.mktemp("fuzz-repo")
    shutil.copytree(digits_pkg, root / "digits" / "1")
    for fmt in ("f16", "int8", "entropy"):
        _variant(digits_pkg, root / f"digits-{fmt}" / "1", fmt)
    return root


@pytest.fixture(scope="module")
def served(fuzz_repo: Path) -> dict[str, Model]:
    """The packages loaded in this process, by the name the server serves them under: the
    reference answers."""
    return {p.name: load(p / "1", providers="cpu") for p in sorted(fuzz_repo.iterdir())}


@pytest.fixture(scope="module")
def refs(served: dict[str, Model]) -> dict[str, Model]:
    """The same, by fingerprint (how the server routes codes)."""
    return {m.fingerprint: m for m in served.values()}


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Front:
    name: str
    codec: codec_pb2_grpc.CodecStub
    infer: Any
    """V2 ModelInfer"""
    raw_decode: Any
    """Decode with the request as bytes (no client-side serialisation)."""
    errors: _Errors


@pytest.fixture(scope="module", params=FRONTENDS)
def front(request: pytest.FixtureRequest, fuzz_repo: Path) -> Iterator[Front]:
    """One server for the whole module on each front, with a channel to it."""
    if request.param == "native":
        require_native()
    errors = _Errors()
    logger = logging.getLogger("latentwire")
    logger.addHandler(errors)
    try:
        with (
            running_server(fuzz_repo, frontend=request.param) as srv,
            grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch,
        ):
            infer = ch.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            raw = ch.unary_unary("/latentwire.v1.Codec/Decode")
            yield Front(request.param, codec_pb2_grpc.CodecStub(ch), infer, raw, errors)
    finally:
        logger.removeHandler(errors)


# -- the reference: what the server must answer ----------------------------------------------
def _status(exc: LatentwireError) -> grpc.StatusCode:
    return grpc.StatusCode[exc.status]


def _reference_decode(refs: dict[str, Model], request: codec_pb2.DecodeRequest) -> Any:
    """The reconstruction, or the status code, the server owes a DecodeRequest."""
    try:
        if not request.HasField("codes"):
            return grpc.StatusCode.INVALID_ARGUMENT
        check_output_dtype(request.output_dtype)
        codes = request.codes
        model = refs.get(codes.fingerprint)
        if model is None:  # NOT_FOUND, or FAILED_PRECONDITION when the name is known
            return {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
        w = model.from_codes(codes)
        if w.ndim == 0 or len(w) == 0:
            model.prepare_codes(w)
            return grpc.StatusCode.INVALID_ARGUMENT
        x = model.crop_outputs(model.decode(w), codes)
    except LatentwireError as exc:
        return _status(exc)
    if request.output_dtype == "float16":
        if np.abs(x).max(initial=0.0) > 65504:
            return grpc.StatusCode.INVALID_ARGUMENT
        x = x.astype(np.float16)
    return x


def _check_refusal(err: grpc.RpcError, want: Any) -> None:
    """A refused call: an allowed status, no traceback, and the status `want` expects (an
    answer, too big to send, may only be RESOURCE_EXHAUSTED; None = no expectation)."""
    code, details = err.code(), err.details() or ""
    assert code in ALLOWED, f"{code}: {details}"
    assert "Traceback" not in details
    if isinstance(want, np.ndarray):
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{code}: {details}"
    elif want is not None:
        assert code in (want if isinstance(want, set) else {want}), f"{code}: {details}"


def _check_decode(want: Any, call: Any) -> None:
    """`call()` answers a DecodeResponse matching `want` (an array, a status or a set)."""
    try:
        response = call()
    except grpc.RpcError as err:
        _check_refusal(err, want)
        return
    assert isinstance(want, np.ndarray), f"answered, but the reference says {want}"
    got = tensor_to_array(response.reconstruction)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# -- Codec Decode --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def valid_codes(refs: dict[str, Model]) -> list[codec_pb2.Codes]:
    rng = np.random.default_rng(0)
    out = []
    for m in refs.values():
        for n in (1, 3):
            z = rng.normal(size=(n, 8)).astype(np.float32)
            out.append(m.to_codes(m.codes.quantize(z)))
    return out


@st.composite
def decode_requests(
    draw: st.DrawFn, valid: list[codec_pb2.Codes], refs: dict[str, Model]
) -> codec_pb2.DecodeRequest:
    names = [m.name for m in refs.values()] + ["digits"]
    codes = draw(codes_messages(valid, names, list(refs)))
    request = codec_pb2.DecodeRequest(id=draw(st.text(max_size=8)), codes=codes)
    request.output_dtype = draw(
        st.sampled_from(["", "", "float32", "float16", "float64", "int8", "bogus"])
    )
    if draw(st.integers(0, 15)) == 0:
        request.ClearField("codes")
    return request


@fuzz(350)
@given(data=st.data())
def test_decode(
    data: st.DataObject, front: Front, refs: dict[str, Model], valid_codes: list[codec_pb2.Codes]
) -> None:
    request = data.draw(decode_requests(valid_codes, refs), label="request")
    _check_decode(
        _reference_decode(refs, request), lambda: front.codec.Decode(request, timeout=TIMEOUT)
    )


@fuzz(300)
@given(data=st.data())
def test_decode_raw_bytes(
    data: st.DataObject, front: Front, refs: dict[str, Model], valid_codes: list[codec_pb2.Codes]
) -> None:
    """Bytes that may not even be a DecodeRequest: INVALID_ARGUMENT when they are not."""
    base = data.draw(decode_requests(valid_codes, refs), label="request")
    blob = data.draw(mutated(base.SerializeToString()), label="bytes")
    parsed = outcome(lambda: codec_pb2.DecodeRequest.FromString(blob), Exception)
    want = (
        grpc.StatusCode.INVALID_ARGUMENT
        if isinstance(parsed, Exception)
        else _reference_decode(refs, parsed)
    )

    def call() -> codec_pb2.DecodeResponse:
        response: codec_pb2.DecodeResponse = codec_pb2.DecodeResponse.FromString(
            front.raw_decode(blob, timeout=TIMEOUT)
        )
        return response

    _check_decode(want, call)


@fuzz(60)
@given(data=st.data())
def test_decode_stream(
    data: st.DataObject, front: Front, refs: dict[str, Model], valid_codes: list[codec_pb2.Codes]
) -> None:
    """A stream of fuzzed requests: each gets its answer or an in-band error, in order."""
    requests = data.draw(
        st.lists(decode_requests(valid_codes, refs), min_size=1, max_size=5), label="requests"
    )
    responses = list(front.codec.DecodeStream(iter(requests), timeout=TIMEOUT))
    assert len(responses) == len(requests)
    for request, response in zip(requests, responses, strict=True):
        want = _reference_decode(refs, request)
        assert response.id == request.id
        if response.HasField("error"):
            code = grpc.StatusCode[response.error.code]
            assert code in ALLOWED, response.error
            if not isinstance(want, np.ndarray):
                assert code in (want if isinstance(want, set) else {want}), response.error
        else:
            assert isinstance(want, np.ndarray), f"answered, but the reference says {want}"
            np.testing.assert_allclose(
                tensor_to_array(response.reconstruction), want, rtol=1e-5, atol=1e-5
            )


# -- KServe V2 ModelInfer --------------------------------------------------------------------
V2_DTYPES = {
    "FP32": "<f4", "FP16": "<f2", "FP64": "<f8", "INT8": "i1", "UINT8": "u1",
    "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
}  # fmt: skip
TYPED = {
    "FP32": "fp32_contents", "FP64": "fp64_contents", "INT8": "int_contents",
    "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "UINT8": "uint_contents",
}  # fmt: skip
CORRUPTIONS = (
    "raw-bytes", "extra-raw", "extra-input", "no-input", "name", "datatype", "shape",
    "typed-extra", "typed-values", "rank", "fingerprint", "output", "version", "model",
)  # fmt: skip


@dataclass
class _Infer:
    request: pb.ModelInferRequest
    model: Model | None
    """the package that must answer (None: the request is corrupted or unknown)"""
    role: str
    x: np.ndarray | None


@st.composite
def infer_requests(draw: st.DrawFn, served: dict[str, Model]) -> _Infer:
    """A ModelInferRequest built from an array, then maybe corrupted."""
    name = draw(st.sampled_from(sorted(served)))
    model = served[name]
    role = "encoder" if name == "digits" and draw(st.booleans()) else "decoder"
    spec = model.manifest.input if role == "encoder" else model.manifest.latent
    wire = spec.dtype if role == "encoder" else model.codes.wire_dtype
    datatype = next(k for k, v in V2_DTYPES.items() if np.dtype(v) == np.dtype(wire))
    n = draw(st.integers(0, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    z = rng.normal(size=(n, *(int(d or 1) for d in spec.shape))).astype(np.float32)
    x = z if role == "encoder" else model.codes.quantize(z)
    request = pb.ModelInferRequest(model_name=f"{name}.{role}", id=draw(st.text(max_size=6)))
    tensor = request.inputs.add(name=spec.name, datatype=datatype, shape=x.shape)
    if datatype in TYPED and draw(st.booleans()):
        getattr(tensor.contents, TYPED[datatype]).extend(x.reshape(-1).tolist())
    else:
        request.raw_input_contents.append(np.ascontiguousarray(x, V2_DTYPES[datatype]).tobytes())
    if draw(st.booleans()):
        request.parameters["fingerprint"].string_param = model.fingerprint
    if draw(st.booleans()):
        out = model.manifest.output if role == "decoder" else model.manifest.latent
        request.outputs.add(name=out.name)
    corruptions = draw(st.lists(st.sampled_from(CORRUPTIONS), max_size=3))
    for what in corruptions:
        if what == "raw-bytes" and request.raw_input_contents:
            request.raw_input_contents[0] = draw(mutated(request.raw_input_contents[0]))
        elif what == "extra-raw":
            request.raw_input_contents.append(draw(st.binary(max_size=64)))
        elif what == "extra-input":
            request.inputs.add(name=draw(st.text(max_size=4)), datatype="FP32", shape=[1])
        elif what == "no-input":
            del request.inputs[:]
        elif what == "name":
            tensor.name = draw(st.text(max_size=6))
        elif what == "datatype":
            tensor.datatype = draw(
                st.sampled_from([*V2_DTYPES, "BOOL", "BYTES", "UINT64", "BF16", "fp32", ""])
            )
        elif what == "shape":
            tensor.shape[:] = draw(shapes())
        elif what == "typed-extra":
            field = draw(st.sampled_from(sorted(set(TYPED.values()))))
            getattr(tensor.contents, field).extend(
                draw(st.lists(_typed_value(field), min_size=1, max_size=4))
            )
        elif what == "typed-values":  # as many values as the shape says, of any range
            field = TYPED.get(tensor.datatype, "fp32_contents")
            count = math.prod(tensor.shape)
            if not 0 <= count <= 512:
                continue
            values = getattr(tensor.contents, field)
            del values[:]
            values.extend(draw(st.lists(_typed_value(field), min_size=count, max_size=count)))
            del request.raw_input_contents[:]
        elif what == "rank":  # the same values under more dimensions than numpy takes
            size = math.prod(tensor.shape)
            tensor.shape[:] = [1] * draw(st.integers(30, 70)) + [size]
        elif what == "fingerprint":
            param = request.parameters["fingerprint"]
            choice = draw(st.sampled_from(["string", "int", "bool"]))
            if choice == "string":
                fps = [m.fingerprint for m in served.values()]
                param.string_param = draw(st.sampled_from([*fps, "", "0" * 16]))
            elif choice == "int":
                param.int64_param = draw(st.integers(-5, 5))
            else:
                param.bool_param = True
        elif what == "output":
            request.outputs.add(name=draw(st.text(max_size=6)))
        elif what == "version":
            request.model_version = draw(st.sampled_from(["1", "2", "latest", "-1", "01"]))
        elif what == "model":
            request.model_name = draw(
                st.sampled_from(["digits", "digits.", ".decoder", "x.decoder", "digits.Decoder"])
            )
    intact = not corruptions or (set(corruptions) <= {"version"} and request.model_version == "1")
    return _Infer(request, model if intact else None, role, x if intact else None)


def _typed_value(field: str) -> st.SearchStrategy[Any]:
    if field in ("fp32_contents", "fp64_contents"):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if field == "uint_contents":
        return st.integers(0, 2**32 - 1)
    if field == "int64_contents":
        return st.integers(-(2**63), 2**63 - 1)
    return st.integers(-(2**31), 2**31 - 1)


def _reference_infer(case: _Infer) -> np.ndarray | grpc.StatusCode | None:
    """The output an intact request must get (or its status); None: unknown (corrupted)."""
    if case.model is None or case.x is None:
        return None
    m = case.model
    try:
        if len(case.x) == 0:
            (m.prepare_inputs if case.role == "encoder" else m.prepare_codes)(case.x)
            return grpc.StatusCode.INVALID_ARGUMENT
        return m.encode(case.x) if case.role == "encoder" else m.decode(case.x)
    except LatentwireError as exc:
        return _status(exc)


@fuzz(500)
@given(data=st.data())
def test_model_infer(data: st.DataObject, front: Front, served: dict[str, Model]) -> None:
    case = data.draw(infer_requests(served), label="case")
    want = _reference_infer(case)
    try:
        response = front.infer(case.request, timeout=TIMEOUT)
    except grpc.RpcError as err:
        _check_refusal(err, want)
        return
    assert not isinstance(want, grpc.StatusCode), f"answered, but the reference says {want}"
    (out,) = response.outputs
    got = np.frombuffer(response.raw_output_contents[0], V2_DTYPES[out.datatype])
    got = got.reshape(list(out.shape))
    if want is not None:
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# -- after the fuzzing -----------------------------------------------------------------------
def test_the_server_still_answers(
    front: Front, refs: dict[str, Model], valid_codes: list[codec_pb2.Codes]
) -> None:
    """Runs after the fuzz tests of its front: good requests still get right answers, and
    no call was an internal error."""
    for codes in valid_codes:
        want = _reference_decode(refs, codec_pb2.DecodeRequest(codes=codes))
        _check_decode(
            want,
            lambda c=codes: front.codec.Decode(codec_pb2.DecodeRequest(codes=c), timeout=TIMEOUT),
        )
    assert not [r.getMessage() for r in front.errors.records]


def _infer_fails(front: Front, request: pb.ModelInferRequest, *words: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        front.infer(request, timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    for word in words:
        assert word in (info.value.details() or "")


def test_v2_input_of_more_dimensions_than_numpy_takes(front: Front) -> None:
    """Found by fuzzing: 65 dimensions whose byte count is right pass every check, then
    numpy's reshape raises ValueError and the caller gets INTERNAL."""
    request = pb.ModelInferRequest(model_name="digits.decoder")
    request.inputs.add(name="z", datatype="FP32", shape=[1] * 64 + [8])
    request.raw_input_contents.append(bytes(32))
    _infer_fails(front, request, "dimensions")


def test_v2_empty_input_with_huge_dimensions(front: Front) -> None:
    """Found by fuzzing (tensor_to_array had the same bug): shape [0, 2**62, 8] needs no
    bytes, and numpy's reshape raises ValueError ("array is too big"): INTERNAL."""
    request = pb.ModelInferRequest(model_name="digits.decoder")
    request.inputs.add(name="z", datatype="FP32", shape=[0, 2**62, 8])
    request.raw_input_contents.append(b"")
    _infer_fails(front, request, "shape")


def test_v2_typed_contents_out_of_the_datatypes_range(front: Front) -> None:
    """Found by fuzzing: INT8 typed contents (int_contents, int32 on the wire) holding 300:
    np.asarray(values, dtype=int8) raises OverflowError and the caller gets INTERNAL."""
    request = pb.ModelInferRequest(model_name="digits-int8.decoder")
    t = request.inputs.add(name="z", datatype="INT8", shape=[1, 8])
    t.contents.int_contents.extend([300] + [0] * 7)
    _infer_fails(front, request, "300")
