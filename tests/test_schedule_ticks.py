"""Schedule ticks: cron in a time zone across daylight-saving changes, and one job per tick when
processes race for it.

The timer's schedule step (`ScheduleTicks.create_due(now)`, run by every live process about once
a second) is called directly here, so that a test can walk a clock through whole days minute by
minute; the engine's own timer runs meanwhile, on the same frozen clock, and races with it.
"""

from __future__ import annotations

import datetime
import itertools
import subprocess
import sys
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time

import kickq
import kickq._engine.runtime
from kickq._model import clock, schedules
from kickq._model.cron import timing
from support import all_keys

pytestmark = pytest.mark.both_backends

UTC = datetime.timezone.utc
DAY = datetime.timedelta(days=1)


def stored_jobs(r: Any) -> list[kickq.Job]:
    ids = [key.rsplit(":", 1)[1] for key in all_keys(r) if ":job:" in key]
    jobs = [kickq.get(job_id).result(5) for job_id in ids]
    return sorted(jobs, key=lambda job: (job.scheduled_for, job.name))


def wall_clock(zone: ZoneInfo, day: datetime.date, hour: int) -> datetime.datetime:
    """When a daily job at hour:30 local time runs on `day`: at that time, at its first pass
    when the hour is repeated, and at the end of the gap (the next whole hour) when skipped."""
    local = datetime.datetime.combine(day, datetime.time(hour, 30), zone)
    if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):
        local = datetime.datetime.combine(day, datetime.time(hour + 1, 0), zone)
    return local.astimezone(UTC)


# the 2027 daylight-saving days: spring forward, then fall back
DST_DAYS = [
    pytest.param("Europe/Athens", datetime.date(2027, 3, 28), id="athens-spring"),
    pytest.param("Europe/Athens", datetime.date(2027, 10, 31), id="athens-fall"),
    pytest.param("America/New_York", datetime.date(2027, 3, 14), id="new-york-spring"),
    pytest.param("America/New_York", datetime.date(2027, 11, 7), id="new-york-fall"),
]


@pytest.mark.parametrize(("tz", "day"), DST_DAYS)
@pytest.mark.parametrize("step_minutes", [1, 37])
def test_daily_jobs_run_once_a_day_across_daylight_saving_changes(
    r: Any, tz: str, day: datetime.date, step_minutes: int
) -> None:
    """Daily jobs at 02:30 and 03:30 local time, the day before, of and after a clock change,
    the clock walked in 1-minute steps (each tick due on time) or 37-minute ones (each tick
    found late, as a misfire): exactly one job each day, at the wall-clock time."""
    zone = ZoneInfo(tz)
    start = datetime.datetime.combine(day - DAY, datetime.time(0, 0), zone).astimezone(UTC)
    end = datetime.datetime.combine(day + 2 * DAY, datetime.time(0, 0), zone).astimezone(UTC)
    with freeze_time(start) as frozen:
        for hour in (2, 3):
            kickq.schedule(f"at-{hour}-30", cron=f"30 {hour} * * *", tz=tz).result(5)
        ticker = kickq._engine.runtime.get().schedule_ticks
        moment = start
        while moment <= end:
            frozen.move_to(moment)
            ticker.create_due(clock.now())
            moment += datetime.timedelta(minutes=step_minutes)
    found = [(job.name, job.scheduled_for) for job in stored_jobs(r)]
    expected = [
        (f"at-{hour}-30", wall_clock(zone, day + offset * DAY, hour))
        for offset in (-1, 0, 1)
        for hour in (2, 3)
    ]
    assert found == sorted(expected, key=lambda item: (item[1], item[0]))


@pytest.mark.single_backend  # pure: never reaches Redis
def test_the_first_pass_of_a_repeated_hour_is_the_one_that_runs() -> None:
    """On a fall-back day, a daily tick in the repeated hour runs at its first pass, and a
    schedule saved during the second pass (after the first) next runs the day after."""
    athens = ZoneInfo("Europe/Athens")
    daily = timing("30 3 * * *", None, "Europe/Athens")
    before = datetime.datetime(2027, 10, 31, 3, 0, fold=0, tzinfo=athens)
    first_pass = datetime.datetime(2027, 10, 31, 3, 30, fold=0, tzinfo=athens)
    assert daily.first(clock.to_ms(before)) == clock.to_ms(first_pass)
    second_pass = datetime.datetime(2027, 10, 31, 3, 10, fold=1, tzinfo=athens)
    tomorrow = datetime.datetime(2027, 11, 1, 3, 30, tzinfo=athens)
    assert daily.first(clock.to_ms(second_pass)) == clock.to_ms(tomorrow)
    # missed ticks found during the second pass: the latest was the first pass
    latest, following = daily.catch_up(clock.to_ms(first_pass - 5 * DAY), clock.to_ms(second_pass))
    assert (latest, following) == (clock.to_ms(first_pass), clock.to_ms(tomorrow))


