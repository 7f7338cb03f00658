"""Which Redis: explicit connection options > KICKQ_REDIS_URL > the embedded server.

Builds the process's one client (one connection pool; on a Redis Cluster, one per node; with
Sentinel, one pool whose connections go to the master of the moment: see sentinel.py). With
the embedded server, connecting is what starts it, so the server comes up on first use in a
background thread, and comes back if it was stopped while kickq was running.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from kickq._model import config
from kickq._model.errors import ConfigError, RedisUnavailable
from kickq._redis import compat, embedded, sentinel
from kickq._redis.outage import translate

ENV_URL = "KICKQ_REDIS_URL"
ENV_CLUSTER = "KICKQ_REDIS_CLUSTER"
Client = redis.Redis | redis.RedisCluster

# kickq reads replies as text and speaks RESP2 on every connection, the pub/sub one included.
# Bytes that are not UTF-8 (a hand-edited record) decode to lone surrogates instead of raising
# in the middle of a reply; record.from_record then reports the record as damaged.
FORCED = {"decode_responses": True, "protocol": 2, "encoding_errors": "surrogateescape"}
# socket_timeout: how long a reply may take before kickq gives up on it. redis-py 8 reads with
# 5 s and then re-sends the command; a Redis that stalls a few seconds (a fork for a snapshot on
# a big dataset, a slow script, DEBUG SLEEP, a network path that drops packets for a while)
# would then see calls it may already have applied sent again. 30 s makes such a stall a slow
# reply, while a server that is truly gone is still noticed within a process_timeout (60 s by
# default) and, on TCP, by keepalive; script calls are never re-sent (see Store.run_batch), so
# the timeout only decides when kickq stops waiting. A user's redis_options still win.
DEFAULTS = {"socket_connect_timeout": 5, "socket_timeout": 30, "health_check_interval": 0}
TCP_DEFAULTS = {"socket_keepalive": True}  # unix-socket connections refuse this argument
SERVER_OPTIONS = frozenset({"redis_url", "redis_host", "redis_port", "redis_password"})

# Set by kickq.testing's plugin in a test session: called with where a new client would connect
# (its URL, else `describe`'s words), it raises to refuse. None everywhere else.
connect_guard: Callable[[str], None] | None = None


class _WouldConnect(Exception):
    """The connection is not ready to send now: handing it out would mean connecting."""


_quick = threading.local()


class Pool(redis.ConnectionPool):
    """redis-py's pool, which can also hand out a connection only when it is ready at once."""

    def idle_connection(self) -> redis.connection.AbstractConnection | None:
        """An idle connection, connected and with nothing left to read, or None: never
        connects (a caller's thread writes a lone create on it, and must not wait)."""
        if not compat.idle_and_ready(self):
            return None
        _quick.active = True
        try:
            return self.get_connection()
        except Exception:  # it had gone bad, or is not connected: left in the pool as it was
            return None
        finally:
            _quick.active = False

    def ensure_connection(self, connection: Any) -> None:
        """redis-py 8.2 and later connect the connection get_connection hands out here."""
        if getattr(_quick, "active", False):
            if not compat.ready_to_send(connection):
                raise _WouldConnect  # get_connection puts it back
            return
        super().ensure_connection(connection)


class EmbeddedConnection(redis.UnixDomainSocketConnection):
    """A unix-socket connection that starts the embedded server when it is not answering."""

    def connect(self) -> None:
        if compat.socket_of(self) is None and not os.path.exists(self.path):
            # start it now: a connect to a missing socket first sits out redis-py's retries
            embedded.ensure_running()
        try:
            super().connect()  # type: ignore[no-untyped-call]
        except redis.ConnectionError:
            embedded.ensure_running()
            super().connect()  # type: ignore[no-untyped-call]


