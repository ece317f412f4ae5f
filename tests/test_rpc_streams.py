"""A DecodeStream whose client goes away (or whose server stops) while its handler waits
for the next message is a cancelled call, not a server bug: no INTERNAL, no traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from latentwire.runtime._proto.v1 import codec_pb2
from latentwire.runtime.server.metrics import Metrics
from latentwire.runtime.server.rpc import Readiness, Rpc


class _Broken(grpc.RpcError):  # type: ignore[misc]
    """What grpcio's request iterator raises when the stream breaks under the handler."""


class _Context:
    def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"aborted with {code}: {details}")

    def set_trailing_metadata(self, md: Any) -> None:
        pass


def _handler(echo_count: int) -> tuple[Any, Metrics]:
    metrics = Metrics()
    readiness = Readiness()
    readiness.ready = True
    rpc = Rpc(metrics, readiness, max_send_bytes=1 << 20, max_streams=4)

    def echo(requests: Iterator[Any], context: Any) -> Iterator[Any]:
        yield from requests

    return rpc.stream("DecodeStream", echo, codec_pb2.DecodeRequest).stream_stream, metrics


ONE = codec_pb2.DecodeRequest(id="one").SerializeToString()
TWO = codec_pb2.DecodeRequest(id="two").SerializeToString()


def _frames() -> Iterator[bytes]:
    yield ONE
    raise _Broken()


def _count(metrics: Metrics, code: str) -> float:
    value = metrics.registry.get_sample_value(
        "latentwire_requests_total", {"method": "DecodeStream", "code": code}
    )
    return value or 0.0


def test_a_stream_broken_under_the_handler_is_cancelled_not_internal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handle, metrics = _handler(1)
    with caplog.at_level(logging.DEBUG):
        assert list(handle(_frames(), _Context())) == [ONE]
    assert _count(metrics, "CANCELLED") == 1
    assert _count(metrics, "INTERNAL") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_stream_closed_by_grpcio_is_counted_cancelled() -> None:
    handle, metrics = _handler(1)
    replies = handle(iter([ONE, TWO]), _Context())
    assert next(replies) == ONE
    replies.close()  # grpcio closes the generator when the client cancels
    assert _count(metrics, "CANCELLED") == 1
    assert _count(metrics, "OK") == 0
