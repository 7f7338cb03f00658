"""kickq.config(): its forms, defaults, reset, job_flags, the cascade, validation and backoff."""

from __future__ import annotations

import datetime
import itertools
import statistics
from collections.abc import Callable
from typing import Any

import pytest

import kickq

DEFAULTS: dict[str, Any] = {
    "redis_url": None,
    "redis_host": "127.0.0.1",
    "redis_port": 6379,
    "redis_password": None,
    "redis_options": None,
    "redis_namespace": "kickq",
    "purge_timeout": 86400.0,
    "max_value_bytes": 1048576,
    "max_stuck_threads": 10,
    "process_timeout": 10.0,
    "delay": None,
    "ghost_retry": True,
    "ghost_count": 1,
    "ghost_interval": 1800.0,
    "hotjob": False,
    "hotjob_timeout": 10.0,
    "retry": False,
    "retry_count": 3,
    "retry_interval": 1800.0,
    "priority": 5,
    "unique": False,
    "job_flags": {},
    "tracing": False,
}
DURATIONS = (
    "purge_timeout",
    "process_timeout",
    "ghost_interval",
    "hotjob_timeout",
    "retry_interval",
)


def created(name: str, *args: Any, **options: Any) -> kickq.Job:
    """Create a job and wait for the saved Job."""
    return kickq.create(name, *args, **options).result(5)


# -- the forms of config() -------------------------------------------------------------------


def test_config_with_a_dict() -> None:
    """config(dict) sets every option of the dict and returns the new snapshot."""
    snapshot = kickq.config({"process_timeout": 30, "retry": True, "retry_count": 5})
    assert snapshot["process_timeout"] == 30.0
    assert snapshot["retry"] is True
    assert snapshot["retry_count"] == 5
    assert kickq.config()["retry_count"] == 5


def test_config_with_a_key_and_value() -> None:
    """config(name, value) sets one option."""
    snapshot = kickq.config("process_timeout", 30)
    assert snapshot["process_timeout"] == 30.0
    kickq.config("job_flags", {"resize": {"retry": True}})
    assert kickq.config()["job_flags"] == {"resize": {"retry": True}}


def test_config_with_keywords() -> None:
    """config(**options) sets every keyword option."""
    snapshot = kickq.config(process_timeout=30, retry=True)
    assert snapshot["process_timeout"] == 30.0
    assert snapshot["retry"] is True
    assert kickq.config()["retry"] is True


