"""KServe V2 / Open Inference Protocol (inference.GRPCInferenceService) on the same port.

Each loaded package appears as two V2 models: `<name>.decoder` (input = the latent tensor,
e.g. `z`; output = the reconstruction, e.g. `x_hat`) and `<name>.encoder` (input `x`,
output `z`). Standard clients (tritonclient, perf_analyzer) work unchanged.

A package trained with `--task anomaly` is also `<name>.scorer`: the same codes input as its
decoder; outputs `score` (FP32 [N], higher = more anomalous), `is_anomaly` (BOOL [N]) and
`p_value` (FP32 [N]); the response parameters `threshold` (a string holding the float64
threshold, exactly: this protocol version's InferParameter has no double) and `score` (which
score ran). Request parameters: `score` (string: one of the package's code scores; default
its default), and `threshold` or `fpr` (string or int64: flag against this threshold, or at
this false-positive rate on the held-out normal scores, instead of the calibrated one).
It is routed like the decoder (below) and batched like it (scoring.py). Asking a package
without anomaly scoring for it is FAILED_PRECONDITION; ModelReady says False.

Which version answers. V2 tensors carry no fingerprint, so codes could reach the decoder of
another encoder; a decode is never sent to a guessed version:
- the request parameter `fingerprint` (string, as in the package's manifest and every codes
  file) picks the version whose encoder has it, or, with `model_version` named, must match
  that version; no match is FAILED_PRECONDITION;
- `model_version` alone is taken as asked;
- with neither, the latest version answers when that is unambiguous: an encoder, or a
  decoder (or scorer) whose loaded versions all share one fingerprint. A decoder with
  versions of different encoders loaded refuses the call with FAILED_PRECONDITION, naming
  them.
Every reply carries the parameter `fingerprint` of the version that made it, so codes from
`<name>.encoder` can be sent back with theirs.

Tensors travel as `raw_input_contents` / `raw_output_contents` (typed `contents` are also
accepted on input, for clients that send them). The messages are generated under our own
proto package (latentwire.kserve.v2) with the standard field numbers, so the wire bytes are
the standard ones and tritonclient can be imported beside latentwire.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc
import numpy as np

from .. import __version__
from .._proto.kserve.v2 import inference_pb2 as pb
from ..codes import MAX_DIMS
from ..errors import FingerprintMismatch, InputError, ModelNotFound
from ..manifest import TensorSpec
from . import v2_scorer, wire
from .batcher import Batcher
from .jobs import EMPTY_CODES, EMPTY_INPUTS, HotMethod, Job, make_job
from .metrics import Metrics
from .registry import Registry, Version
from .rpc import Readiness, Rpc, deadline_of, parser
from .scoring import has_detector, no_detector
from .v2_scorer import SCORER, SCORER_OUTPUTS

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


_MAX_ELEMENTS_BYTES = 1 << 62
"""No request tensor is larger, even with a zero side (numpy refuses such shapes)."""

_V2_NAMES = {np.dtype(d).name: name for name, d in _DTYPES.items()}


def _v2_datatype(dtype: str) -> str:
    return _V2_NAMES[np.dtype(dtype).name]


def _listing(versions: Sequence[Version]) -> str:
    return ", ".join(f"{v.version}: {v.fingerprint}" for v in versions) or "none"


def _v2_shape(spec: TensorSpec) -> list[int]:
    return [-1, *(-1 if d is None else d for d in spec.shape)]


@dataclass(frozen=True)
class _Binding:
    """What ModelInfer needs of one V2 model (a version's decoder or encoder), worked out
    once per loaded version instead of on every call."""

    version: Version
    graph: Batcher
    encoder: bool
    input: TensorSpec
    output: TensorSpec
    datatype: str
    """the output's V2 datatype"""

    def finish(self, model_name: str, request_id: str, y: np.ndarray) -> bytes:
        if self.encoder:
            self.version.model.check_latents_out(y)
        out = self.output
        y = np.ascontiguousarray(y, dtype=out.dtype)
        v = self.version
        return wire.infer_response(
            model_name, v.version, request_id, out.name, self.datatype, y, v.fingerprint
        )


class V2Service:
    """The handlers of inference.GRPCInferenceService."""

    def __init__(
        self, registry: Registry, readiness: Readiness, metrics: Metrics | None = None
    ) -> None:
        self.registry = registry
        self.readiness = readiness
        self.metrics = metrics or Metrics()

    def model_names(self) -> list[str]:
        """Every V2 model served: <name>.decoder and .encoder, and .scorer where a loaded
        version of the package carries anomaly scoring."""
        names = []
        for n in self.registry.names():
            names += [f"{n}.{r}" for r in ROLES]
            if any(has_detector(v) for v in self.registry.versions_of(n)):
                names.append(f"{n}.{SCORER}")
        return names

    def _target(self, model_name: str, version: str) -> tuple[Version, str]:
        base, _, role = model_name.rpartition(".")
        if (role not in ROLES and role != SCORER) or not base:
            raise ModelNotFound(
                f"no V2 model named {model_name!r}: each package is served as "
                "<name>.decoder and <name>.encoder (and <name>.scorer when trained with "
                f"--task anomaly); loaded: {', '.join(self.model_names()) or 'none'}"
            )
        return self.registry.resolve(base, version), role

    def _infer_target(self, model_name: str, version: str, fingerprint: str) -> Version:
        """The version a ModelInfer names or routes to by fingerprint. Refuses a decode
        that would have to guess (module doc)."""
        if version:
            v, _ = self._target(model_name, version)
            if fingerprint and fingerprint != v.fingerprint:
                raise FingerprintMismatch(
                    f"the request asks for fingerprint {fingerprint}; {v.name}/{v.version} "
                    f"has {v.fingerprint}"
                )
            return v
        latest, role = self._target(model_name, "")
        if fingerprint:
            if fingerprint == latest.fingerprint:
                return latest
            same = self.registry.versions_of(latest.name)
            for v in reversed(same):
                if v.fingerprint == fingerprint:
                    return v
            raise FingerprintMismatch(
                f"the request asks for fingerprint {fingerprint}, which no loaded version of "
                f"{latest.name!r} has (loaded: {_listing(same)}); those codes were made by "
                "another encoder"
            )
        if role != "encoder":  # codes in: decoder and scorer
            same = self.registry.versions_of(latest.name)
            if any(v.fingerprint != latest.fingerprint for v in same):
                raise FingerprintMismatch(
                    f"{model_name!r} has versions of different encoders loaded "
                    f"({_listing(same)}), and codes decode correctly only with the decoder "
                    "of the encoder that made them: pass the request parameter fingerprint "
                    "(the codes' fingerprint, in the package's manifest) or name the "
                    "model_version"
                )
        return latest

    @staticmethod
    def _io(v: Version, role: str) -> tuple[TensorSpec, TensorSpec]:
        """(input, output) of a V2 model. The latent tensor carries the package's codes in
        their wire dtype (FP32, FP16, INT8, or INT32 entropy symbols)."""
        m = v.model.manifest
        codes = replace(m.latent, dtype=m.codes.wire_dtype)
        return (codes, m.output) if role == "decoder" else (m.input, codes)

    def _binding(self, v: Version, role: str) -> _Binding:
        """What ModelInfer needs of `v`'s decoder or encoder, cached on the version."""
        binding = v.cache.get(("v2", role))
        if binding is None:
            inp, out = self._io(v, role)
            encoder = role == "encoder"
            graph = v.encoder if encoder else v.decoder
            binding = _Binding(v, graph, encoder, inp, out, _v2_datatype(out.dtype))
            v.cache["v2", role] = binding
        assert isinstance(binding, _Binding)
        return binding

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
            v, role = self._target(request.name, request.version)
        except ModelNotFound:
            return pb.ModelReadyResponse(ready=False)
        if role == SCORER and not has_detector(v):
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
        meta = pb.ModelMetadataResponse.TensorMetadata
        if role == SCORER:
            if not has_detector(v):
                raise no_detector(v)
            inp, _ = self._io(v, "decoder")
            versions = [x.version for x in self.registry.versions_of(v.name) if has_detector(x)]
            outputs = [meta(name=n, datatype=t, shape=[-1]) for n, t in SCORER_OUTPUTS.items()]
        else:
            inp, out = self._io(v, role)
            versions = [x.version for x in self.registry.versions_of(v.name)]
            outputs = [meta(name=out.name, datatype=_v2_datatype(out.dtype), shape=_v2_shape(out))]
        return pb.ModelMetadataResponse(
            name=request.name,
            versions=versions,
            platform="onnxruntime_onnx",
            inputs=[meta(name=inp.name, datatype=_v2_datatype(inp.dtype), shape=_v2_shape(inp))],
            outputs=outputs,
        )

    # -- inference -------------------------------------------------------------------------
    @staticmethod
    def _input_array(request: pb.ModelInferRequest, spec: TensorSpec) -> np.ndarray:
        inputs = request.inputs
        if len(inputs) != 1:
            raise InputError(
                f"expected exactly one input tensor named {spec.name!r}, got {len(inputs)}"
            )
        t = inputs[0]
        name, datatype = t.name, t.datatype
        if name != spec.name:
            raise InputError(f"the input tensor must be named {spec.name!r}, got {name!r}")
        dtype = _DTYPES.get(datatype)
        if dtype is None:
            raise InputError(
                f"input {name!r} has datatype {datatype!r}; expected FP32 (or one of "
                f"{', '.join(_DTYPES)})"
            )
        shape = tuple(t.shape[:])  # [:] is a list, fast to copy; upb iteration is slow
        if len(shape) > MAX_DIMS:
            raise InputError(
                f"input {name!r} has {len(shape)} dimensions; at most {MAX_DIMS} are allowed"
            )
        if shape and min(shape) < 0:
            raise InputError(f"input {name!r} has shape {list(shape)} with a negative dimension")
        if math.prod(max(d, 1) for d in shape) * dtype.itemsize > _MAX_ELEMENTS_BYTES:
            raise InputError(f"input {name!r} has shape {list(shape)}, far beyond any model")
        count = math.prod(shape)
        raws = request.raw_input_contents
        if raws:
            if len(raws) != 1:
                raise InputError(f"expected one raw_input_contents entry, got {len(raws)}")
            raw = raws[0]
            if len(raw) != count * dtype.itemsize:
                raise InputError(
                    f"input {name!r} of shape {list(shape)} and datatype {datatype} needs "
                    f"{count * dtype.itemsize} bytes of raw_input_contents, got {len(raw)}"
                )
            arr: np.ndarray = np.frombuffer(raw, dtype=dtype).reshape(shape)
            return arr
        field = _TYPED.get(datatype)
        values = getattr(t.contents, field) if field else []
        if len(values) != count:
            raise InputError(
                f"input {name!r} of shape {list(shape)} needs {count} values in "
                f"raw_input_contents or contents.{field or 'fp32_contents'}, got {len(values)}"
            )
        if dtype.kind in "iu":
            wide = np.asarray(values, dtype=np.int64)
            info = np.iinfo(dtype)
            bad = wide[(wide < info.min) | (wide > info.max)]
            if bad.size:
                raise InputError(
                    f"input {name!r} of datatype {datatype} holds {int(bad[0])}, outside "
                    f"{info.min}..{info.max}"
                )
            typed: np.ndarray = wide.astype(dtype).reshape(shape)
        else:
            typed = np.asarray(values, dtype=dtype).reshape(shape)
        return typed

    def infer_job(self, request: pb.ModelInferRequest) -> Job:
        model_name, version = request.model_name, request.model_version
        params = request.parameters
        want = params["fingerprint"].string_param if params and "fingerprint" in params else ""
        v = self._infer_target(model_name, version, want)
        role = model_name.rpartition(".")[2]
        if role == SCORER:
            return self._score_job(request, v)
        b = self._binding(v, role)
        outputs = request.outputs
        if outputs:
            for requested in outputs:
                if requested.name != b.output.name:
                    raise InputError(
                        f"model {model_name!r} has one output, {b.output.name!r}; "
                        f"{requested.name!r} was requested"
                    )
        x = self._input_array(request, b.input)
        return make_job(
            b.graph,
            x,
            functools.partial(b.finish, model_name, request.id),
            empty=EMPTY_INPUTS if b.encoder else EMPTY_CODES,
        )

    def _score_job(self, request: pb.ModelInferRequest, v: Version) -> Job:
        """ModelInfer on <name>.scorer (module doc)."""
        x = functools.partial(self._input_array, request, self._io(v, "decoder")[0])
        return v2_scorer.score_job(self.registry, self.metrics, request, v, x)

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
