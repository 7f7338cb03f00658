"""Observers of run ends: how `kickq.metrics` (or any part of kickq) hears of each run that a
worker of this process ended, without parsing logs.

A worker calls `notify(job)` once per run whose end Redis took, beside its log line (see
`_joblog`): the job as that run left it, its state the run's outcome (success, retry, ghost,
fail, or queued for a run handed back) and its last run the one that ended. Observers run in
the worker's thread, so each must be quick; one that raises is logged and kept, and never
costs the worker anything. The list is
replaced, never changed in place, so `notify` reads it without a lock. `kickq.reset()` leaves it
alone: observers belong to whoever added them (a metrics registry outlives a reset).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kickq._model.job import Job

log = logging.getLogger("kickq")
Observer = Callable[[Job], None]

_observers: tuple[Observer, ...] = ()
_lock = threading.Lock()


def add(observer: Observer) -> None:
    """Call `observer(job)` at the end of every run of this process's workers from now on."""
    global _observers
    with _lock:
        if observer not in _observers:
            _observers = (*_observers, observer)


def discard(observer: Observer) -> None:
    """Stop calling `observer`; nothing happens if it was not added."""
    global _observers
    with _lock:
        _observers = tuple(known for known in _observers if known != observer)


def notify(job: Job) -> None:
    """Tell every observer that a run of `job` ended."""
    for observer in _observers:
        try:
            observer(job)
        except Exception:
            log.exception("an observer of run ends failed on job %s", job.id)
