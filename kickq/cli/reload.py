"""`kickq worker --reload`: notice that a .py file under a directory changed, by polling.

Every POLL seconds the supervisor (see supervisor.py) reads the modification time and size of
every .py file under the directory (the current one: where the application's module is
imported from), leaving out hidden directories, __pycache__, node_modules and virtual
environments (a directory holding pyvenv.cfg, or named site-packages). Polling needs no
dependency and works where file events do not (a bind mount, a network file system); a
development tree of a few thousand files reads in milliseconds.
"""

from __future__ import annotations

import os

from kickq._model import clock

POLL = 1.0  # seconds between two readings of the tree
SKIPPED = frozenset({"__pycache__", "node_modules", "site-packages"})
Snapshot = dict[str, tuple[int, int]]  # path -> (mtime in ns, size)


def snapshot(root: str) -> Snapshot:
    """The .py files under `root`, each with its modification time and size."""
    found: Snapshot = {}
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [
            name
            for name in subdirectories
            if not name.startswith(".")
            and name not in SKIPPED
            and not os.path.exists(os.path.join(directory, name, "pyvenv.cfg"))
        ]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                try:
                    status = os.stat(path)
                except OSError:  # removed meanwhile
                    continue
                found[path] = (status.st_mtime_ns, status.st_size)
    return found


class Watcher:
    """Which .py files under `root` changed (were written, added or removed) since last asked."""

    def __init__(self, root: str, poll: float = POLL) -> None:
        self._root = root
        self._poll = poll
        self._seen = snapshot(root)
        self._next = clock.real_monotonic() + poll

    def changed(self) -> list[str]:
        """The files changed since the last call that found some (read at most every `poll`
        seconds; between two readings, nothing), relative to the root."""
        if clock.real_monotonic() < self._next:
            return []
        now = snapshot(self._root)
        self._next = clock.real_monotonic() + self._poll
        changed = sorted(
            path for path in now.keys() | self._seen.keys() if now.get(path) != self._seen.get(path)
        )
        self._seen = now
        return [os.path.relpath(path, self._root) for path in changed]
