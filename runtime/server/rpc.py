"""What every RPC handler shares: error -> status mapping (in one place), metrics, deadlines,
readiness, and grpcio method handlers built around plain functions.

A handler is `fn(request, context) -> response`. It raises LatentwireError subclasses for
anything the caller did wrong; `unary()` turns them into the status code the error names
(with the class name in the trailing metadata key "latentwire-error", so the Python client
raises the same class), counts the request, and times it. Anything else is a bug: it is
logged with its traceback and the caller gets INTERNAL with no traceback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2

from ..errors import ERROR_KEY, InputError, LatentwireError, Overloaded, Unavailable
from .auth import HEALTH_SERVICE
from .metrics import InFlight, Metrics

log = logging.getLogger("latentwire.server")


Handler = Callable[[Any, grpc.ServicerContext], Any]


class Readiness:
    """Whether the server takes work: False while loading and once shutdown begins."""

    def __init__(self) -> None:
        self.ready = False
        self.reason = "the server is still loading its models"

    def check(self) -> None:
        if not self.ready:
            raise Unavailable(self.reason)


def classify(exc: BaseException) -> tuple[str, str, str]:
    """(status code name, message, error class name) for an exception from a handler."""
    if isinstance(exc, LatentwireError):
        return exc.status, str(exc), type(exc).__name__
    log.error("internal error while handling a request", exc_info=exc)
    return (
        "INTERNAL",
        f"internal server error ({type(exc).__name__}); see the server log",
        "ServerError",
    )


def abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    code, message, kind = classify(exc)
    context.set_trailing_metadata(((ERROR_KEY, kind),))
    context.abort(grpc.StatusCode[code], message)
    raise AssertionError("unreachable")  # context.abort raises


def deadline_of(context: grpc.ServicerContext) -> float | None:
    """The caller's deadline as a time.monotonic() value (None: no deadline)."""
    remaining: float | None = context.time_remaining()
    if remaining is None or remaining > 1e8:
        return None
    return time.monotonic() + remaining


