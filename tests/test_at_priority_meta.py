"""at=, priority and meta: when a job runs, which queued job runs first, what travels with it."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from freezegun import freeze_time

import kickq
from support import all_keys, wait_until

pytestmark = pytest.mark.both_backends

UTC = datetime.timezone.utc


def no_job_stored(r: Any) -> bool:
    return not [key for key in all_keys(r) if ":job:" in key]


# -- at ---------------------------------------------------------------------------------------


def test_at_in_the_future_delays_the_job_until_then() -> None:
    """A job created with an aware `at` is delayed, scheduled for that time, and runs then."""
    with freeze_time(datetime.datetime(2030, 1, 1, tzinfo=UTC), tick=True) as frozen:
        at = datetime.datetime.now(UTC) + datetime.timedelta(seconds=600)
        job = kickq.create("at-later", "x", at=at).result(5)
        assert job.state is kickq.State.DELAYED and job.scheduled_for == at
        assert job.delay is None
        assert kickq.get(job.id).result(5).scheduled_for == at
        kickq.process("at-later", lambda job, data: datetime.datetime.now(UTC).isoformat())
        # the worker is live, and the job still waits for its time
        marker = kickq.create("at-later", "marker").result(5)
        kickq.wait(marker.id, timeout=10).result(15)
        assert kickq.get(job.id).result(5).state is kickq.State.DELAYED
        frozen.move_to(at + datetime.timedelta(seconds=1))
        done = kickq.wait(job.id, timeout=10).result(15)
    assert datetime.datetime.fromisoformat(done.result) >= at


def test_at_in_another_time_zone_is_the_same_instant() -> None:
    """`at` with any tzinfo names one instant: scheduled_for is that instant (in UTC)."""
    athens = datetime.timezone(datetime.timedelta(hours=2))
    at = datetime.datetime(2099, 1, 1, 12, 0, tzinfo=athens)
    job = kickq.create("at-zone", at=at).result(5)
    assert job.scheduled_for == at and job.scheduled_for.utcoffset() == datetime.timedelta(0)


def test_at_in_the_past_queues_at_once() -> None:
    """A past `at` queues the job at once; scheduled_for still says when it was meant for."""
    at = datetime.datetime(2020, 5, 17, 9, 30, tzinfo=UTC)
    job = kickq.create("at-past", "x", at=at).result(5)
    assert job.state is kickq.State.QUEUED and job.scheduled_for == at
    kickq.process("at-past", lambda job, data: data)
    assert kickq.wait(job.id, timeout=5).result(10).result == "x"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        pytest.param({"at": datetime.datetime(2099, 1, 1)}, "aware", id="naive"),
        pytest.param({"at": "2099-01-01T00:00:00+00:00"}, "datetime", id="str"),
        pytest.param({"at": 1_900_000_000}, "datetime", id="number"),
        pytest.param(
            {"at": datetime.datetime(2099, 1, 1, tzinfo=UTC), "delay": 5}, "not both", id="delay"
        ),
    ],
)
def test_bad_at_fails_with_config_error_and_stores_nothing(
    r: Any, options: dict[str, Any], words: str
) -> None:
    """A naive or non-datetime `at`, or `at` with `delay`, fails the future with ConfigError."""
    with pytest.raises(kickq.ConfigError, match=words):
        kickq.create("bad-at", None, options).result(5)
    assert no_job_stored(r)


@pytest.mark.single_backend  # pure: never reaches Redis
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("at", datetime.datetime(2099, 1, 1, tzinfo=UTC)),
        ("meta", {"a": 1}),
        ("unique_key", "k"),
    ],
)
def test_per_call_options_are_refused_by_config_and_job_flags(option: str, value: Any) -> None:
    """at, meta and unique_key belong to one create() call: config() and job_flags refuse them."""
    with pytest.raises(kickq.ConfigError, match=option):
        kickq.config(**{option: value})
    with pytest.raises(kickq.ConfigError, match=option):
        kickq.config(job_flags={"x": {option: value}})


# -- priority ---------------------------------------------------------------------------------


@pytest.mark.timeout(240)  # 1,000 runs one at a time: slow on a loaded machine
def test_a_thousand_jobs_are_claimed_by_priority_and_in_order_within_one(r: Any) -> None:
    """1,000 queued jobs of mixed priorities run highest priority first, and first in, first
    out within each priority."""
    created = [
        kickq.create("ranked", i, priority=(i * 7) % 10) for i in range(1000)
    ]  # all queued before any worker runs
    jobs = [future.result(10) for future in created]
    ran: list[int] = []
    kickq.process("ranked", lambda job, data: ran.append(data))
    wait_until(lambda: len(ran) == 1000, timeout=120, what="1,000 runs")
    expected = sorted(range(1000), key=lambda i: (-jobs[i].priority, i))
    assert ran == expected


def test_priority_cascades_like_any_per_job_option() -> None:
    """priority defaults to 5, can be set globally, in job_flags and per call."""
    assert kickq.create("p").result(5).priority == 5
    kickq.config(priority=2, job_flags={"flagged": {"priority": 8}})
    assert kickq.create("p").result(5).priority == 2
    assert kickq.create("flagged").result(5).priority == 8
    assert kickq.create("flagged", priority=0).result(5).priority == 0
    assert kickq.get(kickq.create("p", priority=9).result(5).id).result(5).priority == 9


@pytest.mark.parametrize("value", [10, -1, True, "5", 5.0, None])
def test_bad_priority_fails_with_config_error(r: Any, value: Any) -> None:
    """A priority that is not a whole number from 0 to 9 fails with ConfigError."""
    with pytest.raises(kickq.ConfigError, match="priority"):
        kickq.create("bad-priority", priority=value).result(5)
    with pytest.raises(kickq.ConfigError, match="priority"):
        kickq.config(priority=value)
    assert no_job_stored(r)


def test_a_job_queued_again_keeps_its_priority() -> None:
    """A job queued when its delay ends is claimed before lower priorities queued earlier."""
    low = kickq.create("promoted", "low", priority=1).result(5)
    urgent = kickq.create("promoted", "urgent", priority=9, delay=0.3).result(5)
    wait_until(lambda: kickq.get(urgent.id).result(5).state is kickq.State.QUEUED, timeout=5)
    order: list[str] = []
    kickq.process("promoted", lambda job, data: order.append(data))
    kickq.wait(low.id, timeout=5).result(10)
    assert order == ["urgent", "low"]


def test_a_worker_serving_several_names_starves_none() -> None:
    """A name with a long queue does not keep another name's jobs waiting until it is empty."""
    ran: list[str] = []
    for i in range(300):
        kickq.create("busy", i)
    quiet = [kickq.create("quiet", i).result(5) for i in range(5)]
    kickq.process(["busy", "quiet"], lambda job, data: ran.append(job.name), concurrent_jobs=1)
    for job in quiet:
        kickq.wait(job.id, timeout=20).result(25)
    assert ran.count("busy") < 300  # the quiet name's jobs ran before the busy queue emptied


