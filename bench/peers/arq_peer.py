"""arq: enqueue_job awaited per job; a Worker with max_jobs=`concurrency`.

arq's worker and Job.result() poll (default poll_delay 0.5 s); both use POLL_DELAY instead, or
a drain would mostly sleep between polls and a round trip would take about half a second.
arq has no bulk enqueue and no per-job priority.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import arq
from arq import create_pool
from arq.connections import RedisSettings
from arq.constants import default_queue_name
from arq.worker import Worker, func

from peers.base import Peer as Base

POLL_DELAY = 0.01


async def noop(ctx: Any) -> None:
    return None


def worker_prepare(url: str, concurrency: int, mode: str) -> Callable[[], None]:
    settings = RedisSettings.from_dsn(url)

    def run() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        worker = Worker(
            functions=[func(noop, name="noop")],
            redis_settings=settings,
            max_jobs=concurrency,
            poll_delay=POLL_DELAY,
            handle_signals=False,
        )
        worker.run()

    return run


class Peer(Base):
    name = "arq"
    notes = (
        f"Worker(max_jobs=concurrency, poll_delay={POLL_DELAY}); round trip = enqueue_job + "
        f"job.result(poll_delay={POLL_DELAY}); one producer coroutine awaiting each enqueue"
    )

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(create_pool(RedisSettings.from_dsn(url)))

    @classmethod
    def version(cls) -> str:
        return str(getattr(arq, "VERSION", getattr(arq, "__version__", "?")))

    def enqueue_many(self, n: int) -> None:
        async def enqueue() -> None:
            for _ in range(n):
                await self.pool.enqueue_job("noop")

        self.loop.run_until_complete(enqueue())

    def done_count(self, n: int) -> int:
        return n - int(self.redis.zcard(default_queue_name))

    def round_trip_once(self) -> None:
        async def one() -> None:
            job = await self.pool.enqueue_job("noop")
            assert job is not None
            await job.result(timeout=10, poll_delay=POLL_DELAY)

        self.loop.run_until_complete(one())

    def close(self) -> None:
        self.loop.run_until_complete(self.pool.aclose())
        self.loop.close()
        super().close()
