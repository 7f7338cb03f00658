"""Repeatable jobs: a job created at every tick of a cron expression or of an interval.

    .venv/bin/python examples/schedules.py

- `kickq.schedule()` stores a schedule in Redis; every kickq process may call it at start-up
  (saving the same schedule again keeps its next tick);
- any live kickq process creates each tick's job, exactly once across all of them;
- a cron expression is read in the schedule's time zone, daylight-saving changes included.
Runs on the embedded Redis when nothing else is configured.
"""

from __future__ import annotations

import datetime
import threading

import kickq

kickq.config(redis_namespace="schedules-example")

beats: list[kickq.Job] = []
three_beats = threading.Event()


def heartbeat(job: kickq.Job, data: dict[str, str]) -> str:
    return f"{data['service']} is alive (tick {job.scheduled_for:%H:%M:%S})"


def finished(job: kickq.Job) -> None:
    if job.name == "heartbeat":
        beats.append(job)
        if len(beats) >= 3:
            three_beats.set()


kickq.process("heartbeat", heartbeat)
kickq.on("success", finished)

try:
    kickq.schedule("heartbeat", {"service": "api"}, every=datetime.timedelta(seconds=1)).result(5)
    kickq.schedule(
        "report", {"kind": "daily"}, cron="0 9 * * MON-FRI", tz="Europe/Athens", priority=7
    ).result(5)
    for schedule in kickq.schedules().result(5):
        timing = schedule.cron or f"every {schedule.every}"
        print(f"{schedule.key:9} {timing:18} {schedule.tz:13} next {schedule.next_time:%c} UTC")

    if not three_beats.wait(timeout=15):
        raise SystemExit("no heartbeat came")
    for job in beats[:3]:
        print(f"{job.name} {job.state.value}: {job.result}")
finally:
    for key in ("heartbeat", "report"):
        kickq.unschedule(key).result(5)
    kickq.reset()
