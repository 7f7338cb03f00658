"""Dependencies: `after=` defers a job until its parents succeed, with their results on it."""

from __future__ import annotations

import datetime
import subprocess
import sys
import threading
from typing import Any

import pytest

import kickq
import kickq.testing
from kickq._engine import runtime
from kickq._engine.dependencies import _end_of, _told
from kickq._model import lifecycle
from kickq._redis.keys import partition_of_name
from support import all_keys, job_key, outcome, scaled, wait_until

pytestmark = pytest.mark.both_backends

# job names in different partitions of a Redis Cluster: a parent and its child never share a
# script there, so every test crosses partitions on the cluster
PARENT, CHILD, OTHER = "fetch", "merge", "report"
assert len({partition_of_name(n) for n in (PARENT, CHILD, OTHER)}) == 3


def run_all(*names: str) -> None:
    """Process each name with a handler echoing its data (or failing on data "bad")."""

    def handler(job: kickq.Job, data: Any) -> Any:
        if data == "bad":
            raise ValueError("bad data")
        return {"data": data, "parents": job.parent_results}

    for name in names:
        kickq.process(name, handler, concurrent_jobs=4)


def state_of(job_id: str) -> str:
    return str(kickq.get(job_id).result(10).state)


@pytest.mark.both_parsers
def test_a_job_runs_once_every_parent_succeeded_with_their_results() -> None:
    a = kickq.create(PARENT, "a").result(10)
    b = kickq.create(OTHER, "b").result(10)
    merge = kickq.create(CHILD, "m", after=[a.id, b], hotjob=True).result(10)
    assert merge.state is kickq.State.DEFERRED
    assert merge.parents == (a.id, b.id) and merge.parent_results == {}
    assert kickq.stats().result(10)[CHILD].counts["deferred"] == 1
    assert [job.id for job in kickq.jobs(CHILD, "deferred").list().result(10)] == [merge.id]
    queued = threading.Event()
    subscription = kickq.on("queued", lambda job: job.id == merge.id and queued.set())
    run_all(PARENT, OTHER)
    wait_until(lambda: state_of(b.id) == "success", what="the parents ran")
    assert queued.wait(scaled(10)), "the child was queued once its parents succeeded"
    stored = kickq.get(merge.id).result(10)
    assert stored.state is kickq.State.QUEUED
    assert stored.parent_results == {
        a.id: {"data": "a", "parents": {}},
        b.id: {"data": "b", "parents": {}},
    }
    run_all(CHILD)
    done = merge.hotjob_future.result(scaled(10))
    assert done.result["parents"] == stored.parent_results
    assert kickq.stats().result(10)[CHILD].counts["deferred"] == 0
    subscription.cancel()


def test_parents_that_succeeded_already_queue_the_job_at_once() -> None:
    run_all(PARENT)
    a = kickq.create(PARENT, "a", hotjob=True).result(10)
    a.hotjob_future.result(scaled(10))
    child = kickq.create(CHILD, "c", after=[a]).result(10)
    assert child.state is kickq.State.QUEUED
    assert child.parent_results == {a.id: {"data": "a", "parents": {}}}
    assert kickq.get(child.id).result(10).parent_results == child.parent_results


@pytest.mark.both_parsers
def test_a_failed_parent_fails_its_children_and_theirs() -> None:
    parent = kickq.create(PARENT, "bad", retry=False).result(10)
    child = kickq.create(CHILD, "c", after=[parent.id], hotjob=True).result(10)
    grandchild = kickq.create(OTHER, "g", after=[child.id], hotjob=True).result(10)
    failed: list[str] = []
    subscription = kickq.on("fail", lambda job: failed.append(job.id))
    run_all(PARENT, CHILD, OTHER)
    with pytest.raises(kickq.JobFailed) as caught:
        child.hotjob_future.result(scaled(10))
    assert caught.value.error == f"parent {parent.id} failed"
    with pytest.raises(kickq.JobFailed) as caught:
        grandchild.hotjob_future.result(scaled(10))
    assert caught.value.error == f"parent {child.id} failed"
    stored = kickq.get(grandchild.id).result(10)
    assert stored.state is kickq.State.FAIL and stored.runs == ()  # it never ran
    assert stored.awaiting == ()
    wait_until(lambda: len(failed) == 3, what="a fail event for each")
    subscription.cancel()


