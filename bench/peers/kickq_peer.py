"""kickq: create() futures (pipelined by kickq's dispatcher), in-process worker threads.

Bulk enqueue is create_many(); the mixed-priority drain queues jobs with priorities 0-9 (the
plain drain's jobs all have the default, 5). Workers are the same in every mode.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import kickq
from kickq._redis.keys import Keys
from peers.base import Peer as Base
from peers.base import spread_priority

NAME = "noop"


def noop(job: Any, data: Any) -> None:
    return None


def _connect(url: str) -> None:
    kickq.reset()
    kickq.config(redis_url=url)
    # start the engine and its connection now, not inside a timed section
    error = kickq.get("bench-warm-up").exception(timeout=30)
    if not isinstance(error, kickq.JobNotFound):
        raise RuntimeError(f"kickq did not connect: {error!r}")


def worker_prepare(url: str, concurrency: int, mode: str) -> Callable[[], None]:
    _connect(url)

    def run() -> None:
        kickq.process(NAME, noop, concurrent_jobs=concurrency)
        threading.Event().wait()

    return run


class Peer(Base):
    name = "kickq"
    notes = (
        "default options (finished records kept for purge_timeout=86400 s); enqueue issues all "
        "create() futures then waits for them; bulk = create_many(name, [None] * N) then waits "
        "for its futures; round trip = create(hotjob=True) + hotjob_future"
    )

    def __init__(self, url: str) -> None:
        super().__init__(url)
        _connect(url)
        self._finished = Keys(kickq.config()["redis_namespace"]).finished

    @classmethod
    def version(cls) -> str:
        return kickq.__version__

    def enqueue_many(self, n: int) -> None:
        futures = [kickq.create(NAME) for _ in range(n)]
        for future in futures:
            future.result(timeout=120)

    def enqueue_one_at_a_time(self, n: int) -> None:
        for _ in range(n):
            kickq.create(NAME).result(timeout=120)

    def enqueue_bulk(self, n: int) -> None:
        for future in kickq.create_many(NAME, [None] * n):
            future.result(timeout=120)

    def prefill_priorities(self, n: int) -> None:
        futures = [kickq.create(NAME, priority=spread_priority(i)) for i in range(n)]
        for future in futures:
            future.result(timeout=120)

    def done_count(self, n: int) -> int:
        return int(self.redis.zcard(self._finished))

    def round_trip_once(self) -> None:
        job = kickq.create(NAME, hotjob=True).result(timeout=10)
        assert job.hotjob_future is not None
        job.hotjob_future.result(timeout=10)

    def close(self) -> None:
        kickq.reset()
        super().close()
