"""The leader/follower batcher: coalescing, ordering, limits, deadlines, errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from latentwire.runtime.errors import DeadlineExceeded, Overloaded
from latentwire.runtime.server.batcher import Batcher, BatchPolicy, Observer


class Recorder(Observer):
    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []

    def batch(self, samples: int, requests: int) -> None:
        self.batches.append((samples, requests))


def slow_double(x: np.ndarray) -> np.ndarray:
    time.sleep(0.002)
    return x * 2


def hammer(b: Batcher, clients: int = 16, rounds: int = 30) -> list[str]:
    """Concurrent clients with distinct inputs; returns the wrong answers seen."""
    wrong: list[str] = []

    def client(i: int) -> None:
        for k in range(rounds):
            x = np.full((1 + k % 3, 2), i * 1000 + k, np.float32)
            y = b.submit(x, time.monotonic() + 10)
            if not np.array_equal(y, x * 2):
                wrong.append(f"client {i} round {k}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wrong


@pytest.mark.parametrize(
    "policy", [BatchPolicy(), BatchPolicy(max_delay=0.01), BatchPolicy(max_batch=5)]
)
def test_every_caller_gets_its_own_rows(policy: BatchPolicy) -> None:
    rec = Recorder()
    b = Batcher(slow_double, policy, rec)
    assert hammer(b) == []
    assert max(r for _, r in rec.batches) > 1, "concurrent requests were never coalesced"
    assert max(s for s, _ in rec.batches) <= max(policy.max_batch, 3)
    assert b.queue_depth() == 0


def test_batching_off_runs_each_request_alone() -> None:
    rec = Recorder()
    assert hammer(Batcher(slow_double, BatchPolicy(enabled=False), rec), rounds=5) == []
    assert {r for _, r in rec.batches} == {1}


def test_a_lone_request_runs_inline_without_waiting() -> None:
    callers: list[str] = []

    def run(x: np.ndarray) -> np.ndarray:
        callers.append(threading.current_thread().name)
        return x

    Batcher(run, BatchPolicy(max_delay=0.0)).submit(np.zeros((1, 2)))
    assert callers == [threading.current_thread().name]


def test_a_request_larger_than_max_batch_bypasses_the_queue() -> None:
    rec = Recorder()
    b = Batcher(slow_double, BatchPolicy(max_batch=4), rec)
    np.testing.assert_array_equal(b.submit(np.ones((10, 2))), np.full((10, 2), 2.0))
    assert rec.batches == [(10, 1)]


def test_deadline_passing_in_the_queue_raises_and_leaves_no_trace() -> None:
    def slow(x: np.ndarray) -> np.ndarray:
        time.sleep(0.3)
        return x

    b = Batcher(slow, BatchPolicy())
    first = threading.Thread(target=b.submit, args=(np.zeros((1, 2)),))
    first.start()
    time.sleep(0.05)  # the first request is running; the next one has to queue
    with pytest.raises(DeadlineExceeded, match="deadline"):
        b.submit(np.zeros((1, 2)), time.monotonic() + 0.05)
    first.join()
    assert b.queue_depth() == 0
    np.testing.assert_array_equal(b.submit(np.ones((1, 2))), np.ones((1, 2)))


def test_full_queue_raises_overloaded() -> None:
    gate = threading.Event()

    def blocked(x: np.ndarray) -> np.ndarray:
        gate.wait(5)
        return x

    b = Batcher(blocked, BatchPolicy(max_queue=2))
    results: list[object] = []

    def call() -> None:
        try:
            results.append(b.submit(np.zeros((1, 2))))
        except Overloaded as exc:
            results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:  # one runs (blocked), two wait: the queue is full
        t.start()
        time.sleep(0.05)
    with pytest.raises(Overloaded, match="max-queue 2"):
        b.submit(np.zeros((1, 2)))
    gate.set()
    for t in threads:
        t.join()
    assert all(isinstance(r, np.ndarray) for r in results)


def test_a_failing_run_fails_its_batch_and_the_next_batch_still_runs() -> None:
    calls = {"n": 0}

    def flaky(x: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return x

    b = Batcher(flaky, BatchPolicy())
    with pytest.raises(RuntimeError, match="boom"):
        b.submit(np.zeros((1, 2)))
    np.testing.assert_array_equal(b.submit(np.ones((1, 2))), np.ones((1, 2)))


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="bad batch policy"):
        Batcher(slow_double, BatchPolicy(max_batch=0))


def test_samples_of_different_sizes_never_share_a_run() -> None:
    """Images of several sizes (a conv model) queue together; each run holds one size."""
    rec = Recorder()
    shapes_run: list[tuple[int, ...]] = []

    def run(x: np.ndarray) -> np.ndarray:
        shapes_run.append(x.shape[1:])
        time.sleep(0.002)
        return x * 2

    b = Batcher(run, BatchPolicy(max_delay=0.02), rec)
    wrong: list[str] = []

    def client(i: int) -> None:
        x = np.full((2, 4 + 4 * (i % 3), 4), i, np.float32)
        if not np.array_equal(b.submit(x, time.monotonic() + 10), x * 2):
            wrong.append(str(i))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert sorted(set(shapes_run)) == [(4, 4), (8, 4), (12, 4)]
    assert max(r for _, r in rec.batches) > 1, "same-sized requests were never coalesced"


def test_prepare_checks_each_request_before_it_queues() -> None:
    def refuse_negative(x: np.ndarray) -> np.ndarray:
        if (x < 0).any():
            raise Overloaded("negative")  # any LatentwireError
        return x

    b = Batcher(slow_double, BatchPolicy(), prepare=refuse_negative)
    np.testing.assert_array_equal(b.submit(np.ones((1, 2))), np.full((1, 2), 2.0))
    with pytest.raises(Overloaded, match="negative"):
        b.submit(-np.ones((1, 2)))
    assert b.queue_depth() == 0
