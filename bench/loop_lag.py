"""How late an asyncio loop's timers run while kickq creates jobs from a coroutine, and why.

    PYTHONPATH=<tree> python bench/loop_lag.py [--runs 3] [--n 1000] [--bulk 5000] [--json FILE]

On a private redis-server (no worker), a ticker task sleeps 1 ms in a loop and records how late
each wake-up is, while a coroutine on the same loop runs one of:

- gather: `await asyncio.gather(*(kickq.create(name) for _ in range(N)))` (a KickqFuture is
  awaitable);
- gather wrap_future: the same with `asyncio.wrap_future(kickq.create(name))`;
- create_many: `await asyncio.gather(*kickq.create_many(name, [None] * BULK))`;
- chunked: N creates issued 50 at a time with `await asyncio.sleep(0)` between chunks, then
  gathered (what a coroutine can do today to share the loop);
- chunked wrap_future: the same with `asyncio.wrap_future(kickq.create(name))` (asyncio
  futures: gather() makes no Task for them);
- idle: the ticker alone (what the measurement itself shows).

Figures: the max and p99 lateness of the ticks (ms), medians of --runs runs. Then one more run
of each, instrumented, says where the time went: how long the coroutine held the loop issuing
the calls (each create() timed on the loop thread), the longest loop callbacks (every asyncio
Handle timed), how many callbacks resolving futures the loop ran, and the CPU of kickq's
dispatcher and listener threads meanwhile (time they held, or wanted, the GIL).
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.base_events
import asyncio.events
import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import probes
from common import RedisServer, percentile, snapshot_kickq

NAME = "lag"
TICK = 0.001
CHUNK = 50


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ScheduleTicks:
    """Sleeps TICK in a loop; `late` holds (wake-up time, lateness s, start) per tick."""

    def __init__(self) -> None:
        self.late: list[tuple[float, float, float]] = []
        self._stop = False

    async def run(self) -> None:
        while not self._stop:
            start = time.perf_counter()
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            self.late.append((now, now - start - TICK, start))

    def stop(self) -> None:
        self._stop = True


class HandleTimer:
    """While installed, times every asyncio callback (Handle._run), numbers the loop's
    iterations (BaseEventLoop._run_once) and times the garbage collector's passes."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float, str, int]] = []  # start, seconds, what, iteration
        self.gc: list[tuple[float, float, int]] = []  # start, seconds, generation
        self._iteration = [0]
        self._saved: tuple[Any, Any] | None = None
        self._gc_start = [0.0]

    def install(self) -> None:
        handle_run = asyncio.events.Handle._run
        run_once = asyncio.base_events.BaseEventLoop._run_once  # type: ignore[attr-defined]
        spans, iteration = self.spans, self._iteration

        def timed(handle: asyncio.events.Handle) -> None:
            start = time.perf_counter()
            handle_run(handle)
            took = time.perf_counter() - start
            what = _describe(handle) if took > 0.0002 else ""
            spans.append((start, took, what, iteration[0]))

        def counted(loop: Any) -> None:
            iteration[0] += 1
            run_once(loop)

        self._saved = (handle_run, run_once)
        asyncio.events.Handle._run = timed  # type: ignore[method-assign, assignment]
        asyncio.base_events.BaseEventLoop._run_once = counted  # type: ignore[attr-defined]
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start[0] = time.perf_counter()
        else:
            now = time.perf_counter()
            self.gc.append((self._gc_start[0], now - self._gc_start[0], info["generation"]))

    def remove(self) -> None:
        if self._saved is not None:
            asyncio.events.Handle._run = self._saved[0]  # type: ignore[method-assign]
            asyncio.base_events.BaseEventLoop._run_once = self._saved[1]  # type: ignore[attr-defined]
            self._saved = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)


def _describe(handle: asyncio.events.Handle) -> str:
    callback = getattr(handle, "_callback", None)
    name = getattr(callback, "__qualname__", None) or repr(callback)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        name = f"Task step of {getattr(coro, '__qualname__', coro)}"
    return str(name)[:80]


# -- the workloads ----------------------------------------------------------------------------


