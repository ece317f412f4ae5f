"""KServe V2 / Open Inference Protocol (inference.GRPCInferenceService) on the same port.

Each loaded package appears as two V2 models: `<name>.decoder` (input = the latent tensor,
e.g. `z`; output = the reconstruction, e.g. `x_hat`) and `<name>.encoder` (input `x`,
output `z`). An empty `model_version` means the latest. Standard clients (tritonclient,
perf_analyzer) work unchanged. A request may carry the parameter `fingerprint` (string):
the version must then have that fingerprint, or the call fails with FAILED_PRECONDITION.

Tensors travel as `raw_input_contents` / `raw_output_contents` (typed `contents` are also
accepted on input, for clients that send them). The messages are generated under our own
proto package (latentwire.kserve.v2) with the standard field numbers, so the wire bytes are
the standard ones and tritonclient can be imported beside latentwire.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import grpc
import numpy as np

from .. import __version__
from .._proto.kserve.v2 import inference_pb2 as pb
from ..errors import FingerprintMismatch, InputError, ModelNotFound
from ..manifest import TensorSpec
from . import wire
from .jobs import EMPTY_CODES, EMPTY_INPUTS, HotMethod, Job, make_job
from .registry import Registry, Version
from .rpc import Readiness, Rpc, deadline_of, parser

SERVICE = "inference.GRPCInferenceService"
ROLES = ("decoder", "encoder")

# V2 datatype <-> numpy dtype
_DTYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP16": np.dtype("<f2"),
    "FP64": np.dtype("<f8"),
    "INT8": np.dtype("i1"),
    "UINT8": np.dtype("u1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
}
_TYPED = {  # the InferTensorContents field holding each datatype
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
}


_V2_NAMES = {np.dtype(d).name: name for name, d in _DTYPES.items()}


def _v2_datatype(dtype: str) -> str:
    return _V2_NAMES[np.dtype(dtype).name]


def _v2_shape(spec: TensorSpec) -> list[int]:
    return [-1, *(-1 if d is None else d for d in spec.shape)]


class V2Service:
    """The handlers of inference.GRPCInferenceService."""

    def __init__(self, registry: Registry, readiness: Readiness) -> None:
        self.registry = registry
        self.readiness = readiness

    def _target(self, model_name: str, version: str) -> tuple[Version, str]:
        base, _, role = model_name.rpartition(".")
        if role not in ROLES or not base:
            names = [f"{n}.{r}" for n in self.registry.names() for r in ROLES]
            raise ModelNotFound(
                f"no V2 model named {model_name!r}: each package is served as "
                f"<name>.decoder and <name>.encoder; loaded: {', '.join(names) or 'none'}"
            )
        return self.registry.resolve(base, version), role

    @staticmethod
    def _io(v: Version, role: str) -> tuple[TensorSpec, TensorSpec]:
        """(input, output) of a V2 model. The latent tensor carries the package's codes in
        their wire dtype (FP32, FP16, INT8, or INT32 entropy symbols)."""
        m = v.model.manifest
        codes = replace(m.latent, dtype=m.codes.wire_dtype)
        return (codes, m.output) if role == "decoder" else (m.input, codes)

    # -- health and metadata ---------------------------------------------------------------
    def server_live(
        self, request: pb.ServerLiveRequest, context: grpc.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def server_ready(
        self, request: pb.ServerReadyRequest, context: grpc.ServicerContext
    ) -> pb.ServerReadyResponse:
        # ready = takes work: loaded, not shutting down, and at least one model to serve
        return pb.ServerReadyResponse(ready=self.readiness.ready and bool(self.registry.names()))

    def model_ready(
        self, request: pb.ModelReadyRequest, context: grpc.ServicerContext
    ) -> pb.ModelReadyResponse:
        try:
            self._target(request.name, request.version)
        except ModelNotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self.readiness.ready)

    def server_metadata(
        self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="latentwire", version=__version__, extensions=[])

    def model_metadata(
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        v, role = self._target(request.name, request.version)
        inp, out = self._io(v, role)
        versions = [x.version for x in self.registry.versions() if x.name == v.name]
        meta = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=request.name,
            versions=versions,
            platform="onnxruntime_onnx",
            inputs=[meta(name=inp.name, datatype=_v2_datatype(inp.dtype), shape=_v2_shape(inp))],
            outputs=[meta(name=out.name, datatype=_v2_datatype(out.dtype), shape=_v2_shape(out))],
        )

    # -- inference -------------------------------------------------------------------------
    @staticmethod
    def _input_array(request: pb.ModelInferRequest, spec: TensorSpec) -> np.ndarray:
        if len(request.inputs) != 1:
            raise InputError(
                f"expected exactly one input tensor named {spec.name!r}, got {len(request.inputs)}"
            )
        t = request.inputs[0]
        if t.name != spec.name:
            raise InputError(f"the input tensor must be named {spec.name!r}, got {t.name!r}")
        dtype = _DTYPES.get(t.datatype)
        if dtype is None:
            raise InputError(
                f"input {t.name!r} has datatype {t.datatype!r}; expected FP32 (or one of "
                f"{', '.join(_DTYPES)})"
            )
        shape = tuple(int(s) for s in t.shape)
        if any(s < 0 for s in shape):
            raise InputError(f"input {t.name!r} has shape {list(shape)} with a negative dimension")
        count = math.prod(shape)
        if request.raw_input_contents:
            if len(request.raw_input_contents) != 1:
                raise InputError(
                    f"expected one raw_input_contents entry, got {len(request.raw_input_contents)}"
                )
            raw = request.raw_input_contents[0]
            if len(raw) != count * dtype.itemsize:
                raise InputError(
                    f"input {t.name!r} of shape {list(shape)} and datatype {t.datatype} needs "
                    f"{count * dtype.itemsize} bytes of raw_input_contents, got {len(raw)}"
                )
            arr: np.ndarray = np.frombuffer(raw, dtype=dtype).reshape(shape)
            return arr
        field = _TYPED.get(t.datatype)
        values = getattr(t.contents, field) if field else []
        if len(values) != count:
            raise InputError(
                f"input {t.name!r} of shape {list(shape)} needs {count} values in "
                f"raw_input_contents or contents.{field or 'fp32_contents'}, got {len(values)}"
            )
        typed: np.ndarray = np.asarray(values, dtype=dtype).reshape(shape)
        return typed

    def infer_job(self, request: pb.ModelInferRequest) -> Job:
        v, role = self._target(request.model_name, request.model_version)
        params = request.parameters
        if params and "fingerprint" in params:
            want = params["fingerprint"].string_param
            if want != v.fingerprint:
                raise FingerprintMismatch(
                    f"the request asks for fingerprint {want}; {v.name}/{v.version} has "
                    f"{v.fingerprint}"
                )
        inp, out = self._io(v, role)
        for requested in request.outputs:
            if requested.name != out.name:
                raise InputError(
                    f"model {request.model_name!r} has one output, {out.name!r}; "
                    f"{requested.name!r} was requested"
                )
        x = self._input_array(request, inp)
        model_name, request_id, version = request.model_name, request.id, v.version
        out_name, out_dtype, datatype = out.name, out.dtype, _v2_datatype(out.dtype)
        encoder = role == "encoder"

        def finish(y: np.ndarray) -> bytes:
            if encoder:
                v.model.check_latents_out(y)
            y = np.ascontiguousarray(y, dtype=out_dtype)
            return wire.infer_response(model_name, version, request_id, out_name, datatype, y)

        if encoder:
            return make_job(v.encoder, x, finish, empty=EMPTY_INPUTS)
        return make_job(v.decoder, x, finish, empty=EMPTY_CODES)

    def model_infer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> bytes:
        return self.infer_job(request).run(deadline_of(context))

    def hot_methods(self) -> list[HotMethod]:
        """The unary methods the native front serves itself."""
        return [
            HotMethod(
                f"/{SERVICE}/ModelInfer", "ModelInfer", parser(pb.ModelInferRequest), self.infer_job
            )
        ]

    def handler(self, rpc: Rpc) -> grpc.GenericRpcHandler:
        methods: dict[str, tuple[Any, Any, bool]] = {
            # liveness, readiness and metadata answer while models load (as Triton's do)
            "ServerLive": (self.server_live, pb.ServerLiveRequest, False),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest, False),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest, False),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest, False),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest, True),
            "ModelInfer": (self.model_infer, pb.ModelInferRequest, True),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                name: rpc.unary(name, fn, req, needs_ready=ready)
                for name, (fn, req, ready) in methods.items()
            },
        )
