"""kickq.stats() with many job names: how long one call takes with 1,000 and 10,000 names.

    .venv/bin/python bench/stats_names.py [--names 1000,10000] [--runs 3] [--json out.json]

For each count, starts a private redis-server (never port 6379) and gives every name one
queued job, and some names more: a delayed job (one name in four), a cancelled job (fail, one
in ten), a pause (one in fifty), a rate and concurrency limit (one in fifty), three runs by a
worker of this process, one of which fails (one in a hundred, so their minutes and process
times are filled), and a run held processing while stats are read (one in a thousand). Then
times `kickq.stats().result()` --runs times after one warm-up call and prints the median (min
and max in brackets), with the Redis commands and script calls one call cost (INFO
commandstats). Goal: 10,000 names in at most 1 s. Nothing fails on it; the figures are printed.

The kickq under test is a frozen copy of the working tree's `kickq/` (see snapshot_kickq in
common.py); --no-snapshot imports the tree as is.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RedisServer, command_calls, snapshot_kickq

GOAL_S = 1.0
STATS_TIMEOUT = 600.0  # seconds one stats() may take before the bench gives up


def name_of(i: int) -> str:
    return f"n{i:05d}"


def seed(count: int, release: threading.Event) -> None:
    """Give `count` names their jobs, pauses and limits (see the module's docstring); the runs
    of one name in a thousand stay processing until `release` is set."""
    import kickq

    kickq.config(process_timeout=3600)  # the held runs stay processing while stats are read
    futures = []
    for i in range(count):
        name = name_of(i)
        futures.append(kickq.create(name, {"i": i}))
        if i % 4 == 1:
            futures.append(kickq.create(name, None, delay=3600))
    cancelled = [kickq.create(name_of(i), "doomed") for i in range(2, count, 10)]
    for future in futures:
        future.result(120)
    for future in [kickq.cancel(job.result(120).id) for job in cancelled]:
        future.result(120)
    for i in range(3, count, 50):
        kickq.pause(name_of(i)).result(60)
    for i in range(4, count, 50):
        kickq.limit(name_of(i), rate=(10, 60), concurrency=2).result(60)
    run_some(count, release)


def run_some(count: int, release: threading.Event) -> None:
    """Three runs (one failing) of one name in a hundred; the one queued job of one name in a
    thousand left processing until `release`."""
    import kickq

    ran = [name_of(i) for i in range(5, count, 100)]
    held = [name_of(i) for i in range(6, count, 1000)]

    def handler(job: Any, data: Any) -> None:
        if data == "bad":
            raise RuntimeError("bad")

    for future in [kickq.create(name, item) for name in ran for item in ("ok", "bad")]:
        future.result(60)
    worker = kickq.process(ran, handler, concurrent_jobs=20)
    done = kickq.jobs(name=ran, state=["success", "fail"])
    deadline = time.monotonic() + 300
    while done.count().result(60) < 3 * len(ran):
        if time.monotonic() > deadline:
            raise RuntimeError("the seeding runs did not finish within 300 s")
        time.sleep(0.1)
    worker.stop(30)
    kickq.process(held, lambda job, data: release.wait(STATS_TIMEOUT), concurrent_jobs=len(held))
    processing = kickq.jobs(name=held, state="processing")
    while processing.count().result(60) < len(held):
        time.sleep(0.05)


def measure(count: int, runs: int) -> dict[str, Any]:
    import kickq

    release = threading.Event()
    with RedisServer() as server:
        kickq.config(redis_url=server.url)
        try:
            started = time.perf_counter()
            seed(count, release)
            print(f"  {count:,} names seeded in {time.perf_counter() - started:.1f} s", flush=True)
            found = kickq.stats().result(STATS_TIMEOUT)  # warm-up: scripts loaded, pool filled
            assert len(found) == count, f"{len(found)} names, not {count}"
            client = server.client()
            before = command_calls(client)
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                kickq.stats().result(STATS_TIMEOUT)
                times.append(time.perf_counter() - started)
            after = command_calls(client)
            client.close()
        finally:
            release.set()
            kickq.reset()
    scripts = sum(after.get(c, 0) - before.get(c, 0) for c in ("evalsha", "eval"))
    commands = sum(after.values()) - sum(before.values()) - 1  # less the INFO itself
    return {
        "names": count,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "runs": times,
        "commands_per_call": commands / runs,
        "script_calls_per_call": scripts / runs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", default="1000,10000", help="comma-separated name counts")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--no-snapshot", action="store_true")
    args = parser.parse_args()
    info = snapshot_kickq(not args.no_snapshot)
    commit = info.get("commit", "?") + ("+uncommitted" if info.get("uncommitted_changes") else "")
    print(f"kickq {commit} ({info['tree_hash']}): stats() with many names, {args.runs} runs each")
    results = [measure(int(count), args.runs) for count in args.names.split(",")]
    print(f"\n{'names':>7} {'median':>9} {'min':>9} {'max':>9} {'commands':>10} {'scripts':>8}")
    for row in results:
        print(
            f"{row['names']:>7,} {row['median_s']:>8.3f}s {row['min_s']:>8.3f}s "
            f"{row['max_s']:>8.3f}s {row['commands_per_call']:>10,.0f} "
            f"{row['script_calls_per_call']:>8,.0f}"
        )
    largest = max(results, key=lambda row: row["names"])
    verdict = "met" if largest["median_s"] <= GOAL_S else "not met"
    print(
        f"\ngoal: stats() of {largest['names']:,} names in at most {GOAL_S:g} s: {verdict} "
        f"(median {largest['median_s']:.3f} s)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"kickq": info, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
