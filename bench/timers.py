"""kickq timers: how late due jobs start, and how busy an idle kickq process keeps Redis.

    .venv/bin/python bench/timers.py [--jobs 500] [--spread 5] [--idle 5] [--only kickq,rq,...]
                                     [--json out.json]

1. Lateness: a worker runs in this process; --jobs jobs are created at once with delays spread
   evenly over --spread seconds; for each, lateness = its run's start_time - scheduled_for
   (both on kickq's clock) -> p50/p90/p99/max ms.
2. Idle load: one worker process (a kickq process with a worker registered and nothing to do;
   likewise for each peer in --only) runs alone against the private server; INFO commandstats
   deltas over --idle seconds give the Redis commands per second it costs. Commands run inside
   Lua scripts are counted by Redis too; `evalsha` alone is the number of script calls.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers
from common import RedisServer, WorkerProcs, command_calls, percentile, snapshot_kickq

# commands the measurement itself sends
OWN = {"info", "flushall", "ping", "hello", "client|setinfo", "client|setname", "client"}


def lateness(server: RedisServer, jobs: int, spread: float) -> dict[str, Any]:
    import kickq  # after snapshot_kickq()

    kickq.reset()
    kickq.config(redis_url=server.url)
    worker = kickq.process("timer", lambda job, data: None, concurrent_jobs=10)
    try:
        step = spread / jobs
        created = [kickq.create("timer", i, delay=round(step * (i + 1), 6)) for i in range(jobs)]
        saved = [f.result(timeout=30) for f in created]
        # a finished job no longer has scheduled_for: take it from the saved (delayed) job
        waits = [(job.scheduled_for, kickq.wait(job.id, timeout=spread + 30)) for job in saved]
        late_ms = []
        for scheduled_for, wait in waits:
            job = wait.result(timeout=spread + 40)
            start = job.runs[0].start_time if job.runs else None
            assert scheduled_for is not None and start is not None
            late_ms.append((start - scheduled_for).total_seconds() * 1000)
    finally:
        worker.stop(2)
        kickq.reset()
    return {
        "jobs": jobs,
        "spread_s": spread,
        "p50_ms": percentile(late_ms, 50),
        "p90_ms": percentile(late_ms, 90),
        "p99_ms": percentile(late_ms, 99),
        "max_ms": max(late_ms),
        "min_ms": min(late_ms),
    }


def idle_load(server: RedisServer, peer: str, seconds: float, settle: float) -> dict[str, Any]:
    client = server.client()
    client.flushall()
    with WorkerProcs(peer, server.url, 1, 10, "drain") as workers:
        workers.go()
        time.sleep(settle)
        workers.check_alive()
        before = command_calls(client)
        start = time.perf_counter()
        time.sleep(seconds)
        after = command_calls(client)
        elapsed = time.perf_counter() - start
        workers.check_alive()
    client.close()
    delta = {
        name: after.get(name, 0) - before.get(name, 0)
        for name in after
        if name not in OWN and after.get(name, 0) != before.get(name, 0)
    }
    per_second = {name: round(count / elapsed, 2) for name, count in sorted(delta.items())}
    return {
        "seconds": round(elapsed, 2),
        "commands_per_s": round(sum(delta.values()) / elapsed, 2),
        "script_calls_per_s": round((delta.get("evalsha", 0) + delta.get("eval", 0)) / elapsed, 2),
        "by_command_per_s": per_second,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--spread", type=float, default=5.0, help="seconds the delays span")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle measurement")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument(
        "--only",
        default="kickq,rq,dramatiq,huey,arq",
        help=f"idle load of these ({','.join(peers.NAMES)}); default: all but the floor",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    # a frozen copy of kickq for this process and its workers (before kickq is imported)
    out: dict[str, Any] = {"kickq": snapshot_kickq(), "idle": {}, "idle_errors": {}}
    with RedisServer() as server:
        print(f"redis-server {server.version} at {server.url}", file=sys.stderr)
        result = lateness(server, args.jobs, args.spread)
        out["lateness"] = result
        print(
            f"lateness of {result['jobs']} delayed jobs (delays spread over "
            f"{result['spread_s']:g} s, worker in-process): p50 {result['p50_ms']:.1f} ms, "
            f"p90 {result['p90_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
            f"max {result['max_ms']:.1f} ms, min {result['min_ms']:.1f} ms"
        )
        print()
        print(
            f"idle worker process, Redis commands/s over {args.idle:g} s "
            "(commands inside Lua scripts included):"
        )
        for name in names:
            try:
                idle = idle_load(server, name, args.idle, args.settle)
            except Exception as exc:
                out["idle_errors"][name] = f"{type(exc).__name__}: {exc}"
                print(f"  {name:<9} n/a ({type(exc).__name__}: {exc})")
                continue
            out["idle"][name] = idle
            detail = ", ".join(f"{k} {v:g}" for k, v in idle["by_command_per_s"].items())
            print(
                f"  {name:<9} {idle['commands_per_s']:7.2f}/s  "
                f"(script calls {idle['script_calls_per_s']:g}/s; {detail or 'none'})"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
