"""Limits across processes: kickq.limit(name, rate=..., concurrency=...)."""

from __future__ import annotations

import datetime
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from freezegun import freeze_time

import kickq
import kickq._engine.runtime
from kickq._verbs.limits import Limits
from support import ChildWorkers, all_keys, capped, scaled, wait_until

pytestmark = pytest.mark.both_backends

# A worker process: its handler records in Redis its run's start (as the claim wrote it, in
# microseconds since the epoch) and counts the runs in progress (INCR, then DECR), keeping
# every count it saw, then returns.
WORKER_SCRIPT = """
import datetime, os, sys, time
import redis, kickq

url = os.environ["KICKQ_REDIS_URL"]
if os.environ.get("KICKQ_REDIS_CLUSTER"):
    r = redis.RedisCluster.from_url(url, decode_responses=True)
else:
    r = redis.Redis.from_url(url, decode_responses=True)
name, slots, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

def handler(job, data):
    started = (job.runs[-1].start_time - EPOCH) // datetime.timedelta(microseconds=1)
    r.rpush("{t}:starts", started)
    now = r.incr("{t}:running")
    r.rpush("{t}:seen", now)
    time.sleep(seconds)
    r.decr("{t}:running")
    return started

kickq.process(name, handler, concurrent_jobs=slots)
print("ready", flush=True)
time.sleep(120)
"""


@pytest.fixture
def child_worker(subprocess_env: dict[str, str]) -> Iterator[Any]:
    """Start worker processes (name, slots, seconds a run takes); each is killed at the end."""
    workers = ChildWorkers(subprocess_env)

    def start(name: str, slots: int, seconds: float) -> subprocess.Popen[str]:
        return workers.start(WORKER_SCRIPT, name, str(slots), str(seconds))

    yield start
    workers.stop_all()


def count(name: str, state: str) -> int:
    return int(kickq.jobs(name=name, state=state).count().result(5))