def test_a_parent_that_retries_is_not_an_end() -> None:
    calls = []

    def flaky(job: kickq.Job, data: Any) -> str:
        calls.append(job.id)
        if len(calls) == 1:
            raise ValueError("once")
        return "fine"

    parent = kickq.create(PARENT, None, retry=True, retry_count=1, retry_interval=0).result(10)
    child = kickq.create(CHILD, None, after=[parent.id], hotjob=True).result(10)
    kickq.process(PARENT, flaky)
    run_all(CHILD)
    assert child.hotjob_future.result(scaled(10)).result["parents"] == {parent.id: "fine"}


def test_after_failed_run_runs_once_every_parent_is_complete() -> None:
    bad = kickq.create(PARENT, "bad", retry=False).result(10)
    good = kickq.create(OTHER, "good").result(10)
    child = kickq.create(
        CHILD, "c", after=[bad.id, good.id], after_failed="run", hotjob=True
    ).result(10)
    run_all(PARENT, OTHER, CHILD)
    done = child.hotjob_future.result(scaled(10))
    assert done.success
    assert done.result["parents"] == {good.id: {"data": "good", "parents": {}}}


def test_a_parent_deleted_before_it_succeeded_fails_its_child() -> None:
    parent = kickq.create(PARENT, "a").result(10)
    child = kickq.create(CHILD, "c", after=[parent.id], hotjob=True).result(10)
    assert kickq.delete(parent.id).result(10)
    with pytest.raises(kickq.JobFailed) as caught:
        child.hotjob_future.result(scaled(10))
    assert caught.value.error == f"parent {parent.id} was deleted"


def test_a_deleted_parent_that_had_succeeded_changes_nothing() -> None:
    run_all(PARENT)
    parent = kickq.create(PARENT, "a", hotjob=True).result(10)
    parent.hotjob_future.result(scaled(10))
    child = kickq.create(CHILD, "c", after=[parent.id]).result(10)
    assert kickq.delete(parent.id).result(10)
    run_all(CHILD)
    wait_until(lambda: state_of(child.id) == "success", what="the child ran")
    assert kickq.get(child.id).result(10).parent_results == {
        parent.id: {"data": "a", "parents": {}}
    }


@pytest.mark.both_parsers
def test_bad_after_fails_the_create_and_stores_nothing(r: Any) -> None:
    parent = kickq.create(PARENT, "a").result(10)
    before = sorted(all_keys(r))
    unknown = "0" * 32
    for after, error in [
        ([unknown], kickq.JobNotFound),
        ([parent.id, "not an id"], kickq.JobNotFound),
        ([], kickq.ConfigError),
        ([1], kickq.ConfigError),
        (parent.id, kickq.ConfigError),
        ([f"{i:032x}" for i in range(1001)], kickq.ConfigError),
    ]:
        with pytest.raises(error):
            kickq.create(CHILD, "c", after=after).result(10)
        for future in kickq.create_many(CHILD, [1, 2], after=after):
            with pytest.raises(error):
                future.result(10)
    with pytest.raises(kickq.ConfigError):
        kickq.create(CHILD, "c", after=[parent.id], after_failed="sometimes").result(10)
    assert sorted(all_keys(r)) == before
    with pytest.raises(kickq.ConfigError):
        kickq.config(after=[parent.id])
    with pytest.raises(kickq.ConfigError):
        kickq.config(job_flags={CHILD: {"after": [parent.id]}})
    with pytest.raises(kickq.ConfigError):
        kickq.config(job_flags={CHILD: {"after_failed": "run"}})


def test_create_many_gives_every_item_the_same_parents() -> None:
    a = kickq.create(PARENT, "a").result(10)
    children = [f.result(10) for f in kickq.create_many(CHILD, [1, 2, 3], after=[a.id])]
    assert {c.state for c in children} == {kickq.State.DEFERRED}
    run_all(PARENT, CHILD)
    for child in children:
        wait_until(lambda c=child: state_of(c.id) == "success", what="each child ran")
    assert kickq.get(children[2].id).result(10).parent_results == {
        a.id: {"data": "a", "parents": {}}
    }


