"""Live updates: kickq's events, fanned out in memory to the open pages as server-sent events.

The dashboard subscribes once to each event with `kickq.on()`, so the process keeps its one
pub/sub connection however many pages are open; it subscribes when the first page opens its
stream (an app that mounts the dashboard never runs its lifespan) and cancels after the last
one left. Events arrive on kickq's listener thread and are handed to the server's event loop in
batches; each page (a `Viewer`) gathers what happened into a bounded summary, and its stream
sends at most one `change` message per COALESCE seconds: the event counts, the names touched,
up to MAX_IDS job ids and the MAX_RECENT latest events. The page then re-reads what it shows
(see static/dashboard.js): a burst of a thousand completions costs one page refresh, not a
thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

import kickq
from kickq._redis.keys import STATE_EVENTS

log = logging.getLogger("kickq.dashboard")

COALESCE = 0.3  # seconds a viewer gathers events before it is sent a change
KEEPALIVE = 15.0  # seconds between two comments on an idle stream (proxies close silent ones)
LINGER = 30.0  # seconds the subscriptions outlive the last open page
MAX_IDS = 100
MAX_RECENT = 20
Note = tuple[str, str, str, str]  # event, job id, job name, state ("" for delete)
FIELDS = ("event", "id", "name", "state")


def _note(event: str, payload: Any) -> Note:
    if isinstance(payload, dict):  # delete: {"id": ..., "queue": name}
        return (event, str(payload.get("id", "")), str(payload.get("queue", "")), "")
    return (event, payload.id, payload.name, payload.state.value)


class Viewer:
    """What happened since one page was last told; bounded whatever the rate of events."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self._reset()

    def _reset(self) -> None:
        self.counts: dict[str, int] = {}
        self.names: set[str] = set()
        self.ids: list[str] = []
        self.recent: list[Note] = []
        self.overflow = False  # more names or ids than a message carries: refresh everything

    def add(self, note: Note) -> None:
        event, job_id, name, _ = note
        self.counts[event] = self.counts.get(event, 0) + 1
        if name not in self.names and len(self.names) >= MAX_IDS:
            self.overflow = True
        else:
            self.names.add(name)
        if job_id in self.ids:
            pass
        elif len(self.ids) < MAX_IDS:
            self.ids.append(job_id)
        else:
            self.overflow = True
        self.recent = [*self.recent[-(MAX_RECENT - 1) :], note]
        self.ready.set()

    def take(self) -> dict[str, Any]:
        """The summary of what happened, as the `change` message carries it; starts afresh."""
        message = {
            "counts": self.counts,
            "names": sorted(self.names),
            "ids": self.ids,
            "recent": [dict(zip(FIELDS, n, strict=True)) for n in self.recent],
            "overflow": self.overflow,
        }
        self._reset()
        self.ready.clear()
        return message


