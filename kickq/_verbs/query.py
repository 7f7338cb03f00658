"""Inspect and repair: `kickq.jobs(...)` with count, list, requeue and delete; `kickq.requeue`.

Counts and pages read the indexes (_indexes.py). Repairs decide in Python and apply each job's
change with its own script call, fenced by the record's version like every other transition:
a job that changed meanwhile is left as it now is.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kickq._engine import runtime
from kickq._engine.future import KickqFuture, failed
from kickq._model import clock, config, lifecycle
from kickq._model.errors import ConfigError, JobKeptChanging
from kickq._model.job import Job, State
from kickq._redis import indexes
from kickq._redis.keys import SEEN_STATES, is_job_id
from kickq._redis.store import Store
from kickq._redis.stored import Damaged, damage_of
from kickq._verbs.background import about, applied, current, in_background, not_found

PAGE = 200  # jobs to one round trip of a bulk repair
ATTEMPTS = 5  # a job that keeps changing under a requeue is reported, not chased for ever


def _check_states(state: object) -> tuple[str, ...]:
    if state is None:
        return SEEN_STATES
    values = [state] if isinstance(state, (str, State)) else state
    if not isinstance(values, Iterable):
        raise TypeError(f"state must be a State, a str or a list of them, not {state!r}")
    checked = []
    for value in values:
        try:
            checked.append(State(value).value)
        except ValueError:
            known = ", ".join(s.value for s in State)
            raise ConfigError(f"unknown state {value!r}; states are {known}") from None
    if not checked:
        raise ConfigError("state must name at least one state")
    return tuple(dict.fromkeys(checked))


def _check_names(name: object) -> tuple[str, ...] | None:
    if name is None:
        return None
    values = [name] if isinstance(name, str) else name
    if not isinstance(values, Iterable):
        raise TypeError(f"name must be a str or a list of str, not {name!r}")
    checked = tuple(dict.fromkeys(config.check_job_name(value) for value in values))
    if not checked:
        raise ConfigError("name must name at least one job name")
    return checked


MAX_LIMIT = 10_000
"""The largest page: its records come back in one reply."""
MAX_OFFSET = 1_000_000_000
"""The furthest a page may start: Redis reads indexes by signed 64-bit positions, and a
listing merged from several indexes reads offset + limit ids of each."""


def _check_count(what: str, value: object, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {value!r}")
    if not 0 <= value <= high:
        raise ValueError(
            f"{what} must be a whole number from 0 to {high}, got {config.shown(value)}"
        )
    return value


class JobQuery:
    """The jobs of some names in some states, as `kickq.jobs()` selects them. Every method
    returns a KickqFuture; none blocks or raises."""

    def __init__(self, names: tuple[str, ...] | None, states: tuple[str, ...]) -> None:
        self.names = names  # None: every name
        self.states = states

    def __repr__(self) -> str:
        return f"JobQuery(name={self.names!r}, state={self.states!r})"

    def _names(self, store: Store) -> Sequence[str]:
        return self.names if self.names is not None else indexes.names(store)

    def count(self) -> KickqFuture[int]:
        """How many jobs match: O(1) per name and state."""

        def count(engine: runtime.Runtime) -> int:
            found = indexes.counts(engine.store, self._names(engine.store), self.states)
            return sum(sum(row) for row in found)

        return in_background(count)

    def list(self, limit: int = 50, offset: int = 0) -> KickqFuture[list[Job]]:
        """One page of the matching jobs, most recently updated first (a job that changes
        between two pages may show on both or neither)."""
        try:
            limit = _check_count("limit", limit, MAX_LIMIT)
            offset = _check_count("offset", offset, MAX_OFFSET)
        except (TypeError, ValueError) as exc:
            return failed(exc)

        def page(engine: runtime.Runtime) -> list[Job]:
            store = engine.store
            job_ids = indexes.newest_ids(store, self._names(store), self.states, offset, limit)
            found = []
            for loaded in store.load_many(job_ids):
                if isinstance(loaded, Damaged):
                    engine.quarantine(loaded)
                elif loaded is not None:
                    found.append(loaded.job)
            return found

        return in_background(page)

    def requeue(self) -> KickqFuture[int]:
        """Queue again every matching job that failed for good; resolves to how many were."""
        if "fail" not in self.states:
            return in_background(lambda engine: 0)

        def requeue_all(engine: runtime.Runtime) -> int:
            before_us = clock.to_us(clock.now())  # a job failing again meanwhile is left alone
            return sum(_requeue_name(engine, name, before_us) for name in self._names(engine.store))

        return in_background(requeue_all)

    def delete(self) -> KickqFuture[int]:
        """Delete every matching job, as `kickq.delete(id)` does; resolves to how many were."""

        def delete_all(engine: runtime.Runtime) -> int:
            names = self._names(engine.store)
            return sum(_delete_index(engine.store, n, s) for n in names for s in self.states)

        return in_background(delete_all)


def jobs(name: str | Iterable[str] | None = None, state: Any = None) -> JobQuery:
    """Select jobs by name (a str or a list; all names if None) and state (a State, its
    value, or a list; every state if None), to count, list, requeue or delete them."""
    return JobQuery(_check_names(name), _check_states(state))


def _requeue_name(engine: runtime.Runtime, name: str, before_us: int) -> int:
    """Requeue the jobs of `name` that failed for good at or before `before_us`, a page at a
    time; a job that changed meanwhile is skipped."""
    store, requeued, skipped = engine.store, 0, 0
    while job_ids := indexes.oldest_ids(store, name, "fail", before_us, skipped + PAGE)[skipped:]:
        now = clock.now()
        calls, gone = [], []
        for job_id, loaded in zip(job_ids, store.load_many(job_ids), strict=True):
            if loaded is None:
                gone.append(job_id)
            elif isinstance(loaded, Damaged):  # set aside, out of the index (or gone next page)
                engine.quarantine(loaded)
            elif (change := lifecycle.requeue(loaded.job, now)) is None:
                skipped += 1
            else:
                calls.append((job_id, store.transition_call(change, loaded, 0.0)))
        indexes.drop_ids(store, name, "fail", gone)
        for (job_id, _), result in zip(calls, store.run_all([c for _, c in calls]), strict=True):
            damaged = damage_of(job_id, result)
            if damaged is not None:
                engine.quarantine(damaged)
            elif result:
                requeued += 1
            else:
                skipped += 1
    return requeued


def _delete_index(store: Store, name: str, state: str) -> int:
    """Delete the jobs of `name` in `state`, a page at a time: as many as the index held when
    it started, so that jobs arriving all the while cannot keep it going."""
    (total,), deleted, seen = indexes.counts(store, [name], [state])[0], 0, 0
    while seen < total and (job_ids := indexes.first_ids(store, name, state, PAGE)):
        job_ids = job_ids[: total - seen]
        results = store.run_all([store.delete_call(job_id) for job_id in job_ids])
        gone = [job_id for job_id, done in zip(job_ids, results, strict=True) if not done]
        indexes.drop_ids(store, name, state, gone)
        deleted += sum(1 for done in results if done)
        seen += len(job_ids)
    return deleted


def requeue(job_id: str) -> KickqFuture[Job]:
    """Queue a job that failed for good again, with fresh retry and ghost budgets; its runs
    stay. Fails with ValueError if it has not failed for good, JobNotFound if unknown."""
    return _decided(
        job_id,
        lifecycle.requeue,
        "requeued",
        lambda state: f"has not failed for good (it is {state}): only such a job can be requeued",
    )


def promote(job_id: str) -> KickqFuture[Job]:
    """Queue now a job that waits: delayed, waiting to retry, or a ghost waiting to run again
    (its wait is cut short; its runs and budgets stay). Resolves to the queued Job; fails with
    ValueError if it is not waiting, JobNotFound if unknown."""
    return _decided(
        job_id,
        lifecycle.promote,
        "promoted",
        _not_promotable,
    )


def _not_promotable(state: str) -> str:
    if state == State.DEFERRED:
        return (
            "is deferred: it awaits its parents (after=) and is queued once they have all "
            "succeeded, so it cannot be promoted"
        )
    return (
        f"is not waiting (it is {state}): only a delayed job, or one waiting to "
        "retry or run again, can be promoted"
    )


def _decided(
    job_id: str,
    decide: Callable[[Job, datetime.datetime], lifecycle.Change | None],
    done: str,
    refusal: Callable[[str], str],
) -> KickqFuture[Job]:
    """Apply `decide`'s change of one job through transition.lua, deciding again on the record
    read afresh when it changed meanwhile; ValueError with `refusal(state)` when it decides
    nothing."""

    def apply(engine: runtime.Runtime) -> Job:
        store = engine.store
        for _ in range(ATTEMPTS):
            loaded = current(engine, job_id)
            change = decide(loaded.job, clock.now())
            if change is None:
                raise ValueError(f"job {job_id} {refusal(loaded.job.state.value)}")
            if applied(engine, job_id, store.run(store.transition_call(change, loaded, 0.0))):
                return change.job
        raise JobKeptChanging(job_id, done)

    future: KickqFuture[Job] = about(job_id, not_found(str(job_id)), apply)
    return future


MIN_PREFIX = 4
"""The fewest hex digits an id prefix may have: shorter ones match too many jobs to be meant."""
_SCAN_COUNT = 1000  # keys one SCAN call looks at


def ids_starting(prefix: str, most: int = 5) -> KickqFuture[list[str]]:
    """The ids of up to `most` jobs whose id starts with `prefix` (MIN_PREFIX to 31 lowercase
    hex digits; anything else matches none), sorted. A SCAN over the namespace's job records:
    its cost grows with the keys of the database, so it is for people typing an id, not for
    code (which holds whole ids)."""
    if not (MIN_PREFIX <= len(prefix) < 32 and all(c in "0123456789abcdef" for c in prefix)):
        return in_background(lambda engine: [])

    def scan(engine: runtime.Runtime) -> list[str]:
        store = engine.store
        start = store.keys_of(prefix).job_prefix
        found: set[str] = set()
        for key in store.client.scan_iter(match=f"{start}{prefix}*", count=_SCAN_COUNT):
            job_id = str(key)[len(start) :]
            if is_job_id(job_id):
                found.add(job_id)
                if len(found) >= most:
                    break
        return sorted(found)

    return in_background(scan)


def names() -> KickqFuture[list[str]]:
    """Every job name of the namespace that has had a job (or was paused), sorted: the names
    `kickq.stats()` reports, without reading their stats."""
    return in_background(lambda engine: indexes.names(engine.store))
