"""Redis memory per job with a realistic payload: queued, then finished, indexes included.

    .venv/bin/python bench/memory.py [--n 20000] [--payload 119]

Creates N jobs of one name, each with a JSON payload of `--payload` bytes, on a private
redis-server, and reports Redis `used_memory` per queued job; then runs them all in this
process (the handler returns a small result) and reports it per finished job, the records kept
for `purge_timeout` as by default. Also prints one record's `OBJECT ENCODING` and `MEMORY USAGE`,
queued and finished: a hash whose fields all stay within Redis's `hash-max-listpack-value`
(64 bytes) is a compact listpack, else a hashtable several times its size.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from common import RedisServer, used_memory, wait_until

import kickq


def payload(size: int, i: int) -> dict[str, Any]:
    """A JSON object whose text is `size` bytes long, different for each i."""
    base = {"user": i, "path": f"uploads/{i:08d}.png", "sizes": [128, 256, 512]}
    pad = size - len(json.dumps(base, separators=(",", ":"))) - len(',"note":""')
    return {**base, "note": "x" * max(pad, 0)}


def record_figures(client: Any, namespace: str, job_id: str) -> str:
    key = f"{namespace}:job:{job_id}"
    encoding = client.object("encoding", key)
    usage = client.memory_usage(key, samples=0)
    return f"{encoding}, MEMORY USAGE {usage} B, {client.hlen(key)} fields"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--payload", type=int, default=119)
    args = parser.parse_args()
    with RedisServer() as server:
        client = server.client(decode_responses=True)
        kickq.config(redis_url=server.url)
        kickq.create("warm-up").result(10)  # the scripts, the names set, the pools
        client.delete("kickq:queue:{warm-up}")
        time.sleep(0.5)
        base = used_memory(client)
        futures = kickq.create_many("mem", [payload(args.payload, i) for i in range(args.n)])
        first = futures[0].result(30)
        for future in futures:
            future.result(60)
        queued = used_memory(client)
        print(f"payload {len(json.dumps(first.data, separators=(',', ':')))} B, N={args.n}")
        print(f"queued:   {(queued - base) / args.n:7.0f} B/job   record: ", end="")
        print(record_figures(client, "kickq", first.id))
        kickq.process("mem", lambda job, data: {"ok": True, "n": data["user"]}, concurrent_jobs=20)
        wait_until(lambda: int(client.zcard("kickq:finished")), args.n, timeout=600)
        kickq.reset()
        time.sleep(0.5)
        finished = used_memory(client)
        print(f"finished: {(finished - base) / args.n:7.0f} B/job   record: ", end="")
        print(record_figures(client, "kickq", first.id))


if __name__ == "__main__":
    main()
