"""The hand-over of `after=`: how a deferred job hears of its parents' ends, from any process.

A parent and its child may live in different partitions of a Redis Cluster, where no script
can touch both, and the process that ends a parent may die right after. So what one side must
tell the other is written as a notice, in the same script step as the change that makes it
needed:

- "link:<child>": a deferred job was saved (create.lua). Its parents must learn of it: adopt.lua
  adds it to the set of children of each parent that is not complete, in one step with that
  parent's state, and reads how those that are complete ended.
- "end:<parent>": a parent with children completed (transition.lua) or was deleted
  (delete.lua), with how it ended kept beside the notice (its result copied: the parent may be
  purged before every child heard it).

A notice is a member of the scheduled zset, due at once and announced on the timers channel, so
the timer of every live process wakes for it (timer.py); the first to take it
(handover_take.lua) gets it for HANDOVER_LEASE_MS, tells each child (`lifecycle.heard`, applied by
transition.lua and fenced by the child's version like any change), and removes it
(handover_done.lua). A process that dies half way leaves the notice, which another takes once
the lease ends: every step can be made again, since a child hears of a parent only while it
still awaits it.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from kickq._model import clock, lifecycle
from kickq._model.lifecycle import ParentEnd
from kickq._redis.dependency_store import END, DependencyStore, Taken, notice_job
from kickq._redis.keys import HANDOVER_LEASE_MS
from kickq._redis.runner import ScriptCall
from kickq._redis.store import Store
from kickq._redis.stored import Damaged, damage_of

log = logging.getLogger("kickq")
ATTEMPTS = 10
"""Reads of a child whose record changed while it was being told (another parent's end, a
cancel): after that many, the notice is left for its next taker."""


def _end_of(parent: str, outcome: str, result_json: str | None = None) -> ParentEnd:
    """How a parent ended; one whose result is not JSON (its record was damaged) counts as
    deleted, rather than keep its notice from ever being carried out."""
    if outcome != "success":
        return ParentEnd(parent, outcome if outcome == "fail" else lifecycle.PARENT_DELETED)
    try:
        return ParentEnd(parent, outcome, json.loads(result_json or "null"))
    except ValueError:
        log.warning("the result of job %s, a parent, is not JSON: taken as deleted", parent)
        return ParentEnd(parent, lifecycle.PARENT_DELETED)


def _told(parent: str, told: str) -> ParentEnd:
    """How a parent ended, from the JSON its "end:" notice keeps (handover_take.lua); a notice
    that is not such JSON (its result was damaged) counts as deleted."""
    try:
        value: Any = json.loads(told)
    except ValueError:
        value = None
    outcome = value.get("state") if isinstance(value, dict) else None
    if outcome == "success":
        return ParentEnd(parent, outcome, value.get("result"))
    if value is None:
        log.warning("how job %s, a parent, ended is not JSON: taken as deleted", parent)
    return _end_of(parent, outcome or lifecycle.PARENT_DELETED)


class Handover:
    """Takes and carries out the notices due (see above); one per process, run by its timer."""

    def __init__(
        self,
        store: Store,
        purge_timeout: Callable[[], float],
        quarantine: Callable[[Damaged], None],
    ) -> None:
        self._store = store
        self._dependencies = DependencyStore(store)
        self._purge_timeout = purge_timeout
        self._quarantine = quarantine

    def run(self, notices: Sequence[str], now: datetime.datetime) -> None:
        """Carry out the due `notices`, those no other process took first."""
        taken = self._dependencies.take(notices, clock.to_ms(now), HANDOVER_LEASE_MS)
        if not taken:
            return
        heard: dict[str, list[ParentEnd]] = {}
        covers: dict[str, list[str]] = {}  # by notice, the children it tells
        links: list[str] = []
        for notice in taken:
            if notice.notice.startswith(END):
                covers[notice.notice] = self._ends(notice, heard)
            else:
                links.append(notice_job(notice.notice))
                covers[notice.notice] = [links[-1]]
        unlinked = self._link(links, heard)
        told = self._tell(heard, now) - unlinked
        done = {
            notice: children for notice, children in covers.items() if told.issuperset(children)
        }
        self._store.run_all(self._dependencies.done_calls(done))

    @staticmethod
    def _ends(notice: Taken, heard: dict[str, list[ParentEnd]]) -> list[str]:
        end = _told(notice_job(notice.notice), notice.told)
        for child in notice.children:
            heard.setdefault(child, []).append(end)
        return list(notice.children)

    def _link(self, children: list[str], heard: dict[str, list[ParentEnd]]) -> set[str]:
        """Tell the parents of each new deferred job of it; what those that are complete
        already say is heard by the job with the rest. Returns the jobs whose parents Redis
        refused to tell (a key of the wrong type): their notices stay, and are taken again."""
        calls: list[tuple[str, list[ScriptCall]]] = []
        for child, found in zip(children, self._store.load_many(children), strict=True):
            if isinstance(found, Damaged):
                self._quarantine(found)
            elif found is not None and found.job.awaiting:
                calls.append((child, self._dependencies.adopt_calls(child, found.job.awaiting)))
            heard.setdefault(child, [])
        replies = iter(self._store.run_batch([call for _, group in calls for call in group]))
        refused = set()
        for child, group in calls:
            answers = [next(replies) for _ in group]
            if error := next((a for a in answers if isinstance(a, Exception)), None):
                log.warning("telling the parents of job %s of it failed: %s", child, error)
                refused.add(child)
                continue
            for parent, (outcome, result) in self._dependencies.adopted(group, answers).items():
                if outcome != "pending":
                    heard[child].append(_end_of(parent, outcome, result))
        return refused

    def _tell(self, heard: dict[str, list[ParentEnd]], now: datetime.datetime) -> set[str]:
        """Tell each child how its parents ended; returns the children told (or with nothing
        to be told: gone, complete, no longer awaiting those parents)."""
        told = {child for child, ends in heard.items() if not ends}
        waiting = {child: ends for child, ends in heard.items() if ends}
        for _ in range(ATTEMPTS):
            if not waiting:
                break
            calls = self._changes(waiting, now, told)
            replies = self._store.run_batch([call for _, call in calls])
            again = {}
            for (child, _), reply in zip(calls, replies, strict=True):
                if isinstance(reply, Exception):  # its notice is taken again after the lease
                    log.warning("telling job %s how its parents ended failed: %s", child, reply)
                elif (damaged := damage_of(child, reply)) is not None:
                    self._quarantine(damaged)
                    told.add(child)
                elif reply == 0:  # changed meanwhile: read it again
                    again[child] = waiting[child]
                else:
                    told.add(child)
            waiting = again
        return told

    def _changes(
        self, waiting: dict[str, list[ParentEnd]], now: datetime.datetime, told: set[str]
    ) -> list[tuple[str, ScriptCall]]:
        """The changes of the children in `waiting` as they are now; those with none to make
        join `told`."""
        store = self._store
        ids = list(waiting)
        calls = []
        for child, found in zip(ids, store.load_many(ids), strict=True):
            if isinstance(found, Damaged):
                self._quarantine(found)
                found = None
            change = None if found is None else lifecycle.heard(found.job, waiting[child], now)
            if change is None or found is None:
                told.add(child)
            else:
                calls.append((child, store.transition_call(change, found, self._purge_timeout())))
        return calls
