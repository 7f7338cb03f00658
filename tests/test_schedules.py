"""Repeatable jobs: kickq.schedule, schedules, unschedule; every=, misfires, replacing, bad input.

The ticks are acted on by the timer of this process (any live kickq process does it), driven
by freezegun; tests/test_schedule_ticks.py covers cron across daylight-saving changes and
processes racing for the same tick.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import pytest
from freezegun import freeze_time

import kickq
import kickq._engine.runtime
from kickq._model import clock
from support import all_keys, dbsize, queue_key, wait_until

pytestmark = pytest.mark.both_backends

UTC = datetime.timezone.utc
START = datetime.datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC)
HOUR = datetime.timedelta(hours=1)


def stored_jobs(r: Any) -> list[kickq.Job]:
    """Every job in Redis, the earliest tick first."""
    ids = [key.rsplit(":", 1)[1] for key in all_keys(r) if ":job:" in key]
    jobs = [kickq.get(job_id).result(5) for job_id in ids]
    return sorted(jobs, key=lambda job: (job.scheduled_for, job.name))


def next_time(key: str) -> datetime.datetime | None:
    found = [s for s in kickq.schedules().result(5) if s.key == key]
    return found[0].next_time if found else None


def test_schedule_stores_and_lists_schedules() -> None:
    """schedule() resolves to the stored Schedule; schedules() lists every one, the next to
    tick first; unschedule() removes one and says whether it existed."""
    with freeze_time(START):
        report = kickq.schedule(
            "report", {"kind": "daily"}, cron="0 9 * * MON-FRI", tz="Europe/Athens"
        ).result(5)
        ping = kickq.schedule(
            "ping", every=datetime.timedelta(minutes=5), key="ping-5m", priority=7
        ).result(5)
    assert isinstance(report, kickq.Schedule)
    # 2030-01-01 is a Tuesday; 09:00 in Athens (UTC+2 in winter) is 07:00 UTC
    assert report == kickq.Schedule(
        key="report",
        name="report",
        data={"kind": "daily"},
        cron="0 9 * * MON-FRI",
        every=None,
        tz="Europe/Athens",
        next_time=datetime.datetime(2030, 1, 1, 7, 0, tzinfo=UTC),
        options={},
        misfire="once",
    )
    assert ping.key == "ping-5m" and ping.name == "ping" and ping.cron is None
    assert ping.every == datetime.timedelta(minutes=5) and ping.tz == "UTC"
    assert ping.next_time == START + datetime.timedelta(minutes=5)
    assert ping.options == {"priority": 7}
    assert kickq.schedules().result(5) == [ping, report]
    assert kickq.unschedule("ping-5m").result(5) is True
    assert kickq.unschedule("ping-5m").result(5) is False
    assert kickq.schedules().result(5) == [report]


def test_every_creates_one_job_per_interval(r: Any) -> None:
    """every=: a job at each interval from the schedule's start, with the schedule's data and
    options and scheduled_for = its tick, run by a worker like any job."""
    runs: list[tuple[datetime.datetime | None, Any, int]] = []
    with freeze_time(START, tick=True) as frozen:
        kickq.process(
            "beat", lambda job, data: runs.append((job.scheduled_for, data, job.priority))
        )
        beat = kickq.schedule(
            "beat", {"n": 1}, every=datetime.timedelta(minutes=5), priority=7
        ).result(5)
        assert beat.next_time is not None
        first = beat.next_time
        assert datetime.timedelta(minutes=5) <= first - START < datetime.timedelta(minutes=6)
        for ticks in (1, 2, 3):
            frozen.move_to(first + (ticks - 1) * datetime.timedelta(minutes=5))
            wait_until(lambda ticks=ticks: len(runs) == ticks, timeout=10, what=f"{ticks} runs")
        assert next_time("beat") == first + datetime.timedelta(minutes=15)
    step = datetime.timedelta(minutes=5)
    assert runs == [(first + i * step, {"n": 1}, 7) for i in range(3)]
    assert [job.state for job in stored_jobs(r)] == ["success"] * 3


@pytest.mark.parametrize("misfire", ["once", "skip"])
@pytest.mark.parametrize(
    "timing",
    [pytest.param({"cron": "0 * * * *"}, id="cron"), pytest.param({"every": HOUR}, id="every")],
)
def test_misfire_after_a_three_hour_gap(r: Any, misfire: str, timing: dict[str, Any]) -> None:
    """Four hourly ticks missed while no process ran (the clock jumps 3.5 hours): "once"
    creates one job, for the latest of them, "skip" none; both go on at the next tick to come."""
    with freeze_time(START) as frozen:
        hourly = kickq.schedule("hourly", misfire=misfire, **timing).result(5)
        assert hourly.next_time is not None
        first = hourly.next_time
        frozen.move_to(first + 3 * HOUR + datetime.timedelta(minutes=30))
        wait_until(lambda: next_time("hourly") == first + 4 * HOUR, timeout=10)
        once = [first + 3 * HOUR] if misfire == "once" else []
        assert [job.scheduled_for for job in stored_jobs(r)] == once
        frozen.move_to(first + 4 * HOUR)
        wait_until(lambda: next_time("hourly") == first + 5 * HOUR, timeout=10)
    assert [job.scheduled_for for job in stored_jobs(r)][-1] == first + 4 * HOUR


def test_a_late_tick_within_the_grace_is_not_missed(r: Any) -> None:
    """A tick that is only seconds late is due, not missed: misfire="skip" still runs it."""
    with freeze_time(START) as frozen:
        sched = kickq.schedule("late", every=HOUR, misfire="skip").result(5)
        assert sched.next_time is not None
        frozen.move_to(sched.next_time + datetime.timedelta(seconds=20))
        wait_until(lambda: len(stored_jobs(r)) == 1, timeout=10)
    assert stored_jobs(r)[0].scheduled_for == sched.next_time


TEN_S = [range(0, 60, 10), range(10, 70, 10), range(20, 80, 10), range(540, 610, 10)]


@pytest.mark.parametrize("misfire", ["once", "skip"])
@pytest.mark.parametrize(
    ("jump_s", "missed_s", "due_s"),
    [
        pytest.param(50, [], TEN_S[0], id="50s"),
        pytest.param(65, [0], TEN_S[1], id="65s"),
        pytest.param(75, [0, 10], TEN_S[2], id="75s"),
        pytest.param(600, list(range(0, 540, 10)), TEN_S[3], id="10min"),
    ],
)
def test_every_tick_under_a_minute_late_gets_its_own_job(
    r: Any, misfire: str, jump_s: int, missed_s: list[int], due_s: range
) -> None:
    """every=10, the clock jumps `jump_s` past the first tick (no process ran meanwhile): each
    tick at most a minute late is due and gets its own job, whatever came before it; of the
    older (missed) ticks "once" runs the latest, "skip" none. (Offsets in seconds after the
    first tick.)"""
    with freeze_time(START) as frozen:
        sched = kickq.schedule("ten", every=10, misfire=misfire).result(5)
        assert sched.next_time is not None
        first = sched.next_time
        frozen.move_to(first + datetime.timedelta(seconds=jump_s))
        after = first + datetime.timedelta(seconds=due_s[-1] + 10)
        wait_until(lambda: next_time("ten") == after, timeout=10, what="the ticks acted on")
        jobs = stored_jobs(r)
    fired = missed_s[-1:] if misfire == "once" else []
    expected = [first + datetime.timedelta(seconds=s) for s in [*fired, *due_s]]
    assert [job.scheduled_for for job in jobs] == expected


def test_a_unique_schedule_does_not_pile_up(r: Any) -> None:
    """unique=True: while the job of an earlier tick is not complete, a tick creates nothing;
    the schedule goes on all the same."""
    with freeze_time(START) as frozen:
        kickq.schedule("slow", {"report": 1}, every=60, unique=True).result(5)
        for minutes in (1, 2, 3):
            frozen.move_to(START + datetime.timedelta(minutes=minutes))
            then = START + datetime.timedelta(minutes=minutes + 1)
            wait_until(lambda then=then: next_time("slow") == then, timeout=10)
    jobs = stored_jobs(r)
    assert [(job.scheduled_for, job.state) for job in jobs] == [
        (START + datetime.timedelta(minutes=1), "queued")
    ]
    assert jobs[0].unique_key is not None


def test_scheduling_again_keeps_the_next_tick_unless_the_timing_changes() -> None:
    """Saving the same key again replaces the schedule (name, data, options) but keeps its next
    tick while cron/every and tz are the same, so a process starting up neither re-fires nor
    skips a tick; a changed timing starts afresh."""
    with freeze_time(START) as frozen:
        first = kickq.schedule("sync", {"v": 1}, every=HOUR).result(5)
        frozen.move_to(START + datetime.timedelta(minutes=30))
        again = kickq.schedule("sync", {"v": 2}, every=HOUR, priority=2).result(5)
        assert again.next_time == first.next_time == START + HOUR
        assert kickq.schedules().result(5) == [again]
        assert again.data == {"v": 2} and again.options == {"priority": 2}
        changed = kickq.schedule("sync", every=2 * HOUR).result(5)
        assert changed.next_time == START + datetime.timedelta(minutes=30) + 2 * HOUR
        zoned = kickq.schedule("sync", cron="0 12 * * *", tz="Asia/Tokyo").result(5)
        assert zoned.next_time == datetime.datetime(2030, 1, 1, 3, 0, tzinfo=UTC)
        moved = kickq.schedule("sync", cron="0 12 * * *", tz="Europe/Athens").result(5)
        assert moved.next_time == datetime.datetime(2030, 1, 1, 10, 0, tzinfo=UTC)


def test_an_unscheduled_key_creates_no_more_jobs(r: Any) -> None:
    """After unschedule(), its ticks create nothing (a schedule due at the same instant does)."""
    with freeze_time(START) as frozen:
        kickq.schedule("gone", every=HOUR).result(5)
        kickq.schedule("kept", every=HOUR).result(5)
        assert kickq.unschedule("gone").result(5) is True
        frozen.move_to(START + HOUR)
        wait_until(lambda: len(stored_jobs(r)) == 1, timeout=10)
        assert next_time("kept") == START + 2 * HOUR
    assert [job.name for job in stored_jobs(r)] == ["kept"]
    assert next_time("gone") is None


def test_the_timer_wakes_at_the_next_tick(r: Any) -> None:
    """The timer's next wake-up includes the next tick, so a tick's job is created at the
    tick, not up to a second (the timer's longest sleep) later; never before it."""
    with freeze_time(START) as frozen:
        sched = kickq.schedule("hourly", cron="0 * * * *").result(5)
        assert sched.next_time is not None
        timer = kickq._engine.runtime.get().timer
        earliest, more = timer.tick(clock.now())
        assert earliest == clock.to_ms(sched.next_time) and not more
        assert kickq.unschedule("hourly").result(5)
        beat = kickq.schedule("beat", every=1).result(5)
        assert beat.next_time == START + datetime.timedelta(seconds=1)
        # 0.7 s before the tick, on a clock that stands still: the timer plans to wake at the
        # tick (0.3 s on), not a whole sleep of a second later
        frozen.move_to(START + datetime.timedelta(seconds=0.7))
        timer.nudge()
        wait_until(
            lambda: timer._planned_ms == clock.to_ms(beat.next_time),
            what="a wake-up planned at the tick",
        )
        assert kickq.unschedule("beat").result(5)
    created: list[kickq.Job] = []
    kickq.on("create", created.append)
    kickq.schedule("beat", every=1).result(5)
    wait_until(lambda: len(created) >= 3, timeout=10)
    lags = [(job.create_time - job.scheduled_for).total_seconds() for job in created[:3]]  # type: ignore[operator]
    assert all(lag >= 0 for lag in lags), lags


def test_a_schedule_that_cannot_be_read_stops_no_other(
    r: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged schedule record is logged and looked at again a minute later; the schedules
    beside it go on, and schedules() lists them."""
    with freeze_time(START) as frozen, caplog.at_level(logging.ERROR, "kickq"):
        good = kickq.schedule("good", every=60).result(5)
        assert good.next_time is not None
        keys = kickq._engine.runtime.get().schedules.keys
        r.hset(keys.schedules, "bad", "{not json")
        r.zadd(keys.schedule_times, {"bad": clock.to_ms(good.next_time)})
        frozen.move_to(good.next_time)
        wait_until(lambda: len(stored_jobs(r)) == 1, timeout=10)
        later = clock.to_ms(good.next_time) + 60_000
        wait_until(lambda: r.zscore(keys.schedule_times, "bad") == later, timeout=10)
        assert "'bad' cannot be read" in caplog.text
        assert [s.key for s in kickq.schedules().result(5)] == ["good"]


def test_a_refused_tick_stays_due_and_stops_no_other_work(r: Any) -> None:
    """When Redis refuses a tick's job (its queue's key holds a string), the tick stays due and
    its job is created once Redis takes it; meanwhile a delayed job is still queued on time."""
    with freeze_time(START) as frozen:
        kickq.schedule("blocked", every=60).result(5)
        r.set(queue_key("blocked"), "not a queue")
        delayed = kickq.create("later", delay=30).result(5)
        frozen.move_to(START + datetime.timedelta(seconds=60))
        wait_until(lambda: kickq.get(delayed.id).result(5).state == "queued", timeout=10)
        assert next_time("blocked") == START + datetime.timedelta(seconds=60)
        assert [job.name for job in stored_jobs(r)] == ["later"]
        r.delete(queue_key("blocked"))
        wait_until(lambda: next_time("blocked") == START + datetime.timedelta(seconds=120))
    blocked = [job for job in stored_jobs(r) if job.name == "blocked"]
    assert [job.scheduled_for for job in blocked] == [START + datetime.timedelta(seconds=60)]


def test_schedules_live_in_one_slot(r: Any, backend: str) -> None:
    """Both schedule keys are in one slot (partition 0 on a cluster); the jobs go to their
    names' partitions like any job."""
    with freeze_time(START):
        kickq.schedule("anything", every=60).result(5)
    keys = sorted(key for key in all_keys(r) if "schedule" in key)
    prefix = "kickq:{0}:" if backend == "cluster" else "kickq:"
    assert keys == [f"{prefix}schedule_times", f"{prefix}schedules"]


NOW = datetime.datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"cron": "61 * * * *"}, "not a valid expression"),
        ({"cron": "0 9 * *"}, "five fields"),
        ({"cron": "0 0 9 * * MON"}, "five fields"),
        ({"cron": "0 0 31 2 *"}, "not a valid expression"),
        ({"cron": 5}, "cron must be a str"),
        ({"cron": "0 9 * * *", "tz": "Mars/Olympus_Mons"}, "not a known IANA time zone"),
        ({"cron": "0 9 * * *", "tz": ""}, "IANA time zone name"),
        ({"every": 60, "tz": None}, "IANA time zone name"),
        ({}, "exactly one of cron and every"),
        ({"cron": "0 9 * * *", "every": 60}, "exactly one of cron and every"),
        ({"every": 0.5}, "every must be from 1 to 1e10 seconds, got 0.5"),
        ({"every": -60}, "every must be from 1 to 1e10 seconds"),
        ({"every": "often"}, "number of seconds or a timedelta"),
        ({"every": 60, "misfire": "twice"}, "misfire must be 'once' or 'skip'"),
        ({"every": 60, "key": ""}, "schedule key"),
        ({"every": 60, "at": NOW}, "'at' cannot be given"),
        ({"every": 60, "delay": 5}, "'delay' cannot be given"),
        ({"every": 60, "hotjob": True}, "'hotjob' cannot be given"),
        ({"every": 60, "priority": 10}, "priority"),
        ({"every": 60, "process_timeout": 0}, "process_timeout must be more than 0"),
        ({"every": 60, "retry_count": 10**30}, "retry_count must be a whole number from 0"),
        ({"every": 2e10}, "every must be from 1 to 1e10 seconds"),
        ({"every": 60, "retry_interval": lambda n: n}, "retry_interval"),
        ({"every": 60, "prority": 3}, "did you mean 'priority'"),
        ({"every": 60, "purge_timeout": 3}, "not a per-job option"),
    ],
)
def test_bad_schedules_fail_the_future_and_store_nothing(
    r: Any, arguments: dict[str, Any], error: str
) -> None:
    """A bad cron, time zone, interval, misfire or option: ConfigError, nothing stored."""
    future = kickq.schedule("bad", **arguments)
    with pytest.raises(kickq.ConfigError, match=error):
        future.result(5)
    assert dbsize(r) == 0


def test_bad_names_keys_and_data_fail_the_future(r: Any) -> None:
    """A name that is not a str, data that is not JSON, a bad key to unschedule: the future
    fails with the error create() gives, nothing is stored, nothing raises."""
    with pytest.raises(TypeError):
        kickq.schedule(5, every=60).result(5)  # type: ignore[arg-type]
    with pytest.raises(kickq.ConfigError):
        kickq.schedule("", every=60).result(5)
    with pytest.raises(kickq.SerializationError):
        kickq.schedule("x", object(), every=60).result(5)
    with pytest.raises(kickq.ConfigError):
        kickq.unschedule("").result(5)
    with pytest.raises(kickq.ConfigError):
        kickq.unschedule(None).result(5)  # type: ignore[arg-type]
    assert dbsize(r) == 0
