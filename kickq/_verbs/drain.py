"""drain(): wait until this process has nothing left to do, for tests (see kickq.testing).

"Nothing left to do" is read in Redis, for the job names this process's workers serve (or the
names given): no job queued, none delayed or waiting for a retry or ghost re-run whose time has
come by the Python clock, none processing. Jobs that come due later (a delay the test has not
moved the clock past yet) are not waited for, so a test can drain, move a frozen clock, and
drain again.

Two things keep the answer from coming too early:

- The read runs as a task of the dispatcher, behind every create this process issued before
  it: a job whose future has not resolved yet is in Redis by then.
- A handler's own creates are queued before its run ends, and the run stays `processing` in
  Redis until its end is written. So if the read finds that run ended, the handler's creates
  were queued before the read: ahead of the task (in Redis, counted) or behind it, where the
  task sees them waiting and the answer is "not yet".

Each read is one script call per partition (see scripts/pending.lua), a consistent snapshot of
every job of its names. The timeout counts real time, whatever freezegun does to the clocks.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import time
from collections.abc import Iterable

import attrs

from kickq._engine import runtime
from kickq._engine.future import KickqFuture, reject, resolve
from kickq._model import clock, config
from kickq._redis.outage import translate

POLL = 0.01  # seconds between two reads while something is left
MIN_READ = 0.1  # seconds one read may take even when the timeout is (nearly) up


@attrs.frozen
class Backlog:
    """What one read found left to do."""

    queued: int = 0
    due: int = 0  # delayed, retry or ghost jobs whose time has come
    running: int = 0
    unsent: int = 0  # requests of this process not yet sent to Redis

    @property
    def empty(self) -> bool:
        return not (self.queued or self.due or self.running or self.unsent)

    def __str__(self) -> str:
        parts = [f"{self.queued} queued", f"{self.due} due", f"{self.running} processing"]
        if self.unsent:
            parts.append(f"{self.unsent} requests of this process not yet sent to Redis")
        return ", ".join(parts)


def backlog(
    engine: runtime.Runtime, names: list[str], now: datetime.datetime
) -> KickqFuture[Backlog]:
    """What is left to do for `names` at `now`, read after every request queued before."""
    future: KickqFuture[Backlog] = KickqFuture()

    def read() -> None:
        try:
            if names:
                counts = engine.store.pending(names, clock.to_ms(now))
            else:  # nothing to count, but an unreachable Redis is still reported
                engine.store.client.ping()
                counts = (0, 0, 0)
        except BaseException as exc:
            reject(future, translate(exc, engine.where))
            return
        resolve(future, Backlog(*counts, unsent=engine.dispatcher.waiting()))

    engine.dispatcher.task(read, future.cancel)
    return future


def drain(
    timeout: float | datetime.timedelta = 10.0, *, names: Iterable[str] | None = None
) -> None:
    """Wait until nothing is left to do for the job names this process's workers serve.

    Returns once none of their jobs is queued, due now by the Python clock (delayed, or waiting
    for a retry or ghost re-run) or processing, in any process, and every job this process
    created before the call is saved. `names` waits for those names instead. Works under a
    frozen or moved freezegun clock: jobs due later are not waited for; move the clock past
    them and drain again. Raises TimeoutError after `timeout` seconds of real time, saying what
    is left, and RedisUnavailable when Redis cannot be reached.
    """
    seconds = config.check_duration("timeout", timeout)
    wanted = _checked_names(names)
    elapsed = clock.real_monotonic
    deadline = elapsed() + seconds
    while True:
        engine = runtime.get()
        serving = engine.served_names() if wanted is None else wanted
        left = _read(engine, serving, max(deadline - elapsed(), MIN_READ))
        if left is not None and left.empty:
            return
        if elapsed() >= deadline:
            what = f"no answer from {engine.where}" if left is None else f"still {left}"
            raise TimeoutError(
                f"kickq.testing.drain(): after {seconds:g} s, {what} "
                f"(job names: {', '.join(serving) or 'none'})"
            )
        if left is not None and left.due:
            engine.timer.nudge(0)  # promote them now, not on the timer's next round
        time.sleep(POLL)


def _read(engine: runtime.Runtime, names: list[str], timeout: float) -> Backlog | None:
    """One read, or None when it did not come back in time (or kickq was reset meanwhile)."""
    future = backlog(engine, names, clock.now())
    try:
        return future.result(timeout)
    except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
        future.cancel()
        return None


def _checked_names(names: Iterable[str] | None) -> list[str] | None:
    if names is None:
        return None
    listed = [names] if isinstance(names, str) else list(names)
    for name in listed:
        config.check_job_name(name)
    return list(dict.fromkeys(listed))
