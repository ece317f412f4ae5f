"""The native front: HTTP/2 and gRPC in Rust, calls handed to Python in batches.

pygrpc-native's `NativeGrpcFront` does the connection work (HTTP/2, gRPC framing,
deadlines, cancellation) on tokio threads outside the GIL and queues each call as an event.
One Python thread drains that queue a round at a time:

1. take every call that has arrived (`recv_batch`), parse each request and turn it
   into a Job (jobs.py) with the same handler code the grpcio front runs; a call that fails
   here (bad request, unknown model, missing token) is answered at once;
2. group the jobs by graph and sample shape, check each group's concatenated input once
   (`Batcher.prepare`; on a failure, job by job, so only the culprit fails) and run it as
   one ONNX Runtime call per `max_batch` samples;
3. finish each job on its own slice and answer it by call id.

While a round runs (ONNX Runtime releases the GIL), the next round's calls queue up in
Rust: batches form greedily, with no batching thread and no per-call thread hand-off. A
request larger than `max_batch` runs alone on a worker thread so it does not hold up the
round. `Health/Check` is answered here too, so probes never wait behind busy handlers.

Every other method (DecodeStream, metadata, reflection, health Watch...) reaches the
grpcio server this front forwards to over a Unix socket; see app.py.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2
from pygrpc_native import EVENT_CALL, NativeGrpcFront
from pygrpc_native import __version__ as NATIVE_VERSION

from ..errors import (
    ERROR_KEY,
    LatentwireError,
    Overloaded,
    Unauthenticated,
    Unavailable,
)
from .auth import HEALTH_SERVICE, BearerToken
from .batcher import Batcher, BatchPolicy, expired
from .jobs import HotMethod, Job
from .metrics import Metrics
from .rpc import Readiness, classify, parser, serialize
from .startup import native_stderr_held

__all__ = ["NATIVE_VERSION", "NativeFront"]

log = logging.getLogger("latentwire.server")

HEALTH_CHECK = f"/{HEALTH_SERVICE}/Check"
_MAX_EVENTS = 1024
"""Most calls taken from the queue at once (a round may take several takes when batching
waits, `max_delay`)."""
_STATUS = {code.name: code.value[0] for code in grpc.StatusCode}
_SETTLE_S = 0.05
"""After the front reports every answer written: time for the socket to send the last."""


class _Call:
    __slots__ = ("call_id", "deadline", "job", "method", "t0")

    def __init__(
        self, call_id: int, method: str, job: Job, t0: float, deadline: float | None
    ) -> None:
        self.call_id = call_id
        self.method = method
        self.job = job
        self.t0 = t0
        self.deadline = deadline


class _Round:
    """The calls taken from the queue that will run together, and their metrics (added up
    here and flushed once: prometheus_client costs about 1 µs per update)."""

    __slots__ = (
        "cancelled",
        "codes",
        "deadline",
        "groups",
        "received",
        "samples",
        "sent",
        "t0",
    )

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.groups: dict[Any, list[_Call]] = {}
        self.cancelled: set[int] = set()
        self.samples = 0
        self.deadline = math.inf
        """the earliest deadline of its calls: batching never waits past it"""
        self.codes: Counter[tuple[str, str]] = Counter()
        self.received: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()


class NativeFront:
    """Serves `methods` (and Health/Check) on `address`; forwards the rest to `fallback`."""

    def __init__(
        self,
        address: str,
        methods: Sequence[HotMethod],
        *,
        fallback: str,
        policy: BatchPolicy,
        metrics: Metrics,
        readiness: Readiness,
        health: Callable[[str], int | None],
        token: BearerToken | None,
        max_receive_bytes: int,
        max_send_bytes: int,
        io_threads: int,
    ) -> None:
        self._policy = policy
        self._metrics = metrics
        self._readiness = readiness
        self._health_of = health
        self._token = token
        self._max_receive = max_receive_bytes
        self._max_send = max_send_bytes
        self._methods: list[HotMethod | None] = [*methods, None]  # None: Health/Check
        self._paths = {m.path: m.name for m in methods}
        self._latency = {m.name: metrics.latency.labels(m.name) for m in methods}
        self._parse_health = parser(health_pb2.HealthCheckRequest)
        paths = [(m.path, False) for m in methods] + [(HEALTH_CHECK, False)]
        # Call details (metadata, deadline) cost ~5 µs a call to hand over (measured: 9% of
        # the throughput at 64 clients x 1 sample); they are taken only when something needs
        # them: the token check, or a batching window that must not outlast a deadline.
        # Without them a call that expires while queued is still dropped unrun when its
        # cancel event comes in the same take, and counted as CANCELLED.
        self._details = token is not None or (policy.enabled and policy.max_delay > 0)
        try:
            with native_stderr_held():  # "could not bind": our error below says it
                self._front = NativeGrpcFront(
                    address, paths, io_threads=io_threads, call_details=self._details, metrics=True
                )
        except OSError as exc:
            raise Unavailable(
                f"cannot listen on {address}: {exc.strerror or exc} (the port is in use or "
                "the address is invalid)"
            ) from None
        self._front.set_fallback(fallback)
        self.port: int = self._front.bound_port
        self._thread: threading.Thread | None = None
        self._big = ThreadPoolExecutor(max_workers=2, thread_name_prefix="latentwire-big")
        self._lock = threading.Lock()
        self._busy = 0
        """rounds and lone big requests under way: their calls are taken, not all answered"""
        self._idle = threading.Condition(self._lock)
        metrics.add_inflight_source(self.inflight)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._front.start()
        self._thread = threading.Thread(target=self._serve, name="latentwire-native", daemon=True)
        self._thread.start()

    def drain(self, grace: float) -> None:
        """Wait up to `grace` s for the calls taken so far to be answered and their answers
        written (new calls are refused with UNAVAILABLE once readiness is off), then close
        the port."""
        end = time.monotonic() + grace
        with self._lock:
            while self._busy and (left := end - time.monotonic()) > 0:
                self._idle.wait(left)
        # respond() only queues an answer: closing now could drop it unsent. The front
        # counts a call as ended once its answer is written; wait for that, then a moment
        # for the socket to take the last bytes.
        while self._open_calls() and time.monotonic() < end:
            time.sleep(0.005)
        time.sleep(max(0.0, min(_SETTLE_S, end - time.monotonic())))
        self._front.close()  # answers what is left UNAVAILABLE; recv_batch returns None
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._big.shutdown(wait=False, cancel_futures=True)

    def _open_calls(self) -> int:
        """Calls the front has started and not ended (its own count, forwarded ones too)."""
        stats = self._front.metrics() or {}
        return sum(
            m.get("started", 0) - sum(s.get("count", 0) for s in m.get("status", {}).values())
            for m in stats.get("methods", {}).values()
        )

    def inflight(self) -> Iterator[tuple[str, int]]:
        """(method, calls started and not ended) for the methods served here, from the
        front's own counts: calls queued in Rust, in a round or running alone. Forwarded
        calls are counted by the grpcio handlers they reach."""
        methods = (self._front.metrics() or {}).get("methods", {})
        for path, name in self._paths.items():
            m = methods.get(path, {})
            ended = sum(s.get("count", 0) for s in m.get("status", {}).values())
            yield name, m.get("started", 0) - ended

    # -- the drain loop --------------------------------------------------------------------
    def _serve(self) -> None:
        front, pol = self._front, self._policy
        wait_for_more = pol.enabled and pol.max_delay > 0
        recv = front.recv_batch_details if self._details else front.recv_batch
        while (events := recv(_MAX_EVENTS)) is not None:
            rnd = _Round()
            self._begin()
            try:
                self._accept(events, rnd)
                if wait_for_more and rnd.groups:
                    end = min(rnd.t0 + pol.max_delay, rnd.deadline)
                    while rnd.samples < pol.max_batch and (left := end - time.monotonic()) > 0:
                        more = recv(_MAX_EVENTS, math.ceil(left * 1000))
                        if more is None:
                            break
                        self._accept(more, rnd)
                for calls in rnd.groups.values():
                    self._run_group(calls, rnd)
            except Exception:  # a bug here must not stop the server: fail the round's calls
                log.exception("native front: internal error in a drain round")
                for calls in rnd.groups.values():
                    for call in calls:
                        self._fail(rnd, call.call_id, call.method, RuntimeError("drain round"))
            finally:
                self._flush(rnd)
                self._end()

    def _run_alone(self, call: _Call) -> None:
        """A request larger than max_batch, on a worker thread."""
        rnd = _Round()
        try:
            self._run_group([call], rnd)
        finally:
            self._flush(rnd)
            self._end()

    def _accept(self, events: list[Any], rnd: _Round) -> None:
        """Parse the calls of one take and file their jobs into the round's groups."""
        pol = self._policy
        readiness = self._readiness
        token = self._token
        now = time.monotonic()
        for kind, call_id, method_id, payload, _, *details in events:
            if kind != EVENT_CALL:  # cancelled by the client, or its deadline passed
                rnd.cancelled.add(call_id)
                continue
            m = self._methods[method_id]
            if m is None:
                self._health_check(call_id, payload)
                continue
            metadata, _, remaining = details[0] if details else ((), "", None)
            if token is not None and (reason := token.refusal(metadata)) is not None:
                rnd.codes[m.name, "UNAUTHENTICATED"] += 1
                self._front.fail(
                    call_id,
                    _STATUS["UNAUTHENTICATED"],
                    reason,
                    [(ERROR_KEY, Unauthenticated.__name__)],
                )
                continue
            rnd.received[m.name] += len(payload)
            try:
                if len(payload) > self._max_receive:
                    raise Overloaded(
                        f"Received message larger than max ({len(payload)} vs. "
                        f"{self._max_receive}): this server's --max-receive-mb"
                    )
                if not readiness.ready:
                    readiness.check()
                job = m.job(m.parse(payload))
            except Exception as exc:
                self._fail(rnd, call_id, m.name, exc, now)
                continue
            deadline = None if remaining is None else now + remaining
            call = _Call(call_id, m.name, job, now, deadline)
            x = job.x
            key = (id(job.graph), x.shape[1:], x.dtype) if pol.enabled else call_id
            group = rnd.groups.get(key)
            if group is not None and len(group) >= pol.max_queue:
                self._fail(rnd, call_id, m.name, job.graph.overloaded(len(group)), now)
                continue
            if len(x) > pol.max_batch:  # runs alone, beside the rounds
                self._begin()
                self._big.submit(self._run_alone, call)
                continue
            if group is None:
                rnd.groups[key] = [call]
            else:
                group.append(call)
            rnd.samples += len(x)
            if deadline is not None and deadline < rnd.deadline:
                rnd.deadline = deadline

    def _run_group(self, calls: list[_Call], rnd: _Round) -> None:
        """Run one group's jobs through their graph, `max_batch` samples per call."""
        max_batch = self._policy.max_batch
        chunk: list[_Call] = []
        samples = 0
        now = time.monotonic()
        for call in calls:
            if call.call_id in rnd.cancelled:
                self._gone(rnd, call)
                continue
            if call.deadline is not None and now >= call.deadline:
                self._fail(rnd, call.call_id, call.method, expired(), call.t0)
                continue
            n = len(call.job.x)
            if chunk and samples + n > max_batch:
                self._run_chunk(chunk, rnd)
                chunk, samples = [], 0
            chunk.append(call)
            samples += n
        if chunk:
            self._run_chunk(chunk, rnd)

    def _run_chunk(self, calls: list[_Call], rnd: _Round) -> None:
        graph = calls[0].job.graph
        x = self._prepare(graph, calls, rnd)
        if not calls:
            return
        start = time.monotonic()
        for call in calls:
            graph.observer.queued(start - call.t0)
        try:
            outs = graph.run_split(x, [len(call.job.x) for call in calls])
        except Exception as exc:
            for call in calls:
                self._fail(rnd, call.call_id, call.method, exc, call.t0)
            return
        for call, y in zip(calls, outs, strict=True):
            self._finish(call, y, rnd)

    def _prepare(self, graph: Batcher, calls: list[_Call], rnd: _Round) -> np.ndarray:
        """The group's checked input; calls whose own input is bad are failed and removed
        from `calls` (checked one by one only when the group as a whole fails)."""
        xs = [call.job.x for call in calls]
        try:
            return graph.prepare(xs[0] if len(xs) == 1 else np.concatenate(xs))
        except LatentwireError:
            pass
        good: list[np.ndarray] = []
        keep: list[_Call] = []
        for call in calls:
            try:
                good.append(graph.prepare(call.job.x))
            except LatentwireError as exc:
                self._fail(rnd, call.call_id, call.method, exc, call.t0)
            else:
                keep.append(call)
        calls[:] = keep
        if not good:
            return np.empty(0)
        return good[0] if len(good) == 1 else np.concatenate(good)

    def _finish(self, call: _Call, y: np.ndarray, rnd: _Round) -> None:
        try:
            reply = call.job.finish(y)
            if len(reply) > self._max_send:
                raise Overloaded(
                    f"the response would be {len(reply)} bytes, over this server's send limit "
                    f"of {self._max_send} bytes (--max-send-mb); send fewer samples per "
                    "request or ask for float16 reconstructions"
                )
        except Exception as exc:
            self._fail(rnd, call.call_id, call.method, exc, call.t0)
            return
        if self._front.respond(call.call_id, reply):
            rnd.codes[call.method, "OK"] += 1
            rnd.sent[call.method] += len(reply)
            self._latency[call.method].observe(time.monotonic() - call.t0)
        else:
            self._gone(rnd, call)

    # -- answers -------------------------------------------------------------------------
    def _fail(
        self, rnd: _Round, call_id: int, method: str, exc: BaseException, t0: float | None = None
    ) -> None:
        code, message, kind = classify(exc)
        self._front.fail(call_id, _STATUS[code], message, [(ERROR_KEY, kind)])
        rnd.codes[method, code] += 1
        if t0 is not None:
            self._latency[method].observe(time.monotonic() - t0)

    def _gone(self, rnd: _Round, call: _Call) -> None:
        """The call ended before its answer (the front already told the client why)."""
        late = call.deadline is not None and time.monotonic() >= call.deadline
        rnd.codes[call.method, "DEADLINE_EXCEEDED" if late else "CANCELLED"] += 1
        self._latency[call.method].observe(time.monotonic() - call.t0)

    def _health_check(self, call_id: int, payload: bytes) -> None:
        try:
            service = self._parse_health(payload).service
        except LatentwireError as exc:
            self._front.fail(call_id, _STATUS[exc.status], str(exc))
            return
        status = self._health_of(service)
        if status is None:  # as grpc_health's servicer answers an unknown service
            self._front.fail(call_id, _STATUS["NOT_FOUND"], "")
        else:
            self._front.respond(call_id, serialize(health_pb2.HealthCheckResponse(status=status)))

    # -- bookkeeping -----------------------------------------------------------------------
    def _flush(self, rnd: _Round) -> None:
        m = self._metrics
        for (method, code), n in rnd.codes.items():
            m.requests.labels(method, code).inc(n)
        for method, n in rnd.received.items():
            m.bytes_received.labels(method).inc(n)
        for method, n in rnd.sent.items():
            m.bytes_sent.labels(method).inc(n)

    def _begin(self) -> None:
        with self._lock:
            self._busy += 1

    def _end(self) -> None:
        with self._lock:
            self._busy -= 1
            if not self._busy:
                self._idle.notify_all()
