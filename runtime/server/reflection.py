"""Server reflection over a private descriptor pool.

Our KServe V2 messages are generated under the proto package latentwire.kserve.v2 (so they
never clash with tritonclient's `inference` package in the default pool), but the service
is served as `inference.GRPCInferenceService`. For reflection clients (grpcurl, Postman)
to see the standard service, this module builds a separate pool holding a copy of the V2
file renamed to package `inference` with the service declared, next to the Codec, health
and reflection protos. Nothing is added to the default pool.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from .._proto.kserve.v2 import inference_pb2
from .._proto.v1 import codec_pb2
from . import v2

_V2_METHODS = (
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
)


def _file_proto(module: object) -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(fdp)  # type: ignore[attr-defined]
    return fdp


def _standard_v2() -> descriptor_pb2.FileDescriptorProto:
    fdp = _file_proto(inference_pb2)
    ours, std = f".{fdp.package}.", ".inference."
    fdp.name = "grpc_service.proto"
    fdp.package = "inference"

    def rename(messages: object) -> None:
        for msg in messages:  # type: ignore[attr-defined]
            for f in msg.field:
                if f.type_name.startswith(ours):
                    f.type_name = std + f.type_name[len(ours) :]
            rename(msg.nested_type)

    rename(fdp.message_type)
    service = fdp.service.add(name="GRPCInferenceService")
    for name in _V2_METHODS:
        service.method.add(
            name=name, input_type=f"{std}{name}Request", output_type=f"{std}{name}Response"
        )
    return fdp


def enable(server: grpc.Server, service_names: list[str]) -> None:
    pool = descriptor_pool.DescriptorPool()
    for fdp in (
        _file_proto(codec_pb2),
        _file_proto(health_pb2),
        _file_proto(reflection_pb2),
        _standard_v2(),
    ):
        pool.Add(fdp)
    names = [*service_names, v2.SERVICE, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server, pool=pool)