class Timed:
    """kickq.create, timed on the caller's (the loop's) thread when `enabled`: wall and CPU
    time of each call, and every thread's CPU from the first call to the `n`-th."""

    def __init__(self, kickq: Any, enabled: bool, n: int) -> None:
        self.kickq = kickq
        self.enabled = enabled
        self.n = n
        self.calls: list[float] = []
        self.cpu: list[float] = []
        self.first = self.last = 0.0
        self.threads: list[dict[str, Any]] = []
        self.gather_ms = 0.0

    def gather(self, *awaitables: Any) -> Any:
        """asyncio.gather(*awaitables), its own (synchronous) time noted: it wraps each
        awaitable that is not an asyncio future in a Task, in the calling step."""
        start = time.perf_counter()
        gathered = asyncio.gather(*awaitables)
        self.gather_ms += (time.perf_counter() - start) * 1000
        return gathered

    def create(self) -> Any:
        if not self.enabled:
            return self.kickq.create(NAME)
        if not self.calls:
            self.threads.append(probes.usage())
        start, cpu = time.perf_counter(), time.thread_time()
        future = self.kickq.create(NAME)
        end, cpu_end = time.perf_counter(), time.thread_time()
        if not self.calls:
            self.first = start
        self.last = end
        self.calls.append(end - start)
        self.cpu.append(cpu_end - cpu)
        if len(self.calls) == self.n:
            self.threads.append(probes.usage())
        return future

    def create_many(self, n: int) -> list[Any]:
        if not self.enabled:
            return list(self.kickq.create_many(NAME, [None] * n))
        self.threads.append(probes.usage())
        start, cpu = time.perf_counter(), time.thread_time()
        futures = list(self.kickq.create_many(NAME, [None] * n))
        end, cpu_end = time.perf_counter(), time.thread_time()
        self.threads.append(probes.usage())
        self.first, self.last = start, end
        self.calls.append(end - start)
        self.cpu.append(cpu_end - cpu)
        return futures

    def during_issue(self) -> dict[str, float]:
        """CPU ms of each thread of the process while the calls were being issued."""
        d = self._issue_delta()
        return {k: round(v["cpu"] * 1000, 2) for k, v in d.items() if v["cpu"] > 0}

    def loop_thread_issue(self) -> dict[str, float]:
        """The loop thread over the issue block: ms on a core, ms runnable but waiting for a
        core (other processes), and the rest: ms blocked, which in create() is waiting for
        the GIL (held by kickq's dispatcher or listener)."""
        main = self._issue_delta().get("MainThread")
        if main is None:
            return {}
        wall = (self.last - self.first) * 1000
        cpu, rq = main["cpu"] * 1000, main["rq"] * 1000
        return {"wall": wall, "cpu": cpu, "run_queue": rq, "blocked": wall - cpu - rq}

    def _issue_delta(self) -> dict[str, dict[str, float]]:
        if len(self.threads) < 2:
            return {}
        return dict(probes.delta(self.threads[0], self.threads[1])["threads"])


async def gather(t: Timed, n: int, bulk: int) -> None:
    await t.gather(*(t.create() for _ in range(n)))


async def gather_wrap(t: Timed, n: int, bulk: int) -> None:
    await t.gather(*(asyncio.wrap_future(t.create()) for _ in range(n)))


async def create_many(t: Timed, n: int, bulk: int) -> None:
    await t.gather(*t.create_many(bulk))


async def chunked(t: Timed, n: int, bulk: int) -> None:
    futures: list[Any] = []
    for start in range(0, n, CHUNK):
        futures.extend(t.create() for _ in range(min(CHUNK, n - start)))
        await asyncio.sleep(0)
    await t.gather(*futures)


async def chunked_wrap(t: Timed, n: int, bulk: int) -> None:
    futures: list[Any] = []
    for start in range(0, n, CHUNK):
        futures.extend(asyncio.wrap_future(t.create()) for _ in range(min(CHUNK, n - start)))
        await asyncio.sleep(0)
    await t.gather(*futures)


async def idle(t: Timed, n: int, bulk: int) -> None:
    await asyncio.sleep(0.5)


WORKLOADS: dict[str, tuple[str, Callable[[Timed, int, int], Awaitable[None]]]] = {
    "gather": ("gather(*(create() ...)) x N", gather),
    "gather_wrap": ("gather(*(wrap_future(create()) ...)) x N", gather_wrap),
    "create_many": ("gather(*create_many(BULK))", create_many),
    "chunked": ("N creates, 50 per loop turn, then gather", chunked),
    "chunked_wrap": ("N wrap_future(create()), 50 per loop turn, then gather", chunked_wrap),
    "idle": ("ticker alone, 0.5 s", idle),
}


async def one_run(
    kickq: Any, workload: str, n: int, bulk: int, instrument: bool, gc_off: bool = False
) -> dict[str, Any]:
    ticker = ScheduleTicks()
    timer = HandleTimer()
    timed = Timed(kickq, instrument, n)
    tick_task = asyncio.create_task(ticker.run())
    await asyncio.sleep(0.05)  # the ticker settles
    if instrument:
        timer.install()
        await asyncio.sleep(0)  # from the next step on, every callback is timed
    usage_before = probes.usage()
    loop_cpu0 = time.thread_time()
    if gc_off:
        gc.collect()
        gc.disable()
    start = time.perf_counter()
    try:
        await WORKLOADS[workload][1](timed, n, bulk)
        end = time.perf_counter()
        gc.enable()
        loop_cpu = time.thread_time() - loop_cpu0
        usage = probes.delta(usage_before, probes.usage())
        await asyncio.sleep(0.02)  # a tick that spans the end is counted
    finally:
        gc.enable()
        timer.remove()
        ticker.stop()
        await tick_task
    lags = [late for at, late, _ in ticker.late if at >= start]
    result: dict[str, Any] = {
        "seconds": end - start,
        "ticks": len(lags),
        "max_ms": max(lags) * 1000,
        "p99_ms": percentile(lags, 99) * 1000,
        "p50_ms": percentile(lags, 50) * 1000,
    }
    if instrument:
        result["why"] = explain(timed, timer, ticker, usage, start, end, loop_cpu)
    return result


