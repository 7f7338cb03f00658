"""A worker: the fetch loop of one `process()` call.

One thread per worker drives everything with Redis: each turn of its loop sends, in one round
trip, the end of every run that finished since the last turn and a claim for the free slots.
Runs execute elsewhere (see runs.py) and report back. An idle worker sleeps until its wake
channel says a queue of its names stopped being empty (or a run of a concurrency-limited name
ended, in any process), a run ends, a run's deadline comes, or a rate limit that held jobs back
lets the next run start.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from kickq._engine import joblog, run_ends
from kickq._engine.cancel_routing import CancelRouter, RunKey
from kickq._engine.handlers import Handler
from kickq._engine.pool import ThreadPool
from kickq._engine.progress import ProgressWriter
from kickq._engine.rotation import ClaimRotation
from kickq._engine.runs import RunsInProgress
from kickq._model import clock, config, lifecycle
from kickq._redis.listener import Listener, Subscription
from kickq._redis.outage import LoopBackoff, maybe_applied, refused_for_good
from kickq._redis.runner import ScriptCall
from kickq._redis.store import Store
from kickq._redis.stored import Damaged, StoredJob, damage_of

log = logging.getLogger("kickq")
IDLE_WAIT = 60.0  # a safety net only: wake-ups come from pub/sub (a reconnect nudges)
BUSY_WAIT = 1.0  # longest sleep while runs are in progress, to notice overrun deadlines
# how often every name is asked for even without a wake message (a safety net, as IDLE_WAIT)
IDLE_RECHECK = datetime.timedelta(seconds=IDLE_WAIT)
# how long `stop` waits for the hand-back of the runs it gives up (one round trip): longer, and
# they are left to their deadline
HAND_BACK_WAIT = 1.0


@attrs.frozen
class Claim:
    """A claim on its way, whose token finds it again if its reply is lost (Redis may then have
    started runs for it: see scripts/reclaim.lua)."""

    call: ScriptCall


@attrs.frozen
class Ending:
    """The decided end of one run, and the script call that applies it; `claimed` the job as
    the run's claim left it. `instead` for the failure that replaced an end Redis refused."""

    change: lifecycle.Change
    call: ScriptCall
    claimed: StoredJob
    instead: bool = False


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
    cancels: CancelRouter
    # raises until this process's clock has been checked against Redis's (see _skew.py): a
    # run's deadline, which any process may ghost it by, is then on the corrected clock
    clock_ready: Callable[[], None] = lambda: None
    progress: ProgressWriter | None = None  # writes what the runs report (kickq.progress)


