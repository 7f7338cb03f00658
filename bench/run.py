"""kickq benchmark suite: kickq against RQ, Dramatiq, Huey, arq and a raw redis-py floor.

    .venv/bin/python bench/run.py [--quick] [--only kickq,floor,...] [--n 20000] [--json out.json]

Starts a private redis-server on a free 127.0.0.1 port (no persistence) and runs the same
workloads for every peer: enqueue, bulk enqueue, drain with 1/2/4 worker processes, a 1-process
drain of jobs with mixed priorities, round trip, memory.
Every figure is the median of --runs runs (3; 1 with --quick) with min and max. See README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers
from common import RedisServer, percentile, snapshot_kickq, summary, used_memory
from peers.base import Unsupported

CONCURRENCY = 10
DRAIN_PROCS = (1, 2, 4)
DRAIN_TIMEOUT = 300.0

# metric key -> (label, unit, higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "enqueue": ("enqueue", "jobs/s", True),
    "enqueue_seq": ("enqueue, one at a time", "jobs/s", True),
    "bulk": ("bulk enqueue", "jobs/s", True),
    "drain_1": ("drain 1 proc", "jobs/s", True),
    "drain_2": ("drain 2 procs", "jobs/s", True),
    "drain_4": ("drain 4 procs", "jobs/s", True),
    "drain_prio": ("drain 1 proc, prio 0-9", "jobs/s", True),
    "drain_prio_plain": ("drain 1 proc, same prio", "jobs/s", True),
    "rt_p50": ("round trip p50", "ms", False),
    "rt_p90": ("round trip p90", "ms", False),
    "rt_p99": ("round trip p99", "ms", False),
    "mem_queued": ("Redis bytes / queued job", "B", False),
    "mem_finished": ("Redis bytes / finished job", "B", False),
    "rss_before": ("worker RSS before drain", "MiB", False),
    "rss_after": ("worker RSS after drain", "MiB", False),
}
WORKLOADS = {
    "enqueue": ["enqueue"],
    "seq": ["enqueue_seq"],
    "bulk": ["bulk"],
    "drain": ["drain_1", "drain_2", "drain_4", "mem_queued", "mem_finished"],
    "prio": ["drain_prio", "drain_prio_plain"],
    "rt": ["rt_p50", "rt_p90", "rt_p99"],
}
RATIO_METRICS = [
    "enqueue",
    "enqueue_seq",
    "bulk",
    "drain_1",
    "drain_2",
    "drain_4",
    "drain_prio",
    "rt_p50",
    "rt_p90",
    "rt_p99",
]
# goals, reported and never asserted: kickq's figure over its own figure for another workload
# in the same run (metric -> (that metric, goal)), and kickq over the fastest peer
OWN_GOALS = {"bulk": ("enqueue", 3.0), "drain_prio": ("drain_prio_plain", 0.9)}
PEER_GOALS = {"bulk": 1.0}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
    return text if len(text) <= 160 else text[:157] + "..."


class Bench:
    def __init__(
        self, args: argparse.Namespace, server: RedisServer, kickq_info: dict[str, Any]
    ) -> None:
        self.args = args
        self.server = server
        self.kickq_info = kickq_info
        self.results: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, dict[str, str]] = {}
        self.info: dict[str, dict[str, Any]] = {}

    # -- one peer -------------------------------------------------------------------------

    def run_peer(self, name: str) -> None:
        started = time.perf_counter()
        self.results[name] = {}
        self.errors[name] = {}
        try:
            peer_class = peers.load(name)
            self.server.client().flushall()
            peer = peer_class(self.server.url)
        except Exception as exc:
            self.errors[name]["*"] = short(exc)
            log(f"[{name}] n/a: {short(exc)}")
            return
        n = max(int(self.args.n * peer_class.n_scale), 10)
        rt_count = self.args.rt_count
        self.info[name] = {"version": peer_class.version(), "n": n, "notes": peer_class.notes}
        log(f"[{name}] {peer_class.version()}, N={n}")
        try:
            for workload, step in (
                ("enqueue", lambda: self.enqueue(peer, n)),
                ("seq", lambda: self.enqueue_seq(peer, n)),
                ("bulk", lambda: self.bulk(peer, n)),
                ("drain", lambda: self.drain(peer, n)),
                ("prio", lambda: self.drain_prio(peer, n)),
                ("rt", lambda: self.round_trip(peer, rt_count)),
            ):
                if workload in self.args.workloads:
                    self._run_workload(name, workload, step)
        finally:
            try:
                peer.close()
            except Exception as exc:
                log(f"[{name}] close failed: {short(exc)}")
        self.info[name]["seconds"] = round(time.perf_counter() - started, 1)
        log(f"[{name}] done in {self.info[name]['seconds']} s")

    def _run_workload(self, name: str, workload: str, step: Any) -> None:
        """Run one workload of a peer; a failure, or a call the library does not have, makes
        its figures "n/a (reason)" and the run goes on."""
        try:
            step()
        except Unsupported as exc:
            reason = str(exc)
            log(f"[{name}] {workload}: n/a ({reason})")
        except Exception as exc:
            reason = short(exc)
            log(f"[{name}] {workload} failed: {reason}")
            if self.args.verbose:
                traceback.print_exc()
        else:
            return
        for metric in WORKLOADS[workload]:
            if metric not in self.results[name]:
                self.errors[name][metric] = reason

    def record(self, peer: str, metric: str, values: list[float]) -> None:
        self.results[peer][metric] = summary(values)

    def enqueue(self, peer: Any, n: int) -> None:
        self._timed(peer, n, "enqueue", peer.enqueue_many)

    def enqueue_seq(self, peer: Any, n: int) -> None:
        """N no-op jobs, each call waited for before the next is made."""
        self._timed(peer, n, "enqueue_seq", peer.enqueue_one_at_a_time, "enqueue one at a time")

    def bulk(self, peer: Any, n: int) -> None:
        """N no-op jobs through the library's bulk call, from the call until all are saved."""
        self._timed(peer, n, "bulk", peer.enqueue_bulk, "bulk enqueue")

    def _timed(
        self, peer: Any, n: int, metric: str, enqueue: Any, label: str | None = None
    ) -> None:
        """jobs/s of `enqueue(n)` on a flushed Redis, over --runs runs."""
        rates = []
        for _ in range(self.args.runs):
            peer.flush()
            start = time.perf_counter()
            enqueue(n)
            rates.append(n / (time.perf_counter() - start))
        self.record(peer.name, metric, rates)
        log(f"[{peer.name}] {label or metric} {summary(rates)['median']:.0f} jobs/s")

    def drain_prio(self, peer: Any, n: int) -> None:
        """The 1-process drain of N jobs queued with priorities spread over 0-9, each run
        paired with a plain 1-process drain (the library's ordinary queue, one priority) right
        before or after it, in turn, so that both see the same machine."""
        mixed = ("prio", peer.prefill_priorities)
        plain = ("drain", peer.prefill)
        rates: dict[str, list[float]] = {"prio": [], "drain": []}
        for i in range(self.args.runs):
            # mixed first in the first run: a library without priorities stops there
            for mode, prefill in (mixed, plain) if i % 2 == 0 else (plain, mixed):
                rates[mode].append(self._drain_once(peer, n, prefill, mode))
        self.record(peer.name, "drain_prio", rates["prio"])
        self.record(peer.name, "drain_prio_plain", rates["drain"])
        log(
            f"[{peer.name}] drain 1 proc, priorities 0-9 {summary(rates['prio'])['median']:.0f}"
            f" jobs/s, same priority {summary(rates['drain'])['median']:.0f} jobs/s"
        )
        peer.flush()

    def _drain_once(self, peer: Any, n: int, prefill: Any, mode: str) -> float:
        """Queue N jobs with `prefill` (not timed), drain them with one worker process: jobs/s."""
        peer.flush()
        prefill(n)
        with peer.start_workers(1, CONCURRENCY, mode) as workers:
            go = workers.go()
            end = peer.wait_drained(n, DRAIN_TIMEOUT, workers)
        return n / (end - go)

    def drain(self, peer: Any, n: int) -> None:
        client = self.server.client()
        for procs in DRAIN_PROCS:
            rates: list[float] = []
            memory: dict[str, list[float]] = {k: [] for k in WORKLOADS["drain"][3:]}
            rss: dict[str, list[float]] = {"rss_before": [], "rss_after": []}
            try:
                for _ in range(self.args.runs):
                    peer.flush()
                    base = used_memory(client)
                    peer.prefill(n)
                    queued = used_memory(client)
                    with peer.start_workers(procs, CONCURRENCY, "drain") as workers:
                        before = workers.rss()
                        go = workers.go()
                        end = peer.wait_drained(n, DRAIN_TIMEOUT, workers)
                        after = workers.rss()
                    rates.append(n / (end - go))
                    if procs == 1:
                        time.sleep(0.05)  # let the server drop the workers' client buffers
                        finished = used_memory(client)
                        memory["mem_queued"].append((queued - base) / n)
                        memory["mem_finished"].append((finished - base) / n)
                        rss["rss_before"].append(before[0] / 2**20)
                        rss["rss_after"].append(after[0] / 2**20)
            except Exception as exc:
                self.errors[peer.name][f"drain_{procs}"] = short(exc)
                log(f"[{peer.name}] drain with {procs} procs failed: {short(exc)}")
                if self.args.verbose:
                    traceback.print_exc()
                continue
            self.record(peer.name, f"drain_{procs}", rates)
            log(f"[{peer.name}] drain {procs} procs {summary(rates)['median']:.0f} jobs/s")
            for metric, values in {**memory, **rss}.items():
                if values:
                    self.record(peer.name, metric, values)
        peer.flush()
        client.close()

    def round_trip(self, peer: Any, count: int) -> None:
        peer.flush()
        stats: dict[str, list[float]] = {"rt_p50": [], "rt_p90": [], "rt_p99": []}
        counts = []
        with peer.start_workers(1, CONCURRENCY, "rt") as workers:
            workers.go()
            peer.round_trip(max(count // 20, 5), budget=10)  # warm-up, not counted
            for _ in range(self.args.runs):
                latencies = peer.round_trip(count, budget=self.args.rt_budget)
                workers.check_alive()
                counts.append(len(latencies))
                for pct, metric in ((50, "rt_p50"), (90, "rt_p90"), (99, "rt_p99")):
                    stats[metric].append(percentile(latencies, pct) * 1000)
        for metric, values in stats.items():
            self.record(peer.name, metric, values)
        self.info[peer.name]["rt_counts"] = counts
        log(
            f"[{peer.name}] round trip p50 {summary(stats['rt_p50'])['median']:.2f} ms "
            f"({'/'.join(map(str, counts))} round trips)"
        )
        peer.flush()

    # -- ratios and output ----------------------------------------------------------------

    def ratios(self) -> dict[str, dict[str, Any]]:
        """kickq / fastest peer and kickq / floor, for each workload, from this run; for some,
        also kickq / kickq's figure for another workload (OWN_GOALS)."""
        kickq = self.results.get("kickq", {})
        return {m: self._ratio_entry(m, kickq) for m in RATIO_METRICS if m in kickq}

    def _ratio_entry(self, metric: str, kickq: dict[str, Any]) -> dict[str, Any]:
        higher = METRICS[metric][2]
        mine = kickq[metric]["median"]
        others = {
            name: res[metric]["median"]
            for name, res in self.results.items()
            if name not in ("kickq", "floor") and metric in res
        }
        entry: dict[str, Any] = {"higher_is_better": higher}
        if others:
            best = (max if higher else min)(others, key=lambda k: others[k])
            entry["fastest_peer"] = best
            entry["kickq_over_fastest_peer"] = mine / others[best]
            if metric in PEER_GOALS:
                entry["fastest_peer_goal"] = PEER_GOALS[metric]
        floor = self.results.get("floor", {}).get(metric)
        if floor:
            entry["kickq_over_floor"] = mine / floor["median"]
        if metric in OWN_GOALS:
            own, goal = OWN_GOALS[metric]
            entry["own_metric"] = own
            entry["own_goal"] = goal
            if own in kickq:
                entry["kickq_over_own"] = mine / kickq[own]["median"]
        return entry

    def table(self) -> str:
        names = list(self.results)
        grid = {name: {m: self._cell(name, m) for m in METRICS} for name in names}
        # n/a reasons can be long: keep them out of the grid, list them below it
        notes = self._reasons_out_of(grid)
        lines = self._grid_lines(names, grid)
        lines.append("")
        lines.extend(self._footnotes(names, notes))
        lines.extend(self._ratio_lines())
        return "\n".join(lines)

    def _cell(self, name: str, metric: str) -> str:
        """One figure as the table shows it: "median [min-max]", "n/a (reason)" or "-"."""
        res = self.results[name].get(metric)
        if res is None:
            reason = self.errors[name].get("*") or self.errors[name].get(metric)
            return f"n/a ({reason})" if reason else "-"
        fmt = "{:.0f}" if METRICS[metric][1] in ("jobs/s", "B") else "{:.2f}"
        if METRICS[metric][1] == "MiB":
            fmt = "{:.1f}"
        med = fmt.format(res["median"])
        if len(res["runs"]) == 1:
            return med
        return f"{med} [{fmt.format(res['min'])}-{fmt.format(res['max'])}]"

    def _reasons_out_of(self, grid: dict[str, dict[str, str]]) -> list[str]:
        """Turn each "n/a (reason)" cell of `grid` into "n/a"; returns the notes that keep the
        reasons, each once (a peer that failed as a whole has one note, not one per cell)."""
        notes: list[str] = []
        for name, cells in grid.items():
            for metric, text in cells.items():
                if not text.startswith("n/a"):
                    continue
                if "*" in self.errors[name]:
                    key = f"{name}: {text}"
                else:
                    key = f"{name} / {METRICS[metric][0]}: {text}"
                if key not in notes:
                    notes.append(key)
                cells[metric] = "n/a"
        return notes

    def _grid_lines(self, names: list[str], grid: dict[str, dict[str, str]]) -> list[str]:
        label_w = max(len(f"{v[0]} ({v[1]})") for v in METRICS.values())
        widths = {name: max(len(name), *(len(grid[name][m]) for m in METRICS)) for name in names}
        header = " " * label_w + " | " + " | ".join(n.rjust(widths[n]) for n in names)
        lines = [header, "-" * len(header)]
        for metric, (label, unit, _) in METRICS.items():
            row = f"{label} ({unit})".ljust(label_w) + " | "
            row += " | ".join(grid[n][metric].rjust(widths[n]) for n in names)
            lines.append(row)
        return lines

    def _footnotes(self, names: list[str], notes: list[str]) -> list[str]:
        lines = [
            "cells: median [min-max] over runs; N per peer: "
            + ", ".join(f"{n}={self.info[n]['n']}" for n in names if n in self.info)
        ]
        for name in names:
            counts = self.info.get(name, {}).get("rt_counts")
            if counts and any(c < self.args.rt_count for c in counts):
                lines.append(
                    f"{name}: round trips cut short by the {self.args.rt_budget:.0f} s budget: "
                    f"{counts}"
                )
        lines.extend(notes)
        return lines

    def _ratio_lines(self) -> list[str]:
        ratios = self.ratios()
        if not ratios:
            return []
        lines = [
            "",
            "ratios (kickq / other, same run; jobs/s: >1 = kickq faster; ms: <1 = kickq faster):",
        ]
        width = max(len(METRICS[metric][0]) for metric in ratios)
        for metric, entry in ratios.items():
            parts = []
            if "kickq_over_fastest_peer" in entry:
                parts.append(
                    f"kickq/fastest peer ({entry['fastest_peer']}) = "
                    f"{entry['kickq_over_fastest_peer']:.2f}x"
                    + _goal(entry["kickq_over_fastest_peer"], entry.get("fastest_peer_goal"))
                )
            if "kickq_over_floor" in entry:
                parts.append(f"kickq/floor = {entry['kickq_over_floor']:.2f}x")
            if "own_metric" in entry:
                parts.append(_own_ratio(entry))
            lines.append(f"  {METRICS[metric][0]:<{width}} " + "; ".join(parts))
        return lines

    def as_json(self, command: str, seconds: float) -> dict[str, Any]:
        return {
            "command": command,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(seconds, 1),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "redis_server": self.server.binary,
                "redis_version": self.server.version,
            },
            "kickq": self.kickq_info,
            "settings": {
                "n": self.args.n,
                "runs": self.args.runs,
                "rt_count": self.args.rt_count,
                "concurrency": CONCURRENCY,
                "drain_procs": list(DRAIN_PROCS),
                "prio_priorities": "0-9, job i has priority (7 * i) % 10",
                "quick": self.args.quick,
            },
            "metrics": {
                k: {"label": v[0], "unit": v[1], "higher_is_better": v[2]}
                for k, v in METRICS.items()
            },
            "peers": self.info,
            "results": self.results,
            "errors": {k: v for k, v in self.errors.items() if v},
            "ratios": self.ratios(),
        }


def _goal(ratio: float, goal: float | None) -> str:
    """The "(goal >= 3x: met)" after a ratio that has a goal (higher is better), else ""."""
    if goal is None:
        return ""
    return f" (goal >= {goal:g}x: {'met' if ratio >= goal else 'not met'})"


def _own_ratio(entry: dict[str, Any]) -> str:
    """kickq / kickq's own figure for another workload, as the ratio lines show it."""
    label = f"kickq/kickq's {METRICS[entry['own_metric']][0]}"
    if "kickq_over_own" not in entry:
        return f"{label}: n/a (run that workload too; goal >= {entry['own_goal']:g}x)"
    return f"{label} = {entry['kickq_over_own']:.2f}x" + _goal(
        entry["kickq_over_own"], entry["own_goal"]
    )


def describe_kickq(info: dict[str, Any]) -> str:
    commit = info.get("commit", "?")
    if info.get("uncommitted_changes"):
        commit += "+uncommitted"
    where = "snapshot" if "snapshot" in info else info["source"]
    return f"commit {commit}, files {info['tree_hash']} ({where})"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run, small N: a smoke run")
    parser.add_argument(
        "--only",
        default=",".join(peers.NAMES),
        help=f"comma-separated peers (default: {','.join(peers.NAMES)})",
    )
    parser.add_argument("--n", type=int, default=None, help="jobs per enqueue/bulk/drain (20000)")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (3)")
    parser.add_argument("--rt-count", type=int, default=None, help="round trips per run (1000)")
    parser.add_argument(
        "--rt-budget",
        type=float,
        default=None,
        help="seconds one round-trip run may take before it is cut short (60)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"subset of {','.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument("--json", default=None, help="write the results here as JSON")
    parser.add_argument(
        "--no-snapshot",
        action="store_true",
        help="import kickq from the working tree as is (default: a frozen copy taken at start)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print tracebacks")
    args = parser.parse_args(argv)
    quick = args.quick
    args.n = args.n or (600 if quick else 20000)
    args.runs = args.runs or (1 if quick else 3)
    args.rt_count = args.rt_count or (100 if quick else 1000)
    args.rt_budget = args.rt_budget or (5.0 if quick else 60.0)
    args.only = [p.strip() for p in args.only.split(",") if p.strip()]
    for name in args.only:
        if name not in peers.NAMES:
            parser.error(f"unknown peer {name!r}; peers are {', '.join(peers.NAMES)}")
    args.workloads = {w.strip() for w in args.workloads.split(",") if w.strip()}
    if not args.workloads <= set(WORKLOADS):
        parser.error(f"--workloads takes {', '.join(WORKLOADS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/run.py", *sys.argv[1:]])
    started = time.perf_counter()
    kickq_info = snapshot_kickq(enabled=not args.no_snapshot)
    with RedisServer() as server:
        log(f"redis-server {server.version} ({server.binary}) at {server.url}")
        log(f"kickq under test: {describe_kickq(kickq_info)}")
        bench = Bench(args, server, kickq_info)
        for name in args.only:
            bench.run_peer(name)
        seconds = time.perf_counter() - started
        print()
        print(
            f"kickq benchmark ({command}), {os.cpu_count()} CPUs, redis {server.version}, "
            f"{seconds:.0f} s"
        )
        print(f"kickq under test: {describe_kickq(kickq_info)}")
        print()
        print(bench.table())
        print()
        for name, info in bench.info.items():
            print(f"{name} {info['version']}: {info['notes']}")
        if args.json:
            Path(args.json).write_text(json.dumps(bench.as_json(command, seconds), indent=2))
            print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
