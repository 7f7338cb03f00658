"""One damaged record never affects another job: it is set aside alone, with an ERROR naming it,
while the jobs claimed or due with it run, and every timer of the namespace goes on."""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from typing import Any

import pytest
import redis

import kickq
import kickq._engine.runtime
from support import index_size, job_key, queue_key, wait_until

pytestmark = [pytest.mark.both_backends, pytest.mark.both_parsers]


def damaged_key(job_id: str) -> str:
    return kickq._engine.runtime.get().store.keys_of(job_id).damaged(job_id)


def in_any_index(client: Any, job_id: str, name: str) -> bool:
    keys = kickq._engine.runtime.get().store.keys_of(job_id)
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
    """kickq's ERROR lines naming the job, but the job log's line of a run that failed for good
    (on "kickq.jobs": the run's outcome, not a problem of the record)."""
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name != "kickq.jobs" and job_id in r.getMessage()
    ]


def assert_damaged(future: Any, job_id: str) -> None:
    """The future fails at once with the error of a damaged record: a KickqError, also a
    ValueError, naming the id."""
    with pytest.raises(kickq.KickqError, match=job_id) as failed:
        future.result(10)
    assert isinstance(failed.value, ValueError), repr(failed.value)


def damage(client: Any, job_id: str, field: str, value: str | None) -> None:
    """Write `value` in a field of the job's record; None removes the field."""
    if value is None:
        client.hdel(job_key(job_id), field)
    else:
        client.hset(job_key(job_id), field, value)


def commands(client: Any) -> int:
    """How many commands Redis has run, on every node, but INFO (INFO commandstats)."""
    if isinstance(client, redis.RedisCluster):
        nodes = [client.get_redis_connection(node) for node in client.get_nodes()]
    else:
        nodes = [client]
    return sum(
        int(stats["calls"])
        for node in nodes
        for name, stats in node.info("commandstats").items()
        if name != "cmdstat_info"
    )


def assert_calm(client: Any) -> None:
    """The namespace is quiet: far fewer than 200 commands in 2 s (a process retrying a change
    of a damaged record in a loop sent about 1,200 a second). A rate, so measured over a fixed
    time."""
    before = commands(client)
    time.sleep(2)
    sent = commands(client) - before
    assert sent < 200, f"{sent} commands in 2 s"


def assert_one_error(client: Any, caplog: pytest.LogCaptureFixture, job_id: str) -> None:
    """Exactly one ERROR names the job, and it stays one while the namespace is calm."""
    wait_until(lambda: errors_naming(caplog, job_id), timeout=5, what="an ERROR naming it")
    assert_calm(client)
    assert len(errors_naming(caplog, job_id)) == 1, [
        r.getMessage() for r in errors_naming(caplog, job_id)
    ]


