"""Dramatiq: RedisBroker, actor.send() per job, Worker with `concurrency` threads.

The Results middleware (RedisBackend) is installed on both sides; only the round-trip actor
stores results (store_results=True), so drains keep no finished records, as with Dramatiq's
defaults.

Dramatiq has no bulk enqueue: group(...).run() sends its messages one by one, each its own
enqueue script. Its priority is an actor's, and only orders the messages a worker has already
prefetched, so there is no mixed-priority drain either.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from peers.base import QUEUE, Unsupported
from peers.base import Peer as Base


def _noop() -> None:
    return None


def _setup(url: str) -> tuple[RedisBroker, Any, Any]:
    broker = RedisBroker(url=url)
    broker.add_middleware(Results(backend=RedisBackend(url=url)))
    dramatiq.set_broker(broker)
    noop = dramatiq.actor(_noop, actor_name="noop", queue_name=QUEUE, broker=broker)
    noop_rt = dramatiq.actor(
        _noop, actor_name="noop_rt", queue_name=QUEUE, broker=broker, store_results=True
    )
    return broker, noop, noop_rt


def worker_prepare(url: str, concurrency: int, mode: str) -> Callable[[], None]:
    broker, _, _ = _setup(url)
    broker.client.ping()

    def run() -> None:
        worker = dramatiq.Worker(broker, worker_threads=concurrency)
        worker.start()
        threading.Event().wait()

    return run


class Peer(Base):
    name = "dramatiq"
    notes = (
        "RedisBroker defaults, worker_threads=concurrency; round trip = send() + "
        "message.get_result(block=True) with the Results middleware (blocking BRPOPLPUSH)"
    )

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.broker, self.noop, self.noop_rt = _setup(url)
        self._msgs = f"{self.broker.namespace}:{QUEUE}.msgs"

    @classmethod
    def version(cls) -> str:
        return str(dramatiq.__version__)

    def enqueue_many(self, n: int) -> None:
        send = self.noop.send
        for _ in range(n):
            send()

    def enqueue_bulk(self, n: int) -> None:
        raise Unsupported("no bulk call: group().run() sends one message at a time")

    def prefill_priorities(self, n: int) -> None:
        raise Unsupported("no per-job priority: an actor's priority orders prefetched messages")

    def done_count(self, n: int) -> int:
        return n - int(self.redis.hlen(self._msgs))

    def round_trip_once(self) -> None:
        message = self.noop_rt.send()
        message.get_result(block=True, timeout=10_000)

    def close(self) -> None:
        self.broker.close()
        super().close()
