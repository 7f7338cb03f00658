"""Which Redis: explicit connection options > KICKQ_REDIS_URL > the embedded server.

Builds the process's one client (one connection pool). With the embedded server, connecting is
what starts it, so the server comes up on first use in a background thread, and comes back if
it was stopped while kickq was running.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import redis

from . import embedded

ENV_URL = "KICKQ_REDIS_URL"

# kickq reads replies as text and speaks RESP2 on every connection, the pub/sub one included.
# Bytes that are not UTF-8 (a hand-edited record) decode to lone surrogates instead of raising
# in the middle of a reply; job.from_record then reports the record as damaged.
FORCED = {"decode_responses": True, "protocol": 2, "encoding_errors": "surrogateescape"}
DEFAULTS = {"socket_connect_timeout": 5, "health_check_interval": 0}
TCP_DEFAULTS = {"socket_keepalive": True}  # unix-socket connections refuse this argument
SERVER_OPTIONS = frozenset({"redis_url", "redis_host", "redis_port", "redis_password"})


class EmbeddedConnection(redis.UnixDomainSocketConnection):
    """A unix-socket connection that starts the embedded server when it is not answering."""

    def connect(self) -> None:
        if self._sock is None and not os.path.exists(self.path):
            # start it now: a connect to a missing socket first sits out redis-py's retries
            embedded.ensure_running()
        try:
            super().connect()  # type: ignore[no-untyped-call]
        except redis.ConnectionError:
            embedded.ensure_running()
            super().connect()  # type: ignore[no-untyped-call]


def describe(settings: Mapping[str, Any], explicit: set[str]) -> str:
    """Which server kickq talks to, for logs and errors (without the password)."""
    if settings["redis_url"]:
        return str(settings["redis_url"]).split("@")[-1]
    if explicit & SERVER_OPTIONS:
        return f"{settings['redis_host']}:{settings['redis_port']}"
    if os.environ.get(ENV_URL):
        return os.environ[ENV_URL].split("@")[-1]
    return f"embedded redis at {embedded.socket_path()}"


def connect(settings: Mapping[str, Any], explicit: set[str]) -> redis.Redis:
    """The client for the configured server; no I/O happens until its first command."""
    options: dict[str, Any] = {**DEFAULTS, **(settings["redis_options"] or {}), **FORCED}
    url = settings["redis_url"] or (None if explicit & SERVER_OPTIONS else os.environ.get(ENV_URL))
    if url:
        tcp = not str(url).startswith("unix:")
        return redis.Redis.from_url(url, **({**TCP_DEFAULTS, **options} if tcp else options))
    if explicit & SERVER_OPTIONS:
        return redis.Redis(
            host=settings["redis_host"],
            port=settings["redis_port"],
            password=settings["redis_password"],
            **{**TCP_DEFAULTS, **options},
        )
    pool = redis.ConnectionPool(
        connection_class=EmbeddedConnection, path=str(embedded.socket_path()), **options
    )
    return redis.Redis(connection_pool=pool)


def new_connection(client: redis.Redis) -> redis.connection.AbstractConnection:
    """A connection of the same kind as the pool's, owned by the caller (for pub/sub)."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    return pool.connection_class(**kwargs)  # type: ignore[no-any-return]
