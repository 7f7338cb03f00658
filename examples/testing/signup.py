"""A small application that uses kickq: signing up sends a welcome email now and a reminder a
day later, through jobs. Its tests are test_signup.py, beside it."""

from __future__ import annotations

import threading

import kickq

OUTBOX: list[tuple[str, str]] = []  # the emails "sent": (address, template)
_outbox_lock = threading.Lock()
REMINDER_DELAY = 86400  # seconds


def send_email(job: kickq.Job, data: dict[str, str]) -> str:
    """The handler of "email" jobs; a real one would talk to a mail service."""
    with _outbox_lock:
        OUTBOX.append((data["to"], data["template"]))
    return f"{data['template']} sent to {data['to']}"


def start_workers() -> list[kickq.Worker]:
    """What the application runs at start-up (and its tests, once kickq is configured)."""
    kickq.config(job_flags={"email": {"retry": True, "retry_count": 5}})
    return [kickq.process("email", send_email, concurrent_jobs=4)]


def signup(address: str) -> kickq.KickqFuture[kickq.Job]:
    """Sign a user up: the welcome email goes out now, the reminder a day later."""
    kickq.create("email", {"to": address, "template": "reminder"}, delay=REMINDER_DELAY)
    return kickq.create("email", {"to": address, "template": "welcome"})
