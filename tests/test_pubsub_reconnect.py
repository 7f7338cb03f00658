"""The pub/sub connection killed while other threads write on it: every channel is subscribed
again, every wait re-reads its job, and no hotjob is left to time out."""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import kickq
from kickq._model.config import settings
from kickq._redis import connection
from kickq._redis.listener import Listener
from support import client_lists, wait_until

pytestmark = [pytest.mark.both_backends, pytest.mark.lowest_redis_py]


def pace(seconds: float) -> None:
    """Spread events out in time (not a wait for a condition: those use wait_until)."""
    threading.Event().wait(seconds)


def kill_pubsub(client: Any) -> int:
    """CLIENT KILL TYPE pubsub on every node; how many connections it closed."""
    if isinstance(client, redis.RedisCluster):
        nodes = client.get_nodes()
        return sum(
            int(client.get_redis_connection(node).client_kill_filter(_type="pubsub"))
            for node in nodes
        )
    return int(client.client_kill_filter(_type="pubsub"))


class Counter:
    """Counts calls, thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def __call__(self) -> None:
        with self._lock:
            self.count += 1


@pytest.fixture
def listener() -> Iterator[tuple[Listener, Counter]]:
    """A Listener of its own on the test's Redis (no kickq engine), and its on_reconnect count."""
    client = connection.connect(settings.snapshot(), settings.explicit)
    reconnects = Counter()
    listening = Listener(connection.pubsub_connector(client), reconnects)
    listening.start()
    try:
        yield listening, reconnects
    finally:
        listening.stop()
        client.close()


class Channel:
    """A channel the listener is subscribed to: messages received, confirmations counted."""

    def __init__(
        self, listening: Listener, name: str, on_message: Callable[[str], None] | None = None
    ) -> None:
        self.name = name
        self.got: list[str] = []
        self.ready = Counter()

        def receive(payload: str) -> None:
            self.got.append(payload)
            if on_message is not None:
                on_message(payload)

        listening.subscribe(name, receive, self.ready)


def write_subscriptions(listening: Listener, tag: str) -> None:
    """Subscribe to five channels and unsubscribe again: ten writes on the pub/sub connection."""
    for i in range(5):
        listening.unsubscribe(listening.subscribe(f"test:b:{tag}:{i}", lambda _: None))


def check_listening_again(
    r: Any, channel: Channel, readied: int, reconnects: Counter, reconnected: int, label: str
) -> None:
    """After a kill: the channel is confirmed again, on_reconnect ran, and a message arrives."""
    wait_until(lambda: channel.ready.count > readied, timeout=10, what=f"{label}: A confirmed")
    wait_until(lambda: reconnects.count > reconnected, timeout=10, what=f"{label}: on_reconnect")
    r.publish(channel.name, label)
    wait_until(lambda: label in channel.got, timeout=10, what=f"{label}: a message on A")


@pytest.mark.parametrize("writer", ["another thread", "the listener thread"])
def test_writes_on_a_killed_connection_before_the_listener_notices(
    r: Any, listener: tuple[Listener, Counter], writer: str
) -> None:
    """SUBSCRIBE and UNSUBSCRIBE written on the killed pub/sub connection while the listener
    thread is still delivering a message, by another thread or by that delivery itself (as a
    wait resolved by its done message does): channel A is confirmed again, on_reconnect runs
    and A's messages arrive, each round."""
    listening, reconnects = listener
    delivering, go_on = threading.Event(), threading.Event()

    def deliver(payload: str) -> None:  # on the listener thread
        delivering.set()
        go_on.wait(10)
        if writer == "the listener thread":
            write_subscriptions(listening, payload)

    a = Channel(listening, "test:a")
    hold = Channel(listening, "test:hold", deliver)
    for round_ in range(4):
        confirmed = functools.partial(lambda n: hold.ready.count > n, round_)
        wait_until(confirmed, timeout=10, what="the hold channel confirmed")
        readied, reconnected = a.ready.count, reconnects.count
        delivering.clear()
        go_on.clear()
        r.publish(hold.name, str(round_))
        wait_until(delivering.is_set, timeout=10, what="the listener thread delivering")
        assert kill_pubsub(r) >= 1
        if writer == "another thread":
            write_subscriptions(listening, str(round_))
        go_on.set()
        check_listening_again(r, a, readied, reconnects, reconnected, f"kill {round_}")


def test_writes_racing_the_listener_on_a_killed_connection(
    r: Any, listener: tuple[Listener, Counter]
) -> None:
    """SUBSCRIBE and UNSUBSCRIBE written from another thread right after the pub/sub connection
    is killed, while the listener thread reads it: channel A is confirmed again, on_reconnect
    runs and A's messages arrive, each round."""
    listening, reconnects = listener
    a = Channel(listening, "test:a")
    wait_until(lambda: a.ready.count == 1, timeout=10, what="A confirmed")
    # kills in quick succession: the listener's reconnect backoff doubles each time, to 2 s
    for round_ in range(8):
        readied, reconnected = a.ready.count, reconnects.count
        assert kill_pubsub(r) >= 1
        write_subscriptions(listening, str(round_))  # at once, from the test's thread
        check_listening_again(r, a, readied, reconnects, reconnected, f"kill {round_}")


def test_a_connection_reopened_by_redis_py_itself_is_replaced(
    r: Any, listener: tuple[Listener, Counter]
) -> None:
    """A pub/sub connection that redis-py would reopen by itself (here: disconnected under the
    reader, as redis-py does when a write fails) is replaced by the listener's own reconnect."""
    listening, reconnects = listener
    a = Channel(listening, "test:a")
    drop = Channel(listening, "test:drop", lambda _: listening._conn.disconnect())
    wait_until(lambda: a.ready.count and drop.ready.count, timeout=10, what="both confirmed")
    readied, reconnected = a.ready.count, reconnects.count
    r.publish(drop.name, "now")
    check_listening_again(r, a, readied, reconnects, reconnected, "after the drop")


WORKER = """
import sys, time
import kickq
kickq.process("hot-kill", lambda job, data: time.sleep(0.05) or data, concurrent_jobs=10)
print("ready", flush=True)
sys.stdin.read()  # until the test closes it
"""


def subscribed(r: Any) -> int:
    """How many connections, on every node, are subscribed to something."""
    return sum(1 for client in client_lists(r) if int(client.get("sub", 0)) > 0)


@pytest.mark.slow
def test_hotjobs_all_resolve_when_pubsub_is_killed_twice_mid_run(
    r: Any, subprocess_env: dict[str, str]
) -> None:
    """300 hotjobs run by a worker in another process while every pub/sub connection is killed
    twice, five times over: every hotjob future resolves with the job's success."""
    child = subprocess.Popen(
        [sys.executable, "-c", WORKER],
        env=subprocess_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "ready\n"
        for attempt in range(5):
            created = [
                kickq.create("hot-kill", i, hotjob=True, hotjob_timeout=20) for i in range(300)
            ]
            jobs = [future.result(10) for future in created]
            for _ in range(2):  # while the jobs run (1.5 s of work) and their waits end
                pace(0.2)
                wait_until(lambda: subscribed(r) > 0, timeout=10, what="a pub/sub connection")
                assert kill_pubsub(r) >= 1
            for data, job in enumerate(jobs):
                assert job.hotjob_future is not None
                try:
                    done = job.hotjob_future.result(25)
                except kickq.HotjobTimeout:
                    raise AssertionError(f"attempt {attempt}: job {data} never seen done") from None
                assert done.state == "success" and done.result == data
    finally:
        child.stdin.close()
        child.stdout.close()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)
