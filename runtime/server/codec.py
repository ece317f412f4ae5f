"""latentwire.v1.Codec: decode codes (unary and streaming), encode, and model discovery."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np

from .._proto.v1 import codec_pb2
from ..codes import OUTPUT_DTYPES, array_to_tensor, tensor_to_array
from ..errors import CodesError, InputError, LatentwireError
from .registry import Registry, Version
from .rpc import Rpc, deadline_of

SERVICE = "latentwire.v1.Codec"

_F16_MAX = float(np.finfo(np.float16).max)


def run_decode(v: Version, w: np.ndarray, deadline: float | None) -> np.ndarray:
    """Codes (wire values of the package's format) -> reconstructions in the user's
    units, through the batcher."""
    arr = v.model.prepare_codes(w)
    if len(arr) == 0:
        raise InputError("empty batch: send at least one sample of codes")
    return v.decoder.submit(arr, deadline)


def run_encode(v: Version, x: np.ndarray, deadline: float | None) -> np.ndarray:
    """Samples in the user's units -> codes (wire values of the package's format),
    through the batcher."""
    arr = v.model.prepare_inputs(x)
    if len(arr) == 0:
        raise InputError("empty batch: send at least one sample")
    z = v.encoder.submit(arr, deadline)
    v.model.check_latents_out(z)
    return z


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


class CodecService:
    """The handlers of latentwire.v1.Codec."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def _decode_one(
        self, request: codec_pb2.DecodeRequest, context: grpc.ServicerContext
    ) -> codec_pb2.DecodeResponse:
        if not request.HasField("codes"):
            raise CodesError("DecodeRequest has no codes")
        codes = request.codes
        check_output_dtype(request.output_dtype)
        v = self.registry.route(codes.model_name, codes.fingerprint)
        w = v.model.from_codes(codes)
        x = v.model.crop_outputs(run_decode(v, w, deadline_of(context)), codes)
        x = cast_output(x, request.output_dtype)
        return codec_pb2.DecodeResponse(
            id=request.id,
            model_name=v.name,
            model_version=v.version,
            fingerprint=v.fingerprint,
            reconstruction=array_to_tensor(x),
        )

    def decode(
        self, request: codec_pb2.DecodeRequest, context: grpc.ServicerContext
    ) -> codec_pb2.DecodeResponse:
        return self._decode_one(request, context)

    def decode_stream(
        self, requests: Iterator[codec_pb2.DecodeRequest], context: grpc.ServicerContext
    ) -> Iterator[codec_pb2.DecodeResponse]:
        for request in requests:
            try:
                yield self._decode_one(request, context)
            except LatentwireError as exc:  # this request failed; the stream goes on
                yield codec_pb2.DecodeResponse(
                    id=request.id,
                    model_name=request.codes.model_name,
                    fingerprint=request.codes.fingerprint,
                    error=codec_pb2.Error(
                        code=exc.status, message=str(exc), kind=type(exc).__name__
                    ),
                )

    def encode(
        self, request: codec_pb2.EncodeRequest, context: grpc.ServicerContext
    ) -> codec_pb2.EncodeResponse:
        v = self.registry.resolve(request.model_name, request.model_version)
        if not request.HasField("inputs"):
            raise InputError("EncodeRequest has no inputs tensor")
        try:
            x = tensor_to_array(request.inputs)
        except CodesError as exc:
            raise InputError(f"inputs: {exc}") from None
        padded, original = v.model.pad_inputs(x)
        w = run_encode(v, padded, deadline_of(context))
        return codec_pb2.EncodeResponse(
            model_version=v.version, codes=v.model.to_codes(w, original)
        )

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
            model=model_info(self.registry, v), encoder_onnx=v.encoder_onnx, sha256=v.encoder_sha256
        )

    def handler(self, rpc: Rpc) -> grpc.GenericRpcHandler:
        m = codec_pb2
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Decode": rpc.unary("Decode", self.decode, m.DecodeRequest),
                "DecodeStream": rpc.stream("DecodeStream", self.decode_stream, m.DecodeRequest),
                "Encode": rpc.unary("Encode", self.encode, m.EncodeRequest),
                "GetModel": rpc.unary("GetModel", self.get_model, m.GetModelRequest),
                "ListModels": rpc.unary("ListModels", self.list_models, m.ListModelsRequest),
                "FetchEncoder": rpc.unary(
                    "FetchEncoder", self.fetch_encoder, m.FetchEncoderRequest
                ),
            },
        )
