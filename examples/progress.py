"""Progress: a handler reports how far it got; its creator, any waiter and any listener see it.

Run it with no Redis at all (kickq starts its embedded server, as in quickstart.py):

    .venv/bin/python examples/progress.py

`kickq.progress(value)` never waits for Redis: a handler may call it in a tight loop, and kickq
sends the newest value at most every 50 ms, but always the last one before the job ends.
"""

from __future__ import annotations

import time
from typing import Any

import kickq

kickq.config(redis_namespace="progress-example")


def render(job: kickq.Job, data: dict[str, int]) -> str:
    """A handler that reports after each frame (any JSON value will do)."""
    for frame in range(data["frames"]):
        time.sleep(0.02)  # pretend to draw a frame
        kickq.progress({"done": frame + 1, "of": data["frames"]})
    return f"{data['frames']} frames rendered"


def show(value: dict[str, int]) -> None:
    """on_progress: runs on kickq's listener thread, in the order the handler reported."""
    print(f"  progress {value['done']}/{value['of']}")


def on_event(job: kickq.Job) -> None:
    events.append(job.progress)


events: list[Any] = []
worker = kickq.process("render", render)
subscription = kickq.on("progress", on_event)  # every job's reports, from any process

try:
    # a hotjob: on_progress is called with each value until its future resolves
    job = kickq.create("render", {"frames": 10}, hotjob=True, on_progress=show).result(10)
    assert job.hotjob_future is not None
    done = job.hotjob_future.result(20)
    print(f"hotjob: {done.state.value} -> {done.result}; last progress {done.progress}")

    # any job, followed by id (from any process): kickq.wait(job_id, on_progress=fn)
    other = kickq.create("render", {"frames": 5}).result(10)
    finished = kickq.wait(other.id, timeout=20, on_progress=show).result()
    print(f"waited: {finished.state.value} -> {finished.result}")

    # the last value stays on the record after the job completed
    print("kept:", kickq.get(other.id).result(10).progress)
    print(f"the progress event came {len(events)} times")
finally:
    subscription.cancel()
    kickq.reset()
