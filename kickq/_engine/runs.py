"""The runs in progress of one worker: started in their handler's style, stopped when they ghost
or are cancelled, their outcomes collected for the fetch loop (see _worker.py).

A run executes elsewhere (a plain handler on the pool's threads, a coroutine on the loop
thread) and reports its outcome here. Stopping goes as far as the style allows: a coroutine's
task, or a Future a handler returned, is cancelled; a thread is flagged on a cancel
(`kickq.cancelled()` turns True inside it, see _cancel_router.py), and at its run's deadline
gets TimeLimitExceeded raised inside it (see time_limit.py). The outcome of a cancelled run is
discarded: the job is already `fail` in Redis.

At its deadline a run becomes a ghost here, as the contract has it (and in Redis, where any
process's timer ghosts it): its slot is given back and its late end is ignored. What runs it is
then stopped as far as its style allows: a coroutine is cancelled, and a plain handler's thread
gets TimeLimitExceeded raised inside it, so that the thread comes back to the pool rather than
piling up. A thread that does not end then (blocked in C, or catching the exception) is counted
as stuck until it returns (the worker stops claiming when too many are, see worker.py). A
callback handler waiting for done() has nothing to interrupt.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

import attrs

from kickq._engine import middleware, time_limit, tracing
from kickq._engine.cancel_routing import CancelRouter, RunKey, RunToken, inside, run_was_cancelled
from kickq._engine.future import ContainedExit
from kickq._engine.handlers import Handler, describe_error, describe_traceback
from kickq._engine.pool import ThreadPool
from kickq._engine.progress import ProgressWriter
from kickq._model import clock, lifecycle
from kickq._model.config import max_value_bytes
from kickq._model.errors import SerializationError, TimeLimitExceeded
from kickq._model.json import check_size, dumps
from kickq._redis.store import Store
from kickq._redis.stored import StoredJob

log = logging.getLogger("kickq")
Ended = tuple["Running", lifecycle.Outcome]


@attrs.define(eq=False)
class Running:
    claimed: StoredJob
    deadline: datetime.datetime
    token: RunToken
    # the run's own Future once there is one: cancelled if the run is; a coroutine's also if it
    # ghosts
    future: concurrent.futures.Future[Any] | None = None
    ghosted: bool = False
    thread: int | None = None  # the thread running its handler, while it does
    interrupted: bool = False  # TimeLimitExceeded was raised in that thread
    span: Any = None  # its OpenTelemetry span, with tracing on (see tracing.py)


@attrs.frozen
class Stuck:
    """A handler thread still running after its run ended here: which job, since when."""

    job_id: str
    name: str
    started: datetime.datetime


def outcome_of(future: concurrent.futures.Future[Any]) -> lifecycle.Outcome:
    if future.cancelled():
        return lifecycle.Failed("the run was cancelled")
    error = future.exception()
    if error is not None:
        if type(error) is ContainedExit and error.__cause__ is not None:
            error = error.__cause__
        return lifecycle.Failed(describe_error(error), describe_traceback(error), error)
    value = future.result()
    try:
        check_size(dumps(value, "the handler's result"), "the handler's result", max_value_bytes())
    except SerializationError as exc:  # kickq's own check: its type, no traceback of the run
        return lifecycle.Failed(describe_error(exc))
    return lifecycle.Succeeded(value)


class RunsInProgress:
    def __init__(
        self,
        handler: Handler,
        pool: ThreadPool,
        cancels: CancelRouter,
        on_end: Callable[[], None],
        progress: ProgressWriter | None = None,
    ) -> None:
        self._handler = handler
        self._progress = progress
        self._pool = pool
        self._cancels = cancels
        self._on_end = on_end  # called when a run ends: the fetch loop has work
        self._lock = threading.Lock()
        self._running: dict[str, Running] = {}
        self._ended: list[Ended] = []
        self._threads: set[int] = set()  # threads inside one of its handlers now
        self._stuck: set[Running] = set()  # runs ended here whose handler's thread runs on
        self.stuck_count = 0  # len(self._stuck), read without the lock

    # -- for the fetch loop ---------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._running)

    def idle(self) -> bool:
        with self._lock:
            return not self._running and not self._ended

    def deadlines(self) -> list[datetime.datetime]:
        with self._lock:
            return [running.deadline for running in self._running.values()]

    def stuck(self) -> list[Stuck]:
        """The handler threads still running after their run ended here (written off)."""
        with self._lock:
            stuck = list(self._stuck)
        return sorted(
            (
                Stuck(r.claimed.job.id, r.claimed.job.name, r.deadline - self._timeout(r))
                for r in stuck
            ),
            key=lambda s: s.started,
        )

    @staticmethod
    def _timeout(running: Running) -> datetime.timedelta:
        return datetime.timedelta(seconds=running.claimed.job.process_timeout)

    def collect(self, now: datetime.datetime) -> tuple[list[Ended], int]:
        """The runs that ended (those past their deadline ghosted now), and how many are
        still in progress."""
        with self._lock:
            overdue = self._ghost_overdue(now)
            ended, self._ended = self._ended, []
            running = len(self._running)
        self._abandon(overdue)
        for late in overdue:
            if late.span is not None:
                tracing.end_run(late.span, lifecycle.Ghosted(), late.token.cancelled)
        return ended, running

    def in_a_handler(self) -> bool:
        """Whether the calling thread runs one of these runs' handlers, or their coroutines."""
        if self._handler.on_loop_thread():
            return True
        with self._lock:
            return threading.get_ident() in self._threads

    def _ghost_overdue(self, now: datetime.datetime) -> list[Running]:
        """Give back the slots of runs past their deadline, and raise TimeLimitExceeded in the
        threads of those a plain handler runs (lock held: a thread leaves its handler under it,
        so an interrupt never lands outside). A cancelled run has ended in Redis already: only
        its slot is given back."""
        overdue = [running for running in self._running.values() if running.deadline <= now]
        threads = not self._handler.is_coroutine  # else cancelled: see `_abandon`
        for running in overdue:
            if threads and running.thread is not None:
                running.interrupted = time_limit.interrupt(running.thread)
                self._stuck.add(running)  # until the thread leaves the handler
            running.ghosted = True
            del self._running[running.claimed.job.id]
            if not running.token.cancelled:
                self._ended.append((running, lifecycle.Ghosted()))
        self.stuck_count = len(self._stuck)
        return overdue

    def _abandon(self, overdue: list[Running]) -> None:
        """Cancel ghosted coroutines; say so for threads, which cannot be stopped (lock free:
        cancelling runs the future's callbacks, which take the lock)."""
        for running in overdue:
            job = running.claimed.job
            if self._handler.is_coroutine and running.future is not None:
                running.future.cancel()
            else:
                what = "was cancelled" if running.token.cancelled else "became a ghost"
                why = (
                    "got TimeLimitExceeded (it ends at its next Python instruction, or stays "
                    "stuck while blocked in C code)"
                    if running.interrupted
                    else "is still running"
                )
                log.warning(
                    "job %s (%s) overran process_timeout (%gs) and %s; its handler "
                    "thread %s and its result will be ignored",
                    job.id,
                    job.name,
                    job.process_timeout,
                    what,
                    why,
                )

    def give_up(self) -> list[Running]:
        """Give up the runs in progress, for a worker that stops before they end: their ends
        are ignored from now on, as a ghost's. Each is stopped as a cancel stops it (a
        coroutine or a Future is cancelled, `kickq.cancelled()` turns True in a thread, a run
        not started yet never starts). Returns those to hand back: all but the cancelled ones,
        which ended in Redis already."""
        with self._lock:
            given = list(self._running.values())
            handed = [running for running in given if running.token.cancel()]
            for running in given:
                running.ghosted = True
            self._running.clear()
        for running in given:
            if running.future is not None:
                running.future.cancel()
        if tracing.enabled:
            tracing.handed_back(r.span for r in given if r.span is not None)
        return handed

    # -- starting runs --------------------------------------------------------------------

    def start(self, claimed: StoredJob) -> None:
        job = claimed.job
        current = job.runs[-1] if job.runs else None
        started = current.start_time if current else None
        deadline = clock.after(started or clock.now(), job.process_timeout)
        key = (job.id, current.count if current else 0)
        running = Running(claimed, deadline, RunToken(key, claimed, self._progress))
        if tracing.enabled:
            running.span = tracing.run_span(job.id, job.name, running.token.key[1], claimed.record)
        with self._lock:
            self._running[job.id] = running
        if self._cancels.was_cancelled(running.token.key):
            running.token.cancel()  # after the claim, before its reply: the run never starts
        chain = middleware.current()  # read at each run's start: use() reaches running workers
        if running.token.cancelled:
            self._skip(running)
        elif self._handler.is_coroutine and not chain.plain:
            with inside(running.token):  # the coroutine's task starts with this context
                if running.span is None:
                    future = self._handler.start_coroutine(job, chain.coroutine)
                else:
                    start = self._handler.start_coroutine
                    future = tracing.call_within(running.span, start, job, chain.coroutine)
            self._started(running, future)
            future.add_done_callback(lambda f: self._ended_run(running, f))
        else:
            task = lambda: self._run_in_thread(running, chain)  # noqa: E731
            self._pool.submit(task if running.span is None else tracing.bound(running.span, task))

    def _skip(self, running: Running) -> None:
        """End a run cancelled before its handler was called, without calling it."""
        never: concurrent.futures.Future[Any] = concurrent.futures.Future()
        never.cancel()
        self._ended_run(running, never)

    def _run_in_thread(self, running: Running, chain: middleware.Chain) -> None:
        if running.token.cancelled:
            self._skip(running)
            return
        me = threading.get_ident()
        with self._lock:
            self._threads.add(me)
            running.thread = me
        job = running.claimed.job
        try:
            try:
                with inside(running.token):
                    if chain.plain:
                        future = self._handler.run_in_middleware(
                            job, chain, functools.partial(self._started, running)
                        )
                    else:
                        future = self._handler.call(job)
                        self._started(running, future)
            except TimeLimitExceeded as exc:  # took effect just after the handler returned
                future = concurrent.futures.Future()
                future.set_exception(exc)
        finally:
            while True:  # an interrupt may land as the handler ends: it was meant for it
                try:
                    came_back = self._left_handler(running, me)
                    break
                except TimeLimitExceeded:
                    continue
        future.add_done_callback(lambda f: self._ended_run(running, f))
        if came_back:
            self._on_end()  # one stuck thread fewer: the worker may claim again

    def _left_handler(self, running: Running, me: int) -> bool:
        """The thread `me` left the handler of `running`: no interrupt may reach it from now
        on (one raised that has not taken effect is absorbed here). True if it had been written
        off as stuck."""
        with self._lock:
            self._threads.discard(me)
            running.thread = None
            if running.interrupted:
                time_limit.absorb()
            if running not in self._stuck:
                return False
            self._stuck.discard(running)
            self.stuck_count = len(self._stuck)
        log.info(
            "the handler thread of job %s, written off as stuck, returned",
            running.claimed.job.id,
        )
        return True

    def _started(self, running: Running, future: concurrent.futures.Future[Any]) -> None:
        """Keep the run's own Future (a coroutine's, or what a handler returned), for a cancel
        to cancel, and a ghost if it is a coroutine's; cancel it at once if that came first."""
        with self._lock:
            running.future = future
            stop = running.token.cancelled or (running.ghosted and self._handler.is_coroutine)
        if stop:
            future.cancel()

    def _ended_run(self, running: Running, future: concurrent.futures.Future[Any]) -> None:
        outcome = outcome_of(future)
        job = running.claimed.job
        with self._lock:
            if running.ghosted:
                log.info("given-up run of job %s returned late; ignored", job.id)
                return
            if self._running.get(job.id) is running:
                del self._running[job.id]
            if not running.token.cancelled:
                self._ended.append((running, outcome))
        if running.span is not None:
            tracing.end_run(running.span, outcome, running.token.cancelled)
        if running.token.cancelled:
            log.info("the cancelled run of job %s ended; its outcome is discarded", job.id)
        self._on_end()

    # -- cancels ----------------------------------------------------------------------------

    def cancel(self, key: RunKey) -> None:
        """Stop run `key` if it is one of these (kickq.cancel, from any process)."""
        with self._lock:
            running = self._running.get(key[0])
            if running is None or running.token.key != key or not running.token.cancel():
                return
            future = running.future
        log.info("job %s was cancelled; its run is stopped", key[0])
        if future is not None:
            future.cancel()

    def recheck(self, store: Store) -> None:
        """Read the records of the runs in progress, and stop those a cancel ended: for
        cancels published while the pub/sub connection was not listening."""
        with self._lock:
            held = [r.token.key for r in self._running.values() if not r.token.cancelled]
        if not held:
            return
        loaded = store.load_many([job_id for job_id, _ in held])
        for key, found in zip(held, loaded, strict=True):
            if run_was_cancelled(found, key[1]):
                self._cancels.cancelled(key)
