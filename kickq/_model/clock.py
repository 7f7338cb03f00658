"""The only reader of time.

Every timer in kickq compares a stored deadline with `now()`. Reading the clock through
`datetime.datetime.now` (looked up on the module at call time) lets freezegun drive every timer,
from kickq's background threads too: freezegun answers `datetime.now` without the stack
inspection that hands threads the real `time.time()`.

`now()` adds the process's correction (`set_offset`): zero while the host's clock agrees with
the Redis server's, else the offset measured against Redis's TIME (see _skew.py), so that every
process's deadlines agree however far its host's clock is off. The measurement reads
`host_time()`, the host's real clock, which freezegun leaves alone: under a frozen clock the
offset measured is the real one (about zero), and frozen time still drives everything.

`real_monotonic()` is the one other reading: seconds of real time for waiting on real things
(a server starting, a thread or a connection), never for a timer.
"""

from __future__ import annotations

import datetime
import sys
import time

UTC = datetime.timezone.utc
_NO_OFFSET = datetime.timedelta(0)
_offset = _NO_OFFSET  # replaced whole, never changed in place: readers need no lock
_REALTIME = getattr(time, "clock_gettime", None)  # not on every platform


def now() -> datetime.datetime:
    """The current time, timezone-aware UTC, corrected by the offset to Redis's clock."""
    moment = datetime.datetime.now(UTC)
    offset = _offset
    return moment + offset if offset else moment


def now_at(seconds: float) -> datetime.datetime:
    """The host's time corrected by `seconds` rather than by the current offset: the time of a
    set of deadlines that move together when the offset does (see Waits)."""
    moment = datetime.datetime.now(UTC)
    return moment + datetime.timedelta(seconds=seconds) if seconds else moment


def offset() -> float:
    """Seconds added to the host's clock by `now()` (0.0 unless the host's clock is off)."""
    return _offset.total_seconds()


def set_offset(seconds: float) -> float:
    """Correct `now()` by `seconds` from now on; returns by how much `now()` moved."""
    global _offset
    before = _offset
    _offset = datetime.timedelta(seconds=seconds) if seconds else _NO_OFFSET
    return (_offset - before).total_seconds()


def host_time() -> float:
    """Seconds since the epoch on the host's real clock (CLOCK_REALTIME, which freezegun does
    not patch; else its saved `time.time`): what the offset to Redis's clock is measured with."""
    if _REALTIME is not None:
        return float(_REALTIME(time.CLOCK_REALTIME))
    api = sys.modules.get("freezegun.api")
    real = getattr(api, "real_time", None)
    return float(real()) if callable(real) else time.time()


def to_ms(moment: datetime.datetime) -> int:
    """Milliseconds since the epoch: the score of every deadline kept in Redis."""
    return round(moment.timestamp() * 1000)


def to_us(moment: datetime.datetime) -> int:
    """Microseconds since the epoch: the score of the state indexes, which list jobs in the
    order they changed (exact in a double until the year 2255)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime.datetime:
    """The moment `us` microseconds after the epoch (UTC), exactly."""
    return _EPOCH + datetime.timedelta(microseconds=us)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)


def to_iso(moment: datetime.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def after(moment: datetime.datetime, seconds: float) -> datetime.datetime:
    return moment + datetime.timedelta(seconds=seconds)


def real_monotonic() -> float:
    """Seconds of real time from an arbitrary start, for timeouts a test's clock must not stop:
    freezegun freezes `time.monotonic` (and every module's reference to it) but keeps the real
    one, which is used here whether or not a freeze has started."""
    api = sys.modules.get("freezegun.api")
    real = getattr(api, "real_monotonic", None)
    return float(real()) if callable(real) else time.monotonic()
