"""The floor: raw redis-py doing the least Redis work of a reliable queue, unpipelined.

enqueue  LPUSH id (bulk: all N LPUSHes in one pipeline)
claim    one Lua call: RPOP the queue, ZADD the id to a processing set (deadline as score)
finish   one Lua call: ZREM from the processing set, HSET the result
round trip: producer LPUSH + BLPOP on the job's reply list; worker BRPOP + LPUSH reply.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import redis

from peers.base import Peer as Base
from peers.base import Unsupported

QUEUE = "floor:queue"
PROCESSING = "floor:processing"
RESULTS = "floor:results"
RT_QUEUE = "floor:rt"
REPLY = "floor:reply:"

CLAIM = """
local id = redis.call('RPOP', KEYS[1])
if id then redis.call('ZADD', KEYS[2], ARGV[1], id) end
return id
"""
FINISH = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""


def _drain_loop(client: redis.Redis) -> None:
    claim = client.register_script(CLAIM)
    finish = client.register_script(FINISH)
    idle = 0.001
    while True:
        job_id = claim(keys=[QUEUE, PROCESSING], args=[int(time.time() * 1000) + 10_000])
        if job_id is None:  # only at the end of a drain: back off, up to 0.1 s
            time.sleep(idle)
            idle = min(idle * 2, 0.1)
            continue
        idle = 0.001
        finish(keys=[PROCESSING, RESULTS], args=[job_id, "null"])


def _reply_loop(client: redis.Redis) -> None:
    while True:
        got = client.brpop([RT_QUEUE], timeout=1)
        if got is not None:
            client.lpush(REPLY + got[1].decode(), "null")


def worker_prepare(url: str, concurrency: int, mode: str) -> Callable[[], None]:
    client = redis.Redis.from_url(url)
    client.ping()
    loop = _reply_loop if mode == "rt" else _drain_loop

    def run() -> None:
        threads = [
            threading.Thread(target=loop, args=(client,), daemon=True) for _ in range(concurrency)
        ]
        for thread in threads:
            thread.start()
        threading.Event().wait()

    return run


class Peer(Base):
    name = "floor"
    notes = "raw redis-py, one round trip per step (see bench/peers/floor_peer.py)"

    @classmethod
    def version(cls) -> str:
        return f"redis-py {redis.__version__}"

    def enqueue_many(self, n: int) -> None:
        client = self.redis
        for _ in range(n):
            client.lpush(QUEUE, uuid.uuid4().hex)

    def enqueue_bulk(self, n: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for _ in range(n):
            pipe.lpush(QUEUE, uuid.uuid4().hex)
        pipe.execute()

    def prefill_priorities(self, n: int) -> None:
        raise Unsupported("no priority: the floor is one list")

    def prefill(self, n: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for i in range(n):
            pipe.lpush(QUEUE, uuid.uuid4().hex)
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()

    def done_count(self, n: int) -> int:
        return int(self.redis.hlen(RESULTS))

    def round_trip_once(self) -> None:
        job_id = uuid.uuid4().hex
        self.redis.lpush(RT_QUEUE, job_id)
        if self.redis.blpop([REPLY + job_id], timeout=10) is None:
            raise TimeoutError("no reply in 10 s")
