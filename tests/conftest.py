"""Fixtures: one private redis-server for the session, a clean kickq and database per test."""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Iterator

import pytest
import redis

import kickq

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from support import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client on the test server, to look at what kickq left behind."""
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def clean_kickq(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts on an empty database with default options, pointed at the test server."""
    monkeypatch.delenv("KICKQ_REDIS_URL", raising=False)
    kickq.reset()
    client = redis_server.client()
    client.flushall()
    client.close()
    kickq.config(redis_url=redis_server.url)
    yield
    kickq.reset()


@pytest.fixture
def subprocess_env(redis_server: RedisServer) -> dict[str, str]:
    """Environment for a child process that should use the test server."""
    env = dict(os.environ)
    env["KICKQ_REDIS_URL"] = redis_server.url
    root = str(pathlib.Path(__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env
