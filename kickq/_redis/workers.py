"""The hash of live workers, `<ns>:workers` (worker id -> heartbeat JSON): written, read, pruned.

What a heartbeat says and when a worker counts as gone is decided in _engine/heartbeats.py; this
module only moves the texts to and from Redis.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from kickq._redis.store import Store


def write(store: Store, live: Mapping[str, str], gone: Collection[str]) -> None:
    """Set the heartbeats of `live` workers and take out the `gone` ones, in one round trip."""
    pipe = store.client.pipeline(transaction=False)
    for worker_id, info in live.items():
        pipe.hset(store.keys.workers, worker_id, info)
    if gone:
        pipe.hdel(store.keys.workers, *gone)
    for result in pipe.execute(raise_on_error=False):
        if isinstance(result, Exception):
            raise result


def read(store: Store) -> dict[str, str]:
    """Every worker's last heartbeat, by worker id."""
    return {str(key): str(text) for key, text in store.client.hgetall(store.keys.workers).items()}


def remove(store: Store, worker_ids: Collection[str]) -> None:
    if worker_ids:
        store.client.hdel(store.keys.workers, *worker_ids)
