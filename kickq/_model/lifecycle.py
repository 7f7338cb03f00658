"""Pure decisions of a job's life: given a record and the time, what it becomes next.

No I/O here. The store applies what these functions decide, in one Lua step each, and only
if the record has not changed since it was read (its version fences every transition).

    create ──> queued ──claim──> processing ──> success
       └─> delayed ─┘  ^               ├─> retry ──(retry_interval)──┐
                       │               ├─> ghost ──(ghost_interval)──┤
                       │               └─> fail (no retries/ghosts left)
                       ├─────────────── promote (when due) ──────────┘
                       ├─────────────── requeue (by hand) <── fail
                       └─────────────── abandon (a stopping worker gives the run up)
    cancel (by hand): queued, delayed, deferred, processing, retry or ghost ──> fail

    create (after=) ──> deferred ──(its last parent succeeds)──> queued or delayed
                           └──────(a parent fails or is deleted)──> fail
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from kickq._model import clock
from kickq._model.config import MAX_DURATION
from kickq._model.job import CANCELLED, Job, Run, State

IntervalFor = Callable[[Job, int], float]


@attrs.frozen
class Succeeded:
    result: Any


MAX_ERROR_CHARS = 16384
"""The longest error text a run keeps (in its run and in last_error, both stored and in every
event): a longer one, an exception's message of any size, is cut there and says so."""


def cut_error(text: str) -> str:
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return f"{text[:MAX_ERROR_CHARS]}... [{len(text) - MAX_ERROR_CHARS} more characters cut]"


@attrs.frozen
class Failed:
    """A run that failed: its error text (see `describe_error` in _engine/handlers.py), its
    traceback when it raised, and the exception itself, for the log line of its end only."""

    error: str
    traceback: str | None = None
    exception: BaseException | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class Ghosted:
    pass


Outcome = Succeeded | Failed | Ghosted
WAITING = (State.DELAYED, State.RETRY, State.GHOST)
# kept in other fields, or not kept (on_progress: the caller's, see _engine/waits.py)
NOT_ON_THE_JOB = frozenset(
    {"at", "meta", "unique", "unique_key", "after", "after_failed", "on_progress"}
)


@attrs.frozen
class Change:
    """A decided transition: the new job and the events it publishes; for the end of a run
    that raised, the exception (`Failed.exception`), for the job log's line (never stored)."""

    job: Job
    events: tuple[str, ...]
    exception: BaseException | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def finished(self) -> bool:
        return self.job.complete

    def forget_exception(self) -> None:
        """Drop the exception once its log line is written: it holds the run's frames."""
        object.__setattr__(self, "exception", None)


@attrs.frozen
class Parents:
    """What a create with `after=` found of the parents: their ids, the results of those that
    succeeded already, and those whose end the job awaits (every other one)."""

    ids: tuple[str, ...]
    results: dict[str, Any]
    after_failed: str = "fail"

    @property
    def awaiting(self) -> tuple[str, ...]:
        return tuple(parent for parent in self.ids if parent not in self.results)


def create(
    job_id: str,
    name: str,
    data: Any,
    options: Mapping[str, Any],
    now: datetime.datetime,
    unique_key: str | None = None,
    parents: Parents | None = None,
) -> Change:
    """A new job from its effective options (the cascade's, with `at` and `meta` of the call):
    deferred while it awaits `parents`, else delayed until `at` or `delay` if that is still to
    come, else queued at once."""
    job_options = {name: value for name, value in options.items() if name not in NOT_ON_THE_JOB}
    at, delay = options.get("at"), options.get("delay")
    if at is not None:
        scheduled_for = at.astimezone(datetime.timezone.utc)
        job_options["delay"] = None
    else:
        scheduled_for = clock.after(now, delay) if delay else None
    delayed = scheduled_for is not None and scheduled_for > now
    state = State.DELAYED if delayed else State.QUEUED
    events: tuple[str, ...] = ("create",) if delayed else ("create", "queued")
    if parents is not None:
        job_options.update(
            parents=parents.ids,
            parent_results=parents.results,
            awaiting=parents.awaiting,
            after_failed=parents.after_failed,
        )
        if parents.awaiting:  # a delay counts from the job's release (see `heard`)
            state, events = State.DEFERRED, ("create",)
            scheduled_for = None if at is None else scheduled_for
    job = Job(
        id=job_id,
        name=name,
        data=data,
        state=state,
        create_time=now,
        update_time=now,
        scheduled_for=scheduled_for,
        meta=options.get("meta") or {},
        unique_key=unique_key,
        **job_options,
    )
    return Change(job, events)


PARENT_DELETED = "deleted"
"""How a parent ended when it was deleted or purged before it succeeded (see `ParentEnd`)."""


