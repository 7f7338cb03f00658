"""Fixtures: private redis-servers, a clean kickq and database per test.

Modules marked `both_backends` run each test twice: on one redis-server and on a private
3-master Redis Cluster (started once per session, on first use).
"""

from __future__ import annotations

import datetime
import os
import pathlib
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import kickq
import kickq._redis.embedded

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from support import TIME_FACTOR, RedisCluster, RedisServer

Client = redis.Redis | redis.RedisCluster
BACKENDS = ("single", "cluster")
PARSER_ENV = "KICKQ_TEST_PARSER"  # "hiredis" or "python": the run fails at once if it is not so


def pytest_report_header() -> str:
    return (
        f"redis-py {redis.__version__}, parser: {parser_in_use()}, "
        f"wait bounds x{TIME_FACTOR:g} (KICKQ_TEST_TIME_FACTOR)"
    )


def _stretch_future_waits() -> None:
    """A test's `future.result(n)` / `.exception(n)` and `kickq.wait(id, timeout=n)` are wait
    bounds like any other: with KICKQ_TEST_TIME_FACTOR set, they wait n times the factor."""
    if TIME_FACTOR == 1:
        return
    result, exception = kickq.KickqFuture.result, kickq.KickqFuture.exception

    def stretched_result(self: Any, timeout: float | None = None) -> Any:
        return result(self, None if timeout is None else timeout * TIME_FACTOR)

    def stretched_exception(self: Any, timeout: float | None = None) -> Any:
        return exception(self, None if timeout is None else timeout * TIME_FACTOR)

    kickq.KickqFuture.result = stretched_result  # type: ignore[method-assign]
    kickq.KickqFuture.exception = stretched_exception  # type: ignore[method-assign]
    wait = kickq.wait

    def stretched_wait(job_id: Any, timeout: Any = None, **more: Any) -> Any:
        """kickq.wait(id, timeout=n) in a test: n on an idle machine (not a bad value's check)."""
        if isinstance(timeout, int | float | datetime.timedelta) and not isinstance(timeout, bool):
            timeout = timeout * TIME_FACTOR
        return wait(job_id, timeout, **more)

    kickq.wait = stretched_wait


_stretch_future_waits()


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """pytest-timeout's limit (the ini's, or --timeout) stretches with the wait bounds."""
    timeout = getattr(config, "_env_timeout", None)
    if timeout and TIME_FACTOR != 1:
        config._env_timeout = timeout * TIME_FACTOR  # type: ignore[attr-defined]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test's own @pytest.mark.timeout(n) stretches too."""
    if TIME_FACTOR == 1:
        return
    for item in items:
        marker = item.get_closest_marker("timeout")
        if marker is not None and marker.args and isinstance(marker.args[0], int | float):
            stretched = pytest.mark.timeout(marker.args[0] * TIME_FACTOR, *marker.args[1:])
            item.add_marker(stretched, append=False)  # the closest marker: the one read


def parser_in_use() -> str:
    return "hiredis" if redis.utils.HIREDIS_AVAILABLE else "python"


def pytest_sessionstart(session: pytest.Session) -> None:
    wanted = os.environ.get(PARSER_ENV)
    if wanted and wanted != parser_in_use():
        raise pytest.UsageError(f"{PARSER_ENV}={wanted}, but redis-py uses {parser_in_use()}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    definition = metafunc.definition
    if definition.get_closest_marker("both_backends") and not definition.get_closest_marker(
        "single_backend"
    ):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """ "single" or "cluster": which Redis this test runs on."""
    return str(getattr(request, "param", "single"))


@pytest.fixture(scope="session", autouse=True)
def private_kickq_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A test that ends up on the embedded Redis (a kickq.reset() left without redis_url)
    starts it in a private home, never the developer's, and it is stopped afterwards."""
    home = tmp_path_factory.mktemp("kickq-home")
    before = os.environ.get("KICKQ_HOME")
    os.environ["KICKQ_HOME"] = str(home)
    yield
    kickq._redis.embedded.stop()
    if before is None:
        del os.environ["KICKQ_HOME"]
    else:
        os.environ["KICKQ_HOME"] = before


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def target(backend: str, request: pytest.FixtureRequest) -> RedisServer | RedisCluster:
    """The server (or cluster) this test runs on."""
    name = "redis_cluster" if backend == "cluster" else "redis_server"
    found: RedisServer | RedisCluster = request.getfixturevalue(name)
    return found


@pytest.fixture
def redis_url(target: RedisServer | RedisCluster) -> str:
    return target.url


@pytest.fixture
def r(target: RedisServer | RedisCluster) -> Iterator[Client]:
    """A plain client on the test's Redis, to look at what kickq left behind."""
    client = target.client()
    yield client
    client.close()


def connect_kickq(target: RedisServer | RedisCluster) -> None:
    if isinstance(target, RedisCluster):
        kickq.config(redis_url=target.url, redis_options={"cluster": True})
    else:
        kickq.config(redis_url=target.url)


@pytest.fixture(autouse=True)
def clean_kickq(
    target: RedisServer | RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Every test starts on an empty database with default options, pointed at its Redis."""
    monkeypatch.delenv("KICKQ_REDIS_URL", raising=False)
    monkeypatch.delenv("KICKQ_REDIS_CLUSTER", raising=False)
    monkeypatch.delenv("KICKQ_NAMESPACE", raising=False)  # the command line's default
    kickq.reset()
    target.flushall()
    connect_kickq(target)
    yield
    kickq.reset()


@pytest.fixture
def subprocess_env(target: RedisServer | RedisCluster) -> dict[str, str]:
    """Environment for a child process that should use the test's Redis."""
    env = dict(os.environ)
    env["KICKQ_REDIS_URL"] = target.url
    if isinstance(target, RedisCluster):
        env["KICKQ_REDIS_CLUSTER"] = "1"
    root = str(pathlib.Path(__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env
