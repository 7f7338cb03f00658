"""create_many(): one future per item, saved in pipelined batches, each item failing alone."""

from __future__ import annotations

from typing import Any

import pytest

import kickq
from support import all_keys, scaled, wait_until

pytestmark = pytest.mark.both_backends


def stored_jobs(r: Any) -> int:
    return sum(1 for key in all_keys(r) if ":job:" in key)


class Opaque:
    """Not JSON."""


@pytest.mark.timeout(300)  # 10,000 creates and runs: minutes on a loaded machine
def test_ten_thousand_items_with_a_few_bad_ones(r: Any) -> None:
    """10,000 items with a few that are not JSON: those fail alone with SerializationError, the
    rest are each saved exactly once, in order."""
    bad_at = {17: Opaque(), 4_321: float("nan"), 9_999: {1: "int key"}}
    items: list[Any] = [bad_at.get(i, {"n": i}) for i in range(10_000)]
    futures = kickq.create_many("bulk", items)
    assert len(futures) == 10_000
    assert all(isinstance(future, kickq.KickqFuture) for future in futures)
    for i in bad_at:
        with pytest.raises(kickq.SerializationError):
            futures[i].result(120)
    jobs = [future.result(120) for i, future in enumerate(futures) if i not in bad_at]
    assert [job.data["n"] for job in jobs] == [i for i in range(10_000) if i not in bad_at]
    assert len({job.id for job in jobs}) == len(jobs)
    assert stored_jobs(r) == 10_000 - len(bad_at)
    ran: list[int] = []
    kickq.process("bulk", lambda job, data: ran.append(data["n"]), concurrent_jobs=20)
    wait_until(lambda: len(ran) == len(jobs), timeout=240, what="every saved job run")
    assert sorted(ran) == [job.data["n"] for job in jobs]


def test_options_apply_to_every_item() -> None:
    """The options of the call (a dict or keywords) apply to every job."""
    futures = kickq.create_many("opts", [1, 2], {"priority": 8}, retry=True, meta={"b": 1})
    for future in futures:
        job = future.result(5)
        assert (job.priority, job.retry, job.meta) == (8, True, {"b": 1})
    delayed = kickq.create_many("opts", [3], delay=60)[0].result(5)
    assert delayed.state is kickq.State.DELAYED


@pytest.mark.parametrize(
    ("name", "options", "error"),
    [
        pytest.param("", {}, kickq.ConfigError, id="empty-name"),
        pytest.param(7, {}, TypeError, id="int-name"),
        pytest.param("ok", {"priority": 11}, kickq.ConfigError, id="bad-priority"),
        pytest.param("ok", {"proces_timeout": 1}, kickq.ConfigError, id="unknown-option"),
        pytest.param("ok", {"process_timeout": 0}, kickq.ConfigError, id="zero-timeout"),
        pytest.param("ok", {"ghost_count": 10**30}, kickq.ConfigError, id="huge-count"),
    ],
)
def test_a_bad_name_or_option_fails_them_all_and_stores_nothing(
    r: Any, name: Any, options: dict[str, Any], error: type[Exception]
) -> None:
    """A bad name or option fails every future, and nothing is stored."""
    futures = kickq.create_many(name, [1, 2, 3], **options)
    assert len(futures) == 3
    for future in futures:
        with pytest.raises(error):
            future.result(5)
    assert stored_jobs(r) == 0


def test_items_that_are_not_a_list_fail_one_future() -> None:
    """create_many() never raises: items that are not an iterable of items fail one future."""
    for items in (5, "abc", {"a": 1}, None):
        futures = kickq.create_many("odd", items)
        assert len(futures) == 1
        with pytest.raises(TypeError):
            futures[0].result(5)
    assert kickq.create_many("odd", []) == []
    gen = kickq.create_many("odd", (i for i in range(3)))
    assert [f.result(5).data for f in gen] == [0, 1, 2]


def test_hotjob_gives_every_job_its_hotjob_future() -> None:
    """With hotjob=True each job comes with the future of its own completion."""
    kickq.process("hot-bulk", lambda job, data: data * 2, concurrent_jobs=5)
    futures = kickq.create_many("hot-bulk", range(50), hotjob=True, hotjob_timeout=scaled(60))
    jobs = [future.result(10) for future in futures]
    assert all(job.hotjob_future is not None for job in jobs)
    results = [job.hotjob_future.result(20).result for job in jobs]  # type: ignore[union-attr]
    assert results == [i * 2 for i in range(50)]