class Fanout:
    """The dashboard's subscriptions to kickq's events, and the viewers they are fanned to.

    Subscribed when the first page opens its stream, not at start-up: an app that mounts the
    dashboard never runs its lifespan. Cancelled LINGER seconds after the last page went away
    (a reload or a click to another page keeps them), so a dashboard nobody looks at costs no
    event decoding; the pub/sub connection they share is kickq's own, one per process, and
    lives on with kickq (cancelling never closes it, subscribing never opens another).
    """

    def __init__(self) -> None:
        self._viewers: set[Viewer] = set()
        self._lock = threading.Lock()  # the pending notes, shared with kickq's listener thread
        self._subscribing = threading.Lock()  # one thread at a time subscribes or cancels
        self._pending: list[Note] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscriptions: list[kickq.EventSubscription] = []
        self._idle: asyncio.TimerHandle | None = None
        self._failed = False

    @property
    def subscribed(self) -> bool:
        return bool(self._subscriptions)

    async def subscribe(self) -> None:
        """Subscribe, if not yet, in a worker thread: `kickq.on()` waits for Redis to confirm
        (up to 5 s each when Redis is away), which the event loop must not. Without Redis the
        pages still work and say so; only the live updates are missing, until a page's stream
        reconnects and tries again."""
        if not self._subscriptions:
            await anyio.to_thread.run_sync(self._subscribe)

    def _subscribe(self) -> None:
        with self._subscribing:
            if self._subscriptions:
                return
            made: list[kickq.EventSubscription] = []
            try:
                for event in STATE_EVENTS:
                    made.append(kickq.on(event, self._receiver(event)))
            except Exception as exc:
                for subscription in made:
                    with contextlib.suppress(Exception):
                        subscription.cancel()
                level = logging.DEBUG if self._failed else logging.WARNING  # once, not per retry
                log.log(level, "kickq dashboard: no live updates (%s)", exc)
                self._failed = True
                return
            self._subscriptions = made
            self._failed = False

    def _cancel(self) -> None:
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                subscription.cancel()
        self._subscriptions = []

    def stop(self) -> None:
        """Cancel the subscriptions (the server stops)."""
        self._forget_idle()
        with self._subscribing:
            self._cancel()
        self._loop = None

    def _when_idle(self) -> None:
        """LINGER seconds after the last viewer left: cancel, unless someone came back (or is
        being subscribed for, in a thread: then look again later)."""
        self._idle = None
        loop = self._loop
        if self._viewers or loop is None:
            return
        if not self._subscribing.acquire(blocking=False):
            self._idle = loop.call_later(LINGER, self._when_idle)
            return
        try:
            self._cancel()
        finally:
            self._subscribing.release()

    def _forget_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _receiver(self, event: str) -> Callable[[Any], None]:
        def receive(payload: Any) -> None:  # on kickq's listener thread
            with self._lock:
                first = not self._pending
                self._pending.append(_note(event, payload))
            loop = self._loop
            if first and loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed: the server stopped
                    loop.call_soon_threadsafe(self._flush)

        return receive

    def _flush(self) -> None:
        with self._lock:
            notes, self._pending = self._pending, []
        for viewer in self._viewers:
            for note in notes:
                viewer.add(note)

    def join(self) -> Viewer:
        """A new viewer (on the server's event loop)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # the first, or a server that runs a new loop: start afresh
            with self._lock:
                self._pending.clear()  # notes whose flush went to a loop that is gone
            self._idle = None
            self._loop = loop
        self._forget_idle()
        viewer = Viewer()
        self._viewers.add(viewer)
        return viewer

    def leave(self, viewer: Viewer) -> None:
        self._viewers.discard(viewer)
        if not self._viewers and self._loop is not None and self._idle is None:
            self._idle = self._loop.call_later(LINGER, self._when_idle)

    @property
    def viewers(self) -> int:
        return len(self._viewers)


async def _messages(viewer: Viewer) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    while True:
        try:
            await asyncio.wait_for(viewer.ready.wait(), KEEPALIVE)
        except asyncio.TimeoutError:
            yield ": keep-alive\n\n"
            continue
        await asyncio.sleep(COALESCE)
        yield f"event: change\ndata: {json.dumps(viewer.take())}\n\n"


class EventStream(Response):
    """A text/event-stream that ends as soon as its page goes away (whatever ASGI version the
    server speaks), so that a closed tab leaves no viewer behind."""

    media_type = "text/event-stream"

    def __init__(self, fanout: Fanout) -> None:
        super().__init__(headers={"cache-control": "no-store", "x-accel-buffering": "no"})
        # a stream has no length: drop the content-length: 0 of the empty body Response assumed
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._fanout = fanout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        viewer = self._fanout.join()
        try:
            # subscribed before the stream opens: a page that shows "live" misses no event
            await self._fanout.subscribe()
            async with anyio.create_task_group() as group:
                group.start_soon(self._stream, viewer, send)
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()
        finally:
            self._fanout.leave(viewer)

    async def _stream(self, viewer: Viewer, send: Send) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        try:
            await send(start)
            async for message in _messages(viewer):
                await send(
                    {"type": "http.response.body", "body": message.encode(), "more_body": True}
                )
        except OSError:  # the page went away mid-write (a server may say so this way); the
            pass  # disconnect that follows ends the response


async def events(request: Request) -> Response:
    """GET /events: the stream of `change` messages a page listens to."""
    fanout: Fanout = request.app.state.fanout
    return EventStream(fanout)
