"""The verbs of kickq: validate, then hand on to the runtime. None of them blocks on Redis.

The helpers they share with the other verb modules are in background.py."""

from __future__ import annotations

import datetime
import inspect
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, overload

from kickq._engine import middleware, runtime, tracing
from kickq._engine.cancel_routing import current_run
from kickq._engine.future import KickqFuture, failed, follow, on_event_loop
from kickq._engine.waits import Closed
from kickq._engine.worker import Worker
from kickq._model import config, lifecycle
from kickq._model.config import settings
from kickq._model.errors import ConfigError, SerializationError
from kickq._model.job import Job
from kickq._model.json import check_size, dumps
from kickq._redis import connection
from kickq._redis.keys import EVENTS, is_job_id
from kickq._redis.record import encode, from_event
from kickq._verbs.background import about, check_id, current, not_found, unknown_id

SUBSCRIBE_WAIT = 5.0  # seconds on() waits for Redis to confirm its subscription

Names = str | Iterable[str]


@overload
def configure() -> Mapping[str, Any]: ...
@overload
def configure(options: Mapping[str, Any], /, **more: Any) -> Mapping[str, Any]: ...
@overload
def configure(name: str, value: Any, /) -> Mapping[str, Any]: ...
@overload
def configure(**options: Any) -> Mapping[str, Any]: ...


def configure(*args: Any, **options: Any) -> Mapping[str, Any]:
    """kickq.config(): read (no argument) or change the process-global configuration.

    Forms: config(dict), config(name, value), config(**options). Returns a read-only snapshot.
    Changing a connection option (redis_*) takes effect at once: the running engine is stopped
    and the next call connects to the new server.
    """
    if len(args) == 2 and isinstance(args[0], str):
        if options:
            raise ConfigError("config(name, value) takes no keyword options too")
        options = {args[0]: args[1]}
    elif len(args) == 1:
        if not isinstance(args[0], Mapping):
            raise ConfigError(f"config() takes a dict, a name and a value, or keywords: {args!r}")
        options = {**args[0], **options}
    elif args:
        raise ConfigError(f"config() takes a dict, a name and a value, or keywords: {args!r}")
    if options:
        changed = settings.update(options, connection.CONFIG_OPTIONS)
        if changed & config.CONNECTION_OPTIONS:
            runtime.shutdown()
        if "tracing" in changed:
            tracing.switch(settings.get("tracing"))
    return settings.snapshot()


def reset() -> None:
    """Stop workers, cancel waits, close connections, remove middleware, restore every default."""
    runtime.shutdown()
    settings.reset()
    middleware.clear()
    tracing.switch(False)


