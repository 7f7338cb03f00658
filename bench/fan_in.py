"""What `after=` costs: Redis commands and latency of jobs with parents, beside plain hotjobs.

    PYTHONPATH=<tree> python bench/fan_in.py [--n 300] [--runs 3]

Measures the kickq importable from sys.path, on a private redis-server, with one in-process
worker per name (concurrent_jobs=10), for N jobs of each path, made one after another:

- plain: a hotjob with no parents (the baseline every other path is compared to);
- parent done: a hotjob `after=[p]`, p a hotjob that succeeded already (the child is created
  queued, its parent's result read at the create); counted per pair, the latency the child's;
- deferred: a parent created, then a hotjob `after=[it]` at once (created deferred: the parent's
  end reaches it through a hand-over notice); counted per pair, the parent's run included;
- fan-in of 10: ten parents created, then one hotjob after all ten; counted per child, its ten
  parents' runs included.

Per path: Redis commands per unit (INFO commandstats deltas, Lua's inner calls counted), script
calls per unit, and the latency from the child's create to its result (p50, p95, p99, ms).
Figures are medians over --runs runs (Redis flushed between runs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis
from common import RedisServer, command_calls, percentile

import kickq

WARM_UP = 20


def _plain() -> float:
    start = time.perf_counter()
    job = kickq.create("child", None, hotjob=True).result(10)
    job.hotjob_future.result(10)  # type: ignore[union-attr]
    return time.perf_counter() - start


def _parent_done() -> float:
    parent = kickq.create("parent", 1, hotjob=True).result(10)
    parent.hotjob_future.result(10)  # type: ignore[union-attr]
    start = time.perf_counter()
    job = kickq.create("child", None, hotjob=True, after=[parent]).result(10)
    job.hotjob_future.result(10)  # type: ignore[union-attr]
    return time.perf_counter() - start


def _fan_in(parents: int) -> Callable[[], float]:
    def one() -> float:
        made = [kickq.create("parent", n).result(10) for n in range(parents)]
        start = time.perf_counter()
        job = kickq.create("child", None, hotjob=True, after=made).result(10)
        job.hotjob_future.result(10)  # type: ignore[union-attr]
        return time.perf_counter() - start

    return one


PATHS: dict[str, tuple[Callable[[], float], str]] = {
    "plain hotjob": (_plain, "job"),
    "after a parent done already": (_parent_done, "parent hotjob + child"),
    "deferred after 1 parent": (_fan_in(1), "parent + child"),
    "deferred after 10 parents": (_fan_in(10), "10 parents + child"),
}


def _measure(client: redis.Redis, path: Callable[[], float], n: int) -> dict[str, float]:
    for _ in range(WARM_UP):
        path()
    time.sleep(0.2)  # the warm-up's hand-over notices are done
    before = command_calls(client)
    latencies = [path() for _ in range(n)]
    time.sleep(0.2)
    after = command_calls(client)
    calls = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    calls.pop("info", None)
    return {
        "commands": sum(calls.values()) / n,
        "scripts": (calls.get("evalsha", 0) + calls.get("eval", 0)) / n,
        "p50": percentile(latencies, 50) * 1000,
        "p95": percentile(latencies, 95) * 1000,
        "p99": percentile(latencies, 99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in PATHS}
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        for _ in range(args.runs):
            for name, (path, _) in PATHS.items():
                client.flushall()
                kickq.reset()
                kickq.config(redis_url=server.url, redis_namespace="fan-in-bench")
                handler: Callable[[Any, Any], Any] = lambda job, data: data  # noqa: E731
                kickq.process("parent", handler, concurrent_jobs=10)
                kickq.process(
                    "child", lambda job, data: len(job.parent_results), concurrent_jobs=10
                )
                results[name].append(_measure(client, path, args.n))
        kickq.reset()
    base = statistics.median(run["commands"] for run in results["plain hotjob"])
    print(f"kickq {kickq.__version__}, N={args.n}, median of {args.runs} runs\n")
    print("| path | unit | Redis commands | x plain | script calls | p50 ms | p95 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (_, unit) in PATHS.items():
        runs = results[name]

        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(run[key] for run in runs)

        print(
            f"| {name} | {unit} | {med('commands'):.1f} | {med('commands') / base:.2f} | "
            f"{med('scripts'):.2f} | {med('p50'):.2f} | {med('p95'):.2f} | {med('p99'):.2f} |"
        )


if __name__ == "__main__":
    main()
