"""kickq's hot path in counts that do not depend on the machine's load: per job, per path.

    PYTHONPATH=<tree> python bench/counts.py [--n 1000] [--runs 3] [--json FILE]

Measures the kickq importable from sys.path (as is: no snapshot), so that any tree can be
measured with PYTHONPATH. On a private redis-server, for each path:

- hotjob: one worker process (x10) runs; this process makes N hotjobs in sequence,
  `create(name, hotjob=True).result().hotjob_future.result()` (after 50 not counted);
- create: `create(name).result()` N times in a loop, no worker;
- drain: N jobs queued first (not counted), then one worker process (x10) started and told to
  go; counted from before "go" until all N are finished (so the worker's start is in it);
- empty claim: an idle worker process is woken by a PUBLISH on its name's wake channel with
  nothing queued, one wake every 5 ms; per claim it made (script calls), not per wake.

Per job (per claim for the empty claim): Redis commands from INFO commandstats deltas (Redis
counts the commands run inside Lua too; the breakdown by command is printed), script calls
(EVALSHA + EVAL), the script calls' Redis µs (commandstats usec, per script call), the
redis-server's CPU µs (INFO cpu), pub/sub messages received by kickq's listeners, Python CPU
µs of the benchmark process (the creator) and of the worker process (`time.process_time()`,
every thread; the worker reports it over a pipe), and voluntary context switches on both
sides (getrusage: every thread of the process), the measure of thread hand-offs.

Figures are medians over --runs runs (a fresh worker process and a flushed Redis each run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import probes
from common import RedisServer, WorkerProcs, poll, snapshot_kickq

NAME = "counts"
CONCURRENCY = 10
WARM_UP = 50
WAKE_GAP = 0.005  # seconds between two wakes of the empty-claim probe


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the worker process: bench/counts.py --worker URL --------------------------------------


def worker_main(args: argparse.Namespace) -> None:
    """Connect; "ready"; on "go", process `--name` (and --extra-names more names); answer
    "usage" with one JSON line, before "go" too."""
    import logging

    import kickq

    logging.basicConfig(level=logging.WARNING)
    probes.count_messages()
    kickq.config(redis_url=args.worker)
    error = kickq.get("counts-warm-up").exception(timeout=30)
    if not isinstance(error, kickq.JobNotFound):
        raise RuntimeError(f"kickq did not connect: {error!r}")
    print("ready", flush=True)
    names = [args.name] + [f"{args.name}-other-{i}" for i in range(args.extra_names)]
    worker = None
    for line in sys.stdin:
        if line.strip() == "usage":
            print(json.dumps(probes.usage()), flush=True)
        elif line.strip() == "go" and worker is None:
            worker = kickq.process(
                names if len(names) > 1 else args.name,
                lambda job, data: None,
                concurrent_jobs=args.concurrency,
            )
    if worker is not None:
        worker.stop(timeout=5)
    os._exit(0)


class CountWorker(WorkerProcs):
    """One worker process running this file in --worker mode; `usage()` asks it for its
    costs so far."""

    def __init__(
        self, url: str, name: str = NAME, extra_names: int = 0, timeout: float = 60
    ) -> None:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            url,
            "--name",
            name,
            "--extra-names",
            str(extra_names),
            "--concurrency",
            str(CONCURRENCY),
        ]
        self._launch(command, "counts", 1, timeout)

    def __enter__(self) -> CountWorker:
        return self

    def usage(self) -> dict[str, Any]:
        proc = self.procs[0]
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("usage\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            self.check_alive()
            raise RuntimeError("the worker process said nothing")
        return dict(json.loads(line))


# -- the benchmark ----------------------------------------------------------------------------


class Probe:
    """Samples of Redis, this process and (optionally) a worker process, taken together."""

    def __init__(self, client: Any, worker: CountWorker | None) -> None:
        self.client = client
        self.worker = worker

    def sample(self) -> dict[str, Any]:
        return {
            "redis": probes.redis_sample(self.client),
            "creator": probes.usage(),
            "worker": self.worker.usage() if self.worker is not None else None,
        }

    def delta(
        self, before: dict[str, Any], after: dict[str, Any], own: dict[str, int] | None = None
    ) -> dict[str, Any]:
        return {
            "redis": probes.redis_delta(before["redis"], after["redis"], own),
            "creator": probes.delta(before["creator"], after["creator"]),
            "worker": (
                probes.delta(before["worker"], after["worker"])
                if before["worker"] is not None
                else None
            ),
        }


def fresh(kickq: Any, url: str) -> None:
    """Start this process's kickq engine against `url` and wait until it is connected."""
    kickq.reset()
    kickq.config(redis_url=url)
    error = kickq.get("counts-warm-up").exception(timeout=30)
    if not isinstance(error, kickq.JobNotFound):
        raise RuntimeError(f"kickq did not connect: {error!r}")


