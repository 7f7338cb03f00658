"""What one hotjob costs its creator and Redis: commands, pub/sub messages, listener CPU, and
the round trip, for one kickq tree or two side by side.

    .venv/bin/python bench/hotjobs.py                       # the working tree's kickq/
    .venv/bin/python bench/hotjobs.py --trees /tmp/base .   # two trees (each holds kickq/)

Each run starts a private redis-server and one worker process (`kickq.process`, a handler that
returns its data); after 100 warm-up hotjobs, `--n` hotjobs (1000) are created one after the
other, each waited for (`create(..., hotjob=True).result().hotjob_future.result()`). Measured
over those: INFO commandstats deltas (every command Redis ran, those inside scripts too,
INFO itself left out), the messages the creator's pub/sub listener read, the CPU time of its
listener thread and of the whole creator process, and the round trip's p50/p99. Runs of the
trees alternate (`--runs`, 3); each figure is the median of its runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from common import RedisServer, command_calls, percentile  # noqa: E402

WORKER = """
import sys, kickq
kickq.config(redis_url=sys.argv[1])
kickq.process("rt", lambda job, data: data)
print("ready", kickq.__file__, flush=True)
sys.stdin.read()
"""


def measure(n: int) -> dict[str, Any]:
    """One run, in this process (kickq imported from PYTHONPATH)."""
    import kickq
    import kickq._engine.runtime

    assert Path(kickq.__file__).parent.parent == Path(os.environ["PYTHONPATH"]).resolve()

    with RedisServer() as server:
        tree = os.environ.get("PYTHONPATH") or None
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, server.url],
            cwd=tree,  # `-c` puts the working directory first on sys.path: the tree's kickq
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert worker.stdout is not None
            ready, path = worker.stdout.readline().split()
            assert ready == "ready" and Path(path).parent.parent == Path(str(tree)).resolve()
            kickq.config(redis_url=server.url)
            for i in range(100):
                hot(kickq, i)
            return _timed(kickq, server, n)
        finally:
            assert worker.stdin is not None
            worker.stdin.close()
            worker.wait(10)
            kickq.reset()


def hot(kickq: Any, i: int) -> None:
    job = kickq.create("rt", i, hotjob=True).result(10)
    assert job.hotjob_future.result(10).result == i


def _timed(kickq: Any, server: RedisServer, n: int) -> dict[str, Any]:
    listener = kickq._engine.runtime.get().listener
    kinds: dict[str, int] = {}
    handle = listener._handle

    def counted(reply: Any) -> None:
        if isinstance(reply, list) and reply:
            kinds[reply[0]] = kinds.get(reply[0], 0) + 1
        handle(reply)

    listener._handle = counted
    clock = time.pthread_getcpuclockid(listener._thread.ident)
    client = server.client(decode_responses=True)
    before = command_calls(client)
    listener_cpu, process_cpu = time.clock_gettime(clock), time.process_time()
    times = []
    for i in range(n):
        start = time.perf_counter()
        hot(kickq, i)
        times.append(time.perf_counter() - start)
    listener_cpu = time.clock_gettime(clock) - listener_cpu
    process_cpu = time.process_time() - process_cpu
    after = command_calls(client)
    client.close()
    delta = {
        name: after.get(name, 0) - before.get(name, 0)
        for name in after
        if name != "info" and after.get(name, 0) != before.get(name, 0)
    }
    return {
        "commands": sum(delta.values()) / n,
        "by_command": {name: count / n for name, count in sorted(delta.items())},
        "pubsub_messages": sum(kinds.values()) / n,
        "pubsub_by_kind": {kind: count / n for kind, count in sorted(kinds.items())},
        "listener_cpu_us": listener_cpu / n * 1e6,
        "creator_cpu_us": process_cpu / n * 1e6,
        "p50_ms": percentile(times, 50) * 1000,
        "p99_ms": percentile(times, 99) * 1000,
    }


def run_tree(tree: Path, n: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, __file__, "--measure", "--n", str(n)],
        env=env,
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", nargs="+", default=[str(BENCH_DIR.parent)])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.n)))
        return
    trees = [Path(tree).resolve() for tree in args.trees]
    runs: dict[Path, list[dict[str, Any]]] = {tree: [] for tree in trees}
    for turn in range(args.runs):
        order = trees if turn % 2 == 0 else trees[::-1]
        for tree in order:
            runs[tree].append(run_tree(tree, args.n))
    figures = ["commands", "pubsub_messages", "listener_cpu_us", "creator_cpu_us"]
    figures += ["p50_ms", "p99_ms"]
    for tree in trees:
        print(f"{tree}  (medians of {args.runs} runs, {args.n} sequential hotjobs each)")
        for figure in figures:
            values = [run[figure] for run in runs[tree]]
            shown = ", ".join(f"{v:.3f}" for v in values)
            print(f"  {figure:16} {statistics.median(values):10.3f}   [{shown}]")
        last = runs[tree][-1]
        print("  per hotjob, last run:", json.dumps(last["by_command"]))
        print("  listener messages per hotjob, last run:", json.dumps(last["pubsub_by_kind"]))


if __name__ == "__main__":
    main()
