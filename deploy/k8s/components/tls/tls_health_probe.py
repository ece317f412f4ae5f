"""Exec probe for a latentwire server that serves TLS: one grpc.health.v1 Check over TLS.

Kubernetes' native gRPC probes speak plaintext only (`grpc.mode: TLS` is an alpha of 1.37
behind the GRPCContainerProbeTLS gate, and no native probe can present a client
certificate), so the TLS component runs this script in the server's container instead:

    python3 tls_health_probe.py --port=8001 --service=latentwire.v1.Codec \
        --ca=/etc/latentwire/tls/ca.crt --server-name=latentwire

It prints the status and exits 0 when it is SERVING, 1 otherwise (NOT_SERVING, a failed
handshake, no answer within --timeout). Only grpcio and grpcio-health-checking are needed,
both of them in the server image. Each run starts an interpreter: ~0.3 s of CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Check a latentwire server's health over TLS; exit 0 when SERVING.",
        allow_abbrev=False,
    )
    p.add_argument("--host", default="localhost", help="address to connect to")
    p.add_argument("--port", type=int, default=8001, help="the server's gRPC port")
    p.add_argument("--service", default="", help='health service name ("" = whole server)')
    p.add_argument("--ca", required=True, metavar="PEM", help="CA that signed the server")
    p.add_argument("--server-name", default="localhost", help="a name in the server's cert")
    p.add_argument("--cert", metavar="PEM", help="client certificate (mutual TLS)")
    p.add_argument("--key", metavar="PEM", help="client private key (mutual TLS)")
    p.add_argument("--timeout", type=float, default=2.0, metavar="S", help="deadline")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        creds = grpc.ssl_channel_credentials(
            root_certificates=Path(args.ca).read_bytes(),
            private_key=Path(args.key).read_bytes() if args.key else None,
            certificate_chain=Path(args.cert).read_bytes() if args.cert else None,
        )
    except OSError as exc:
        print(f"tls_health_probe: {exc}", file=sys.stderr)
        return 1
    options = [("grpc.ssl_target_name_override", args.server_name)]
    with grpc.secure_channel(f"{args.host}:{args.port}", creds, options=options) as channel:
        request = health_pb2.HealthCheckRequest(service=args.service)
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"tls_health_probe: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
