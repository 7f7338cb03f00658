"""Events on Redis pub/sub (any client can watch) and kickq.on() in Python."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import redis
from conftest import connect_kickq

import kickq
import kickq._verbs.api
from kickq._redis.layout import gather
from kickq._redis.record import from_event, record_event_json
from support import job_key, numsub, wait_until

pytestmark = pytest.mark.both_backends


class Collector:
    """Reads events in a thread; stop() joins it before the connection goes away."""

    def __init__(self, thread: threading.Thread, flag: threading.Event) -> None:
        self._thread, self._flag = thread, flag

    def set(self) -> None:
        self._flag.set()
        self._thread.join(5)


def _collect(r: redis.Redis, channels: list[str]) -> tuple[list[tuple[str, dict]], Collector]:
    pubsub = r.pubsub()
    pubsub.subscribe(*channels)
    got: list[tuple[str, dict]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.1)
            if message and message["type"] == "message":
                got.append((message["channel"], json.loads(message["data"])))
        pubsub.close()

    wait_until(lambda: all(numsub(r, channel) for channel in channels), timeout=5)
    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return got, Collector(thread, stop)


def test_lifecycle_events_are_published_as_json(r: redis.Redis) -> None:
    """create, queued and success are published on <ns>:<event> with the job as JSON."""
    got, stop = _collect(r, ["kickq:create", "kickq:queued", "kickq:success"])
    kickq.process("ev", lambda job, data: "ok")
    job = kickq.create("ev", {"k": 1}).result(5)
    wait_until(lambda: len(got) >= 3, timeout=10)
    stop.set()
    channels = [channel for channel, _ in got]
    assert channels[:3] == ["kickq:create", "kickq:queued", "kickq:success"]
    success = got[2][1]
    assert success["id"] == job.id and success["name"] == "ev" and success["data"] == {"k": 1}
    assert success["state"] == "success" and success["result"] == "ok"
    assert success["create_time"].endswith("+00:00")
    assert success["runs"][0]["state"] == "success"


def test_fail_event_state_says_what_comes_next(r: redis.Redis) -> None:
    """A failed run publishes fail with state retry while retries remain, then fail."""
    got, stop = _collect(r, ["kickq:fail"])

    def bad(job: kickq.Job, data: None) -> None:
        raise ValueError("nope")

    kickq.process("evfail", bad)
    kickq.create("evfail", retry=True, retry_count=1, retry_interval=0).result(5)
    wait_until(lambda: len(got) >= 2, timeout=10)
    stop.set()
    assert [event["state"] for _, event in got[:2]] == ["retry", "fail"]


def test_delete_event_names_id_and_queue(r: redis.Redis) -> None:
    """Deleting a job publishes delete with at least its id and queue (the job name)."""
    got, stop = _collect(r, ["kickq:delete"])
    job = kickq.create("gone").result(5)
    kickq.delete(job.id).result(5)
    wait_until(lambda: got, timeout=5)
    stop.set()
    assert got[0][1]["id"] == job.id and got[0][1]["queue"] == "gone"


def test_on_calls_back_with_jobs() -> None:
    """kickq.on(event, fn) calls fn with the Job for each event, until cancelled."""
    seen: list[kickq.Job] = []
    handle = kickq.on("success", seen.append)
    kickq.process("watched", lambda job, data: data)
    job = kickq.create("watched", 3).result(5)
    wait_until(lambda: seen, timeout=10)
    assert seen[0].id == job.id and seen[0].result == 3
    handle.cancel()


def test_an_event_published_once_on_returns_is_delivered(target: Any) -> None:
    """on() returns once Redis has the subscription, even on an engine just started: the
    create right after it is always seen."""
    for _ in range(30):
        kickq.reset()
        connect_kickq(target)
        seen: list[kickq.Job] = []
        kickq.on("create", seen.append)
        job = kickq.create("watched").result(5)
        wait_until(lambda: [j.id for j in seen] == [job.id], what="the create event")  # noqa: B023


def test_on_from_an_event_callback_does_not_wait_on_itself() -> None:
    """A callback that subscribes (on the listener's thread) gets its handle at once."""
    handles: list[Any] = []
    kickq.on("create", lambda job: handles.append(kickq.on("success", print)))
    kickq.create("watched").result(5)
    wait_until(lambda: handles, timeout=kickq._verbs.api.SUBSCRIBE_WAIT / 2, what="the inner on()")


@pytest.mark.single_backend  # pure: never reaches Redis
def test_on_rejects_unknown_event() -> None:
    """kickq.on() with an unknown event name raises ConfigError."""
    with pytest.raises(kickq.ConfigError):
        kickq.on("finished", print)


def test_create_events_are_the_saved_records_each_field_under_its_name(r: redis.Redis) -> None:
    """create.lua fills each new job's id, data and unique key into the event by name: the
    create event of each job of a batch is, byte for byte, the event made from the record it
    saved, and every field holds that job's own value."""
    pubsub = r.pubsub()
    pubsub.subscribe("kickq:create")
    wait_until(lambda: numsub(r, "kickq:create"), timeout=5)
    options: dict[str, Any] = {
        "delay": 30.5,
        "process_timeout": 9.5,
        "retry": True,
        "retry_count": 7,
        "retry_interval": 11.5,
        "ghost_retry": False,
        "ghost_count": 4,
        "ghost_interval": 13.5,
        "hotjob_timeout": 14.5,
        "priority": 2,
        "meta": {"meta": 15},
        "unique": True,
    }
    futures = kickq.create_many("name-1", [{"data": n} for n in range(3)], **options)
    jobs = [future.result(5) for future in futures]
    texts: dict[str, str] = {}
    deadline = time.monotonic() + 10
    while len(texts) < len(jobs) and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message and message["type"] == "message":
            texts[json.loads(message["data"])["id"]] = message["data"]
    pubsub.close()
    assert sorted(texts) == sorted(job.id for job in jobs)
    for job in jobs:
        record = {**gather(r.hgetall(job_key(job.id))), "id": job.id}
        assert texts[job.id] == record_event_json(record, None)
        event = json.loads(texts[job.id])
        assert (event["id"], event["data"], event["unique_key"]) == (
            job.id,
            job.data,
            job.unique_key,
        )
        assert from_event(texts[job.id]) == job
    assert len({job.unique_key for job in jobs}) == len(jobs)
