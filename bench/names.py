"""Drain rate of one worker process against how many job names it serves.

    PYTHONPATH=<tree> python bench/names.py [--names 1,101,1001] [--n 1000] [--runs 3] [--json FILE]

On a private redis-server, N jobs of one name are queued (not timed); then one worker process
(concurrent_jobs=10, bench/counts.py's worker) is started serving that name and K-1 others
that have no jobs, and told to go. Per K: jobs/s from "go" until all N are finished (the
worker's start, K subscriptions among it, included), and jobs/s from the first finished job to
the last (start left out); Redis commands and script calls per job (INFO commandstats deltas;
our own polling ZCARDs left out) and the worker's CPU µs per job. Medians of --runs runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import probes
from common import RedisServer, poll, snapshot_kickq
from counts import NAME, CountWorker, finished_key, fresh


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def drain_once(kickq: Any, server: RedisServer, names: int, n: int) -> dict[str, Any]:
    client = server.client()
    client.flushall()
    fresh(kickq, server.url)
    for future in kickq.create_many(NAME, [None] * n):
        future.result(timeout=60)
    kickq.reset()
    finished = finished_key(kickq)
    polls = [0]
    first: list[float] = []

    def done() -> bool:
        polls[0] += 1
        count = int(client.zcard(finished))
        if count and not first:
            first.append(time.perf_counter())
        return count >= n

    with CountWorker(server.url, NAME, extra_names=names - 1) as worker:
        redis_before = probes.redis_sample(client)
        usage_before = worker.usage()
        go = worker.go()
        end = poll(done, 600, f"{n} jobs drained", 0.005, worker)
        usage = probes.delta(usage_before, worker.usage())
        redis_d = probes.redis_delta(redis_before, probes.redis_sample(client), {"zcard": polls[0]})
    client.close()
    return {
        "jobs_per_s": n / (end - go),
        "jobs_per_s_after_first": (n - 1) / (end - first[0]) if first and end > first[0] else None,
        "commands_per_job": redis_d["commands"] / n,
        "script_calls_per_job": redis_d["script_calls"] / n,
        "lua_us_per_job": redis_d["script_usec"] / n,
        "worker_cpu_us_per_job": usage["cpu"] * 1e6 / n,
        "top_commands": dict(list(redis_d["by_command"].items())[:6]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", default="1,101,1001", help="names served (1,101,1001)")
    parser.add_argument("--n", type=int, default=1000, help="jobs queued, all of one name")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    counts = [int(k) for k in args.names.split(",")]
    info = snapshot_kickq(enabled=False)
    import kickq

    out: dict[str, Any] = {"kickq": info, "n": args.n, "results": {}}
    with RedisServer() as server:
        log(f"redis-server {server.version}; kickq {kickq.__file__} {info.get('commit', '?')}")
        for k in counts:
            runs = [drain_once(kickq, server, k, args.n) for _ in range(args.runs)]
            med = {
                key: statistics.median(r[key] for r in runs)
                for key in runs[0]
                if isinstance(runs[0][key], float) and all(r[key] is not None for r in runs)
            }
            out["results"][k] = {"runs": runs, "median": med}
            log(f"{k} names: {med['jobs_per_s']:.0f} jobs/s")
    lines = [
        f"kickq {probes.describe(info)}, N={args.n} jobs of one name, 1 worker process x10, "
        f"median of {args.runs}",
        "",
        "| names served | jobs/s from go [runs] | jobs/s first to last finished "
        "| commands / job | script calls / job | Lua µs / job | worker CPU µs / job |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, entry in out["results"].items():
        m = entry["median"]
        rates = ", ".join(f"{r['jobs_per_s']:.0f}" for r in entry["runs"])
        after = m.get("jobs_per_s_after_first")
        lines.append(
            f"| {k:,} | {m['jobs_per_s']:.0f} [{rates}] | "
            f"{'-' if after is None else f'{after:.0f}'} | {m['commands_per_job']:.1f} | "
            f"{m['script_calls_per_job']:.2f} | {m['lua_us_per_job']:.0f} | "
            f"{m['worker_cpu_us_per_job']:.0f} |"
        )
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