def most_in_any_window(times: list[int], window: int) -> int:
    """The most of `times` that fall in any `window` seconds."""
    ordered = sorted(times)
    most, first = 0, 0
    for last, moment in enumerate(ordered):
        while moment - ordered[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_a_rate_holds_across_two_processes(child_worker: Any, r: Any) -> None:
    """rate=(20, 1) with 2 processes x 10 slots: the run starts the handlers record are never
    more than 20 in any second (to the microsecond), so 70 jobs take over 3 s; the held-back
    jobs start when the window turns (all within a bound far below the workers' 60 s recheck of
    idle names), and each job runs once."""
    assert kickq.limit("crawl", rate=(20, 1)).result(5) == Limits((20, 1.0), None)
    child_worker("crawl", 10, 0.02)
    child_worker("crawl", 10, 0.02)
    jobs = [f.result(5) for f in kickq.create_many("crawl", range(70))]
    wait_until(lambda: count("crawl", "success") == 70, timeout=capped(20, 45), what="all 70 ran")
    starts = sorted(int(t) for t in r.lrange("{t}:starts", 0, -1))
    assert len(starts) == 70
    assert most_in_any_window(starts, 1_000_000) == 20
    assert starts[-1] - starts[0] >= 3_000_000  # 3 windows to wait
    for job in jobs:
        assert len(kickq.get(job.id).result(5).runs) == 1  # being held back is not a run


def test_a_concurrency_limit_is_never_exceeded(child_worker: Any, r: Any) -> None:
    """concurrency=3 with 2 processes x 10 slots: the runs in progress, as the handlers count
    them, never pass 3 and reach it; each held job starts when a run ends (all within a bound
    far below the workers' 60 s recheck of idle names)."""
    kickq.limit("render", concurrency=3).result(5)
    child_worker("render", 10, 0.1)
    child_worker("render", 10, 0.1)
    for future in kickq.create_many("render", range(30)):
        future.result(5)
    wait_until(lambda: count("render", "success") == 30, timeout=capped(20, 45), what="all 30 ran")
    seen = [int(n) for n in r.lrange("{t}:seen", 0, -1)]
    assert len(seen) == 30
    assert max(seen) == 3


def test_a_slot_freed_in_another_process_starts_a_held_job_at_once(child_worker: Any) -> None:
    """With concurrency=1, a job held back in this process starts as soon as the run of another
    process ends (its end wakes this worker), not at an idle worker's 60 s recheck."""
    kickq.limit("solo", concurrency=1).result(5)
    child_worker("solo", 1, 1.5)
    first = kickq.create("solo", "first").result(5)
    wait_until(lambda: kickq.get(first.id).result(5).state == "processing", what="child runs")
    kickq.process("solo", lambda job, data: data)
    second = kickq.create("solo", "second").result(5)
    done = kickq.wait(second.id, timeout=scaled(capped(10, 45))).result(60)
    ended = kickq.get(first.id).result(5)
    assert ended.finish_time is not None and done.runs[0].start_time is not None
    assert done.runs[0].start_time >= ended.finish_time


def test_deleting_a_running_job_frees_its_slot_at_once(child_worker: Any) -> None:
    """With concurrency=1, deleting the job another process is running starts a held job here
    at once: the delete wakes the workers too."""
    kickq.limit("stuck", concurrency=1).result(5)
    child_worker("stuck", 1, 60)
    first = kickq.create("stuck", "first").result(5)
    wait_until(lambda: kickq.get(first.id).result(5).state == "processing", what="child runs")
    kickq.process("stuck", lambda job, data: data)
    second = kickq.create("stuck", "second").result(5)
    time.sleep(0.3)  # held back meanwhile
    assert kickq.get(second.id).result(5).state == "queued"
    assert kickq.delete(first.id).result(5) is True
    kickq.wait(second.id, timeout=scaled(capped(10, 45))).result(60)  # not a 60 s recheck


def test_a_rate_wakes_the_worker_when_its_window_turns() -> None:
    """rate=(1, 1.5): the second job starts when the window turns, 1.5 s after the first or
    a little later, not at the worker's 60 s recheck; the worker sleeps meanwhile."""
    kickq.limit("slow", rate=(1, 1.5)).result(5)
    kickq.process("slow", lambda job, data: data, concurrent_jobs=5)
    jobs = [f.result(5) for f in kickq.create_many("slow", [1, 2])]
    done = [kickq.wait(job.id, timeout=10).result(15) for job in jobs]
    starts = sorted(job.runs[0].start_time for job in done if job.runs[0].start_time)
    gap = (starts[1] - starts[0]).total_seconds()
    assert 1.5 <= gap < 1.5 + scaled(capped(5, 40))


def test_changing_a_limit_wakes_the_workers() -> None:
    """Jobs held back by a limit start as soon as it is removed."""
    kickq.limit("gate", rate=(1, 3600)).result(5)
    kickq.process("gate", lambda job, data: data, concurrent_jobs=5)
    jobs = [f.result(5) for f in kickq.create_many("gate", range(4))]
    wait_until(lambda: count("gate", "success") == 1, what="the first job")
    time.sleep(0.3)  # the window holds: nothing else starts
    assert count("gate", "queued") == 3
    assert kickq.limit("gate").result(5) == Limits(None, None)
    for job in jobs:
        kickq.wait(job.id, timeout=scaled(capped(10, 45))).result(60)


def test_limits_show_in_stats_and_are_removed(r: Any) -> None:
    """stats() shows a name's limits; limit(name) removes both, and their keys."""
    kickq.limit("shown", rate=(5, datetime.timedelta(seconds=2)), concurrency=3).result(5)
    kickq.process("shown", lambda job, data: data)
    kickq.wait(kickq.create("shown").result(5).id, timeout=5).result(10)
    stats = kickq.stats().result(5)["shown"]
    assert stats.limits == Limits((5, 2.0), 3)
    assert all_keys(r, "*limits:{shown}") and all_keys(r, "*starts:{shown}")
    kickq.limit("shown", concurrency=2).result(5)  # the rate left out is removed
    assert kickq.stats().result(5)["shown"].limits == Limits(None, 2)
    assert not all_keys(r, "*starts:{shown}")
    kickq.limit("shown").result(5)
    assert kickq.stats().result(5)["shown"].limits == Limits(None, None)
    assert not all_keys(r, "*limits:*")


def test_a_name_with_no_limit_has_none() -> None:
    kickq.create("free").result(5)
    assert kickq.stats().result(5)["free"].limits == Limits(None, None)


@pytest.mark.parametrize(
    "bad",
    [
        {"rate": (0, 1)},
        {"rate": (1, 0)},
        {"rate": (1, -1)},
        {"rate": (-2, 1)},
        {"rate": (1.5, 1)},
        {"rate": (True, 1)},
        {"rate": ("5", 1)},
        {"rate": (1, "1")},
        {"rate": (1, float("nan"))},
        {"rate": (1, float("inf"))},
        {"rate": (1,)},
        {"rate": (1, 2, 3)},
        {"rate": 5},
        {"rate": "5/1"},
        {"concurrency": 0},
        {"concurrency": -1},
        {"concurrency": 1.5},
        {"concurrency": True},
        {"concurrency": "3"},
        {"concurrency": 10**30},
        {"concurrency": 1_000_001},
        {"rate": (10**30, 1)},
        {"rate": (1, 2e10)},
    ],
)
def test_bad_limits_fail_the_future_and_store_nothing(bad: dict[str, Any], r: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        kickq.limit("bad", **bad).result(5)
    kickq.create("bad").result(5)  # the engine is up: nothing was sent all the same
    assert not all_keys(r, "*limits*")


@pytest.mark.parametrize("name", ["", 7, None, b"bytes"])
def test_a_limit_needs_a_job_name(name: Any, r: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        kickq.limit(name, concurrency=1).result(5)
    assert not all_keys(r, "*limits*")


def claim(name: str, count: int = 10) -> tuple[list[str], float | None]:
    """One claim straight through the store: the ids it started and its rate wait."""
    store = kickq._engine.runtime.get().store
    reply = store.run(store.claim_call([name], count))
    jobs = store.parse_claimed(reply)
    return [item.job.id for item in jobs if hasattr(item, "job")], store.rate_wait(reply)


def test_the_claim_counts_the_window_on_the_python_clock() -> None:
    """A rate's window is read on the kickq clock: a frozen clock holds it; moving the clock
    past the window lets the next run start; the claim says how long until then."""
    start = datetime.datetime(2031, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)
    with freeze_time(start) as frozen:
        kickq.limit("tick", rate=(2, 10)).result(5)
        for future in kickq.create_many("tick", range(3)):
            future.result(5)
        taken, wait = claim("tick")
        assert len(taken) == 2 and wait == 10.0
        frozen.move_to(start + datetime.timedelta(seconds=4))
        assert claim("tick") == ([], 6.0)
        frozen.move_to(start + datetime.timedelta(seconds=10, milliseconds=1))
        taken, wait = claim("tick")
        assert len(taken) == 1 and wait is None  # nothing is left queued: nothing to wait for


def test_the_claim_leaves_room_for_the_runs_in_progress() -> None:
    """concurrency=2: a claim takes 2; the next takes none until a run ends, and says no wait
    (the end of a run wakes the workers instead)."""
    kickq.limit("pair", concurrency=2).result(5)
    for future in kickq.create_many("pair", range(4)):
        future.result(5)
    taken, wait = claim("pair")
    assert len(taken) == 2 and wait is None
    assert claim("pair") == ([], None)
    kickq.delete(taken[0]).result(5)
    taken, _ = claim("pair")
    assert len(taken) == 1
    assert count("pair", "queued") == 1
