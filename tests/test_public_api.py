"""The public surface of kickq: exported names, the error hierarchy and KickqFuture."""

from __future__ import annotations

import asyncio
import concurrent.futures
import pkgutil
import threading

import pytest

import kickq

ERRORS = [
    "ConfigError",
    "SerializationError",
    "JobNotFound",
    "HotjobTimeout",
    "JobFailed",
    "RedisUnavailable",
    "DamagedRecord",
    "JobKeptChanging",
]
PUBLIC_NAMES = [
    "config",
    "reset",
    "create",
    "process",
    "get",
    "delete",
    "Job",
    "Run",
    "State",
    "KickqFuture",
    "KickqError",
    *ERRORS,
]


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_name_is_exported(name: str) -> None:
    """Every public name of API.md is listed in kickq.__all__ and exists on the module."""
    assert name in kickq.__all__
    assert getattr(kickq, name) is not None


def test_all_names_exist() -> None:
    """Everything kickq.__all__ lists can be imported from kickq."""
    missing = [name for name in kickq.__all__ if not hasattr(kickq, name)]
    assert missing == []


def test_verbs_are_callable() -> None:
    """The verbs of API.md are functions."""
    for name in ("config", "reset", "create", "process", "get", "delete"):
        assert callable(getattr(kickq, name)), name


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        ("ConfigError", ValueError),
        ("SerializationError", TypeError),
        ("HotjobTimeout", TimeoutError),
        ("RedisUnavailable", ConnectionError),
        ("DamagedRecord", ValueError),
        ("JobKeptChanging", RuntimeError),
        ("JobKeptChanging", ValueError),
    ],
)
def test_error_is_also_a_builtin(error: str, builtin: type[Exception]) -> None:
    """Each error that API.md ties to a builtin exception derives from it."""
    assert issubclass(getattr(kickq, error), builtin)


@pytest.mark.parametrize("error", ERRORS)
def test_every_error_is_a_kickq_error(error: str) -> None:
    """Every kickq error derives from kickq.KickqError, itself an Exception."""
    assert issubclass(getattr(kickq, error), kickq.KickqError)
    assert issubclass(kickq.KickqError, Exception)


def test_hotjob_timeout_is_caught_as_a_timeout() -> None:
    """A HotjobTimeout is caught by `except TimeoutError` and by `except KickqError`."""
    with pytest.raises(TimeoutError):
        raise kickq.HotjobTimeout("late")
    with pytest.raises(kickq.KickqError):
        raise kickq.HotjobTimeout("late")


def test_job_failed_carries_job_and_error() -> None:
    """JobFailed exposes the failed job as .job and its last error as .error."""
    job = kickq.Job(id="x", name="n", state=kickq.State.FAIL, last_error="boom")
    error = kickq.JobFailed(job)
    assert error.job is job
    assert error.error == "boom"


def test_job_cancelled_is_a_job_failed() -> None:
    """JobCancelled is caught by `except JobFailed`, and carries the job as JobFailed does."""
    job = kickq.Job(id="x", name="n", state=kickq.State.FAIL, last_error="cancelled")
    with pytest.raises(kickq.JobFailed) as caught:
        raise kickq.JobCancelled(job)
    assert caught.value.job is job and caught.value.error == "cancelled"


def test_kickq_future_is_a_concurrent_future() -> None:
    """KickqFuture subclasses concurrent.futures.Future, and create() returns one."""
    assert issubclass(kickq.KickqFuture, concurrent.futures.Future)
    future = kickq.create("public-api")
    assert isinstance(future, kickq.KickqFuture)
    assert isinstance(future.result(5), kickq.Job)


def test_kickq_future_is_awaitable_inside_asyncio_run() -> None:
    """Awaiting a KickqFuture inside asyncio.run yields its result once another thread sets it."""
    future: kickq.KickqFuture[int] = kickq.KickqFuture()

    async def main() -> int:
        threading.Timer(0.05, future.set_result, args=(42,)).start()
        return await future

    assert asyncio.run(main()) == 42


def test_await_create_returns_the_saved_job() -> None:
    """`await kickq.create(...)` inside asyncio.run returns the saved Job."""

    async def main() -> kickq.Job:
        return await kickq.create("public-api", {"k": 1})

    job = asyncio.run(main())
    assert job.name == "public-api"
    assert job.data == {"k": 1}
    assert job.state is kickq.State.QUEUED


def test_await_a_failed_future_raises_its_error() -> None:
    """Awaiting a failed KickqFuture raises the error it failed with."""

    async def main() -> kickq.Job:
        return await kickq.create("")

    with pytest.raises(kickq.ConfigError):
        asyncio.run(main())


# The documented API: API.md's names, and those the README documents beside them (wait, on and
# its subscription, the worker handle process() returns, backoff, use, the version).
DOCUMENTED = {
    *PUBLIC_NAMES,
    "create_many",
    "wait",
    "on",
    "EventSubscription",
    "Worker",
    "backoff",
    "use",
    "__version__",
    # part two: inspect and repair, stats, workers, pause
    "jobs",
    "JobQuery",
    "requeue",
    "promote",
    "stats",
    "NameStats",
    "workers",
    "WorkerInfo",
    "pause",
    "resume",
    "processor",
    "start",
    "schedule",
    "schedules",
    "unschedule",
    "Schedule",
    # part two: limits across processes, cancel
    "limit",
    "cancel",
    "cancelled",
    # part three: progress
    "progress",
    "JobCancelled",
    "TimeLimitExceeded",
}
PUBLIC_SUBMODULES: set[str] = {"cli", "dashboard", "metrics", "testing"}  # the documented ones


def test_all_is_exactly_the_documented_api() -> None:
    """kickq.__all__ lists the documented API: nothing missing, nothing more."""
    assert set(kickq.__all__) == DOCUMENTED
    assert len(kickq.__all__) == len(DOCUMENTED)


@pytest.mark.parametrize("name", sorted(DOCUMENTED - {"__version__"}))
def test_every_public_name_has_a_docstring(name: str) -> None:
    """Each public name explains itself."""
    assert (getattr(kickq, name).__doc__ or "").strip(), name


def test_internals_are_private_modules() -> None:
    """Every module of the package is private (its name starts with _) but the documented
    public submodules, so the kickq.config function shadows no module."""
    names = {info.name for info in pkgutil.iter_modules(kickq.__path__)}
    assert {n for n in names if not n.startswith("_")} == PUBLIC_SUBMODULES
    assert callable(kickq.config)
