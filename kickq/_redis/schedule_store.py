"""The only module that talks to Redis about repeatable jobs: one method per schedule script.

Every schedule lives in two keys (see keys.py): a hash of records by key and a sorted set of
keys by next tick. On a Redis Cluster both are in partition 0, so one script sees them all;
the jobs the ticks create go to their own names' partitions, through the job store.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from kickq._model import clock
from kickq._redis.lua import Shape
from kickq._redis.runner import ScriptCall
from kickq._redis.store import Store

_TWO_KEYS = ("schedules", "schedule_times")
SAVE = Shape(
    "schedule_save",
    keys=(*_TWO_KEYS, "next_due"),
    args=("key", "record", "spec", "first_ms", "timers", "now_ms"),
)
REMOVE = Shape("schedule_remove", keys=_TWO_KEYS, args=("key",))
DUE = Shape("schedule_due", keys=_TWO_KEYS, args=("now_ms", "limit"))
ADVANCE = Shape("schedule_advance", keys=_TWO_KEYS, args=("key", "due_ms", "next_ms", "spec"))


@attrs.frozen
class Stored:
    """A schedule as read: its key, its next tick (ms; None while it is being removed) and its
    record (None when missing)."""

    key: str
    next_ms: int | None
    record: str | None


@attrs.frozen
class DueSchedules:
    entries: list[Stored]
    later_ms: int | None  # the earliest tick still to come


class ScheduleStore:
    def __init__(self, store: Store) -> None:
        self._store = store
        self.keys = store.partitions[0]
        client = store.client
        self._save = SAVE.register(client)
        self._remove = REMOVE.register(client)
        self._due = DUE.register(client)
        self._advance = ADVANCE.register(client)

    def save(self, key: str, record: str, spec: str, first_ms: int) -> int:
        """Store a schedule; returns its next tick (kept when its spec is unchanged)."""
        keys = SAVE.keys(
            schedules=self.keys.schedules,
            schedule_times=self.keys.schedule_times,
            next_due=self.keys.next_due,
        )
        args = SAVE.args(
            key=key,
            record=record,
            spec=spec,
            first_ms=first_ms,
            timers=self.keys.timers,
            now_ms=math.floor(clock.now().timestamp() * 1000),
        )
        return int(float(self._store.run((self._save, keys, args))))

    def remove(self, key: str) -> bool:
        return bool(self._store.run((self._remove, self._two_keys(REMOVE), REMOVE.args(key=key))))

    def all(self) -> list[Stored]:
        """Every schedule, with its next tick, in the order of their keys."""
        pipe = self._store.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.schedules)
        pipe.zrange(self.keys.schedule_times, 0, -1, withscores=True)
        records, times = pipe.execute()
        next_ms = {str(key): int(score) for key, score in times}
        return [
            Stored(str(key), next_ms.get(str(key)), str(record))
            for key, record in sorted(records.items())
        ]

    def due(self, now_ms: int, limit: int) -> DueSchedules:
        args = DUE.args(now_ms=now_ms, limit=limit)
        found, later = self._store.run((self._due, self._two_keys(DUE), args))
        entries = [
            Stored(str(found[i]), int(float(found[i + 1])), _text(found[i + 2]))
            for i in range(0, len(found), 3)
        ]
        return DueSchedules(entries, None if not later else int(float(later)))

    def advance_call(self, key: str, due_ms: int, next_ms: int, spec: str) -> ScriptCall:
        args = ADVANCE.args(key=key, due_ms=due_ms, next_ms=next_ms, spec=spec)
        return self._advance, self._two_keys(ADVANCE), args

    def _two_keys(self, shape: Shape) -> list[str]:
        return shape.keys(schedules=self.keys.schedules, schedule_times=self.keys.schedule_times)


def _text(value: Any) -> str | None:
    return None if value is None or value is False else str(value)
