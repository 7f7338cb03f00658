"""kickq under load: N jobs through P worker processes, each job run exactly once, Redis back to
its baseline memory after the purge.

    .venv/bin/python bench/load.py [--n 100000] [--procs 4] [--concurrency 10]
                                   [--purge-timeout 2] [--json out.json]

1. Starts a private redis-server (never port 6379), connects kickq in this process and records
   Redis memory (the baseline); then starts P worker processes, which connect and wait.
2. Creates N jobs `{"seq": i}` (all create() futures issued, then awaited) -> create jobs/s.
3. Tells the workers "go": each runs kickq.process(name, handler, concurrent_jobs=C); the
   handler does HINCRBY load:runs <seq> 1 (and HINCRBY load:procs <pid> 1) on its own redis
   client. Polls until load:runs has N fields and no job is queued, scheduled or processing
   -> drain jobs/s (from "go") and end-to-end jobs/s (from the first create).
4. Checks: every seq 0..N-1 ran exactly once (none missing, none twice, nothing else), no
   `fail` event was published (no failed or ghosted run), every job record still present is
   `success` with one run, no damaged record.
5. Waits for the purge (purge_timeout after each job finished) to remove every key under
   `<ns>:*`: the queue, scheduled, processing and finished indexes are deleted by Redis when
   they become empty, so nothing at all may be left. Stops the workers, deletes load:runs and
   load:procs, and compares Redis `used_memory` with the baseline (--mem-tolerance, 256 KiB
   by default: at N=100,000 any leak of 3 bytes per job or more shows; see bench/README.md).

Exits 1 if any check fails. The kickq under test is a frozen copy of the working tree's
`kickq/` (see snapshot_kickq in common.py); --no-snapshot imports the tree as is.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_DIR, RedisServer, WorkerProcs, poll, rss_bytes, snapshot_kickq

if TYPE_CHECKING:
    from kickq._redis.keys import Keys  # imported for real only after snapshot_kickq(), in run()

ROOT = BENCH_DIR.parent

JOB = "load"
RUNS = "load:runs"  # hash: seq -> how many times the handler ran for it
PROCS = "load:procs"  # hash: worker pid -> how many runs it did
MIB = 1024 * 1024
MEMORY_FIELDS = (
    "used_memory",
    "used_memory_dataset",
    "used_memory_overhead",
    "used_memory_scripts",
    "mem_clients_normal",
)


# -- the worker process: bench/load.py --worker URL -------------------------------------------


def worker_main(args: argparse.Namespace) -> None:
    """Connect, print "ready", wait for "go", process until stdin closes, then stop cleanly."""
    import logging

    import redis

    import kickq

    logging.basicConfig(level=logging.WARNING)
    kickq.config(
        redis_url=args.worker,
        redis_namespace=args.namespace,
        purge_timeout=args.purge_timeout,  # a finished job's purge time is set by its worker
    )
    error = kickq.get("load-warm-up").exception(timeout=30)
    if not isinstance(error, kickq.JobNotFound):
        raise RuntimeError(f"kickq did not connect: {error!r}")
    counts = redis.Redis.from_url(args.worker)
    pid = str(os.getpid())

    def count(job: Any, data: dict[str, int]) -> None:
        pipe = counts.pipeline(transaction=False)
        pipe.hincrby(RUNS, str(data["seq"]), 1)
        pipe.hincrby(PROCS, pid, 1)
        pipe.execute()

    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    worker = kickq.process(JOB, count, concurrent_jobs=args.concurrency)
    sys.stdin.read()  # until the benchmark closes our stdin
    worker.stop(timeout=10)
    kickq.reset()
    counts.close()


class LoadWorkers(WorkerProcs):
    """WorkerProcs (ready/go on stdin, logs, stop) running this file in --worker mode."""

    def __init__(
        self,
        url: str,
        n_procs: int,
        concurrency: int,
        namespace: str,
        purge_timeout: float,
        timeout: float = 60,
    ) -> None:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            url,
            "--concurrency",
            str(concurrency),
            "--namespace",
            namespace,
            "--purge-timeout",
            str(purge_timeout),
        ]
        self._launch(command, "load", n_procs, timeout)

    def stop(self, grace: float = 15) -> None:
        """Close stdin and give the workers `grace` seconds to stop kickq and exit cleanly
        (so that their Redis connections are gone before memory is compared); then kill."""
        for proc in self.procs:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
        deadline = time.monotonic() + grace
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(deadline - time.monotonic(), 0.05))
        super().stop()  # kills what is left, closes pipes, removes empty logs


# -- the benchmark ----------------------------------------------------------------------------


def memory(client: Any, resetstat: bool = False) -> dict[str, int]:
    """Redis memory figures. With `resetstat`, CONFIG RESETSTAT first: Redis 7 keeps a latency
    histogram (about 24 KiB) for every command it has run since the last reset, commands run
    by scripts included, so without it the first run of a dozen commands would look like a
    leak of a few hundred KiB. Resetting at the baseline and again at the end compares like
    with like (the private server's INFO stats are nobody else's)."""
    if resetstat:
        client.config_resetstat()
    info = client.info("memory")
    figures = {name: int(info[name]) for name in MEMORY_FIELDS if name in info}
    figures["dbsize"] = int(client.dbsize())
    figures["slowlog_len"] = int(client.slowlog_len())  # kept entries hold command arguments
    return figures


def quiet_memory(client: Any, settle: float = 3.0, timeout: float = 20.0) -> dict[str, int]:
    """Memory figures once Redis has settled: at least `settle` seconds after this is called,
    and `used_memory` unchanged over the last second (five samples, 0.25 s apart); else, after
    `timeout` seconds, the last sample (with "quiet": 0).

    Redis accounts a new client's memory only in its cron, and frees an idle client's query
    buffer (16 KiB or more) after 2 s, so a sample taken just after connecting or just after
    the work can be off by tens of KiB per connection; it shrinks emptied key tables in its
    cron too."""
    started = time.perf_counter()
    recent: list[int] = []
    while True:
        figures = memory(client, resetstat=True)
        recent = [*recent[-4:], figures["used_memory"]]
        waited = time.perf_counter() - started
        quiet = waited >= settle and len(recent) == 5 and len(set(recent)) == 1
        if quiet or waited > timeout:
            figures["quiet"] = int(quiet)
            figures["settled_ms"] = int(waited * 1000)
            return figures
        time.sleep(0.25)


class Check:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def __call__(self, name: str, ok: bool, detail: str) -> bool:
        self.items.append({"check": name, "ok": bool(ok), "detail": detail})
        return bool(ok)

    @property
    def passed(self) -> bool:
        return bool(self.items) and all(item["ok"] for item in self.items)


def run(args: argparse.Namespace, server: RedisServer, out: dict[str, Any], check: Check) -> None:
    import kickq  # after snapshot_kickq()
    from kickq._redis.keys import Keys

    client = server.client(decode_responses=True)
    try:
        measure(kickq, Keys(args.namespace), client, args, server, out, check)
    finally:
        kickq.reset()
        client.close()


def measure(  # the whole benchmark, on the private server
    kickq: Any,
    keys: Keys,
    client: Any,
    args: argparse.Namespace,
    server: RedisServer,
    out: dict[str, Any],
    check: Check,
) -> None:
    failed = connect(kickq, keys, client, args, server)
    # the baseline: this process's kickq connected, no worker process yet (they are all
    # gone again when memory is compared at the end)
    baseline = quiet_memory(client)
    out["memory"] = {"baseline": baseline}
    log(f"baseline used_memory {baseline['used_memory']} B, dbsize {baseline['dbsize']}")
    workers = LoadWorkers(
        server.url, args.procs, args.concurrency, args.namespace, args.purge_timeout
    )
    try:
        started = create_jobs(kickq, client, args, out, check)
        finished = drain(keys, client, args, workers, out, started)
        check_exactly_once(client, args, out, check)
        check_every_process_ran(client, args, out, check)
        check_nothing_half_done(keys, client, failed, out, check)
        check_purged(keys, client, args, finished, out, check)
    finally:
        workers.stop()
    check_memory_back(keys, client, args, baseline, out, check)
    if failed:
        out["fail_events"] = [
            {"id": job.id, "state": str(job.state), "error": job.last_error} for job in failed[:20]
        ]


def connect(
    kickq: Any, keys: Keys, client: Any, args: argparse.Namespace, server: RedisServer
) -> list[Any]:
    """Connect this process's kickq and subscribe to `fail`; returns the list that the fail
    events (a failed or ghosted run, from any process) are appended to."""
    kickq.reset()
    kickq.config(
        redis_url=server.url, redis_namespace=args.namespace, purge_timeout=args.purge_timeout
    )
    error = kickq.get("load-warm-up").exception(timeout=30)
    if not isinstance(error, kickq.JobNotFound):
        raise RuntimeError(f"kickq did not connect: {error!r}")
    failed: list[Any] = []
    kickq.on("fail", failed.append)
    fail_channel = keys.event("fail")
    # a fail event published before the subscription is in place would go unseen
    poll(
        lambda: dict(client.pubsub_numsub(fail_channel)).get(fail_channel, 0) >= 1,
        10,
        "the fail subscription",
    )
    return failed


def create_jobs(
    kickq: Any, client: Any, args: argparse.Namespace, out: dict[str, Any], check: Check
) -> float:
    """Create the N jobs, all futures issued before any is awaited; returns the perf_counter()
    at which the first was issued."""
    n = args.n
    figures: dict[str, Any] = out["figures"]
    started = time.perf_counter()
    futures = [kickq.create(JOB, {"seq": i}) for i in range(n)]
    ids = [future.result(timeout=args.timeout) for future in futures]
    created = time.perf_counter()
    del futures
    figures["create_s"] = created - started
    figures["create_jobs_per_s"] = n / figures["create_s"]
    check("created", len({job.id for job in ids}) == n, f"{n} jobs, distinct ids")
    del ids
    queued = memory(client)
    out["memory"]["queued"] = queued
    log(f"created {n} jobs in {figures['create_s']:.1f} s; used_memory {queued['used_memory']}")
    return started


def drain(
    keys: Keys,
    client: Any,
    args: argparse.Namespace,
    workers: LoadWorkers,
    out: dict[str, Any],
    started: float,
) -> float:
    """Tell the workers "go" and wait until every job has run and none is queued, scheduled or
    processing; returns the perf_counter() at which that was seen."""
    n = args.n
    figures: dict[str, Any] = out["figures"]
    queue_key, scheduled, processing = keys.queue(JOB), keys.scheduled, keys.processing

    def drained() -> bool:
        pipe = client.pipeline(transaction=False)
        pipe.hlen(RUNS)
        pipe.zcard(queue_key)
        pipe.zcard(scheduled)
        pipe.zcard(processing)
        ran, *left = pipe.execute()
        return ran >= n and not any(left)

    figures["worker_rss_before"] = [rss_bytes(proc.pid) for proc in workers.procs]
    go = workers.go()
    finished = poll(drained, args.timeout, f"{n} jobs run", workers=workers)
    figures["worker_rss_after"] = [rss_bytes(proc.pid) for proc in workers.procs]
    figures["drain_s"] = finished - go
    figures["drain_jobs_per_s"] = n / figures["drain_s"]
    figures["end_to_end_s"] = finished - started
    figures["end_to_end_jobs_per_s"] = n / figures["end_to_end_s"]
    out["memory"]["peak_used_memory"] = int(client.info("memory")["used_memory_peak"])
    log(f"drained in {figures['drain_s']:.1f} s")
    return finished


def check_exactly_once(
    client: Any, args: argparse.Namespace, out: dict[str, Any], check: Check
) -> None:
    """Every seq ran once, none is missing, nothing else ran."""
    n = args.n
    figures: dict[str, Any] = out["figures"]
    runs = {int(seq): int(count) for seq, count in client.hgetall(RUNS).items()}
    missing = n - sum(1 for seq in range(n) if seq in runs)
    twice = sum(1 for count in runs.values() if count != 1)
    strange = sum(1 for seq in runs if not 0 <= seq < n)
    figures["runs"] = sum(runs.values())
    check(
        "exactly once",
        missing == 0 and twice == 0 and strange == 0 and figures["runs"] == n,
        f"{len(runs)} seqs ran, {figures['runs']} runs; missing {missing}, "
        f"run more than once {twice}, unknown {strange}",
    )


def check_every_process_ran(
    client: Any, args: argparse.Namespace, out: dict[str, Any], check: Check
) -> None:
    per_proc = {pid: int(c) for pid, c in client.hgetall(PROCS).items()}
    out["runs_per_process"] = per_proc
    check(
        "every worker process ran jobs",
        len(per_proc) == args.procs and all(per_proc.values()),
        ", ".join(f"pid {pid}: {c}" for pid, c in sorted(per_proc.items())),
    )


def check_nothing_half_done(
    keys: Keys, client: Any, failed: list[Any], out: dict[str, Any], check: Check
) -> None:
    """No failed or ghosted run, every record not yet purged is a success, none damaged."""
    states, bad_runs = record_states(keys, client)
    damaged = sum(1 for _ in client.scan_iter(keys.damaged_prefix + "*"))
    out["states_after_drain"] = dict(states)
    check(
        "no job left unfinished",
        set(states) <= {"success"} and bad_runs == 0 and damaged == 0 and not failed,
        f"records not yet purged: {dict(states) or 'none'}; with a second run {bad_runs}; "
        f"damaged {damaged}; fail events {len(failed)}",
    )


def record_states(keys: Keys, client: Any) -> tuple[Counter[str], int]:
    """How many job records are in each state, and how many of them have a second run."""
    states: Counter[str] = Counter()
    bad_runs = 0
    for batch in _batches(client.scan_iter(keys.job_prefix + "*", count=1000), 1000):
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.hget(key, "state")
            pipe.hexists(key, "run:2")
        replies = pipe.execute()
        for state, rerun in zip(replies[::2], replies[1::2], strict=True):
            if state is not None:  # purged meanwhile
                states[state] += 1
                bad_runs += bool(rerun)
    return states, bad_runs


def check_purged(
    keys: Keys,
    client: Any,
    args: argparse.Namespace,
    finished: float,
    out: dict[str, Any],
    check: Check,
) -> None:
    """The purge removes every key of the namespace, indexes included, but the bounded ones
    kept per name and per namespace (stats, live workers, the last deadline announced)."""
    ns = args.namespace
    figures: dict[str, Any] = out["figures"]

    def purged() -> bool:
        if client.zcard(keys.finished):
            return False
        return not per_job_keys(client, keys, ns)

    try:
        done = poll(purged, args.purge_timeout + 60, "the purge", interval=0.05)
        figures["purge_after_drain_s"] = done - finished
        check(
            "purged",
            True,
            f"no key under {ns}:* {figures['purge_after_drain_s']:.2f} s after the last job "
            f"finished (purge_timeout {args.purge_timeout:g} s)",
        )
    except TimeoutError as exc:
        left = per_job_keys(client, keys, ns)
        check("purged", False, f"{exc}: {len(left)} keys left, e.g. {left[:5]}")


def bounded_keys(keys: Keys) -> set[str]:
    """The keys that stay after every job is purged, each of a size bounded whatever the
    number of jobs (see the README's "Stats, workers and pause")."""
    return {keys.names, keys.next_due, keys.workers, keys.minutes(JOB), keys.times(JOB)}


def per_job_keys(client: Any, keys: Keys, ns: str) -> list[str]:
    left = {str(key) for key in client.scan_iter(f"{ns}:*", count=1000)}
    return sorted(left - bounded_keys(keys))


def check_memory_back(
    keys: Keys,
    client: Any,
    args: argparse.Namespace,
    baseline: dict[str, int],
    out: dict[str, Any],
    check: Check,
) -> None:
    """Redis memory back to the baseline. Call once the workers are gone, as their connections
    would count; the counting hashes are deleted first, since the baseline had none."""
    client.delete(RUNS, PROCS, *bounded_keys(keys))
    tolerance = args.mem_tolerance
    after = quiet_memory(client)
    out["memory"]["after"] = after
    diff = after["used_memory"] - baseline["used_memory"]
    out["memory"]["diff"] = diff
    out["memory"]["tolerance"] = tolerance
    check(
        "memory back to baseline",
        abs(diff) <= tolerance and after["dbsize"] == baseline["dbsize"],
        f"used_memory {baseline['used_memory']} -> {after['used_memory']} B "
        f"({diff:+d} B, {diff / args.n:+.2f} B/job; tolerance {tolerance} B); "
        f"dbsize {baseline['dbsize']} -> {after['dbsize']}",
    )


def _batches(items: Any, size: int) -> Any:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def report(args: argparse.Namespace, out: dict[str, Any], check: Check) -> str:
    f = out["figures"]
    mem = out.get("memory", {})
    lines = [
        f"kickq load: N={args.n} jobs, {args.procs} worker processes x {args.concurrency} "
        f"concurrent jobs, purge_timeout {args.purge_timeout:g} s "
        f"(redis-server {out['machine']['redis_version']}, {out['machine']['cpus']} CPUs)",
        "",
    ]
    if "create_jobs_per_s" in f:
        lines.append(
            f"  create       {f['create_jobs_per_s']:9.0f} jobs/s   "
            f"({args.n} create() futures in {f['create_s']:.2f} s)"
        )
    if "drain_jobs_per_s" in f:
        lines.append(
            f"  drain        {f['drain_jobs_per_s']:9.0f} jobs/s   "
            f'("go" -> last job finished: {f["drain_s"]:.2f} s)'
        )
        lines.append(
            f"  end to end   {f['end_to_end_jobs_per_s']:9.0f} jobs/s   "
            f"(first create -> last job finished: {f['end_to_end_s']:.2f} s)"
        )
    if "worker_rss_after" in f:
        mib = 1024 * 1024
        before = ", ".join(f"{b / mib:.1f}" for b in f["worker_rss_before"])
        after = ", ".join(f"{a / mib:.1f}" for a in f["worker_rss_after"])
        lines.append(f"  worker RSS   before go: {before} MiB; after the drain: {after} MiB")
    if "purge_after_drain_s" in f:
        lines.append(
            f"  purge        {f['purge_after_drain_s']:9.2f} s        "
            f"(last job finished -> no key left; purge_timeout {args.purge_timeout:g} s)"
        )
    if "after" in mem:
        base, after = mem["baseline"], mem["after"]
        lines.append(
            f"  used_memory  {base['used_memory']} B baseline, {after['used_memory']} B after "
            f"({mem['diff']:+d} B); peak {mem.get('peak_used_memory', 0) / MIB:.1f} MiB"
        )
        if "queued" in mem:
            per_job = (mem["queued"]["used_memory"] - base["used_memory"]) / args.n
            lines.append(f"               with the {args.n} jobs queued: {per_job:+.0f} B/job")
        if "used_memory_dataset" in base:
            lines.append(
                f"               dataset {base['used_memory_dataset']} -> "
                f"{after['used_memory_dataset']} B, clients {base.get('mem_clients_normal')} -> "
                f"{after.get('mem_clients_normal')} B, scripts "
                f"{base.get('used_memory_scripts')} -> {after.get('used_memory_scripts')} B, "
                f"slowlog entries {base.get('slowlog_len')} -> {after.get('slowlog_len')}"
            )
    lines.append("")
    for item in check.items:
        lines.append(f"  [{'ok' if item['ok'] else 'FAIL'}] {item['check']}: {item['detail']}")
    lines.append("")
    lines.append("PASS" if check.passed else "FAIL")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="jobs (100000)")
    parser.add_argument("--procs", type=int, default=4, help="worker processes (4)")
    parser.add_argument("--concurrency", type=int, default=10, help="concurrent_jobs (10)")
    parser.add_argument("--purge-timeout", type=float, default=2.0, help="seconds (2)")
    parser.add_argument("--namespace", default="kickq")
    parser.add_argument(
        "--mem-tolerance",
        type=int,
        default=256 * 1024,
        help="bytes used_memory may differ from its baseline (256 KiB)",
    )
    parser.add_argument("--timeout", type=float, default=900, help="for create and drain (s)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--no-snapshot", action="store_true", help="import kickq/ as it is")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return 0
    if RUNS.startswith(f"{args.namespace}:"):
        parser.error(f"--namespace {args.namespace!r} would hold {RUNS} and {PROCS}")

    if args.no_snapshot:
        sys.path.insert(0, str(ROOT))
        previous = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + previous if previous else "")
    kickq_info = snapshot_kickq(not args.no_snapshot)
    check = Check()
    out: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "n": args.n,
            "procs": args.procs,
            "concurrency": args.concurrency,
            "purge_timeout": args.purge_timeout,
            "namespace": args.namespace,
            "mem_tolerance": args.mem_tolerance,
        },
        "kickq": kickq_info,
        "figures": {},
    }
    began = time.perf_counter()
    with RedisServer() as server:
        out["machine"] = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "redis_server": server.binary,
            "redis_version": server.version,
        }
        log(f"redis-server {server.version} at {server.url}")
        try:
            run(args, server, out, check)
        except Exception as exc:
            check("ran to the end", False, f"{type(exc).__name__}: {exc}")
    out["seconds"] = round(time.perf_counter() - began, 1)
    out["checks"] = check.items
    out["passed"] = check.passed
    print(report(args, out, check))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"JSON written to {args.json}")
    return 0 if check.passed else 1


if __name__ == "__main__":
    sys.exit(main())