@pytest.mark.single_backend  # pure: never reaches Redis
def test_an_hourly_cron_runs_every_real_hour_across_fall_back() -> None:
    """A cron over every hour ("0 * * * *") follows real time: the repeated hour runs twice,
    once per real hour."""
    athens = ZoneInfo("Europe/Athens")
    hourly = timing("0 * * * *", None, "Europe/Athens")
    tick = clock.to_ms(datetime.datetime(2027, 10, 31, 1, 30, tzinfo=athens))
    ticks = []
    for _ in range(4):
        tick = hourly.after(tick)
        ticks.append(tick)
    assert [b - a for a, b in itertools.pairwise(ticks)] == [3_600_000] * 3
    local = [datetime.datetime.fromtimestamp(t / 1000, athens).strftime("%H:%M%z") for t in ticks]
    assert local == ["02:00+0300", "03:00+0300", "03:00+0200", "04:00+0200"]


@pytest.mark.single_backend  # pure: never reaches Redis
@pytest.mark.parametrize(
    ("misfire", "late_s", "fire_s", "next_s"),
    [
        ("once", 0, 0, 300),
        ("skip", 59, 0, 300),  # within the minute's grace: due, not missed
        ("once", 61, 0, 300),
        ("skip", 61, None, 300),
        ("once", 950, 600, 900),  # three missed ticks, then one 50 s old: due, next
        ("skip", 950, None, 900),
        ("once", 1000, 900, 1200),  # four missed ticks: one job, for the latest
        ("skip", 1000, None, 1200),
    ],
)
def test_plan_of_a_due_tick(misfire: str, late_s: int, fire_s: int | None, next_s: int) -> None:
    """A tick up to a minute late is due and runs; an older one was missed: "once" runs the
    latest missed tick, "skip" none; the next tick is the first that was not missed. (Ticks
    every five minutes; times in seconds after the tick that came due.)"""
    every = timing(None, datetime.timedelta(minutes=5), "UTC")
    due = 1_000_000
    plan = schedules.plan(every, misfire, due, due + late_s * 1000)
    fire = None if fire_s is None else due + fire_s * 1000
    assert plan == schedules.Plan(fire, due + next_s * 1000)


RACER = """
import datetime, sys
import kickq._engine.runtime
first_ms, ticks = int(sys.argv[1]), int(sys.argv[2])
ticker = kickq._engine.runtime.get().schedule_ticks
for i in range(ticks):
    sys.stdin.readline()  # both processes take each tick together
    now_ms = first_ms + i * 60_000 + (i % 7) * 1000
    ticker.create_due(datetime.datetime.fromtimestamp(now_ms / 1000, datetime.timezone.utc))
    print("ticked", flush=True)
"""


def test_two_processes_racing_for_200_ticks_create_one_job_each(
    r: Any, subprocess_env: dict[str, str]
) -> None:
    """Two processes run the schedule step for the same 200 ticks, in step: 200 jobs, one per
    tick, with scheduled_for its tick."""
    ticks = 200
    start = datetime.datetime(2030, 1, 1, tzinfo=UTC)
    with freeze_time(start):
        sched = kickq.schedule("raced", {"same": True}, every=60).result(5)
    assert sched.next_time is not None
    first_ms = clock.to_ms(sched.next_time)
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(first_ms), str(ticks)],
            env=subprocess_env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for _ in range(ticks):
            for racer in racers:
                assert racer.stdin is not None
                racer.stdin.write("go\n")
                racer.stdin.flush()
            for racer in racers:
                assert racer.stdout is not None
                assert racer.stdout.readline().strip() == "ticked"
    finally:
        for racer in racers:
            racer.communicate(timeout=30)
    assert [racer.returncode for racer in racers] == [0, 0]
    jobs = stored_jobs(r)
    assert [job.scheduled_for for job in jobs] == [
        sched.next_time + datetime.timedelta(minutes=i) for i in range(ticks)
    ]
    assert {job.data["same"] for job in jobs} == {True}