def check_redis_url(name: str, url: str) -> str:
    """A Redis URL whose every part kickq can use: `config.check_url_parts`, then redis-py's own
    reading of its query (db, timeouts, ...), which it does when it connects; ConfigError
    naming the part, and the URL without its password."""
    url = config.check_url_parts(name, url)
    where = f"{name} {config.redacted(url)!r}"
    try:
        if url.startswith(config.SENTINEL_SCHEME):
            sentinel.query_options(config.sentinel_parts(name, url))
            return url
        query = compat.url_options(url)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if query.get("db", 0) < 0:
        raise ConfigError(f"{where}: its database {query['db']} is negative")
    return url


def _checked_url(name: str, value: Any) -> str | None:
    url = config.OPTIONS["redis_url"].check(name, value)
    return None if url is None else check_redis_url(name, url)


CONFIG_OPTIONS = {
    **config.OPTIONS,
    "redis_url": attrs.evolve(config.OPTIONS["redis_url"], check=_checked_url),
}
"""What kickq.config() validates with: config.OPTIONS, the URL also read as redis-py reads it
(the pure model leaves that to this layer, which has redis-py)."""


def describe(settings: Mapping[str, Any], explicit: set[str]) -> str:
    """Which server kickq talks to, for logs and errors (without the password)."""
    if settings["redis_url"]:
        return str(settings["redis_url"]).split("@")[-1]
    if explicit & SERVER_OPTIONS:
        return f"{settings['redis_host']}:{settings['redis_port']}"
    if os.environ.get(ENV_URL):
        return os.environ[ENV_URL].split("@")[-1]
    return f"embedded redis at {embedded.socket_path()}"


def is_cluster(settings: Mapping[str, Any]) -> bool:
    """`cluster` in redis_options when given there, else KICKQ_REDIS_CLUSTER (1, true, yes)."""
    options = settings["redis_options"] or {}
    if "cluster" in options:
        return bool(options["cluster"])
    return os.environ.get(ENV_CLUSTER, "").strip().lower() in ("1", "true", "yes")


def connect(settings: Mapping[str, Any], explicit: set[str]) -> Client:
    """The client for the configured server. No I/O happens until its first command, but on a
    Redis Cluster, where making the client reads the cluster's layout from its first node."""
    given = settings["redis_options"] or {}
    extra = {k: v for k, v in given.items() if k not in ("cluster", "sentinel_kwargs")}
    options: dict[str, Any] = {**DEFAULTS, **extra, **FORCED}
    url = settings["redis_url"] or (None if explicit & SERVER_OPTIONS else os.environ.get(ENV_URL))
    if url and not settings["redis_url"]:  # config() checked its own; the environment's now
        url = check_redis_url(ENV_URL, url)
    if connect_guard is not None:
        connect_guard(str(url) if url else describe(settings, explicit))
    sentinels = bool(url) and str(url).startswith(config.SENTINEL_SCHEME)
    if is_cluster(settings):
        if sentinels:
            raise ConfigError(
                "a redis+sentinel:// URL names a master that Sentinel watches, not a Redis "
                "Cluster: drop redis_options['cluster'] (or KICKQ_REDIS_CLUSTER)"
            )
        return _connect_cluster(settings, explicit, url, options)
    options = {"retry": _quick_retry(), **options}
    if sentinels:
        parts = config.sentinel_parts(ENV_URL, str(url))
        return sentinel.connect(
            parts, {**TCP_DEFAULTS, **options}, given.get("sentinel_kwargs"), Pool
        )
    if url:
        tcp = not str(url).startswith("unix:")
        client = redis.Redis.from_url(url, **({**TCP_DEFAULTS, **options} if tcp else options))
        return _with_idle_connections(client)
    if explicit & SERVER_OPTIONS:
        client = redis.Redis(
            host=settings["redis_host"],
            port=settings["redis_port"],
            password=settings["redis_password"],
            **{**TCP_DEFAULTS, **options},
        )
        return _with_idle_connections(client)
    pool = Pool(connection_class=EmbeddedConnection, path=str(embedded.socket_path()), **options)
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # else close() leaves the pool's sockets open
    return client


