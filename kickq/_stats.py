"""`kickq.stats()`, `workers()`, `pause()` and `resume()`.

The numbers come from what the state-changing scripts keep for each name in bounded memory:
the indexes (counts), 60 per-minute completion counters, the last RUN_TIMES process times, the
set of paused names, and each name's limits (see _limits.py). Reading them is a pipeline of
small reads per name; nothing scans.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import attrs

from . import _clock as clock
from . import _config as config
from . import _indexes as indexes
from . import _runtime as runtime
from ._api import in_background
from ._future import KickqFuture, failed
from ._heartbeats import WorkerInfo, live_workers
from ._keys import SEEN_STATES
from ._limits import Limits, from_hash
from ._store import Store, checked

MINUTES = 60
_MINUTE = re.compile(r"(\d+):(\d+):(\d+)")


class ProcessTime(NamedTuple):
    """Process time percentiles in seconds over a name's last runs."""

    p50: float
    p95: float
    max: float


class FinishedMinute(NamedTuple):
    """The jobs of a name that completed in one minute (not runs: a retried job counts once)."""

    minute: datetime.datetime
    succeeded: int
    failed: int


@attrs.frozen
class NameStats:
    """What `kickq.stats()` reports for one job name."""

    counts: Mapping[str, int]
    paused: bool
    oldest_queued_age: float | None  # seconds the oldest queued job has waited
    finished_per_minute: Sequence[FinishedMinute]  # the last 60 minutes, the oldest first
    process_time: ProcessTime | None  # over the last 1,000 runs
    # kickq.limit(): the rate and the concurrency, None where there is none
    limits: Limits = attrs.field(factory=Limits)


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of a sorted, non-empty list."""
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil without floats creeping in
    return ordered[int(rank) - 1]


def process_time(texts: Sequence[str]) -> ProcessTime | None:
    times = []
    for text in texts:
        try:
            times.append(float(text))
        except ValueError:
            continue  # a stray entry costs one sample, not the stats
    if not times:
        return None
    times.sort()
    return ProcessTime(_percentile(times, 0.5), _percentile(times, 0.95), times[-1])


def finished_per_minute(fields: Mapping[str, str], now: datetime.datetime) -> list[FinishedMinute]:
    """The 60 minutes up to `now` from a name's counters ("<minute>:<ok>:<failed>" per
    minute % 60): a counter left from an older hour reads as nothing done."""
    current = clock.to_ms(now) // 60_000
    minutes = []
    for minute in range(current - MINUTES + 1, current + 1):
        found = _MINUTE.fullmatch(fields.get(str(minute % MINUTES), ""))
        ok = failed = 0
        if found and int(found.group(1)) == minute:
            ok, failed = int(found.group(2)), int(found.group(3))
        start = datetime.datetime.fromtimestamp(minute * 60, datetime.timezone.utc)
        minutes.append(FinishedMinute(start, ok, failed))
    return minutes


def _read(store: Store, names: Sequence[str]) -> dict[str, NameStats]:
    now = clock.now()
    counts = indexes.counts(store, names, SEEN_STATES)
    pipe = store.client.pipeline(transaction=False)
    for name in names:
        keys = store.keys_of_name(name)
        pipe.sismember(keys.paused, name)
        pipe.hgetall(keys.minutes(name))
        pipe.lrange(keys.times(name), 0, -1)
        pipe.hgetall(keys.limits(name))
    replies = checked(pipe.execute(raise_on_error=False))
    oldest = _oldest_queued(store, names)
    found = {}
    for i, name in enumerate(names):
        paused, minutes, times, limits = replies[4 * i : 4 * i + 4]
        since = oldest[i]
        age = None if since is None else max((clock.to_us(now) - since) / 1e6, 0.0)
        found[name] = NameStats(
            counts=dict(zip(SEEN_STATES, counts[i], strict=True)),
            paused=bool(paused),
            oldest_queued_age=age,
            finished_per_minute=finished_per_minute(minutes, now),
            process_time=process_time(times),
            limits=from_hash(limits),
        )
    return found


def _oldest_queued(store: Store, names: Sequence[str]) -> list[int | None]:
    """The update time (µs) of each name's oldest queued job: the first of each priority band,
    each band being first in, first out."""
    pipe = store.client.pipeline(transaction=False)
    for name in names:
        queue = store.keys_of_name(name).queue(name)
        for band in range(indexes.PRIORITY_BANDS):
            low = band * indexes.BAND
            pipe.zrangebyscore(queue, low, low + indexes.BAND - 1, start=0, num=1)
    heads = checked(pipe.execute(raise_on_error=False))
    width = indexes.PRIORITY_BANDS
    firsts = [
        [ids[0] for ids in heads[i * width : (i + 1) * width] if ids] for i in range(len(names))
    ]
    times = iter(indexes.update_times(store, [job_id for ids in firsts for job_id in ids]))
    oldest: list[int | None] = []
    for ids in firsts:
        known = [us for us in (next(times) for _ in ids) if us]
        oldest.append(min(known) if known else None)
    return oldest


def stats() -> KickqFuture[dict[str, NameStats]]:
    """Counts per state and more for every job name: {name: NameStats}."""
    return in_background(lambda engine: _read(engine.store, indexes.names(engine.store)))


def workers() -> KickqFuture[list[WorkerInfo]]:
    """The live workers of every process sharing the Redis and namespace: a worker whose
    process died is gone within DEAD_AFTER (30) seconds."""
    return in_background(lambda engine: live_workers(engine.store))


def _pause(name: str, action: str) -> KickqFuture[bool]:
    try:
        config.check_job_name(name)
    except (TypeError, ValueError) as exc:
        return failed(exc)

    def change(engine: runtime.Runtime) -> bool:
        return bool(engine.store.run(engine.store.pause_call(name, action)))

    return in_background(change)


def pause(name: str) -> KickqFuture[bool]:
    """Start no new run of `name` in any process (running jobs finish; creating, and delayed
    jobs becoming queued, go on). Resolves True if it was not paused already."""
    return _pause(name, "pause")


def resume(name: str) -> KickqFuture[bool]:
    """Let runs of `name` start again; resolves True if it was paused."""
    return _pause(name, "resume")
