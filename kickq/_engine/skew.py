"""How far this host's clock is from the Redis server's, and the correction of kickq's clock.

Deadlines are written on one process's clock and acted on by another's: a delayed job's time is
set by its creator and queued by any process's timer, a run's deadline is set by the worker that
claimed it and ghosted by any process. So the clocks must agree. Each process measures the
offset of its host's real clock from Redis's `TIME` (the reply taken to come half way through
the round trip) before its engine's first request, before its workers' first claim, after its
pub/sub connection is (re)confirmed and every CHECK_EVERY seconds on its timer thread: never
on the way of a job. An offset within BOUND is left alone. A larger one is logged once as a
WARNING naming the skew, and kickq's clock in this process (`_clock.now()`) is corrected by
it: every process then keeps Redis's time, whatever its host's clock says, and deadlines,
delays, ghosts, purges, schedule ticks and rate windows agree across processes to within
about two BOUNDs. The correction stays while the offset is above BOUND / 2, and is dropped
(logged at INFO) once it is below.

On a Redis Cluster, whose nodes each have a clock, every process measures against the node that
holds `<ns>:workers`, so every process of a namespace measures against the same clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from kickq._engine.heartbeats import HEARTBEAT
from kickq._model import clock
from kickq._redis.outage import ErrorReply, is_outage
from kickq._redis.store import Store

log = logging.getLogger("kickq")
BOUND = 0.5  # seconds a host's clock may be off Redis's before kickq corrects its own
CHECK_EVERY = HEARTBEAT  # seconds of real time between two checks on the timer thread
# a reply slower than this measures nothing: the offset would be unsure by half of it
MAX_ROUND_TRIP = 0.5
RETRY_SLOW = 1.0  # seconds until the next try after replies too slow to measure with
SAMPLES = 3  # round trips one measurement may take, the quickest used
# a change of the correction smaller than this is noise of the round trip: left alone
NOISE = 0.05

_lock = threading.Lock()  # orders the corrections of every engine of the process
_owner: ClockCheck | None = None  # the check whose correction `_clock.now()` applies


class ClockCheck:
    """The checks of one engine. `moved(seconds)` is called when its correction moves kickq's
    clock, for the local deadlines set before (waits, heartbeats) to move with it."""

    def __init__(self, store: Store, where: str, moved: Callable[[float], None]) -> None:
        self._store = store
        self._where = where
        self._moved = moved
        self._measuring = threading.Lock()
        self._measured = False  # once: the first measurement, or TIME refused for good
        self._next = 0.0  # real_monotonic() of the next periodic check
        self._warned: float | None = None  # the offset last warned of
        self._closed = False

    @property
    def measured(self) -> bool:
        return self._measured

    def soon(self) -> None:
        """Check at the timer's next turn: the connection was (re)made, maybe to another
        server (a failover)."""
        self._next = 0.0

    def ensure(self) -> None:
        """Measure now unless done already: before a first claim. Raises what Redis raised
        (the caller's loop backs off and tries again)."""
        if self._measured:
            return
        with self._measuring:
            if not self._measured:
                self._measure()

    def check_if_due(self) -> None:
        """The timer thread's periodic check; raises what Redis raised."""
        if self._next > clock.real_monotonic():
            return
        with self._measuring:
            self._measure()

    def close(self) -> None:
        """The engine stops: its correction is dropped unless a newer engine's replaced it."""
        global _owner
        with _lock:
            self._closed = True
            if _owner is self:
                _owner = None
                clock.set_offset(0.0)

    def _measure(self) -> None:
        try:
            round_trip, offset = self._sample()
        except ErrorReply as exc:
            if is_outage(exc):
                raise
            # TIME refused (an ACL without it, a proxy that does not pass it): nothing to
            # measure with, ever; kickq runs on the host's clock as it is
            if not self._measured:
                log.warning(
                    "cannot read the clock of the Redis server at %s (%s): this "
                    "process's clock is not checked against it",
                    self._where,
                    exc,
                )
            self._measured = True
            self._next = float("inf")
            return
        if round_trip > MAX_ROUND_TRIP and self._measured:
            self._next = clock.real_monotonic() + RETRY_SLOW
            return
        # a first measurement is taken however slow: unsure by half a slow round trip beats
        # a clock off by any amount
        self._apply(offset)
        self._measured = True
        self._next = clock.real_monotonic() + CHECK_EVERY

    def _sample(self) -> tuple[float, float]:
        """The quickest of up to SAMPLES round trips of TIME (the first may include making the
        connection): its length, and the offset it measured (seconds to add to the host's
        clock to read Redis's)."""
        best: tuple[float, float] | None = None
        for _ in range(SAMPLES):
            before = clock.host_time()
            seconds, micros = self._read_time()
            after = clock.host_time()
            taken = (after - before, int(seconds) + int(micros) / 1e6 - (before + after) / 2)
            if best is None or taken[0] < best[0]:
                best = taken
            if best[0] <= MAX_ROUND_TRIP:
                break
        assert best is not None
        return best

    def _read_time(self) -> Sequence[Any]:
        client: Any = self._store.client
        if self._store.cluster:
            node = client.get_node_from_key(self._store.keys.workers)
            return list(client.execute_command("TIME", target_nodes=node))
        return list(client.time())

    def _apply(self, offset: float) -> None:
        """Correct kickq's clock by the `offset` measured (seconds to add to the host's)."""
        global _owner
        with _lock:
            if self._closed:
                return
            current = clock.offset()
            keep = abs(offset) > BOUND or (current != 0.0 and abs(offset) > BOUND / 2)
            target = offset if keep else 0.0
            if target and current and abs(target - current) <= NOISE:
                target = current
            moved = clock.set_offset(target)
            _owner = self if target else None
        if target and (self._warned is None or abs(target - self._warned) > BOUND):
            self._warned = target
            log.warning(
                "this host's clock is %.3f s %s the clock of the Redis server at %s "
                "(more than %g s); kickq's clock in this process is corrected by %+.3f s, so "
                "that its delays and deadlines agree with every other process. Set this "
                "host's clock right (NTP).",
                abs(offset),
                "behind" if offset > 0 else "ahead of",
                self._where,
                BOUND,
                target,
            )
        elif not target and current:
            self._warned = None
            log.info(
                "this host's clock agrees with the Redis server's again (off by %.3f s); "
                "kickq's clock in this process is no longer corrected",
                abs(offset),
            )
        if moved:
            self._moved(moved)
