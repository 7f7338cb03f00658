"""The client of a master that Redis Sentinel watches (a `redis+sentinel://` URL).

One pool per process, redis-py's SentinelConnectionPool: each new connection asks the sentinels
where the master is now, so that after a failover the next connect reaches the new one. What
kickq adds: the pool is also a `connection.Pool` (a lone create can take an idle connection); a
connection that finds its server demoted to a replica drops itself however the READONLY reply
came (redis-py notices a bare one, not one wrapped in a script error as Redis 6.2 sends it), so
that kickq meets an outage and connects again, never a failed job; and closing the client closes
the connections to the sentinels too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from kickq._model.config import SentinelUrl
from kickq._redis import compat

# the sentinels are asked once per new connection, and discovery moves on to the next sentinel
# when one does not answer: no retries of one sentinel (redis-py 7.2 would retry with backoff)
SENTINEL_DEFAULTS: dict[str, Any] = {
    "socket_connect_timeout": 2,
    "socket_timeout": 2,
    "socket_keepalive": True,
}
DEMOTED = "READONLY "  # anywhere in an error reply: the server is a replica now


class SentinelConnection(SentinelManagedConnection):
    """A connection to the master of the moment."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.ResponseError as exc:
            # a script's write refused by a replica (Redis 6.2 wraps the READONLY reply)
            if DEMOTED not in str(exc):
                raise
            self.disconnect()  # type: ignore[no-untyped-call]
            raise redis.ConnectionError(f"the master is now a replica ({exc})") from exc


class SentinelSSLConnection(SentinelConnection, redis.SSLConnection):
    """The same over TLS (redis_options={"ssl": True, ...})."""


def query_options(url: SentinelUrl) -> dict[str, Any]:
    """The options of the URL's query (timeouts, ...), read as redis-py reads a redis:// URL's,
    or ValueError naming the value it cannot read."""
    if not url.query:
        return {}
    options = compat.url_options(f"redis://localhost/{url.db}?{url.query}")
    return {k: v for k, v in options.items() if k not in ("db", "host", "port")}


def pool_class(base: type[redis.ConnectionPool]) -> type[SentinelConnectionPool]:
    """redis-py's SentinelConnectionPool, made a kickq `base` pool (connection.Pool: it adds
    a method, no state)."""
    return type("SentinelPool", (SentinelConnectionPool, base), {})


class SentinelClient(redis.Redis):
    """The master's client; close() also closes the connections to the sentinels."""

    sentinel_manager: Sentinel | None = None

    def close(self) -> None:
        super().close()
        manager = self.sentinel_manager
        if manager is not None:
            for node in manager.sentinels:
                node.close()


def connect(
    url: SentinelUrl,
    options: Mapping[str, Any],
    sentinel_options: Mapping[str, Any] | None,
    base_pool: type[redis.ConnectionPool],
) -> SentinelClient:
    """The client of the master `url` names: `options` for the connections to it (and the
    URL's password, user, database and query), `sentinel_options` for those to the sentinels
    (SENTINEL_DEFAULTS when not given). No I/O until its first command."""
    to_sentinels = {**SENTINEL_DEFAULTS, **(sentinel_options or {})}
    to_sentinels.setdefault("retry", Retry(NoBackoff(), 0))
    manager = Sentinel(list(url.sentinels), sentinel_kwargs=to_sentinels)
    query = query_options(url)
    master: dict[str, Any] = {**options, **query, "db": url.db}
    if url.username is not None:
        master["username"] = url.username
    if url.password is not None:  # the master's: the sentinels' is in sentinel_kwargs
        master["password"] = url.password
    tls = bool(master.pop("ssl", False))
    pool = pool_class(base_pool)(
        url.master,
        manager,
        connection_class=SentinelSSLConnection if tls else SentinelConnection,
        is_master=True,
        check_connection=False,
        **master,
    )
    client = SentinelClient(connection_pool=pool)
    client.auto_close_connection_pool = True
    client.sentinel_manager = manager
    return client
