"""The client of a master that Redis Sentinel watches (a `redis+sentinel://` URL).

One pool per process, redis-py's SentinelConnectionPool: each new connection asks the sentinels
where the master is now, so that after a failover the next connect reaches the new one. What
kickq adds: the pool is also a `connection.Pool` (a lone create can take an idle connection); a
connection that finds its server demoted to a replica drops itself however the READONLY reply
came (redis-py notices a bare one, not one wrapped in a script error as Redis 6.2 sends it), so
that kickq meets an outage and connects again, never a failed job; and closing the client closes
the connections to the sentinels too.

A connection already open stays on the old master until that server is demoted, and Sentinel
demotes a live old master (after `SENTINEL FAILOVER`, or one that comes back) only when it next
looks at it, up to about 10 s later: writes it takes meanwhile are acknowledged and then lost
when it resyncs as a replica. So each process also listens, on one sentinel, for the
`+switch-master` announcement (MasterWatch, a thread started with the pool's first connection):
on it the pool's master address is the new one, idle connections close, busy ones close when
they come back (the pool no longer owns them) and the pub/sub connection, which is never given
back, drops on its next read. Everything then reconnects through the sentinels.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
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
SWITCH_MASTER = "+switch-master"  # "<name> <old ip> <old port> <new ip> <new port>"
WATCH_RETRY = 1.0  # seconds between sentinels when the watch loses one

log = logging.getLogger("kickq")


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

    def can_read(self, timeout: float = 0) -> bool:
        # the pub/sub connection reads for ever and is never given back to the pool: it learns
        # of a switch here (a pooled one learns of it here too when it is handed out)
        master = self.connection_pool.master_address
        if master is not None and self._sock is not None and (self.host, self.port) != master:
            self.disconnect()
            raise redis.ConnectionError(f"the master moved to {master[0]}:{master[1]}")
        return bool(super().can_read(timeout))


class SentinelSSLConnection(SentinelConnection, redis.SSLConnection):
    """The same over TLS (redis_options={"ssl": True, ...})."""


def query_options(url: SentinelUrl) -> dict[str, Any]:
    """The options of the URL's query (timeouts, ...), read as redis-py reads a redis:// URL's,
    or ValueError naming the value it cannot read."""
    if not url.query:
        return {}
    options = compat.url_options(f"redis://localhost/{url.db}?{url.query}")
    return {k: v for k, v in options.items() if k not in ("db", "host", "port")}


class MasterWatch:
    """Hears `+switch-master` for one master on one sentinel at a time and points the pool at
    the new master at once (see the module's notes). Where no sentinel answers it retries each
    second; the pool's own discovery, on each connect, still works without it."""

    def __init__(self, pool: SentinelConnectionPool) -> None:
        self._pool = pool
        self._stop = threading.Event()
        self._pid = 0
        self._lock = threading.Lock()

    def ensure_started(self) -> None:
        if self._pid == os.getpid() or self._stop.is_set():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()  # a forked child starts its own
            threading.Thread(target=self._run, name="kickq-sentinel-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        manager = self._pool.sentinel_manager
        while not self._stop.is_set():
            for node in list(manager.sentinels):
                if self._stop.is_set():
                    return
                try:
                    self._listen(node)
                except Exception as exc:  # never dies
                    log.debug("sentinel watch: %r; trying the next sentinel", exc)
                if self._stop.wait(WATCH_RETRY):
                    return

    @staticmethod
    def own_client(node: redis.Redis) -> redis.Redis:
        """A client of sentinel `node` (its connection class, for TLS, and options) with a pool
        of its own, closed only by the watch: closing kickq's client closes the sentinels'
        pools from another thread, which must never wait for the watch to let go of a lock."""
        pool = node.connection_pool
        own = redis.ConnectionPool(connection_class=pool.connection_class, **pool.connection_kwargs)
        return redis.Redis(connection_pool=own)

    def _listen(self, node: redis.Redis) -> None:
        own = self.own_client(node)
        pubsub = own.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(SWITCH_MASTER)
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is not None:
                    self.heard(message["data"])
        finally:
            pubsub.close()
            own.connection_pool.disconnect()

    def heard(self, data: bytes | str) -> None:
        """A `+switch-master` message: when it names this pool's master, the pool follows."""
        text = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
        fields = text.split()
        if len(fields) != 5 or fields[0] != self._pool.service_name or not fields[4].isdigit():
            return
        address = (fields[3], int(fields[4]))
        if self._pool.master_address == address:
            return
        log.warning(
            "Sentinel moved master %s from %s:%s to %s:%s: reconnecting", *fields[:3], *address
        )
        self._pool.proxy.master_address = address
        self._pool.disconnect(inuse_connections=False)


def pool_class(base: type[redis.ConnectionPool]) -> type[SentinelConnectionPool]:
    """redis-py's SentinelConnectionPool, made a kickq `base` pool (connection.Pool: it adds
    a method, no state), that starts a MasterWatch with its first connection."""

    def make_connection(self: Any) -> Any:
        self.watch.ensure_started()
        return SentinelConnectionPool.make_connection(self)

    return type(
        "SentinelPool", (SentinelConnectionPool, base), {"make_connection": make_connection}
    )


class SentinelClient(redis.Redis):
    """The master's client; close() also closes the connections to the sentinels."""

    sentinel_manager: Sentinel | None = None

    def __del__(self) -> None:
        # redis-py closes a client's pool when it is collected; at interpreter exit, kickq's
        # daemon threads are frozen wherever they were, maybe holding that pool's lock
        if not sys.is_finalizing():
            super().__del__()  # type: ignore[no-untyped-call]

    def close(self) -> None:
        super().close()
        watch = getattr(self.connection_pool, "watch", None)
        if watch is not None:
            watch.stop()
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
    pool.watch = MasterWatch(pool)  # type: ignore[attr-defined]
    client = SentinelClient(connection_pool=pool)
    client.auto_close_connection_pool = True
    client.sentinel_manager = manager
    return client