@attrs.frozen
class ParentEnd:
    """How a parent of a deferred job ended: "success" (with its result), "fail" (for good,
    or cancelled) or PARENT_DELETED."""

    parent: str
    outcome: str
    result: Any = None


def heard(job: Job, ends: list[ParentEnd], now: datetime.datetime) -> Change | None:
    """A deferred job told how some of its parents ended: each success stores its result on
    the job; a failure or a deletion fails the job for good (unless after_failed="run"); once
    no parent is awaited the job is released: delayed until `at`, or for `delay` from now, else
    queued. Ends of parents it no longer awaits (told twice) and any job that is not deferred
    are left alone: None when nothing changes."""
    if job.state is not State.DEFERRED:
        return None
    awaiting, results = list(job.awaiting), dict(job.parent_results)
    for end in ends:
        if end.parent not in awaiting:
            continue
        awaiting.remove(end.parent)
        if end.outcome == "success":
            results[end.parent] = end.result
        elif job.after_failed != "run":
            why = "was deleted" if end.outcome == PARENT_DELETED else "failed"
            error = f"parent {end.parent} {why}"
            failed = attrs.evolve(
                job,
                state=State.FAIL,
                parent_results=results,
                awaiting=(),  # it awaits nothing more
                last_error=error,
                update_time=now,
                finish_time=now,
            )
            return Change(failed, ("fail",))
    if awaiting == list(job.awaiting):
        return None
    if awaiting:
        return Change(attrs.evolve(job, awaiting=tuple(awaiting), parent_results=results), ())
    due = job.scheduled_for or (clock.after(now, job.delay) if job.delay else None)
    delayed = due is not None and due > now
    released = attrs.evolve(
        job,
        state=State.DELAYED if delayed else State.QUEUED,
        awaiting=(),
        parent_results=results,
        update_time=now,
        scheduled_for=due if delayed else None,
    )
    return Change(released, () if delayed else ("queued",))


def unique_key_of(data_json_sorted: str) -> str:
    """The key of a unique job without an explicit one: a digest of its data as canonical
    JSON (sorted keys), so that equal data gives the same key whatever its dicts' order."""
    return hashlib.sha256(data_json_sorted.encode("utf-8")).hexdigest()


def promote(job: Job, now: datetime.datetime) -> Change | None:
    """A waiting job whose time has come is queued; anything else is left alone."""
    if job.state not in WAITING:
        return None
    return Change(attrs.evolve(job, state=State.QUEUED, update_time=now), ("queued",))


def requeue(job: Job, now: datetime.datetime) -> Change | None:
    """A job that failed for good is queued again, with fresh retry and ghost budgets; its
    runs stay. Anything else is left alone."""
    if job.state is not State.FAIL:
        return None
    again = attrs.evolve(
        job,
        state=State.QUEUED,
        update_time=now,
        finish_time=None,
        scheduled_for=None,
        budget_start=max((run.count for run in job.runs), default=0),
        awaiting=(),  # a job failed by a parent runs at once: its parents are not awaited again
    )
    return Change(again, ("queued",))


def cancel(job: Job, now: datetime.datetime) -> Change | None:
    """A job that is not complete ends `fail` for good with last_error "cancelled"; the run in
    progress, if any, ends as a failed run with that error. A complete job is left alone."""
    if job.complete or job.state is State.NEW:
        return None
    runs = job.runs
    if job.state is State.PROCESSING and runs:
        runs = (*runs[:-1], _closed_run(job, now, State.FAIL, CANCELLED))
    ended = attrs.evolve(
        job,
        state=State.FAIL,
        runs=runs,
        awaiting=(),  # a deferred job awaits nothing more
        last_error=CANCELLED,
        update_time=now,
        finish_time=now,
        scheduled_for=None,
    )
    return Change(ended, ("fail",))


ABANDONED = "abandoned: the worker stopped before the run ended"
"""The error of a run its worker gave up, stopping (see `abandon`)."""
FREE_ABANDONS = 10
"""How many abandoned runs a job may have (since its budgets last started) before each further
one counts as a ghost."""


def abandoned(run: Run) -> bool:
    """Whether `run` was given up by a stopping worker (see `abandon`)."""
    return run.state is State.GHOST and run.error == ABANDONED


def _abandons(job: Job) -> int:
    """The abandoned runs since the job's budgets last started."""
    return sum(1 for run in job.runs if run.count > job.budget_start and abandoned(run))


def ghosts(job: Job) -> int:
    """The ghosted runs that use up ghost_count: every ghost since the budgets last started
    but the first FREE_ABANDONS abandoned runs."""
    return job.count_runs(State.GHOST) - min(_abandons(job), FREE_ABANDONS)


