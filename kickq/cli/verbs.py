"""The commands that act on single jobs, schedules and limits: `kickq create`, `cancel`,
`promote`, `purge`, `unschedule` and `limit`, each one call of the public API.

`create` prints the new job's id alone (so that `ID=$(kickq create ...)` works); data that is
not JSON is bad usage (exit 2) and stores nothing. `purge` deletes finished jobs only (success
and fail): `kickq delete --name --state` deletes jobs in any state. `limit NAME` shows a name's
limits, `limit NAME --rate N/SECONDS --concurrency N` sets them as `kickq.limit()` does (the
limits given replace the name's: one left out is removed), `--remove` removes both.
"""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any

import kickq
from kickq._model.config import MAX_DURATION
from kickq._verbs.limits import Limits
from kickq.cli import output as out
from kickq.cli import parser as cli_parser
from kickq.cli.parser import EXIT_USAGE, Failure, arg, command
from kickq.cli.reach import connect, job_id, repaired, wait

FINISHED = ("success", "fail")


def _usage(args: argparse.Namespace, message: str) -> Failure:
    return Failure(f"{message} (see kickq {args.command} --help)", EXIT_USAGE)


def json_value(text: str) -> Any:
    """The type of an argument holding JSON."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text!r}") from None


def moment(text: str) -> datetime.datetime:
    """An ISO-8601 time; one without a UTC offset is read as UTC."""
    try:
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO-8601 time like 2030-01-31T09:00:00+00:00, not {text!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=datetime.timezone.utc)


def rate(text: str) -> tuple[int, float]:
    """A rate as RUNS/SECONDS: "100/60" is at most 100 runs starting in any 60 seconds."""
    runs, _, seconds = text.partition("/")
    try:
        value = (int(runs), float(seconds))
    except ValueError:
        value = (0, 0.0)
    if value[0] < 1 or not 0 < value[1] <= MAX_DURATION:
        raise argparse.ArgumentTypeError(
            f"expected RUNS/SECONDS, like 100/60 (at most 100 runs start in any 60 s), not {text!r}"
        )
    return value


priority = cli_parser.whole(0, 9)
count = cli_parser.whole(0, 1_000_000)


@command(
    "create",
    "create a job and print its id",
    arg("name", metavar="NAME", help="the job name"),
    arg(
        "data",
        nargs="?",
        type=json_value,
        default=None,
        metavar="DATA",
        help='the job\'s data as JSON, e.g. \'{"to": "a@b.c"}\' (default: null)',
    ),
    arg("--delay", type=cli_parser.seconds, metavar="SECONDS", help="queue it this much later"),
    arg("--at", type=moment, metavar="WHEN", help="queue it at this ISO-8601 time (UTC if bare)"),
    arg("--priority", type=priority, metavar="P", help="0 (last) to 9 (first); default 5"),
    arg("--retry", action="store_true", default=None, help="run it again when it fails"),
    arg("--retry-count", type=count, metavar="N", help="with --retry: at most N more runs"),
    arg(
        "--retry-interval",
        type=cli_parser.seconds,
        metavar="SECONDS",
        help="with --retry: seconds between a failure and the next run",
    ),
    arg(
        "--process-timeout",
        type=cli_parser.seconds,
        metavar="SECONDS",
        help="how long a run may take before it is a ghost",
    ),
    arg("--unique", action="store_true", default=None, help="no second job with equal data"),
    arg("--unique-key", metavar="KEY", help="with --unique: the key that must be unique"),
    arg("--meta", type=json_value, metavar="JSON", help="the job's meta, a JSON object"),
)
def _create(args: argparse.Namespace) -> int:
    options = {
        name: getattr(args, name)
        for name in (
            *("delay", "at", "priority", "retry", "retry_count", "retry_interval"),
            *("process_timeout", "unique", "unique_key", "meta"),
        )
        if getattr(args, name) is not None
    }
    connect(args)
    try:
        job = wait(kickq.create(args.name, args.data, **options))
    except (kickq.ConfigError, kickq.SerializationError, TypeError, ValueError) as exc:
        raise _usage(args, str(exc)) from None
    if args.json:
        out.print_json(out.job_fields(job))
    else:
        out.say(job.id)
    return 0


@command(
    "cancel",
    "cancel a job that is not complete: it ends failed, 'cancelled' (a running one is stopped)",
    arg("id", metavar="ID", help="the job's id (or its first digits)"),
)
def _cancel(args: argparse.Namespace) -> int:
    connect(args)
    found = job_id(args.id)
    cancelled = wait(kickq.cancel(found))
    if args.json:
        out.print_json({"id": found, "cancelled": cancelled})
    elif cancelled:
        out.say(f"cancelled {found}")
    else:
        out.say(f"{found} was complete already: left as it was")
    return 0


@command(
    "promote",
    "queue now a delayed job, or one waiting to retry or run again",
    arg("id", metavar="ID", help="the job's id (or its first digits)"),
)
def _promote(args: argparse.Namespace) -> int:
    connect(args)
    found = job_id(args.id)
    job = repaired(kickq.promote(found))
    if args.json:
        out.print_json(out.job_fields(job))
    else:
        out.say(f"promoted {job.id} ({job.name}): queued")
    return 0


@command(
    "purge",
    "delete the finished jobs (success, fail) of some names",
    arg("--name", type=cli_parser.names, required=True, metavar="A,B", help="these names' jobs"),
    arg(
        "--state",
        type=cli_parser.states,
        default=list(FINISHED),
        metavar="S,T",
        help="success, fail or both (default: both); kickq delete --name --state deletes "
        "jobs in other states",
    ),
)
def _purge(args: argparse.Namespace) -> int:
    unfinished = [state for state in args.state if state not in FINISHED]
    if unfinished:
        raise _usage(
            args,
            f"purge deletes finished jobs (success, fail), not {unfinished[0]!r} ones: "
            f"kickq delete --name {','.join(args.name)} --state {unfinished[0]} does",
        )
    connect(args)
    deleted = wait(kickq.jobs(name=args.name, state=args.state).delete())
    if args.json:
        out.print_json({"name": args.name, "state": args.state, "deleted": deleted})
    else:
        out.say(
            f"deleted {out.plural(deleted, 'job')} of {', '.join(args.name)} "
            f"({', '.join(args.state)})"
        )
    return 0


@command(
    "unschedule",
    "remove a repeatable job's schedule (its jobs already created stay)",
    arg("key", metavar="KEY", help="the schedule's key (see kickq schedules)"),
)
def _unschedule(args: argparse.Namespace) -> int:
    connect(args)
    removed = wait(kickq.unschedule(args.key))
    if not removed:
        raise Failure(f"no schedule with key {args.key!r}")
    if args.json:
        out.print_json({"key": args.key, "removed": True})
    else:
        out.say(f"unscheduled {args.key}")
    return 0


def limits_fields(name: str, limits: Limits) -> dict[str, Any]:
    return {
        "name": name,
        "rate": list(limits.rate) if limits.rate is not None else None,
        "concurrency": limits.concurrency,
    }


@command(
    "limit",
    "show a job name's limits, or set them across every process (as kickq.limit())",
    arg("name", metavar="NAME", help="the job name"),
    arg("--rate", type=rate, metavar="RUNS/SECONDS", help="at most RUNS start in any SECONDS"),
    arg("--concurrency", type=cli_parser.concurrency, metavar="N", help="at most N at once"),
    arg("--remove", action="store_true", help="remove the name's limits"),
)
def _limit(args: argparse.Namespace) -> int:
    setting = args.rate is not None or args.concurrency is not None
    if args.remove and setting:
        raise _usage(args, "--remove takes no --rate or --concurrency")
    connect(args)
    if setting or args.remove:
        limits = wait(kickq.limit(args.name, rate=args.rate, concurrency=args.concurrency))
        said = "removed the limits of" if args.remove else "limited"
    else:
        stats = wait(kickq.stats())
        limits = stats[args.name].limits if args.name in stats else Limits()
        said = ""
    if args.json:
        out.print_json(limits_fields(args.name, limits))
    elif said and limits.any:
        out.say(f"{said} {args.name}: {limits}")
    elif said:
        out.say(f"{said} {args.name}")
    else:
        out.say(f"{args.name}: {limits}")
    return 0
