"""Bad input to create/get/delete/process: the future fails, nothing raises, nothing is stored."""

from __future__ import annotations

import datetime
import math
from typing import Any

import pytest
import redis

import kickq
from support import all_keys, job_key, names_key, queue_key, wait_until

pytestmark = [pytest.mark.both_backends, pytest.mark.both_parsers]

VALID = "valid-job"


class Opaque:
    """An object json cannot encode."""


def settle_and_keys(r: redis.Redis) -> list[str]:
    """Create a valid job after the bad ones and wait for it, then list every key in Redis.

    create() hands work to one dispatcher in order, so once the valid job is stored anything a
    bad call might have queued before it has been flushed too.
    """
    job = kickq.create(VALID, {"ok": True}).result(5)
    wait_until(lambda: r.exists(job_key(job.id)), timeout=5, what="the valid job's record")
    expected = sorted([job_key(job.id), queue_key(VALID), names_key(VALID)])
    assert all_keys(r) == expected
    assert r.smembers(names_key(VALID)) == {VALID}
    return expected


BAD_CREATES: list[tuple[str, tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    ("unknown option", ("job", None, {"proces_timeout": 3}), {}, kickq.ConfigError, "proces"),
    ("unknown keyword", ("job",), {"hotjobb": True}, kickq.ConfigError, "hotjobb"),
    ("str for a duration", ("job", None), {"process_timeout": "3"}, kickq.ConfigError, "process_"),
    ("str for a count", ("job",), {"retry_count": "3"}, kickq.ConfigError, "retry_count"),
    ("bool for a count", ("job",), {"ghost_count": True}, kickq.ConfigError, "ghost_count"),
    ("int for a bool", ("job",), {"retry": 1}, kickq.ConfigError, "retry"),
    ("negative duration", ("job",), {"delay": -1}, kickq.ConfigError, "delay"),
    (
        "negative timedelta",
        ("job",),
        {"ghost_interval": datetime.timedelta(seconds=-1)},
        kickq.ConfigError,
        "ghost_interval",
    ),
    ("huge delay", ("job",), {"delay": 1e12}, kickq.ConfigError, "delay"),
    (
        "huge hotjob_timeout",
        ("job",),
        {"hotjob": True, "hotjob_timeout": 1e300},
        kickq.ConfigError,
        "hotjob_timeout",
    ),
    ("negative count", ("job",), {"retry_count": -1}, kickq.ConfigError, "retry_count"),
    ("huge count", ("job",), {"retry_count": 10**30}, kickq.ConfigError, "from 0 to 1000"),
    ("zero timeout", ("job",), {"process_timeout": 0}, kickq.ConfigError, "process_timeout must"),
    (
        "zero hotjob_timeout",
        ("job",),
        {"hotjob": True, "hotjob_timeout": 0},
        kickq.ConfigError,
        "hotjob_timeout must be more than 0",
    ),
    ("priority above 9", ("job",), {"priority": 10}, kickq.ConfigError, "from 0 to 9"),
    ("nan duration", ("job",), {"hotjob_timeout": math.nan}, kickq.ConfigError, "hotjob_timeout"),
    (
        "non per-job option",
        ("job", None, {"redis_namespace": "other"}),
        {},
        kickq.ConfigError,
        "redis_namespace",
    ),
    ("purge_timeout per call", ("job",), {"purge_timeout": 5}, kickq.ConfigError, "purge_timeout"),
    ("job_flags per call", ("job",), {"job_flags": {}}, kickq.ConfigError, "job_flags"),
    ("options not a dict", ("job", None, ["retry"]), {}, kickq.ConfigError, "dict"),
    ("empty name", ("", {"x": 1}), {}, ValueError, "name"),
    ("int name", (42, {"x": 1}), {}, TypeError, "name"),
    ("None name", (None,), {}, TypeError, "name"),
    ("bytes name", (b"job",), {}, TypeError, "name"),
    ("set data", ("job", {1, 2}), {}, kickq.SerializationError, "JSON"),
    ("object data", ("job", Opaque()), {}, kickq.SerializationError, "JSON"),
    ("nested object data", ("job", {"a": [Opaque()]}), {}, kickq.SerializationError, "JSON"),
    ("nan data", ("job", math.nan), {}, kickq.SerializationError, "JSON"),
    ("inf data", ("job", {"x": math.inf}), {}, kickq.SerializationError, "JSON"),
    ("bytes data", ("job", b"raw"), {}, kickq.SerializationError, "JSON"),
    (
        "function as retry_interval",
        ("job", None, {"retry_interval": kickq.backoff()}),
        {},
        kickq.ConfigError,
        "retry_interval",
    ),
    (
        "lambda as retry_interval keyword",
        ("job",),
        {"retry_interval": lambda n: n},
        kickq.ConfigError,
        "retry_interval",
    ),
]


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "mentions"),
    [case[1:] for case in BAD_CREATES],
    ids=[case[0] for case in BAD_CREATES],
)
def test_bad_create_fails_the_future_and_stores_nothing(
    r: redis.Redis,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    mentions: str,
) -> None:
    """A bad create call returns a failed future (it does not raise) and leaves no key in Redis."""
    future = kickq.create(*args, **kwargs)
    assert isinstance(future, kickq.KickqFuture)
    exc = future.exception(timeout=5)
    assert isinstance(exc, error), repr(exc)
    assert mentions.lower() in str(exc).lower()
    settle_and_keys(r)


