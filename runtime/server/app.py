"""Assemble and run the decoding server: one port for latentwire.v1.Codec, KServe V2,
grpc.health.v1 and reflection; Prometheus metrics on another.

Two fronts serve that port (`--frontend`, measured in benchmarks/serve.py):

- **native** (the default when pygrpc-native is installed and no TLS is asked for):
  HTTP/2 and gRPC run in Rust; V2 ModelInfer, Codec Decode, Encode and Score and Health/Check
  reach one Python thread in batches and run as one ONNX Runtime call per graph (native.py).
  Every other method goes on to a grpcio server on a private Unix socket behind it.
- **grpcio**: grpcio's sync server for everything, batching done by the handler threads
  themselves (batcher.py). It is the pure-Python fallback and the one that speaks TLS.

Both run the same handlers (codec.py, v2.py), errors, token check, limits and metrics.

Lifecycle: `start()` binds the port with health NOT_SERVING, loads and warms up every
package, then reports SERVING while at least one model version is loaded. Packages that fail
to load are named with their reason, one line each, and counted; with none loaded the server
stays up NOT_SERVING and picks versions up as they appear (or, with `require_model`, stops
and raises). `stop()` reports NOT_SERVING, refuses new calls, lets calls in flight finish
(up to `grace` seconds) and stops the repository watcher.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import grpc
from grpc_health.v1 import health, health_pb2

from .. import _ort
from ..errors import ModelNotFound, PackageError, Unavailable
from . import reflection
from .auth import HEALTH_SERVICE, BearerToken, TokenAuth
from .batcher import BatchPolicy
from .codec import SERVICE as CODEC_SERVICE
from .codec import CodecService
from .metrics import Metrics
from .registry import Registry
from .rpc import Readiness, Rpc
from .startup import check_tls_files, native_stderr_held
from .v2 import SERVICE as V2_SERVICE
from .v2 import V2Service

if TYPE_CHECKING:
    from .native import NativeFront

log = logging.getLogger("latentwire.server")

MiB = 1 << 20
Frontend = Literal["auto", "native", "grpcio"]
_SERVICES = ("", CODEC_SERVICE, V2_SERVICE)
"""the names health checks answer for ("" = the whole server)"""


@dataclass
class ServeConfig:
    models: Path
    host: str = "[::]"
    port: int = 8001
    metrics_port: int | None = None
    frontend: Frontend = "auto"
    """native: pygrpc-native's Rust front for the hot calls; grpcio: grpcio for all; auto:
    native when pygrpc-native imports and no TLS is asked for, else grpcio."""
    threads: int = 16
    """grpcio handler threads for unary calls (on the native front: the methods it forwards)."""
    max_streams: int = 128
    """DecodeStreams open at once. Each holds a thread for its life, from a pool of its own,
    so open streams never starve unary calls or health checks. More are refused."""
    io_threads: int = 2
    """native front: tokio threads doing HTTP/2 outside the GIL."""
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
    require_model: bool = False
    """Refuse to start (stop and raise) when no model version loads at startup, instead of
    staying up NOT_SERVING until one appears."""
    max_connection_age: float | None = None
    """Seconds (gRPC adds +-10% jitter) after which a client connection gets a GOAWAY and
    its client reconnects, resolving the name again: how an L4 load balancer (a Kubernetes
    ClusterIP Service) and DNS round_robin clients spread load onto new replicas. None or
    0: never. grpcio front only."""
    max_connection_age_grace: float | None = None
    """After that GOAWAY, how long calls still running may take before the connection is
    closed (None: as long as they need)."""


def native_available() -> bool:
    return importlib.util.find_spec("pygrpc_native") is not None


def choose_frontend(cfg: ServeConfig) -> tuple[str, str]:
    """(front, why) for a config; refuses a native front that cannot run."""
    tls = bool(cfg.tls_cert or cfg.tls_key or cfg.tls_client_ca)
    if cfg.frontend == "grpcio":
        return "grpcio", "--frontend grpcio"
    if cfg.frontend == "native":
        if tls:
            raise Unavailable(
                "--frontend native does not speak TLS (pygrpc-native has none yet); use "
                "--frontend grpcio or auto for TLS, or terminate TLS in front of the server"
            )
        if cfg.max_connection_age:
            raise Unavailable(
                "--frontend native cannot close connections by age (pygrpc-native has no "
                "max_connection_age); use --frontend grpcio (or auto, which picks it) with "
                "--max-connection-age-s"
            )
        if not native_available():
            raise Unavailable(
                "--frontend native needs pygrpc-native: pip install 'latentwire[server]'"
            )
        return "native", "--frontend native"
    if cfg.frontend != "auto":
        raise Unavailable(f"--frontend must be auto, native or grpcio, got {cfg.frontend!r}")
    if tls:
        return "grpcio", "TLS was asked for and the native front has no TLS"
    if cfg.max_connection_age:
        return "grpcio", "--max-connection-age-s was given and the native front has no such option"
    if not native_available():
        return "grpcio", "pygrpc-native is not installed (pip install 'latentwire[server]')"
    return "native", "pygrpc-native is installed and no TLS was asked for"


def connection_age_options(cfg: ServeConfig) -> list[tuple[str, int]]:
    """grpcio server options for `max_connection_age` (gRFC A9); none when it is off."""
    if not cfg.max_connection_age:
        return []
    options = [("grpc.max_connection_age_ms", max(1, round(cfg.max_connection_age * 1000)))]
    if cfg.max_connection_age_grace is not None:
        options.append(
            ("grpc.max_connection_age_grace_ms", round(cfg.max_connection_age_grace * 1000))
        )
    return options


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
            on_change=self._models_changed,
            on_failure=self.metrics.load_failed,
        )
        self.metrics.models_loaded.set_function(lambda: len(self.registry.versions()))
        self._codec = CodecService(self.registry, self.metrics)
        self._v2 = V2Service(self.registry, self.readiness, self.metrics)
        self._rpc = Rpc(self.metrics, self.readiness, cfg.max_send_bytes, cfg.max_streams)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self._health_status: dict[str, int] = {}
        """what `health` answers, readable without its lock (the native front's Check)"""
        self.frontend: str | None = None
        """"native" or "grpcio" once started"""
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._server: grpc.Server | None = None
        self._native: NativeFront | None = None
        self._socket_dir: str | None = None
        self._stopped = threading.Event()
        self._done = threading.Event()

    # -- building ------------------------------------------------------------------------
    def _build_grpcio(self, address: str, *, tls: bool) -> tuple[grpc.Server, int]:
        """The grpcio server: every method, on `address` (the port, or behind the native
        front a Unix socket)."""
        cfg = self.config
        interceptors = []
        if cfg.token:
            refused = self.metrics.requests
            interceptors.append(
                TokenAuth(
                    BearerToken(cfg.token), lambda m: refused.labels(m, "UNAUTHENTICATED").inc()
                )
            )
        # unary calls; streams run on a pool of their own (Rpc.stream)
        pool = ThreadPoolExecutor(max_workers=cfg.threads, thread_name_prefix="latentwire-rpc")
        # calls grpcio has taken that wait for a free thread: in flight, method unknown yet
        self.metrics.add_inflight_source(lambda: (("", pool._work_queue.qsize()),))
        server = grpc.server(
            pool,
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", cfg.max_receive_bytes),
                ("grpc.max_send_message_length", cfg.max_send_bytes),
                ("grpc.so_reuseport", 0),
                *connection_age_options(cfg),
            ],
        )
        rpc = self._rpc
        server.add_generic_rpc_handlers(
            (self._codec.handler(rpc), self._v2.handler(rpc), rpc.health(self.health))
        )
        reflection.enable(server, [CODEC_SERVICE, HEALTH_SERVICE])
        creds = self._tls_credentials() if tls else None
        try:
            with native_stderr_held():  # grpc-core's own log lines: ours says it in one
                port = (
                    server.add_secure_port(address, creds)
                    if creds is not None
                    else server.add_insecure_port(address)
                )
        except RuntimeError:  # grpcio raises instead of returning 0 since 1.6x
            port = 0
        if port == 0:
            raise Unavailable(
                f"cannot listen on {address}: the port is in use or the address is invalid"
            )
        return server, port

    def _tls_credentials(self) -> grpc.ServerCredentials | None:
        cfg = self.config
        if cfg.tls_cert or cfg.tls_key:
            if not (cfg.tls_cert and cfg.tls_key):
                raise Unavailable("TLS needs both --tls-cert and --tls-key")
            check_tls_files(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca)
            ca = _read(cfg.tls_client_ca, "client CA") if cfg.tls_client_ca else None
            return grpc.ssl_server_credentials(
                [(_read(cfg.tls_key, "TLS key"), _read(cfg.tls_cert, "TLS certificate"))],
                root_certificates=ca,
                require_client_auth=ca is not None,
            )
        if cfg.tls_client_ca:
            raise Unavailable("mutual TLS (--tls-client-ca) needs --tls-cert and --tls-key")
        return None

    def _build_native(self, address: str) -> None:
        """The native front on `address`, with the grpcio server behind it on a socket."""
        from .native import NativeFront

        cfg = self.config
        self._socket_dir = tempfile.mkdtemp(prefix="latentwire-")
        socket = os.path.join(self._socket_dir, "grpcio.sock")
        self._server, _ = self._build_grpcio(f"unix:{socket}", tls=False)
        self._native = NativeFront(
            address,
            [*self._codec.hot_methods(), *self._v2.hot_methods()],
            fallback=socket,
            policy=cfg.policy,
            metrics=self.metrics,
            readiness=self.readiness,
            health=self._health_status.get,
            token=BearerToken(cfg.token) if cfg.token else None,
            max_receive_bytes=cfg.max_receive_bytes,
            max_send_bytes=cfg.max_send_bytes,
            io_threads=cfg.io_threads,
        )
        self.port = self._native.port

    def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in _SERVICES:
            self.health.set(name, status)
            self._health_status[name] = status

    def _models_changed(self) -> None:
        """Health follows the repository: SERVING while at least one version is loaded."""
        if self.readiness.ready and not self._stopped.is_set():
            self._set_health(bool(self.registry.versions()))

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, *, load: bool = True) -> int:
        """Listen (NOT_SERVING), then `load()` unless told not to; returns the port."""
        cfg = self.config
        self.frontend, why = choose_frontend(cfg)
        address = f"{cfg.host}:{cfg.port}"
        try:
            if self.frontend == "native":
                self._build_native(address)
            else:
                self._server, self.port = self._build_grpcio(address, tls=True)
        except Exception:
            if self._server is not None:  # the grpcio server behind a native front that failed
                self._server.stop(0)
            self._cleanup()
            raise
        self._set_health(False)
        assert self._server is not None
        self._server.start()
        if self._native is not None:
            self._native.start()
        if cfg.metrics_port is not None:
            try:
                self.metrics_port = self._serve_metrics(cfg.metrics_port)
            except Exception:
                self._close_ports(0)  # free the gRPC port we already hold
                raise
        log.info("listening on %s:%d (%s front: %s)", cfg.host, self.port, self.frontend, why)
        if cfg.max_connection_age:
            grace = cfg.max_connection_age_grace
            log.info(
                "connections get a GOAWAY after %gs (+-10%%), then calls under way %s; "
                "clients reconnect, resolving the name again",
                cfg.max_connection_age,
                "finish with no time limit" if grace is None else f"have {grace:g}s to finish",
            )
        if load:
            try:
                self.load()
            except Exception:
                self.stop(grace=0)  # nothing was served: free the ports and go
                raise
        return int(self.port or 0)

    def _serve_metrics(self, port: int) -> int:
        """/metrics on the gRPC port's interfaces. All interfaces ("[::]", the default) means
        IPv6 and IPv4 (a dual-stack socket, as gRPC binds), so IPv6-only clusters can scrape
        it; 0.0.0.0 where the host has no IPv6."""
        host = self.config.host.strip("[]")
        if host not in ("", "::"):
            return self.metrics.serve(port, host)
        try:
            return self.metrics.serve(port, "::")
        except Unavailable:
            return self.metrics.serve(port, "0.0.0.0")

    def load(self) -> None:
        """Load and warm up every package, then report SERVING if at least one loaded (and
        as soon as one does); start watching the repository. Says which versions failed to
        load and why; with `require_model` and none loaded, raises instead."""
        self.registry.scan()
        loaded = self.registry.versions()
        failed = self.registry.failures()
        root = self.registry.root
        if not loaded and self.config.require_model:
            if failed:
                why = "; ".join(f"{n}/{v}: {reason}" for (n, v), reason in failed.items())
                raise PackageError(
                    f"--require-model: 0 of {len(failed)} model version(s) under {root} "
                    f"loaded ({why})"
                )
            raise ModelNotFound(
                f"--require-model: no model packages under {root} (expected "
                "DIR/<name>/<version>/manifest.json)"
            )
        self.readiness.ready = True
        self._set_health(bool(loaded))
        if self.config.poll_seconds > 0:
            self.registry.watch(self.config.poll_seconds)
        names = ", ".join(f"{n}/{v}" for n, v in failed)
        serving = ", ".join(f"{v.name}/{v.version}" for v in loaded)
        if loaded and failed:
            log.warning(
                "serving %d of %d model versions: %s (not loaded: %s; reasons above)",
                len(loaded),
                len(loaded) + len(failed),
                serving,
                names,
            )
        elif loaded:
            log.info("serving %d model version(s): %s", len(loaded), serving)
        else:
            what = (
                f"loaded 0 of {len(failed)} model version(s) under {root} (not loaded: "
                f"{names}; reasons above)"
                if failed
                else f"no model packages under {root} yet (expected DIR/<name>/<version>/)"
            )
            until = (
                "until one loads (a failed version is tried again when its files change)"
                if self.config.poll_seconds > 0
                else "(--poll-seconds 0: the repository is not rescanned; restart once fixed)"
            )
            log.log(
                logging.ERROR if failed else logging.WARNING,
                "%s; health stays NOT_SERVING %s",
                what,
                until,
            )

    def stop(self, grace: float = 10.0) -> None:
        """Report NOT_SERVING, refuse new calls, finish calls in flight, then stop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.readiness.ready = False
        self.readiness.reason = "the server is shutting down"
        self.health.enter_graceful_shutdown()
        for name in _SERVICES:
            self._health_status[name] = health_pb2.HealthCheckResponse.NOT_SERVING
        self.registry.stop()
        self._close_ports(grace)
        self._rpc.close()
        self.metrics.close()
        log.info("stopped")
        self._done.set()

    def _close_ports(self, grace: float) -> None:
        stopped = self._server.stop(grace) if self._server is not None else None
        if self._native is not None:
            self._native.drain(grace)
        if stopped is not None:
            stopped.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

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
