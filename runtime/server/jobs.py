"""A request's work between parsing and replying, in a form both fronts can run.

A handler turns a parsed request into a `Job`: the graph to run (a Batcher), the request's
wire array, and `finish`, which turns the request's slice of the graph's output into the
serialized reply. The grpcio front runs one job per handler thread through the batcher
(`Job.run`); the native front (native.py) collects the jobs of a whole drain round, checks
and runs each graph's jobs as one ONNX Runtime call, and finishes each job on its own, so a
request that fails after the run (say, non-finite codes) fails alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .batcher import Batcher

Finish = Callable[[np.ndarray], bytes]

EMPTY_CODES = "empty batch: send at least one sample of codes"
EMPTY_INPUTS = "empty batch: send at least one sample"


@dataclass(slots=True)
class Job:
    graph: Batcher
    x: np.ndarray
    """The request's array as it came (`graph.prepare` checks it)."""
    finish: Finish
    """This request's slice of the graph output -> the serialized reply."""

    def run(self, deadline: float | None) -> bytes:
        """Check, run (coalesced with concurrent requests) and finish; for the grpcio front."""
        return self.finish(self.graph.submit(self.x, deadline))


def make_job(graph: Batcher, x: np.ndarray, finish: Finish, *, empty: str) -> Job:
    """A job, refusing an empty batch with the message `empty` (a malformed empty array
    gets its shape or dtype error first, as a non-empty one would)."""
    if x.ndim == 0 or len(x) == 0:
        graph.prepare(x)
        raise InputError(empty)
    return Job(graph, x, finish)


@dataclass(frozen=True)
class HotMethod:
    """A unary method the native front serves itself: bytes -> request -> Job."""

    path: str
    """/package.Service/Method, as on the wire"""
    name: str
    """the method's name in metrics"""
    parse: Callable[[bytes], Any]
    job: Callable[[Any], Job]
