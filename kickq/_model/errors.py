"""Every error kickq raises or sets on a future.

KickqError
├── ConfigError          (also ValueError)  a bad option, name or value
├── SerializationError   (also TypeError)   data or a result that is not JSON
├── JobNotFound          (also LookupError) no record under that id
├── HotjobTimeout        (also TimeoutError) a wait outlived its timeout
├── JobFailed                                the job ended in failure (in job.py, with the Job)
│   └── JobCancelled                         it was cancelled (kickq.cancel; in job.py too)
├── RedisUnavailable     (also ConnectionError) Redis cannot be reached or refuses to serve
├── DamagedRecord        (also ValueError)   the job's record in Redis cannot be read
└── JobKeptChanging      (also RuntimeError and ValueError) the job changed under every try of
                                             a cancel or requeue, which was not applied

TimeLimitExceeded (a BaseException, outside KickqError) is raised inside a handler's thread, never
by a call of kickq's API: see its docstring.
"""

from __future__ import annotations


class KickqError(Exception):
    """Base of every kickq error."""


class ConfigError(KickqError, ValueError):
    """A configuration option, per-job option or job name is invalid."""


class SerializationError(KickqError, TypeError):
    """A value that must travel through Redis is not JSON-serialisable."""


class JobNotFound(KickqError, LookupError):
    """No job with this id exists (never created, deleted or purged)."""


class HotjobTimeout(KickqError, TimeoutError):
    """The job did not finish before the wait's timeout."""


class RedisUnavailable(KickqError, ConnectionError):
    """Redis cannot be reached, or refuses to serve for now (out of memory, loading, read-only)."""


class DamagedRecord(KickqError, ValueError):
    """The job's record in Redis cannot be read; kickq sets such a record aside, under
    `<namespace>:damaged:<id>`, for a human to look at."""

    def __init__(self, job_id: str, why: str) -> None:
        self.job_id = job_id
        self.why = why
        super().__init__(f"job {job_id} has a damaged record: {why}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.job_id, self.why))


class JobKeptChanging(KickqError, RuntimeError, ValueError):
    """The job's record changed between the read and the write of every try of a change (a
    cancel, a requeue), so the change was not applied; calling again decides anew. It is a
    RuntimeError as a cancel's was, and a ValueError as a requeue's was."""

    def __init__(self, job_id: str, not_done: str) -> None:
        self.job_id = job_id
        self.not_done = not_done
        super().__init__(f"job {job_id} kept changing; it was not {not_done}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.job_id, self.not_done))


class TimeLimitExceeded(BaseException):
    """Raised inside a plain handler's thread when its run overruns `process_timeout`: the run
    fails with it (`last_error` reads "TimeLimitExceeded: run 1 overran process_timeout (10s)")
    and its retries apply as for any failure.

    A BaseException, as KeyboardInterrupt and asyncio.CancelledError are, and not a KickqError:
    a handler's `except Exception:` (a retry loop, a "log and go on" around each item) must not
    swallow it, or the run would go on past its limit. Code that must clean up uses `finally`
    or a `with` block, which it runs through.

    It is raised as Python's own asynchronous exception of a thread: it takes effect at the next
    Python instruction the thread runs. A thread blocked in C (time.sleep, a socket read, a lock
    or Event wait) gets it only when that call returns."""
