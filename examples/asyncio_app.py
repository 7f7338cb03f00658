"""kickq inside an asyncio application: await jobs, await their results, async handlers.

    .venv/bin/python examples/asyncio_app.py

Every kickq future can be awaited; awaiting never blocks the event loop (kickq's own threads do
the Redis work). Coroutine handlers of one process share one event-loop thread of kickq's, so an
`async def` handler can use asyncio libraries freely.
"""

from __future__ import annotations

import asyncio

import kickq


async def fetch_title(job: kickq.Job, data: dict[str, str]) -> dict[str, str]:
    """An async handler: awaited on kickq's event-loop thread."""
    await asyncio.sleep(0.05)  # stands for an HTTP call
    return {"url": data["url"], "title": data["url"].split("//")[-1].upper()}


async def handle_request(url: str) -> dict[str, str]:
    """A web request handler that offloads work and waits for the result."""
    job = await kickq.create("fetch-title", {"url": url}, hotjob=True, hotjob_timeout=5)
    assert job.hotjob_future is not None
    done = await job.hotjob_future
    return done.result  # type: ignore[no-any-return]


async def fire_and_check_later() -> None:
    """Create now, wait later by id (from this process or any other one)."""
    job = await kickq.create("fetch-title", {"url": "https://example.org"})
    # ... later, maybe in another request: kickq.wait() works for any job, hotjob or not
    done = await kickq.wait(job.id, timeout=5)
    print("later:", done.result)


async def main() -> None:
    kickq.config(redis_namespace="asyncio-app")
    kickq.process("fetch-title", fetch_title, concurrent_jobs=20)
    kickq.on("success", lambda job: print(f"  event: {job.name} {job.id[:8]} succeeded"))
    try:
        urls = [f"https://site{n}.example" for n in range(5)]
        results = await asyncio.gather(*(handle_request(url) for url in urls))
        for result in results:
            print("result:", result)
        await fire_and_check_later()
    finally:
        kickq.reset()


if __name__ == "__main__":
    asyncio.run(main())
