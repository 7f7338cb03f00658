"""Runs script calls: a batch in one round trip, each call sent once, a lost reply Unanswered.

Scripts are registered with redis-py (`register_script`, see lua.py), which owns their SHA.
Batches of calls go out in one round trip as plain EVALSHA: redis-py's own pipeline path asks
SCRIPT EXISTS before every execute, a second round trip on the hottest path, so a batch instead
re-sends only the calls that came back NOSCRIPT, as EVAL with the script's text, which caches it
on that node. No script call is ever sent twice otherwise (see `run_batch`): a call whose reply
was lost may have been applied, and only its caller can tell (a create by its job's id,
`Store.settle_call`). On a Redis Cluster the calls go through routing.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import redis

from kickq._redis import compat
from kickq._redis.connection import Client
from kickq._redis.outage import Unanswered
from kickq._redis.routing import ClusterRoutes

ScriptCall = tuple[compat.Script, Sequence[str], Sequence[Any]]
WRITE_AT_ONCE = 65536  # bytes `ScriptRunner.write` sends from a caller's thread at most


def _command(call: ScriptCall, with_text: bool) -> tuple[Any, ...]:
    script, keys, args = call
    if with_text:
        return ("EVAL", compat.script_source(script), len(keys), *keys, *args)
    return ("EVALSHA", compat.script_sha(script), len(keys), *keys, *args)


def checked(results: Sequence[Any]) -> list[Any]:
    """The replies of a pipeline, or the first error among them raised."""
    for result in results:
        if isinstance(result, Exception):
            raise result
    return list(results)


@attrs.define(eq=False)
class Written:
    """Script calls written on a pooled connection whose replies are still to be read."""

    calls: Sequence[ScriptCall]
    commands: list[tuple[Any, ...]]
    connection: Any
    pool: Any
    error: BaseException | None = None  # the write failed: all or part of it may have gone out
    released: bool = False

    def abandon(self) -> None:
        """Give the connection back unread (its replies can never be matched): closed."""
        if not self.released:
            self.connection.disconnect()
            self.release()

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.pool.release(self.connection)


class ScriptRunner:
    """Sends script calls to a single server or, with `cluster`, to a cluster's nodes."""

    def __init__(self, client: Client, cluster: bool = False) -> None:
        self.client = client
        self.cluster = cluster
        # called (from any thread) when the set of a cluster's primaries changed
        self.on_failover: Callable[[], None] = lambda: None
        self._routes = ClusterRoutes(client, lambda: self.on_failover()) if cluster else None

    def run(self, call: ScriptCall) -> Any:
        """The result of one call; an error it gave is raised."""
        result = self.run_batch([call])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def run_all(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run script calls in one round trip; the first error among them is raised."""
        return checked(self.run_batch(calls))

    def run_batch(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run script calls in one round trip; each result is a value or the exception raised.

        Each call is sent at most once. Raises `Unanswered` when the connection failed or timed
        out after the send began (Redis may have applied any of the calls), any other
        connection error only when nothing was sent. On a Redis Cluster the calls of one node
        whose reply was lost come back as `Unanswered` results instead, the others' as usual.
        """
        if not calls:
            return []
        return self._reloaded(calls, self._send(calls))

    def write(self, calls: Sequence[ScriptCall]) -> Written | None:
        """Write script calls now, on an idle connection of a single server's pool, for
        `finish` to read their replies, maybe on another thread; None when no connection is
        idle and connected (connecting could block the caller) or on a Redis Cluster. An error
        of the write is kept for `finish`: some of it may have gone out."""
        if self.cluster:
            return None
        pool: Any = self.client.connection_pool  # type: ignore[union-attr]
        take = getattr(pool, "idle_connection", None)  # kickq's pool (connection.Pool)
        conn = None if take is None else take()
        if conn is None:
            return None
        written = Written(calls, [_command(call, False) for call in calls], conn, pool)
        try:
            packed = conn.pack_commands(written.commands)
        except Exception:  # an argument redis-py refuses: the usual path fails the call
            written.release()
            return None
        if sum(len(part) for part in packed) > WRITE_AT_ONCE:
            written.release()  # the kernel may not take it all at once: the caller would wait
            return None
        try:
            conn.send_packed_command(packed, check_health=False)
        except BaseException as exc:
            written.error = exc
        return written

    def finish(self, written: Written) -> list[Any]:
        """The results of calls `write` sent, as `run_batch` gives them (it raises alike)."""
        return self._reloaded(written.calls, self._read(written))

    def _reloaded(self, calls: Sequence[ScriptCall], results: list[Any]) -> list[Any]:
        missing = [i for i, result in enumerate(results) if compat.is_noscript(result)]
        if missing:
            # EVAL loads the script on the node that lacked it, and on no other: SCRIPT LOAD
            # goes to every primary of a cluster, so one that is down would fail the batch
            # and throw away what the other calls did (a claim's jobs, left to ghost).
            try:
                retried = self._send([calls[i] for i in missing], with_text=True)
            except Exception as exc:  # the answers in hand stand; only these calls failed
                retried = [exc] * len(missing)
            for i, result in zip(missing, retried, strict=True):
                results[i] = result
        return results

    def _send(self, calls: Sequence[ScriptCall], with_text: bool = False) -> list[Any]:
        if self._routes is not None:
            return self._routes.send([_command(call, with_text) for call in calls])
        # Written on one pooled connection, one reply read each: redis-py's pipeline would
        # send them all again after a timeout or a dropped connection (its Retry), and costs
        # more Python per call.
        pool: Any = self.client.connection_pool  # type: ignore[union-attr]
        conn = pool.get_connection()  # connects and checks it: a failure here sent nothing
        written = Written(calls, [_command(call, with_text) for call in calls], conn, pool)
        try:
            conn.send_packed_command(conn.pack_commands(written.commands), check_health=False)
        except BaseException as exc:
            written.error = exc
        return self._read(written)

    @staticmethod
    def _read(written: Written) -> list[Any]:
        """One reply per call written; the connection goes back to its pool either way."""
        conn, commands = written.connection, written.commands
        results: list[Any] = []
        try:
            if written.error is not None:
                raise written.error
            for _ in commands:
                try:
                    results.append(conn.read_response())
                except redis.ResponseError as exc:  # an error reply: that call's result
                    results.append(exc)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            conn.disconnect()  # replies may still come: never read them as the next ones'
            raise Unanswered(
                f"Redis did not answer {len(commands) - len(results)} of {len(commands)} "
                f"script calls sent ({type(exc).__name__}: {exc}); they may have been applied"
            ) from exc
        except BaseException:
            conn.disconnect()
            raise
        finally:
            written.release()
        return results
