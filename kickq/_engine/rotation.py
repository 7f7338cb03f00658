"""Which job names a worker's next claim asks for: only those that may have work, in turns.

A claim costs Redis work for every name it asks for, so a worker asks only for the names that
may have work: every name at first (and after a reconnect, a failed round trip or a failover,
when a rate limit's wait passes, and at least every IDLE_RECHECK seconds), then a name once a
wake message says its queue stopped being empty (or a limit let go of it). A claim's reply
names those with nothing to start; they rest until their next wake. A wake that comes while a
claim of its name is on its way keeps the name ready, so no wake is lost to a race with the
claim's reply.

One claim is one script on one Redis node, so it can only take from the queues of one group of
names: all of them on a single server, those of one partition on a Redis Cluster. Groups with
ready names take turns, and within a group the names rotate, so that a name that always has
jobs waiting never keeps another from its turn. A claim asks for MAX_NAMES names at most.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

MAX_NAMES = 64


class ClaimRotation:
    def __init__(self, groups: Sequence[tuple[str, ...]]) -> None:
        if not groups or not all(groups):
            raise ValueError("a claim rotation needs at least one group, none of them empty")
        self._groups = [tuple(group) for group in groups]
        self._group_of = {name: i for i, group in enumerate(self._groups) for name in group}
        self._lock = threading.Lock()  # woken() comes from the pub/sub listener's thread
        self._turn = 0
        self._rotations = [0] * len(self._groups)  # claims each group has had
        # per group, the names that may have work, in the group's order
        self._ready: list[dict[str, None]] = [dict.fromkeys(group) for group in self._groups]
        self._woken_since_asked: set[str] = set()

    def woken(self, name: str) -> None:
        """A queue of `name` stopped being empty, or a limit let go of its jobs."""
        with self._lock:
            group = self._group_of.get(name)
            if group is not None:
                self._ready[group][name] = None
                self._woken_since_asked.add(name)

    def wake_all(self) -> None:
        """Every name may have work (wake messages may have been missed)."""
        with self._lock:
            self._ready = [dict.fromkeys(group) for group in self._groups]
            self._woken_since_asked.update(self._group_of)

    def has_ready(self) -> bool:
        with self._lock:
            return any(self._ready)

    def next_claim(self) -> tuple[str, ...]:
        """The names of the next claim, in the order to take from; () when none may have work."""
        with self._lock:
            count = len(self._groups)
            for step in range(count):
                index = (self._turn + step) % count
                ready = self._ready[index]
                if ready:
                    break
            else:
                return ()
            self._turn = index + 1
            turn, self._rotations[index] = self._rotations[index], self._rotations[index] + 1
            names = _rotated([n for n in self._groups[index] if n in ready], turn)
            names = names[:MAX_NAMES]
            self._woken_since_asked.difference_update(names)
            return tuple(names)

    def claimed(self, idle: Iterable[str]) -> None:
        """A claim's reply: these names had nothing to start. They rest until a wake, unless
        one came while the claim was on its way."""
        with self._lock:
            for name in idle:
                group = self._group_of.get(name)
                if group is not None and name not in self._woken_since_asked:
                    self._ready[group].pop(name, None)


def _rotated(names: list[str], turn: int) -> list[str]:
    if not names:
        return names
    start = turn % len(names)
    return names[start:] + names[:start]
