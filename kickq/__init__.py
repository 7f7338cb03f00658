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
from ._errors import (
    ConfigError,
    HotjobTimeout,
    JobNotFound,
    KickqError,
    RedisUnavailable,
    SerializationError,
)
from ._future import KickqFuture
from ._job import Job, JobFailed, Run, State
from ._retries import backoff
from ._schedules import Schedule
from ._scheduling import schedule, schedules, unschedule
from ._worker import Worker

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "EventSubscription",
    "HotjobTimeout",
    "Job",
    "JobFailed",
    "JobNotFound",
    "KickqError",
    "KickqFuture",
    "RedisUnavailable",
    "Run",
    "Schedule",
    "SerializationError",
    "State",
    "Worker",
    "__version__",
    "backoff",
    "config",
    "create",
    "create_many",
    "delete",
    "get",
    "on",
    "process",
    "reset",
    "schedule",
    "schedules",
    "unschedule",
    "use",
    "wait",
]