def test_a_deferred_job_can_be_cancelled_deleted_and_waited_on() -> None:
    parent = kickq.create(PARENT, "a").result(10)
    cancelled = kickq.create(CHILD, "c", after=[parent.id]).result(10)
    waited = kickq.wait(cancelled.id, timeout=scaled(10))
    assert kickq.cancel(cancelled.id).result(10) is True
    with pytest.raises(kickq.JobCancelled):
        waited.result(scaled(10))
    assert kickq.get(cancelled.id).result(10).awaiting == ()
    deleted = kickq.create(CHILD, "d", after=[parent.id]).result(10)
    assert kickq.delete(deleted.id).result(10) is True
    assert kickq.jobs(CHILD, "deferred").count().result(10) == 0
    run_all(PARENT, CHILD)  # the parent's end finds one child gone and one complete: no harm
    wait_until(lambda: state_of(parent.id) == "success", what="the parent ran")
    kickq.testing.drain(scaled(10), names=[PARENT, CHILD])
    assert state_of(cancelled.id) == "fail"


def test_a_unique_deferred_job_holds_its_key() -> None:
    parent = kickq.create(PARENT, "a").result(10)
    first = kickq.create(CHILD, "c", after=[parent.id], unique=True).result(10)
    again = kickq.create(CHILD, "c", after=[parent.id], unique=True).result(10)
    assert again.id == first.id and again.state is kickq.State.DEFERRED


def test_requeue_of_a_job_failed_by_its_parent_queues_it_at_once() -> None:
    parent = kickq.create(PARENT, "bad", retry=False).result(10)
    child = kickq.create(CHILD, "c", after=[parent.id]).result(10)
    run_all(PARENT)
    wait_until(lambda: state_of(child.id) == "fail", what="the child failed with its parent")
    requeued = kickq.requeue(child.id).result(10)
    assert requeued.state is kickq.State.QUEUED and requeued.awaiting == ()
    run_all(CHILD)
    wait_until(lambda: state_of(child.id) == "success", what="the requeued child ran")


def test_a_delay_counts_from_the_release_and_at_stands() -> None:
    parent = kickq.create(PARENT, "a").result(10)
    delayed = kickq.create(CHILD, "d", after=[parent.id], delay=3600).result(10)
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2)
    timed = kickq.create(CHILD, "t", after=[parent.id], at=at).result(10)
    assert delayed.scheduled_for is None and timed.scheduled_for == at
    run_all(PARENT)
    wait_until(lambda: state_of(delayed.id) == "delayed", what="released, delayed")
    wait_until(lambda: state_of(timed.id) == "delayed", what="released, delayed")
    released = kickq.get(delayed.id).result(10)
    assert released.scheduled_for is not None
    waited = released.scheduled_for - released.update_time
    assert abs(waited.total_seconds() - 3600) < 1
    assert kickq.get(timed.id).result(10).scheduled_for == at


def test_drain_waits_for_the_whole_fan_in() -> None:
    parents = [kickq.create(PARENT, n).result(10) for n in range(5)]
    child = kickq.create(CHILD, "c", after=parents).result(10)
    grandchild = kickq.create(OTHER, "g", after=[child.id]).result(10)
    run_all(PARENT, CHILD, OTHER)
    kickq.testing.drain(scaled(20))
    assert state_of(grandchild.id) == "success"


CRASHING_WORKER = """
import os, sys, kickq
from kickq._engine import dependencies, run_ends
dependencies.Handover.run = lambda self, notices, now: None  # this process hands nothing over
run_ends.add(lambda job: os._exit(0))  # dies as soon as Redis took the end of a run
kickq.process(sys.argv[1], lambda job, data: "from the dead")
print("ready", flush=True)
import time; time.sleep(60)
"""

