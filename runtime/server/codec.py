"""latentwire.v1.Codec: decode codes (unary and streaming), encode, anomaly scores of codes
(Score, see scoring.py), and model discovery."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np

from .._proto.v1 import codec_pb2
from ..anomaly import MAX_ANOMALY_BYTES
from ..codes import OUTPUT_DTYPES, array_to_tensor, tensor_to_array
from ..errors import CodesError, InputError, LatentwireError
from ..manifest import ANOMALY, SCORER
from ..model import read_checked, read_verified
from . import wire
from .jobs import EMPTY_CODES, EMPTY_INPUTS, HotMethod, Job, make_job
from .metrics import Metrics
from .registry import Registry, Version
from .rpc import Rpc, deadline_of, parser, serialize
from .scoring import scorer_of

SERVICE = "latentwire.v1.Codec"

_F16_MAX = float(np.finfo(np.float16).max)


def check_output_dtype(dtype: str) -> None:
    """Refuse an unknown reconstruction dtype before any work is done."""
    if dtype not in ("", *OUTPUT_DTYPES):
        raise InputError(f"output_dtype must be one of {OUTPUT_DTYPES}, got {dtype!r}")


def cast_output(x: np.ndarray, dtype: str) -> np.ndarray:
    """Reconstructions in the dtype the client asked for (checked by check_output_dtype;
    "" = float32)."""
    if dtype != "float16":
        return x
    if np.abs(x).max(initial=0.0) > _F16_MAX:
        raise InputError("the reconstructions exceed float16's range (65504); ask for float32")
    return x.astype(np.float16)


def model_info(registry: Registry, v: Version) -> codec_pb2.ModelInfo:
    return codec_pb2.ModelInfo(
        name=v.name,
        version=v.version,
        fingerprint=v.fingerprint,
        manifest_json=v.manifest_json,
        latest=registry.is_latest(v),
    )


def scorer_files(v: Version) -> list[codec_pb2.PackageFile]:
    """scorer.onnx and anomaly.npz of a version, read and checked against its manifest
    (FetchEncoder's include_scorer: an edge device that scores anomalies itself)."""
    m = v.model.manifest
    if SCORER not in m.files or ANOMALY not in m.files:
        raise InputError(
            f"model {v.name!r} version {v.version} has no scorer graph (export it with "
            "`latentwire train --task anomaly --edge-score`); fetch the encoder alone"
        )
    blobs = (
        (SCORER, read_verified(v.path, m, SCORER)),
        (ANOMALY, read_checked(v.path, m, ANOMALY, MAX_ANOMALY_BYTES)),
    )
    return [
        codec_pb2.PackageFile(role=role, data=blob, sha256=m.files[role]["sha256"])
        for role, blob in blobs
    ]


class CodecService:
    """The handlers of latentwire.v1.Codec."""

    def __init__(self, registry: Registry, metrics: Metrics | None = None) -> None:
        self.registry = registry
        self.metrics = metrics or Metrics()

    def decode_job(self, request: codec_pb2.DecodeRequest) -> Job:
        if not request.HasField("codes"):
            raise CodesError("DecodeRequest has no codes")
        codes = request.codes
        dtype = request.output_dtype
        check_output_dtype(dtype)
        v = self.registry.route(codes.model_name, codes.fingerprint)
        w = v.model.from_codes(codes)
        request_id = request.id

        def finish(y: np.ndarray) -> bytes:
            x = cast_output(v.model.crop_outputs(y, codes), dtype)
            return wire.decode_response(request_id, v.name, v.version, v.fingerprint, x)

        return make_job(v.decoder, w, finish, empty=EMPTY_CODES)

    def decode(self, request: codec_pb2.DecodeRequest, context: grpc.ServicerContext) -> bytes:
        return self.decode_job(request).run(deadline_of(context))

    def decode_stream(
        self, requests: Iterator[codec_pb2.DecodeRequest], context: grpc.ServicerContext
    ) -> Iterator[bytes | codec_pb2.DecodeResponse]:
        for request in requests:
            try:
                yield self.decode(request, context)
            except LatentwireError as exc:  # this request failed; the stream goes on
                yield codec_pb2.DecodeResponse(
                    id=request.id,
                    model_name=request.codes.model_name,
                    fingerprint=request.codes.fingerprint,
                    error=codec_pb2.Error(
                        code=exc.status, message=str(exc), kind=type(exc).__name__
                    ),
                )

    def encode_job(self, request: codec_pb2.EncodeRequest) -> Job:
        v = self.registry.resolve(request.model_name, request.model_version)
        if not request.HasField("inputs"):
            raise InputError("EncodeRequest has no inputs tensor")
        try:
            x = tensor_to_array(request.inputs)
        except CodesError as exc:
            raise InputError(f"inputs: {exc}") from None
        padded, original = v.model.pad_inputs(x)

        def finish(w: np.ndarray) -> bytes:
            v.model.check_latents_out(w)
            response = codec_pb2.EncodeResponse(
                model_version=v.version, codes=v.model.to_codes(w, original)
            )
            return serialize(response)

        return make_job(v.encoder, padded, finish, empty=EMPTY_INPUTS)

    def encode(self, request: codec_pb2.EncodeRequest, context: grpc.ServicerContext) -> bytes:
        return self.encode_job(request).run(deadline_of(context))

    def score_job(self, request: codec_pb2.ScoreRequest) -> Job:
        if not request.HasField("codes"):
            raise CodesError("ScoreRequest has no codes")
        codes = request.codes
        v = self.registry.route(codes.model_name, codes.fingerprint)
        scorer = scorer_of(self.registry, v, request.score)
        threshold = scorer.threshold_of(
            request.threshold if request.HasField("threshold") else None,
            request.fpr if request.HasField("fpr") else None,
        )
        w = v.model.from_codes(codes)
        request_id = request.id
        scored = self.metrics.scored

        def finish(y: np.ndarray) -> bytes:
            scores, flags, p_values = scorer.split(y, threshold)
            flagged = int(flags.sum())
            scored(v.name, len(scores), flagged)
            return serialize(
                codec_pb2.ScoreResponse(
                    id=request_id,
                    model_name=v.name,
                    model_version=v.version,
                    fingerprint=v.fingerprint,
                    score=scorer.score,
                    scores=array_to_tensor(scores),
                    is_anomaly=array_to_tensor(flags.astype(np.uint8)),
                    threshold=threshold,
                    p_values=array_to_tensor(p_values),
                )
            )

        return make_job(scorer.graph, w, finish, empty=EMPTY_CODES)

    def score(self, request: codec_pb2.ScoreRequest, context: grpc.ServicerContext) -> bytes:
        return self.score_job(request).run(deadline_of(context))

    def _pick(self, name: str, version: str, fingerprint: str = "") -> Version:
        if fingerprint:
            v = self.registry.route(name, fingerprint)
            if (name and name not in (v.name, v.model.name)) or (version and v.version != version):
                raise InputError(
                    f"fingerprint {fingerprint} belongs to {v.name}/{v.version}, "
                    f"not {name or '*'}/{version or '*'}"
                )
            return v
        return self.registry.resolve(name, version)

    def get_model(
        self, request: codec_pb2.GetModelRequest, context: grpc.ServicerContext
    ) -> codec_pb2.ModelInfo:
        return model_info(
            self.registry, self._pick(request.name, request.version, request.fingerprint)
        )

    def list_models(
        self, request: codec_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> codec_pb2.ListModelsResponse:
        return codec_pb2.ListModelsResponse(
            models=[model_info(self.registry, v) for v in self.registry.versions()]
        )

    def fetch_encoder(
        self, request: codec_pb2.FetchEncoderRequest, context: grpc.ServicerContext
    ) -> codec_pb2.FetchEncoderResponse:
        v = self._pick(request.name, request.version)
        return codec_pb2.FetchEncoderResponse(
            model=model_info(self.registry, v),
            encoder_onnx=v.encoder_onnx,
            sha256=v.encoder_sha256,
            files=scorer_files(v) if request.include_scorer else [],
        )

    def hot_methods(self) -> list[HotMethod]:
        """The unary methods the native front serves itself."""
        m = codec_pb2
        return [
            HotMethod(f"/{SERVICE}/Decode", "Decode", parser(m.DecodeRequest), self.decode_job),
            HotMethod(f"/{SERVICE}/Encode", "Encode", parser(m.EncodeRequest), self.encode_job),
            HotMethod(f"/{SERVICE}/Score", "Score", parser(m.ScoreRequest), self.score_job),
        ]

    def handler(self, rpc: Rpc) -> grpc.GenericRpcHandler:
        m = codec_pb2
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Decode": rpc.unary("Decode", self.decode, m.DecodeRequest),
                "DecodeStream": rpc.stream("DecodeStream", self.decode_stream, m.DecodeRequest),
                "Encode": rpc.unary("Encode", self.encode, m.EncodeRequest),
                "Score": rpc.unary("Score", self.score, m.ScoreRequest),
                "GetModel": rpc.unary("GetModel", self.get_model, m.GetModelRequest),
                "ListModels": rpc.unary("ListModels", self.list_models, m.ListModelsRequest),
                "FetchEncoder": rpc.unary(
                    "FetchEncoder", self.fetch_encoder, m.FetchEncoderRequest
                ),
            },
        )
