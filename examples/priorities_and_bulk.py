"""Priorities, bulk creation, unique jobs, a time to run at, and metadata.

    .venv/bin/python examples/priorities_and_bulk.py

Runs on the embedded Redis when none is configured (see examples/quickstart.py).
"""

from __future__ import annotations

import datetime
import threading

import kickq

kickq.config(redis_namespace="priorities-example")

ran: list[str] = []
all_done = threading.Event()


def send(job: kickq.Job, data: dict[str, str]) -> str:
    ran.append(f"{data['to']} (priority {job.priority}, trace {job.meta.get('trace')})")
    if len(ran) == 6:
        all_done.set()
    return f"sent to {data['to']}"


try:
    # One call, one round trip per batch: a future per item, in order.
    newsletters = kickq.create_many(
        "email", [{"to": f"reader-{n}"} for n in range(3)], priority=1, meta={"trace": "bulk"}
    )
    # Queued after the newsletters but claimed before them: a higher priority goes first.
    reset_mail = kickq.create("email", {"to": "locked-out-user"}, priority=9, meta={"trace": "r"})
    # Created twice, stored once: the second create resolves to the first job.
    welcome = kickq.create("email", {"to": "new-user"}, unique_key="welcome:new-user").result(5)
    again = kickq.create("email", {"to": "new-user"}, unique_key="welcome:new-user").result(5)
    assert again.id == welcome.id
    # A time to run at: an aware datetime (a moment from now, for the example).
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
    later = kickq.create("email", {"to": "tomorrow-reader"}, at=soon).result(5)
    print(f"{later.id[:8]} is {later.state.value} until {later.scheduled_for:%H:%M:%S}")
    for future in [*newsletters, reset_mail]:
        future.result(5)

    # Everything is queued: now one worker takes the jobs one at a time.
    kickq.process("email", send)
    all_done.wait(15)
    for line in ran:
        print("sent:", line)
    print("result of the unique job:", kickq.wait(welcome.id, timeout=10).result(15).result)
finally:
    kickq.reset()
