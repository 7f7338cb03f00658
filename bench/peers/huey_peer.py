"""Huey: RedisHuey, calling the task per job; a consumer with `concurrency` worker threads.

The no-op task returns True so that Huey stores a result (its finished record). Round trips use
`notify_result=True` (Huey's documented BLPOP result notification) on both sides; without it
`result.get(blocking=True)` polls from 50 ms up.

Huey has no bulk enqueue: task.map() enqueues one task at a time. Per-job priority needs its
PriorityRedisHuey (the queue is a sorted set instead of a list), so the mixed-priority drain
("prio" mode) runs on that, called with `priority=`; its other workloads use RedisHuey.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import huey
from huey import PriorityRedisHuey, RedisHuey

from peers.base import Peer as Base
from peers.base import Unsupported, spread_priority

HUEY_NAME = "bench"


def _make(url: str, notify: bool, priority: bool = False) -> tuple[RedisHuey, Any]:
    kind = PriorityRedisHuey if priority else RedisHuey
    app = kind(HUEY_NAME, url=url, notify_result=notify)

    @app.task(name="noop")
    def noop() -> bool:
        return True

    return app, noop


def worker_prepare(url: str, concurrency: int, mode: str) -> Callable[[], None]:
    app, _ = _make(url, notify=mode == "rt", priority=mode == "prio")
    app.storage.conn.ping()
    logging.getLogger("huey").setLevel(logging.WARNING)
    consumer = app.create_consumer(workers=concurrency, worker_type="thread", periodic=False)

    def run() -> None:
        consumer.run()

    return run


class Peer(Base):
    name = "huey"
    notes = (
        "RedisHuey defaults, thread consumer with workers=concurrency; round trip = task() + "
        "result.get(blocking=True) with notify_result=True; mixed priorities on PriorityRedisHuey "
        "(a sorted set), task(priority=p)"
    )

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.app, self.noop = _make(url, notify=False)
        self.rt_app, self.rt_noop = _make(url, notify=True)
        self.prio_app, self.prio_noop = _make(url, notify=False, priority=True)
        self._results = self.app.storage.result_key

    @classmethod
    def version(cls) -> str:
        return str(huey.__version__)

    def enqueue_many(self, n: int) -> None:
        noop = self.noop
        for _ in range(n):
            noop()

    def enqueue_bulk(self, n: int) -> None:
        raise Unsupported("no bulk call: task.map() enqueues one task at a time")

    def prefill_priorities(self, n: int) -> None:
        noop = self.prio_noop
        for i in range(n):
            noop(priority=spread_priority(i))

    def done_count(self, n: int) -> int:
        return int(self.redis.hlen(self._results))

    def round_trip_once(self) -> None:
        self.rt_noop().get(blocking=True, timeout=10)
