"""The process-wide engine: one client, dispatcher, listener, timer and the workers.

Started lazily by the first API call that needs Redis and stopped, in reverse order, by
`kickq.reset()` or a change of connection options. Nothing here does I/O on the caller's thread:
connecting (and starting the embedded server) happens in the background threads.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from kickq._engine import tracing
from kickq._engine.cancel_routing import CancelRouter
from kickq._engine.dependencies import Handover
from kickq._engine.dispatcher import Call, Dispatcher
from kickq._engine.future import KickqFuture, LoopThread, follow, reject, resolve
from kickq._engine.handlers import Handler
from kickq._engine.heartbeats import Heartbeats
from kickq._engine.pool import ThreadPool
from kickq._engine.progress import ProgressWriter
from kickq._engine.schedule_ticks import ScheduleTicks
from kickq._engine.settle import Settler
from kickq._engine.skew import ClockCheck
from kickq._engine.timer import Timer
from kickq._engine.waits import Closed, Waiter, Waits
from kickq._engine.worker import Worker, WorkerContext
from kickq._model import clock, forks, lifecycle
from kickq._model.config import purge_timeout, settings
from kickq._model.errors import DamagedRecord, JobNotFound, RedisUnavailable
from kickq._model.job import Job, State, reply_to_here
from kickq._model.retries import interval_for
from kickq._redis import connection
from kickq._redis.keys import is_job_id
from kickq._redis.listener import Listener
from kickq._redis.outage import translate
from kickq._redis.schedule_store import ScheduleStore
from kickq._redis.store import FENCED, Store
from kickq._redis.stored import Damaged

log = logging.getLogger("kickq")
CREATE_BATCH = 250  # jobs to one create script call: a few milliseconds of Redis at most
REPLY_CONFIRM_WAIT = 5.0  # seconds the first create with on_progress waits for the reply channel


class Runtime:
    """The engine of one process. `start()` starts its services; `close()` stops them, the
    workers first, in the reverse order."""

    def __init__(self) -> None:
        values = settings.snapshot()
        explicit = settings.explicit
        self.where = connection.describe(values, explicit)
        self.client = connection.connect(values, explicit)
        self.store = Store(self.client, values["redis_namespace"], connection.is_cluster(values))
        self.keys = self.store.keys
        self.loop = LoopThread()
        self.pool = ThreadPool("kickq-run")
        self.dispatcher = Dispatcher(self.store, self.where)
        self.progress = ProgressWriter(self.store, self.where)  # its thread starts on first use
        self.settler = Settler(self.store, self.where, self.dispatcher.task)
        self._workers: list[Worker] = []
        self._lock = threading.Lock()
        self.clock_check = ClockCheck(self.store, self.where, self._clock_moved)
        # set once the dispatcher has checked this process's clock against Redis's (its first
        # request): creates made before then are decided after it (`_create_later`)
        self._clock_checked = threading.Event()
        self.listener = Listener(connection.pubsub_connector(self.client), self._reconnected)
        # a failover may have lost what the old primary published last: catch up as after a
        # reconnect of the pub/sub connection (workers look at every name, the timer ticks,
        # waits re-read their records)
        self.store.on_failover = self.listener.missed
        self.waits = Waits(self.listener, self.store, self.dispatcher.task)
        self.cancels = CancelRouter(self.listener, self.keys.cancel, self._live_workers)
        self.heartbeats = Heartbeats(self.store, self._live_workers)
        self.schedules = ScheduleStore(self.store)
        self.schedule_ticks = ScheduleTicks(self.store, self.schedules)
        self.handover = Handover(self.store, purge_timeout, self.quarantine)
        self.timer = Timer(
            self.store,
            self.waits,
            interval_for,
            purge_timeout,
            self.quarantine,
            self.schedule_ticks.create_due,
            self.heartbeats.beat,
            self.clock_check.check_if_due,
            self.handover.run,
        )
        self.waits.on_deadline = self.timer.wake_by
        self.waits.quarantine = self.quarantine

    def start(self) -> Runtime:
        self.dispatcher.start()
        # the first request: every API call's work, which may read the clock, comes after
        self.dispatcher.task(self._first_clock_check, self._clock_checked.set)
        self.listener.start()
        # once listening (again, after a reconnect), a tick reads what may have been missed,
        # and the clock is checked again (the server may be another after a failover)
        self.listener.subscribe(self.keys.timers, self._announced, self._listening)
        self.timer.start()
        return self

    def _listening(self) -> None:
        self.clock_check.soon()
        self.timer.nudge(0)

    def _first_clock_check(self) -> None:
        try:
            self.clock_check.ensure()
        except Exception:  # Redis is away: the timer thread checks again, and logs it
            pass
        finally:
            self._clock_checked.set()

    def _clock_moved(self, seconds: float) -> None:
        """kickq's clock was corrected by `seconds`: the local deadlines set before move with
        it, so that each still comes as long after it was set as meant."""
        self.waits.shift(seconds)
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.clock_moved(seconds)
        self.heartbeats.soon()  # its last_seen, on the corrected clock, at the next tick
        self.timer.nudge()

    def _announced(self, payload: str) -> None:
        """Another process (or this one) set a deadline every timer must know of."""
        try:
            due_ms = int(payload)
        except ValueError:
            return  # not kickq's: a tick finds whatever is due anyway
        self.timer.nudge(due_ms)

    def create(
        self,
        name: str,
        data: Any,
        options: dict[str, Any],
        data_json: str,
        unique_key: str | None = None,
    ) -> KickqFuture[Job]:
        """Save a new job (options already checked and cascaded); with `hotjob`, its wait is
        listening before the save goes out, so that no completion can be missed."""
        return self.create_many(name, [(data, data_json, unique_key)], options)[0]

    def create_many(
        self, name: str, items: list[tuple[Any, str, str | None]], options: dict[str, Any]
    ) -> list[KickqFuture[Job]]:
        """Save new jobs of one name, (data, its JSON, unique key) each, alike but for those:
        CREATE_BATCH jobs to a script call, each job still saved alone (see create.lua)."""
        # the producer spans are children of the span current here, in the caller's thread
        spans = tracing.send_spans(name, len(items)) if tracing.enabled else None
        if (
            not self._clock_checked.is_set()
            or options.get("after")
            or (options.get("on_progress") is not None and not self.waits.replies_confirmed)
        ):
            return self._create_later(name, items, options, spans)
        return self._create_now(name, items, options, self.dispatcher.call_many, spans)

    def _create_later(
        self,
        name: str,
        items: list[tuple[Any, str, str | None]],
        options: dict[str, Any],
        spans: list[Any] | None,
    ) -> list[KickqFuture[Job]]:
        """Creates made before this process's clock was checked against Redis's are decided
        on the dispatcher thread after the check, their times on the corrected clock (a host
        whose clock is off would else date them, and their delays, by its own); so are creates
        with `after=`, once their parents are read (`_parents`), and the first hotjobs with
        `on_progress`, once the reply channel listens. Their calls are served where
        the create was queued: before anything asked for after it (a later create, a
        drain)."""
        futures: list[KickqFuture[Job]] = [KickqFuture() for _ in items]

        def run() -> None:
            try:
                if options.get("on_progress") is not None:
                    self.waits.confirm_replies(REPLY_CONFIRM_WAIT)
                parents = self._parents(options) if options.get("after") else None
                made = self._create_now(
                    name, items, options, self.dispatcher.call_next, spans, parents
                )
            except Exception as exc:  # create() never raises: every future says why
                made = [KickqFuture() for _ in items]
                for future in made:
                    reject(future, exc)
            for source, future in zip(made, futures, strict=True):
                follow(source, future)

        def cancel() -> None:
            for future in futures:
                future.cancel()

        self.dispatcher.task(run, cancel)
        return futures

    def _create_now(
        self,
        name: str,
        items: list[tuple[Any, str, str | None]],
        options: dict[str, Any],
        send: Callable[[list[Call]], None],
        spans: list[Any] | None = None,
        parents: lifecycle.Parents | None = None,
    ) -> list[KickqFuture[Job]]:
        now = clock.now()
        savings = [self._saving(name, data, options, key, now, parents) for data, _, key in items]
        traces = None
        if spans is not None:
            traces = tracing.sent(spans, [saving.change.job.id for saving in savings])
        calls = []
        for start in range(0, len(savings), CREATE_BATCH):
            batch = _Batch(self, savings[start : start + CREATE_BATCH])
            data_jsons = [data_json for _, data_json, _ in items[start : start + CREATE_BATCH]]
            call = self.store.create_call(
                [saving.change for saving in batch.savings],
                data_jsons,
                None if traces is None else traces[start : start + CREATE_BATCH],
            )
            calls.append(Call(call, batch.saved, batch.cancelled, batch.unanswered))
        send(calls)
        return [saving.future for saving in savings]

    def _saving(
        self,
        name: str,
        data: Any,
        options: dict[str, Any],
        unique_key: str | None,
        now: datetime.datetime,
        parents: lifecycle.Parents | None = None,
    ) -> _Saving:
        change = lifecycle.create(
            self.store.new_id(name), name, data, options, now, unique_key, parents
        )
        timeout = change.job.hotjob_timeout if change.job.hotjob else None
        waiter = None
        if timeout is not None:
            waiter = self.waits.hotjob(change.job.id, timeout, options.get("on_progress"))
        if waiter is not None:  # the record names where this process waits for it
            reply_to_here(change.job, self.waits.reply_channel)
        return _Saving(self, change, KickqFuture(), waiter, timeout, options.get("on_progress"))

    def _parents(self, options: dict[str, Any]) -> lifecycle.Parents:
        """The parents of a create with `after=`, as they stand: JobNotFound for one that is
        not there (nothing is saved), and the result of each that succeeded already."""
        after: tuple[str, ...] = options["after"]
        for parent in after:
            if not is_job_id(parent):
                raise JobNotFound(f"no job with id {parent!r} (in after=)")
        results = {}
        for parent, found in zip(after, self.store.load_many(after), strict=True):
            if found is None:
                raise JobNotFound(f"no job with id {parent!r} (in after=)")
            if isinstance(found, Damaged):
                self.quarantine(found)
                raise DamagedRecord(found.job_id, found.error)
            if found.job.state is State.SUCCESS:
                results[parent] = found.job.result
        return lifecycle.Parents(after, results, options.get("after_failed") or "fail")

    def process(
        self, names: list[str], handler: Callable[..., Any], concurrent_jobs: int
    ) -> Worker:
        """Start a worker for these (checked) names in this process."""
        self.cancels.start()  # before the first claim: a cancel may follow it at once
        worker = Worker(names, Handler(handler, self.loop), concurrent_jobs, self._context())
        with self._lock:
            self._workers = [w for w in self._workers if not w.stopped]
            self._workers.append(worker)
        worker.start()
        self.heartbeats.soon()
        self.timer.nudge(clock.to_ms(clock.now()))  # a tick now: the heartbeat goes out
        return worker

    def _live_workers(self) -> list[Worker]:
        with self._lock:
            return list(self._workers)

    def served_names(self) -> list[str]:
        """The job names the workers of this process still fetch, each once."""
        with self._lock:
            workers = list(self._workers)
        return list(dict.fromkeys(name for w in workers if w.fetching for name in w.names))

    def _context(self) -> WorkerContext:
        return WorkerContext(
            store=self.store,
            listener=self.listener,
            pool=self.pool,
            interval_for=interval_for,
            purge_timeout=purge_timeout,
            on_scheduled=self.timer.nudge,
            quarantine=self.quarantine,
            cancels=self.cancels,
            clock_ready=self.clock_check.ensure,
            progress=self.progress,
        )

    def quarantine(self, damaged: Damaged) -> None:
        """Set a record that cannot be decoded aside (unless a script did already), loudly:
        one ERROR, from whichever reader moved it. Others that read it before it moved (a
        wait, a get, another process's timer) find it gone, and say nothing."""
        if not damaged.moved and not self.store.quarantine(damaged):
            return
        log.error(
            "job %s has a damaged record (%s); moved aside to %s",
            damaged.job_id,
            damaged.error,
            self.store.keys_of(damaged.job_id).damaged(damaged.job_id),
        )

    def _reconnected(self) -> None:
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.nudge()

    def close(self, worker_timeout: float = 1.0) -> None:
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:  # all stop fetching at once, then each is waited for
            worker.stop_fetching()
        for worker in workers:
            worker.stop(worker_timeout)
        self.waits.cancel_all()
        self.progress.stop()
        self.timer.stop()
        if workers:
            with contextlib.suppress(Exception):  # else they leave workers() within 30 s
                self.heartbeats.forget()
        self.settler.stop()
        self.dispatcher.stop()
        self.listener.stop()
        self.pool.stop()
        self.loop.stop()
        self.client.close()
        self.clock_check.close()  # last: the threads above read the corrected clock until done


@attrs.define
class _Saving:
    """A new job on its way to Redis, and what its save resolves."""

    engine: Runtime
    change: lifecycle.Change
    future: KickqFuture[Job]
    waiter: Waiter | None
    timeout: float | None  # a hotjob's
    on_progress: Callable[[Any], None] | None = None

    def saved(self, result: Any) -> None:
        # 1: saved. 0 (a record with this random id exists already) would mean saved too, but
        # no call is sent twice (see _settle.py for a lost reply). FENCED comes only to a call
        # whose reply was lost, settled already: read, it would be "nothing was stored".
        if result == FENCED:
            result = RedisUnavailable(f"the create of job {self.change.job.id} was fenced")
        if self.future.cancelled():  # by its caller, or by kickq.reset() while the save was out
            self._drop_wait()
        elif isinstance(result, BaseException):
            self._drop_wait(result)
            reject(self.future, result)
        elif isinstance(result, list):
            self._unique_taken(result)
        else:
            job = self.change.job
            if self.waiter is not None:
                self.engine.waits.created(self.waiter)
                job = attrs.evolve(job, hotjob_future=self.waiter.future)
            if job.scheduled_for is not None and job.state is State.DELAYED:
                self.engine.timer.nudge(clock.to_ms(job.scheduled_for))
            elif job.state is State.DEFERRED:  # its parents are told of it now (create.lua)
                self.engine.timer.nudge(0)
            resolve(self.future, job)

    def _unique_taken(self, reply: list[Any]) -> None:
        """A job that is not complete holds the unique key: it is the answer, nothing new."""
        self._drop_wait()
        holder = self.engine.store.parse_created(reply)
        if isinstance(holder, Exception):
            reject(self.future, holder)
            return
        if isinstance(holder, Damaged):
            # set aside, it no longer holds the key: the next create with it is stored
            with contextlib.suppress(Exception):  # else the next reader sets it aside
                self.engine.quarantine(holder)
            reject(self.future, DamagedRecord(holder.job_id, holder.error))
            return
        assert holder is not None
        job = holder.job
        if self.timeout is not None:
            try:
                waiter = self.engine.waits.wait(job.id, self.timeout, self.on_progress)
            except Closed:  # kickq.reset() came first: it cancels what is pending
                self.future.cancel()
                return
            job = attrs.evolve(job, hotjob_future=waiter.future)
        resolve(self.future, job)

    def _drop_wait(self, error: BaseException | None = None) -> None:
        if self.waiter is not None:
            self.engine.waits.cancel(self.waiter, error)

    def cancelled(self) -> None:
        if self.future.cancel():
            self._drop_wait()


@attrs.define
class _Batch:
    """The jobs one create call saves: its reply holds one result for each."""

    engine: Runtime
    savings: list[_Saving]

    def saved(self, reply: Any) -> None:
        if isinstance(reply, BaseException):
            for saving in self.savings:
                saving.saved(reply)
            return
        for saving, result in zip(self.savings, reply, strict=True):
            if isinstance(result, Exception):
                result = translate(result, self.engine.where)
            saving.saved(result)

    def cancelled(self) -> None:
        for saving in self.savings:
            saving.cancelled()

    @property
    def job_ids(self) -> list[str]:
        return [saving.change.job.id for saving in self.savings]

    def unanswered(self, error: BaseException) -> None:
        """The call went out but its reply was lost: the settler finds out what it saved."""
        self.engine.settler.add(self)

    def settled(self, results: Sequence[BaseException | int]) -> None:
        for saving, result in zip(self.savings, results, strict=True):
            saving.saved(result)


_lock = threading.Lock()
_runtime: Runtime | None = None
# engines inherited through fork(): kept, never closed or collected, see _forget_in_child
_inherited: list[Runtime] = []


@forks.in_child
def _forget_in_child() -> None:
    """After fork(), in the child. The inherited engine's threads are the parent's (they do not
    run here) and its sockets are shared with the parent: using them would hang or garble the
    parent's traffic, and closing them (a QUIT, a shutdown, even a finalizer) could cut the
    parent off. So it is put out of reach untouched, and the child's first call starts an engine
    of its own, with the same settings and no workers (the child calls process() itself). The
    lock is new: a parent thread may have held it at the fork."""
    global _lock, _runtime
    _lock = threading.Lock()
    if _runtime is not None:
        _inherited.append(_runtime)
        _runtime = None


def get() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime().start()
        return _runtime


def shutdown(worker_timeout: float = 1.0) -> None:
    global _runtime
    with _lock:
        current, _runtime = _runtime, None
    if current is not None:
        current.close(worker_timeout)
