"""Every use kickq makes of redis-py's private names, and every difference between its versions.

kickq supports the redis-py versions `redis` names in pyproject.toml; CI runs the tests on the
lowest and on the newest of them. Each function here says how those versions behave where they
differ, and nothing outside this module reads a name of redis-py that starts with `_` or asks
which version it runs on, so an upgrade of redis-py touches this file (and its bounds) only.
"""

from __future__ import annotations

import socket
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

__all__ = [
    "Script",
    "follow_moved",
    "idle_and_ready",
    "is_noscript",
    "node_connection",
    "ready_to_send",
    "route_pipeline_like",
    "script_sha",
    "script_source",
    "scripts_routed_by_keys",
    "send_unredirected",
    "socket_of",
    "url_options",
]

# -- connections and their pool -------------------------------------------------------


def socket_of(connection: Any) -> socket.socket | None:
    """The connection's socket, None while it is not connected (every supported version keeps
    it in `_sock`)."""
    return getattr(connection, "_sock", None)


def ready_to_send(connection: Any) -> bool:
    """Connected, with nothing left to read: a command written on it now is answered next."""
    try:
        return socket_of(connection) is not None and not connection.can_read()
    except Exception:  # closed by the server: get_connection would reconnect it
        return False


# redis-py 7.2 to 8.1 connect (or reconnect) an idle connection inside `get_connection`, with
# nothing a pool can override to stop it; 8.2 and later do it in `ensure_connection`, which a
# pool can override (kickq's does: see connection.Pool)
_CONNECTS_IN_GET = not hasattr(redis.ConnectionPool, "ensure_connection")


def idle_and_ready(pool: Any) -> bool:
    """Whether `get_connection` has an idle connection to hand out, one that it would not
    connect first where it connects by itself (7.2 to 8.1): the one it takes next, the last of
    the list `_available_connections` in every supported version, is looked at under the
    pool's `_lock`, so that no other thread takes it (and reads from it) meanwhile."""
    with pool._lock:
        idle = pool._available_connections
        return bool(idle) and (not _CONNECTS_IN_GET or ready_to_send(idle[-1]))


def node_connection(pool: Any) -> Any:
    """A new connection to a cluster node, made as `pool` (that node's) makes its own, without
    the on-connect hook the cluster client gives its pooled connections (`redis_connect_func`
    in their options, in every supported version): a connection the caller owns."""
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k != "redis_connect_func"}
    return pool.connection_class(**kwargs)


# -- what a URL says ------------------------------------------------------------------------


def url_options(url: str) -> dict[str, Any]:
    """The options redis-py reads from a URL when it connects with it (db, timeouts, ...),
    or ValueError naming the query value it cannot read."""
    options: dict[str, Any] = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    return options


# -- scripts --------------------------------------------------------------------------------


def script_sha(script: Script) -> str:
    """The SHA1 of a script registered with `register_script`, computed when registered."""
    return str(script.sha)


def script_source(script: Script) -> Any:
    """The text of a script registered with `register_script`, as it was given."""
    return script.script


def is_noscript(result: Any) -> bool:
    """Whether a reply is the NOSCRIPT error of an EVALSHA (both parsers, every version)."""
    return isinstance(result, NoScriptError)


# -- Redis Cluster --------------------------------------------------------------------------


def scripts_routed_by_keys() -> dict[str, Any]:
    """The cluster client's option routing EVALSHA and EVAL by the keys they name: redis-py
    routes a command by its `policy_resolver`, and by default asks a node COMMAND GETKEYS for
    every EVALSHA queued in a cluster pipeline, a round trip more for each script call, on a
    connection of its own."""
    from redis._parsers.commands import CommandPolicies, RequestPolicy, ResponsePolicy
    from redis.commands.policies import PolicyResolver, StaticPolicyResolver

    keyed = CommandPolicies(RequestPolicy.DEFAULT_KEYED, ResponsePolicy.DEFAULT_KEYED)

    class ScriptsByKeys(PolicyResolver):
        def resolve(self, command_name: str) -> CommandPolicies | None:
            return keyed if command_name in ("evalsha", "eval") else None

        def with_fallback(self, fallback: PolicyResolver) -> PolicyResolver:
            return self

    return {"policy_resolver": StaticPolicyResolver(ScriptsByKeys())}


def route_pipeline_like(client: Any, pipe: Any) -> None:
    """Make a cluster pipeline route commands as its client does: redis-py 7.2 to 8.1 give a
    pipeline the default routing whatever `policy_resolver` the client has (8.2 and later
    pass it on)."""
    pipe._policy_resolver = client._policy_resolver


def send_unredirected(pipe: Any) -> list[Any]:
    """Send what a cluster pipeline queued; each result is a reply or the error it raised.
    Its `execute` would follow MOVED and ASK, and re-send a node's calls one by one when its
    connection failed: its execution strategy is told not to (a redirected call comes back as
    its redirection, not applied)."""
    strategy = pipe._execution_strategy
    try:
        return list(
            strategy.send_cluster_commands(
                strategy._command_queue, raise_on_error=False, allow_redirections=False
            )
        )
    finally:
        strategy.reset()


def _moved(result: Any) -> redis.exceptions.MovedError | None:
    """The MOVED reply `result` is, as redis-py's MovedError (a reply parsed without the
    cluster's error classes is a ResponseError with the text)."""
    if isinstance(result, redis.exceptions.MovedError):
        return result
    if isinstance(result, redis.ResponseError) and str(result).startswith("MOVED "):
        try:
            return redis.exceptions.MovedError(str(result)[len("MOVED ") :])
        except ValueError:
            return None
    return None


def follow_moved(manager: Any, result: Any) -> None:
    """When `result` is a MOVED reply, move the slot it names to the node it names in the
    cluster client's table (`manager`, its `nodes_manager`)."""
    moved = _moved(result)
    if moved is not None:
        manager.move_slot(moved)
