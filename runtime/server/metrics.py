"""Prometheus metrics of the decoding server (served on --metrics-port at /metrics).

    latentwire_requests_total{method, code}                 finished RPCs by status code
    latentwire_request_seconds{method}                      RPC latency (histogram)
    latentwire_queue_seconds{model, version, role}          wait in the batching queue
    latentwire_batch_samples{model, version, role}          samples per ONNX Runtime call
    latentwire_batch_requests{model, version, role}         requests coalesced per call
    latentwire_bytes_received_total{method} / _sent_total   message payload bytes
    latentwire_scored_samples_total{model}                  samples scored (Score, V2 scorer)
    latentwire_anomalies_total{model}                       of those, flagged as anomalies
    latentwire_models_loaded                                loaded model versions
    latentwire_inflight_requests{method}                    requests being handled now,
                                                            queued ones included (below)
    latentwire_model_load_failures_total{model, version}    failed attempts to load a version
                                                            (at startup or dropped in later;
                                                            one per change of its files)

Both fronts count the same way. One difference in what the native front can know: with
neither a token nor a batching window configured it does not ask for call details (they cost
~5 µs a call), so a call that expires while queued in its Rust layer is counted CANCELLED
rather than DEADLINE_EXCEEDED.

`latentwire_inflight_requests` is the autoscaling signal (a Kubernetes HPA Pods metric): calls
that have arrived and not yet ended (answered, failed, cancelled or expired). It counts
calls queued for a batch and, on the native front, calls still queued in its Rust layer; on
either front, calls waiting for a free grpcio handler thread (--threads) are counted under
method="" (their method is not known yet). A DecodeStream counts for as long as it is
open, so where clients keep streams open scale on
`sum(latentwire_inflight_requests{method!="DecodeStream"})`. grpc.health.v1 checks are not
counted. The value is read from cheap counters when /metrics is scraped: the hot path pays
one itertools.count step per call start and end (InFlight).

Each metrics object owns its own CollectorRegistry, so several servers can live in one
process (the tests do this) without clashing in prometheus_client's global registry.
"""

from __future__ import annotations

import itertools
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from ..errors import Unavailable
from .batcher import Observer

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


INFLIGHT = "latentwire_inflight_requests"
_INFLIGHT_HELP = (
    'Requests being handled now, queued ones included (method="": waiting for a handler thread)'
)
InflightSource = Callable[[], Iterable[tuple[str, int]]]
"""Yields (method, calls in flight) pairs; read when /metrics is scraped."""


class InFlight:
    """Calls of one method being handled now: `enter()` when a handler starts, `leave()`
    once it has ended, whatever the outcome. Two itertools.count objects: `next()` on one
    is a single C call, atomic under the GIL (~0.1 µs; a threading.Lock taken and released
    costs several times that)."""

    __slots__ = ("_ended", "_started", "enter", "leave")

    def __init__(self) -> None:
        self._started = itertools.count()
        self._ended = itertools.count()
        self.enter: Callable[[], int] = self._started.__next__
        self.leave: Callable[[], int] = self._ended.__next__

    @property
    def count(self) -> int:
        ended = _peek(self._ended)  # first: a call leaves after it enters, so never < 0
        return _peek(self._started) - ended


def _peek(counter: itertools.count[int]) -> int:
    """The value `next(counter)` would return, without taking it: repr is "count(N)"."""
    return int(repr(counter)[6:-1])


class _InflightCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(INFLIGHT, _INFLIGHT_HELP, labels=["method"])

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(INFLIGHT, _INFLIGHT_HELP, labels=["method"])
        for method, n in sorted(self._metrics.inflight().items()):
            family.add_metric([method], n)
        yield family


class _GraphObserver(Observer):
    def __init__(self, metrics: Metrics, labels: tuple[str, str, str]) -> None:
        self._queue = metrics.queue_seconds.labels(*labels)
        self._samples = metrics.batch_samples.labels(*labels)
        self._requests = metrics.batch_requests.labels(*labels)

    def batch(self, samples: int, requests: int) -> None:
        self._samples.observe(samples)
        self._requests.observe(requests)

    def queued(self, seconds: float) -> None:
        self._queue.observe(seconds)