@pytest.mark.single_backend  # pure: never reaches Redis
def test_serialization_error_is_a_type_error() -> None:
    """Non-JSON data fails with SerializationError, which `except TypeError` also catches."""
    future = kickq.create("job", {1, 2, 3})
    with pytest.raises(TypeError):
        future.result(5)
    with pytest.raises(kickq.SerializationError):
        future.result(5)


@pytest.mark.single_backend  # pure: never reaches Redis
def test_empty_name_fails_with_config_error_and_value_error() -> None:
    """An empty job name fails the future with an error that is a ValueError."""
    exc = kickq.create("").exception(timeout=5)
    assert isinstance(exc, ValueError)


def test_bad_creates_mixed_with_good_ones_store_only_the_good(r: redis.Redis) -> None:
    """Interleaved bad and good creates: only the good jobs are stored and queued."""
    futures = [
        kickq.create("mixed", 1),
        kickq.create("mixed", {1}),
        kickq.create("mixed", 2, retry="yes"),
        kickq.create("mixed", 3),
    ]
    good = [futures[0].result(5), futures[3].result(5)]
    assert isinstance(futures[1].exception(5), kickq.SerializationError)
    assert isinstance(futures[2].exception(5), kickq.ConfigError)
    keys = [key for key in all_keys(r) if ":job:" in key]
    assert keys == sorted(job_key(job.id) for job in good)
    assert r.zcard(queue_key("mixed")) == 2


@pytest.mark.single_backend  # pure: never reaches Redis
@pytest.mark.parametrize(
    ("bad_id", "error"),
    [(42, TypeError), (None, TypeError), (b"abc", TypeError), ("", ValueError)],
    ids=["int", "None", "bytes", "empty"],
)
def test_get_and_delete_reject_bad_ids(bad_id: Any, error: type[Exception]) -> None:
    """get() and delete() with a non-str or empty id fail their future instead of raising."""
    for verb in (kickq.get, kickq.delete):
        future = verb(bad_id)
        assert isinstance(future, kickq.KickqFuture)
        assert isinstance(future.exception(timeout=5), error), verb.__name__


def test_get_unknown_id_fails_with_job_not_found() -> None:
    """get() of an id that was never created fails with JobNotFound."""
    with pytest.raises(kickq.JobNotFound):
        kickq.get("no-such-job").result(5)


def test_get_known_id_returns_the_job() -> None:
    """get() of a created job's id returns that job."""
    job = kickq.create("lookup", {"a": 1}).result(5)
    found = kickq.get(job.id).result(5)
    assert found == job


def test_delete_unknown_id_resolves_false(r: redis.Redis) -> None:
    """delete() of an unknown id resolves False; of an existing job True, and removes it."""
    assert kickq.delete("no-such-job").result(5) is False
    job = kickq.create("deleted", None).result(5)
    assert kickq.delete(job.id).result(5) is True
    assert kickq.delete(job.id).result(5) is False
    with pytest.raises(kickq.JobNotFound):
        kickq.get(job.id).result(5)
    assert r.exists(job_key(job.id)) == 0


@pytest.mark.single_backend  # pure: never reaches Redis
def test_process_rejects_unknown_option() -> None:
    """process() raises ConfigError for an unknown option, suggesting concurrent_jobs."""
    with pytest.raises(kickq.ConfigError, match="concurrent_jobs"):
        kickq.process("job", lambda job, data: None, concurrent_job=2)
    with pytest.raises(kickq.ConfigError, match="concurrent_job"):
        kickq.process("job", {"concurrent_job": 2}, lambda job, data: None)


@pytest.mark.single_backend  # pure: never reaches Redis
@pytest.mark.parametrize("value", [0, -1, "2", True, 1.5, 10_001, 10**30])
def test_process_rejects_bad_concurrent_jobs(value: Any) -> None:
    """process() raises ConfigError naming concurrent_jobs for a bad value."""
    with pytest.raises(kickq.ConfigError, match="concurrent_jobs"):
        kickq.process("job", lambda job, data: None, concurrent_jobs=value)


@pytest.mark.single_backend  # pure: never reaches Redis
def test_process_rejects_per_job_options() -> None:
    """process() raises ConfigError for an option that belongs to create()/config()."""
    with pytest.raises(kickq.ConfigError, match="retry") as info:
        kickq.process("job", lambda job, data: None, retry=True)
    assert "cannot be set in process()" in str(info.value)
    assert "not a per-job option" not in str(info.value)  # retry is one: it belongs to create()


@pytest.mark.single_backend  # pure: never reaches Redis
@pytest.mark.parametrize("handler", [None, 42, "resize"], ids=["None", "int", "str"])
def test_process_rejects_non_callable_handler(handler: Any) -> None:
    """process() raises TypeError when the handler is not callable."""
    with pytest.raises(TypeError):
        kickq.process("job", handler)


@pytest.mark.single_backend  # pure: never reaches Redis
@pytest.mark.parametrize(
    ("names", "error"),
    [("", ValueError), (42, TypeError), ([], ValueError), (["ok", 3], TypeError)],
    ids=["empty", "int", "no names", "int in list"],
)
def test_process_rejects_bad_names(names: Any, error: type[Exception]) -> None:
    """process() raises for an empty, missing or non-str job name."""
    with pytest.raises(error):
        kickq.process(names, lambda job, data: None)