def _with_idle_connections(client: redis.Redis) -> redis.Redis:
    """The client, its pool made a `Pool`: redis-py builds the pool from the options (the
    connection class for ssl and the rest), which kickq keeps; Pool adds a method, no state."""
    if type(client.connection_pool) is redis.ConnectionPool:
        client.connection_pool.__class__ = Pool
    return client


def _quick_retry() -> Retry:
    """redis-py's own retry of a command whose connection failed: a few quick tries, so that
    a dropped connection is mended at once but a server that refuses kickq (a wrong password)
    or is down says so in well under a second; kickq's loops wait out longer outages."""
    return Retry(ExponentialBackoff(cap=0.2, base=0.02), 3)


def _connect_cluster(
    settings: Mapping[str, Any], explicit: set[str], url: str | None, options: dict[str, Any]
) -> redis.RedisCluster:
    if url is None and not explicit & SERVER_OPTIONS:
        raise ConfigError(
            "a Redis Cluster needs the address of one of its nodes: set redis_url (or "
            "redis_host and redis_port, or KICKQ_REDIS_URL); the embedded Redis is one node"
        )
    if url is not None and str(url).startswith("unix:"):
        raise ConfigError("a Redis Cluster needs a redis:// or rediss:// URL, not unix://")
    options = {**TCP_DEFAULTS, **compat.scripts_routed_by_keys(), **options}
    try:
        if url is not None:
            return Cluster.from_url(str(url), **options)
        return Cluster(
            host=settings["redis_host"],
            port=settings["redis_port"],
            password=settings["redis_password"],
            **options,
        )
    except (redis.RedisError, redis.exceptions.RedisClusterException, OSError) as exc:
        where = describe(settings, explicit)
        raise RedisUnavailable(f"Redis Cluster at {where} cannot be reached: {exc}") from exc


class Cluster(redis.RedisCluster):
    """redis-py's cluster client, whose pipelines route scripts as the client does (see
    compat.route_pipeline_like)."""

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[no-untyped-call]
        compat.route_pipeline_like(self, pipe)
        return pipe

    def close(self) -> None:
        """Close every node's connections now. Made from a URL, redis-py's cluster client gives
        each node a pool that node's client does not own, so close() alone leaves the sockets
        open until the garbage collector finds them (kickq.reset() would leak them)."""
        super().close()
        manager = getattr(self, "nodes_manager", None)  # unset if __init__ failed early
        if manager is None:
            return
        for node in list(manager.nodes_cache.values()):
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()


def check_reachable(settings: Mapping[str, Any], explicit: set[str]) -> None:
    """One PING on a client of its own, closed afterwards; the error a user sees (see
    outage.translate) when Redis cannot be reached or refuses kickq."""
    client = connect(settings, explicit)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise translate(exc, describe(settings, explicit)) from exc
    finally:
        client.close()


def pubsub_connector(client: Client) -> Callable[[], redis.connection.AbstractConnection]:
    """Makes the process's pub/sub connection, a connection of the same kind as the client's,
    owned by the caller. On a cluster (where PUBLISH reaches every node) each call takes the
    next primary, so a reconnect moves on from a node that went away; with Sentinel, each
    connect asks the sentinels for the master (a SentinelConnection), so a reconnect after a
    failover reaches the new one."""
    if not isinstance(client, redis.RedisCluster):
        pool = client.connection_pool
        return lambda: pool.connection_class(**pool.connection_kwargs)
    turn = itertools.count()

    def connect_to_next_node() -> redis.connection.AbstractConnection:
        nodes = client.get_primaries()  # type: ignore[no-untyped-call]
        node = nodes[next(turn) % len(nodes)]
        pool = client.get_redis_connection(node).connection_pool
        return compat.node_connection(pool)  # type: ignore[no-any-return]

    return connect_to_next_node
