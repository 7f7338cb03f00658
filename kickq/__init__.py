"""kickq: a Redis-backed job queue that lives in your process.

Create jobs as futures, process them in background threads of the same (or any) process, and
await their results. See README.md for a tour, API.md-style docs in the docstrings.
"""

from __future__ import annotations

from ._api import (
    EventSubscription,
    create,
    create_many,
    delete,
    get,
    on,
    process,
    reset,
    use,
    wait,
)
from ._api import configure as config
from ._cancel import cancel
from ._cancel_router import cancelled
from ._errors import (
    ConfigError,
    HotjobTimeout,
    JobNotFound,
    KickqError,
    RedisUnavailable,
    SerializationError,
)
from ._future import KickqFuture
from ._heartbeats import WorkerInfo
from ._job import Job, JobCancelled, JobFailed, Run, State
from ._limits import limit
from ._processors import processor, start
from ._query import JobQuery, jobs, requeue
from ._retries import backoff
from ._schedules import Schedule
from ._scheduling import schedule, schedules, unschedule
from ._stats import NameStats, pause, resume, stats, workers
from ._worker import Worker

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "EventSubscription",
    "HotjobTimeout",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "JobQuery",
    "KickqError",
    "KickqFuture",
    "NameStats",
    "RedisUnavailable",
    "Run",
    "Schedule",
    "SerializationError",
    "State",
    "Worker",
    "WorkerInfo",
    "__version__",
    "backoff",
    "cancel",
    "cancelled",
    "config",
    "create",
    "create_many",
    "delete",
    "get",
    "jobs",
    "limit",
    "on",
    "pause",
    "process",
    "processor",
    "requeue",
    "reset",
    "resume",
    "schedule",
    "schedules",
    "start",
    "stats",
    "unschedule",
    "use",
    "wait",
    "workers",
]
