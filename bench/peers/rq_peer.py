"""RQ: Queue.enqueue per job; SimpleWorker (no fork per job), which runs one job at a time.

Bulk enqueue is one Queue.enqueue_many() of N Queue.prepare_data() (RQ's own pipeline, one
MULTI/EXEC). RQ has no per-job priority (a worker takes its queues in order; at_front only).

RQ has no in-process concurrency: `concurrency` is ignored and each worker process runs one job
at a time (its default Worker forks a work horse per job, far slower still).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
import rq
from rq import Queue, SimpleWorker
from rq.registry import FinishedJobRegistry

from peers.base import QUEUE, Unsupported
from peers.base import Peer as Base


def noop() -> None:
    return None


def worker_prepare(url: str, concurrency: int, mode: str) -> Callable[[], None]:
    conn = redis.Redis.from_url(url)
    conn.ping()
    worker = SimpleWorker([Queue(QUEUE, connection=conn)], connection=conn)

    def run() -> None:
        worker.work(logging_level="WARNING")

    return run


class Peer(Base):
    name = "rq"
    notes = (
        "SimpleWorker (no fork), one job at a time per process (RQ has no in-process "
        "concurrency); bulk = one enqueue_many() of N prepare_data(); round trip = enqueue + "
        "job.latest_result(timeout=10) (blocking XREAD)"
    )
    n_scale = 0.25

    def __init__(self, url: str) -> None:
        super().__init__(url)
        logging.getLogger("rq").setLevel(logging.WARNING)
        self.queue = Queue(QUEUE, connection=self.redis)
        self._finished = FinishedJobRegistry(queue=self.queue).key

    @classmethod
    def version(cls) -> str:
        return str(rq.__version__)

    def enqueue_many(self, n: int) -> None:
        for _ in range(n):
            self.queue.enqueue(noop)

    def enqueue_bulk(self, n: int) -> None:
        self.queue.enqueue_many([Queue.prepare_data(noop) for _ in range(n)])

    def prefill_priorities(self, n: int) -> None:
        raise Unsupported("no per-job priority: a worker takes its queues in order")

    def prefill(self, n: int) -> None:
        for start in range(0, n, 500):
            datas = [Queue.prepare_data(noop) for _ in range(min(500, n - start))]
            with self.redis.pipeline() as pipe:
                self.queue.enqueue_many(datas, pipeline=pipe)
                pipe.execute()

    def done_count(self, n: int) -> int:
        return int(self.redis.zcard(self._finished))

    def round_trip_once(self) -> None:
        job = self.queue.enqueue(noop)
        if job.latest_result(timeout=10) is None:
            raise TimeoutError("no result in 10 s")