def test_config_snapshot_is_read_only() -> None:
    """The no-argument snapshot refuses assignment and deletion, also inside job_flags."""
    kickq.config(job_flags={"resize": {"retry": True}})
    snapshot = kickq.config()
    with pytest.raises(TypeError):
        snapshot["retry"] = True  # type: ignore[index]
    with pytest.raises(TypeError):
        del snapshot["retry"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        snapshot["job_flags"]["crop"] = {}
    with pytest.raises(TypeError):
        snapshot["job_flags"]["resize"]["retry"] = False
    assert kickq.config()["retry"] is False
    assert kickq.config()["job_flags"] == {"resize": {"retry": True}}


def test_config_snapshot_redis_options_is_read_only() -> None:
    """redis_options in the snapshot cannot be changed behind config()'s back."""
    snapshot = kickq.config(redis_options={"socket_timeout": 3})
    with pytest.raises(TypeError):
        snapshot["redis_options"]["socket_timeout"] = 99
    assert kickq.config()["redis_options"] == {"socket_timeout": 3}


def test_config_snapshot_reflects_changes() -> None:
    """A snapshot taken after a change shows the new values."""
    before = kickq.config()
    assert before["process_timeout"] == 10.0
    kickq.config(process_timeout=42, ghost_count=4)
    after = kickq.config()
    assert after["process_timeout"] == 42.0
    assert after["ghost_count"] == 4
    assert set(after) == set(DEFAULTS)


def test_defaults() -> None:
    """After reset every option has the default of API.md, with durations as floats."""
    kickq.reset()
    snapshot = kickq.config()
    assert set(snapshot) == set(DEFAULTS)
    for name, default in DEFAULTS.items():
        assert snapshot[name] == default, name
        assert type(snapshot[name]) is type(default) or name == "job_flags", name
    for name in DURATIONS:
        assert isinstance(snapshot[name], float), name


def test_durations_come_back_as_floats() -> None:
    """An int duration is stored as float seconds."""
    snapshot = kickq.config(process_timeout=30, purge_timeout=5, delay=2, hotjob_timeout=1)
    for name, value in [("process_timeout", 30), ("purge_timeout", 5), ("delay", 2)]:
        assert snapshot[name] == float(value)
        assert isinstance(snapshot[name], float), name


def test_reset_restores_defaults(redis_url: str) -> None:
    """kickq.reset() puts every option back to its default, job_flags included."""
    kickq.config(
        process_timeout=1,
        retry=True,
        retry_count=7,
        ghost_retry=False,
        delay=3,
        hotjob=True,
        purge_timeout=9,
        redis_namespace="other",
        job_flags={"resize": {"retry_count": 1}},
    )
    kickq.reset()
    assert dict(kickq.config()) == DEFAULTS
    kickq.config(redis_url=redis_url)
    job = created("resize")
    assert (job.process_timeout, job.retry, job.retry_count, job.delay) == (10.0, False, 3, None)


def test_job_flags_replaces_the_whole_mapping() -> None:
    """Setting job_flags again drops the flags of job names it no longer lists."""
    kickq.config(job_flags={"resize": {"retry": True}, "crop": {"retry_count": 9}})
    kickq.config(job_flags={"crop": {"process_timeout": 5}})
    flags = kickq.config()["job_flags"]
    assert set(flags) == {"crop"}
    assert dict(flags["crop"]) == {"process_timeout": 5.0}
    assert created("resize").retry is False
    crop = created("crop")
    assert crop.retry_count == 3
    assert crop.process_timeout == 5.0


def test_a_rejected_config_call_changes_nothing() -> None:
    """config() validates every option before applying any of them."""
    with pytest.raises(kickq.ConfigError):
        kickq.config({"retry": True, "process_timeout": 20, "retry_count": -1})
    snapshot = kickq.config()
    assert snapshot["retry"] is False
    assert snapshot["process_timeout"] == 10.0


# -- the cascade -----------------------------------------------------------------------------


def test_cascade_per_call_over_job_flags_over_global_over_defaults() -> None:
    """Each option of a created job comes from the first of per-call, job_flags, global, default."""
    kickq.config(
        process_timeout=20,
        retry=True,
        retry_count=5,
        ghost_interval=60,
        job_flags={"resize": {"process_timeout": 30, "retry_count": 7, "hotjob_timeout": 40}},
    )
    job = created("resize", {"p": 1}, {"process_timeout": 50})
    assert job.process_timeout == 50.0  # per call
    assert job.retry_count == 7  # job_flags
    assert job.hotjob_timeout == 40.0  # job_flags
    assert job.retry is True  # global
    assert job.ghost_interval == 60.0  # global
    assert job.ghost_count == 1  # default
    assert job.retry_interval == 1800.0  # default

    other = created("crop")
    assert other.process_timeout == 20.0
    assert other.retry_count == 5
    assert other.hotjob_timeout == 10.0


def test_cascade_keywords_and_options_dict() -> None:
    """Per-call options given as keywords and as a dict both win over job_flags and global."""
    kickq.config(ghost_retry=False, job_flags={"resize": {"ghost_count": 2, "retry": True}})
    job = created("resize", None, {"ghost_count": 3}, retry=False)
    assert job.ghost_count == 3
    assert job.retry is False
    assert job.ghost_retry is False


def test_cascade_delay_from_job_flags_and_explicit_none_per_call() -> None:
    """A delay from job_flags delays the job; delay=None per call overrides it."""
    kickq.config(job_flags={"later": {"delay": 60}})
    delayed = created("later")
    assert delayed.delay == 60.0
    assert delayed.state is kickq.State.DELAYED
    assert delayed.scheduled_for is not None
    assert delayed.create_time is not None
    assert delayed.scheduled_for - delayed.create_time == datetime.timedelta(seconds=60)
    now = created("later", None, delay=None)
    assert now.delay is None
    assert now.state is kickq.State.QUEUED


def test_cascade_hotjob_from_job_flags() -> None:
    """hotjob set in job_flags gives the created job a hotjob future; other names get none."""
    kickq.config(job_flags={"hot": {"hotjob": True, "hotjob_timeout": 30}})
    hot = created("hot")
    assert hot.hotjob is True
    assert hot.hotjob_timeout == 30.0
    assert hot.hotjob_future is not None
    cold = created("cold")
    assert cold.hotjob is False
    assert cold.hotjob_future is None


def test_global_change_applies_to_later_creates() -> None:
    """Changing the global config at run time changes the options of jobs created afterwards."""
    assert created("resize").process_timeout == 10.0
    kickq.config(process_timeout=3)
    assert created("resize").process_timeout == 3.0


# -- durations as timedelta ------------------------------------------------------------------


def test_timedelta_is_accepted_as_a_duration() -> None:
    """A timedelta is accepted wherever seconds are, and stored as float seconds."""
    snapshot = kickq.config(
        process_timeout=datetime.timedelta(minutes=1),
        purge_timeout=datetime.timedelta(hours=1),
        retry_interval=datetime.timedelta(milliseconds=1500),
        job_flags={"resize": {"ghost_interval": datetime.timedelta(seconds=90)}},
    )
    assert snapshot["process_timeout"] == 60.0
    assert snapshot["purge_timeout"] == 3600.0
    assert snapshot["retry_interval"] == 1.5
    assert snapshot["job_flags"]["resize"]["ghost_interval"] == 90.0
    job = created("resize", None, delay=datetime.timedelta(seconds=5))
    assert job.delay == 5.0
    assert job.ghost_interval == 90.0
    assert job.process_timeout == 60.0
    assert job.state is kickq.State.DELAYED


def test_function_retry_interval_is_accepted_in_config() -> None:
    """A function of the retry number is accepted as retry_interval in config and job_flags."""
    interval = kickq.backoff(base=2, maximum=60)
    snapshot = kickq.config(retry_interval=interval, job_flags={"a": {"retry_interval": interval}})
    assert snapshot["retry_interval"] is interval
    assert snapshot["job_flags"]["a"]["retry_interval"] is interval


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("proces_timeout", "process_timeout"),
        ("hot_job", "hotjob"),
        ("redis_namspace", "redis_namespace"),
        ("retry_intervall", "retry_interval"),
        ("ghostcount", "ghost_count"),
    ],
)
def test_unknown_option_suggests_the_closest(typo: str, suggestion: str) -> None:
    """An unknown option raises ConfigError naming it and suggesting the closest valid one."""
    with pytest.raises(kickq.ConfigError) as info:
        kickq.config({typo: 1})
    assert typo in str(info.value)
    assert f"'{suggestion}'" in str(info.value)


