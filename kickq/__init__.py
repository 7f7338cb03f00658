"""kickq: a Redis-backed job queue that lives in your process.

Create jobs as futures, process them in background threads of the same (or any) process, and
await their results. See README.md for a tour, API.md-style docs in the docstrings.
"""

from __future__ import annotations

from kickq._engine.cancel_routing import cancelled
from kickq._engine.future import KickqFuture
from kickq._engine.heartbeats import WorkerInfo
from kickq._engine.worker import Worker
from kickq._model.errors import (
    ConfigError,
    DamagedRecord,
    HotjobTimeout,
    JobKeptChanging,
    JobNotFound,
    KickqError,
    RedisUnavailable,
    SerializationError,
    TimeLimitExceeded,
)
from kickq._model.job import Job, JobCancelled, JobFailed, Run, State
from kickq._model.retries import backoff
from kickq._model.schedules import Schedule
from kickq._verbs.api import (
    EventSubscription,
    create,
    create_many,
    delete,
    get,
    on,
    process,
    progress,
    reset,
    use,
    wait,
)
from kickq._verbs.api import configure as config
from kickq._verbs.cancel import cancel
from kickq._verbs.limits import limit
from kickq._verbs.processors import processor, start
from kickq._verbs.query import JobQuery, jobs, promote, requeue
from kickq._verbs.scheduling import schedule, schedules, unschedule
from kickq._verbs.stats import NameStats, pause, resume, stats, workers

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DamagedRecord",
    "EventSubscription",
    "HotjobTimeout",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobKeptChanging",
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
    "TimeLimitExceeded",
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
    "progress",
    "promote",
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