# -- meta -------------------------------------------------------------------------------------


def test_meta_is_on_the_record_in_events_and_seen_by_handlers() -> None:
    """meta travels with the job: get(), the events, the handler and the finished job."""
    events: list[kickq.Job] = []
    subscription = kickq.on("create", events.append)
    wait_until(lambda: kickq.create("meta-probe").result(5) and events, timeout=10)
    meta = {"trace_id": "ab12", "user": 7, "tags": ["a", "b"]}
    seen: list[dict[str, Any]] = []
    kickq.process("meta", lambda job, data: seen.append(job.meta) or job.meta["user"])
    job = kickq.create("meta", None, meta=meta, hotjob=True).result(5)
    assert job.meta == meta
    assert job.hotjob_future is not None and job.hotjob_future.result(10).meta == meta
    assert kickq.get(job.id).result(5).meta == meta
    assert seen == [meta]
    wait_until(lambda: any(e.id == job.id for e in events), timeout=10, what="the create event")
    assert next(e for e in events if e.id == job.id).meta == meta
    subscription.cancel()
    assert kickq.create("meta").result(5).meta == {}


@pytest.mark.parametrize(
    "meta",
    [
        pytest.param(["a"], id="list"),
        pytest.param("trace", id="str"),
        pytest.param({1: "a"}, id="int-key"),
        pytest.param({"a": object()}, id="not-json"),
        pytest.param({"a": float("nan")}, id="nan"),
    ],
)
def test_bad_meta_fails_with_config_error_and_stores_nothing(r: Any, meta: Any) -> None:
    """meta must be a dict of JSON values with str keys."""
    with pytest.raises(kickq.ConfigError, match="meta"):
        kickq.create("bad-meta", meta=meta).result(5)
    assert no_job_stored(r)


def test_none_means_not_given_for_the_per_call_options() -> None:
    """at=None, meta=None and unique_key=None are the same as leaving them out."""
    job = kickq.create("none", 1, at=None, meta=None, unique_key=None).result(5)
    assert job.state is kickq.State.QUEUED and job.scheduled_for is None
    assert job.meta == {} and job.unique_key is None