def test_unknown_option_in_every_form() -> None:
    """Every form of config() rejects an unknown option with ConfigError, a ValueError."""
    calls: list[Callable[[], Any]] = [
        lambda: kickq.config({"proces_timeout": 1}),
        lambda: kickq.config("proces_timeout", 1),
        lambda: kickq.config(proces_timeout=1),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="process_timeout") as info:
            call()
        assert isinstance(info.value, kickq.ConfigError)


def test_unknown_option_without_close_match() -> None:
    """An option unlike any valid one still raises ConfigError naming it."""
    with pytest.raises(kickq.ConfigError, match="zzzz"):
        kickq.config(zzzz=1)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("process_timeout", "10"),
        ("purge_timeout", [1]),
        ("ghost_interval", None),
        ("hotjob_timeout", True),
        ("delay", "5"),
        ("retry_interval", "later"),
        ("retry_count", True),
        ("retry_count", 2.0),
        ("retry_count", "3"),
        ("ghost_count", False),
        ("retry", 1),
        ("retry", "yes"),
        ("retry", None),
        ("ghost_retry", 0),
        ("hotjob", "true"),
        ("redis_port", "6379"),
        ("redis_port", True),
        ("redis_namespace", 3),
        ("redis_host", None),
        ("redis_url", 5),
        ("redis_options", "x=1"),
        ("job_flags", ["resize"]),
        ("job_flags", {"resize": "retry"}),
        ("max_value_bytes", 65536.0),
        ("max_value_bytes", "1MB"),
        ("max_value_bytes", True),
        ("max_value_bytes", 1023),
        ("max_value_bytes", 1024 * 1024 + 1),
        ("max_value_bytes", -1),
    ],
)
def test_wrong_type_raises_config_error(name: str, value: Any) -> None:
    """A value of the wrong type raises ConfigError naming the option, and changes nothing."""
    before = dict(kickq.config())
    with pytest.raises(kickq.ConfigError, match=name):
        kickq.config(name, value)
    assert dict(kickq.config()) == before


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("process_timeout", -1),
        ("purge_timeout", -0.5),
        ("delay", -3),
        ("ghost_interval", datetime.timedelta(seconds=-1)),
        ("hotjob_timeout", -10),
        ("retry_interval", -5),
        ("retry_count", -1),
        ("ghost_count", -2),
    ],
)
def test_negative_duration_or_count_raises_config_error(name: str, value: Any) -> None:
    """A negative duration or count raises ConfigError naming the option."""
    with pytest.raises(kickq.ConfigError, match=name):
        kickq.config({name: value})
    with pytest.raises(kickq.ConfigError, match=name):
        kickq.config(job_flags={"resize": {name: value}})


