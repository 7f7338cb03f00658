"""The dashboard's pages with 100,000 jobs: how long each takes to serve.

    .venv/bin/pip install -e '.[dashboard]'
    .venv/bin/python bench/dashboard.py [--jobs 100000] [--repeat 20] [--json out.json]

1. Starts a private redis-server (never port 6379) and fills one namespace with --jobs jobs
   (100,000 by default): 40 % `email` queued, 20 % `thumb` queued at priorities 0-9, 10 %
   `report` delayed by an hour, 30 % `resize` run by a worker of this process (one in ten
   fails). Adds three schedules and keeps one idle worker alive, so that no page is empty.
2. Starts `python -m kickq dashboard --port 0` as a child process (its own process, as in use),
   on that Redis.
3. Requests each page --repeat times in a row after 3 warm-up requests (httpx, one keep-alive
   connection) and prints the median, p95 and slowest time of each, and the page's size.
   Goal: every page's p95 under 300 ms. Nothing fails on it; the figures are printed.

The kickq under test is a frozen copy of the working tree's `kickq/` (see snapshot_kickq in
common.py); --no-snapshot imports the tree as is.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RedisServer, snapshot_kickq

GOAL_MS = 300.0
BATCH = 5000
LISTENING = re.compile(r"kickq dashboard on (http://\S+) ")


def seed(total: int) -> str:
    """Fill the namespace; returns the id of a failed job (for the job page)."""
    import kickq

    plan = {"email": 0.4, "thumb": 0.2, "report": 0.1}
    for name, share in plan.items():
        count = int(total * share)
        options: dict[str, Any] = {"delay": 3600} if name == "report" else {}
        for start in range(0, count, BATCH):
            size = min(BATCH, count - start)
            if name == "thumb":  # every priority band holds some
                for priority in range(10):
                    items = [{"i": start + i} for i in range(priority, size, 10)]
                    wait_all(kickq.create_many(name, items, priority=priority))
            else:
                wait_all(kickq.create_many(name, [{"i": start + i} for i in range(size)], options))
        print(f"  {name}: {count:,} jobs", flush=True)
    run_resize(total - sum(int(total * share) for share in plan.values()))
    kickq.schedule("report", {"kind": "daily"}, cron="0 9 * * MON-FRI", tz="Europe/Athens").result()
    kickq.schedule("ping", every=300, key="ping-5m").result()
    kickq.schedule("cleanup", cron="*/15 * * * *").result()
    kickq.process("idle", lambda job, data: None, concurrent_jobs=4)
    failed = kickq.jobs(name="resize", state="fail").list(limit=1).result()
    return failed[0].id


def wait_all(futures: list[Any]) -> None:
    for future in futures:
        future.result(60)


def run_resize(count: int) -> None:
    import kickq

    def handler(job: Any, data: dict[str, int]) -> None:
        if data["i"] % 10 == 0:
            raise RuntimeError(f"resize {data['i']} failed")

    started = time.perf_counter()
    worker = kickq.process("resize", handler, concurrent_jobs=50)
    for start in range(0, count, BATCH):
        size = min(BATCH, count - start)
        wait_all(kickq.create_many("resize", [{"i": start + i} for i in range(size)]))
    done = kickq.jobs(name="resize", state=["success", "fail"])
    while done.count().result() < count:
        time.sleep(0.2)
    worker.stop(10)
    print(f"  resize: {count:,} jobs run in {time.perf_counter() - started:.1f} s", flush=True)


def start_dashboard(url: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "kickq", "dashboard", "--port", "0", "--redis-url", url],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stderr is not None
    for line in child.stderr:
        found = LISTENING.search(line)
        if found:
            return child, found.group(1)
    raise RuntimeError(f"the dashboard did not start (exit status {child.wait()})")


def time_page(client: Any, path: str, repeat: int) -> dict[str, Any]:
    for _ in range(3):
        client.get(path).raise_for_status()
    times, size = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        size = len(response.content)
    times.sort()
    p95 = times[min(len(times) - 1, round(len(times) * 0.95) - 1)]
    return {
        "path": path,
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(p95, 1),
        "max_ms": round(times[-1], 1),
        "bytes": size,
    }


def pages(failed_id: str) -> list[str]:
    return [
        "/",
        "/jobs",
        "/jobs?name=email",
        "/jobs?name=email&page=2",
        "/jobs?name=email&page=200",
        "/jobs?name=thumb&state=queued",
        "/jobs?name=resize&state=fail",
        "/jobs?name=resize&state=success&page=200",
        "/jobs?state=queued",
        f"/jobs/{failed_id}",
        "/workers",
        "/schedules",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--no-snapshot", action="store_true")
    args = parser.parse_args()
    info = snapshot_kickq(not args.no_snapshot)  # also on the child's PYTHONPATH
    env = dict(os.environ)
    import httpx

    import kickq

    with RedisServer() as server:
        kickq.config(redis_url=server.url)
        commit = info.get("commit", "?") + (
            "+uncommitted" if info.get("uncommitted_changes") else ""
        )
        print(f"kickq {commit}; seeding {args.jobs:,} jobs on redis-server {server.version}")
        failed_id = seed(args.jobs)
        child, url = start_dashboard(server.url, env)
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                results = [time_page(client, path, args.repeat) for path in pages(failed_id)]
        finally:
            child.terminate()
            child.wait(10)
            kickq.reset()
    print(f"\n{'page':<42} {'median':>8} {'p95':>8} {'max':>8} {'size':>9}")
    for row in results:
        print(
            f"{row['path'][:42]:<42} {row['median_ms']:>6.1f}ms {row['p95_ms']:>6.1f}ms "
            f"{row['max_ms']:>6.1f}ms {row['bytes'] / 1024:>7.1f}KB"
        )
    worst = max(row["p95_ms"] for row in results)
    verdict = "met" if worst < GOAL_MS else "not met"
    print(f"\ngoal: every page's p95 under {GOAL_MS:.0f} ms: {verdict} (worst {worst:.1f} ms)")
    if args.json:
        Path(args.json).write_text(json.dumps({"jobs": args.jobs, "pages": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
