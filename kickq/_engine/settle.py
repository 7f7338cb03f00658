"""Creates whose reply was lost, settled exactly once Redis answers again.

A create call that went out but whose reply never came (`Unanswered`: the connection failed or
timed out after the send began) may or may not have saved its jobs. Its futures stay pending;
the settler asks Redis, with one `settle.lua` call per create call, whether each job's record
exists. A job that exists resolves as a normal create would; one that does not is fenced, so
that the lost call, should it still reach Redis, can never save it, and its future fails with
RedisUnavailable ("nothing was stored"). Job ids are kickq's own, random: no other create uses
them, so the record's presence is the whole answer.

The settle calls run as dispatcher tasks, one round trip for every create waiting, retried with
the backoff of every kickq loop until Redis answers. `kickq.reset()` cancels the futures still
waiting: whether their jobs were stored is then unknown.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from kickq._model.errors import RedisUnavailable
from kickq._redis.outage import LoopBackoff, is_outage, translate
from kickq._redis.store import Store

log = logging.getLogger("kickq")


class Unsettled(Protocol):
    """A create call whose reply was lost: the ids of its jobs and what to tell them."""

    @property
    def job_ids(self) -> Sequence[str]: ...

    def settled(self, results: Sequence[BaseException | int]) -> None:
        """One result per job: 1 when saved, else the error its future fails with."""

    def cancelled(self) -> None: ...


class Settler:
    def __init__(
        self,
        store: Store,
        where: str,
        task: Callable[[Callable[[], None], Callable[[], object]], None],
    ) -> None:
        self._store = store
        self._where = where
        self._task = task  # queues work on the dispatcher thread
        self._lock = threading.Lock()
        self._waiting: list[Unsettled] = []
        self._timer: threading.Timer | None = None
        self._scheduled = False  # an attempt is queued or timed
        self._stopped = False
        self._retry = LoopBackoff("settling creates whose reply was lost", log)

    def add(self, unsettled: Unsettled) -> None:
        """Settle these creates as soon as Redis answers (called on the dispatcher thread)."""
        with self._lock:
            if not self._stopped:
                self._waiting.append(unsettled)
                self._schedule(0.0)
                return
        unsettled.cancelled()

    def pending(self) -> int:
        """How many create calls wait to be settled."""
        with self._lock:
            return len(self._waiting)

    def stop(self) -> None:
        """Cancel every create still waiting (kickq.reset): its outcome is then unknown."""
        with self._lock:
            self._stopped = True
            waiting, self._waiting = self._waiting, []
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        for unsettled in waiting:
            unsettled.cancelled()

    def _schedule(self, delay: float) -> None:
        """Under the lock: queue the next attempt after `delay` seconds, unless one is."""
        if self._scheduled or self._stopped:
            return
        self._scheduled = True
        if delay <= 0:
            self._task(self._attempt, self.stop)
            return
        self._timer = threading.Timer(delay, self._task, (self._attempt, self.stop))
        self._timer.name = "kickq-settle"
        self._timer.daemon = True
        self._timer.start()

    def _attempt(self) -> None:
        with self._lock:
            self._scheduled, self._timer = False, None
            batch, self._waiting = self._waiting, []
        if not batch:
            return
        calls = [self._store.settle_call(unsettled.job_ids) for unsettled in batch]
        try:
            replies: list[Any] = self._store.run_batch(calls)
        except Exception as exc:  # Redis still away: every one waits for the next attempt
            self._again(batch, self._retry.failed(exc))
            return
        later: list[Unsettled] = []
        failure: BaseException | None = None
        for unsettled, reply in zip(batch, replies, strict=True):
            if isinstance(reply, BaseException) and is_outage(reply):
                later.append(unsettled)
                failure = reply
            elif isinstance(reply, BaseException):  # not an outage: no answer will come
                log.error("settling a create failed", exc_info=reply)
                error = translate(reply, self._where)
                unsettled.settled([error] * len(unsettled.job_ids))
            else:
                unsettled.settled([self._result(found) for found in reply])
        if failure is None:
            self._retry.succeeded()
        else:
            self._again(later, self._retry.failed(failure))

    def _result(self, found: Any) -> BaseException | int:
        if int(found) == 1:
            return 1
        return RedisUnavailable(
            f"Redis at {self._where} did not answer the create in time; nothing was stored"
        )

    def _again(self, batch: list[Unsettled], delay: float) -> None:
        with self._lock:
            if not self._stopped:
                self._waiting[:0] = batch
                self._schedule(delay)
                return
        for unsettled in batch:
            unsettled.cancelled()
