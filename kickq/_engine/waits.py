"""Futures waiting for jobs to finish: hotjobs, and any job awaited by its id.

A hotjob created here is awaited on this process's reply channel (`<ns>:reply:<token>`,
subscribed once, a new token in each process): its record names that channel (`reply_to`)
and every script that finishes or removes the job publishes there, a message naming the job,
so a hotjob costs no SUBSCRIBE, UNSUBSCRIBE or confirmation of its own. Any other wait (by id,
from any process) listens on the job's own done channel.

A wait given `on_progress` calls it with each progress its job's run reports: the same channels
carry "progress:<id>:<n>:<value>" (see scripts/progress.lua), in the listener's thread, in
the order they were published, and the end comes on the same channel after the last of them.
The value a record re-read holds is given if its number (the record's `progress_seq`) is past
the last given, and a finished job's event's if it is not the value given last, so that a
message lost with the connection cannot lose it, and none is given twice or after a later
one; a value is never given once the wait's future is resolved.

A completion published while nobody listened (before the subscription was confirmed, or
while the pub/sub connection was down) is caught by re-reading the records whenever a
subscription is (re)confirmed: every pending wait at once, in one round trip. Timeouts are
deadlines on the kickq clock, expired by the timer's tick.
"""

from __future__ import annotations

import contextlib
import datetime
import heapq
import itertools
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import InvalidStateError
from typing import Any

import attrs

from kickq._engine.future import KickqFuture
from kickq._model import clock
from kickq._model.errors import DamagedRecord, HotjobTimeout, JobNotFound
from kickq._model.job import Job, failure
from kickq._redis.keys import Keys, read_progress_message
from kickq._redis.listener import Listener, Subscription
from kickq._redis.outage import is_outage
from kickq._redis.record import event_id, from_event
from kickq._redis.store import Store
from kickq._redis.stored import Damaged, StoredJob

log = logging.getLogger("kickq")
Schedule = Callable[[Callable[[], None]], None]
OnProgress = Callable[[Any], None]
_NONE_YET = object()  # the progress given last, before the first
TIMEOUT, RECHECK = "timeout", "recheck"
RECHECK_AFTER = datetime.timedelta(seconds=0.5)  # after a re-read that found Redis away
DAMAGED = "damaged"  # on the done channel: the record was set aside
# on a reply channel, a job that was not finished but removed: "<what>:<id>"
DELETED_REPLY, DAMAGED_REPLY = "deleted", "damaged"


class Closed(Exception):
    """The waits were cancelled (`kickq.reset()`, a new connection): a wait asked for now is
    no longer theirs to keep, but the next engine's."""


