"""Creating jobs from an asyncio event loop: the loop is not held up by kickq's work.

On an event loop's thread, `create()` and `create_many()` encode the data there (what it holds
at the call is what is saved) and leave the rest (checking the options, building each job and
its record) to kickq's dispatcher thread; every future still resolves or fails as it would
anywhere else.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import kickq
from kickq._verbs import api as _api

pytestmark = [pytest.mark.both_backends, pytest.mark.both_parsers]


def checking_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads that check create options, in order."""
    seen: list[str] = []
    real = _api._create_options

    def recorded(*args: Any) -> dict[str, Any]:
        seen.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(_api, "_create_options", recorded)
    return seen


def test_creates_on_a_loop_are_built_off_the_loop_and_keep_their_order(
    r: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of creates from a coroutine: each is checked and built on the dispatcher thread,
    all resolve, and they are queued in the order they were issued (create and create_many
    alike)."""
    seen = checking_threads(monkeypatch)

    async def burst() -> list[kickq.Job]:
        futures = [kickq.create("burst", i) for i in range(100)]
        futures += kickq.create_many("burst", range(100, 200))
        futures += [kickq.create("burst", i) for i in range(200, 300)]
        return list(await asyncio.gather(*futures))

    jobs = asyncio.run(burst())
    assert [job.data for job in jobs] == list(range(300))
    assert seen and set(seen) == {"kickq-dispatcher"}
    queue = [key for key in r.scan_iter("*queue:{burst}")]
    ids = r.zrange(queue[0], 0, -1)
    assert ids == [job.id for job in jobs]  # first in, first out


def test_outside_a_loop_creates_are_checked_on_the_callers_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only an event loop's thread hands the work over: a plain caller keeps it (a bad option
    fails its future before anything is queued)."""
    seen = checking_threads(monkeypatch)
    kickq.create("plain", 1).result(10)
    assert seen == [threading.current_thread().name]


def test_data_is_taken_as_it_was_at_the_call(r: Any) -> None:
    """The data is encoded on the loop's thread at the call: changing it afterwards changes
    nothing saved."""

    async def change_after() -> kickq.Job:
        data = {"n": 1}
        future = kickq.create("snapshot", data)
        data["n"] = 2
        return await future

    job = asyncio.run(change_after())
    assert kickq.get(job.id).result(10).data == {"n": 1}


def test_bad_input_on_a_loop_fails_alone_and_stores_nothing(r: Any) -> None:
    """Bad data fails its own future at once; a bad option fails every future of the call;
    neither stores anything, and the good creates beside them are saved."""

    async def mixed() -> list[Any]:
        futures = [
            kickq.create("mixed", {1: "not a str key"}),
            kickq.create("mixed", "ok"),
            kickq.create("mixed", "x", priority=99),
            *kickq.create_many("mixed", ["a", {2: "b"}]),
            *kickq.create_many("mixed", ["c"], retry_count=-1),
        ]
        return list(await asyncio.gather(*futures, return_exceptions=True))

    results = asyncio.run(mixed())
    assert isinstance(results[0], kickq.SerializationError)
    assert isinstance(results[1], kickq.Job)
    assert isinstance(results[2], ValueError)
    assert isinstance(results[3], kickq.Job) and results[3].data == "a"
    assert isinstance(results[4], kickq.SerializationError)
    assert isinstance(results[5], ValueError)
    saved = sorted(job.data for job in results if isinstance(job, kickq.Job))
    assert saved == ["a", "ok"]
    assert kickq.jobs(name="mixed").count().result(10) == 2
