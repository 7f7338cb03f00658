"""Big values: how long Redis is blocked by a job's create, claim and end, and what its record
costs, by the size of its data and result.

    .venv/bin/python bench/big_values.py [--repeat 5]

On a private redis-server, for each size: jobs whose data is a JSON text of that many bytes are
created, claimed and run by a handler returning a result of the same size. Redis's SLOWLOG
(every command logged) gives how long each script call held the server, the median over
`--repeat` jobs; MEMORY USAGE gives the record's bytes, queued and finished, with its encoding
and field count. "as pieces" is the same queued record laid out as kickq did before values
over 2 kB were written whole (64-byte pieces, as many fields), for comparison; that layout
could not hold values of 256 kB or more (Lua's unpack limit). The server keeps hashes as
listpacks up to 128 fields, as the redis.conf Redis ships says (built in, it is 512). The
largest size is the most `max_value_bytes` allows, its default.
"""

from __future__ import annotations

import argparse
import statistics
import threading
from typing import Any

from common import RedisServer

import kickq
import kickq._engine.runtime as runtime
import kickq._redis.layout as layout

KB = 1024
SIZES = [1 * KB, 2 * KB, 3 * KB, 4 * KB, 8 * KB, 64 * KB, 256 * KB, 1024 * KB]


def text_of(size: int) -> str:
    """A value whose JSON text is `size` bytes."""
    return "x" * (size - 2)


def slowlog(client: Any) -> list[Any]:
    """The SLOWLOG's entries, which is then reset."""
    entries = client.slowlog_get(100000)
    client.slowlog_reset()
    return list(entries)


def script_us(entries: list[Any], sha: str) -> list[int]:
    """The durations (µs) of the calls of script `sha` among SLOWLOG `entries`."""
    found = []
    for entry in entries:
        command = entry["command"]
        words = command.split() if isinstance(command, (str, bytes)) else list(command)
        words = [w.decode() if isinstance(w, bytes) else str(w) for w in words[:2]]
        if words[0].upper() in ("EVALSHA", "EVALSHA_RO") and words[1] == sha:
            found.append(int(entry["duration"]))
    return found


def as_pieces_usage(client: Any, key: str) -> int:
    """MEMORY USAGE of the record at `key` laid out as 64-byte pieces (the old layout)."""
    record = layout.gather(client.hgetall(key))
    saved = layout.WHOLE_ABOVE
    layout.WHOLE_ABOVE = 1 << 62
    try:
        fields = layout.lay_out(record)
    finally:
        layout.WHOLE_ABOVE = saved
    scratch = key + ":pieces"
    pipe = client.pipeline(transaction=False)
    items = list(fields.items())
    for at in range(0, len(items), 500):
        pipe.hset(scratch, mapping=dict(items[at : at + 500]))
    pipe.execute()
    usage = int(client.memory_usage(scratch, samples=0))
    client.delete(scratch)
    return usage


def measure(client: Any, size: int, repeat: int) -> dict[str, Any]:
    store = runtime.get().store
    value = text_of(size)
    name = f"big{size}"
    release = threading.Event()
    ids: list[str] = []
    create_us: list[int] = []
    queued: list[tuple[int, str, int, int | None]] = []
    for _ in range(repeat):
        client.slowlog_reset()
        job = kickq.create(name, value).result(60)
        create_us += script_us(slowlog(client), store._create.sha)
        key = store.keys_of(job.id).job(job.id)
        pieces = as_pieces_usage(client, key) if size < 256 * KB else None
        queued.append(
            (
                int(client.memory_usage(key, samples=0)),
                client.object("encoding", key),
                int(client.hlen(key)),
                pieces,
            )
        )
        ids.append(job.id)
    client.slowlog_reset()
    worker = kickq.process(name, lambda job, data: release.wait(60) and value)
    done = [kickq.wait(job_id, timeout=120) for job_id in ids]
    release.set()
    for future in done:
        future.result(180)
    worker.stop(10)
    entries = slowlog(client)
    claim_us = sorted(script_us(entries, store._claim.sha))[-repeat:]  # those that took a job
    end_us = script_us(entries, store._transition.sha)
    key = store.keys_of(ids[0]).job(ids[0])
    finished = int(client.memory_usage(key, samples=0))
    usage, encoding, fields, pieces = queued[0]
    return {
        "size": size,
        "create": statistics.median(create_us),
        "claim": statistics.median(claim_us),
        "end": statistics.median(end_us),
        "queued": usage,
        "encoding": encoding,
        "fields": fields,
        "pieces": pieces,
        "finished": finished,
    }


def human(size: int) -> str:
    return f"{size // (1024 * KB)} MiB" if size >= 1024 * KB else f"{size // KB} kB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with RedisServer() as server:
        client = server.client(decode_responses=True)
        client.config_set("slowlog-log-slower-than", 0)
        client.config_set("slowlog-max-len", 100000)
        client.config_set("hash-max-listpack-entries", 128)
        kickq.config(redis_url=server.url)
        kickq.create("warm-up").result(10)
        print(
            f"redis {server.version}; Redis blocked per script call (µs, median of {args.repeat})"
        )
        print(
            f"{'value':>8} {'create':>8} {'claim':>8} {'end':>8}   "
            f"{'queued record':<34} {'as pieces':>10} {'finished':>10}"
        )
        for size in SIZES:
            row = measure(client, size, args.repeat)
            record = f"{row['queued']:,} B {row['encoding']}, {row['fields']} fields"
            pieces = f"{row['pieces']:,} B" if row["pieces"] is not None else "n/a"
            print(
                f"{human(size):>8} {row['create']:>8,.0f} {row['claim']:>8,.0f} "
                f"{row['end']:>8,.0f}   "
                f"{record:<34} {pieces:>10} {row['finished']:>10,} B"
            )
        kickq.reset()


if __name__ == "__main__":
    main()
