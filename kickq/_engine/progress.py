"""Progress reports (`kickq.progress()`): each run's, coalesced, written by one thread.

A handler may report in a tight loop, so a report never waits for Redis: it replaces its run's
pending value and returns a future. The writer thread (one per process, started by the first
report: a process whose handlers never report has none) writes a run's pending value at most
one write at a time and at most once per INTERVAL, every run's due value in one round trip
(scripts/progress.lua, which keeps it only while the run still counts). A report whose value
was replaced before it went out resolves with the outcome of the write that carried the later
value.

At a run's end the worker closes its reports (`close`) before it sends the end: the write in
flight is waited for and the pending value written, from the worker's thread, so that the last
value reaches Redis, and the job's waiters, before the end does (both publish on the job's
channels, in that order). A report after that resolves False: the run no longer counts.

A run is known from the context of the handler's thread or task (see cancel_routing.py): a
thread a handler starts itself knows it only if started in a copy of that context.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from typing import Any

import attrs

from kickq._engine.cancel_routing import RunToken
from kickq._engine.future import KickqFuture, reject, resolve
from kickq._model import clock
from kickq._model.config import max_value_bytes
from kickq._model.errors import SerializationError
from kickq._model.json import check_size, dumps
from kickq._redis.keys import progress_message_head
from kickq._redis.outage import translate
from kickq._redis.record import event_template, event_texts
from kickq._redis.runner import ScriptCall
from kickq._redis.store import Store

log = logging.getLogger("kickq")
INTERVAL = 0.05  # seconds between the starts of two writes of one run's progress
WHAT = "a progress value"


@attrs.define(eq=False)
class RunReports:
    """The progress reports of one run, from its first on (lock: the writer's)."""

    job_id: str
    run: int
    event_parts: tuple[str, str]  # the progress event, around the value's JSON
    pending: str | None = None  # the value to write next, as JSON
    waiting: list[KickqFuture[bool]] = attrs.field(factory=list)  # resolved by the next write
    in_flight: bool = False
    queued: bool = False  # in the writer's queue of due writes
    next_write: float = 0.0  # real monotonic seconds: no write of this run starts before
    closed: bool = False  # the run ended here: no report counts any more
    written: str | None = None  # the last value Redis kept

    def call(self, store: Store, value_json: str) -> ScriptCall:
        head, tail = self.event_parts
        waiters = progress_message_head(self.job_id)
        return store.progress_call(
            self.job_id, self.run, value_json, head + value_json + tail, waiters
        )


def _event_parts(token: RunToken) -> tuple[str, str]:
    """The progress event of the job as its claim read it, around the slot of the value."""
    claimed = token.claimed
    assert claimed is not None
    texts = event_texts({**claimed.record, "id": claimed.job.id}, claimed.job.total_process_time)
    texts["progress"] = "null"
    head, _, tail = event_template(texts, ("progress",))
    return head, tail


class ProgressWriter:
    """The progress reports of this process's runs, written to Redis by one thread."""

    def __init__(self, store: Store, where: str) -> None:
        self._store = store
        self._where = where
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, RunReports]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def report(self, token: RunToken, value: Any) -> KickqFuture[bool]:
        """Report `value` as the progress of the run of `token` (from any thread, never
        blocking on Redis)."""
        future: KickqFuture[bool] = KickqFuture()
        try:
            text = check_size(dumps(value, WHAT), WHAT, max_value_bytes())
        except SerializationError as exc:
            future.set_exception(exc)
            return future
        with self._cond:
            # `reports` is set before `ended` is read, and the worker sets `ended` before it
            # reads `reports` (taking the lock only for a run that reported): of a report and
            # the run's end that cross, one sees the other, with no lock taken per run
            reports = token.reports
            if reports is None:
                reports = token.reports = RunReports(
                    token.key[0], token.key[1], _event_parts(token)
                )
            if self._stopping:
                future.cancel()
                return future
            if token.ended:
                future.set_result(False)
                return future
            reports.pending = text
            reports.waiting.append(future)
            if not reports.in_flight and not reports.queued:
                self._enqueue(reports)
        return future

    def close(self, token: RunToken) -> str | None:
        """The run of `token` ended here: write what it reported last, now, after the write in
        flight; return the last value Redis kept (JSON), None if none. A report from now on
        resolves False."""
        with self._cond:
            token.ended = True
            reports = token.reports
            if reports is None:
                return None
            reports.closed = True
            while reports.in_flight:
                self._cond.wait()
            text, waiting = reports.pending, reports.waiting
            reports.pending, reports.waiting = None, []
        if text is not None:
            self._write([(reports, text, waiting)])
        return reports.written

    def stop(self) -> None:
        """Write no more: the reports not written yet are cancelled."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)

    # -- the writer thread -------------------------------------------------------------

    def _enqueue(self, reports: RunReports) -> None:
        """Queue the run's next write (lock held)."""
        reports.queued = True
        heapq.heappush(self._due, (reports.next_write, next(self._order), reports))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kickq-progress", daemon=True)
            self._thread.start()
        self._cond.notify()

    def _run(self) -> None:
        while True:
            batch: list[tuple[RunReports, str, list[KickqFuture[bool]]]] = []
            with self._cond:
                while not self._stopping:
                    now = clock.real_monotonic()
                    if self._due and self._due[0][0] <= now:
                        break
                    self._cond.wait(self._due[0][0] - now if self._due else None)
                if self._stopping:
                    left = [future for _, _, r in self._due for future in r.waiting]
                    self._due.clear()
                    break
                while self._due and self._due[0][0] <= now:
                    reports = heapq.heappop(self._due)[2]
                    reports.queued = False
                    if reports.pending is None:  # taken by `close`
                        continue
                    batch.append((reports, reports.pending, reports.waiting))
                    reports.pending, reports.waiting = None, []
                    reports.in_flight = True
                    reports.next_write = now + INTERVAL
            self._write(batch)
        for future in left:
            future.cancel()

    def _write(self, batch: list[tuple[RunReports, str, list[KickqFuture[bool]]]]) -> None:
        """Write each run's value, in one round trip, and resolve the reports it carries."""
        calls = [reports.call(self._store, text) for reports, text, _ in batch]
        try:
            results: list[Any] = self._store.run_batch(calls)
        except Exception as exc:  # every report of the batch says why
            results = [exc] * len(calls)
        with self._cond:
            for (reports, text, _), result in zip(batch, results, strict=True):
                reports.in_flight = False
                if result == 1:
                    reports.written = text
                if reports.pending is not None and not reports.queued and not reports.closed:
                    self._enqueue(reports)
            self._cond.notify_all()  # `close` waits for the write in flight
        for (_, _, waiting), result in zip(batch, results, strict=True):
            for future in waiting:
                if isinstance(result, BaseException):
                    reject(future, translate(result, self._where))
                else:
                    resolve(future, result == 1)