@pytest.mark.parametrize(
    "value", [1e12, 1e300, 10**400, datetime.timedelta.max], ids=["1e12", "1e300", "10**400", "max"]
)
@pytest.mark.parametrize("name", ["process_timeout", "purge_timeout", "delay", "retry_interval"])
def test_absurdly_large_duration_raises_config_error(name: str, value: Any) -> None:
    """A duration too large for any timer (no valid datetime after it) raises ConfigError."""
    with pytest.raises(kickq.ConfigError, match=name):
        kickq.config({name: value})


def test_max_value_bytes_takes_whole_bytes_from_1024_to_1_mib() -> None:
    assert kickq.config(max_value_bytes=1024)["max_value_bytes"] == 1024
    assert kickq.config(max_value_bytes=1024 * 1024)["max_value_bytes"] == 1024 * 1024


def test_large_but_sane_duration_is_accepted() -> None:
    """A duration of a hundred years is still accepted."""
    century = 100 * 365.25 * 86400
    assert kickq.config(purge_timeout=century)["purge_timeout"] == century


def test_zero_is_a_valid_delay_interval_and_count() -> None:
    """Zero is accepted for a delay, an interval and a count."""
    snapshot = kickq.config(
        retry_count=0, ghost_count=0, delay=0, retry_interval=0, ghost_interval=0
    )
    assert snapshot["retry_count"] == 0
    assert snapshot["ghost_count"] == 0
    assert (snapshot["delay"], snapshot["retry_interval"], snapshot["ghost_interval"]) == (0, 0, 0)


def test_the_bounds_themselves_are_accepted() -> None:
    """The ends of each documented range are valid values."""
    snapshot = kickq.config(
        process_timeout=1e10,
        hotjob_timeout=0.001,
        purge_timeout=1e10,
        retry_count=1000,
        ghost_count=1000,
        priority=0,
        redis_port=65535,
    )
    assert (snapshot["process_timeout"], snapshot["retry_count"], snapshot["ghost_count"]) == (
        1e10,
        1000,
        1000,
    )


OUT_OF_RANGE = [
    ("process_timeout", 0, "more than 0 and at most 1e10 seconds"),
    ("process_timeout", datetime.timedelta(0), "more than 0 and at most 1e10 seconds"),
    ("process_timeout", 1e10 + 1, "more than 0 and at most 1e10 seconds"),
    ("hotjob_timeout", 0.0, "more than 0 and at most 1e10 seconds"),
    ("purge_timeout", 0, "more than 0 and at most 1e10 seconds"),
    ("delay", -1, "from 0 to 1e10 seconds"),
    ("retry_interval", 2e10, "from 0 to 1e10 seconds"),
    ("ghost_interval", -0.5, "from 0 to 1e10 seconds"),
    ("retry_count", 10**30, "a whole number from 0 to 1000"),
    ("retry_count", 1001, "a whole number from 0 to 1000"),
    ("ghost_count", 10**5000, "a whole number from 0 to 1000"),
    ("ghost_count", -1, "a whole number from 0 to 1000"),
    ("priority", 10, "a whole number from 0 to 9"),
    ("priority", -1, "a whole number from 0 to 9"),
    ("redis_port", 99999, "from 1 to 65535"),
    ("redis_port", 0, "from 1 to 65535"),
]


