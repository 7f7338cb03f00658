"""When the ticks of a repeatable job fall: a five-field cron expression read in a time zone's
wall-clock time, or a fixed interval.

Pure: no I/O and no clock; every time comes in and goes out as milliseconds since the epoch,
the scores kept in Redis. Cron arithmetic is cronsim's, which follows Debian cron across
daylight-saving changes: a job at a fixed wall-clock time runs once on the day the clocks
change, at the first instant of an hour that is repeated, and at the end of a gap (02:30 in a
02:00-03:00 gap runs at 03:00) for an hour that is skipped. Cron fields that are wildcards or
steps over the hour ("0 * * * *") follow real time instead: every real hour once.
"""

from __future__ import annotations

import datetime
import json
import zoneinfo

import attrs
from cronsim import CronSim, CronSimError

from kickq._model.config import check_duration
from kickq._model.errors import ConfigError

UTC = datetime.timezone.utc
MIN_EVERY_MS = 1000  # ticks are acted on within about a second: a shorter interval cannot be kept
_CATCH_UP_STEPS = 1000
_STEPS = 4  # a repeated wall-clock hour can hand back, at most this often, a time already past


def from_ms(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, UTC)


def to_ms(moment: datetime.datetime) -> int:
    return round(moment.timestamp() * 1000)


@attrs.frozen
class Timing:
    """The ticks of one schedule: `cron` in `tz`, or one every `every_ms` milliseconds."""

    cron: str | None
    every_ms: int | None
    tz: str
    zone: zoneinfo.ZoneInfo = attrs.field(eq=False, repr=False)

    @property
    def spec(self) -> str:
        """What decides the ticks, as text: a schedule saved again with the same spec keeps its
        next tick (every process may schedule at start-up without re-firing or skipping one)."""
        return json.dumps([self.cron, self.every_ms, self.tz])

    def first(self, now_ms: int) -> int:
        """The first tick of a new schedule: the cron's next, or one interval from now."""
        if self.every_ms is not None:
            return now_ms + self.every_ms
        return self._cron_after(now_ms)

    def after(self, tick_ms: int) -> int:
        """The tick that follows `tick_ms`."""
        if self.every_ms is not None:
            return tick_ms + self.every_ms
        return self._cron_after(tick_ms)

    def catch_up(self, due_ms: int, now_ms: int) -> tuple[int, int]:
        """After ticks were missed from `due_ms` on: the latest tick at or before `now_ms` (never
        before `due_ms`), and the first one after `now_ms`."""
        if self.every_ms is not None:
            latest = due_ms + (now_ms - due_ms) // self.every_ms * self.every_ms
            return latest, latest + self.every_ms
        latest = max(due_ms, self._cron_at_or_before(now_ms))
        following = self._cron_after(latest)
        for _ in range(_CATCH_UP_STEPS):
            # cronsim's reverse steps count wall-clock time too, and can step over the first
            # pass of a repeated hour: walk on in real time from where they stopped
            if following > now_ms:
                return latest, following
            latest, following = following, self._cron_after(following)
        return latest, self._cron_after(now_ms)

    def _cron_after(self, ms: int) -> int:
        assert self.cron is not None
        moment = from_ms(ms)
        ticks = CronSim(self.cron, moment.astimezone(self.zone))
        for _ in range(_STEPS):
            # cronsim counts in wall-clock time: from the second pass of a repeated hour it can
            # answer a wall-clock time of the first pass, which is already past
            tick = next(ticks, None)
            if tick is None:  # no match in cronsim's next 50 years
                break
            if tick > moment:
                return to_ms(tick)
        raise ValueError(f"cron {self.cron!r} gives no tick after {moment.isoformat()}")

    def _cron_at_or_before(self, ms: int) -> int:
        assert self.cron is not None
        moment = from_ms(ms)
        # cronsim's reverse steps start strictly before the (whole) second they are given
        start = moment.replace(microsecond=0) + datetime.timedelta(seconds=1)
        ticks = CronSim(self.cron, start.astimezone(self.zone), reverse=True)
        for _ in range(_STEPS):
            tick = next(ticks, None)
            if tick is None:
                break
            if tick <= moment:
                return to_ms(tick)
        raise ValueError(f"cron {self.cron!r} gives no tick before {moment.isoformat()}")


def timing(cron: object, every: object, tz: object) -> Timing:
    """Check a schedule's cron or interval and time zone; ConfigError naming what is wrong."""
    if (cron is None) == (every is None):
        raise ConfigError("schedule() takes exactly one of cron and every")
    zone = _zone(tz)
    assert isinstance(tz, str)
    if every is not None:
        seconds = check_duration("every", every, least=MIN_EVERY_MS / 1000)
        every_ms = round(seconds * 1000)
        return Timing(None, every_ms, tz, zone)
    return Timing(_cron(cron, zone), None, tz, zone)


def _zone(tz: object) -> zoneinfo.ZoneInfo:
    if not isinstance(tz, str) or not tz:
        raise ConfigError(f"tz must be an IANA time zone name such as 'Europe/Athens', not {tz!r}")
    try:
        return zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(f"tz {tz!r} is not a known IANA time zone name") from None


def _cron(cron: object, zone: zoneinfo.ZoneInfo) -> str:
    """Five fields (minute, hour, day of month, month, day of week; names such as MON-FRI and
    JAN are allowed); cronsim's six-field form with seconds is not."""
    if not isinstance(cron, str):
        raise ConfigError(f"cron must be a str such as '0 9 * * MON-FRI', not {cron!r}")
    fields = cron.split()
    if len(fields) != 5:
        raise ConfigError(
            f"cron must have five fields (minute hour day month weekday), not {len(fields)}: "
            f"{cron!r}"
        )
    text = " ".join(fields)
    reference = datetime.datetime(2000, 1, 1, tzinfo=zone)
    try:
        next(CronSim(text, reference))
    except CronSimError as exc:
        raise ConfigError(f"cron {cron!r} is not a valid expression: {exc}") from None
    except StopIteration:
        raise ConfigError(f"cron {cron!r} never matches a date") from None
    return text
