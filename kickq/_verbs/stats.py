"""`kickq.stats()`, `workers()`, `pause()` and `resume()`.

The numbers come from what the state-changing scripts keep for each name in bounded memory:
the indexes (counts), 60 per-minute completion counters, the last RUN_TIMES process times, the
set of paused names, and each name's limits (see _limits.py). scripts/stats.lua reads them in
Redis, NAMES_PER_CALL names of a partition a call, and returns one JSON text per call; every
call goes in one round trip. (A command per read sent from Python, and a reply value per read
parsed by it, took 4 s with 10,000 names.) Nothing scans.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import attrs

from kickq._engine import runtime
from kickq._engine.future import KickqFuture, failed
from kickq._engine.heartbeats import WorkerInfo, live_workers
from kickq._model import clock, config
from kickq._redis import indexes
from kickq._redis.keys import SEEN_STATES
from kickq._redis.store import Store
from kickq._verbs.background import in_background
from kickq._verbs.limits import Limits, from_hash

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
    return _Window(now).minutes(fields)


class _Window:
    """The 60 minutes up to a time, made once for every name of one stats() read: most names
    finished nothing in the last hour and share the same 60 empty minutes."""

    def __init__(self, now: datetime.datetime) -> None:
        current = clock.to_ms(now) // 60_000
        self.current = current
        self.numbers = range(current - MINUTES + 1, current + 1)
        # the field of each minute ("<minute % 60>"): a name's few fields are looked up, not
        # the 60 minutes
        self.slots = {str(minute % MINUTES): i for i, minute in enumerate(self.numbers)}
        self.empty = [
            FinishedMinute(
                datetime.datetime.fromtimestamp(minute * 60, datetime.timezone.utc), 0, 0
            )
            for minute in self.numbers
        ]

    def minutes(self, fields: Mapping[str, str]) -> list[FinishedMinute]:
        found = self.empty.copy()
        for field, text in fields.items():
            i = self.slots.get(field)
            if i is None:
                continue
            counted = _MINUTE.fullmatch(text)
            if counted and int(counted.group(1)) == self.numbers[i]:
                succeeded, failures = int(counted.group(2)), int(counted.group(3))
                found[i] = FinishedMinute(found[i].minute, succeeded, failures)
        return found


# names one stats.lua call reads: 2 ms of Redis or so, about 60 ms when every name has its
# full RUN_TIMES process times (read and sorted for the percentiles)
NAMES_PER_CALL = 100
_NO_LIMITS = Limits()


def _read(store: Store, names: Sequence[str]) -> dict[str, NameStats]:
    """Every name's stats: one script call per NAMES_PER_CALL names of a partition, all sent
    in one round trip (see scripts/stats.lua)."""
    now = clock.now()
    window = _Window(now)
    chunks = [
        group[start : start + NAMES_PER_CALL]
        for group in store.claim_groups(names)
        for start in range(0, len(group), NAMES_PER_CALL)
    ]
    calls = [store.stats_call(chunk, window.current) for chunk in chunks]
    found: dict[str, NameStats] = {}
    now_us = clock.to_us(now)
    for chunk, reply in zip(chunks, store.run_all(calls), strict=True):
        found.update(_decode(chunk, json.loads(reply), window, now_us))
    return {name: found[name] for name in names}


def _decode(
    names: Sequence[str], values: list[Any], window: _Window, now_us: int
) -> Iterator[tuple[str, NameStats]]:
    """The stats of `names` from the flat list one stats.lua call returned."""
    at = 0
    width = len(SEEN_STATES)
    for name in names:
        counts = dict(zip(SEEN_STATES, values[at : at + width], strict=True))
        paused = values[at + width] == 1
        at += width + 1
        heads, at = _texts(values, at)
        minutes, at = _texts(values, at)
        limits, at = _texts(values, at)
        if values[at] == 1:
            times: ProcessTime | None = ProcessTime(*map(float, values[at + 1 : at + 4]))
            at += 4
        else:
            texts, at = _texts(values, at + 1)
            times = process_time(texts)
        known = [us for us in map(indexes.time_us, heads) if us]
        yield (
            name,
            NameStats(
                counts=counts,
                paused=paused,
                oldest_queued_age=max((now_us - min(known)) / 1e6, 0.0) if known else None,
                finished_per_minute=window.minutes(_pairs(minutes)),
                process_time=times,
                limits=from_hash(_pairs(limits)) if limits else _NO_LIMITS,
            ),
        )


def _texts(values: list[Any], at: int) -> tuple[list[str], int]:
    """The texts counted at values[at], and where what follows them starts."""
    count = values[at]
    return values[at + 1 : at + 1 + count], at + 1 + count


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


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
