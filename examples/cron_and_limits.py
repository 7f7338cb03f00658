"""Limits across processes: a schedule feeds a name whose runs are limited for every process.

    .venv/bin/python examples/cron_and_limits.py

- `kickq.limit()` keeps a rate and a concurrency per job name in Redis; the claim script of
  every process obeys them, so two worker processes (or twenty) share one budget;
- jobs held back stay queued and start as soon as the limit allows: nothing fails, nothing
  polls;
- `kickq.cancel()` takes a job out for good, here one still held back in the queue.
Runs on the embedded Redis when nothing else is configured.
"""

from __future__ import annotations

import datetime
import threading
import time

import kickq

kickq.config(redis_namespace="limits-example")

lock = threading.Lock()
running, most_at_once = 0, 0
backlog_starts: list[float] = []


def fetch(job: kickq.Job, data: dict[str, int]) -> str:
    global running, most_at_once
    with lock:
        running += 1
        most_at_once = max(most_at_once, running)
        if data["page"]:
            backlog_starts.append(time.monotonic())
    time.sleep(0.2)  # the remote call
    with lock:
        running -= 1
    return f"page {data['page']} fetched"


try:
    kickq.jobs(name="fetch").delete().result(5)  # what an earlier run may have left
    # at most 5 fetches start in any second, and at most 2 run at once, across all processes
    kickq.limit("fetch", rate=(5, 1), concurrency=2).result(5)
    print("limits:", kickq.stats().result(5)["fetch"].limits)
    kickq.process("fetch", fetch, concurrent_jobs=10)  # the limits cap it, not the 10 slots

    # a schedule adds page 0 every second, on top of a backlog of ten pages
    kickq.schedule("fetch", {"page": 0}, every=datetime.timedelta(seconds=1), key="tick").result(5)
    jobs = [f.result(5) for f in kickq.create_many("fetch", [{"page": n} for n in range(1, 11)])]

    print("cancel page 10 while it waits:", kickq.cancel(jobs[-1].id).result(5))
    for job in jobs[:-1]:
        done = kickq.wait(job.id, timeout=15).result(20)
        print(f"{done.state.value}: {done.result}")
    try:
        kickq.wait(jobs[-1].id, timeout=5).result(10)
    except kickq.JobCancelled as cancelled:
        print(f"page 10: {cancelled.job.state.value}, {cancelled.job.last_error}")
    took = backlog_starts[-1] - backlog_starts[0]
    print(f"at most {most_at_once} at once; 9 pages started over {took:.1f} s")
finally:
    kickq.unschedule("tick").result(5)
    kickq.limit("fetch").result(5)
    kickq.jobs(name="fetch").delete().result(5)
    kickq.reset()
