"""What a supervised worker tells its supervisor: when its oldest run overruns process_timeout.

A child of `kickq worker --processes N` (or `--reload`) is told by its supervisor, in its
environment (CELL_ENV), of a file of CELL_SIZE bytes; the child maps it into memory and keeps in
it, as a double, the real monotonic time (clock.real_monotonic: CLOCK_MONOTONIC, the same in
every process of the machine) at which its oldest run in progress passes its process_timeout, or
0 when no handler runs. A middleware keeps it: it counts from the run's start (as Redis's
deadline does), and it stays in the cell until the handler returns, also once the run is ghosted
and its slot freed, which is the point: a thread blocked in C cannot be stopped from inside,
only the process can. The supervisor reads the cell each round and kills the child (SIGKILL)
when that deadline is older than its margin: the run is then a ghost (any process's timer makes
it one at its deadline), re-run as ghost_retry says, never lost.

Writing the cell is a memory write, no system call, at each run's start and end; nothing needs
writing while the process hangs, since the deadline of a run that hangs was written when the run
started (a heartbeat would stop, and say nothing of which run overran). A plain middleware is added
when a registered handler is not a coroutine function, a coroutine one when one is (a coroutine
blocking kickq's loop stops every coroutine run of the process).
"""

from __future__ import annotations

import datetime
import itertools
import mmap
import os
import struct
import threading
from typing import Any

import attrs

import kickq
from kickq._engine.middleware import CallNext, is_coroutine_callable
from kickq._model import clock
from kickq._model.job import Job

CELL_ENV = "KICKQ_SUPERVISOR_CELL"  # the cell's path, set by the supervisor for its children
PARENT_ENV = "KICKQ_SUPERVISOR_PID"  # the supervisor's pid: a child whose parent changed stops
CELL = struct.Struct("d")
CELL_SIZE = CELL.size


def read(path: str) -> float:
    """The deadline a child wrote in the cell at `path` (0.0: no handler runs)."""
    with open(path, "rb") as cell:
        data = cell.read(CELL_SIZE)
    return CELL.unpack(data)[0] if len(data) == CELL_SIZE else 0.0


def clear(path: str) -> None:
    """Make (or reset) the cell at `path`: no handler runs."""
    with open(path, "wb") as cell:
        cell.write(CELL.pack(0.0))


class RunWatch:
    """The deadlines of this process's runs in progress, the earliest kept in the cell."""

    def __init__(self, path: str) -> None:
        descriptor = os.open(path, os.O_RDWR)
        try:
            self._cell = mmap.mmap(descriptor, CELL_SIZE)
        finally:
            os.close(descriptor)
        self._lock = threading.Lock()
        self._keys = itertools.count()
        self._deadlines: dict[int, float] = {}
        self._publish()

    def _enter(self, job: Job) -> int:
        run = job.runs[-1] if job.runs else None
        started = run.start_time if run is not None and run.start_time else None
        left = job.process_timeout
        if started is not None:
            left -= (clock.now() - started) / datetime.timedelta(seconds=1)
        key = next(self._keys)
        with self._lock:
            self._deadlines[key] = clock.real_monotonic() + left
            self._publish()
        return key

    def _leave(self, key: int) -> None:
        with self._lock:
            del self._deadlines[key]
            self._publish()

    def _publish(self) -> None:
        """Write the earliest deadline (lock held; at __init__, before any run)."""
        self._cell[:CELL_SIZE] = CELL.pack(min(self._deadlines.values(), default=0.0))

    def plain(self, job: Job, call_next: CallNext) -> Any:
        key = self._enter(job)
        try:
            return call_next()
        finally:
            self._leave(key)

    async def coroutine(self, job: Job, call_next: CallNext) -> Any:
        key = self._enter(job)
        try:
            return await call_next()
        finally:
            self._leave(key)


def install(path: str, handlers: list[Any]) -> RunWatch:
    """Watch every run of this process from now on (middleware of the style `handlers` need)."""
    watch = RunWatch(path)
    if any(not is_coroutine_callable(handler) for handler in handlers):
        kickq.use(watch.plain)
    if any(is_coroutine_callable(handler) for handler in handlers):
        kickq.use(watch.coroutine)
    return watch


@attrs.frozen
class Supervised:
    """What the supervisor told this process in its environment, taken out of it (so that a
    process the application starts, a `kickq worker` say, does not take it as its own)."""

    cell: str | None
    parent: str | None

    @classmethod
    def take(cls) -> Supervised:
        return cls(os.environ.pop(CELL_ENV, None), os.environ.pop(PARENT_ENV, None))

    def orphaned(self) -> bool:
        """Whether the supervisor that started this process is gone (its parent changed)."""
        return self.parent is not None and str(os.getppid()) != self.parent
