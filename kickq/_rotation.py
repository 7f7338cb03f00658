"""Which job names a worker's next claim asks for, so that no name starves another.

One claim is one script on one Redis node, so it can only take from the queues of one group of
names: all of them on a single server, those of one partition on a Redis Cluster. The groups
take turns, a group whose queue a wake message named goes first, and within a group the names
rotate: a name that always has jobs waiting never keeps another from its turn. After a claim
that left slots free, the next group is tried at once until each has come up empty once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence


class ClaimRotation:
    def __init__(self, groups: Sequence[tuple[str, ...]]) -> None:
        if not groups or not all(groups):
            raise ValueError("a claim rotation needs at least one group, none of them empty")
        self._groups = list(groups)
        self._group_of = {name: i for i, group in enumerate(self._groups) for name in group}
        self._lock = threading.Lock()  # woken() comes from the pub/sub listener's thread
        self._turn = 0
        self._woken: set[int] = set()  # groups a wake message named since their last claim
        self._empty_in_a_row = 0

    def woken(self, name: str) -> None:
        """A queue of `name` stopped being empty: its group goes next."""
        if len(self._groups) > 1:
            with self._lock:
                self._woken.add(self._group_of[name])

    def next_claim(self) -> tuple[str, ...]:
        """The names of the next claim, in the order to take from."""
        turn, self._turn = self._turn, self._turn + 1
        index = turn % len(self._groups)
        if len(self._groups) > 1:
            with self._lock:
                if self._woken:
                    index = self._woken.pop()
        group = self._groups[index]
        start = (turn // len(self._groups)) % len(group)
        return group[start:] + group[:start]

    def more_elsewhere(self, found_any: bool) -> bool:
        """After a claim that left slots free: True if another group may still have jobs."""
        if len(self._groups) == 1:
            return False
        self._empty_in_a_row = 0 if found_any else self._empty_in_a_row + 1
        with self._lock:
            return bool(self._woken) or self._empty_in_a_row < len(self._groups)
