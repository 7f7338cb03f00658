"""Script calls on a Redis Cluster: one pipeline, MOVED and ASK followed, failovers noticed.

The runner (runner.py) hands a batch's commands to `ClusterRoutes.send`, which sends them with
redis-py's cluster pipeline, told not to follow redirections itself: it would re-send the calls
of a node whose connection failed, one by one. A node's calls whose replies were lost come back
as Unanswered; calls redirected (not applied) are sent again, after the slot table is read
again. A change in the set of primaries is told to `on_failover`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import redis

from kickq._redis import compat
from kickq._redis.outage import NODE_DOWN, Unanswered

log = logging.getLogger("kickq")
REDIRECTS = 3  # rounds a cluster call redirected (MOVED, ASK) is sent again in, at most
# what a lost reply looks like in a cluster pipeline's results
_LOST = (redis.ConnectionError, redis.TimeoutError)


def _redirected(result: Any) -> bool:
    """A cluster node's answer that the call belongs elsewhere: it was not applied."""
    if isinstance(result, redis.exceptions.MovedError | redis.exceptions.AskError):
        return True
    return isinstance(result, redis.ResponseError) and str(result).startswith(("MOVED ", "ASK "))


def _still_redirected(result: Any) -> redis.exceptions.TryAgainError:
    """A call the cluster kept redirecting (not applied): the slot is moving, try later."""
    error = redis.exceptions.TryAgainError(
        f"TRYAGAIN the cluster still redirects this call after {REDIRECTS} tries ({result})"
    )
    error.__cause__ = result
    return error


def _unanswered(exc: BaseException) -> Unanswered:
    if isinstance(exc, Unanswered):
        return exc
    lost = Unanswered(f"a Redis Cluster node did not answer a call sent to it: {exc}")
    lost.__cause__ = exc
    return lost


class ClusterRoutes:
    """Where a cluster's calls go, as the client's slot table says, kept up to date."""

    def __init__(self, client: Any, on_failover: Callable[[], None]) -> None:
        self.client = client
        # called (from any thread) when the set of the cluster's primaries changed
        self._on_failover = on_failover
        self._layout: frozenset[str] = frozenset()
        self._layout = self._primaries()

    def send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """One result per command, in one pipeline (a round trip per node). It still retries
        the whole batch when it cannot get a node's connection, before anything is written.
        Calls redirected (MOVED, ASK: not applied) are sent again, after the slot table is
        read again and the slots the MOVED replies name are moved: a node asked for the table
        may not have heard of a failover yet, while the node that refused a call knows who
        serves its slot now. A call still redirected after REDIRECTS rounds comes back as a
        TryAgainError (an outage)."""
        results = self._round(commands)
        redirected = [i for i, r in enumerate(results) if _redirected(r)]
        if redirected:
            self.relearn()
        for _ in range(REDIRECTS):
            if not redirected:
                break
            self._follow([results[i] for i in redirected])
            again = self._round([commands[i] for i in redirected])
            for i, result in zip(redirected, again, strict=True):
                results[i] = result
            redirected = [i for i in redirected if _redirected(results[i])]
        for i in redirected:
            results[i] = _still_redirected(results[i])
        if any(isinstance(result, NODE_DOWN) for result in results):
            self.relearn()
        return [_unanswered(result) if isinstance(result, _LOST) else result for result in results]

    def _round(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        pipe: Any = self.client.pipeline(transaction=False)
        for command in commands:
            # a plain command: a cluster pipeline refuses pipe.evalsha, but routes this one by
            # the slot of its keys
            pipe.execute_command(*command)
        try:
            return compat.send_unredirected(pipe)
        except NODE_DOWN:
            self.relearn()
            raise

    def relearn(self) -> None:
        """A node that does not answer may have been failed over: read the slot table again so
        that the next calls go to the new primary. redis-py does this for single commands, but
        not when a pipeline's command reports the node down."""
        # when no node answers yet, the caller's retry comes back here
        with contextlib.suppress(Exception):
            self.client.nodes_manager.initialize()
        self._check_primaries()

    def _follow(self, redirects: Sequence[Any]) -> None:
        """Move each slot a MOVED reply names to the node it names, in the client's table."""
        manager: Any = self.client.nodes_manager
        for redirect in redirects:
            with contextlib.suppress(Exception):
                compat.follow_moved(manager, redirect)
        self._check_primaries()

    def _primaries(self) -> frozenset[str]:
        try:
            nodes = self.client.get_primaries()
        except Exception:
            return self._layout
        return frozenset(str(node.name) for node in nodes)

    def _check_primaries(self) -> None:
        """Tell `on_failover` when the set of primaries changed: what the old primary published
        last (a wake, a run's end, a timer's deadline) may never have crossed the cluster bus,
        and nothing else would say so."""
        layout = self._primaries()
        if layout == self._layout:
            return
        self._layout = layout
        try:
            self._on_failover()
        except Exception:
            log.exception("catching up after a failover failed")