@pytest.mark.parametrize(
    ("name", "value", "span"),
    OUT_OF_RANGE,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(OUT_OF_RANGE)],
)
def test_a_value_out_of_its_range_raises_config_error_naming_option_and_range(
    name: str, value: Any, span: str
) -> None:
    """Every numeric option has a range: a value outside it raises ConfigError naming the
    option and the range, in config() and (for a per-job option) in job_flags, and changes
    nothing."""
    before = dict(kickq.config())
    with pytest.raises(kickq.ConfigError, match=name) as info:
        kickq.config({name: value})
    assert span in str(info.value)
    if name not in ("purge_timeout", "redis_port"):  # per-job options
        with pytest.raises(kickq.ConfigError, match=name) as info:
            kickq.config(job_flags={"resize": {name: value}})
        assert span in str(info.value)
    assert dict(kickq.config()) == before


@pytest.mark.parametrize(
    "name",
    ["redis_namespace", "purge_timeout", "redis_url", "redis_port", "job_flags", "max_value_bytes"],
)
def test_non_per_job_option_in_job_flags(name: str) -> None:
    """A non per-job option inside job_flags raises ConfigError naming it."""
    values = {
        "redis_namespace": "x",
        "purge_timeout": 5,
        "redis_url": "redis://h",
        "redis_port": 1,
        "job_flags": {},
        "max_value_bytes": 4096,
    }
    with pytest.raises(kickq.ConfigError, match=name):
        kickq.config(job_flags={"resize": {name: values[name]}})
    assert kickq.config()["job_flags"] == {}


def test_unknown_option_in_job_flags_suggests_the_closest() -> None:
    """An unknown option inside job_flags raises ConfigError with the closest per-job option."""
    with pytest.raises(kickq.ConfigError, match="proces_timeout") as info:
        kickq.config(job_flags={"resize": {"proces_timeout": 1}})
    assert "'process_timeout'" in str(info.value)


def test_bad_value_in_job_flags() -> None:
    """A wrong type inside job_flags raises ConfigError naming the option."""
    with pytest.raises(kickq.ConfigError, match="retry"):
        kickq.config(job_flags={"resize": {"retry": "yes"}})


@pytest.mark.parametrize(
    ("name", "value"),
    [("redis_namespace", "x"), ("purge_timeout", 5), ("max_value_bytes", 4096)],
)
def test_non_per_job_option_in_create(name: str, value: Any) -> None:
    """A non per-job option in create() fails its future with ConfigError naming it."""
    future = kickq.create("resize", None, {name: value})
    error = future.exception(timeout=5)
    assert isinstance(error, kickq.ConfigError)
    assert name in str(error)


def test_create_validates_like_config() -> None:
    """create() rejects an unknown option, with a suggestion, and a wrong type like config()."""
    error = kickq.create("resize", proces_timeout=1).exception(timeout=5)
    assert isinstance(error, kickq.ConfigError)
    assert "'process_timeout'" in str(error)
    error = kickq.create("resize", retry_count=True).exception(timeout=5)
    assert isinstance(error, kickq.ConfigError)
    assert "retry_count" in str(error)


# -- backoff ---------------------------------------------------------------------------------


def test_backoff_without_jitter_grows_to_the_maximum() -> None:
    """Without jitter backoff waits base * factor**(n-1), capped at the maximum."""
    interval = kickq.backoff(base=1, factor=2, maximum=10, jitter=False)
    values = [interval(n) for n in range(1, 9)]
    assert values == [1, 2, 4, 8, 10, 10, 10, 10]
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert interval(1000) == 10