QUEUED_DAMAGE = [
    pytest.param("data", deeply_nested(100_000), id="data-nested-100000"),
    pytest.param("ghost_count", '"x"', id="ghost_count-str"),
    pytest.param("process_timeout", '"x"', id="process_timeout-str"),
    pytest.param("retry", "3", id="retry-int"),
    pytest.param("create_time", '"yesterday"', id="create_time-not-a-time"),
    pytest.param("runs", None, id="run-entry-not-an-object"),
    pytest.param("state", "bogus", id="unknown-state"),
    pytest.param("version", "x", id="version-str"),
    pytest.param("version", None, id="version-missing"),
    pytest.param("version", "01", id="version-leading-zero"),
    pytest.param("run_count", "1.5", id="run_count-float"),
    pytest.param("run_count", "-1", id="run_count-negative"),
    pytest.param("name", "another", id="name-of-another-job"),
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
        damage(r, bad.id, field, value)

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
    keys = kickq._engine.runtime.get().store.keys_of(orphan.id)
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


def test_a_queued_record_naming_another_job_is_set_aside_not_run_by_its_queue(
    r: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A record in the queue of "resize" whose name says "email" is not run by the "resize"
    handler (it was, as an "email" job): it is set aside, with one ERROR, and its wait fails."""
    caplog.set_level(logging.ERROR, logger="kickq")
    bad = kickq.create("resize", "bad").result(5)
    good = kickq.create("resize", "good").result(5)
    r.hset(job_key(bad.id), "name", "email")
    ran: list[str] = []
    kickq.process("resize", lambda job, data: ran.append(job.id) or data)
    assert kickq.wait(good.id, timeout=5).result(10).result == "good"
    assert_set_aside(r, bad.id, "resize")
    assert_damaged(kickq.wait(bad.id, timeout=5), bad.id)
    assert ran == [good.id]
    assert_one_error(r, caplog, bad.id)


VERSION_DAMAGE = [
    pytest.param(None, id="missing"),
    pytest.param("01", id="leading-zero"),
    pytest.param("-1", id="negative"),
    pytest.param("x", id="not-a-number"),
]


@pytest.mark.parametrize("version", VERSION_DAMAGE)
def test_a_running_record_whose_version_is_damaged_is_set_aside_as_its_run_ends(
    r: Any, caplog: pytest.LogCaptureFixture, version: str | None
) -> None:
    """The version of a running job's record removed (or made one no script writes) while its
    handler runs: the end of the run cannot be fenced, so the record is set aside then, its
    hotjob future and a kickq.wait() fail at once (long before any deadline), one ERROR names
    it, and nothing is retried. It used to stay `processing`: its end refused, then ghosted by
    the timer again and again, ~1,200 commands a second, and its waits timed out."""
    caplog.set_level(logging.INFO, logger="kickq")
    started, release = threading.Event(), threading.Event()

    def handler(job: kickq.Job, data: Any) -> Any:
        started.set()
        release.wait(20)
        return data

    kickq.process("fenced", handler)
    job = kickq.create("fenced", 1, hotjob=True, hotjob_timeout=60, process_timeout=60).result(5)
    assert job.hotjob_future is not None
    waiting = kickq.wait(job.id, timeout=60)
    wait_until(started.is_set, timeout=10, what="the run to start")
    damage(r, job.id, "version", version)
    release.set()
    for future in (job.hotjob_future, waiting):
        assert_damaged(future, job.id)
    assert_set_aside(r, job.id, "fenced")
    assert_one_error(r, caplog, job.id)


def _queued(r: Any) -> tuple[str, Any]:
    return kickq.create("kept", 1).result(5).id, lambda: kickq.process("kept", lambda j, d: d)


def _delayed(r: Any) -> tuple[str, Any]:
    return kickq.create("kept", 1, delay=1).result(5).id, lambda: None  # the timer's


def _retry(r: Any) -> tuple[str, Any]:
    def fail(job: kickq.Job, data: Any) -> Any:
        raise RuntimeError("once")

    kickq.process("kept", fail)
    job = kickq.create("kept", 1, retry=True, retry_count=1, retry_interval=2).result(5)
    wait_until(lambda: r.hget(job_key(job.id), "state") == "retry", timeout=10, what="retry")
    return job.id, lambda: None  # the timer's


def _ghost(r: Any) -> tuple[str, Any]:
    release = threading.Event()
    kickq.process("kept", lambda job, data: release.wait(20))
    job = kickq.create("kept", 1, process_timeout=0.2, ghost_interval=2).result(5)
    wait_until(lambda: r.hget(job_key(job.id), "state") == "ghost", timeout=10, what="ghost")
    release.set()  # its late end changes nothing
    return job.id, lambda: None  # the timer's


def _success(r: Any) -> tuple[str, Any]:
    kickq.process("kept", lambda job, data: data)
    job = kickq.create("kept", 1, hotjob=True).result(5)
    assert job.hotjob_future is not None and job.hotjob_future.result(10).result == 1

    def get() -> None:
        assert_damaged(kickq.get(job.id), job.id)

    return job.id, get


def _fail(r: Any) -> tuple[str, Any]:
    def fail(job: kickq.Job, data: Any) -> Any:
        raise RuntimeError("for good")

    kickq.process("kept", fail)
    job = kickq.create("kept", 1, hotjob=True).result(5)
    assert job.hotjob_future is not None
    with pytest.raises(kickq.JobFailed):
        job.hotjob_future.result(10)

    def requeue() -> None:
        assert_damaged(kickq.requeue(job.id), job.id)

    return job.id, requeue


@pytest.mark.parametrize(
    ("state", "reach"),
    [
        pytest.param("queued", _queued, id="queued-claimed"),
        pytest.param("delayed", _delayed, id="delayed-due"),
        pytest.param("retry", _retry, id="retry-due"),
        pytest.param("ghost", _ghost, id="ghost-due"),
        pytest.param("success", _success, id="success-got"),
        pytest.param("fail", _fail, id="fail-requeued"),
    ],
)
def test_a_record_without_its_version_is_set_aside_in_every_state(
    r: Any, caplog: pytest.LogCaptureFixture, state: str, reach: Any
) -> None:
    """A record that lost its version in any state is set aside by whatever reads it next (a
    claim, the timer, get(), requeue()): its waits fail at once, one ERROR names it, and
    nothing is retried in a loop. A due one used to be promoted or ghosted at every tick of the
    timer, refused each time, ~1,200 commands a second; a queued one was run; a finished one
    was read as version 0."""
    caplog.set_level(logging.INFO, logger="kickq")
    job_id, read = reach(r)
    assert r.hget(job_key(job_id), "state") == state
    # a wait on a job still to finish is pending when the record is damaged
    waits = [] if state in ("success", "fail") else [kickq.wait(job_id, timeout=60)]
    damage(r, job_id, "version", None)
    read()
    waits.append(kickq.wait(job_id, timeout=60))
    for waiting in waits:
        assert_damaged(waiting, job_id)
    assert_set_aside(r, job_id, "kept")
    assert_one_error(r, caplog, job_id)


def test_cancel_and_delete_of_a_damaged_record(r: Any, caplog: pytest.LogCaptureFixture) -> None:
    """cancel() of a record without a version fails (a KickqError naming it) and sets it aside
    (it used to read it again and again, then raise RuntimeError); delete() removes a record
    without a name (it answered False and left it) or a key that is not a hash (it failed)."""
    caplog.set_level(logging.ERROR, logger="kickq")
    unfenced = kickq.create("kept", 1, delay=3600).result(5)
    damage(r, unfenced.id, "version", None)
    assert_damaged(kickq.cancel(unfenced.id), unfenced.id)
    assert_set_aside(r, unfenced.id, "kept")
    assert len(errors_naming(caplog, unfenced.id)) == 1

    nameless = kickq.create("kept", 2, delay=3600).result(5)
    damage(r, nameless.id, "name", None)
    not_a_hash = kickq.create("kept", 3, delay=3600).result(5)
    r.delete(job_key(not_a_hash.id))
    r.set(job_key(not_a_hash.id), "not a hash")
    for job in (nameless, not_a_hash):
        assert kickq.delete(job.id).result(10) is True
        assert not r.exists(job_key(job.id)) and not in_any_index(r, job.id, "kept")


def test_a_due_id_whose_record_is_gone_or_elsewhere_is_dropped_and_the_timer_stays_calm(
    r: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Ids due in `scheduled` whose record is gone, or says a state `scheduled` does not hold,
    are dropped from it with a WARNING (the record, if any, is left as it is), while the timer
    goes on. They used to stay due, making the timer tick at once, again and again."""
    caplog.set_level(logging.WARNING, logger="kickq")
    gone = kickq.create("stale", "gone", delay=0.3).result(5)
    r.delete(job_key(gone.id))
    elsewhere = kickq.create("stale", "elsewhere", delay=0.3).result(5)
    r.hset(job_key(elsewhere.id), "state", "success")
    kickq.process("later", lambda job, data: data)
    later = kickq.create("later", "on time", delay=0.5).result(5)
    assert kickq.wait(later.id, timeout=8).result(10).result == "on time"
    wait_until(lambda: index_size(r, "scheduled") == 0, timeout=10, what="scheduled to empty")
    assert r.hget(job_key(elsewhere.id), "state") == "success"
    assert_calm(r)
    warned = " ".join(rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING)
    assert gone.id in warned and elsewhere.id in warned


def test_a_record_written_before_the_options_were_bounded_is_still_read(r: Any) -> None:
    """Options now refused (process_timeout 0, retry_count over 1000) may be on records an
    earlier kickq wrote: such a record is read as written, never set aside."""
    job = kickq.create("older", "kept").result(5)
    r.hset(job_key(job.id), mapping={"process_timeout": "0", "retry_count": str(10**30)})
    found = kickq.get(job.id).result(5)
    assert (found.process_timeout, found.retry_count) == (0.0, 10**30)
    assert not r.exists(damaged_key(job.id))
