"""Stats, workers and pause: kickq.stats(), kickq.workers(), kickq.pause() and resume()."""

from __future__ import annotations

import datetime
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import redis
from freezegun import freeze_time

import kickq
from kickq._redis.keys import PARTITIONS, SEEN_STATES, partition_of_name
from kickq._verbs import stats as _stats
from support import ChildWorkers, all_keys, scaled, wait_until

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
    later = kickq.create("stat", "later", delay=3600).result(5)
    kickq.create("stat", "after later", after=[later.id]).result(5)  # deferred till then
    worker = kickq.process("stat", handler, concurrent_jobs=4)
    wait_until(lambda: stats_of("stat").counts["fail"] == 2, timeout=20, what="all ran")
    worker.stop(5)
    stats = stats_of("stat")
    assert stats.counts == {
        "queued": 0,
        "delayed": 1,
        "deferred": 1,
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
    assert 0 <= p50 <= p95 <= longest < scaled(5)


def test_process_time_covers_the_last_thousand_runs(r: Any) -> None:
    """Process times are kept for the last 1,000 runs of a name, no more."""
    for future in kickq.create_many("many", range(1100)):
        future.result(10)
    kickq.process("many", lambda job, data: None, concurrent_jobs=20)
    wait_until(lambda: stats_of("many").counts["success"] == 1100, timeout=120, what="all ran")
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
        assert age is not None and 89 <= age < 90 + scaled(10)  # 90 s, and the real time since
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


@pytest.mark.single_backend  # pure: never reaches Redis
@pytest.mark.parametrize("bad", ["", 7, None])
def test_pause_needs_a_job_name(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        kickq.pause(bad).result(5)
    with pytest.raises((TypeError, ValueError)):
        kickq.resume(bad).result(5)


def test_stats_of_an_empty_namespace() -> None:
    assert kickq.stats().result(5) == {}
    assert kickq.workers().result(5) == []


MANY = 10_000


def many_name(i: int) -> str:
    return f"s{i:05d}"


def seed_many_names(count: int) -> dict[str, Any]:
    """Give `count` names a queued job each, and some of them more: a delayed job (one name in
    four), a cancelled job (fail, one in ten), a pause (one in fifty), limits (one in fifty);
    and return what the test needs to check them."""
    futures = []
    for i in range(count):
        futures.append(kickq.create(many_name(i), i))
        if i % 4 == 1:
            futures.append(kickq.create(many_name(i), None, delay=3600))
    doomed = [kickq.create(many_name(i), "doomed") for i in range(2, count, 10)]
    for future in futures:
        future.result(60)
    for future in [kickq.cancel(job.result(60).id) for job in doomed]:
        assert future.result(60) is True
    for future in [kickq.pause(many_name(i)) for i in range(3, count, 50)]:
        future.result(60)
    for future in [kickq.limit(many_name(i), (10, 60), 2) for i in range(4, count, 50)]:
        future.result(60)
    return {"delayed": len(range(1, count, 4)), "fail": len(doomed)}


def run_a_few(names: list[str], held: str, release: threading.Event) -> None:
    """Two runs of each of `names`: its queued job succeeds, one more job fails; `held`'s
    queued job left processing until `release` is set."""
    for future in [kickq.create(name, "bad") for name in names]:
        future.result(10)

    def handler(job: kickq.Job, data: Any) -> Any:
        if data == "bad":
            raise ValueError("bad")
        return data

    worker = kickq.process(names, handler, concurrent_jobs=4)
    done = kickq.jobs(name=names, state=["success", "fail"])
    wait_until(lambda: done.count().result(10) == 2 * len(names), timeout=30, what="the runs")
    worker.stop(5)
    kickq.process(held, lambda job, data: release.wait(60))
    wait_until(
        lambda: kickq.jobs(name=held, state="processing").count().result(10) == 1,
        what="the held run",
    )


@pytest.mark.single_backend  # 10,000 names once; the cluster's partitions are tested below
def test_stats_of_ten_thousand_names() -> None:
    """With 10,000 names every name is there, with its own counts, pause, limits, runs and
    oldest queued age; the totals add up."""
    expected = seed_many_names(MANY)
    ran = [many_name(i) for i in (5, 5005, 9999)]
    held = many_name(6)
    release = threading.Event()
    try:
        run_a_few(ran, held, release)
        found = kickq.stats().result(60)
    finally:
        release.set()
    assert list(found) == [many_name(i) for i in range(MANY)]
    totals = {state: sum(s.counts[state] for s in found.values()) for state in SEEN_STATES}
    assert totals == {
        "queued": MANY - len(ran) - 1,
        "delayed": expected["delayed"],
        "deferred": 0,
        "processing": 1,
        "retry": 0,
        "ghost": 0,
        "success": len(ran),
        "fail": expected["fail"] + len(ran),
    }
    assert [name for name, s in found.items() if s.paused] == [
        many_name(i) for i in range(3, MANY, 50)
    ]
    assert [name for name, s in found.items() if s.limits.any] == [
        many_name(i) for i in range(4, MANY, 50)
    ]
    limits = found[many_name(54)].limits
    assert (limits.rate, limits.concurrency) == ((10, 60.0), 2)
    assert found[many_name(53)].paused and not found[many_name(54)].paused
    assert found[many_name(1)].counts["delayed"] == 1 and found[many_name(0)].counts["delayed"] == 0
    assert found[many_name(12)].counts["fail"] == 1 and found[many_name(12)].counts["queued"] == 1
    assert found[held].counts["processing"] == 1 and found[held].oldest_queued_age is None
    for name in ran:
        stats = found[name]
        assert (stats.counts["success"], stats.counts["fail"], stats.counts["queued"]) == (1, 1, 0)
        assert sum(m.succeeded for m in stats.finished_per_minute) == 1
        assert sum(m.failed for m in stats.finished_per_minute) == 1
        assert stats.process_time is not None and stats.oldest_queued_age is None
    ages = [s.oldest_queued_age for s in found.values() if s.counts["queued"]]
    assert len(ages) == MANY - len(ran) - 1 and all(age is not None and age < 60 for age in ages)
    quiet = found[many_name(7)]
    assert quiet.process_time is None and len(quiet.finished_per_minute) == 60
    assert not any(m.succeeded or m.failed for m in quiet.finished_per_minute)


class Sent:
    """What the dispatcher thread (where stats() reads) writes to Redis, seen on the wire:
    requests (one per command or pipeline: a round trip each) and the commands in them.
    Commands are counted by their RESP headers, which no argument sent here looks like."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.requests = self.commands = 0
        send = redis.connection.AbstractConnection.send_packed_command

        def spy(connection: Any, command: Any, check_health: bool = True) -> Any:
            if threading.current_thread().name == "kickq-dispatcher":
                chunks = [command] if isinstance(command, (bytes, str)) else command
                data = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks)
                self.requests += 1
                self.commands += data.count(b"\r\n*") + 1
            return send(connection, command, check_health)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", spy)

    def of_stats(self) -> tuple[int, int, dict[str, kickq.NameStats]]:
        """The requests and commands one stats() sends, and what it found."""
        requests, commands = self.requests, self.commands
        found = kickq.stats().result(30)
        return self.requests - requests, self.commands - commands, found


def test_stats_cost_does_not_grow_with_the_names(
    monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """stats() of 1,200 names takes as many round trips as of 20, and sends only one command
    per partition for the names and one script call per NAMES_PER_CALL names of a partition:
    no command per name."""
    sent = Sent(monkeypatch)
    for future in [kickq.create(many_name(i), i) for i in range(20)]:
        future.result(10)
    kickq.stats().result(30)  # the script loaded, the connections made
    few_requests, few_commands, few = sent.of_stats()
    for future in [kickq.create(many_name(i), i) for i in range(20, 1200)]:
        future.result(30)
    many_requests, many_commands, many = sent.of_stats()
    assert len(few) == 20 and len(many) == 1200
    assert all(s.counts["queued"] == 1 for s in many.values())
    assert many_requests == few_requests
    assert few_commands == expected_commands(few, backend)
    assert many_commands == expected_commands(many, backend)
    if backend == "single":
        assert (few_requests, few_commands) == (2, 2)


def expected_commands(names: Iterable[str], backend: str) -> int:
    """One read of the names set per partition, one script call per NAMES_PER_CALL names of
    a partition."""
    if backend == "single":
        groups = Counter({0: len(list(names))})
    else:
        groups = Counter(partition_of_name(name) for name in names)
    partitions = 1 if backend == "single" else PARTITIONS
    return partitions + sum(-(-n // _stats.NAMES_PER_CALL) for n in groups.values())


def test_the_oldest_queued_job_is_found_in_any_priority_band() -> None:
    """The oldest queued age is the oldest job's, whichever priority band it waits in: the
    first band (read from the queue's head) or a later one."""
    start = datetime.datetime(2031, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
    with freeze_time(start) as frozen:
        for step, (first, later) in enumerate([(1, 9), (9, 1)]):
            name = f"bands{step}"
            frozen.move_to(start)
            kickq.create(name, "oldest", priority=first).result(5)
            frozen.move_to(start + datetime.timedelta(seconds=60))
            kickq.create(name, "newer", priority=later).result(5)
            kickq.create(name, "newer", priority=5).result(5)
        frozen.move_to(start + datetime.timedelta(seconds=200))
        found = kickq.stats().result(10)
    assert [found[f"bands{step}"].oldest_queued_age for step in range(2)] == [200.0, 200.0]
    assert [found[f"bands{step}"].counts["queued"] for step in range(2)] == [3, 3]


def test_stray_minutes_and_times_read_as_they_always_did(r: Any) -> None:
    """Entries kickq did not write (a stray time, an old or odd minute) are read exactly as
    the per-name functions read the whole hash and list: scripts/stats.lua leaves out only
    what cannot count and computes percentiles to the same floats."""
    now = datetime.datetime(2031, 5, 1, 12, 30, 10, tzinfo=datetime.timezone.utc)
    minute = int(now.timestamp()) // 60
    keys = kickq._engine.runtime.get().store.keys_of_name
    times = {
        "plain": ["0.1", "1e-3", "3", "7.25", "0.30000000000000004", "1E2"],
        "stray": ["0.25", "junk", "1_0", "2.", " 4 ", "0x10", "-inf"],
        "edges": [" 4 ", "+.5", "1e999", "\t7\n"],
        "none": [],
    }
    minutes = {
        str(minute % 60): f"{minute}:3:1",
        str((minute - 1) % 60): f"{minute - 61}:5:5",  # an hour and a minute ago
        str((minute - 2) % 60): f"{minute - 2}:2:0",
        str((minute - 3) % 60): f"{minute - 3}:x:0",
        str((minute - 4) % 60): f"0{minute - 4}:0:7",
        "60": f"{minute - 5}:9:9",
        "odd": "junk",
    }
    with freeze_time(now):
        for name, entries in times.items():
            kickq.pause(name).result(5)  # the name is known with no job at all
            if entries:
                r.rpush(keys(name).times(name), *entries)
            r.hset(keys(name).minutes(name), mapping=minutes)
        found = kickq.stats().result(10)
        for name, entries in times.items():
            assert found[name].process_time == _stats.process_time(entries)
            assert found[name].finished_per_minute == _stats.finished_per_minute(minutes, now)
    assert found["plain"].process_time == (0.1 + 0.2, 100.0, 100.0)
    assert found["stray"].process_time == (2.0, 10.0, 10.0)
    assert found["edges"].process_time == (4.0, float("inf"), float("inf"))
    assert found["none"].process_time is None
    counted = [(m.succeeded, m.failed) for m in found["plain"].finished_per_minute[-5:]]
    assert counted == [(0, 7), (0, 0), (2, 0), (0, 0), (3, 1)]