def parser(req_cls: Any) -> Callable[[bytes], Any]:
    """bytes -> request message, raising InputError (INVALID_ARGUMENT) for bytes that are
    not one (grpcio would answer INTERNAL "Exception deserializing request!")."""
    parse = req_cls.FromString
    what = req_cls.DESCRIPTOR.name

    def parse_or_refuse(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:  # protobuf's DecodeError derives from Exception only
            raise InputError(f"the request is not a valid {what} message") from None

    return parse_or_refuse


def serialize(response: Any) -> bytes:
    """A reply's bytes: hot handlers build them themselves (wire.py), others return messages."""
    if isinstance(response, bytes):
        return response
    data: bytes = response.SerializeToString()
    return data


class Rpc:
    """Builds grpcio method handlers that count, time and map errors."""

    def __init__(
        self, metrics: Metrics, readiness: Readiness, max_send_bytes: int, max_streams: int
    ) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self.max_send_bytes = max_send_bytes
        self.max_streams = max_streams
        self._streams = 0
        self._streams_lock = threading.Lock()
        self._stream_pool = ThreadPoolExecutor(
            max_workers=max_streams + 4, thread_name_prefix="latentwire-stream"
        )
        self._health_pool = ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="latentwire-health"
        )
        self._inflight: dict[str, InFlight] = {}
        metrics.add_inflight_source(self.inflight)

    def inflight(self) -> Iterator[tuple[str, int]]:
        """(method, calls its handler is running now) for every method built here."""
        for method, counter in self._inflight.items():
            yield method, counter.count

    def _counter(self, method: str) -> InFlight:
        return self._inflight.setdefault(method, InFlight())

    def close(self) -> None:
        """Let the stream and health threads go (the server has ended its calls by now)."""
        self._stream_pool.shutdown(wait=False)
        self._health_pool.shutdown(wait=False)

    def health(self, servicer: health.HealthServicer) -> grpc.GenericRpcHandler:
        """grpc.health.v1.Health with Check on two threads of its own, so that probes are
        answered while every --threads handler is busy (a saturated server is alive; a
        kubelet probe timing out would restart it). Watch streams use the shared pool."""

        def check(request: Any, context: grpc.ServicerContext) -> Any:
            return servicer.Check(request, context)

        check.experimental_thread_pool = self._health_pool  # type: ignore[attr-defined]
        request, response = health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        return grpc.method_handlers_generic_handler(
            HEALTH_SERVICE,
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    check, request.FromString, response.SerializeToString
                ),
                "Watch": grpc.unary_stream_rpc_method_handler(
                    servicer.Watch, request.FromString, response.SerializeToString
                ),
            },
        )

    def _open_stream(self, method: str) -> None:
        with self._streams_lock:
            if self._streams >= self.max_streams:
                raise Overloaded(
                    f"{self._streams} {method}s are already open, this server's limit "
                    f"(--max-streams {self.max_streams}); close one, or send unary requests"
                )
            self._streams += 1

    def _close_stream(self) -> None:
        with self._streams_lock:
            self._streams -= 1

    def check_size(self, size: int) -> None:
        """Refuse a response over the send limit with a message saying what to do (gRPC
        would fail the call anyway, with a less helpful message and after the work)."""
        if size > self.max_send_bytes:
            raise Overloaded(
                f"the response would be {size} bytes, over this server's send limit of "
                f"{self.max_send_bytes} bytes (--max-send-mb); send fewer samples per "
                "request or ask for float16 reconstructions"
            )

    def unary(
        self, method: str, fn: Handler, req_cls: Any, *, needs_ready: bool = True
    ) -> grpc.RpcMethodHandler:
        latency = self.metrics.latency.labels(method)
        ok = self.metrics.requests.labels(method, "OK")
        received = self.metrics.bytes_received.labels(method)
        sent = self.metrics.bytes_sent.labels(method)
        requests = self.metrics.requests
        readiness = self.readiness
        check_size = self.check_size
        parse = parser(req_cls)
        inflight = self._counter(method)

        def handle(data: bytes, context: grpc.ServicerContext) -> bytes:
            t0 = time.perf_counter()
            inflight.enter()
            try:
                received.inc(len(data))
                try:
                    if needs_ready and not readiness.ready:
                        readiness.check()
                    reply = serialize(fn(parse(data), context))
                    check_size(len(reply))
                except Exception as exc:
                    requests.labels(method, classify_code(exc)).inc()
                    latency.observe(time.perf_counter() - t0)
                    abort(context, exc)
                ok.inc()
                sent.inc(len(reply))
                latency.observe(time.perf_counter() - t0)
                return reply
            finally:
                inflight.leave()

        return grpc.unary_unary_rpc_method_handler(handle)

    def stream(
        self,
        method: str,
        fn: Callable[[Iterator[Any], grpc.ServicerContext], Iterator[Any]],
        req_cls: Any,
    ) -> grpc.RpcMethodHandler:
        requests = self.metrics.requests
        latency = self.metrics.latency.labels(method)
        received = self.metrics.bytes_received.labels(method)
        sent = self.metrics.bytes_sent.labels(method)
        readiness = self.readiness
        check_size = self.check_size
        parse = parser(req_cls)
        inflight = self._counter(method)

        def parsed(frames: Iterator[bytes]) -> Iterator[Any]:
            for data in frames:
                received.inc(len(data))
                yield parse(data)

        def handle(frames: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            t0 = time.perf_counter()
            opened = False
            inflight.enter()  # in the body: a stream grpcio never starts is not counted
            try:
                readiness.check()
                self._open_stream(method)
                opened = True
                for response in fn(parsed(frames), context):
                    reply = serialize(response)
                    check_size(len(reply))
                    sent.inc(len(reply))
                    yield reply
            except grpc.RpcError:  # the stream broke under us: client gone or server stopping
                requests.labels(method, "CANCELLED").inc()
                latency.observe(time.perf_counter() - t0)
                return
            except GeneratorExit:  # grpcio closed the handler: the client cancelled
                requests.labels(method, "CANCELLED").inc()
                latency.observe(time.perf_counter() - t0)
                raise
            except Exception as exc:
                requests.labels(method, classify_code(exc)).inc()
                latency.observe(time.perf_counter() - t0)
                abort(context, exc)
            finally:
                inflight.leave()
                if opened:
                    self._close_stream()
            requests.labels(method, "OK").inc()
            latency.observe(time.perf_counter() - t0)

        # grpcio runs a handler on `experimental_thread_pool` when it has one: streams get
        # their own threads (a few spare, so one over the limit is refused, not queued)
        handle.experimental_thread_pool = self._stream_pool  # type: ignore[attr-defined]
        return grpc.stream_stream_rpc_method_handler(handle)


def classify_code(exc: BaseException) -> str:
    return exc.status if isinstance(exc, LatentwireError) else "INTERNAL"