def use(fn: middleware.Middleware) -> None:
    """Wrap every handler run of this process's workers in the middleware `fn(job, call_next)`.

    `call_next()` runs the next middleware, then the handler, and returns the handler's result
    or raises its error; what `fn` returns (or raises) is the run's outcome. The first
    middleware added is the outermost. A plain `def` middleware runs in the thread that calls
    the handler, for every handler style; an `async def` one wraps coroutine handlers only, on
    kickq's loop (`return await call_next()`), inside every plain one. It applies to every run
    that starts from now on, in workers started before too; `kickq.reset()` removes it.
    """
    if not callable(fn):
        raise TypeError(f"a middleware must be callable, not {fn!r}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins show no signature: trust them
        signature = None
    if signature is not None:
        try:
            signature.bind(None, None)
        except TypeError as exc:
            raise TypeError(f"a middleware is called as fn(job, call_next): {exc}") from None
    middleware.add(fn)


def _options(
    opts: Any, keywords: Mapping[str, Any], table: Mapping[str, config.Option], where: str
) -> dict[str, Any]:
    if opts is None:
        merged: dict[str, Any] = dict(keywords)
    elif isinstance(opts, Mapping):
        merged = {**opts, **keywords}
    else:
        raise ConfigError(f"{where} options must be a dict, not {type(opts).__name__}")
    return config.validate(merged, table, where=where)


def create(
    name: str, data: Any = None, opts: Mapping[str, Any] | None = None, **options: Any
) -> KickqFuture[Job]:
    """Create a job; the future resolves to the saved Job or fails with the reason."""
    if on_event_loop():
        return _off_the_loop(name, data, opts, options)
    return _create(name, data, opts, options)


def _create(
    name: str,
    data: Any,
    opts: Mapping[str, Any] | None,
    options: Mapping[str, Any],
    data_json: str | None = None,
) -> KickqFuture[Job]:
    try:
        effective = _create_options(name, opts, options)
        if data_json is None:  # else encoded and measured on the event loop's thread
            data_json = check_size(dumps(data, "job data"), "job data", config.max_value_bytes())
        unique_key = _unique_key(effective, data)
    except (ConfigError, SerializationError, TypeError, ValueError) as exc:
        return failed(exc)
    try:
        return runtime.get().create(name, data, effective, data_json, unique_key)
    except Exception as exc:  # create() never raises: whatever went wrong fails the future
        return failed(exc)


def _off_the_loop(
    name: str, data: Any, opts: Mapping[str, Any] | None, options: Mapping[str, Any]
) -> KickqFuture[Job]:
    """create() called on an asyncio event loop's thread: only the data is encoded here (what
    it holds now is what is saved); checking the options, building the job and its record run
    on the dispatcher thread, so that a burst of creates does not hold the loop up."""
    try:
        data_json = dumps(data, "job data")
        engine = runtime.get()
    except Exception as exc:  # create() never raises
        return failed(exc)
    future: KickqFuture[Job] = KickqFuture()
    copied = dict(opts) if isinstance(opts, Mapping) else opts

    def run() -> None:
        follow(_create(name, data, copied, options, data_json), future)

    engine.dispatcher.task(run, future.cancel)
    return future


def create_many(
    name: str, items: Iterable[Any], opts: Mapping[str, Any] | None = None, **options: Any
) -> list[KickqFuture[Job]]:
    """Create one job per item of `items`, all with the same options: one future per item, in
    order. An item whose data is not JSON fails its own future alone; a bad name or option
    fails them all, and nothing is stored. The jobs are saved in pipelined batches."""
    try:
        values = _items(items)
    except TypeError as exc:  # no items to give a future each: one future says why
        return [failed(exc)]
    encoded = [_encoded(data) for data in values]
    if not on_event_loop():
        return _create_many(name, encoded, opts, options)
    # on an event loop's thread, as create() does: the rest on the dispatcher thread
    futures: list[KickqFuture[Job]] = [KickqFuture() for _ in encoded]
    copied = dict(opts) if isinstance(opts, Mapping) else opts

    def run() -> None:
        for made, future in zip(_create_many(name, encoded, copied, options), futures, strict=True):
            follow(made, future)

    def cancel() -> None:
        for future in futures:
            future.cancel()

    try:
        runtime.get().dispatcher.task(run, cancel)
    except Exception as exc:  # create_many() never raises
        return [failed(exc) for _ in encoded]
    return futures


def _encoded(data: Any) -> tuple[Any, str] | Exception:
    try:
        return data, check_size(dumps(data, "job data"), "job data", config.max_value_bytes())
    except (SerializationError, TypeError, ValueError) as exc:
        return exc


def _create_many(
    name: str,
    encoded: list[tuple[Any, str] | Exception],
    opts: Mapping[str, Any] | None,
    options: Mapping[str, Any],
) -> list[KickqFuture[Job]]:
    try:
        effective = _create_options(name, opts, options)
    except (ConfigError, TypeError, ValueError) as exc:
        return [failed(exc) for _ in encoded]
    futures: list[KickqFuture[Job] | None] = []
    ready: list[tuple[Any, str, str | None]] = []
    for item in encoded:
        try:
            if isinstance(item, Exception):
                raise item
            data, data_json = item
            ready.append((data, data_json, _unique_key(effective, data)))
            futures.append(None)
        except (SerializationError, TypeError, ValueError) as exc:
            futures.append(failed(exc))
    try:
        saved = iter(runtime.get().create_many(name, ready, effective))
    except Exception as exc:
        return [future or failed(exc) for future in futures]
    return [future or next(saved) for future in futures]


def _items(items: Any) -> list[Any]:
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise TypeError(f"create_many() takes a list (or iterable) of items, not {items!r}")
    return list(items)


def _create_options(name: str, opts: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The checked, cascaded options of a create() call."""
    config.check_job_name(name)
    per_call = _options(opts, options, config.PER_CALL, "create()")
    if callable(per_call.get("retry_interval")):
        raise ConfigError(
            "retry_interval in create() must be a number of seconds: a function cannot "
            "travel with the job; set it with kickq.config() or job_flags instead"
        )
    if per_call.get("at") is not None and per_call.get("delay") is not None:
        raise ConfigError("create() takes at or delay, not both")
    if per_call.get("meta"):  # checked before anything is stored, as the data is
        check_size(dumps(per_call["meta"], "meta"), "meta", config.max_value_bytes())
    if per_call.get("unique_key") is not None:
        check_size(encode(per_call["unique_key"]), "unique_key", config.max_value_bytes())
    effective = settings.cascade(name, per_call)
    if effective.get("on_progress") is not None and not effective["hotjob"]:
        raise ConfigError(
            "on_progress is called while a hotjob's future waits: create() takes it with "
            "hotjob=True only (kickq.wait(job_id, on_progress=fn) follows any job)"
        )
    if callable(effective["retry_interval"]):
        effective["retry_interval"] = None  # decided by the config of the worker's process
    return effective


def _unique_key(options: Mapping[str, Any], data: Any) -> str | None:
    """The job's unique key: the one given, else (unique=True) a digest of its data."""
    if options.get("unique_key") is not None:
        return str(options["unique_key"])
    if not options["unique"]:
        return None
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return lifecycle.unique_key_of(canonical)


def get(job_id: str) -> KickqFuture[Job]:
    """Look a job up by id; fails with JobNotFound for an unknown id."""
    future: KickqFuture[Job] = about(
        job_id, not_found(str(job_id)), lambda engine: current(engine, job_id).job
    )
    return future


def delete(job_id: str) -> KickqFuture[bool]:
    """Delete a job in any state; resolves True if it existed. It will not run afterwards."""
    future: KickqFuture[bool] = about(job_id, False, lambda e: e.store.delete(job_id))
    return future


def wait(
    job_id: str,
    timeout: float | datetime.timedelta | None = None,
    on_progress: Callable[[Any], None] | None = None,
) -> KickqFuture[Job]:
    """Wait for any job to finish, from any process: the job's completion as a future.

    Resolves with the finished Job, fails with JobFailed if it ends in failure, JobNotFound if
    there is no such job (or it is deleted meanwhile), HotjobTimeout after `timeout` seconds.
    `on_progress(value)` is called with each progress its run reports (`kickq.progress`), in
    order, on kickq's listener thread, until the future resolves (the last value first).
    """
    try:
        check_id(job_id)
        seconds = None if timeout is None else config.check_duration("timeout", timeout)
        config.CALL_ONLY["on_progress"].check("on_progress", on_progress)
    except (TypeError, ValueError) as exc:
        return failed(exc)
    if not is_job_id(job_id):
        return unknown_id(not_found(job_id))
    while True:
        try:
            engine = runtime.get()
        except Exception as exc:
            return failed(exc)
        try:
            # the timeout counts from when the wait is listed, on the clock its deadline
            # keeps: a clock correction of the engine starting here moves it (Waits.shift)
            return engine.waits.wait(job_id, seconds, on_progress).future
        except Closed:  # stopped under this call (kickq.reset() in another thread): the next
            continue  # engine, already the one get() makes, answers it


def progress(value: Any) -> KickqFuture[bool]:
    """Report `value` (any JSON value) as the progress of the run this is called from: a
    handler of any style, or its middleware. Never blocks: the future resolves True once Redis
    has the value, False when the run no longer counts (ghosted, cancelled, the job deleted; the
    value is then dropped); it fails with SerializationError for a value that is not JSON.
    Reports in quick succession are coalesced: at most one write per run in flight, and one per
    50 ms. Called outside a run, it raises RuntimeError."""
    token = current_run()
    if token is None or token.writer is None:
        raise RuntimeError(
            "kickq.progress() reports the progress of a run: call it from a handler or its "
            "middleware (a thread the handler starts knows its run only if started in a copy "
            "of its context: contextvars.copy_context().run)"
        )
    return token.writer.report(token, value)


def process(names: Names, *args: Any, **options: Any) -> Worker:
    """Run `handler` for jobs of these names in this process: process(names, [opts,] handler)."""
    if len(args) == 1:
        opts, handler = None, args[0]
    elif len(args) == 2:
        opts, handler = args
    else:
        raise TypeError("process() takes (names, handler) or (names, options, handler)")
    job_names, concurrent_jobs = check_processor(names, opts, options, "process()")
    if not callable(handler):
        raise TypeError(f"a handler must be callable, not {handler!r}")
    return runtime.get().process(job_names, handler, concurrent_jobs)


def check_processor(
    names: Names, opts: Any, options: Mapping[str, Any], where: str
) -> tuple[list[str], int]:
    """The checked names (duplicates dropped) and concurrent_jobs of process() or processor()."""
    job_names = [names] if isinstance(names, str) else list(names)
    if not job_names:
        raise ConfigError(f"{where} needs at least one job name")
    for job_name in job_names:
        config.check_job_name(job_name)
    checked = _options(opts, options, config.PROCESS_OPTIONS, where)
    concurrent_jobs = checked.get(
        "concurrent_jobs", config.PROCESS_OPTIONS["concurrent_jobs"].default
    )
    return list(dict.fromkeys(job_names)), concurrent_jobs


class EventSubscription:
    """The handle `kickq.on()` returns; `cancel()` stops the callbacks."""

    def __init__(self, engine: runtime.Runtime, subscription: Any) -> None:
        self._engine = engine
        self._subscription = subscription

    def cancel(self) -> None:
        self._engine.listener.unsubscribe(self._subscription)


def on(event: str, callback: Callable[[Any], None]) -> EventSubscription:
    """Call `callback` for every `event` published in this namespace, from any process.

    `callback` gets the Job for create, queued, success, fail and progress (a run reported
    its progress: `job.progress` holds the value), and a dict with `id` and `queue` for
    delete. It runs on kickq's listener thread: keep it short. on() returns once
    Redis has confirmed the subscription (at most SUBSCRIBE_WAIT seconds when Redis cannot be
    reached; the callbacks start once it can), so every event published afterwards is seen.
    """
    if event not in EVENTS:
        raise ConfigError(f"unknown event {event!r}; events are {', '.join(EVENTS)}")
    if not callable(callback):
        raise TypeError(f"callback must be callable, not {callback!r}")

    def deliver(payload: str) -> None:
        callback(json.loads(payload) if event == "delete" else from_event(payload))

    engine = runtime.get()
    confirmed = threading.Event()
    subscription = engine.listener.subscribe(engine.keys.event(event), deliver, confirmed.set)
    # Pub/sub delivers only what is published after Redis took the SUBSCRIBE: wait for it, so
    # that whatever the caller does next is seen. The listener's own thread reads that
    # confirmation, so a callback calling on() cannot wait for it.
    if not engine.listener.is_reader_thread():
        confirmed.wait(SUBSCRIBE_WAIT)
    return EventSubscription(engine, subscription)
