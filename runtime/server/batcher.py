"""Dynamic batching without a batching thread, for the grpcio front (the native front
batches per drain round instead, native.py, through `prepare` and `run_split`).

Requests for one graph are coalesced by the handler threads themselves (leader/follower):
the first request to arrive when the graph is idle becomes the *leader*; it takes every
request queued so far (up to `max_batch` samples), runs them as one ONNX Runtime call,
hands each follower its slice, and passes leadership to the oldest request still queued.
Followers sleep on their own event until their result (or leadership) arrives.

Why no dedicated worker thread: on this class of machine a thread wake-up costs ~55 µs,
and a lone request (1 client × 1 sample) would pay two of them for nothing. Here it pays
none: it runs inline. Under load, batches form greedily from whatever queued while the
previous run was going (`max_delay` = 0), or the leader waits up to `max_delay` for the
batch to fill.

Requests larger than `max_batch` bypass the queue and run on their own thread, so a large
request never holds up small ones (ONNX Runtime releases the GIL; sessions are
thread-safe). Deadlines are honoured: a request whose deadline passes while queued is
dropped with DeadlineExceeded before any work is spent on it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import DeadlineExceeded, Overloaded

RunFn = Callable[[np.ndarray], np.ndarray]


def _same(x: np.ndarray) -> np.ndarray:
    return x


@dataclass(frozen=True)
class BatchPolicy:
    """How requests are coalesced. `enabled=False` runs every request on its own."""

    enabled: bool = True
    max_batch: int = 1024
    """Most samples in one ONNX Runtime call (a single larger request runs alone)."""
    max_delay: float = 0.0
    """Seconds the leader may wait for more requests; 0 = greedy (never wait)."""
    max_queue: int = 512
    """Most requests waiting per graph; more get RESOURCE_EXHAUSTED."""


class Observer:
    """Hooks for metrics; the default does nothing."""

    def batch(self, samples: int, requests: int) -> None:
        """One ONNX Runtime call ran `samples` samples from `requests` requests."""

    def queued(self, seconds: float) -> None:
        """A request waited `seconds` between arriving and its batch starting."""


def expired() -> DeadlineExceeded:
    """The error of a request whose deadline passed before its batch ran."""
    return DeadlineExceeded("the deadline passed while the request waited in the batching queue")


def _stackable(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two requests' samples can share one graph run (same sample shape, dtype)."""
    return a.shape[1:] == b.shape[1:] and a.dtype == b.dtype


class _Item:
    __slots__ = ("deadline", "done", "error", "gate", "lead", "n", "result", "t0", "x")

    def __init__(self, x: np.ndarray, deadline: float | None) -> None:
        self.x = x
        self.n = len(x)
        self.deadline = deadline
        self.t0 = time.monotonic()
        self.gate: threading.Lock | None = None  # followers sleep on it (cheaper than Event)
        self.lead = False
        self.done = False
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None