CRASHING_CREATOR = """
import os, sys, kickq
from kickq._engine import dependencies
dependencies.Handover.run = lambda self, notices, now: None
job = kickq.create(sys.argv[1], "c", after=[sys.argv[2]]).result(10)
print(job.id, flush=True)
os._exit(0)  # before its parent learns of it
"""


@pytest.mark.both_parsers
def test_a_parents_end_reaches_its_child_when_its_process_dies_right_after(
    subprocess_env: dict[str, str],
) -> None:
    parent = kickq.create(PARENT, "a").result(10)
    child = kickq.create(CHILD, "c", after=[parent.id], hotjob=True).result(10)
    kickq.testing.drain(scaled(10), names=[CHILD])  # the parent knows its child
    worker = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WORKER, PARENT], env=subprocess_env, stdout=subprocess.PIPE
    )
    try:
        assert worker.wait(scaled(30)) == 0  # it ran the parent, and died
    finally:
        worker.kill()
        worker.stdout.close()  # type: ignore[union-attr]
    run_all(CHILD)  # this process hands the parent's end over
    done = child.hotjob_future.result(scaled(10))
    assert done.result["parents"] == {parent.id: "from the dead"}


def test_a_deferred_job_whose_creator_died_still_hears_of_its_parents(
    subprocess_env: dict[str, str],
) -> None:
    parent = kickq.create(PARENT, "a").result(10)
    created = subprocess.run(
        [sys.executable, "-c", CRASHING_CREATOR, CHILD, parent.id],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    child_id = created.stdout.strip()
    assert state_of(child_id) == "deferred"
    run_all(PARENT, CHILD)
    wait_until(lambda: state_of(child_id) == "success", what="the child ran after its parent")
    assert outcome(kickq.wait(child_id)).parent_results == {parent.id: {"data": "a", "parents": {}}}


def test_a_damaged_parent_set_aside_fails_its_child(r: Any) -> None:
    parent = kickq.create(PARENT, "a").result(10)
    child = kickq.create(CHILD, "c", after=[parent.id], hotjob=True).result(10)
    kickq.testing.drain(scaled(10), names=[CHILD])  # the parent knows its child
    r.hset(job_key(parent.id), "data", "{not JSON")
    with pytest.raises(kickq.DamagedRecord):
        kickq.get(parent.id).result(10)  # and it is set aside
    with pytest.raises(kickq.JobFailed) as caught:
        child.hotjob_future.result(scaled(10))
    assert caught.value.error == f"parent {parent.id} was deleted"


def test_a_child_whose_parent_redis_refuses_to_tell_waits_without_holding_up_others(
    r: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A parent's set of children of the wrong type: its child's notice stays (and is taken
    again once the key is mended) while the other children's notices go on."""
    store = runtime.get().store
    blocked = kickq.create(PARENT, "blocked").result(10)
    free = kickq.create(OTHER, "free").result(10)
    children_key = store.keys_of(blocked.id).children(blocked.id)
    r.set(children_key, "not a set")
    stuck = kickq.create(CHILD, "s", after=[blocked.id]).result(10)
    going = kickq.create(CHILD, "g", after=[free.id]).result(10)
    run_all(OTHER, CHILD)
    wait_until(lambda: state_of(going.id) == "success", what="the other child ran")
    wait_until(lambda: "telling the parents of job" in caplog.text, what="the refusal logged")
    assert state_of(stuck.id) == "deferred"
    r.delete(children_key)
    run_all(PARENT)
    wait_until(lambda: state_of(stuck.id) == "success", timeout=20, what="the mended child ran")


def test_a_parent_end_that_is_not_json_counts_as_a_deletion() -> None:
    """A notice or a result damaged in Redis is heard as the parent's deletion, rather than
    keep the notice from ever being carried out."""
    deleted = lifecycle.PARENT_DELETED
    assert _told("p", "{not JSON").outcome == deleted
    assert _told("p", '{"state":"fail"}').outcome == "fail"
    assert _told("p", '{"state":"success","result":[1]}').result == [1]
    assert _end_of("p", "success", "{not JSON").outcome == deleted
    assert _end_of("p", "success", '{"a":1}').result == {"a": 1}
