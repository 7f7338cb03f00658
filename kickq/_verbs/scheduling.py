"""The verbs of repeatable jobs: schedule, schedules, unschedule. Validate, then hand on to the
runtime; none of them blocks on Redis or raises (bad arguments fail the future, and nothing is
stored)."""

from __future__ import annotations

import datetime
import logging
from typing import Any

import attrs

from kickq._engine.future import KickqFuture, failed
from kickq._engine.runtime import Runtime
from kickq._model import clock, config
from kickq._model.cron import from_ms
from kickq._model.cron import timing as check_timing
from kickq._model.errors import ConfigError, SerializationError
from kickq._model.json import check_size, dumps
from kickq._model.schedules import (
    Schedule,
    check_key,
    check_misfire,
    check_options,
    from_record,
    to_record,
)
from kickq._verbs.background import in_background

log = logging.getLogger("kickq.schedules")


def schedule(
    name: str,
    data: Any = None,
    *,
    cron: str | None = None,
    every: datetime.timedelta | float | None = None,
    tz: str = "UTC",
    key: str | None = None,
    misfire: str = "once",
    **options: Any,
) -> KickqFuture[Schedule]:
    """Create a job `name` with `data` at every tick of `cron` (five fields, read in time zone
    `tz`) or of `every` (a timedelta or seconds), with the create() `options`.

    Stored in Redis under `key` (default: the name); scheduling the same key again replaces the
    schedule and keeps its next tick if its cron or interval and time zone are unchanged, so
    every process may call it at start-up. Exactly one job is created per tick, by any live
    kickq process. `misfire` says what ticks missed while no process ran give: "once" one job,
    "skip" none. Resolves to the stored Schedule.
    """
    try:
        config.check_job_name(name)
        schedule_key = check_key(name if key is None else key)
        timing = check_timing(cron, every, tz)
        proposed = Schedule(
            key=schedule_key,
            name=name,
            data=data,
            cron=timing.cron,
            every=_every(timing.every_ms),
            tz=timing.tz,
            options=check_options(options),
            misfire=check_misfire(misfire),
        )
        most = config.max_value_bytes()
        for option in ("meta", "unique_key"):  # what each tick's create() would check
            if proposed.options.get(option):
                check_size(dumps(proposed.options[option], option), option, most)
        record = to_record(proposed, timing, check_size(dumps(data, "job data"), "job data", most))
    except (ConfigError, SerializationError, TypeError, ValueError) as exc:
        return failed(exc)

    def save(engine: Runtime) -> Schedule:
        # on the dispatcher, after the clock's first check (see _skew.py)
        first_ms = timing.first(clock.to_ms(clock.now()))
        next_ms = engine.schedules.save(schedule_key, record, timing.spec, first_ms)
        engine.timer.nudge(next_ms)
        return attrs.evolve(proposed, next_time=from_ms(next_ms))

    future: KickqFuture[Schedule] = in_background(save)
    return future


def _every(every_ms: int | None) -> datetime.timedelta | None:
    return None if every_ms is None else datetime.timedelta(milliseconds=every_ms)


def schedules() -> KickqFuture[list[Schedule]]:
    """Every schedule of the namespace, the next to tick first. A stored schedule that cannot
    be read is left out, with an error logged."""

    def read(engine: Runtime) -> list[Schedule]:
        found = []
        for stored in engine.schedules.all():
            try:
                if stored.record is None:
                    raise ValueError("its record is missing")
                found.append(from_record(stored.record, stored.next_ms)[0])
            except Exception as exc:  # one bad record hides no other schedule
                log.error("schedule %r cannot be read (%s)", stored.key, exc)
        never = datetime.datetime.max.replace(tzinfo=datetime.timezone.utc)
        return sorted(found, key=lambda s: (s.next_time or never, s.key))

    future: KickqFuture[list[Schedule]] = in_background(read)
    return future


def unschedule(key: str) -> KickqFuture[bool]:
    """Remove the schedule stored under `key`; resolves True if it existed. Its jobs already
    created are left alone."""
    try:
        schedule_key = check_key(key)
    except ConfigError as exc:
        return failed(exc)
    future: KickqFuture[bool] = in_background(lambda engine: engine.schedules.remove(schedule_key))
    return future
