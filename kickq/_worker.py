"""A worker: the fetch loop of one `process()` call.

One thread per worker drives everything with Redis: each turn of its loop sends, in one round
trip, the end of every run that finished since the last turn and a claim for the free slots.
Runs execute elsewhere (plain handlers on the pool's threads, coroutines on the loop thread)
and report back through a queue. An idle worker sleeps until its wake channel says a queue of
its names stopped being empty, a run ends, or a run's deadline comes.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import functools
import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from . import _clock as clock
from . import _joblog as joblog
from . import _lifecycle as lifecycle
from . import _middleware as middleware
from . import _run_ends as run_ends
from ._errors import SerializationError
from ._handlers import Handler, describe_error
from ._json import dumps
from ._listener import Listener, Subscription
from ._outage import Retry
from ._pool import ThreadPool
from ._rotation import ClaimRotation
from ._store import Damaged, ScriptCall, Store, StoredJob

log = logging.getLogger("kickq")
IDLE_WAIT = 60.0  # a safety net only: wake-ups come from pub/sub (a reconnect nudges)
BUSY_WAIT = 1.0  # longest sleep while runs are in progress, to notice overrun deadlines


@attrs.define(eq=False)
class Running:
    claimed: StoredJob
    deadline: datetime.datetime
    future: concurrent.futures.Future[Any] | None = None  # a coroutine's, cancelled if it ghosts
    ghosted: bool = False


def outcome_of(future: concurrent.futures.Future[Any]) -> lifecycle.Outcome:
    if future.cancelled():
        return lifecycle.Failed("the run was cancelled")
    error = future.exception()
    if error is not None:
        return lifecycle.Failed(describe_error(error))
    value = future.result()
    try:
        dumps(value, "the handler's result")
    except SerializationError as exc:
        return lifecycle.Failed(str(exc))
    return lifecycle.Succeeded(value)


@attrs.frozen
class Ending:
    """The decided end of one run, and the script call that applies it."""

    change: lifecycle.Change
    call: ScriptCall


@attrs.define
class WorkerContext:
    """What a worker needs from the process-wide runtime."""

    store: Store
    listener: Listener
    pool: ThreadPool
    interval_for: lifecycle.IntervalFor
    purge_timeout: Callable[[], float]
    on_scheduled: Callable[[int], None]
    quarantine: Callable[[Damaged], None]


class Worker:
    """The handle `kickq.process()` returns."""

    def __init__(
        self, names: Sequence[str], handler: Handler, concurrent_jobs: int, context: WorkerContext
    ) -> None:
        self.id = secrets.token_hex(8)
        self.names = tuple(names)
        self.concurrent_jobs = concurrent_jobs
        self.started = clock.now()
        self._handler = handler
        self._context = context
        self._lock = threading.Lock()
        self._running: dict[str, Running] = {}
        self._ended: list[tuple[Running, lifecycle.Outcome]] = []
        self._unsent: list[Ending] = []  # ends of runs Redis has not taken yet
        self._nudge = threading.Event()
        self._stopping = threading.Event()
        self._abandon = threading.Event()
        # names that one claim serves together (on a Redis Cluster, one group per partition)
        self._rotation = ClaimRotation(context.store.claim_groups(self.names))
        self._subscriptions: list[Subscription] = []
        self._run_threads: set[int] = set()  # threads inside one of its handlers now
        self._thread = threading.Thread(
            target=self._run, name=f"kickq-worker-{'+'.join(self.names)}", daemon=True
        )

    def start(self) -> Worker:
        listener = self._context.listener
        for name in self.names:
            wake = self._context.store.keys.wake(name)
            self._subscriptions.append(
                listener.subscribe(wake, functools.partial(self._on_wake, name), self.nudge)
            )
        self._thread.start()
        return self

    def stop_fetching(self) -> None:
        """Claim no more jobs; the runs in progress go on (see `stop`)."""
        self._stopping.set()
        self.nudge()

    def stop(self, timeout: float | None = None) -> None:
        """Stop fetching jobs; let the running ones finish (for at most `timeout` seconds).

        Called from this worker's own threads (a handler, say), it cannot wait for the runs,
        which wait for it: it returns at once, and the worker ends after its runs, on its own.
        """
        self.stop_fetching()
        if self._thread.is_alive() and not self._waits_on_itself():
            self._thread.join(timeout)
            if self._thread.is_alive():
                # runs still going are left to their deadline: any kickq process ghosts them
                self._abandon.set()
                self.nudge()
                self._thread.join(1.0)
        for subscription in self._subscriptions:
            self._context.listener.unsubscribe(subscription)
        self._subscriptions.clear()

    @property
    def running(self) -> int:
        """How many runs are in progress."""
        with self._lock:
            return len(self._running)

    @property
    def fetching(self) -> bool:
        """Whether it still claims jobs: `stop()` has not been called."""
        return not self._stopping.is_set()

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set() and not self._thread.is_alive()

    def nudge(self) -> None:
        self._nudge.set()

    def _waits_on_itself(self) -> bool:
        """Whether the calling thread is one this worker's runs need to end: its fetch loop, a
        thread running one of its handlers, or the event loop running its coroutines."""
        if threading.current_thread() is self._thread or self._handler.on_loop_thread():
            return True
        with self._lock:
            return threading.get_ident() in self._run_threads

    def _on_wake(self, name: str, _payload: str) -> None:
        self._rotation.woken(name)
        self._nudge.set()

    def _run(self) -> None:
        retry = Retry(f"worker {self._thread.name}", log)
        while not self._abandon.is_set():
            self._nudge.clear()
            try:
                claimed_all = self._turn_once()
                retry.succeeded()
            except Exception as exc:  # a worker outlives any failed turn, and backs off
                # all of it: a nudge cannot make Redis take what it refused a moment ago
                self._abandon.wait(retry.failed(exc))
                continue
            with self._lock:
                idle = not self._running and not self._ended and not self._unsent
            if self._stopping.is_set() and idle:
                return
            if not claimed_all:
                self._nudge.wait(self._wait_time(idle))

    def _wait_time(self, idle: bool) -> float:
        if idle:
            return IDLE_WAIT
        with self._lock:
            deadlines = [r.deadline for r in self._running.values()]
        if not deadlines:
            return BUSY_WAIT
        remaining = (min(deadlines) - clock.now()).total_seconds()
        return min(max(remaining, 0.005), BUSY_WAIT)

    def _turn_once(self) -> bool:
        """One round trip: end finished runs, claim for free slots. True if it should go on.

        A run's end that Redis did not take (down, out of memory) is kept, as decided, and sent
        again by the next turns until Redis takes it: a finished run is never lost, and never
        costs a second run while its deadline holds."""
        endings, free = self._plan(clock.now())
        store = self._context.store
        calls = [ending.call for ending in endings]
        if free > 0:
            calls.append(store.claim_call(self._rotation.next_claim(), free))
        if not calls:
            return False
        try:
            results = store.run_batch(calls)
        except BaseException:
            self._keep_unsent(endings)
            raise
        refused = self._apply_endings(endings, results)
        go_on = free > 0 and self._start_claimed(results[-1], free)
        if refused:
            raise refused[0]  # after the claimed runs started: the caller backs off
        return go_on and not self._stopping.is_set()

    def _plan(self, now: datetime.datetime) -> tuple[list[Ending], int]:
        """The ends of runs to send (those Redis refused before first), and the free slots."""
        with self._lock:
            overdue = self._ghost_overdue(now)
            ended, self._ended = self._ended, []
            endings, self._unsent = self._unsent, []
            free = 0 if self._stopping.is_set() else self.concurrent_jobs - len(self._running)
        self._abandon_runs(overdue)
        purge = self._context.purge_timeout()
        for running, outcome in ended:
            claimed = running.claimed
            change = lifecycle.end_run(claimed.job, outcome, now, self._context.interval_for)
            if change is not None:
                call = self._context.store.transition_call(change, claimed, purge)
                endings.append(Ending(change, call))
        return endings, free

    def _keep_unsent(self, endings: list[Ending]) -> None:
        with self._lock:
            self._unsent = endings + self._unsent

    def _apply_endings(self, endings: list[Ending], results: list[Any]) -> list[Exception]:
        """Note what Redis made of each run's end; keep the refused ones for the next turn."""
        refused: list[Exception] = []
        unsent: list[Ending] = []
        scheduled: list[datetime.datetime] = []
        for ending, result in zip(endings, results[: len(endings)], strict=True):
            job = ending.change.job
            if isinstance(result, Exception):
                refused.append(result)
                unsent.append(ending)
            elif not result:
                log.info("kickq: job %s changed meanwhile; this run's end is ignored", job.id)
            else:
                joblog.finished(job)
                run_ends.notify(job)
                if job.state in lifecycle.WAITING and job.scheduled_for is not None:
                    scheduled.append(job.scheduled_for)
        self._keep_unsent(unsent)
        if scheduled:
            self._context.on_scheduled(clock.to_ms(min(scheduled)))
        return refused

    def _start_claimed(self, reply: Any, free: int) -> bool:
        """Start the runs a claim returned; True if another claim may find more."""
        if isinstance(reply, Exception):
            raise reply
        jobs = self._context.store.parse_claimed(reply)
        for item in jobs:
            if isinstance(item, Damaged):
                self._context.quarantine(item)
            else:
                self._start(item)
        return len(jobs) >= free or self._rotation.more_elsewhere(bool(jobs))

    def _ghost_overdue(self, now: datetime.datetime) -> list[Running]:
        """Give back the slots of runs past their deadline (lock held)."""
        overdue = [running for running in self._running.values() if running.deadline <= now]
        for running in overdue:
            running.ghosted = True
            del self._running[running.claimed.job.id]
            self._ended.append((running, lifecycle.Ghosted()))
        return overdue

    def _abandon_runs(self, overdue: list[Running]) -> None:
        """Cancel ghosted coroutines; say so for threads, which cannot be stopped (lock free:
        cancelling runs the future's callbacks, which take the lock)."""
        for running in overdue:
            job = running.claimed.job
            if self._handler.is_coroutine and running.future is not None:
                running.future.cancel()
            else:
                log.warning(
                    "kickq: job %s (%s) overran process_timeout (%gs) and became a ghost; its "
                    "handler thread is still running and its result will be ignored",
                    job.id,
                    job.name,
                    job.process_timeout,
                )

    # -- runs -----------------------------------------------------------------------------

    def _start(self, claimed: StoredJob) -> None:
        job = claimed.job
        started = job.runs[-1].start_time if job.runs else None
        deadline = clock.after(started or clock.now(), job.process_timeout)
        running = Running(claimed, deadline)
        with self._lock:
            self._running[job.id] = running
        chain = middleware.current()  # read at each run's start: use() reaches running workers
        if self._handler.is_coroutine and not chain.plain:
            running.future = self._handler.start_coroutine(job, chain.coroutine)
            running.future.add_done_callback(lambda f: self._ended_run(running, f))
        else:
            self._context.pool.submit(lambda: self._run_in_thread(running, chain))

    def _run_in_thread(self, running: Running, chain: middleware.Chain) -> None:
        me = threading.get_ident()
        with self._lock:
            self._run_threads.add(me)
        job = running.claimed.job
        try:
            if chain.plain:
                future = self._handler.call_through(
                    job, chain, functools.partial(self._coroutine_started, running)
                )
            else:
                future = self._handler.call(job)
        finally:
            with self._lock:
                self._run_threads.discard(me)
        future.add_done_callback(lambda f: self._ended_run(running, f))

    def _coroutine_started(self, running: Running, future: concurrent.futures.Future[Any]) -> None:
        """Keep a coroutine's Future, started under plain middleware, for ghosting to cancel;
        cancel it at once if its run ghosted while the middleware ran."""
        with self._lock:
            running.future = future
            ghosted = running.ghosted
        if ghosted:
            future.cancel()

    def _ended_run(self, running: Running, future: concurrent.futures.Future[Any]) -> None:
        outcome = outcome_of(future)
        with self._lock:
            if running.ghosted:
                job = running.claimed.job
                log.info("kickq: ghosted run of job %s returned late; ignored", job.id)
                return
            self._running.pop(running.claimed.job.id, None)
            self._ended.append((running, outcome))
        self._nudge.set()
