"""One pub/sub connection per process, fanned out in memory to every subscriber.

Each channel is subscribed once on the wire, however many in-process subscribers it has.
A subscriber's `on_ready` runs every time the server confirms its channel: after the first
SUBSCRIBE and again after every reconnect, so a waiter can re-read the record and catch
whatever was published while it was not listening.

Only the reader thread ever opens, reads or closes the connection, so every reconnect is its
own: `_open` subscribes every channel again (their confirmations fire the `on_ready` callbacks)
and `on_reconnect` follows. SUBSCRIBE and UNSUBSCRIBE, from other threads or from callbacks on
the reader thread, are written straight on the socket (`_send`, under the lock), not with
redis-py's `send_command`: when a write finds the socket broken, redis-py disconnects, and its
next use of the connection (a write, or the reader's `can_read`) connects again, silently, to a
connection with none of the subscriptions; and a connect made by another thread would read its
handshake replies while the reader thread reads the same socket. A failed write here shuts the
socket down instead, so the reader sees the connection end and starts over. A connect callback
refuses any reconnect that redis-py might still make on its own. `missed` runs the same catch-up
without a reconnect, when a message may have been lost on its way (see Store.on_failover).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import attrs
import redis

from kickq._model import clock
from kickq._redis import compat
from kickq._redis.outage import LoopBackoff

log = logging.getLogger("kickq")


class Reopened(Exception):
    """redis-py reconnected the pub/sub connection by itself. Not a ConnectionError, which
    redis-py's retry policy would answer by connecting once more."""


# what ends a connection (ValueError: a read on a socket closed under it)
LOST = (redis.ConnectionError, redis.TimeoutError, OSError, ValueError, Reopened)


@attrs.define(eq=False)
class Subscription:
    channel: str
    on_message: Callable[[str], None]
    on_ready: Callable[[], None] | None = None


class Listener:
    def __init__(self, connect: Callable[[], Any], on_reconnect: Callable[[], None]) -> None:
        self._connect = connect
        self._on_reconnect = on_reconnect
        self._lock = threading.Lock()
        self._channels: dict[str, list[Subscription]] = {}
        self._conn: Any = None
        self._confirmed: set[str] = set()
        self._stopping = threading.Event()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="kickq-listener", daemon=True)

    def subscribe(
        self,
        channel: str,
        on_message: Callable[[str], None],
        on_ready: Callable[[], None] | None = None,
    ) -> Subscription:
        subscription = Subscription(channel, on_message, on_ready)
        if self._forked():
            return subscription
        with self._lock:
            subscribers = self._channels.setdefault(channel, [])
            subscribers.append(subscription)
            if len(subscribers) == 1:
                self._send("SUBSCRIBE", channel)
            confirmed = channel in self._confirmed
        if confirmed and on_ready is not None:
            self._ready(on_ready)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if self._forked():
            return
        with self._lock:
            subscribers = self._channels.get(subscription.channel)
            if not subscribers or subscription not in subscribers:
                return
            subscribers.remove(subscription)
            if not subscribers:
                del self._channels[subscription.channel]
                self._confirmed.discard(subscription.channel)
                self._send("UNSUBSCRIBE", subscription.channel)

    def missed(self) -> None:
        """Messages may have been lost without this connection noticing (a primary failed over
        before what it published last crossed the cluster bus): every subscriber catches up as
        after a reconnect, from the calling thread."""
        if self._forked():
            return
        with self._lock:
            ready = [
                subscription.on_ready
                for channel, subscribers in self._channels.items()
                if channel in self._confirmed
                for subscription in subscribers
                if subscription.on_ready is not None
            ]
        for on_ready in ready:
            self._ready(on_ready)
        self._ready(self._on_reconnect)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop listening and close the connection. Callable from a subscriber's callback (on
        the listening thread): the thread then ends once the callback returns."""
        if self._forked():
            return
        self._stopping.set()
        with self._lock:
            conn = self._conn
        sock = compat.socket_of(conn)
        if sock is not None:
            # wakes the reader at once; it closes the connection itself, in its own thread
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def is_reader_thread(self) -> bool:
        """Whether the caller is the listening thread (a subscriber's callback)."""
        return threading.current_thread() is self._thread

    def _forked(self) -> bool:
        """True in a child forked from the process that made this listener (reached through
        a handle the child inherited, such as a Worker or an EventSubscription): the connection
        and the thread are the parent's, so nothing is sent, closed or waited for."""
        return os.getpid() != self._pid

    # -- the listening thread -----------------------------------------------------------

    def _send(self, *command: str) -> None:
        """Write on the pub/sub connection (lock held); a broken one is mended by the reader."""
        sock = compat.socket_of(self._conn)
        if sock is None:  # not connected yet: `_open` subscribes every channel
            return
        try:
            sock.sendall(b"".join(self._conn.pack_command(*command)))
        except OSError:
            # leave the connection to the reader: ending the socket makes its next read fail
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        retry = LoopBackoff("pub/sub listener", log, expected=LOST)
        reconnecting = False
        while not self._stopping.is_set():
            opened = clock.real_monotonic()
            try:
                self._open()
                if reconnecting:
                    log.info("pub/sub connection restored")
                    self._ready(self._on_reconnect)
                reconnecting = True
                self._read()
                pause = 0.0
            except Exception as exc:  # the listener outlives anything one connection does
                if self._stopping.is_set():
                    break
                reconnecting = True
                if clock.real_monotonic() - opened > 5.0:  # it had been working: retry at once
                    retry.succeeded()
                pause = retry.failed(exc)
            self._close()
            self._stopping.wait(pause)
        self._close()

    def _close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            self._confirmed.clear()
        if conn is not None:
            conn.disconnect()

    def _open(self) -> None:
        conn = self._connect()
        conn.connect()
        # Any later connect of this connection would be redis-py reopening it by itself,
        # without the subscriptions: make that an error, which sends the reader round again.
        conn.register_connect_callback(self._refuse_reconnect)
        with self._lock:
            if self._stopping.is_set():
                conn.disconnect()
                return
            self._conn = conn
            channels = list(self._channels)
            if channels:
                conn.send_command("SUBSCRIBE", *channels)

    def _read(self) -> None:
        while not self._stopping.is_set():
            conn = self._conn
            if conn is None:
                return
            if conn.can_read(timeout=1.0):
                self._handle(conn.read_response())

    def _handle(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 3:
            return
        kind, channel, payload = reply[0], reply[1], reply[2]
        if kind == "message":
            for subscription in self._subscribers(channel):
                self._deliver(subscription, payload)
        elif kind == "subscribe":
            with self._lock:
                if channel in self._channels:
                    self._confirmed.add(channel)
            for subscription in self._subscribers(channel):
                if subscription.on_ready is not None:
                    self._ready(subscription.on_ready)

    def _refuse_reconnect(self, conn: Any) -> None:
        raise Reopened("the pub/sub connection was reopened outside the listener")

    def _subscribers(self, channel: str) -> list[Subscription]:
        with self._lock:
            return list(self._channels.get(channel, ()))

    @staticmethod
    def _deliver(subscription: Subscription, payload: str) -> None:
        try:
            subscription.on_message(payload)
        except Exception:
            log.exception("a subscriber of %s failed", subscription.channel)

    @staticmethod
    def _ready(on_ready: Callable[[], None]) -> None:
        try:
            on_ready()
        except Exception:
            log.exception("a subscription callback failed")
