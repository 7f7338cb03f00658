"""TimeLimitExceeded raised inside a handler's thread, as CPython's asynchronous exceptions do
(`PyThreadState_SetAsyncExc`, what Dramatiq's time limit uses).

The exception takes effect when the thread next runs Python code: a thread blocked in C
(time.sleep, a socket read, a lock or Event wait) gets it only once that call returns, and one
that never returns keeps its thread. The caller (runs.py) raises it only while the thread runs
the handler, and the thread absorbs it, under the same lock, if the handler left before it took
effect, so that it never lands in the next job the thread runs. It is never withdrawn with
`PyThreadState_SetAsyncExc(id, NULL)`: on CPython 3.11 that leaves the interpreter's
"asynchronous exception pending" signal set with nothing to deliver, and a thread that then
turns tracing on (a debugger, coverage) hangs.
"""

from __future__ import annotations

import ctypes
import sys
import threading

from kickq._model.errors import TimeLimitExceeded

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.restype = ctypes.c_int


def interrupt(thread_id: int) -> bool:
    """Raise TimeLimitExceeded in thread `thread_id` at its next Python instruction; False if
    no such thread runs (it ended), or if the process is traced (see `traced`)."""
    if traced():
        return False
    return bool(_set_async_exc(ctypes.c_ulong(thread_id), ctypes.py_object(TimeLimitExceeded)))


def traced() -> bool:
    """Whether a trace function is set (a debugger, coverage): then no thread is interrupted.
    On CPython 3.11, while an interrupt waits on a thread blocked in C, every traced thread
    spins as it enters a function (the interpreter's "pending" signal stays set), so the
    process would hang under a debugger or coverage; it is checked in the thread that
    interrupts, and for threads still to start."""
    return sys.gettrace() is not None or threading.gettrace() is not None


def absorb() -> None:
    """In the thread an interrupt was meant for, once it has left the handler: take the
    interrupt if it has not taken effect yet, so that none is left to land later.

    It raises one more in this thread and catches it: a pending interrupt is replaced, and the
    raise signals the interpreter, so it is delivered here, at the latest on entering
    `_checkpoint`. (Without that signal a pending one could wait: CPython 3.11 keeps a single
    "asynchronous exception pending" flag for all threads, cleared by whichever takes its own.)
    """
    try:
        _set_async_exc(ctypes.c_ulong(threading.get_ident()), ctypes.py_object(TimeLimitExceeded))
        _checkpoint()
    except TimeLimitExceeded:
        pass


def _checkpoint() -> None:
    return None
