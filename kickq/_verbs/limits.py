"""`kickq.limit()`: a rate and a concurrency limit per job name, for every process at once.

The limits live in Redis (`<ns>:limits:{<name>}`) and the claim script obeys them in the same
atomic step that starts runs, so processes sharing a Redis never need to agree on anything
else: a concurrency limit counts the name's processing index, a rate limit the name's starts
within its window (a sliding log, `<ns>:starts:{<name>}`, at most `rate[0]` entries). Jobs held
back stay queued. Workers are not left polling: a claim held back by a rate says how long until
the window turns, and a run of a concurrency-limited name that ends (in any process) publishes
its wake channel while jobs wait (see claim.lua and transition.lua).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from kickq._engine import runtime
from kickq._engine.future import KickqFuture, failed
from kickq._model import config
from kickq._model.errors import ConfigError
from kickq._verbs.background import in_background

Rate = tuple[int, float]
MAX_RUNS = 1_000_000
"""The most runs a rate or a concurrency counts: a rate's log keeps up to that many starts."""


@attrs.frozen
class Limits:
    """The limits of one job name: `rate` = (at most this many runs start, in any this many
    seconds), `concurrency` = at most this many runs at once; None when there is none."""

    rate: Rate | None = None
    concurrency: int | None = None

    def __str__(self) -> str:
        """For people: "100 per 60 s, 5 at once", or "none"."""
        parts = []
        if self.rate is not None:
            parts.append(f"{self.rate[0]} per {self.rate[1]:g} s")
        if self.concurrency is not None:
            parts.append(f"{self.concurrency} at once")
        return ", ".join(parts) or "none"

    @property
    def any(self) -> bool:
        return self.rate is not None or self.concurrency is not None


def check_rate(rate: object) -> Rate | None:
    """A rate is None, or a pair (runs, seconds): a whole number of runs of at least one, and a
    positive duration (seconds, or a datetime.timedelta)."""
    if rate is None:
        return None
    if not isinstance(rate, (tuple, list)) or len(rate) != 2:
        raise ConfigError(f"rate must be a pair (runs, seconds), not {rate!r}")
    count, seconds = rate
    count = config.check_whole("rate's runs", count, 1, MAX_RUNS)
    return count, config.check_duration("rate's seconds", seconds, positive=True)


def check_concurrency(concurrency: object) -> int | None:
    """A concurrency is None, or a whole number of runs of at least one."""
    if concurrency is None:
        return None
    return config.check_whole("concurrency", concurrency, 1, MAX_RUNS)


def from_hash(fields: Mapping[str, str]) -> Limits:
    """The limits as stored (see limit.lua); a field that does not read as a number is no limit,
    as the claim script sees it."""
    rate = None
    try:
        count, window = int(fields["rate_count"]), float(fields["rate_ms"]) / 1000
    except (KeyError, ValueError):
        pass
    else:
        rate = (count, window)
    try:
        concurrency: int | None = int(fields["concurrency"])
    except (KeyError, ValueError):
        concurrency = None
    return Limits(rate, concurrency)


def limit(name: str, rate: Any = None, concurrency: int | None = None) -> KickqFuture[Limits]:
    """Limit the runs of `name` across every process sharing the Redis: at most `rate[0]` start
    in any `rate[1]` seconds, at most `concurrency` at once. The limits given replace the
    name's (one left out is removed; `limit(name)` removes both). Jobs held back stay queued.
    Resolves to the Limits now in force."""
    try:
        config.check_job_name(name)
        checked_rate = check_rate(rate)
        checked_concurrency = check_concurrency(concurrency)
    except (TypeError, ValueError) as exc:
        return failed(exc)
    limits = Limits(checked_rate, checked_concurrency)

    def apply(engine: runtime.Runtime) -> Limits:
        engine.store.run(engine.store.limit_call(name, checked_rate, checked_concurrency))
        return limits

    return in_background(apply)
