"""Futures waiting for jobs to finish: hotjobs, and any job awaited by its id.

A wait listens on the job's done channel and re-reads the record whenever its subscription is
(re)confirmed, so a job that finished before the subscription, or while the pub/sub connection
was down, still resolves the wait. Timeouts are deadlines on the kickq clock, expired by the
sweeper's tick.
"""

from __future__ import annotations

import datetime
import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import InvalidStateError

import attrs

from . import _clock as clock
from ._errors import DamagedRecord, HotjobTimeout, JobNotFound
from ._future import KickqFuture
from ._job import Job, State, failure, from_event
from ._keys import Keys
from ._listener import Listener, Subscription
from ._outage import is_outage
from ._store import Damaged, Store, StoredJob

Schedule = Callable[[Callable[[], None]], None]
FINISHED = (State.SUCCESS.value, State.FAIL.value)
TIMEOUT, RECHECK = "timeout", "recheck"
RECHECK_AFTER = datetime.timedelta(seconds=0.5)
DAMAGED = "damaged"  # on the done channel: the record was set aside


@attrs.define(eq=False)
class Waiter:
    job_id: str
    future: KickqFuture[Job]
    deadline: datetime.datetime | None
    created: bool
    subscribed: bool = False
    subscription: Subscription | None = None
    # a hotjob created here re-reads its record a little later, not at once: see `_ready`
    defer_check: bool = False


class Waits:
    def __init__(
        self,
        listener: Listener,
        store: Store,
        schedule: Schedule,
        on_deadline: Callable[[datetime.datetime], None] = lambda when: None,
    ) -> None:
        self._listener = listener
        self._store = store
        self._keys: Keys = store.keys
        self._schedule = schedule
        self.on_deadline = on_deadline  # tells the timer thread of a new deadline
        self._lock = threading.Lock()
        self._waiters: set[Waiter] = set()
        # (when, order, waiter, what): what is TIMEOUT or RECHECK
        self._deadlines: list[tuple[datetime.datetime, int, Waiter, str]] = []
        self._order = itertools.count()

    def wait(self, job_id: str, deadline: datetime.datetime | None, created: bool = True) -> Waiter:
        """Start waiting; `created=False` for a job whose creation is still on its way."""
        waiter = Waiter(job_id, KickqFuture(), deadline, created, defer_check=not created)
        with self._lock:
            self._waiters.add(waiter)
            if deadline is not None:
                self._push(deadline, waiter, TIMEOUT)
        if deadline is not None:
            self.on_deadline(deadline)
        waiter.subscription = self._listener.subscribe(
            self._keys.done(job_id),
            lambda payload: self._on_message(waiter, payload),
            lambda: self._on_subscribed(waiter),
        )
        return waiter

    def created(self, waiter: Waiter) -> None:
        """The job is saved: from now on a missing record means it was deleted."""
        with self._lock:
            waiter.created = True
            ready = waiter.subscribed
        if ready:
            self._ready(waiter)

    def _push(self, when: datetime.datetime, waiter: Waiter, what: str) -> None:
        heapq.heappush(self._deadlines, (when, next(self._order), waiter, what))

    def _ready(self, waiter: Waiter) -> None:
        """Saved and subscribed: re-read the record, to catch a completion published before
        the subscription. A hotjob created here does it RECHECK_AFTER later rather than at
        once: such a race needs its SUBSCRIBE, sent before the job was saved, to reach Redis
        after the job has been saved, claimed and finished, so the late re-read costs nothing
        on the usual path and bounds the delay in the rare one."""
        if not waiter.defer_check:
            self._recheck(waiter)
            return
        waiter.defer_check = False
        # no wake-up per hotjob: the timer thread's next turn (within a second) is soon enough
        self._recheck_later(waiter, wake=False)

    def _recheck_later(self, waiter: Waiter, wake: bool = True) -> None:
        when = clock.now() + RECHECK_AFTER
        with self._lock:
            self._push(when, waiter, RECHECK)
        if wake:
            self.on_deadline(when)

    def cancel(self, waiter: Waiter, error: BaseException | None = None) -> None:
        """End a wait with `error`, or cancel its future."""
        self._finish(waiter, error=error, cancel=error is None)

    def cancel_all(self) -> None:
        """Cancel every pending wait (kickq.reset)."""
        with self._lock:
            waiters = list(self._waiters)
        for waiter in waiters:
            self._finish(waiter, cancel=True)

    def expire(self, now: datetime.datetime) -> datetime.datetime | None:
        """Time out the waits whose deadline has passed; return the next deadline."""
        due = []
        with self._lock:
            while self._deadlines and (
                self._deadlines[0][0] <= now or self._deadlines[0][2].future.done()
            ):
                due.append(heapq.heappop(self._deadlines))
            upcoming = self._deadlines[0][0] if self._deadlines else None
        for _, _, waiter, what in due:
            if waiter.future.done():
                continue
            if what == RECHECK:
                self._recheck(waiter)
            else:
                self._finish(
                    waiter, error=HotjobTimeout(f"job {waiter.job_id} did not finish in time")
                )
        return upcoming

    # -- resolution -------------------------------------------------------------------

    def _on_message(self, waiter: Waiter, payload: str) -> None:
        if not payload:
            self._finish(waiter, error=JobNotFound(f"job {waiter.job_id} was deleted"))
        elif payload == DAMAGED:
            self._recheck(waiter)  # reads why, from the record set aside
        else:
            self._resolve(waiter, from_event(payload))

    def _on_subscribed(self, waiter: Waiter) -> None:
        with self._lock:
            waiter.subscribed = True
            ready = waiter.created
        if ready:
            self._ready(waiter)

    def _recheck(self, waiter: Waiter) -> None:
        def load() -> None:
            if waiter.future.done():
                return
            try:
                # most re-reads find the job still running: read its state, not the record
                state = self._store.state(waiter.job_id)
                found = self._store.load(waiter.job_id) if state in FINISHED else state
            except Exception as exc:
                if is_outage(exc):
                    # the done message may be lost with the pub/sub connection too: read
                    # again later rather than rely on a reconnect that may not come
                    self._recheck_later(waiter)
                else:
                    self._finish(waiter, error=exc)
                return
            if isinstance(found, Damaged):
                self._finish(waiter, error=DamagedRecord(waiter.job_id, found.error))
            elif isinstance(found, StoredJob):
                self._resolve(waiter, found.job)
            elif found is None:  # gone (or purged between the two reads)
                self._finish(waiter, error=JobNotFound(f"no job with id {waiter.job_id}"))

        self._schedule(load)

    def _resolve(self, waiter: Waiter, job: Job) -> None:
        if not job.complete:
            return
        if job.success:
            self._finish(waiter, job=job)
        else:
            self._finish(waiter, error=failure(job))

    def _finish(
        self,
        waiter: Waiter,
        job: Job | None = None,
        error: BaseException | None = None,
        cancel: bool = False,
    ) -> None:
        with self._lock:
            if waiter not in self._waiters:
                return
            self._waiters.discard(waiter)
        if waiter.subscription is not None:
            self._listener.unsubscribe(waiter.subscription)
        future = waiter.future
        try:
            if cancel:
                future.cancel()
            elif error is not None:
                future.set_exception(error)
            else:
                future.set_result(job)  # type: ignore[arg-type]
        except InvalidStateError:  # the caller cancelled it first
            pass