class Metrics:
    def __init__(self) -> None:
        self._http: Any = None
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "latentwire_requests",
            "Finished RPCs by method and gRPC status code",
            ["method", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "latentwire_request_seconds",
            "RPC latency in seconds, from handler start to reply",
            ["method"],
            buckets=_LATENCY,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "latentwire_queue_seconds",
            "Seconds a request waited for its batch to start",
            ["model", "version", "role"],
            buckets=_LATENCY,
            registry=r,
        )
        self.batch_samples = Histogram(
            "latentwire_batch_samples",
            "Samples per ONNX Runtime call",
            ["model", "version", "role"],
            buckets=_BATCH,
            registry=r,
        )
        self.batch_requests = Histogram(
            "latentwire_batch_requests",
            "Requests coalesced into one ONNX Runtime call",
            ["model", "version", "role"],
            buckets=_BATCH,
            registry=r,
        )
        self.bytes_received = Counter(
            "latentwire_bytes_received", "Request message bytes", ["method"], registry=r
        )
        self.bytes_sent = Counter(
            "latentwire_bytes_sent", "Response message bytes", ["method"], registry=r
        )
        self.scored_samples = Counter(
            "latentwire_scored_samples",
            "Samples given an anomaly score (Score RPC and V2 <name>.scorer)",
            ["model"],
            registry=r,
        )
        self.anomalies = Counter(
            "latentwire_anomalies",
            "Scored samples flagged as anomalies (score above the threshold)",
            ["model"],
            registry=r,
        )
        self.models_loaded = Gauge("latentwire_models_loaded", "Model versions loaded", registry=r)
        self.load_failures = Counter(
            "latentwire_model_load_failures",
            "Failed attempts to load a model version (the versions loaded keep serving)",
            ["model", "version"],
            registry=r,
        )
        self._inflight_sources: list[InflightSource] = []
        r.register(_InflightCollector(self))

    def add_inflight_source(self, source: InflightSource) -> None:
        """Count the calls `source` reports in `latentwire_inflight_requests`."""
        self._inflight_sources.append(source)

    def inflight(self) -> dict[str, int]:
        """Calls in flight now by method, summed over the sources (every method a source
        knows is listed, at 0 when idle, so the series exist before the first call)."""
        total: Tally[str] = Tally()
        for source in self._inflight_sources:
            for method, n in source():
                total[method] += n
        return {method: max(n, 0) for method, n in total.items()}

    def load_failed(self, name: str, version: str, reason: str) -> None:
        """Count a version that failed to load (Registry's on_failure hook)."""
        self.load_failures.labels(name, version).inc()

    def scored(self, model: str, samples: int, flagged: int) -> None:
        """Count one answered scoring request: `samples` scored, `flagged` of them anomalies."""
        self.scored_samples.labels(model).inc(samples)
        if flagged:
            self.anomalies.labels(model).inc(flagged)
        else:  # the series exists (at 0) from the first scored sample on
            self.anomalies.labels(model)

    def observer(self, name: str, version: str, role: str) -> Observer:
        return _GraphObserver(self, (name, version, role))

    def exposition(self) -> bytes:
        """The current metrics in Prometheus' text format."""
        return generate_latest(self.registry)

    def serve(self, port: int, address: str = "0.0.0.0") -> int:
        """Serve /metrics over HTTP in a daemon thread; returns the bound port."""
        try:
            self._http, _thread = start_http_server(port, addr=address, registry=self.registry)
        except OSError as exc:
            raise Unavailable(
                f"cannot serve metrics on {address}:{port}: {exc.strerror or exc}"
            ) from None
        return int(self._http.server_port)

    def close(self) -> None:
        """Stop the /metrics HTTP server and free its port."""
        http, self._http = self._http, None
        if http is not None:
            http.shutdown()
            http.server_close()
