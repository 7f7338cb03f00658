"""Threads for plain handlers: as many as runs in progress, never one per job.

A run that overruns its deadline is interrupted in its thread (TimeLimitExceeded, see
runs.py); one that does not end then, blocked in C, has its slot given back and its thread
written off: a new thread takes the next job, and the stuck one rejoins the pool if its handler
ever returns (a worker stops claiming at `max_stuck_threads` of them, see worker.py).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from kickq._model import clock
from kickq._model.errors import TimeLimitExceeded

log = logging.getLogger("kickq")


class ThreadPool:
    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads: list[threading.Thread] = []
        self._local = threading.local()

    def submit(self, task: Callable[[], None]) -> None:
        if self.owns_current_thread() and self._local.next is None:
            # from a task of this pool (a run that claimed the next job as it ended): this
            # thread runs it once the current task returns, rather than waking another
            self._local.next = task
            return
        with self._lock:
            if self._idle == 0:
                thread = threading.Thread(
                    target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
                self._idle += 1
                thread.start()
            self._idle -= 1
        self._tasks.put(task)

    def stop(self, timeout: float = 0.0) -> None:
        """Let every thread end once its task does; wait up to `timeout` seconds for them (a
        handler stuck forever keeps its thread: it cannot be stopped)."""
        with self._lock:
            threads = [t for t in self._threads if t.is_alive()]
        for _ in threads:
            self._tasks.put(None)
        deadline = clock.real_monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(deadline - clock.real_monotonic(), 0.0))

    def owns_current_thread(self) -> bool:
        """Whether the calling thread is one of this pool's."""
        return getattr(self._local, "mine", False)

    def _serve(self) -> None:
        self._local.mine = True
        self._local.next = None
        while True:
            task = self._tasks.get()
            if task is None:
                return
            while task is not None:
                try:
                    task()
                except TimeLimitExceeded:
                    # meant for a run that is a ghost already (it reached the thread as the
                    # handler ended): the thread serves on
                    log.debug("a late TimeLimitExceeded in %s", threading.current_thread().name)
                except BaseException:
                    log.exception("a worker thread task failed")
                task, self._local.next = self._local.next, None
            with self._lock:
                self._idle += 1