def explain(
    timed: Timed,
    timer: HandleTimer,
    ticker: ScheduleTicks,
    usage: dict[str, Any],
    start: float,
    end: float,
    loop_cpu: float,
) -> dict[str, Any]:
    """Where the loop's time went in an instrumented run."""
    spans = [s for s in timer.spans if s[0] + s[1] >= start and s[0] <= end]
    iterations: dict[int, list[tuple[float, float, str, int]]] = {}
    for span in spans:
        iterations.setdefault(span[3], []).append(span)
    busiest = sorted(iterations.values(), key=lambda it: -sum(s[1] for s in it))[:3]
    gcs = [g for g in timer.gc if g[0] + g[1] >= start and g[0] <= end]
    # ticks that started once the calls were all issued: what the rest of the work costs
    after_issue = [late for _, late, began in ticker.late if began > timed.last and began <= end]
    calls = timed.calls
    return {
        "window_ms": (end - start) * 1000,
        "issue_block_ms": (timed.last - timed.first) * 1000 if calls else 0.0,
        "create_calls": len(calls),
        "create_call_us_mean": statistics.mean(calls) * 1e6 if calls else None,
        "create_call_us_max": max(calls) * 1e6 if calls else None,
        "create_calls_wall_ms": sum(calls) * 1000,
        "create_calls_cpu_ms": sum(timed.cpu) * 1000,
        "gather_call_ms": timed.gather_ms,
        "thread_cpu_ms_during_issue": timed.during_issue(),
        "loop_thread_during_issue_ms": timed.loop_thread_issue(),
        "callbacks": len(spans),
        "callbacks_ms_total": sum(s[1] for s in spans) * 1000,
        "longest_callbacks_ms": [
            (round(s[1] * 1000, 2), s[2]) for s in sorted(spans, key=lambda s: -s[1])[:4]
        ],
        "busiest_iterations": [_iteration(it) for it in busiest],
        "gc_passes": len(gcs),
        "gc_ms_total": sum(g[1] for g in gcs) * 1000,
        "gc_longest_ms": max((g[1] for g in gcs), default=0.0) * 1000,
        "gc_gen2": sum(1 for g in gcs if g[2] == 2),
        "loop_thread_cpu_ms": loop_cpu * 1000,
        "thread_cpu_ms": {
            label: round(t["cpu"] * 1000, 2)
            for label, t in usage["threads"].items()
            if t["cpu"] > 0.0005
        },
        "process_cpu_ms": usage["cpu"] * 1000,
        "ticks_after_issue": len(after_issue),
        "max_lag_after_issue_ms": max(after_issue) * 1000 if after_issue else None,
        "p99_lag_after_issue_ms": percentile(after_issue, 99) * 1000 if after_issue else None,
        "switch_interval_ms": sys.getswitchinterval() * 1000,
    }


