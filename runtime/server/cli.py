"""`latentwire serve`: the decoding server's command line."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..argtypes import non_negative, port, positive
from ..errors import LatentwireError

if TYPE_CHECKING:  # the server itself loads only for `serve`: edge installs lack its extra
    from .app import ServeConfig

log = logging.getLogger("latentwire.server")

DESCRIPTION = """\
Serve every model package under DIR over gRPC, on one port:
  latentwire.v1.Codec             Decode, DecodeStream, Encode, GetModel, ListModels, FetchEncoder
  inference.GRPCInferenceService  KServe V2 (tritonclient): <name>.decoder and <name>.encoder
  grpc.health.v1.Health           SERVING once a model is loaded and warm; NOT_SERVING with no
                                  model loaded, and on shutdown
  server reflection               grpcurl -plaintext HOST:PORT list
DIR holds packages as DIR/<name>/<version>/ (or DIR is one package, served as version 1).
Versions dropped into DIR later load without a restart; codes are routed to the version whose
fingerprint they carry. SIGTERM/SIGINT drain requests in flight, then exit.
"""


def add_command(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve model packages over gRPC (Codec + KServe V2, health, metrics)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--models", required=True, metavar="DIR", type=Path, help="model repository")
    p.add_argument("--host", default="[::]", help="address to bind (default: all interfaces)")
    p.add_argument(
        "--port", type=port, default=8001, help="gRPC port, 0 = any free (default: 8001)"
    )
    p.add_argument(
        "--metrics-port", type=port, metavar="P", help="serve Prometheus /metrics on this port"
    )
    b = p.add_argument_group("batching")
    b.add_argument(
        "--max-batch",
        type=positive(int),
        default=1024,
        metavar="N",
        help="coalesce concurrent requests for one model up to N samples per ONNX Runtime "
        "call; larger requests run alone (default: 1024)",
    )
    b.add_argument(
        "--max-delay-ms",
        type=non_negative(float),
        default=0.0,
        metavar="MS",
        help="longest a request waits for others to join its batch; 0 = greedy: batch whatever "
        "queued while the previous call ran, never wait (default: 0)",
    )
    b.add_argument(
        "--max-queue",
        type=positive(int),
        default=512,
        metavar="N",
        help="requests waiting per model before new ones get RESOURCE_EXHAUSTED (default: 512)",
    )
    b.add_argument("--no-batching", action="store_true", help="run every request on its own")
    r = p.add_argument_group("resources")
    r.add_argument(
        "--frontend",
        choices=["auto", "native", "grpcio"],
        default="auto",
        help="what serves the port: native = HTTP/2 in Rust (pygrpc-native, the "
        "latentwire[server] extra), hot calls reach Python in batches; grpcio = grpcio alone, "
        "the pure-Python fallback and the one with TLS; auto = native when installed and no "
        "TLS is asked for (default: auto)",
    )
    r.add_argument(
        "--threads",
        type=positive(int),
        default=16,
        metavar="N",
        help="grpcio handler threads for unary calls (default: 16)",
    )
    r.add_argument(
        "--max-streams",
        type=positive(int),
        default=128,
        metavar="N",
        help="DecodeStreams open at once, each on a thread of its own beside --threads; more "
        "are refused with RESOURCE_EXHAUSTED (default: 128)",
    )
    r.add_argument(
        "--io-threads",
        type=positive(int),
        default=2,
        metavar="N",
        help="native front: threads doing HTTP/2 and gRPC outside the GIL (default: 2)",
    )
    r.add_argument(
        "--providers",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="execution provider: auto = CUDA when it loads, else CPU (default: auto)",
    )
    r.add_argument(
        "--ort-threads",
        type=non_negative(int),
        default=1,
        metavar="N",
        help="ONNX Runtime intra-op threads per call; concurrency comes from handler threads "
        "(default: 1)",
    )
    r.add_argument(
        "--cpu", type=non_negative(int), metavar="K", help="pin the server process to CPU K (Linux)"
    )
    r.add_argument(
        "--max-receive-mb",
        type=positive(float),
        default=64.0,
        metavar="MB",
        help="largest request message; bigger ones get RESOURCE_EXHAUSTED (default: 64)",
    )
    r.add_argument(
        "--max-send-mb",
        type=positive(float),
        default=256.0,
        metavar="MB",
        help="largest response message (default: 256)",
    )
    r.add_argument(
        "--poll-seconds",
        type=non_negative(float),
        default=2.0,
        metavar="S",
        help="rescan DIR for new or removed versions every S seconds; 0 = never (default: 2)",
    )
    r.add_argument(
        "--require-model",
        action="store_true",
        help="exit with an error (status 1) when no model version loads at startup, e.g. "
        "every package is broken or --providers cuda has no CUDA; without it the server "
        "stays up, health NOT_SERVING, and serves versions as they appear in DIR",
    )
    r.add_argument(
        "--grace-seconds",
        type=non_negative(float),
        default=10.0,
        metavar="S",
        help="on SIGTERM, how long requests in flight may take to finish (default: 10)",
    )
    c = p.add_argument_group(
        "scale-out",
        "gRPC sends every call of a connection to the replica it first reached, so a\n"
        "client connected before a scale-out never uses new replicas until its connection\n"
        "ends. These options end connections by age (gRFC A9).",
    )
    c.add_argument(
        "--max-connection-age-s",
        type=non_negative(float),
        default=0.0,
        metavar="S",
        help="after S seconds (gRPC adds +-10%% jitter) send each client connection a GOAWAY: "
        "calls under way finish, new ones go over a new connection, for which the client "
        "resolves the name again. Use it behind a Kubernetes ClusterIP Service (kube-proxy "
        "balances connections, not calls) and also for dns:/// + round_robin clients of a "
        "headless Service: they spread calls over the pods they know, but gRPC resolves DNS "
        "again only when a connection drops, so this is how they find pods added later. "
        "Not needed behind an L7 proxy or mesh that balances each call (Envoy, Linkerd). "
        "30 to 300 is typical; 0 = never (default: 0). grpcio front only: --frontend auto "
        "picks grpcio when this is set",
    )
    c.add_argument(
        "--max-connection-age-grace-s",
        type=non_negative(float),
        metavar="S",
        help="after that GOAWAY, how long calls under way may still take before the "
        "connection is closed; a DecodeStream cut this way resumes on a new connection in "
        "latentwire's client (default: no limit)",
    )
    s = p.add_argument_group("security")
    s.add_argument("--tls-cert", type=Path, metavar="PEM", help="server certificate (enables TLS)")
    s.add_argument("--tls-key", type=Path, metavar="PEM", help="server private key")
    s.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="PEM",
        help="require client certificates signed by this CA (mutual TLS)",
    )
    s.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="require 'authorization: Bearer <token>' with the token in FILE (or set "
        "LATENTWIRE_TOKEN); health checks stay open",
    )
    p.set_defaults(func=cmd_serve)


def _server_modules() -> Any:
    """runtime/server/app.py, or the one-line hint when the server extra is missing."""
    try:
        from . import app
    except ImportError as exc:  # grpc_health, grpc_reflection or prometheus_client
        raise ImportError(
            f"latentwire serve needs the server extra ({exc.name or exc} is not installed): "
            "pip install 'latentwire[server]'"
        ) from None
    return app


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    app = _server_modules()
    from .batcher import BatchPolicy

    token = os.environ.get("LATENTWIRE_TOKEN") or None
    if args.token_file is not None:
        token = args.token_file.read_text().strip()
        if not token:
            raise LatentwireError(f"--token-file {args.token_file} is empty")
    return app.ServeConfig(  # type: ignore[no-any-return]
        models=args.models,
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        frontend=args.frontend,
        threads=args.threads,
        max_streams=args.max_streams,
        io_threads=args.io_threads,
        policy=BatchPolicy(
            enabled=not args.no_batching,
            max_batch=args.max_batch,
            max_delay=args.max_delay_ms / 1000.0,
            max_queue=args.max_queue,
        ),
        providers=args.providers,
        ort_threads=args.ort_threads,
        poll_seconds=args.poll_seconds,
        max_receive_bytes=int(args.max_receive_mb * app.MiB),
        max_send_bytes=int(args.max_send_mb * app.MiB),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        token=token,
        require_model=args.require_model,
        max_connection_age=args.max_connection_age_s or None,
        max_connection_age_grace=args.max_connection_age_grace_s,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    if args.tls_client_ca and not args.tls_cert:
        raise LatentwireError(
            "--tls-client-ca needs --tls-cert and --tls-key (mutual TLS runs over TLS)"
        )
    if args.max_connection_age_grace_s is not None and not args.max_connection_age_s:
        raise LatentwireError("--max-connection-age-grace-s needs --max-connection-age-s")
    app = _server_modules()
    if args.cpu is not None:
        app.pin_to_cpu(args.cpu)  # before any thread exists, so all of them inherit it
    server = app.Server(config_from_args(args))
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("%s: draining requests in flight", signal.Signals(signum).name)
            threading.Thread(target=server.stop, args=(args.grace_seconds,), daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    if server.metrics_port is not None:
        log.info("metrics on http://%s:%d/metrics", args.host, server.metrics_port)
    server.wait()
    return 0