def test_backoff_with_jitter_grows_and_stays_under_the_maximum() -> None:
    """With jitter each wait lies in [0, capped ceiling], and waits grow with the retry number."""
    interval = kickq.backoff(base=1, factor=2, maximum=20, jitter=True)
    samples = {n: [interval(n) for _ in range(400)] for n in range(1, 8)}
    for n, values in samples.items():
        ceiling = min(20, 2 ** (n - 1))
        assert all(0 <= v <= ceiling for v in values), n
        assert len(set(values)) > 1, "jitter should vary the waits"
    means = [statistics.mean(samples[n]) for n in range(1, 6)]
    assert means == sorted(means)
    assert means[-1] > 4 * means[0]
    assert max(samples[7]) <= 20


@pytest.mark.parametrize("jitter", [False, True])
def test_backoff_survives_huge_retry_numbers(jitter: bool) -> None:
    """A backoff function stays at or under its maximum for retry numbers far past the cap."""
    for interval in (kickq.backoff(jitter=jitter), kickq.backoff(base=3, factor=10, jitter=jitter)):
        for n in (1100, 5000, 10**9):
            assert 0 <= interval(n) <= 3600
    assert kickq.backoff(jitter=False)(10**9) == 3600
    assert kickq.backoff(base=0, jitter=False)(10**9) == 0


def test_backoff_rejects_bad_arguments() -> None:
    """backoff() refuses a negative base or maximum and a factor below 1."""
    for kwargs in ({"base": -1}, {"maximum": -1}, {"factor": 0.5}):
        with pytest.raises(kickq.ConfigError):
            kickq.backoff(**kwargs)


BAD_URLS = [
    ("redis://127.0.0.1:6379/abc", "its database 'abc'"),
    ("redis://127.0.0.1:6379/0/1", "its database '0/1'"),
    ("redis://127.0.0.1:6379/-1", "its database '-1'"),
    ("redis://127.0.0.1:99999", "its port '99999' is not a whole number from 1 to 65535"),
    ("redis://127.0.0.1:0/0", "its port '0'"),
    ("redis://127.0.0.1:port/0", "its port 'port'"),
    ("rediss://user:s3cret@127.0.0.1:70000/1", "its port '70000'"),
    ("redis://127.0.0.1?db=one", "'db'"),
    ("redis://127.0.0.1?db=-3", "its database -3 is negative"),
    ("redis://127.0.0.1?socket_timeout=soon", "'socket_timeout'"),
    ("redis://[::1", "cannot be read"),
    ("unix://", "names no socket path"),
]


@pytest.mark.lowest_redis_py
@pytest.mark.parametrize(("url", "part"), BAD_URLS)
def test_a_redis_url_with_a_bad_part_is_refused_naming_the_part(url: str, part: str) -> None:
    """A URL redis-py would read as another database (a path that is not a number: db 0) or
    fail on at the first command (a port out of range) raises ConfigError at once, naming the
    bad part and never the password; nothing changes."""
    before = dict(kickq.config())
    with pytest.raises(kickq.ConfigError, match="redis_url") as info:
        kickq.config(redis_url=url)
    assert part in str(info.value)
    assert "s3cret" not in str(info.value)
    assert dict(kickq.config()) == before


@pytest.mark.lowest_redis_py
@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/15",
        "redis://127.0.0.1:6379/",
        "redis://127.0.0.1",
        "redis://user:pass@[::1]:6380/2?socket_timeout=3",
        "rediss://127.0.0.1:6380/0?db=1",
        "unix:///tmp/redis.sock?db=3",
    ],
)
def test_good_redis_urls_are_accepted(url: str) -> None:
    assert kickq.config(redis_url=url)["redis_url"] == url


@pytest.mark.lowest_redis_py
@pytest.mark.parametrize(("url", "part"), BAD_URLS[:4])
def test_a_bad_kickq_redis_url_fails_calls_with_config_error(
    url: str, part: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KICKQ_REDIS_URL is checked as redis_url is, when kickq first connects: calls fail
    with ConfigError naming the variable and the bad part, instead of using database 0 or
    failing with redis-py's ValueError."""
    kickq.reset()
    monkeypatch.setenv("KICKQ_REDIS_URL", url)
    error = kickq.create("job").exception(timeout=10)
    assert isinstance(error, kickq.ConfigError)
    assert "KICKQ_REDIS_URL" in str(error) and part in str(error)
