"""Inspect and repair: kickq.jobs() with count, list, requeue and delete; kickq.requeue(id).
The indexes behind them are kept by the state-changing scripts themselves."""

from __future__ import annotations

from typing import Any

import pytest

import kickq
from support import all_keys, wait_until

pytestmark = pytest.mark.both_backends


def failing(job: kickq.Job, data: Any) -> Any:
    if data.get("fail"):
        raise ValueError("no luck")
    return data.get("n")


def count(name: Any = None, state: Any = None) -> int:
    return kickq.jobs(name=name, state=state).count().result(10)


def settle(name: str, total: int) -> None:
    wait_until(
        lambda: count(name, ["success", "fail"]) == total, timeout=20, what="all jobs complete"
    )


def test_counts_follow_every_state() -> None:
    """Counts per name and state are exact after create, delay, claim, success and failure."""
    kickq.config(retry=False)
    for future in kickq.create_many("mail", [{"n": i} for i in range(8)]):
        future.result(5)
    kickq.create("mail", {"n": 9}, delay=3600).result(5)
    kickq.create("other", {}).result(5)
    assert count("mail", "queued") == 8
    assert count("mail", kickq.State.DELAYED) == 1
    assert count("mail") == 9 and count() == 10 and count(["mail", "other"]) == 10
    kickq.create_many("mail", [{"fail": True}] * 2)[-1].result(5)
    kickq.process("mail", failing, concurrent_jobs=4)
    settle("mail", 10)
    assert count("mail", "success") == 8 and count("mail", "fail") == 2
    assert count("mail", ["queued", "processing"]) == 0
    assert count("mail", "delayed") == 1
    assert count(state="queued") == 1  # "other" has no worker


def test_list_pages_most_recently_updated_first() -> None:
    """list() pages through matching jobs, newest update first, with limit and offset."""
    made = [kickq.create("page", {"n": i}).result(5) for i in range(12)]
    newest_first = [job.id for job in reversed(made)]
    first = kickq.jobs(name="page").list(limit=5).result(10)
    second = kickq.jobs(name="page", state="queued").list(limit=5, offset=5).result(10)
    rest = kickq.jobs(name="page").list(limit=50, offset=10).result(10)
    assert [job.id for job in first] == newest_first[:5]
    assert [job.id for job in second] == newest_first[5:10]
    assert [job.id for job in rest] == newest_first[10:]
    assert all(isinstance(job, kickq.Job) and job.state is kickq.State.QUEUED for job in first)
    assert kickq.jobs(name="page").list(limit=0).result(5) == []
    assert kickq.jobs(name="none-such").list().result(5) == []


def test_a_page_of_one_state_is_read_straight_from_its_index() -> None:
    """A page of one name in one state (not queued) comes from its index at the offset, in the
    order the jobs changed: those that finished last first."""
    kickq.process("done", lambda job, data: data, concurrent_jobs=1)
    made = [kickq.create("done", i, hotjob=True).result(5) for i in range(9)]
    finished = [job.hotjob_future.result(10) for job in made]  # type: ignore[union-attr]
    by_finish = sorted(finished, key=lambda job: str(job.update_time), reverse=True)
    page = kickq.jobs(name="done", state="success").list(limit=4, offset=3).result(10)
    assert [job.id for job in page] == [job.id for job in by_finish[3:7]]


def test_queued_jobs_of_every_priority_list_by_update_time() -> None:
    """Queued jobs of several priorities still list newest first, whatever their priority."""
    made = [kickq.create("prio", {"n": i}, priority=i % 10).result(5) for i in range(15)]
    listed = kickq.jobs(name="prio", state="queued").list(limit=15).result(10)
    assert [job.id for job in listed] == [job.id for job in reversed(made)]


def test_requeue_queues_failed_jobs_again_with_fresh_budgets() -> None:
    """jobs(state="fail").requeue() queues every job that failed for good; each runs again
    with a fresh retry budget and keeps its runs; others are left alone."""
    kickq.config(retry=True, retry_count=1, retry_interval=0)
    jobs = [kickq.create("flaky", {"fail": True}).result(5) for _ in range(3)]
    kickq.create("flaky", {"n": 1}).result(5)
    worker = kickq.process("flaky", failing)
    settle("flaky", 4)
    worker.stop(5)
    assert count("flaky", "fail") == 3
    assert kickq.jobs(name="flaky", state="success").requeue().result(5) == 0
    assert kickq.jobs(name="flaky").requeue().result(10) == 3
    assert count("flaky", "queued") == 3 and count("flaky", "fail") == 0
    events: list[kickq.Job] = []
    kickq.on("fail", events.append)
    kickq.process("flaky", failing)
    settle("flaky", 4)
    for job in jobs:
        again = kickq.get(job.id).result(5)
        assert again.state is kickq.State.FAIL
        assert len(again.runs) == 4  # two runs before, two (a retry) after
        assert again.budget_start == 2


