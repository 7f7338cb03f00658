"""The timer's schedule step: the due ticks of repeatable jobs become jobs, exactly once.

Any live kickq process runs this step about once a second (and at the next tick's time), so no
leader has to be kept alive. A due tick is handled in two atomic steps, in this order:

1. its job is created with an id made from the schedule's key and the tick (`tick_id`): a
   process creating the same tick finds the record there and stores nothing (create.lua
   answers 0), so racing processes make one job;
2. the schedule is moved on from that tick to the next, if it is still at that tick
   (schedule_advance.lua, a compare-and-set): one process wins, the others change nothing.

A crash between the two leaves the tick due: the next process creates it again (nothing new
is stored) and moves the schedule on. Nothing is lost, and nothing doubled as long as the
tick's job is still in Redis when its tick is moved on, which takes a second or so: a job
purged sooner than that (a purge_timeout under a few seconds) could be created once more by a
process that read the tick before it was moved on.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
from typing import Any

import attrs

from kickq._model import cron, lifecycle
from kickq._model.config import settings
from kickq._model.json import dumps
from kickq._model.schedules import Plan, Schedule, from_record, plan
from kickq._redis.keys import partition_of_name
from kickq._redis.runner import ScriptCall
from kickq._redis.schedule_store import ScheduleStore, Stored
from kickq._redis.store import Store

log = logging.getLogger("kickq.schedules")
BATCH = 100
DAMAGED_RETRY_MS = 60_000  # a schedule that cannot be read is looked at again this much later


def tick_id(key: str, tick_ms: int, name: str, cluster: bool) -> str:
    """The id of the job of one tick: the same in every process, 32 hex digits like any id
    (on a cluster, the first one its name's partition, as _keys.py wants)."""
    digest = hashlib.sha256(json.dumps([key, tick_ms]).encode("utf-8")).hexdigest()[:32]
    return f"{partition_of_name(name):x}{digest[1:]}" if cluster else digest


@attrs.frozen
class _Due:
    """One due schedule: what was read, what to do, and the call creating its job (if any)."""

    stored: Stored
    plan: Plan
    spec: str
    create: ScriptCall | None


class ScheduleTicks:
    def __init__(self, store: Store, schedules: ScheduleStore) -> None:
        self._store = store
        self._schedules = schedules

    def create_due(self, now: datetime.datetime) -> tuple[int | None, bool]:
        """Create the job of each schedule's tick due at `now` (one tick per schedule) and move
        the schedules on. Returns the earliest next tick (ms) and whether more ticks may be due
        (a schedule whose next tick has come too, or more due schedules than one batch)."""
        now_ms = math.floor(now.timestamp() * 1000)  # no tick is acted on before its time
        due = self._schedules.due(now_ms, BATCH)
        planned = [self._plan(stored, now, now_ms) for stored in due.entries]
        creates = [item.create for item in planned if item.create is not None]
        results = iter(self._store.run_batch(creates))
        refused: list[Exception] = []
        advances: list[ScriptCall] = []
        for item in planned:
            result = None if item.create is None else next(results)
            if isinstance(result, Exception):  # its tick stays due, and is tried again
                refused.append(result)
                continue
            key = item.stored.key
            advances.append(
                self._schedules.advance_call(key, _due_ms(item), item.plan.next_ms, item.spec)
            )
        for result in self._store.run_batch(advances):
            if isinstance(result, Exception):
                refused.append(result)
        if refused:  # back off, then try again (as the timer does for jobs)
            raise refused[0]
        earliest = min(
            [ms for ms in (due.later_ms, *(item.plan.next_ms for item in planned)) if ms],
            default=None,
        )
        # after missed ticks, or a tick found late, the next tick may be due already: go on
        still_due = any(item.plan.next_ms <= now_ms for item in planned)
        return earliest, len(due.entries) >= BATCH or still_due

    def _plan(self, stored: Stored, now: datetime.datetime, now_ms: int) -> _Due:
        due_ms = stored.next_ms
        assert due_ms is not None
        try:
            if stored.record is None:
                raise ValueError("its record is missing")
            schedule, timing = from_record(stored.record, due_ms)
            decided = plan(timing, schedule.misfire, due_ms, now_ms)
            call = None if decided.fire_ms is None else self._create_call(schedule, decided, now)
        except Exception as exc:  # one bad record stops no other schedule
            log.error(
                "schedule %r cannot be read (%s: %s); looked at again in %d s",
                stored.key,
                type(exc).__name__,
                exc,
                DAMAGED_RETRY_MS // 1000,
            )
            return _Due(stored, Plan(None, now_ms + DAMAGED_RETRY_MS), "", None)
        return _Due(stored, decided, timing.spec, call)

    def _create_call(self, schedule: Schedule, decided: Plan, now: datetime.datetime) -> ScriptCall:
        """The create call of a tick's job: its schedule's options cascaded as create() does,
        in this process's configuration, and `scheduled_for` the tick."""
        assert decided.fire_ms is not None
        tick = cron.from_ms(decided.fire_ms)
        name = schedule.name
        effective = settings.cascade(name, {**schedule.options, "at": tick})
        if callable(effective["retry_interval"]):
            effective["retry_interval"] = None  # decided by the config of the worker's process
        data_json = dumps(schedule.data, "job data")
        job_id = tick_id(schedule.key, decided.fire_ms, name, self._store.cluster)
        change = lifecycle.create(
            job_id, name, schedule.data, effective, now, _unique_key(effective, data_json)
        )
        return self._store.create_call([change], [data_json])


def _due_ms(item: _Due) -> int:
    assert item.stored.next_ms is not None
    return item.stored.next_ms


def _unique_key(options: dict[str, Any], data_json: str) -> str | None:
    """As create() makes it: the one given, else (unique=True) a digest of the data."""
    if options.get("unique_key") is not None:
        return str(options["unique_key"])
    if not options["unique"]:
        return None
    canonical = json.dumps(json.loads(data_json), sort_keys=True, separators=(",", ":"))
    return lifecycle.unique_key_of(canonical)