def hotjob_once(kickq: Any) -> None:
    job = kickq.create(NAME, hotjob=True).result(timeout=10)
    job.hotjob_future.result(timeout=10)


def path_hotjob(kickq: Any, server: RedisServer, n: int) -> dict[str, Any]:
    client = server.client()
    with CountWorker(server.url) as worker:
        worker.go()
        fresh(kickq, server.url)
        for _ in range(WARM_UP):
            hotjob_once(kickq)
        probe = Probe(client, worker)
        before = probe.sample()
        start = time.perf_counter()
        for _ in range(n):
            hotjob_once(kickq)
        elapsed = time.perf_counter() - start
        after = probe.sample()
    client.close()
    return {"elapsed": elapsed, "units": n, **probe.delta(before, after)}


def path_create(kickq: Any, server: RedisServer, n: int) -> dict[str, Any]:
    client = server.client()
    fresh(kickq, server.url)
    for _ in range(WARM_UP):
        kickq.create(NAME).result(timeout=10)
    probe = Probe(client, None)
    before = probe.sample()
    start = time.perf_counter()
    for _ in range(n):
        kickq.create(NAME).result(timeout=10)
    elapsed = time.perf_counter() - start
    after = probe.sample()
    client.close()
    return {"elapsed": elapsed, "units": n, **probe.delta(before, after)}


def finished_key(kickq: Any) -> str:
    from kickq._redis.keys import Keys

    return str(Keys(kickq.config()["redis_namespace"]).finished)


def path_drain(kickq: Any, server: RedisServer, n: int) -> dict[str, Any]:
    """N jobs queued by this process, then drained by a worker process started for them.

    Finished jobs are counted with ZCARD on kickq's finished set by a client of our own; those
    ZCARDs are taken out of the counts (ours are the only top-level ones)."""
    client = server.client()
    fresh(kickq, server.url)
    for future in kickq.create_many(NAME, [None] * n):
        future.result(timeout=60)
    kickq.reset()  # this process takes no part in the drain
    finished = finished_key(kickq)
    polls = [0]

    def done() -> bool:
        polls[0] += 1
        return int(client.zcard(finished)) >= n

    with CountWorker(server.url) as worker:
        probe = Probe(client, worker)
        before = probe.sample()
        start = time.perf_counter()
        worker.go()
        poll(done, 120, f"{n} jobs drained", 0.005, worker)
        elapsed = time.perf_counter() - start
        time.sleep(0.05)  # the turn after the last end (an empty claim) is part of the drain
        after = probe.sample()
    client.close()
    result = {"elapsed": elapsed, "units": n, **probe.delta(before, after, {"zcard": polls[0]})}
    result["creator"] = None  # this process only polled
    return result


def wake_channel(kickq: Any, name: str) -> str:
    from kickq._redis.keys import Keys

    return str(Keys(kickq.config()["redis_namespace"]).wake(name))


