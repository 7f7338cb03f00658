"""Every use kickq makes of redis-py's private names, and every difference between its versions.

kickq supports the redis-py versions `redis` names in pyproject.toml; CI runs the tests on the
lowest and on the newest of them. Each function here says how those versions behave where they
differ, and nothing outside this module reads a name of redis-py that starts with `_` or asks
which version it runs on, so an upgrade of redis-py touches this file (and its bounds) only.
"""

from __future__ import annotations

import inspect
import socket
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

__all__ = [
    "Script",
    "follow_moved",
    "get_connection",
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


# redis-py 5.0 to 8.1 connect (or reconnect) an idle connection inside `get_connection`, with
# nothing a pool can override to stop it; 8.2 and later do it in `ensure_connection`, which a
# pool can override (kickq's does: see connection.Pool)
_CONNECTS_IN_GET = not hasattr(redis.ConnectionPool, "ensure_connection")


# redis-py 5.0 to 5.2 require a command name (which they do not use); 5.3 and later take none,
# and warn (DeprecationWarning) when given one
_GET_NEEDS_NAME = (
    inspect.signature(redis.ConnectionPool.get_connection).parameters["command_name"].default
    is inspect.Parameter.empty
)


def get_connection(pool: Any) -> Any:
    """A connection of the pool, connected and checked, as redis-py hands one out."""
    if _GET_NEEDS_NAME:
        return pool.get_connection("_")
    return pool.get_connection()


def idle_and_ready(pool: Any) -> bool:
    """Whether `get_connection` has an idle connection to hand out, one that it would not
    connect first where it connects by itself (before 8.2): the one it takes next, the last of
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
    """The cluster client's option routing EVALSHA and EVAL by the keys they name. redis-py
    7.1 and later route a command by its `policy_resolver`, and ask a node COMMAND GETKEYS
    for every EVALSHA queued in a cluster pipeline otherwise: a round trip more for each
    script call, on a connection of its own. Older versions route them so already ({})."""
    try:
        from redis._parsers.commands import CommandPolicies, RequestPolicy, ResponsePolicy
        from redis.commands.policies import PolicyResolver, StaticPolicyResolver
    except ImportError:
        return {}
    keyed = CommandPolicies(RequestPolicy.DEFAULT_KEYED, ResponsePolicy.DEFAULT_KEYED)

    class ScriptsByKeys(PolicyResolver):
        def resolve(self, command_name: str) -> CommandPolicies | None:
            return keyed if command_name in ("evalsha", "eval") else None

        def with_fallback(self, fallback: PolicyResolver) -> PolicyResolver:
            return self

    return {"policy_resolver": StaticPolicyResolver(ScriptsByKeys())}


def route_pipeline_like(client: Any, pipe: Any) -> None:
    """Make a cluster pipeline route commands as its client does: redis-py 7.1 to 8.1 give a
    pipeline the default routing whatever `policy_resolver` the client has (8.2 and later
    pass it on; before 7.1 there is none)."""
    resolver = getattr(client, "_policy_resolver", None)
    if resolver is not None and hasattr(pipe, "_policy_resolver"):
        pipe._policy_resolver = resolver


def send_unredirected(pipe: Any) -> list[Any]:
    """Send what a cluster pipeline queued; each result is a reply or the error it raised.
    redis-py 6.2 and later are told not to follow MOVED and ASK (such a call comes back as
    its redirection: not applied), nor to re-send a node's calls one by one when its
    connection failed; before 6.2 the pipeline's `execute` follows them itself."""
    strategy = getattr(pipe, "_execution_strategy", None)
    if strategy is None or not hasattr(strategy, "_command_queue"):
        return list(pipe.execute(raise_on_error=False))
    try:
        return list(
            strategy.send_cluster_commands(
                strategy._command_queue, raise_on_error=False, allow_redirections=False
            )
        )
    finally:
        strategy.reset()


def _moved(result: Any) -> redis.exceptions.MovedError | None:
    """The MOVED reply `result` is, as redis-py's MovedError (some give it as plain text)."""
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
    cluster client's table (`manager`, its `nodes_manager`): redis-py 7.2 and later with
    `move_slot`; before, the next lookup of the slot applies the redirection it was told of."""
    moved = _moved(result)
    if moved is None:
        return
    if hasattr(manager, "move_slot"):
        manager.move_slot(moved)
    else:
        manager.update_moved_exception(moved)
        manager.get_node_from_slot(moved.slot_id)
