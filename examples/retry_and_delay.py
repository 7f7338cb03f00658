"""Jobs that run later, run again, and clean up after themselves.

    .venv/bin/python examples/retry_and_delay.py

- a delayed job waits `delay` seconds in state "delayed", then is queued and runs;
- a flaky job fails twice and succeeds on its third run, with `retry` on and an exponential
  backoff (with jitter) as its `retry_interval`;
- a job that overruns `process_timeout` becomes a ghost and is re-run after `ghost_interval`;
- finished jobs are purged `purge_timeout` seconds after they finish.
Runs on the embedded Redis when nothing else is configured.
"""

from __future__ import annotations

import threading
import time

import kickq

kickq.config(
    redis_namespace="retry-and-delay",
    purge_timeout=60,  # keep finished jobs a minute (the default is a day)
    job_flags={
        # a function of the retry number belongs in config / job_flags, not in create()
        "flaky": {"retry": True, "retry_count": 3, "retry_interval": kickq.backoff(base=0.2)},
        "slowpoke": {"process_timeout": 0.5, "ghost_interval": 0.2, "ghost_count": 1},
    },
)

attempts: dict[str, int] = {}
lock = threading.Lock()


def flaky(job: kickq.Job, data: str) -> str:
    with lock:
        attempts[job.id] = attempts.get(job.id, 0) + 1
        attempt = attempts[job.id]
    if attempt < 3:
        raise ConnectionError(f"upstream hiccup on attempt {attempt}")
    return f"{data}: done on attempt {attempt}"


def slowpoke(job: kickq.Job, data: None) -> str:
    if len(job.runs) == 1:  # the first run overruns process_timeout and becomes a ghost
        time.sleep(1.0)
    return "made it on the re-run"


kickq.process("flaky", flaky)
kickq.process("slowpoke", slowpoke, concurrent_jobs=2)
kickq.process("reminder", lambda job, data: f"reminded: {data}")

try:
    reminder = kickq.create("reminder", "stand up", delay=1, hotjob=True).result(5)
    print(f"reminder is {reminder.state.value}, scheduled for {reminder.scheduled_for:%H:%M:%S}")

    flaky_job = kickq.create("flaky", "sync invoices", hotjob=True).result(5)
    ghost_job = kickq.create("slowpoke", hotjob=True).result(5)

    for job in (reminder, flaky_job, ghost_job):
        assert job.hotjob_future is not None
        done = job.hotjob_future.result(timeout=15)
        runs = ", ".join(f"{run.count}:{run.state.value}" for run in done.runs)
        print(f"{done.name:9} {done.state.value:8} runs [{runs}] -> {done.result!r}")
finally:
    kickq.reset()