class Batcher:
    """Runs one graph: checks each request's array (`prepare`) and coalesces concurrent
    `submit` calls into batched `run` calls.

    `prepare` turns a request's wire array into the graph's input, raising LatentwireError
    for bad input. It works on one request's array or on several concatenated (the native
    front checks a whole group at once and falls back to one by one to name the culprit).
    """

    def __init__(
        self,
        run: RunFn,
        policy: BatchPolicy,
        observer: Observer | None = None,
        *,
        label: str = "",
        prepare: RunFn = _same,
    ) -> None:
        if policy.max_batch < 1 or policy.max_queue < 1 or policy.max_delay < 0:
            raise ValueError(f"bad batch policy {policy}")
        self._run = run
        self.prepare = prepare
        self.policy = policy
        self.label = label
        self.observer = self._obs = observer or Observer()
        self._lock = threading.Lock()
        self._fill = threading.Condition(self._lock)  # a waiting leader listens here
        self._pending: deque[_Item] = deque()
        self._pending_samples = 0
        self._busy = False
        self._leader_waiting = False

    def queue_depth(self) -> int:
        return len(self._pending)

    def overloaded(self, queued: int) -> Overloaded:
        """The error for a request that finds `queued` requests already waiting."""
        return Overloaded(
            f"{self.label}: {queued} requests are already queued "
            f"(--max-queue {self.policy.max_queue}); retry later"
        )

    def run_split(self, x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
        """One graph run over prepared inputs `x` that hold several requests' samples
        back to back (`sizes`); returns each request's slice of the output."""
        self._obs.batch(len(x), len(sizes))
        y = self._run(x)
        if len(sizes) == 1:
            return [y]
        outs, at = [], 0
        for n in sizes:
            outs.append(y[at : at + n])
            at += n
        return outs

    def submit(self, x: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """Check and run `x` (one request's batch of samples), coalesced with concurrent
        calls when enabled.

        `deadline` is a time.monotonic() value; None means no deadline.
        """
        x = self.prepare(x)
        pol = self.policy
        if not pol.enabled or len(x) > pol.max_batch:
            self._check_deadline(deadline)
            self._obs.queued(0.0)
            return self.run_split(x, [len(x)])[0]
        item = _Item(x, deadline)
        with self._lock:
            if len(self._pending) >= pol.max_queue:
                raise self.overloaded(len(self._pending))
            self._pending.append(item)
            self._pending_samples += item.n
            if self._busy:
                item.gate = threading.Lock()
                item.gate.acquire()
                if self._leader_waiting and self._pending_samples >= pol.max_batch:
                    self._fill.notify()
            else:
                self._busy = True
                item.lead = True
        if not item.lead:
            self._follow(item)
            if not item.lead:
                return self._outcome(item)
        self._lead(item)
        return self._outcome(item)

    # -- internals ----------------------------------------------------------------------
    @staticmethod
    def _check_deadline(deadline: float | None) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded("the deadline passed before the request could run")

    @staticmethod
    def _wake(item: _Item) -> None:
        """Release a sleeping follower (once; the leader itself has no gate)."""
        gate, item.gate = item.gate, None
        if gate is not None:
            gate.release()

    @staticmethod
    def _outcome(item: _Item) -> np.ndarray:
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def _follow(self, item: _Item) -> None:
        """Sleep until a leader finishes this item or hands over leadership."""
        gate = item.gate
        assert gate is not None
        timeout = -1.0 if item.deadline is None else max(0.0, item.deadline - time.monotonic())
        if gate.acquire(timeout=timeout):
            return
        with self._lock:
            if not item.done and not item.lead and item in self._pending:
                self._pending.remove(item)
                self._pending_samples -= item.n
                item.done = True
                item.error = expired()
                item.gate = None
                return
        gate.acquire()  # already taken into a batch (or made leader): finish normally

    def _take(self, me: _Item) -> list[_Item]:
        """Under the lock: the next batch, oldest first, starting with `me`."""
        pol = self.policy
        if pol.max_delay > 0:
            end = me.t0 + pol.max_delay
            if me.deadline is not None:  # never wait past the leader's own deadline
                end = min(end, me.deadline)
            while self._pending_samples < pol.max_batch:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._leader_waiting = True
                self._fill.wait(left)
                self._leader_waiting = False
        batch: list[_Item] = []
        other_sizes: list[_Item] = []  # samples of another size (images): a later batch's
        total = 0
        now = time.monotonic()
        pending = self._pending
        while pending:
            nxt = pending.popleft()
            if nxt.deadline is not None and now >= nxt.deadline:
                self._pending_samples -= nxt.n
                nxt.done = True
                nxt.error = expired()
                self._wake(nxt)
            elif batch and not _stackable(batch[0].x, nxt.x):
                other_sizes.append(nxt)
            elif batch and total + nxt.n > pol.max_batch:
                pending.appendleft(nxt)
                break
            else:
                self._pending_samples -= nxt.n
                batch.append(nxt)
                total += nxt.n
        pending.extendleft(reversed(other_sizes))  # back in front, in arrival order
        return batch

    def _lead(self, me: _Item) -> None:
        try:
            with self._lock:
                batch = self._take(me)
            self._execute(batch)
        finally:
            with self._lock:
                if self._pending:
                    nxt = self._pending[0]
                    nxt.lead = True
                    self._wake(nxt)
                else:
                    self._busy = False

    def _execute(self, batch: list[_Item]) -> None:
        if not batch:
            return
        start = time.monotonic()
        for it in batch:
            self._obs.queued(start - it.t0)
        try:
            x = batch[0].x if len(batch) == 1 else np.concatenate([it.x for it in batch])
            outs = self.run_split(x, [it.n for it in batch])
        except BaseException as exc:
            for it in batch:
                it.error = exc
                it.done = True
                self._wake(it)
            return
        for it, out in zip(batch, outs, strict=True):
            it.result = out
            it.done = True
            self._wake(it)