def _iteration(spans: list[tuple[float, float, str, int]]) -> dict[str, Any]:
    """One loop iteration: its callbacks' time, how many, and the kinds that took it."""
    kinds: dict[str, list[float]] = {}
    for _, took, what, _ in spans:
        entry = kinds.setdefault(what or "(short callbacks)", [0, 0.0])
        entry[0] += 1
        entry[1] += took
    top = sorted(kinds.items(), key=lambda kv: -kv[1][1])[:3]
    return {
        "ms": round(sum(s[1] for s in spans) * 1000, 2),
        "callbacks": len(spans),
        "top": [(what, int(n), round(ms * 1000, 2)) for what, (n, ms) in top],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n", type=int, default=1000, help="create() calls (1000)")
    parser.add_argument("--bulk", type=int, default=5000, help="create_many items (5000)")
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"subset of {','.join(WORKLOADS)}"
    )
    parser.add_argument("--no-explain", action="store_true", help="skip the instrumented run")
    parser.add_argument(
        "--gc-off",
        action="store_true",
        help="disable the garbage collector during each workload (to see its share of the lag)",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    info = snapshot_kickq(enabled=False)
    import kickq

    out: dict[str, Any] = {
        "kickq": info,
        "n": args.n,
        "bulk": args.bulk,
        "gc_off": args.gc_off,
        "results": {},
    }
    with RedisServer() as server:
        log(f"redis-server {server.version}; kickq {kickq.__file__} {info.get('commit', '?')}")
        client = server.client()
        kickq.config(redis_url=server.url)
        assert isinstance(kickq.get("lag-warm-up").exception(timeout=30), kickq.JobNotFound)
        for workload in workloads:
            runs = []
            for _ in range(args.runs):
                client.flushall()
                run = one_run(kickq, workload, args.n, args.bulk, False, args.gc_off)
                runs.append(asyncio.run(run))
            entry: dict[str, Any] = {
                "label": WORKLOADS[workload][0],
                "runs": runs,
                "max_ms": statistics.median(r["max_ms"] for r in runs),
                "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                "seconds": statistics.median(r["seconds"] for r in runs),
            }
            if not args.no_explain:
                client.flushall()
                run = one_run(kickq, workload, args.n, args.bulk, True, args.gc_off)
                entry["explained"] = asyncio.run(run)
            out["results"][workload] = entry
            log(f"{workload}: max {entry['max_ms']:.1f} ms, p99 {entry['p99_ms']:.1f} ms")
        kickq.reset()
        client.close()
    print(report(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"\nJSON written to {args.json}")
    return 0


def report(out: dict[str, Any]) -> str:
    info = out["kickq"]
    lines = [
        f"kickq {probes.describe(info)}, N={out['n']}, BULK={out['bulk']}, ticker sleeps 1 ms"
        + (", garbage collector off during each workload" if out["gc_off"] else ""),
        "",
        "| workload | max lag ms | p99 lag ms | workload s | runs (max ms) |",
        "|---|---|---|---|---|",
    ]
    for entry in out["results"].values():
        runs = ", ".join(f"{r['max_ms']:.1f}" for r in entry["runs"])
        lines.append(
            f"| {entry['label']} | {entry['max_ms']:.1f} | {entry['p99_ms']:.1f} "
            f"| {entry['seconds']:.3f} | {runs} |"
        )
    for name, entry in out["results"].items():
        why = entry.get("explained", {}).get("why")
        if not why:
            continue
        run = entry["explained"]
        lines.append("")
        lines.append(
            f"{name} (instrumented run: max lag {run['max_ms']:.1f} ms, p99 {run['p99_ms']:.1f}):"
        )
        lines.extend(explain_lines(why))
    return "\n".join(lines)


def explain_lines(why: dict[str, Any]) -> list[str]:
    lines = []
    mean = why["create_call_us_mean"]
    if mean is not None:
        lines.append(
            f"  issue block {why['issue_block_ms']:.1f} ms on the loop thread: "
            f"{why['create_calls']} call(s), mean {mean:.0f} µs, max "
            f"{why['create_call_us_max']:.0f} µs; in calls {why['create_calls_wall_ms']:.1f} "
            f"ms wall, {why['create_calls_cpu_ms']:.1f} ms loop-thread CPU; CPU by thread "
            f"meanwhile {why['thread_cpu_ms_during_issue']}"
        )
        lines.append(f"  asyncio.gather() call itself: {why['gather_call_ms']:.1f} ms")
        lt = why["loop_thread_during_issue_ms"]
        if lt:
            lines.append(
                f"  loop thread over the issue block: {lt['cpu']:.1f} ms on a core, "
                f"{lt['run_queue']:.1f} ms waiting for a core, {lt['blocked']:.1f} ms blocked "
                f"(waiting for the GIL)"
            )
    lines.append(
        f"  loop callbacks: {why['callbacks']} ({why['callbacks_ms_total']:.1f} ms); longest "
        f"{why['longest_callbacks_ms']}"
    )
    for it in why["busiest_iterations"]:
        lines.append(
            f"  busiest loop iteration: {it['ms']:.1f} ms, {it['callbacks']} callbacks: {it['top']}"
        )
    lines.append(
        f"  garbage collector: {why['gc_passes']} passes ({why['gc_gen2']} of generation 2), "
        f"{why['gc_ms_total']:.1f} ms, longest {why['gc_longest_ms']:.1f} ms"
    )
    after_max = why["max_lag_after_issue_ms"]
    if after_max is not None:
        lines.append(
            f"  ticks started after the issue block: {why['ticks_after_issue']}, max lag "
            f"{after_max:.1f} ms, p99 {why['p99_lag_after_issue_ms']:.1f} ms"
        )
    lines.append(
        f"  window {why['window_ms']:.1f} ms: loop thread CPU {why['loop_thread_cpu_ms']:.1f} "
        f"ms, process CPU {why['process_cpu_ms']:.1f} ms; by thread {why['thread_cpu_ms']} "
        f"(switch interval {why['switch_interval_ms']:.0f} ms)"
    )
    return lines


if __name__ == "__main__":
    sys.exit(main())
