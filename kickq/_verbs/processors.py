"""Processors declared at import time, started later: `@kickq.processor` and `kickq.start()`.

The decorator only records a handler with its names and options, so that importing a module of
handlers starts no thread and touches no Redis: the same module serves a web process that only
creates jobs and a worker process (`kickq worker app.jobs`, or `kickq.start()` in the
application) that runs them. `kickq.reset()` stops the workers but keeps the records: a
decorator runs once, when its module is imported, and could not register its handler again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import attrs

from kickq._engine.worker import Worker
from kickq._model import config, forks
from kickq._model.errors import ConfigError
from kickq._verbs import api

H = TypeVar("H", bound=Callable[..., Any])


@attrs.define(eq=False)
class Processor:
    """One decorated handler, and the workers start() gave it in this process."""

    names: tuple[str, ...]
    handler: Callable[..., Any]
    concurrent_jobs: int
    workers: list[Worker] = attrs.field(factory=list)

    def serving(self) -> set[str]:
        """The names a live worker of this processor serves; forgets stopped workers (by
        `Worker.stop()`, `kickq.reset()` or a change of connection options)."""
        self.workers = [worker for worker in self.workers if not worker.stopped]
        return {name for worker in self.workers for name in worker.names}


_lock = threading.Lock()
_registry: list[Processor] = []


def processor(
    names: str | Iterable[str], opts: Mapping[str, Any] | None = None, **options: Any
) -> Callable[[H], H]:
    """Register the decorated function as the handler of jobs of these names; start nothing.

    Takes what `kickq.process()` takes but the handler: `@kickq.processor("resize",
    concurrent_jobs=4)`, `@kickq.processor(["a", "b"], {"concurrent_jobs": 2})`. The function
    is returned unchanged. `kickq.start()` (or `kickq worker MODULE`) starts the workers.
    """
    if callable(names):
        raise TypeError("processor() takes the job names first: @kickq.processor('name')")
    job_names, concurrent_jobs = api.check_processor(names, opts, options, "processor()")

    def register(handler: H) -> H:
        if not callable(handler):
            raise TypeError(f"a handler must be callable, not {handler!r}")
        with _lock:
            _registry.append(Processor(tuple(job_names), handler, concurrent_jobs))
        return handler

    return register


def registered() -> list[Processor]:
    """The processors registered in this process, in the order they were."""
    with _lock:
        return list(_registry)


def _selection(names: str | Iterable[str] | None) -> set[str] | None:
    if names is None:
        return None
    wanted = {names} if isinstance(names, str) else set(names)
    for name in wanted:
        config.check_job_name(name)
    known = {name for entry in registered() for name in entry.names}
    unknown = sorted(wanted - known)
    if unknown:
        raise ConfigError(
            f"no processor is registered for {', '.join(map(repr, unknown))}; "
            f"registered: {', '.join(sorted(known)) or 'none'}"
        )
    return wanted


def start(
    names: str | Iterable[str] | None = None, *, concurrent_jobs: int | None = None
) -> list[Worker]:
    """Start, in this process, a worker for every registered processor not running already.

    `names` restricts it to the processors of these names (a processor of several names then
    serves only those); `concurrent_jobs` overrides the processors' own. Returns the workers
    of the selected processors, those an earlier call started included: calling it again
    starts nothing twice. A name no processor was registered for is a `ConfigError`.
    """
    selected = _selection(names)
    if concurrent_jobs is not None:
        config.PROCESS_OPTIONS["concurrent_jobs"].check("concurrent_jobs", concurrent_jobs)
    workers: list[Worker] = []
    with _lock:
        for entry in _registry:
            wanted = [n for n in entry.names if selected is None or n in selected]
            serving = entry.serving()
            missing = [name for name in wanted if name not in serving]
            if missing:
                jobs = entry.concurrent_jobs if concurrent_jobs is None else concurrent_jobs
                entry.workers.append(api.process(missing, entry.handler, concurrent_jobs=jobs))
            workers += [w for w in entry.workers if set(w.names) & set(wanted)]
    return workers


def clear() -> None:
    """Forget every registration (tests do, between tests); running workers go on."""
    with _lock:
        _registry.clear()


@forks.in_child
def _forget_workers_in_child() -> None:
    """After fork(), in the child: the parent's workers do not run here, so start() in the
    child starts its own. The lock is new: a parent thread may have held it at the fork."""
    global _lock
    _lock = threading.Lock()
    for entry in _registry:
        entry.workers = []
