"""TimeLimitExceeded raised inside a handler's thread, as CPython's asynchronous exceptions do
(`PyThreadState_SetAsyncExc`, what Dramatiq's time limit uses).

The exception takes effect when the thread next runs Python code: a thread blocked in C
(time.sleep, a socket read, a lock or Event wait) gets it only once that call returns, and one
that never returns keeps its thread. The caller (runs.py) raises it only while the thread runs
the handler, and withdraws it, under the same lock, if the handler left before it took effect,
so that it never lands in the next job the thread runs.
"""

from __future__ import annotations

import ctypes

from kickq._model.errors import TimeLimitExceeded

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.restype = ctypes.c_int


def interrupt(thread_id: int) -> bool:
    """Raise TimeLimitExceeded in thread `thread_id` at its next Python instruction; False if
    no such thread runs (it ended)."""
    return bool(_set_async_exc(ctypes.c_ulong(thread_id), ctypes.py_object(TimeLimitExceeded)))


def withdraw(thread_id: int) -> None:
    """Take back an interrupt of thread `thread_id` that has not taken effect yet (if any)."""
    _set_async_exc(ctypes.c_ulong(thread_id), None)
