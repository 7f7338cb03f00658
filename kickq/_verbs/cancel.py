"""`kickq.cancel(job_id)`: a job that is not complete ends `fail` for good, "cancelled".

The change is decided in Python (`_lifecycle.cancel`) and applied by transition.lua, fenced by
the record's version like every other change, so a cancel and a claim (or the end of a run)
racing for the same job never both apply: the loser's script finds another version, and the
cancel reads the record again and decides anew — a job claimed meanwhile is cancelled as a
running job, a job that completed meanwhile is left as it is (False). A running job's cancel is
also published on `<ns>:cancel`, for the process that holds its run to stop it (see
_cancel_router.py): its outcome, when it comes, is discarded there and fenced off here.
"""

from __future__ import annotations

from kickq._engine import runtime
from kickq._engine.future import KickqFuture
from kickq._model import clock, lifecycle
from kickq._model.config import purge_timeout
from kickq._model.errors import JobKeptChanging
from kickq._model.job import State
from kickq._verbs.background import about, applied, current, not_found

ATTEMPTS = 20  # a job changes a few times at most while a cancel reads it (claim, end, retry)


def _cancel(engine: runtime.Runtime, job_id: str) -> bool:
    store = engine.store
    for _ in range(ATTEMPTS):
        loaded = current(engine, job_id)
        change = lifecycle.cancel(loaded.job, clock.now())
        if change is None:
            return False
        running = loaded.job.state is State.PROCESSING
        also = [store.keys.cancel] if running else []
        reply = store.run(store.transition_call(change, loaded, purge_timeout(), also))
        if applied(engine, job_id, reply):
            return True
    raise JobKeptChanging(job_id, "cancelled")


def cancel(job_id: str) -> KickqFuture[bool]:
    """Cancel a job: resolves True if it was not complete (it now is: `fail`, with last_error
    "cancelled"), False if it already was. A queued, delayed, deferred or waiting job never
    runs; a running one is stopped in whichever process runs it (a coroutine is cancelled, a
    thread sees `kickq.cancelled()` turn True) and its result is discarded. Waits on it fail
    with JobCancelled, and its `after=` children fail with it. Fails with JobNotFound for an
    unknown id."""
    future: KickqFuture[bool] = about(job_id, not_found(str(job_id)), lambda e: _cancel(e, job_id))
    return future