def path_empty_claim(kickq: Any, server: RedisServer, n: int) -> dict[str, Any]:
    """An idle worker woken `n // 2` times (one PUBLISH on its wake channel every 5 ms) with
    nothing to take: per claim it made (its script calls). Our PUBLISHes are left out."""
    client = server.client()
    channel = wake_channel(kickq, NAME)
    wakes = max(n // 2, 10)
    with CountWorker(server.url) as worker:
        worker.go()
        time.sleep(0.5)  # its first (empty) claim and subscriptions are not counted
        probe = Probe(client, worker)
        before = probe.sample()
        start = time.perf_counter()
        for _ in range(wakes):
            client.publish(channel, "")
            time.sleep(WAKE_GAP)
        time.sleep(0.1)
        elapsed = time.perf_counter() - start
        after = probe.sample()
    client.close()
    result = {"elapsed": elapsed, **probe.delta(before, after, {"publish": wakes})}
    result["creator"] = None  # this process only published the wakes
    result["wakes"] = wakes
    result["units"] = max(result["redis"]["script_calls"], 1)
    return result


def path_idle(kickq: Any, server: RedisServer, seconds: float = 2.0) -> dict[str, Any]:
    """The background: this process's engine and one idle worker process, per second."""
    client = server.client()
    with CountWorker(server.url) as worker:
        worker.go()
        fresh(kickq, server.url)
        time.sleep(0.5)
        probe = Probe(client, worker)
        before = probe.sample()
        time.sleep(seconds)
        after = probe.sample()
    client.close()
    return {"elapsed": seconds, "units": seconds, **probe.delta(before, after)}


PATHS = {
    "hotjob": ("whole hotjob (sequential, 1 worker proc x10)", path_hotjob),
    "create": ("create, one at a time (no worker)", path_create),
    "drain": ("drained job (1 worker proc x10, start included)", path_drain),
    "empty": ("empty claim (worker woken, nothing queued)", path_empty_claim),
}


def per_unit(result: dict[str, Any]) -> dict[str, Any]:
    """One run's figures per job (per claim, per second for idle)."""
    units = result["units"]
    redis_d = result["redis"]
    out: dict[str, Any] = {
        "commands": redis_d["commands"] / units,
        "script_calls": redis_d["script_calls"] / units,
        "lua_us_per_script_call": (
            redis_d["script_usec"] / redis_d["script_calls"] if redis_d["script_calls"] else 0.0
        ),
        "redis_cpu_us": redis_d["server_cpu"] * 1e6 / units,
        "by_command": {k: v / units for k, v in redis_d["by_command"].items()},
        "wall_ms": result["elapsed"] * 1000 / units,
    }
    for side in ("creator", "worker"):
        d = result[side]
        if d is None:
            continue
        out[f"{side}_cpu_us"] = d["cpu"] * 1e6 / units
        out[f"{side}_vcsw"] = d["vcsw"] / units
        out[f"{side}_ivcsw"] = d["ivcsw"] / units
        out[f"{side}_messages"] = None if d["messages"] is None else d["messages"] / units
        out[f"{side}_pushes"] = None if d["pushes"] is None else d["pushes"] / units
        out[f"{side}_threads"] = {
            label: {"cpu_us": t["cpu"] * 1e6 / units, "vcsw": t["vcsw"] / units}
            for label, t in d["threads"].items()
            if t["cpu"] > 0 or t["vcsw"] > 0
        }
    return out


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each figure over runs (nested dicts too); a figure missing in a run counts
    as 0 there (a command a run did not send)."""
    out: dict[str, Any] = {}
    keys = {k for run in runs for k in run}
    for key in sorted(keys):
        values = [run.get(key) for run in runs]
        present = [v for v in values if v is not None]
        if not present:
            out[key] = None
        elif isinstance(present[0], dict):
            out[key] = median_of([v if isinstance(v, dict) else {} for v in values])
        else:
            out[key] = statistics.median(v if v is not None else 0 for v in values)
    return out


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def msgs(m: dict[str, Any], side: str) -> str:
    """Messages received, and other pushed replies (subscription confirmations) if any."""
    messages, pushes = m.get(f"{side}_messages"), m.get(f"{side}_pushes")
    if messages is None:
        return "-"
    other = (pushes or 0) - messages
    return fmt(messages, 2) + (f" (+{other:.2f})" if other >= 0.005 else "")


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| path | Redis commands | script calls | Lua µs / script call | Redis CPU µs "
        "| pub/sub msgs (+ confirmations) creator / worker | Python CPU µs creator / worker "
        "| context switches creator / worker | wall ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path, res in results.items():
        m = res["median"]
        lines.append(
            f"| {PATHS[path][0]} | {fmt(m['commands'])} | {fmt(m['script_calls'], 2)} "
            f"| {fmt(m['lua_us_per_script_call'])} | {fmt(m['redis_cpu_us'])} "
            f"| {msgs(m, 'creator')} / {msgs(m, 'worker')} "
            f"| {fmt(m.get('creator_cpu_us'), 0)} / {fmt(m.get('worker_cpu_us'), 0)} "
            f"| {fmt(m.get('creator_vcsw'), 2)} / {fmt(m.get('worker_vcsw'), 2)} "
            f"| {fmt(m['wall_ms'], 3)} |"
        )
    return "\n".join(lines)


def breakdown(results: dict[str, dict[str, Any]]) -> str:
    lines = []
    for path, res in results.items():
        m = res["median"]
        commands = ", ".join(f"{k} {v:.2f}" for k, v in m["by_command"].items() if v >= 0.005)
        lines.append(f"- {path}: {commands}")
        for side in ("creator", "worker"):
            threads = m.get(f"{side}_threads")
            if not threads:
                continue
            parts = sorted(threads.items(), key=lambda kv: -kv[1]["cpu_us"])
            text = ", ".join(
                f"{label} {t['cpu_us']:.0f} µs / {t['vcsw']:.2f} sw"
                for label, t in parts
                if t["cpu_us"] >= 0.5 or t["vcsw"] >= 0.01
            )
            lines.append(f"  - {side} threads (CPU µs / voluntary switches): {text}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="jobs per path and run (1000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per path (3)")
    parser.add_argument(
        "--paths", default=",".join(PATHS), help=f"subset of {','.join(PATHS)} (all)"
    )
    parser.add_argument("--json", default=None, help="write the results here as JSON")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--name", default=NAME, help=argparse.SUPPRESS)
    parser.add_argument("--extra-names", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return 0
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not set(paths) <= set(PATHS):
        parser.error(f"--paths takes {', '.join(PATHS)}")
    info = snapshot_kickq(enabled=False)
    import kickq

    probes.count_messages()
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    with RedisServer() as server:
        log(f"redis-server {server.version}; kickq {kickq.__file__} {info.get('commit', '?')}")
        flush = server.client()
        idle = []
        for path in paths:
            runs = []
            for i in range(args.runs):
                flush.flushall()
                raw = PATHS[path][1](kickq, server, args.n)
                kickq.reset()
                runs.append(per_unit(raw))
                log(
                    f"{path} run {i + 1}: {runs[-1]['commands']:.1f} commands, "
                    f"{runs[-1]['wall_ms']:.3f} ms per unit"
                )
            results[path] = {"runs": runs, "median": median_of(runs)}
        flush.flushall()
        idle.append(per_unit(path_idle(kickq, server)))
        kickq.reset()
        flush.close()
    seconds = time.perf_counter() - started
    print(
        f"kickq {probes.describe(info)}, N={args.n}, median of {args.runs} runs, {seconds:.0f} s\n"
    )
    print(table(results))
    print("\nBy command (per unit) and by thread:\n")
    print(breakdown(results))
    m = idle[0]
    print(
        f"\nIdle background (this process's engine + 1 idle worker process), per second: "
        f"{m['commands']:.1f} commands, {m['script_calls']:.1f} script calls, creator "
        f"{m['creator_cpu_us']:.0f} µs CPU, worker {m['worker_cpu_us']:.0f} µs CPU"
    )
    if args.json:
        out = {
            "kickq": info,
            "n": args.n,
            "runs": args.runs,
            "seconds": round(seconds, 1),
            "paths": results,
            "idle_per_second": idle[0],
        }
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
