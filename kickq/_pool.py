"""Threads for plain handlers: as many as runs in progress, never one per job.

A run that overruns its deadline cannot be stopped while its handler runs in a thread; its
slot is given back and the thread is written off: a new thread takes the next job, and the
stuck one rejoins the pool if its handler ever returns.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger("kickq")


class ThreadPool:
    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads: list[threading.Thread] = []

    def submit(self, task: Callable[[], None]) -> None:
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
        deadline = time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(deadline - time.monotonic(), 0.0))

    def _serve(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            try:
                task()
            except BaseException:
                log.exception("kickq: a worker thread task failed")
            with self._lock:
                self._idle += 1