def test_requeue_one_job() -> None:
    """kickq.requeue(id) queues a failed job again and publishes queued; a job that has not
    failed for good is a ValueError; an unknown id is JobNotFound."""
    kickq.config(retry=False)
    job = kickq.create("once", {"fail": True}).result(5)
    worker = kickq.process("once", failing)
    kickq.wait(job.id, timeout=10).exception(15)
    worker.stop(5)
    queued: list[kickq.Job] = []
    kickq.on("queued", queued.append)
    again = kickq.requeue(job.id).result(5)
    assert again.state is kickq.State.QUEUED and again.id == job.id
    assert kickq.get(job.id).result(5).state is kickq.State.QUEUED
    wait_until(lambda: [j.id for j in queued] == [job.id], what="queued event")
    with pytest.raises(ValueError, match="not failed for good"):
        kickq.requeue(job.id).result(5)
    with pytest.raises(kickq.JobNotFound):
        kickq.requeue("0" * 32).result(5)
    with pytest.raises(kickq.JobNotFound):
        kickq.requeue("not-an-id").result(5)
    with pytest.raises(TypeError):
        kickq.requeue(7).result(5)  # type: ignore[arg-type]


def test_delete_removes_every_matching_job(r: Any) -> None:
    """jobs(...).delete() deletes as kickq.delete does: records, queues and indexes."""
    kickq.create_many("bulk", range(30))[-1].result(5)
    kickq.create_many("bulk", range(5), delay=600)[-1].result(5)
    keep = kickq.create("kept", {}).result(5)
    assert kickq.jobs(name="bulk", state="delayed").delete().result(10) == 5
    assert count("bulk") == 30
    assert kickq.jobs(name="bulk").delete().result(10) == 30
    assert count("bulk") == 0 and count() == 1
    assert kickq.get(keep.id).result(5).id == keep.id
    leftovers = [key for key in all_keys(r) if "bulk" in key and "names" not in key]
    assert leftovers == []


@pytest.mark.single_backend  # pure: never reaches Redis
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"state": "sleeping"}, kickq.ConfigError),
        ({"state": []}, kickq.ConfigError),
        ({"name": ""}, kickq.ConfigError),
        ({"name": 7}, TypeError),
        ({"name": []}, kickq.ConfigError),
        ({"state": 3}, TypeError),
    ],
)
def test_bad_selections_are_refused(kwargs: dict[str, Any], error: type[Exception]) -> None:
    """A selection that names no real state or name is an error at once."""
    with pytest.raises(error):
        kickq.jobs(**kwargs)


@pytest.mark.single_backend  # pure: never reaches Redis
@pytest.mark.parametrize(
    ("limit", "offset"),
    [(-1, 0), (5, -2), ("5", 0), (5, 1.5), (10**30, 0), (10_001, 0), (5, 2**63), (5, 10**9 + 1)],
)
def test_bad_pages_fail_the_future(limit: Any, offset: Any) -> None:
    """A page out of range (limit 0-10000, offset 0-1e9) fails the future with a TypeError or
    ValueError naming the argument, before anything is sent to Redis."""
    with pytest.raises((TypeError, ValueError), match=r"limit|offset"):
        kickq.jobs(name="paged", state="fail").list(limit=limit, offset=offset).result(5)
    with pytest.raises((TypeError, ValueError), match=r"limit|offset"):
        kickq.jobs().list(limit=limit, offset=offset).result(5)


def test_the_largest_page_is_accepted() -> None:
    assert kickq.jobs().list(limit=10_000, offset=10**9).result(5) == []


def _page_commands(r: Any, name: str, state: Any) -> int:
    """The Redis commands one page of jobs of `name` costs (those a listing sends)."""
    listing = ("zrevrange", "zrevrangebyscore", "hget", "hgetall", "zcard", "smembers")

    def sent() -> int:
        stats = r.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{command}", {}).get("calls", 0)) for command in listing)

    before = sent()
    page = kickq.jobs(name=name, state=state).list(limit=50, offset=50).result(30)
    assert len(page) == 50
    return sent() - before


@pytest.mark.slow
@pytest.mark.single_backend  # commandstats of one server
def test_a_page_costs_the_same_with_100_or_100000_matching_jobs(r: Any) -> None:
    """Listing one page when 100,000 jobs match sends as many Redis commands as when 100 do,
    for queued jobs (read band by band) and for every state at once."""
    for future in kickq.create_many("small", [None] * 100):
        future.result(30)
    futures = kickq.create_many("big", [None] * 100_000, priority=3)
    futures[-1].result(120)
    assert kickq.jobs(name="big").count().result(30) == 100_000
    for state in ("queued", None):
        assert _page_commands(r, "big", state) == _page_commands(r, "small", state)
