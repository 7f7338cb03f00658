"""Reading the indexes: job names, counts per name and state, pages of ids.

The indexes themselves are kept by the scripts that change states (see _keys.py): this module
only reads them, so a count is one ZCARD per name and state and a page costs the page, however
many jobs match. Nothing here scans the key space.
"""

from __future__ import annotations

import datetime
import heapq
from collections.abc import Sequence
from typing import Any

from kickq._model.clock import to_us
from kickq._redis.keys import BAND, PRIORITY_BANDS
from kickq._redis.runner import checked
from kickq._redis.store import Store


def names(store: Store) -> list[str]:
    """Every job name of the namespace that has had a job (or was paused), sorted."""
    pipe = store.client.pipeline(transaction=False)
    for keys in store.partitions:
        pipe.smembers(keys.names)
    found: set[str] = set()
    for members in checked(pipe.execute(raise_on_error=False)):
        found.update(members)
    return sorted(found)


def counts(store: Store, job_names: Sequence[str], states: Sequence[str]) -> list[list[int]]:
    """The number of jobs of each name in each state: one ZCARD each, in one round trip."""
    pipe = store.client.pipeline(transaction=False)
    for name in job_names:
        keys = store.keys_of_name(name)
        for state in states:
            pipe.zcard(keys.index(state, name))
    flat = [int(n) for n in checked(pipe.execute(raise_on_error=False))]
    width = len(states)
    return [flat[i * width : (i + 1) * width] for i in range(len(job_names))]


def time_us(text: Any) -> int:
    """A record's update_time field (µs; ISO-8601 JSON in older records) in µs; 0 when it
    cannot be read."""
    if isinstance(text, str) and text.isdigit():
        return int(text)
    if not isinstance(text, str) or len(text) < 3:
        return 0
    try:
        return to_us(datetime.datetime.fromisoformat(text.strip('"')))
    except ValueError:
        return 0


def newest_ids(
    store: Store, job_names: Sequence[str], states: Sequence[str], offset: int, limit: int
) -> list[str]:
    """The ids of one page of jobs of these names and states, most recently updated first.

    From every index, at most offset + limit of its newest ids are read (an index holds ids
    scored by update time; a queue is read band by band, each band being first in, first out)
    and merged: the cost is the page's, whatever the number of jobs that match."""
    if limit <= 0:
        return []
    if len(job_names) == 1 and len(states) == 1:
        page = _one_index_page(store, job_names[0], states[0], offset, limit)
        if page is not None:
            return page
    want = offset + limit
    pipe = store.client.pipeline(transaction=False)
    sources: list[bool] = []  # per command: True when it reads a queue's band
    for name in job_names:
        keys = store.keys_of_name(name)
        for state in states:
            index = keys.index(state, name)
            if state != "queued":
                pipe.zrevrange(index, 0, want - 1, withscores=True)
                sources.append(False)
                continue
            for band in range(PRIORITY_BANDS):
                low = band * BAND
                pipe.zrevrangebyscore(index, low + BAND - 1, low, 0, want, withscores=True)
                sources.append(True)
    replies = checked(pipe.execute(raise_on_error=False))
    # (update time, then the place in its queue for jobs queued in the same µs, id)
    scored: list[tuple[int, float, str]] = []
    queued: list[tuple[str, float]] = []
    for from_queue, reply in zip(sources, replies, strict=True):
        if from_queue:
            queued.extend(reply)
        else:
            scored.extend((int(score), 0.0, job_id) for job_id, score in reply)
    times = update_times(store, [job_id for job_id, _ in queued])
    scored.extend((us, place, job_id) for us, (job_id, place) in zip(times, queued, strict=True))
    return [job_id for _, _, job_id in heapq.nlargest(want, scored)][offset:]


def _one_index_page(
    store: Store, name: str, state: str, offset: int, limit: int
) -> list[str] | None:
    """A page read straight from one index, when its order is the page's: any index but a
    queue, and a queue whose jobs share one priority band (the usual case). None otherwise."""
    index = store.keys_of_name(name).index(state, name)
    if state != "queued":
        return [str(job_id) for job_id in store.client.zrevrange(index, offset, offset + limit - 1)]
    pipe = store.client.pipeline(transaction=False)
    for band in range(PRIORITY_BANDS):
        pipe.zcount(index, band * BAND, band * BAND + BAND - 1)
    used = [band for band, n in enumerate(checked(pipe.execute(raise_on_error=False))) if n]
    if len(used) > 1:
        return None
    if not used:
        return []
    low = used[0] * BAND
    found = store.client.zrevrangebyscore(index, low + BAND - 1, low, offset, limit)
    return [str(job_id) for job_id in found]


def update_times(store: Store, job_ids: Sequence[str]) -> list[int]:
    """The update times (µs) of these jobs, 0 for one that is gone."""
    if not job_ids:
        return []
    pipe = store.client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(store.keys_of(job_id).job(job_id), "update_time")
    return [time_us(text) for text in pipe.execute(raise_on_error=False)]


def oldest_ids(store: Store, name: str, state: str, before_us: int, limit: int) -> list[str]:
    """Up to `limit` ids of the index of `name` in `state` (not queued) updated at or before
    `before_us`, the oldest first: what a bulk repair works through, page by page."""
    index = store.keys_of_name(name).index(state, name)
    return [
        str(job_id) for job_id in store.client.zrangebyscore(index, "-inf", before_us, 0, limit)
    ]


def first_ids(store: Store, name: str, state: str, limit: int) -> list[str]:
    """Up to `limit` ids of the index of `name` in `state`, in the index's order."""
    index = store.keys_of_name(name).index(state, name)
    return [str(job_id) for job_id in store.client.zrange(index, 0, limit - 1)]


def drop_ids(store: Store, name: str, state: str, job_ids: Sequence[str]) -> None:
    """Take ids whose record is gone out of an index (repair: the scripts never leave one)."""
    if job_ids:
        store.client.zrem(store.keys_of_name(name).index(state, name), *job_ids)
