"""kickq.reset() with many requests still waiting for Redis."""

from __future__ import annotations

import pathlib
import time

import kickq
from support import RedisServer


def test_reset_cancels_thousands_of_pending_requests_at_once(tmp_path: pathlib.Path) -> None:
    """reset() with 2,000 get() and create() calls waiting on a paused Redis returns at once,
    with every one of their futures done, and nothing stored for the cancelled creates."""
    server = RedisServer(tmp_path / "paused").start()
    client = server.client()
    pause = 4.0
    try:
        kickq.config(redis_url=server.url)
        known = kickq.create("known").result(5)
        client.client_pause(int(pause * 1000))
        gets = [kickq.get(known.id) for _ in range(1000)]
        creates = [kickq.create("never", i) for i in range(1000)]
        time.sleep(0.2)  # the dispatcher takes up the first get, which Redis does not answer
        started = time.monotonic()
        kickq.reset()
        assert time.monotonic() - started < 2.0
        assert all(f.done() for f in gets + creates)
        assert all(f.cancelled() for f in creates)
        assert sum(f.cancelled() for f in gets) >= len(gets) - 1
        assert client.ping()  # answered once the pause is over
        assert client.keys("kickq:job:*") == [f"kickq:job:{known.id}"]
        assert not client.exists("kickq:queue:never")
    finally:
        kickq.reset()
        client.close()
        server.stop()
