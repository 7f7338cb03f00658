"""Repeatable jobs: the `Schedule` users see, its record in Redis, and what a due tick becomes.

Pure: no I/O and no clock. A schedule is stored as one JSON text (see `to_record`) beside its
next tick's time; `plan` decides, from that time and the current one, which tick gets a job and
when the next one falls.

Misfires: a tick is *due* while it is at most MISFIRE_GRACE old (a live namespace acts on one
within about a second, later only while Redis is out or the processes are busy). Older ticks
were *missed*: nothing ran to act on them. However many were missed, `misfire="once"` creates
one job, for the latest of them, and `"skip"` none; either way the next tick is the first one
that is not missed. A due tick always gets its own job, whatever came before it: an outage
longer than the grace ends with missed ticks followed by due ones (with an interval under the
grace), and the misfire policy decides only about the missed ones.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from typing import Any

import attrs

from kickq._model import config
from kickq._model.cron import Timing, from_ms
from kickq._model.cron import timing as check_timing
from kickq._model.errors import ConfigError

MISFIRES = ("once", "skip")
MISFIRE_GRACE_MS = 60_000
SCHEDULE_OPTIONS = {
    name: option
    for name, option in config.PER_CALL.items()
    if name not in ("at", "delay", "hotjob", "hotjob_timeout", "on_progress")
}
"""The create() options a schedule passes on to its jobs. Its ticks say when each job is due
(no `at` or `delay`), and no caller is there to wait on a hotjob's future, or its progress."""


@attrs.frozen
class Schedule:
    """A repeatable job, as `kickq.schedules()` lists it: a job `name` with `data` created at
    each tick of `cron` (read in time zone `tz`) or of `every`, with the create() `options`;
    `next_time` is the next tick (UTC), `misfire` what ticks missed while no process ran give."""

    key: str
    name: str
    data: Any = None
    cron: str | None = None
    every: datetime.timedelta | None = None
    tz: str = "UTC"
    next_time: datetime.datetime | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict)
    misfire: str = "once"


def check_misfire(misfire: object) -> str:
    if misfire not in MISFIRES:
        raise ConfigError(f"misfire must be 'once' or 'skip', not {misfire!r}")
    return str(misfire)


def check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise ConfigError(f"a schedule key must be a non-empty str, not {key!r}")
    return config.check_text("a schedule key", key)


def check_options(
    options: Mapping[str, Any], where: str = "schedule()", stored: bool = False
) -> dict[str, Any]:
    """The create() options of a schedule, checked as create() checks them (`stored`: as read
    back from Redis, see config.Option.stored). An option given as None is not given; `at`,
    `delay` and hotjobs are refused (see SCHEDULE_OPTIONS)."""
    given = {name: value for name, value in options.items() if value is not None}
    for name in ("at", "delay"):
        if name in given:
            raise ConfigError(f"{name!r} cannot be given to {where}: its ticks time the jobs")
    for name in ("hotjob", "hotjob_timeout"):
        if name in given:
            raise ConfigError(
                f"{name!r} cannot be given to {where}: no caller waits for a scheduled job "
                "(kickq.wait() or kickq.on() can)"
            )
    checked = config.validate(given, SCHEDULE_OPTIONS, where=where, stored=stored)
    if callable(checked.get("retry_interval")):
        raise ConfigError(
            f"retry_interval in {where} must be a number of seconds: a function cannot travel "
            "with the schedule; set it with kickq.config() or job_flags instead"
        )
    return checked


def to_record(schedule: Schedule, timing: Timing, data_json: str) -> str:
    """The stored form: JSON, with the timing's spec for the scripts to compare."""
    fields = {
        "key": schedule.key,
        "name": schedule.name,
        "cron": timing.cron,
        "every_ms": timing.every_ms,
        "tz": timing.tz,
        "misfire": schedule.misfire,
        "options": dict(schedule.options),
        "spec": timing.spec,
    }
    text = json.dumps(fields, separators=(",", ":"))
    return text[:-1] + ',"data":' + data_json + "}"  # the data as already checked and encoded


def from_record(text: str, next_ms: int | None) -> tuple[Schedule, Timing]:
    """A stored schedule and its timing; ValueError (or ConfigError, or TypeError) saying what
    is wrong with a record that cannot be read, so that one bad record stops nothing else."""
    fields = json.loads(text)
    if not isinstance(fields, dict):
        raise TypeError(f"a schedule record is a JSON object, not {type(fields).__name__}")
    every_ms = fields.get("every_ms")
    if every_ms is not None and (isinstance(every_ms, bool) or not isinstance(every_ms, int)):
        raise TypeError(f"every_ms must be a whole number, not {every_ms!r}")
    every = None if every_ms is None else datetime.timedelta(milliseconds=every_ms)
    timing = check_timing(fields.get("cron"), every, fields.get("tz"))
    options = fields.get("options")
    if not isinstance(options, dict):
        raise TypeError(f"options must be a JSON object, not {options!r}")
    schedule = Schedule(
        key=check_key(fields.get("key")),
        name=config.check_job_name(fields.get("name"), error=TypeError),
        data=fields.get("data"),
        cron=timing.cron,
        every=every,
        tz=timing.tz,
        next_time=None if next_ms is None else from_ms(next_ms),
        options=check_options(options, where="a stored schedule", stored=True),
        misfire=check_misfire(fields.get("misfire")),
    )
    return schedule, timing


@attrs.frozen
class Plan:
    """What to do about a due schedule: create a job for tick `fire_ms` (None: no job), and
    move the schedule on to `next_ms`."""

    fire_ms: int | None
    next_ms: int


def plan(timing: Timing, misfire: str, due_ms: int, now_ms: int) -> Plan:
    """The job and next tick of a schedule whose stored tick `due_ms` has come (see the module
    docstring for due and missed ticks)."""
    if now_ms - due_ms <= MISFIRE_GRACE_MS:
        return Plan(due_ms, timing.after(due_ms))
    # the latest missed tick is the last one more than the grace old: the tick after it is due
    # (or still to come) and gets its own job at the next step, as each due tick after it does
    latest, following = timing.catch_up(due_ms, now_ms - MISFIRE_GRACE_MS - 1)
    return Plan(latest if misfire == "once" else None, following)