class Worker:
    """The handle `kickq.process()` returns."""

    def __init__(
        self, names: Sequence[str], handler: Handler, concurrent_jobs: int, context: WorkerContext
    ) -> None:
        self.id = secrets.token_hex(8)
        self.names = tuple(names)
        self.concurrent_jobs = concurrent_jobs
        self.started = clock.now()
        self._context = context
        self._nudge = threading.Event()
        self._runs = RunsInProgress(
            handler, context.pool, context.cancels, self._run_ended, context.progress
        )
        # held by whichever thread sends this worker's round trip: its own, or a run's (below)
        self._turn_lock = threading.Lock()
        self._unsent: list[Ending] = []  # ends of runs Redis has not taken yet (own thread only)
        self._recheck = threading.Event()  # read the records of the runs for missed cancels
        self._stopping = threading.Event()
        self._abandon = threading.Event()  # give up the runs in progress, hand them back, end
        self._handed_back = 0  # runs given up and handed back to their queue (see `_give_up`)
        self._left_behind = 0  # runs given up that Redis did not take back: ghosted at deadline
        # names that one claim serves together (on a Redis Cluster, one group per partition)
        self._rotation = ClaimRotation(context.store.claim_groups(self.names))
        self._subscriptions: list[Subscription] = []
        self._rate_until: datetime.datetime | None = None  # when a rate limit lets runs start
        self._claims = itertools.count(1)  # claim tokens, unique to this worker
        self._lost: list[Claim] = []  # claims to find again before claiming more
        self._asked_all = clock.now()  # when every name was last made ready
        self._held_by_stuck = False  # too many handler threads stuck: it claims nothing
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
        """Stop fetching jobs; let the running ones finish (for at most `timeout` seconds), then
        give up those still running and hand them back (see `_give_up`).

        Called from this worker's own threads (a handler, say), it cannot wait for the runs,
        which wait for it: it returns at once, and the worker ends after its runs, on its own.
        """
        self.stop_fetching()
        if self._thread.is_alive() and not self._waits_on_itself():
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._give_up()
                self._thread.join(HAND_BACK_WAIT)
        for subscription in self._subscriptions:
            self._context.listener.unsubscribe(subscription)
        self._subscriptions.clear()

    @property
    def running(self) -> int:
        """How many runs are in progress."""
        return len(self._runs)

    @property
    def stuck_threads(self) -> int:
        """How many of its handler threads still run after their run ended (the run overran
        process_timeout and its thread did not end when interrupted): at `max_stuck_threads`
        the worker claims no more jobs until some return."""
        return self._runs.stuck_count

    @property
    def fetching(self) -> bool:
        """Whether it still claims jobs: `stop()` has not been called."""
        return not self._stopping.is_set()

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set() and not self._thread.is_alive()

    def _give_up(self) -> None:
        """Stop now: the runs in progress are given up (their ends ignored, as a ghost's) and
        handed back, in the worker's thread, in one round trip: each job whose record is still
        that run's is queued again at once (lifecycle.abandon); a run that ended meanwhile is
        not touched (the record's version fences it). Those Redis does not take back stay
        `processing` until their deadline ghosts them. The worker's thread then ends."""
        self.stop_fetching()
        self._abandon.set()
        self.nudge()

    def _join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the worker's thread to end; whether it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def nudge(self) -> None:
        """Look again at every name (wake messages may have been missed)."""
        self._rotation.wake_all()
        self._nudge.set()

    def clock_moved(self, seconds: float) -> None:
        """kickq's clock was corrected by `seconds`: the times kept here move with it."""
        delta = datetime.timedelta(seconds=seconds)
        self.started += delta
        self._asked_all += delta
        rate_until = self._rate_until
        if rate_until is not None:
            self._rate_until = rate_until + delta
        self.nudge()

    def cancel_run(self, key: RunKey) -> None:
        """Stop run `key` if this worker holds it (kickq.cancel, from any process)."""
        self._runs.cancel(key)

    def recheck_cancels(self) -> None:
        """Cancels may have been missed: read the records of the runs at the next turn."""
        self._recheck.set()
        self._nudge.set()

    def _waits_on_itself(self) -> bool:
        """Whether the calling thread is one this worker's runs need to end: its fetch loop, a
        thread running one of its handlers, or the event loop running its coroutines."""
        return threading.current_thread() is self._thread or self._runs.in_a_handler()

    def _run_ended(self) -> None:
        """A run ended (in the thread that ran it). When it was the worker's only run and ran
        in one of kickq's threads, that thread sends its end (and the next claim) itself: the
        worker's thread is not woken for it, a thread hand-off fewer per job. Otherwise, or if
        that round trip fails, the worker's thread takes over, as for every other run."""
        if (
            self._stopping.is_set()
            or len(self._runs) > 0
            or not self._context.pool.owns_current_thread()
            or not self._turn_lock.acquire(blocking=False)
        ):
            self._nudge.set()
            return
        try:
            go_on = self._turn_once()
        except Exception:  # the worker's thread retries, backing off
            self._rotation.wake_all()  # as after any failed turn (see _run)
            go_on = True
        finally:
            self._turn_lock.release()
        if go_on:
            self._nudge.set()

    def _on_wake(self, name: str, _payload: str) -> None:
        self._rotation.woken(name)
        self._nudge.set()

    def _run(self) -> None:
        retry = LoopBackoff(f"worker {self._thread.name}", log)
        while not self._abandon.is_set():
            self._nudge.clear()
            try:
                with self._turn_lock:
                    claimed_all = self._turn_once()
                retry.succeeded()
            except Exception as exc:  # a worker outlives any failed turn, and backs off
                # Whatever failed (a node down, a failover under way) may also have kept wake
                # messages from coming: once Redis answers again, every name is asked for.
                self._rotation.wake_all()
                # all of it: a nudge cannot make Redis take what it refused a moment ago
                self._abandon.wait(retry.failed(exc))
                continue
            idle = self._runs.idle() and not self._unsent
            if self._stopping.is_set() and idle:
                return
            if not claimed_all:
                self._nudge.wait(self._wait_time(idle))
        self._hand_back()

    def _hand_back(self) -> None:
        """Give up the runs in progress and hand them back, with the ends of the runs that
        ended before, in one round trip (see `_give_up`)."""
        given = self._runs.give_up()
        self._left_behind = len(given)  # until Redis takes them back
        with self._turn_lock:
            now = clock.now()
            endings, _ = self._plan(now)
            store, purge = self._context.store, self._context.purge_timeout()
            handing = []
            for running in given:
                change = lifecycle.abandon(running.claimed.job, now)
                if change is not None:
                    call = store.transition_call(change, running.claimed, purge)
                    handing.append(Ending(change, call, running.claimed))
            if not endings and not handing:
                self._left_behind = 0
                return
            try:
                results = store.run_batch([ending.call for ending in endings + handing])
            except Exception as exc:
                log.warning(
                    "could not hand back %d runs given up (%s: %s); they become ghosts "
                    "after their process_timeout",
                    len(given),
                    type(exc).__name__,
                    exc,
                )
                return
            self._apply_endings(endings + handing, results)
        taken = results[len(endings) :]
        self._handed_back = sum(1 for result in taken if result in (1, 2))
        self._left_behind = sum(1 for result in taken if isinstance(result, Exception))
        if self._handed_back:
            log.warning(
                "the worker of %s stopped before %d runs ended; their jobs are queued again",
                ", ".join(self.names),
                self._handed_back,
            )

    def _wait_time(self, idle: bool) -> float:
        """Until the next run's deadline or the turn of a rate limit, on the kickq clock."""
        now = clock.now()
        deadlines = self._runs.deadlines()
        if self._rate_until is not None and self._rate_until > now:
            deadlines.append(self._rate_until)
        longest = IDLE_WAIT if idle else BUSY_WAIT
        if not deadlines:
            return longest
        remaining = (min(deadlines) - now).total_seconds()
        return min(max(remaining, 0.005), longest)

    def _turn_once(self) -> bool:
        """One round trip: end finished runs, claim for free slots. True if it should go on.

        A run's end that Redis did not take (down, out of memory) is kept, as decided, and sent
        again by the next turns until Redis takes it: a finished run is never lost, and never
        costs a second run while its deadline holds. One that Redis refused for good (the
        script's own error: sending it again would get the same answer) is replaced, once, by
        a failure of the run that says why."""
        self._context.clock_ready()
        if self._recheck.is_set():
            self._recheck.clear()
            try:
                self._runs.recheck(self._context.store)
            except BaseException:
                self._recheck.set()
                raise
        now = clock.now()
        endings, free = self._plan(now)
        store = self._context.store
        lost = list(self._lost)
        calls = [store.reclaim_call(claim.call) for claim in lost]
        calls += [ending.call for ending in endings]
        claim = self._next_claim(now, free) if free > 0 and not lost else None
        if claim is not None:
            calls.append(claim.call)
        if not calls:
            return False
        try:
            results = store.run_batch(calls)
        except BaseException as exc:
            applied = maybe_applied(exc)
            if applied:  # sent again, they will say whether this send applied them
                store = self._context.store
                endings = [attrs.evolve(e, call=store.sent_again(e.call)) for e in endings]
            self._keep_unsent(endings)
            if claim is not None and applied:
                self._lost.append(claim)
            raise
        refused = self._reclaimed(lost, results[: len(lost)])
        refused += self._apply_endings(endings, results[len(lost) : len(lost) + len(endings)])
        go_on = bool(lost)  # claim next turn, now that the lost ones are settled
        if claim is not None:
            go_on = self._start_claimed(claim, results[-1], free)
        if refused:
            raise refused[0]  # after the claimed runs started: the caller backs off
        return go_on and not self._stopping.is_set()

    def _next_claim(self, now: datetime.datetime, free: int) -> Claim | None:
        """The names to claim from now, with a fresh token; None when none may have work."""
        if self._rate_until is not None and self._rate_until <= now:
            self._rate_until = None
            self._rotation.wake_all()
        if now - self._asked_all >= IDLE_RECHECK or now < self._asked_all:
            self._asked_all = now
            self._rotation.wake_all()
        names = self._rotation.next_claim()
        if not names:
            return None
        token = f"{self.id}.{next(self._claims):x}"
        return Claim(self._context.store.claim_call(names, free, self.id, token))

    def _reclaimed(self, lost: list[Claim], replies: list[Any]) -> list[Exception]:
        """Start what lost claims had started; keep those whose reclaim failed too."""
        failed: list[Exception] = []
        for claim, reply in zip(lost, replies, strict=True):
            if isinstance(reply, Exception):
                failed.append(reply)
                continue
            self._lost.remove(claim)
            self._start_runs(self._context.store.parse_claimed(reply))
        return failed

    def _plan(self, now: datetime.datetime) -> tuple[list[Ending], int]:
        """The ends of runs to send (those Redis refused before first), and the free slots."""
        ended, in_progress = self._runs.collect(now)
        endings, self._unsent = self._unsent, []
        free = 0 if self._stopping.is_set() else self.concurrent_jobs - in_progress
        if (self._runs.stuck_count or self._held_by_stuck) and self._too_many_stuck(now):
            free = 0
        purge = self._context.purge_timeout()
        for running, outcome in ended:
            claimed = running.claimed
            progress = None
            token = running.token
            token.ended = True  # then `reports` is read: see ProgressWriter.report
            if token.reports is not None and self._context.progress is not None:
                # before the end goes out: the last value reaches the waiters first
                progress = self._context.progress.close(token)
            change = lifecycle.end_run(claimed.job, outcome, now, self._context.interval_for)
            if change is not None:
                call = self._context.store.transition_call(
                    change, claimed, purge, progress=progress
                )
                endings.append(Ending(change, call, claimed))
        return endings, free

    def _too_many_stuck(self, now: datetime.datetime) -> bool:
        """Whether its stuck handler threads reached `max_stuck_threads`: each one holds a
        thread (and what it holds) for good, so past the cap the worker claims nothing more,
        and says so once, with what is stuck; the jobs stay queued for other workers, or for
        this one once some return."""
        cap = config.max_stuck_threads()
        stuck = self._runs.stuck()
        held = cap is not None and len(stuck) >= cap
        if held and not self._held_by_stuck:
            listed = "; ".join(
                f"job {s.job_id} ({s.name}) for {(now - s.started).total_seconds():.0f}s"
                for s in stuck
            )
            log.error(
                "the worker of %s claims no more jobs: %d of its handler threads are stuck "
                "past their run's end (max_stuck_threads=%s): %s. They overran "
                "process_timeout and did not end when interrupted: blocked in C code "
                "(time.sleep, a socket read, a lock or Event wait) or catching "
                "TimeLimitExceeded. Give what they wait on a timeout shorter than "
                "process_timeout; restart this process to get the threads back. It claims "
                "again once one returns; its jobs stay queued meanwhile",
                ", ".join(self.names),
                len(stuck),
                cap,
                listed,
            )
        elif self._held_by_stuck and not held:
            log.warning(
                "the worker of %s claims jobs again: %d of its handler threads are stuck "
                "(max_stuck_threads=%s)",
                ", ".join(self.names),
                len(stuck),
                cap,
            )
        self._held_by_stuck = held
        return held

    def _keep_unsent(self, endings: list[Ending]) -> None:
        self._unsent = endings + self._unsent

    def _apply_endings(self, endings: list[Ending], results: list[Any]) -> list[Exception]:
        """Note what Redis made of each run's end; keep the refused ones for the next turn."""
        refused: list[Exception] = []
        unsent: list[Ending] = []
        scheduled: list[datetime.datetime] = []
        for ending, result in zip(endings, results[: len(endings)], strict=True):
            job = ending.change.job
            if isinstance(result, Exception):
                self._not_taken(ending, result, refused, unsent)
            elif (damaged := damage_of(job.id, result)) is not None:
                # its record cannot take this end, nor any other: set aside now, so that its
                # waits fail at once (and the end is not sent again); kept if that fails
                try:
                    self._context.quarantine(damaged)
                except Exception as exc:
                    refused.append(exc)
                    unsent.append(ending)
            elif not result:
                log.info("job %s changed meanwhile; this run's end is ignored", job.id)
            else:
                exception = ending.change.exception
                joblog.finished(job, exception)
                if exception is not None:  # logged: its frames are not kept a moment longer
                    ending.change.forget_exception()
                    exception = None
                run_ends.notify(job)
                if job.state in lifecycle.WAITING and job.scheduled_for is not None:
                    scheduled.append(job.scheduled_for)
        self._keep_unsent(unsent)
        if scheduled:
            self._context.on_scheduled(clock.to_ms(min(scheduled)))
        return refused

    def _not_taken(
        self, ending: Ending, error: Exception, refused: list[Exception], unsent: list[Ending]
    ) -> None:
        """An end Redis did not take: replaced by a failure if refused for good, else kept to
        be sent again (marked so when its first send may have been applied)."""
        if refused_for_good(error):
            instead = self._failure_instead(ending, error)
            if instead is not None:
                unsent.append(instead)
                self._nudge.set()  # sent by the next turn, at once
            return
        refused.append(error)
        if maybe_applied(error):
            ending = attrs.evolve(ending, call=self._context.store.sent_again(ending.call))
        unsent.append(ending)

    def _failure_instead(self, ending: Ending, error: Exception) -> Ending | None:
        """The end of the run as a failure saying that Redis refused `ending`; None (logged)
        when `ending` was such a failure already: the run is then left to its deadline."""
        job = ending.change.job
        run = job.runs[-1].count if job.runs else 0
        if ending.instead:
            log.error(
                "Redis refused the failure of run %s of job %s (%s) too; the run is left "
                "to its deadline",
                run,
                job.id,
                error,
            )
            return None
        why = f"Redis refused the end of this run ({type(error).__name__}: {error})"
        log.error(
            "Redis refused the end of run %s of job %s (%s: %s); the run fails instead",
            run,
            job.id,
            type(error).__name__,
            error,
        )
        claimed = ending.claimed
        when = job.update_time or clock.now()  # when the run ended: its process time stands
        change = lifecycle.end_run(
            claimed.job, lifecycle.Failed(why), when, self._context.interval_for
        )
        if change is None:
            return None
        call = self._context.store.transition_call(change, claimed, self._context.purge_timeout())
        return Ending(change, call, claimed, instead=True)

    def _start_claimed(self, claim: Claim, reply: Any, free: int) -> bool:
        """Start the runs a claim returned; True if another claim may find more now."""
        if isinstance(reply, Exception):
            if maybe_applied(reply):
                self._lost.append(claim)
            raise reply
        store = self._context.store
        jobs = store.parse_claimed(reply)
        self._note_rate(store.rate_wait(reply))
        self._rotation.claimed(store.idle_names(reply))
        self._start_runs(jobs)
        runs = sum(1 for item in jobs if not isinstance(item, Damaged))
        return runs < free and self._rotation.has_ready()

    def _start_runs(self, jobs: list[StoredJob | Damaged]) -> None:
        for item in jobs:
            if isinstance(item, Damaged):
                self._context.quarantine(item)
            else:
                self._runs.start(item)

    def _note_rate(self, wait: float | None) -> None:
        """Remember when a rate limit that held jobs back lets the next run start (the sooner
        of what the claims said, while still to come): the worker claims again then."""
        if wait is None:
            return
        now = clock.now()
        until = clock.after(now, wait)
        if self._rate_until is None or self._rate_until <= now or until < self._rate_until:
            self._rate_until = until
