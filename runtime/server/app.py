"""Assemble and run the decoding server: one port for latentwire.v1.Codec, KServe V2,
grpc.health.v1 and reflection; Prometheus metrics on another.

Server model (measured, see benchmarks/serve.py and ../shared/DESIGN.md): grpcio's sync
server with a small handler pool calling ONNX Runtime directly (ORT releases the GIL), one
intra-op ORT thread per call, and batching done by the handler threads themselves
(runtime/server/batcher.py), so a lone request never waits on another thread.

Lifecycle: `start()` binds the port with health NOT_SERVING, loads and warms up every
package, then reports SERVING. `stop()` reports NOT_SERVING, refuses new calls, lets calls
in flight finish (up to `grace` seconds) and stops the repository watcher.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .. import _ort
from ..errors import ERROR_KEY, Unavailable
from . import reflection
from .batcher import BatchPolicy
from .codec import SERVICE as CODEC_SERVICE
from .codec import CodecService
from .metrics import Metrics
from .registry import Registry
from .rpc import Readiness, Rpc
from .v2 import SERVICE as V2_SERVICE
from .v2 import V2Service

log = logging.getLogger("latentwire.server")

MiB = 1 << 20
HEALTH_SERVICE = "grpc.health.v1.Health"


@dataclass
class ServeConfig:
    models: Path
    host: str = "[::]"
    port: int = 8001
    metrics_port: int | None = None
    threads: int = 16
    """grpcio handler threads. Each open DecodeStream holds one for its lifetime."""
    policy: BatchPolicy = field(default_factory=BatchPolicy)
    providers: _ort.Providers = "auto"
    ort_threads: int = 1
    poll_seconds: float = 2.0
    """Rescan the repository this often for new/removed versions (0 = never)."""
    max_receive_bytes: int = 64 * MiB
    max_send_bytes: int = 256 * MiB
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    """With a CA, clients must present a certificate it signed (mutual TLS)."""
    token: str | None = None
    """Bearer token required on every call except health checks."""
    warmup: bool = True


class _TokenAuth(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls without `authorization: Bearer <token>` (health checks are exempt,
    so load balancers and Kubernetes probes need no secret)."""

    def __init__(self, token: str, on_refuse: Callable[[str], None]) -> None:
        self._expected = f"Bearer {token}".encode()
        self._on_refuse = on_refuse

    def intercept_service(
        self, continuation: Callable[[Any], grpc.RpcMethodHandler | None], details: Any
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or details.method.startswith(f"/{HEALTH_SERVICE}/"):
            return handler
        got = next((v for k, v in details.invocation_metadata if k == "authorization"), "")
        got_b = got.encode() if isinstance(got, str) else bytes(got)
        if hmac.compare_digest(got_b, self._expected):
            return handler
        method = details.method.rsplit("/", 1)[-1]
        self._on_refuse(method)
        reason = (
            "wrong bearer token"
            if got
            else "missing bearer token (metadata 'authorization: Bearer <token>')"
        )

        def refuse(request: Any, context: grpc.ServicerContext) -> Any:
            context.set_trailing_metadata(((ERROR_KEY, "Unauthenticated"),))
            context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(refuse)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(refuse)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(refuse)
        return grpc.unary_unary_rpc_method_handler(refuse)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise Unavailable(f"cannot read {what} {path}: {exc.strerror}") from None


class Server:
    """One decoding server. `start()` returns the bound port (port 0 picks a free one)."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = cfg = config
        self.metrics = Metrics()
        self.readiness = Readiness()
        self.registry = Registry(
            cfg.models,
            policy=cfg.policy,
            providers=cfg.providers,
            ort_threads=cfg.ort_threads,
            observer=self.metrics.observer,
            warmup=cfg.warmup,
        )
        self.metrics.models_loaded.set_function(lambda: len(self.registry.versions()))
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._server: grpc.Server | None = None
        self._stopped = threading.Event()
        self._done = threading.Event()

    # -- building ------------------------------------------------------------------------
    def _build(self) -> grpc.Server:
        cfg = self.config
        interceptors = []
        if cfg.token:
            refused = self.metrics.requests
            interceptors.append(
                _TokenAuth(cfg.token, lambda m: refused.labels(m, "UNAUTHENTICATED").inc())
            )
        server = grpc.server(
            ThreadPoolExecutor(max_workers=cfg.threads, thread_name_prefix="latentwire-rpc"),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", cfg.max_receive_bytes),
                ("grpc.max_send_message_length", cfg.max_send_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        rpc = Rpc(self.metrics, self.readiness, cfg.max_send_bytes)
        server.add_generic_rpc_handlers(
            (
                CodecService(self.registry).handler(rpc),
                V2Service(self.registry, self.readiness).handler(rpc),
            )
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable(server, [CODEC_SERVICE, HEALTH_SERVICE])
        address = f"{cfg.host}:{cfg.port}"
        if cfg.tls_cert or cfg.tls_key:
            if not (cfg.tls_cert and cfg.tls_key):
                raise Unavailable("TLS needs both --tls-cert and --tls-key")
            ca = _read(cfg.tls_client_ca, "client CA") if cfg.tls_client_ca else None
            creds = grpc.ssl_server_credentials(
                [(_read(cfg.tls_key, "TLS key"), _read(cfg.tls_cert, "TLS certificate"))],
                root_certificates=ca,
                require_client_auth=ca is not None,
            )
        elif cfg.tls_client_ca:
            raise Unavailable("mutual TLS (--tls-client-ca) needs --tls-cert and --tls-key")
        try:
            port = (
                server.add_secure_port(address, creds)
                if cfg.tls_cert
                else server.add_insecure_port(address)
            )
        except RuntimeError:  # grpcio raises instead of returning 0 since 1.6x
            port = 0
        if port == 0:
            raise Unavailable(
                f"cannot listen on {address}: the port is in use or the address is invalid"
            )
        self.port = port
        return server

    def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", CODEC_SERVICE, V2_SERVICE):
            self.health.set(name, status)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, *, load: bool = True) -> int:
        """Listen (NOT_SERVING), then `load()` unless told not to; returns the port."""
        self._server = self._build()
        self._set_health(False)
        self._server.start()
        if self.config.metrics_port is not None:
            try:
                host = self.config.host.strip("[]")
                bind = "0.0.0.0" if host in ("", "::", "0.0.0.0") else host
                self.metrics_port = self.metrics.serve(self.config.metrics_port, bind)
            except Exception:
                self._server.stop(0).wait()  # free the gRPC port we already hold
                raise
        log.info("listening on %s:%d", self.config.host, self.port)
        if load:
            self.load()
        return int(self.port or 0)

    def load(self) -> None:
        """Load and warm up every package, report SERVING, start watching the repository."""
        self.registry.scan()
        loaded = self.registry.versions()
        if not loaded:
            log.warning(
                "no model packages under %s yet (expected DIR/<name>/<version>/)",
                self.registry.root,
            )
        self.readiness.ready = True
        self._set_health(True)
        if self.config.poll_seconds > 0:
            self.registry.watch(self.config.poll_seconds)
        log.info(
            "serving %d model version(s): %s",
            len(loaded),
            ", ".join(f"{v.name}/{v.version}" for v in loaded) or "none",
        )

    def stop(self, grace: float = 10.0) -> None:
        """Report NOT_SERVING, refuse new calls, finish calls in flight, then stop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.readiness.ready = False
        self.readiness.reason = "the server is shutting down"
        self.health.enter_graceful_shutdown()
        self.registry.stop()
        if self._server is not None:
            self._server.stop(grace).wait()
        self.metrics.close()
        log.info("stopped")
        self._done.set()

    def wait(self) -> None:
        """Block until `stop()` has finished (requests drained, ports released)."""
        while not self._done.wait(0.5):  # a timeout keeps signal handlers responsive
            pass


def pin_to_cpu(cpu: int) -> None:
    """Pin this process to one CPU (call before any thread starts: threads inherit it)."""
    if not hasattr(os, "sched_setaffinity"):
        raise Unavailable("--cpu needs Linux (os.sched_setaffinity)")
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        raise Unavailable(f"cannot pin to CPU {cpu}: {exc.strerror}") from None
