"""The one timer of a kickq process.

Any live kickq process does due work for every job in its namespace, so no job waits on the
process that created or ran it: each tick promotes due delayed/retry/ghost jobs, ghosts runs
past their deadline, purges finished jobs, creates the jobs of due schedule ticks and times out
local waits. Between ticks the thread sleeps until the earliest deadline it knows of: those it
read at its last tick, those this process set, and those other processes announce on the timers
channel (see `announce`, scripts/lib.lua). So an idle process asks Redis nothing, but for a safety
sweep every SAFETY_SWEEP seconds, the workers' heartbeats and the check of this host's clock
against Redis's (see _skew.py). The thread still wakes every MAX_SLEEP seconds, without a word
to Redis, to read the clock: a test's frozen clock moved forward is seen within a second.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable

from kickq._engine.waits import Waits
from kickq._model import clock, lifecycle
from kickq._model.job import Job
from kickq._redis.dependency_store import is_notice
from kickq._redis.outage import LoopBackoff
from kickq._redis.runner import ScriptCall
from kickq._redis.store import Store
from kickq._redis.stored import Damaged, Due, damage_of

ScheduleStep = Callable[[datetime.datetime], tuple[int | None, bool]]
HandOver = Callable[[list[str], datetime.datetime], None]

log = logging.getLogger("kickq")
MAX_SLEEP = 1.0  # seconds between two looks at the clock (no Redis call unless work is due)
SAFETY_SWEEP = 60.0  # seconds between two ticks with nothing known to be due
NEVER = 2**62
BATCH = 200
STOP_WAIT = 0.5


class Timer:
    def __init__(
        self,
        store: Store,
        waits: Waits,
        interval_for: lifecycle.IntervalFor,
        purge_timeout: Callable[[], float],
        quarantine: Callable[[Damaged], None],
        schedules: ScheduleStep | None = None,
        heartbeat: Callable[[datetime.datetime], None] = lambda now: None,
        check_clock: Callable[[], None] = lambda: None,
        hand_over: HandOver | None = None,
    ) -> None:
        self._store = store
        self._waits = waits
        self._interval_for = interval_for
        self._purge_timeout = purge_timeout
        self._quarantine = quarantine
        self._schedules = schedules
        self._heartbeat = heartbeat
        self._check_clock = check_clock
        self._hand_over = hand_over
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._next_tick_ms = NEVER
        self._planned_ms = NEVER  # when the thread means to wake next (ms)
        self._ticked = False
        self._thread = threading.Thread(target=self._run, name="kickq-timer", daemon=True)

    def nudge(self, due_ms: int | None = None) -> None:
        """Wake the timer thread: for due work in Redis at `due_ms` (this process scheduled
        something), or, with no time, only to look at its local deadlines again."""
        if due_ms is not None:
            with self._lock:
                self._next_tick_ms = min(self._next_tick_ms, due_ms)
        self._wake.set()

    def wake_by(self, when: datetime.datetime) -> None:
        """A local deadline (a wait's timeout): wake only if it comes before the planned wake."""
        if clock.to_ms(when) < self._planned_ms:
            self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = STOP_WAIT) -> None:
        """Stop the thread; wait for it `timeout` seconds at most (a tick may be waiting for a
        Redis that does not answer: the thread then ends after it, on its own). Callable from a
        wait's callback that runs on the timer thread, which then ends once it returns."""
        self._stopping.set()
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        retry = LoopBackoff("the timer", log)
        # A tick when nothing is known to be due comes every SAFETY_SWEEP seconds: for a run of a
        # process that died (its deadline is announced, but a process started since knows only
        # what it read) and for anything missed. Two measures of that time: the kickq clock (a
        # process nudged all the time never sleeps out a timeout; a test's clock moved forward
        # sweeps) and the timeouts slept (a frozen test clock never advances, and a clock set
        # back still sweeps). The first loop ticks: it learns the deadlines.
        every_ms = int(SAFETY_SWEEP * 1000)
        slept, last_tick_ms = SAFETY_SWEEP, clock.to_ms(clock.now()) - every_ms
        while not self._stopping.is_set():
            self._wake.clear()
            self._planned_ms = NEVER  # busy: any new deadline wakes the next sleep at once
            since_ms = clock.to_ms(clock.now()) - last_tick_ms
            sweep = slept >= SAFETY_SWEEP or since_ms >= every_ms
            try:
                sleep = self._loop_once(sweep)
                retry.succeeded()
            except Exception as exc:  # the timer outlives any failed tick, and backs off
                # all of it: a nudge cannot make Redis take what it refused a moment ago; then
                # the tick is tried again, whatever else is due
                self.nudge(0)
                pause = retry.failed(exc)
                self._stopping.wait(pause)
                slept += pause
                continue
            if self._ticked:
                slept, last_tick_ms = 0.0, clock.to_ms(clock.now())
            self._planned_ms = clock.to_ms(clock.now()) + int(sleep * 1000)
            if sleep > 0 and not self._wake.wait(sleep):
                slept += sleep

    def _loop_once(self, sweep: bool) -> float:
        """Expire local waits, check the clock and send a heartbeat when due, tick Redis when
        work is due (or for the safety sweep). Returns how long to sleep, in seconds of real
        time."""
        next_wait = self._waits.expire()  # even while Redis is away
        if self._stopping.is_set():  # a callback of an expired wait stopped kickq
            return 0.0
        self._check_clock()  # before the first tick: every tick on the corrected clock
        now = clock.now()
        now_ms = clock.to_ms(now)
        self._heartbeat(now)
        with self._lock:
            self._ticked = sweep or now_ms >= self._next_tick_ms
            if self._ticked:
                self._next_tick_ms = NEVER  # nudges during the tick lower it again
        if self._ticked:
            earliest_ms, more = self.tick(now)
            with self._lock:
                self._next_tick_ms = min(
                    self._next_tick_ms,
                    now_ms if more else NEVER if earliest_ms is None else earliest_ms,
                )
            if more:
                return 0.0
        with self._lock:
            next_ms = self._next_tick_ms
        if next_wait is not None:
            next_ms = min(next_ms, clock.to_ms(next_wait))
        wait = (next_ms - clock.to_ms(clock.now())) / 1000
        return min(max(wait, 0.002), MAX_SLEEP)

    def tick(self, now: datetime.datetime) -> tuple[int | None, bool]:
        """Do the Redis work due at `now`; return the next due time (ms) and if more is due."""
        store = self._store
        now_ms = clock.to_ms(now)
        next_tick, ticks_left, not_ticked = self._tick_schedules(now)
        due = store.due(now_ms, BATCH)
        notices = [member for member in due.scheduled if is_notice(member)]
        if notices:  # the hand-over of after= (see _engine/dependencies.py)
            due.scheduled = [member for member in due.scheduled if not is_notice(member)]
        calls, stale = self._changes(now, due)
        results = store.run_batch([call for _, call in calls])
        refused = []
        for (job_id, _), result in zip(calls, results, strict=True):
            if isinstance(result, Exception):
                refused.append(result)
            elif (damaged := damage_of(job_id, result)) is not None:
                self._quarantine(damaged)
        if stale:
            for job_id, index in store.unlist(stale):
                log.warning(
                    "job %s was due in %s, its record gone or in another state: dropped",
                    job_id,
                    index,
                )
        purged = store.purge(now_ms, BATCH) if due.purge else 0
        if notices and self._hand_over is not None:
            self._hand_over(notices, now)
        if refused:  # what Redis refused stays due: back off, then try again
            raise refused[0]
        if not_ticked is not None:
            raise not_ticked
        more = (
            len(due.scheduled) + len(notices) >= BATCH
            or len(due.overdue) >= BATCH
            or purged >= BATCH
        )
        earliest = min((ms for ms in (due.earliest_ms, next_tick) if ms is not None), default=None)
        return earliest, more or ticks_left

    def _tick_schedules(self, now: datetime.datetime) -> tuple[int | None, bool, Exception | None]:
        """The schedule step; what it could not do is raised once the jobs' work is done."""
        if self._schedules is None:
            return None, False, None
        try:
            next_tick, more = self._schedules(now)
        except Exception as exc:  # the jobs' due work goes on; the tick backs off after it
            return None, False, exc
        return next_tick, more, None

    def _changes(
        self, now: datetime.datetime, due: Due
    ) -> tuple[list[tuple[str, ScriptCall]], list[tuple[str, str]]]:
        """The changes of the due jobs, each with its job's id, read in one round trip; and the
        due ids it cannot act on, each with its index: a record gone, or in another state. A
        damaged record is set aside. Every due id is dealt with so: none stays due for ever,
        which would make every tick come at once."""
        store = self._store

        def promote(job: Job) -> lifecycle.Change | None:
            return lifecycle.promote(job, now)

        def ghost(job: Job) -> lifecycle.Change | None:
            return lifecycle.end_run(job, lifecycle.Ghosted(), now, self._interval_for)

        kinds = [(job_id, "scheduled", promote) for job_id in due.scheduled]
        kinds += [(job_id, "processing", ghost) for job_id in due.overdue]
        loaded = store.load_many([job_id for job_id, _, _ in kinds])
        calls: list[tuple[str, ScriptCall]] = []
        stale: list[tuple[str, str]] = []
        for (job_id, index, decide), found in zip(kinds, loaded, strict=True):
            if isinstance(found, Damaged):
                self._quarantine(found)
                continue
            change = None if found is None else decide(found.job)
            if change is None or found is None:
                stale.append((job_id, index))
            else:
                calls.append((job_id, store.transition_call(change, found, self._purge_timeout())))
        return calls, stale
