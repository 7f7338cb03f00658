"""Job, Run and State: a job as kickq knows it, with what a wait on it fails with.

Pure: how a Job is written to Redis and published (its record and its event JSON) is
kickq/_redis/record.py's.
"""

from __future__ import annotations

import datetime
import enum
from concurrent.futures import Future
from typing import Any

import attrs

from kickq._model import config
from kickq._model.errors import KickqError


class State(str, enum.Enum):
    """Where a job is in its life."""

    NEW = "new"
    QUEUED = "queued"
    DEFERRED = "deferred"
    DELAYED = "delayed"
    PROCESSING = "processing"
    RETRY = "retry"
    GHOST = "ghost"
    SUCCESS = "success"
    FAIL = "fail"

    def __str__(self) -> str:
        return self.value


STATES = frozenset(state.value for state in State)


@attrs.frozen
class Run:
    """One run of a job's handler: `error` says why it failed (`KeyError: 'missing'`, or
    kickq's own text for a ghost or a cancel), `traceback` is the formatted traceback of the
    exception the handler raised (None for a success, a ghost, a cancel, and for records
    written before runs kept one; at most 16384 characters, its end kept)."""

    count: int
    start_time: datetime.datetime | None
    process_time: float | None
    state: State
    error: str | None = None
    traceback: str | None = None


def _default(option: str) -> Any:
    return config.OPTIONS[option].default


@attrs.frozen(kw_only=True)
class Job:
    """A job as stored in Redis, with the effective options it was created with."""

    id: str
    name: str
    data: Any = None
    state: State = State.NEW
    create_time: datetime.datetime | None = None
    update_time: datetime.datetime | None = None
    finish_time: datetime.datetime | None = None
    scheduled_for: datetime.datetime | None = None
    # the per-job options: their defaults are the option table's (config.OPTIONS)
    delay: float | None = _default("delay")
    process_timeout: float = _default("process_timeout")
    retry: bool = _default("retry")
    retry_count: int = _default("retry_count")
    retry_interval: float | None = _default("retry_interval")
    ghost_retry: bool = _default("ghost_retry")
    ghost_count: int = _default("ghost_count")
    ghost_interval: float = _default("ghost_interval")
    hotjob: bool = _default("hotjob")
    hotjob_timeout: float = _default("hotjob_timeout")
    priority: int = _default("priority")
    meta: dict[str, Any] = attrs.field(factory=dict)
    unique_key: str | None = None  # None unless the job is unique
    result: Any = None
    last_error: str | None = None
    # the last value a run reported with kickq.progress(), kept after the job completes
    progress: Any = None
    runs: tuple[Run, ...] = ()
    # the runs up to this count no longer use up retry_count and ghost_count: a requeued job
    # starts with fresh budgets and keeps its history
    budget_start: int = 0
    # `after=`: the parents' ids; the results of those that succeeded, by id (stored as each
    # succeeds); the parents whose end a deferred job still awaits; "run" to run even after a
    # parent failed (else "fail": the job fails with it)
    parents: tuple[str, ...] = ()
    parent_results: dict[str, Any] = attrs.field(factory=dict)
    awaiting: tuple[str, ...] = ()
    after_failed: str = "fail"
    hotjob_future: Future[Job] | None = attrs.field(default=None, eq=False, repr=False)
    # the reply channel of the process whose hotjob this is (see _redis/keys.py): stored, so that
    # whatever finishes or removes the job tells that process; not in events, not compared
    reply_to: str | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def complete(self) -> bool:
        """True once the job succeeded or failed for good."""
        return self.state in (State.SUCCESS, State.FAIL)

    @property
    def success(self) -> bool:
        return self.state is State.SUCCESS

    @property
    def total_process_time(self) -> float | None:
        times = [run.process_time for run in self.runs if run.process_time is not None]
        return round(sum(times), 6) if times else None

    def count_runs(self, state: State) -> int:
        """The runs that ended in `state` since the budgets last started (see requeue)."""
        return sum(1 for run in self.runs if run.state is state and run.count > self.budget_start)


def reply_to_here(job: Job, channel: str) -> None:
    """Name `channel` as the reply channel of `job`, a hotjob just made and not yet shared
    with anything: set in place, since an `attrs.evolve` of a Job costs ~15 µs on the
    create path, against ~0.1 µs."""
    object.__setattr__(job, "reply_to", channel)


class JobFailed(KickqError):
    """The job ended in failure; `.job` is its final record, `.error` the last error."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.error = job.last_error
        super().__init__(f"job {job.id} ({job.name}) failed: {job.last_error}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.job,))


CANCELLED = "cancelled"  # the last_error of a cancelled job, and the error of the run it stopped


class JobCancelled(JobFailed):
    """The job was cancelled (`kickq.cancel`): it ended `fail` with last_error "cancelled"."""


def failure(job: Job) -> JobFailed:
    """The error a wait on a job that ended in failure fails with: JobCancelled for a job that
    was cancelled, else JobFailed."""
    if job.last_error == CANCELLED:
        return JobCancelled(job)
    return JobFailed(job)


# the Job's per-job options and its times, in the order the encodings and the CLI list them
OPTION_FIELDS = (
    "delay",
    "process_timeout",
    "retry",
    "retry_count",
    "retry_interval",
    "ghost_retry",
    "ghost_count",
    "ghost_interval",
    "hotjob",
    "hotjob_timeout",
    "priority",
)
TIME_FIELDS = ("create_time", "update_time", "finish_time", "scheduled_for")
