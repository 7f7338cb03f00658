"""Stats, workers and pause: kickq.stats(), kickq.workers(), kickq.pause() and resume()."""

from __future__ import annotations

import datetime
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from freezegun import freeze_time

import kickq
from support import ChildWorkers, all_keys, wait_until

pytestmark = pytest.mark.both_backends

WORKER_SCRIPT = """
import sys, time, kickq
kickq.process(sys.argv[1], lambda job, data: data, concurrent_jobs=3)
print("ready", flush=True)
time.sleep(120)
"""


@pytest.fixture
def child_worker(subprocess_env: dict[str, str]) -> Iterator[Any]:
    """Start worker processes for a job name; each is killed at the end."""
    workers = ChildWorkers(subprocess_env)

    def start(name: str) -> subprocess.Popen[str]:
        return workers.start(WORKER_SCRIPT, name)

    yield start
    workers.stop_all()


def stats_of(name: str) -> kickq.NameStats:
    return kickq.stats().result(10)[name]


def test_stats_equal_what_was_run() -> None:
    """Counts by state, completions per minute (jobs, not runs) and process times match the
    jobs that ran."""
    kickq.config(retry=True, retry_count=1, retry_interval=0)

    def handler(job: kickq.Job, data: Any) -> Any:
        if data == "bad":
            raise ValueError("bad")
        return data

    for future in kickq.create_many("stat", ["ok"] * 6 + ["bad"] * 2):
        future.result(5)
    kickq.create("stat", "later", delay=3600).result(5)
    worker = kickq.process("stat", handler, concurrent_jobs=4)
    wait_until(lambda: stats_of("stat").counts["fail"] == 2, timeout=20, what="all ran")
    worker.stop(5)
    stats = stats_of("stat")
    assert stats.counts == {
        "queued": 0,
        "delayed": 1,
        "processing": 0,
        "retry": 0,
        "ghost": 0,
        "success": 6,
        "fail": 2,
    }
    assert not stats.paused and stats.oldest_queued_age is None
    assert len(stats.finished_per_minute) == 60
    assert sum(minute.succeeded for minute in stats.finished_per_minute) == 6
    assert sum(minute.failed for minute in stats.finished_per_minute) == 2  # not 4 runs
    assert stats.finished_per_minute[-1].minute <= datetime.datetime.now(datetime.timezone.utc)
    assert stats.process_time is not None
    p50, p95, longest = stats.process_time
    assert 0 <= p50 <= p95 <= longest < 5


def test_process_time_covers_the_last_thousand_runs(r: Any) -> None:
    """Process times are kept for the last 1,000 runs of a name, no more."""
    for future in kickq.create_many("many", range(1100)):
        future.result(10)
    kickq.process("many", lambda job, data: None, concurrent_jobs=20)
    wait_until(lambda: stats_of("many").counts["success"] == 1100, timeout=60, what="all ran")
    (key,) = all_keys(r, "*times:{many}")
    assert r.llen(key) == 1000


def test_minutes_and_ages_follow_the_python_clock() -> None:
    """finished_per_minute spans the 60 minutes up to now; the oldest queued age grows with
    the clock; a minute's count is forgotten an hour later."""
    start = datetime.datetime(2031, 5, 1, 12, 0, 30, tzinfo=datetime.timezone.utc)
    with freeze_time(start, tick=True) as frozen:
        job = kickq.create("aging", {}).result(5)
        frozen.move_to(start + datetime.timedelta(seconds=90))
        age = stats_of("aging").oldest_queued_age
        assert age is not None and 89 <= age < 100
        worker = kickq.process("aging", lambda job, data: None)
        kickq.wait(job.id, timeout=10).result(15)
        worker.stop(5)
        minutes = stats_of("aging").finished_per_minute
        assert minutes[-1].minute == datetime.datetime(
            2031, 5, 1, 12, 2, tzinfo=datetime.timezone.utc
        )
        assert minutes[-1].succeeded == 1 and minutes[0].minute == minutes[-1].minute - (
            datetime.timedelta(minutes=59)
        )
        frozen.move_to(start + datetime.timedelta(minutes=65))
        assert sum(m.succeeded for m in stats_of("aging").finished_per_minute) == 0


def test_workers_announce_themselves() -> None:
    """A started worker shows in workers() with its names and slots; a stopped one leaves."""
    worker = kickq.process(["w1", "w2"], lambda job, data: None, concurrent_jobs=7)
    found = wait_until(lambda: kickq.workers().result(5), what="the worker's heartbeat")
    (info,) = found
    assert info.names == ("w1", "w2") and info.concurrent_jobs == 7 and info.running == 0
    assert info.id == worker.id and info.pid > 0 and info.host
    assert info.started <= info.last_seen
    worker.stop(5)
    kickq.reset()  # a process that stops takes its workers out at once
    assert kickq.workers().result(5) == []


def test_a_killed_worker_leaves_within_thirty_seconds(child_worker: Any) -> None:
    """A worker whose process was SIGKILLed is gone from workers() once 30 s pass without
    a heartbeat; a live worker stays."""
    with freeze_time(datetime.datetime.now(datetime.timezone.utc), tick=True) as frozen:
        child = child_worker("doomed")
        mine = kickq.process("alive", lambda job, data: None)
        wait_until(lambda: len(kickq.workers().result(5)) == 2, what="both heartbeats")
        child.kill()
        child.wait(10)
        frozen.tick(31)
        wait_until(
            lambda: [w.id for w in kickq.workers().result(5)] == [mine.id],
            timeout=10,
            what="the dead worker gone, the live one seen",
        )


def test_pause_holds_across_processes(child_worker: Any) -> None:
    """A paused name starts no run in any process; creating still works; resume lets them
    run."""
    assert kickq.pause("held").result(5) is True
    assert kickq.pause("held").result(5) is False
    child_worker("held")
    kickq.process("held", lambda job, data: data)
    jobs = [f.result(5) for f in kickq.create_many("held", range(5))]
    deadline = time.monotonic() + 1.5  # the pause must hold over this whole window
    while time.monotonic() < deadline:
        assert stats_of("held").counts["queued"] == 5
        time.sleep(0.1)
    assert stats_of("held").paused
    assert kickq.resume("held").result(5) is True
    assert kickq.resume("held").result(5) is False
    for job in jobs:
        assert kickq.wait(job.id, timeout=10).result(15).result == job.data
    assert not stats_of("held").paused


def test_a_paused_name_still_promotes_delayed_jobs() -> None:
    """Delayed jobs of a paused name become queued; they wait there."""
    kickq.pause("later").result(5)
    kickq.process("later", lambda job, data: None)
    job = kickq.create("later", {}, delay=0.2).result(5)
    wait_until(lambda: kickq.get(job.id).result(5).state is kickq.State.QUEUED, what="promoted")
    assert stats_of("later").counts["queued"] == 1


@pytest.mark.parametrize("bad", ["", 7, None])
def test_pause_needs_a_job_name(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        kickq.pause(bad).result(5)
    with pytest.raises((TypeError, ValueError)):
        kickq.resume(bad).result(5)


def test_stats_of_an_empty_namespace() -> None:
    assert kickq.stats().result(5) == {}
    assert kickq.workers().result(5) == []
