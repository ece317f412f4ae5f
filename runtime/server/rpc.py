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
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc

from ..errors import ERROR_KEY, LatentwireError, Overloaded, Unavailable
from .metrics import Metrics

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


class Rpc:
    """Builds grpcio method handlers that count, time and map errors."""

    def __init__(self, metrics: Metrics, readiness: Readiness, max_send_bytes: int) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self.max_send_bytes = max_send_bytes

    def check_size(self, response: Any) -> None:
        """Refuse a response over the send limit with a message saying what to do (gRPC
        would fail the call anyway, with a less helpful message and after the work)."""
        size = response.ByteSize()
        if size > self.max_send_bytes:
            raise Overloaded(
                f"the response would be {size} bytes, over this server's send limit of "
                f"{self.max_send_bytes} bytes (--max-send-mb); send fewer samples per "
                "request or ask for float16 reconstructions"
            )

    def _codecs(
        self, method: str, req_cls: Any
    ) -> tuple[Callable[[bytes], Any], Callable[[Any], bytes]]:
        received = self.metrics.bytes_received.labels(method)
        sent = self.metrics.bytes_sent.labels(method)
        parse = req_cls.FromString

        def deserialize(data: bytes) -> Any:
            received.inc(len(data))
            return parse(data)

        def serialize(msg: Any) -> bytes:
            data: bytes = msg.SerializeToString()
            sent.inc(len(data))
            return data

        return deserialize, serialize

    def unary(
        self, method: str, fn: Handler, req_cls: Any, *, needs_ready: bool = True
    ) -> grpc.RpcMethodHandler:
        latency = self.metrics.latency.labels(method)
        ok = self.metrics.requests.labels(method, "OK")
        requests = self.metrics.requests
        readiness = self.readiness
        check_size = self.check_size

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            t0 = time.perf_counter()
            try:
                if needs_ready and not readiness.ready:
                    readiness.check()
                response = fn(request, context)
                check_size(response)
            except Exception as exc:
                requests.labels(method, classify_code(exc)).inc()
                latency.observe(time.perf_counter() - t0)
                abort(context, exc)
            ok.inc()
            latency.observe(time.perf_counter() - t0)
            return response

        deserialize, serialize = self._codecs(method, req_cls)
        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=deserialize, response_serializer=serialize
        )

    def stream(
        self,
        method: str,
        fn: Callable[[Iterator[Any], grpc.ServicerContext], Iterator[Any]],
        req_cls: Any,
    ) -> grpc.RpcMethodHandler:
        requests = self.metrics.requests
        latency = self.metrics.latency.labels(method)
        readiness = self.readiness

        check_size = self.check_size

        def handle(request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            t0 = time.perf_counter()
            try:
                readiness.check()
                for response in fn(request_iterator, context):
                    check_size(response)
                    yield response
            except Exception as exc:
                requests.labels(method, classify_code(exc)).inc()
                latency.observe(time.perf_counter() - t0)
                abort(context, exc)
            requests.labels(method, "OK").inc()
            latency.observe(time.perf_counter() - t0)

        deserialize, serialize = self._codecs(method, req_cls)
        return grpc.stream_stream_rpc_method_handler(
            handle, request_deserializer=deserialize, response_serializer=serialize
        )


def classify_code(exc: BaseException) -> str:
    return exc.status if isinstance(exc, LatentwireError) else "INTERNAL"
