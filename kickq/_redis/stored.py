"""Jobs as read from Redis: StoredJob, Damaged, Due, and `decode`, which makes a record a Job.

A record is read whole (HGETALL, or a script's reply of its fields) and decoded here, once,
into the job and the version that fences its next change; a record that cannot be decoded is
`Damaged`, never an exception, so that one bad record stops no reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from kickq._model.job import Job
from kickq._redis.layout import gather
from kickq._redis.record import from_record, version_of


@attrs.frozen
class StoredJob:
    """A job as read from Redis, with the record it was read from and that record's version,
    which fences the next change (a claim hands the worker the run it now holds this way):
    `record` with its long values joined, `fields` the hash as stored (see layout.py)."""

    job: Job
    version: int
    record: Mapping[str, str] = attrs.field(factory=dict, eq=False, repr=False)
    fields: Mapping[str, str] = attrs.field(factory=dict, eq=False, repr=False)


@attrs.frozen
class Damaged:
    """A record that could not be decoded; `moved` once a script has set it aside already."""

    job_id: str
    record: Mapping[str, str]
    error: str
    moved: bool = False


def decode(job_id: str, record: Mapping[str, str]) -> StoredJob | Damaged:
    """The one way a stored record becomes a Job: the job with its version, or a Damaged
    marker saying why not. Nothing a record holds can make this raise."""
    try:
        joined = gather(record)
        return StoredJob(from_record(joined, job_id), version_of(record), joined, record)
    except Exception as exc:  # any field of any type: one record never stops the caller
        return Damaged(job_id, record, f"{type(exc).__name__}: {exc}")


_DAMAGED_REPLY = "damaged: "  # how transition.lua answers a change of a damaged record


def damage_of(job_id: str, reply: Any) -> Damaged | None:
    """A `transition_call`'s reply saying that the record cannot be fenced (no version, a
    version that is not one, a key that is not a hash: see transition.lua), as the record to
    set aside; None for any other reply (1, 2, 0 or an error)."""
    if isinstance(reply, str) and reply.startswith(_DAMAGED_REPLY):
        return Damaged(job_id, {}, reply[len(_DAMAGED_REPLY) :])
    return None


@attrs.define
class Due:
    """What the timer has to do, over every partition (see `Store.due`)."""

    scheduled: list[str]
    overdue: list[str]
    purge: bool
    earliest_ms: int | None
