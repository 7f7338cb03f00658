"""Worker heartbeats and `kickq.workers()`.

Each process writes the info of its live workers into one hash, `<ns>:workers` (worker id ->
JSON), every HEARTBEAT seconds, from its timer thread, and takes out the workers it stopped. A
process that dies writes nothing more: `workers()` leaves out (and removes) every worker not
heard from for DEAD_AFTER seconds. The hash holds the live workers of the namespace, and the dead
ones until the next `workers()` call.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from kickq._model import clock
from kickq._redis import workers as registry
from kickq._redis.store import Store

HEARTBEAT = 10.0  # seconds between two heartbeats of a process
DEAD_AFTER = 30.0  # a worker not heard from for this long is gone


class Beating(Protocol):
    """What a heartbeat says about a worker."""

    id: str
    names: tuple[str, ...]
    concurrent_jobs: int
    started: datetime.datetime

    @property
    def running(self) -> int: ...

    @property
    def stuck_threads(self) -> int: ...

    @property
    def stopped(self) -> bool: ...


@attrs.frozen
class WorkerInfo:
    """A live worker (one `process()` call) of some process sharing the Redis."""

    id: str
    host: str
    pid: int
    names: tuple[str, ...]
    concurrent_jobs: int
    running: int  # runs in progress at its last heartbeat
    started: datetime.datetime
    last_seen: datetime.datetime
    # its handler threads still running after their run ended, at its last heartbeat (see
    # Worker.stuck_threads); 0 from a process of an older kickq
    stuck_threads: int = 0


class Heartbeats:
    """The heartbeats of this process's workers, sent by the timer thread (`beat`)."""

    def __init__(self, store: Store, workers: Callable[[], Sequence[Beating]]) -> None:
        self._store = store
        self._workers = workers
        self._host = socket.gethostname()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._next: datetime.datetime | None = None  # None: at once
        self._sent: set[str] = set()

    def soon(self) -> None:
        """Beat at the next chance: a worker started or stopped."""
        with self._lock:
            self._next = None

    def beat(self, now: datetime.datetime) -> None:
        """Write the info of the live workers, if a heartbeat is due."""
        with self._lock:
            if self._next is not None and now < self._next:
                return
            self._next = clock.after(now, HEARTBEAT)
        live = {w.id: self._info(w, now) for w in self._workers() if not w.stopped}
        self._write(live, self._sent - live.keys())
        self._sent = set(live)

    def forget(self) -> None:
        """Take this process's workers out at once (they stopped)."""
        self._write({}, self._sent)
        self._sent = set()

    def _write(self, live: Mapping[str, str], gone: set[str]) -> None:
        if live or gone:
            registry.write(self._store, live, gone)

    def _info(self, worker: Beating, now: datetime.datetime) -> str:
        return json.dumps(
            {
                "id": worker.id,
                "host": self._host,
                "pid": self._pid,
                "names": list(worker.names),
                "concurrent_jobs": worker.concurrent_jobs,
                "running": worker.running,
                "started": clock.to_iso(worker.started),
                "last_seen": clock.to_iso(now),
                "stuck_threads": worker.stuck_threads,
            }
        )


def _decode(text: str) -> WorkerInfo:
    value: dict[str, Any] = json.loads(text)
    return WorkerInfo(
        id=str(value["id"]),
        host=str(value["host"]),
        pid=int(value["pid"]),
        names=tuple(str(name) for name in value["names"]),
        concurrent_jobs=int(value["concurrent_jobs"]),
        running=int(value["running"]),
        started=datetime.datetime.fromisoformat(value["started"]),
        last_seen=datetime.datetime.fromisoformat(value["last_seen"]),
        stuck_threads=int(value.get("stuck_threads", 0)),
    )


def live_workers(store: Store) -> list[WorkerInfo]:
    """The workers heard from within DEAD_AFTER seconds, the first started first; the others
    (and any entry that cannot be read) are removed."""
    now = clock.now()
    live, dead = [], []
    for worker_id, text in registry.read(store).items():
        try:
            info = _decode(text)
        except (ValueError, KeyError, TypeError):
            dead.append(worker_id)
            continue
        if (now - info.last_seen).total_seconds() > DEAD_AFTER:
            dead.append(worker_id)
        else:
            live.append(info)
    registry.remove(store, dead)
    return sorted(live, key=lambda info: (info.started, info.id))
