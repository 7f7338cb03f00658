"""What the verbs share: `in_background` (a dispatcher task whose outcome is a KickqFuture),
`about` (the same for one job id; an id kickq cannot have made is answered without a key), and
reading the one job a change is decided from (`current`, `applied`, `not_found`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kickq._engine import runtime
from kickq._engine.future import KickqFuture, failed, reject, resolve
from kickq._model.errors import DamagedRecord, JobNotFound
from kickq._redis.keys import is_job_id
from kickq._redis.outage import translate
from kickq._redis.stored import Damaged, StoredJob, damage_of


def check_id(job_id: object) -> str:
    if not isinstance(job_id, str):
        raise TypeError(f"a job id is a str, not {type(job_id).__name__}: {job_id!r}")
    if not job_id:
        raise ValueError("a job id must not be empty")
    return job_id


def in_background(work: Callable[[runtime.Runtime], Any]) -> KickqFuture[Any]:
    try:
        engine = runtime.get()
    except Exception as exc:  # e.g. a Redis Cluster that cannot be reached to learn its layout
        return failed(exc)
    future: KickqFuture[Any] = KickqFuture()

    def run() -> None:
        if future.cancelled():
            return
        try:
            result = work(engine)
        except BaseException as exc:
            reject(future, translate(exc, engine.where))
            return
        resolve(future, result)

    engine.dispatcher.task(run, future.cancel)
    return future


def not_found(job_id: str) -> JobNotFound:
    return JobNotFound(f"no job with id {job_id!r}")


def unknown_id(outcome: Any) -> KickqFuture[Any]:
    """An id kickq cannot have made names no job, and is never made part of a key. Redis is
    still asked (a PING), so that an outage is reported the same way for every id."""

    def check(engine: runtime.Runtime) -> Any:
        engine.store.client.ping()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return in_background(check)


def about(job_id: object, if_unknown: Any, work: Callable[[runtime.Runtime], Any]) -> Any:
    """`work` in the background for a job id; an id kickq cannot have made gets `if_unknown`."""
    try:
        check_id(job_id)
    except (TypeError, ValueError) as exc:
        return failed(exc)
    if not is_job_id(str(job_id)):
        return unknown_id(if_unknown)
    return in_background(work)


def current(engine: runtime.Runtime, job_id: str) -> StoredJob:
    """The job as stored now, to decide a change from: JobNotFound when there is none,
    DamagedRecord when its record cannot be read (it is set aside)."""
    loaded = engine.store.load(job_id)
    if loaded is None:
        raise not_found(job_id)
    if isinstance(loaded, Damaged):
        raise damaged_record(engine, loaded)
    return loaded


def damaged_record(engine: runtime.Runtime, damaged: Damaged) -> DamagedRecord:
    """The error of a call that found `damaged`, once it is set aside."""
    engine.quarantine(damaged)
    return DamagedRecord(damaged.job_id, damaged.error)


def applied(engine: runtime.Runtime, job_id: str, reply: Any) -> bool:
    """Whether a transition of job `job_id` was applied, from its reply: a damaged record
    (see `damage_of`) is set aside, and its DamagedRecord raised."""
    damaged = damage_of(job_id, reply)
    if damaged is not None:
        raise damaged_record(engine, damaged)
    return bool(reply)
