"""The only reader of wall-clock time.

Every timer in kickq compares a stored deadline with `now()`. Reading the clock through
`datetime.datetime.now` (looked up on the module at call time) lets freezegun drive every timer,
from kickq's background threads too: freezegun answers `datetime.now` without the stack
inspection that hands threads the real `time.time()`.
"""

from __future__ import annotations

import datetime
import sys
import time

UTC = datetime.timezone.utc


def now() -> datetime.datetime:
    """The current time, timezone-aware UTC."""
    return datetime.datetime.now(UTC)


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
