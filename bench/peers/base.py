"""The interface every adapter implements, and what they share."""

from __future__ import annotations

import time
from typing import ClassVar

import redis
from common import WorkerProcs, wait_until

QUEUE = "default"


class Unsupported(Exception):
    """The library has no such call: its figure is "n/a (reason)", which is not a failure."""


def spread_priority(i: int) -> int:
    """The priority of the i-th job of a mixed-priority drain: 0-9, each as often, interleaved
    in the order of creation (0, 7, 4, 1, 8, 5, 2, 9, 6, 3, 0, 7, ...)."""
    return (i * 7) % 10


class Peer:
    """A queue library as the benchmark sees it, on the producer side.

    The worker side of an adapter is its module-level `worker_prepare(url, concurrency, mode)`,
    which connects and returns the blocking worker loop that bench/worker.py runs after "go".
    `mode` is "drain", "prio" (a drain of jobs with mixed priorities) or "rt" (round trip),
    for libraries whose settings differ between them.
    """

    name: ClassVar[str] = "?"
    # how the adapter configures the library, printed under the table
    notes: ClassVar[str] = ""
    # scale of N for this peer (RQ's one-job-at-a-time workers are slow)
    n_scale: ClassVar[float] = 1.0

    def __init__(self, url: str) -> None:
        self.url = url
        self.redis = redis.Redis.from_url(url)

    @classmethod
    def version(cls) -> str:
        return "?"

    def flush(self) -> None:
        self.redis.flushall()

    # -- workloads --------------------------------------------------------------------------

    def enqueue_many(self, n: int) -> None:
        """Create n no-op jobs with the library's ordinary per-job call; return when all are in."""
        raise NotImplementedError

    def enqueue_one_at_a_time(self, n: int) -> None:
        """Create n no-op jobs, each saved before the next call: for the peers, whose
        ordinary call returns once the job is in, the enqueue workload again."""
        self.enqueue_many(n)

    def enqueue_bulk(self, n: int) -> None:
        """Create n no-op jobs with the library's own bulk call; return when all are saved.
        Unsupported when it has none (a loop of single calls would only repeat enqueue_many)."""
        raise Unsupported("no bulk call")

    def prefill(self, n: int) -> None:
        """Queue n jobs before a drain (not timed: may use a bulk API)."""
        self.enqueue_many(n)

    def prefill_priorities(self, n: int) -> None:
        """Queue n jobs with priorities spread_priority(0..n-1) before a drain in mode "prio"
        (not timed). Unsupported when the library has no per-job priority."""
        raise Unsupported("no per-job priority")

    def done_count(self, n: int) -> int:
        """How many of the n queued jobs are finished, read from the library's own keys."""
        raise NotImplementedError

    def start_workers(self, n_procs: int, concurrency: int, mode: str = "drain") -> WorkerProcs:
        return WorkerProcs(self.name, self.url, n_procs, concurrency, mode)

    def wait_drained(self, n: int, timeout: float, workers: WorkerProcs | None = None) -> float:
        """Block until all n jobs are finished; the perf_counter time they were."""
        return wait_until(lambda: self.done_count(n), n, timeout, workers)

    def round_trip_once(self) -> None:
        """Create one job and wait for its result, the library's documented way."""
        raise NotImplementedError

    def round_trip(self, count: int, budget: float = 1e9) -> list[float]:
        """`count` round trips in sequence (fewer if `budget` seconds run out): latencies in s."""
        latencies = []
        stop = time.perf_counter() + budget
        for _ in range(count):
            start = time.perf_counter()
            self.round_trip_once()
            end = time.perf_counter()
            latencies.append(end - start)
            if end > stop:
                break
        return latencies

    def close(self) -> None:
        self.redis.close()
