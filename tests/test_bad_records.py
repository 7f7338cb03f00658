"""One damaged record never affects another job: it is set aside alone, with an ERROR naming it,
while the jobs claimed or due with it run, and every timer of the namespace goes on."""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

import pytest
import redis

import kickq
import kickq._runtime
from support import index_size, job_key, queue_key, wait_until

pytestmark = [pytest.mark.both_backends, pytest.mark.both_parsers]


def damaged_key(job_id: str) -> str:
    return kickq._runtime.get().store.keys_of(job_id).damaged(job_id)


def in_any_index(client: Any, job_id: str, name: str) -> bool:
    keys = kickq._runtime.get().store.keys_of(job_id)
    zsets = (keys.scheduled, keys.processing, keys.finished)
    return any(client.zscore(z, job_id) is not None for z in zsets) or job_id in client.zrange(
        queue_key(name), 0, -1
    )


def deeply_nested(levels: int) -> str:
    """JSON text nested `levels` deep: no Python process can decode 100,000 levels."""
    return "[" * levels + "]" * levels


def assert_set_aside(client: Any, job_id: str, name: str) -> None:
    wait_until(lambda: client.exists(damaged_key(job_id)), timeout=10, what="the record set aside")
    assert not client.exists(job_key(job_id))
    assert not in_any_index(client, job_id, name)
    assert client.hget(damaged_key(job_id), "damaged_error")


def errors_naming(caplog: pytest.LogCaptureFixture, job_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and job_id in r.getMessage()]


QUEUED_DAMAGE = [
    pytest.param("data", deeply_nested(100_000), id="data-nested-100000"),
    pytest.param("ghost_count", '"x"', id="ghost_count-str"),
    pytest.param("process_timeout", '"x"', id="process_timeout-str"),
    pytest.param("retry", "3", id="retry-int"),
    pytest.param("create_time", '"yesterday"', id="create_time-not-a-time"),
    pytest.param("runs", None, id="run-entry-not-an-object"),
    pytest.param("state", "bogus", id="unknown-state"),
    pytest.param("version", "x", id="version-str"),
    pytest.param("run_count", "1.5", id="run_count-float"),
]


@pytest.mark.parametrize(("field", "value"), QUEUED_DAMAGE)
def test_a_damaged_queued_record_is_set_aside_and_the_jobs_claimed_with_it_run_once(
    r: Any, caplog: pytest.LogCaptureFixture, field: str, value: str | None
) -> None:
    """Good jobs claimed in the same batch as a damaged one each run once, at once (never left
    processing to be ghosted); the damaged one is set aside, out of every index, with an ERROR."""
    caplog.set_level(logging.ERROR, logger="kickq")
    good = [kickq.create("mixed", i).result(5) for i in range(3)]
    bad = kickq.create("mixed", "bad").result(5)
    good += [kickq.create("mixed", i).result(5) for i in range(3, 6)]
    if field == "runs":
        r.hset(job_key(bad.id), "run:1", "[1, 2]")
    else:
        r.hset(job_key(bad.id), field, value)

    kickq.process("mixed", lambda job, data: data, concurrent_jobs=10)
    for job in good:
        done = kickq.wait(job.id, timeout=5).result(10)
        assert done.result == job.data and len(done.runs) == 1
    assert_set_aside(r, bad.id, "mixed")
    wait_until(lambda: errors_naming(caplog, bad.id), timeout=5, what="an ERROR naming it")