@attrs.define(eq=False)
class Waiter:
    job_id: str
    future: KickqFuture[Job]
    deadline: datetime.datetime | None
    # False for a hotjob whose save is still on its way: until then a missing record is no
    # sign of a deletion
    created: bool = True
    subscription: Subscription | None = None  # a wait on the job's done channel
    # a hotjob whose reply channel was (re)confirmed while its save was on its way: what was
    # published before that is lost, so its record is read once the save is acknowledged
    check_when_created: bool = False
    on_progress: OnProgress | None = None
    # with on_progress: held while it is called, and to mark the wait finished (after which it
    # is called no more)
    delivering: threading.RLock | None = None
    finished: bool = False
    last_progress: Any = _NONE_YET
    # the number of the report given last (see `read_progress_message`): a report read twice,
    # from its message and from the record, or a record read before a message already given,
    # is not given again
    last_report: int = 0

    def __attrs_post_init__(self) -> None:
        if self.on_progress is not None:
            self.delivering = threading.RLock()


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
        # sets aside a damaged record a re-read finds (the runtime's, which logs it once)
        self.quarantine: Callable[[Damaged], None] = lambda damaged: None
        # one per Waits, and so per engine: a forked child starts an engine, and a token, anew
        self.reply_channel = self._keys.reply(uuid.uuid4().hex)
        self._lock = threading.Lock()
        self._waiters: set[Waiter] = set()
        # set by cancel_all: a wait added later would never be answered (the engine's threads
        # are stopping), so none is
        self._closed = False
        self._replies: dict[str, Waiter] = {}  # the hotjobs awaited on the reply channel
        self._reply_subscribed = False
        self._reply_confirmed = threading.Event()  # the reply channel's first confirmation
        # (when, order, waiter, what): what is TIMEOUT or RECHECK
        self._deadlines: list[tuple[datetime.datetime, int, Waiter, str]] = []
        # the clock offset the deadlines agree with: it follows the clock's in `shift`, a moment
        # after the clock moved, so that a wait listed in between gets a deadline that moves too
        self._frame = clock.offset()
        self._order = itertools.count()
        # waits whose records the next re-read covers (a dict: ordered, no duplicates)
        self._to_check: dict[Waiter, None] = {}
        self._check_scheduled = False

    def wait(
        self,
        job_id: str,
        timeout: float | None,
        on_progress: OnProgress | None = None,
    ) -> Waiter:
        """Wait for a saved job, by id, on its done channel, at most `timeout` seconds from
        now. Raises Closed once the waits were cancelled: the caller asks the next engine."""
        waiter = Waiter(job_id, KickqFuture(), None, on_progress=on_progress)
        self._add(waiter, timeout)
        subscription = self._listener.subscribe(
            self._keys.done(job_id),
            lambda payload: self._on_message(waiter, payload),
            lambda: self._recheck([waiter]),
        )
        with self._lock:
            waiter.subscription = subscription
            finished = waiter not in self._waiters  # on the dispatcher, before the line above
        if finished:
            self._listener.unsubscribe(subscription)
        return waiter

    def hotjob(
        self,
        job_id: str,
        timeout: float | None,
        on_progress: OnProgress | None = None,
    ) -> Waiter:
        """Wait for a hotjob about to be saved with `reply_to` set to `reply_channel`, at most
        `timeout` seconds from now: call before the save goes out, and `created` once it is
        acknowledged."""
        waiter = Waiter(job_id, KickqFuture(), None, created=False, on_progress=on_progress)
        with self._lock:
            if self._closed:  # as cancel_all would have done a moment later
                waiter.future.cancel()
                return waiter
            self._replies[job_id] = waiter
            self._enlist(waiter, timeout)
        if waiter.deadline is not None:
            self.on_deadline(waiter.deadline)
        self._subscribe_replies()  # its confirmation comes after this wait is listed
        return waiter

    def _subscribe_replies(self) -> None:
        """Subscribe this process's reply channel, once per process."""
        with self._lock:
            subscribe = not self._reply_subscribed
            self._reply_subscribed = True
        if subscribe:
            self._listener.subscribe(self.reply_channel, self._on_reply, self._on_reply_ready)

    @property
    def replies_confirmed(self) -> bool:
        return self._reply_confirmed.is_set()

    def confirm_replies(self, timeout: float) -> None:
        """Subscribe the reply channel and wait up to `timeout` seconds for Redis to confirm
        it: a hotjob with on_progress saved after that misses none of its run's reports (one
        saved before could run and report before the channel listens; its record's re-read
        then gives the last value only)."""
        self._subscribe_replies()
        self._reply_confirmed.wait(timeout)

    def created(self, waiter: Waiter) -> None:
        """The hotjob is saved: from now on a missing record means it was deleted."""
        with self._lock:
            waiter.created = True
            check = waiter.check_when_created
        if check:
            self._recheck([waiter])

    def _add(self, waiter: Waiter, timeout: float | None) -> None:
        with self._lock:
            if self._closed:
                raise Closed(f"the wait for job {waiter.job_id} came after kickq was stopped")
            self._enlist(waiter, timeout)
        if waiter.deadline is not None:
            self.on_deadline(waiter.deadline)

    def _enlist(self, waiter: Waiter, timeout: float | None) -> None:
        """List a wait, with its deadline `timeout` seconds from now (lock held)."""
        self._waiters.add(waiter)
        if timeout is not None:
            waiter.deadline = clock.after(self._now(), timeout)
            self._push(waiter.deadline, waiter, TIMEOUT)

    def _now(self) -> datetime.datetime:
        """The time the deadlines are kept in (see `_frame`)."""
        return clock.now_at(self._frame)

    def _push(self, when: datetime.datetime, waiter: Waiter, what: str) -> None:
        heapq.heappush(self._deadlines, (when, next(self._order), waiter, what))

    def cancel(self, waiter: Waiter, error: BaseException | None = None) -> None:
        """End a wait with `error`, or cancel its future."""
        self._finish(waiter, error=error, cancel=error is None)

    def cancel_all(self) -> None:
        """Cancel every pending wait, and refuse any new one (kickq.reset)."""
        with self._lock:
            self._closed = True
            waiters = list(self._waiters)
        for waiter in waiters:
            self._finish(waiter, cancel=True)

    def shift(self, seconds: float) -> None:
        """kickq's clock was corrected by `seconds` (see _skew.py): every deadline moves with
        it, so that a timeout still comes as long after its wait began as it was given."""
        delta = datetime.timedelta(seconds=seconds)
        with self._lock:
            self._frame += seconds
            # the same shift for all keeps the heap a heap
            self._deadlines = [
                (when + delta, order, waiter, what) for when, order, waiter, what in self._deadlines
            ]
            for waiter in self._waiters:
                if waiter.deadline is not None:
                    waiter.deadline += delta

    def expire(self) -> datetime.datetime | None:
        """Time out the waits whose deadline has passed, re-read those due to be; return the
        next deadline."""
        due = []
        with self._lock:
            now = self._now()
            while self._deadlines and (
                self._deadlines[0][0] <= now or self._deadlines[0][2].future.done()
            ):
                due.append(heapq.heappop(self._deadlines))
            upcoming = self._deadlines[0][0] if self._deadlines else None
        recheck = []
        for _, _, waiter, what in due:
            if waiter.future.done():
                continue
            if what == RECHECK:
                recheck.append(waiter)
            else:
                self._finish(
                    waiter, error=HotjobTimeout(f"job {waiter.job_id} did not finish in time")
                )
        self._recheck(recheck)
        return upcoming

    # -- messages -----------------------------------------------------------------------

    def _on_message(self, waiter: Waiter, payload: str) -> None:
        """On a job's done channel."""
        if not payload:
            self._finish(waiter, error=JobNotFound(f"job {waiter.job_id} was deleted"))
        elif payload == DAMAGED:
            self._recheck([waiter])  # reads why, from the record set aside
        elif (report := read_progress_message(payload)) is not None:
            self._progressed(waiter, report[1], report[2])
        else:
            self._resolve(waiter, from_event(payload))

    def _on_reply(self, payload: str) -> None:
        """On this process's reply channel: a finished job (JSON), or "<what>:<id>"."""
        if payload.startswith("{"):
            try:
                job = from_event(payload)
            except Exception:  # read the record, which says what is wrong with it
                waiter = self._replying(event_id(payload))
                if waiter is not None:
                    self._recheck([waiter])
                return
            waiter = self._replying(job.id)
            if waiter is not None:
                self._resolve(waiter, job)
            return
        report = read_progress_message(payload)
        if report is not None:
            waiter = self._replying(report[0])
            if waiter is not None:
                self._progressed(waiter, report[1], report[2])
            return
        what, _, job_id = payload.partition(":")
        waiter = self._replying(job_id)
        if waiter is None:
            return
        if what == DELETED_REPLY:
            self._finish(waiter, error=JobNotFound(f"job {job_id} was deleted"))
        else:  # DAMAGED_REPLY: reads why, from the record set aside
            self._recheck([waiter])

    def _progressed(self, waiter: Waiter, number: int, value_json: str) -> None:
        if waiter.on_progress is None:
            return
        try:
            value = json.loads(value_json)
        except ValueError:
            log.warning(
                "a progress message of job %s is not JSON: %.100r", waiter.job_id, value_json
            )
            return
        self._give_progress(waiter, value, number)

    @staticmethod
    def _give_progress(waiter: Waiter, value: Any, number: int | None) -> None:
        """Call the wait's on_progress with `value`, report `number` (None: the last of a
        finished job's event, given unless it was the value given last), unless a later report
        was given or the future is resolved; an exception it raises is logged."""
        if waiter.on_progress is None or waiter.delivering is None:
            return
        with waiter.delivering:
            if number is None:
                given = waiter.last_progress == value
            else:
                given = number <= waiter.last_report
            if waiter.finished or given:
                return
            if number is not None:
                waiter.last_report = number
            waiter.last_progress = value
            try:
                waiter.on_progress(value)
            except Exception:
                log.exception("on_progress of the wait for job %s failed", waiter.job_id)

    def _replying(self, job_id: str) -> Waiter | None:
        with self._lock:
            return self._replies.get(job_id)

    def _on_reply_ready(self) -> None:
        """The reply channel is (re)confirmed: what was published on it before is lost, so
        every hotjob saved re-reads its record (in one round trip); one still being saved
        re-reads it once its save is acknowledged."""
        self._reply_confirmed.set()
        saved = []
        with self._lock:
            for waiter in self._replies.values():
                if waiter.created:
                    saved.append(waiter)
                else:
                    waiter.check_when_created = True
        self._recheck(saved)

    # -- re-reading records ------------------------------------------------------------

    def _recheck(self, waiters: Iterable[Waiter]) -> None:
        """Re-read the records of `waiters` soon, on the dispatcher. Those asked for before
        that read starts join it: a reconnect confirms every done channel on its own, and
        their waits share one pipeline."""
        with self._lock:
            for waiter in waiters:
                self._to_check[waiter] = None
            if self._check_scheduled or not self._to_check:
                return
            self._check_scheduled = True
        self._schedule(self._check)

    def _check(self) -> None:
        with self._lock:
            waiters = [waiter for waiter in self._to_check if not waiter.future.done()]
            self._to_check.clear()
            self._check_scheduled = False
        if not waiters:
            return
        try:
            answers = self._store.load_waited([waiter.job_id for waiter in waiters])
        except Exception as exc:
            for waiter in waiters:
                self._settle(waiter, exc)
            return
        for waiter, found in zip(waiters, answers, strict=True):
            self._settle(waiter, found)

    def _settle(self, waiter: Waiter, found: StoredJob | Damaged | Exception | None) -> None:
        if isinstance(found, Exception):
            if is_outage(found):
                # the message may be lost with the pub/sub connection too: read again later
                # rather than rely on a reconnect that may not come
                self._recheck_later(waiter)
            else:
                self._finish(waiter, error=found)
        elif isinstance(found, Damaged):
            if not found.moved:
                # the wait fails all the same; if Redis refuses now, the next reader sets it aside
                with contextlib.suppress(Exception):
                    self.quarantine(found)
            self._finish(waiter, error=DamagedRecord(waiter.job_id, found.error))
        elif isinstance(found, StoredJob):
            self._resolve(waiter, found.job, _report_number(found.record))
        else:  # gone
            self._finish(waiter, error=JobNotFound(f"no job with id {waiter.job_id}"))

    def _recheck_later(self, waiter: Waiter) -> None:
        with self._lock:
            when = self._now() + RECHECK_AFTER
            self._push(when, waiter, RECHECK)
        self.on_deadline(when)

    # -- resolution ----------------------------------------------------------------------

    def _resolve(self, waiter: Waiter, job: Job, report: int | None = None) -> None:
        """`report`: the number of the job's progress report (its record's `progress_seq`),
        None when read from an event."""
        if waiter.on_progress is not None and job.progress is not None:
            self._give_progress(waiter, job.progress, report)
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
            if self._replies.get(waiter.job_id) is waiter:
                del self._replies[waiter.job_id]
            subscription = waiter.subscription
        if subscription is not None:
            self._listener.unsubscribe(subscription)
        if waiter.delivering is not None:
            with waiter.delivering:  # after an on_progress call in progress
                waiter.finished = True
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


def _report_number(record: Mapping[str, str]) -> int:
    """The number of the last progress report a record kept (see scripts/progress.lua)."""
    text = record.get("progress_seq", "0")
    return int(text) if text.isdigit() else 0