def _closed_run(
    job: Job,
    now: datetime.datetime,
    state: State,
    error: str | None = None,
    traceback: str | None = None,
) -> Run:
    """The run in progress, ended at `now` in `state`."""
    current = job.runs[-1]
    started = current.start_time or now
    process_time = round(max((now - started).total_seconds(), 0.0), 6)
    return Run(current.count, started, process_time, state, error, traceback)


def abandon(job: Job, now: datetime.datetime) -> Change | None:
    """The run in progress given up by its worker, which stops before the run ends (its grace
    ran out, `Worker.stop(timeout)` expired, `kickq.reset()`): the job is queued again at once,
    at its priority, and the run kept as a ghost whose error is ABANDONED. An abandoned run is
    not a failure of the job: it uses up neither retry_count nor ghost_count, up to
    FREE_ABANDONS of them; each one after that counts as a ghost (the job waits ghost_interval,
    or fails once ghost_count is spent), so that a job that stops every worker running it does
    not go round for ever. Anything but a run in progress is left alone."""
    if job.state is not State.PROCESSING or not job.runs:
        return None
    run = _closed_run(job, now, State.GHOST, ABANDONED)
    given_up = attrs.evolve(job, runs=(*job.runs[:-1], run))
    if _abandons(given_up) > FREE_ABANDONS:
        return _ghosted(job, run, ghosts(given_up), now)
    again = attrs.evolve(
        given_up, state=State.QUEUED, last_error=ABANDONED, update_time=now, scheduled_for=None
    )
    return Change(again, ("queued",))


def _wait(seconds: float) -> float:
    """A retry wait a datetime can hold: a retry_interval function may return anything."""
    if not seconds >= 0:  # negative or NaN
        return 0.0
    return min(seconds, MAX_DURATION)


def end_run(
    job: Job, outcome: Outcome, now: datetime.datetime, interval_for: IntervalFor
) -> Change | None:
    """The end of the run in progress: success, a failure or a ghost, and what comes next."""
    if job.state is not State.PROCESSING or not job.runs:
        return None
    if isinstance(outcome, Succeeded):
        run = _closed_run(job, now, State.SUCCESS)
        done = attrs.evolve(
            job,
            state=State.SUCCESS,
            result=outcome.result,
            runs=(*job.runs[:-1], run),
            update_time=now,
            finish_time=now,
            scheduled_for=None,
        )
        return Change(done, ("success",))

    if isinstance(outcome, Failed):
        run = _closed_run(job, now, State.FAIL, cut_error(outcome.error), outcome.traceback)
        failures = job.count_runs(State.FAIL) + 1
        again = job.retry and failures <= job.retry_count
        wait = _wait(interval_for(job, failures)) if again else 0.0
        return _ended(job, run, again, State.RETRY, wait, now, outcome.exception)
    error = f"run {job.runs[-1].count} overran process_timeout ({job.process_timeout:g}s): ghost"
    run = _closed_run(job, now, State.GHOST, error)
    return _ghosted(job, run, ghosts(job) + 1, now)


def _ghosted(job: Job, run: Run, ghosted: int, now: datetime.datetime) -> Change:
    """The run in progress ended as `run`, a ghost, the job's `ghosted`th that counts."""
    again = job.ghost_retry and ghosted <= job.ghost_count
    return _ended(job, run, again, State.GHOST, job.ghost_interval, now)


def _ended(
    job: Job,
    run: Run,
    again: bool,
    next_state: State,
    wait: float,
    now: datetime.datetime,
    exception: BaseException | None = None,
) -> Change:
    """The run in progress ended as `run`: the job waits `wait` in `next_state` if `again`,
    else fails for good; `exception` what the run raised, for the job log."""
    runs = (*job.runs[:-1], run)
    if again:
        ended = attrs.evolve(
            job,
            state=next_state,
            runs=runs,
            last_error=run.error,
            update_time=now,
            scheduled_for=clock.after(now, wait),
        )
    else:
        ended = attrs.evolve(
            job,
            state=State.FAIL,
            runs=runs,
            last_error=run.error,
            update_time=now,
            finish_time=now,
            scheduled_for=None,
        )
    return Change(ended, ("fail",), exception)


def placement(job: Job, purge_timeout: float) -> tuple[str, int]:
    """Where the job's id lives after a change, with the score of that sorted set (ms; for the
    queue, the priority)."""
    if job.state is State.QUEUED:
        return "queue", job.priority  # the script turns it into the queue's score
    if job.state is State.DEFERRED:
        return "deferred", 0  # in its index alone: no time is due
    if job.complete:
        finished = job.finish_time or job.update_time or clock.now()
        return "finished", clock.to_ms(clock.after(finished, purge_timeout))
    due = job.scheduled_for or job.update_time or clock.now()
    return "scheduled", clock.to_ms(due)