def test_waits_and_gets_on_a_damaged_record_fail_with_a_kickq_error_naming_the_id(r: Any) -> None:
    """get() and wait() on a damaged record, before and after it is set aside, fail with one
    kickq error naming the id (never a raw KeyError, ValueError or ResponseError)."""
    bad = kickq.create("broken", "bad").result(5)
    waiting = kickq.wait(bad.id, timeout=30)
    r.hset(job_key(bad.id), "state", "bogus")
    for future in (kickq.get(bad.id), kickq.wait(bad.id, timeout=5)):
        with pytest.raises(kickq.KickqError, match=bad.id):
            future.result(10)
    kickq.process("broken", lambda job, data: data)
    with pytest.raises(kickq.KickqError, match=bad.id):  # a pending wait ends when set aside
        waiting.result(10)
    assert_set_aside(r, bad.id, "broken")
    for future in (kickq.get(bad.id), kickq.wait(bad.id, timeout=5)):
        with pytest.raises(kickq.KickqError, match=bad.id):
            future.result(10)

    wrong_type = kickq.create("broken", "wrong type", delay=3600).result(5)
    r.delete(job_key(wrong_type.id))
    r.set(job_key(wrong_type.id), "not a hash")
    for future in (kickq.get(wrong_type.id), kickq.wait(wrong_type.id, timeout=5)):
        with pytest.raises(kickq.KickqError, match=wrong_type.id):
            future.result(10)


def test_a_damaged_running_record_does_not_stop_the_timers(r: Any) -> None:
    """A run left by a dead process, whose record says ghost_count "x", is set aside when the
    timer finds it overdue, while a delayed job of the namespace still runs on time."""
    orphan = kickq.create("orphan", None, delay=3600).result(5)
    keys = kickq._runtime.get().store.keys_of(orphan.id)
    started = json.dumps(datetime.datetime.now(datetime.timezone.utc).isoformat())
    r.zrem(keys.scheduled, orphan.id)
    r.hset(
        job_key(orphan.id),
        mapping={"state": "processing", "run_count": 1, "run_start": started, "ghost_count": '"x"'},
    )
    r.zadd(keys.processing, {orphan.id: 0})  # its run's deadline passed long ago
    kickq.process("later", lambda job, data: data)
    later = kickq.create("later", "on time", delay=1).result(5)
    assert kickq.wait(later.id, timeout=8).result(10).result == "on time"
    assert_set_aside(r, orphan.id, "orphan")


def test_a_damaged_delayed_record_is_set_aside_and_other_delayed_jobs_are_promoted(
    r: Any,
) -> None:
    """A delayed record whose data cannot be decoded is set aside by the timer; the delayed
    jobs due with it are still queued and run."""
    bad = kickq.create("due", "bad", delay=0.3).result(5)
    good = [kickq.create("due", i, delay=0.3).result(5) for i in range(3)]
    r.hset(job_key(bad.id), "data", deeply_nested(100_000))
    kickq.process("due", lambda job, data: data, concurrent_jobs=4)
    for job in good:
        assert kickq.wait(job.id, timeout=8).result(10).result == job.data
    assert_set_aside(r, bad.id, "due")
    assert index_size(r, "scheduled") == 0


def test_a_record_deleted_by_hand_from_its_queue_is_only_dropped(r: redis.Redis) -> None:
    """An id whose record is gone, or whose record is in another known state, is dropped from
    the queue without setting anything aside."""
    gone = kickq.create("stale", "gone").result(5)
    r.delete(job_key(gone.id))
    moved_on = kickq.create("stale", "finished elsewhere").result(5)
    r.hset(job_key(moved_on.id), "state", "success")
    good = kickq.create("stale", "good").result(5)
    kickq.process("stale", lambda job, data: data)
    assert kickq.wait(good.id, timeout=5).result(10).result == "good"
    assert r.zcard(queue_key("stale")) == 0
    assert not r.exists(damaged_key(gone.id)) and not r.exists(damaged_key(moved_on.id))
    assert r.hget(job_key(moved_on.id), "state") == "success"


def test_a_record_written_before_the_options_were_bounded_is_still_read(r: Any) -> None:
    """Options now refused (process_timeout 0, retry_count over 1000) may be on records an
    earlier kickq wrote: such a record is read as written, never set aside."""
    job = kickq.create("older", "kept").result(5)
    r.hset(job_key(job.id), mapping={"process_timeout": "0", "retry_count": str(10**30)})
    found = kickq.get(job.id).result(5)
    assert (found.process_timeout, found.retry_count) == (0.0, 10**30)
    assert not r.exists(damaged_key(job.id))
