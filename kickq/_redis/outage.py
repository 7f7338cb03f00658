"""What "Redis is down" means to kickq, what its users see of it, and how its loops wait.

An outage is anything that says "not now" rather than "never": a connection that fails or
times out, and a server that refuses to serve for a while (out of memory, loading its data,
busy in a script, a read-only replica, a cluster failing over). Every background loop (the
workers, the timer, the pub/sub listener) meets errors through `LoopBackoff`: it backs off
exponentially up to `MAX_BACKOFF` and logs a repeated failure once.
"""

from __future__ import annotations

import logging

import redis

from kickq._model.errors import ConfigError, RedisUnavailable

MAX_BACKOFF = 2.0
"""The longest pause, in seconds, of a background loop retrying after a Redis error."""
FIRST_BACKOFF = 0.05

# error replies meaning "try again later"; found anywhere in the text, because Redis 6.2 wraps
# an error raised inside a script ("ERR Error running script ... -OOM command not allowed")
_BUSY_REPLIES = (
    "OOM command not allowed",
    "LOADING ",
    "BUSY ",
    "READONLY ",
    "MASTERDOWN ",
    "TRYAGAIN ",
    "CLUSTERDOWN ",
    "NOREPLICAS ",
    "MISCONF ",
)
_UNREACHABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    OSError,
    redis.exceptions.RedisClusterException,  # e.g. no node of the cluster answers
)
_OUTAGE_TYPES = (
    *_UNREACHABLE,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)
# what a cluster node answers a client that takes it for a single server
_CLUSTER_ONLY = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.ClusterCrossSlotError,
)
_REFUSALS = ("NOAUTH", "WRONGPASS", "NOPERM", "Protocol error: unauthenticated")


ErrorReply = redis.ResponseError
"""An error reply of Redis (redis-py's ResponseError): a command refused, not a lost connection."""


class Unanswered(redis.ConnectionError):
    """Calls that went out to Redis (all or part of their bytes) whose replies never came: the
    connection failed or timed out after the send began, so Redis may have applied any of them.
    Any other connection error of a batch means nothing of it was sent."""


NODE_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterDownError)
"""What a node that went away answers: on a Redis Cluster, read the slot table again."""


def is_outage(exc: BaseException) -> bool:
    """True when Redis cannot serve now but may later: retry, do not give up on the job."""
    if isinstance(exc, _OUTAGE_TYPES):
        return True
    if isinstance(exc, redis.ResponseError):
        text = f"{getattr(exc, 'status_code', '') or ''} {exc}"
        return any(reply in text for reply in _BUSY_REPLIES)
    return False


def refused_for_good(error: BaseException) -> bool:
    """Whether Redis refused a call so that sending it again gets the same answer: an error of
    the script itself (an argument it cannot take, a key of the wrong type). Not a server that
    cannot serve for now (see `is_outage`), a slot moving on a cluster, or a refused login."""
    if not isinstance(error, redis.ResponseError) or is_outage(error):
        return False
    if isinstance(error, (redis.exceptions.MovedError, redis.exceptions.AskError)):
        return False
    return not str(error).startswith(_NOT_FOR_GOOD)


_NOT_FOR_GOOD = ("MOVED ", "ASK ", "NOSCRIPT", "NOAUTH", "NOPERM", "WRONGPASS")


def maybe_applied(error: BaseException) -> bool:
    """Whether a call that failed so may still have been applied by Redis: the connection
    failed or timed out once the call may have been sent. A reply that refused it (busy, out of
    memory, read-only) means it was not."""
    return isinstance(error, (redis.ConnectionError, redis.TimeoutError, OSError))


def translate(exc: BaseException, where: str) -> BaseException:
    """The error a kickq user sees for what redis-py raised: RedisUnavailable for a server
    that cannot be reached, refuses to serve for now, or refuses kickq's credentials;
    ConfigError for a cluster node taken for a single server; the error itself otherwise."""
    if isinstance(exc, _CLUSTER_ONLY) or (
        isinstance(exc, redis.ResponseError)
        and str(exc).startswith(("MOVED ", "ASK ", "CROSSSLOT "))
    ):
        hint = ConfigError(
            f"Redis at {where} is a node of a Redis Cluster: set "
            f"redis_options={{'cluster': True}} (or KICKQ_REDIS_CLUSTER=1) ({exc})"
        )
        hint.__cause__ = exc
        return hint
    if isinstance(exc, _UNREACHABLE):
        return _unavailable(f"Redis at {where} cannot be reached: {exc}", exc)
    if is_outage(exc):
        return _unavailable(f"Redis at {where} refuses to serve for now: {exc}", exc)
    if isinstance(exc, redis.ResponseError) and str(exc).startswith(_REFUSALS):
        return _unavailable(f"Redis at {where} refused kickq: {exc}", exc)
    return exc


def _unavailable(message: str, cause: BaseException) -> RedisUnavailable:
    error = RedisUnavailable(message)
    error.__cause__ = cause
    return error


class LoopBackoff:
    """Backoff and log-once for one background loop (workers, the timer, the listener).

    `failed(exc)` returns how long to pause before the next try (doubling from FIRST_BACKOFF
    up to MAX_BACKOFF) and logs the failure the first time it is seen, not at every retry;
    `succeeded()` resets the pause and logs the recovery once.
    """

    def __init__(
        self, what: str, log: logging.Logger, expected: tuple[type[BaseException], ...] = ()
    ) -> None:
        self._what = what
        self._log = log
        self._expected = expected  # more errors to log as an outage, without a traceback
        self._pause = 0.0
        self._last = ""

    def failed(self, exc: BaseException) -> float:
        seen = f"{type(exc).__name__}: {exc}"
        if seen != self._last:
            if is_outage(exc) or isinstance(exc, self._expected):
                self._log.warning("%s: Redis unavailable (%s); retrying", self._what, seen)
            else:
                self._log.error("%s failed; retrying", self._what, exc_info=exc)
        self._last = seen
        self._pause = min(max(self._pause * 2, FIRST_BACKOFF), MAX_BACKOFF)
        return self._pause

    def succeeded(self) -> None:
        if self._pause:
            self._log.info("%s: working again", self._what)
        self._pause, self._last = 0.0, ""
