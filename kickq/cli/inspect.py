"""The commands that look: `kickq stats [--watch]`, `workers`, `jobs`, `schedules`.

Each reads through the public API and prints a view of `_cli_views` or, with `--json`, what the
API returned with its own field names (`_cli_output.plain`). `stats --watch` reads again every
`--interval` seconds until Ctrl-C, which ends it with status 0: stopping is how a watch ends.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from rich.console import RenderableType
from rich.live import Live

import kickq
from kickq._model import clock
from kickq._redis.keys import SEEN_STATES
from kickq.cli import output as out
from kickq.cli import parser as cli_parser
from kickq.cli import views
from kickq.cli.parser import arg, command
from kickq.cli.reach import connect, wait


@command(
    "stats",
    "counts by state, paused, oldest queued age, throughput and run times of every job name",
    arg("--watch", action="store_true", help="read again every --interval seconds until Ctrl-C"),
    arg(
        "--interval",
        type=cli_parser.interval,
        default=2.0,
        metavar="SECONDS",
        help="with --watch, seconds between two reads (default: 2)",
    ),
)
def _stats(args: argparse.Namespace) -> int:
    connect(args)

    def read() -> dict[str, kickq.NameStats]:
        return wait(kickq.stats())

    if args.watch:
        return watch(read, views.stats_view, args.interval, args.json)
    found = read()
    if args.json:
        out.print_json(out.plain(found))
    else:
        out.show(views.stats_view(found))
    return 0


def watch(
    read: Callable[[], Any],
    view: Callable[[Any], RenderableType],
    interval: float,
    as_json: bool,
) -> int:
    """Show `read()` every `interval` seconds until Ctrl-C. On a terminal the view is redrawn in
    place; piped, each reading follows the last (with --json, one JSON line per reading), so a
    log or a script sees every one."""
    console = out.console()
    try:
        if as_json or not console.is_terminal:
            while True:
                found = read()
                if as_json:
                    out.print_json(out.plain(found), indent=None)
                else:
                    out.say(f"-- {out.human_time(clock.now())}")
                    out.show(view(found))
                time.sleep(interval)
        with Live(view(read()), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(view(read()), refresh=True)
    except KeyboardInterrupt:
        return 0


@command("workers", "the live workers of every process sharing the Redis and namespace")
def _workers(args: argparse.Namespace) -> int:
    connect(args)
    found = wait(kickq.workers())
    if args.json:
        out.print_json(out.plain(found))
    else:
        out.show(views.workers_view(found, clock.now()))
    return 0


@command(
    "jobs",
    "list jobs by name and state, most recently updated first",
    arg("--name", type=cli_parser.names, metavar="A,B", help="only jobs of these names"),
    arg(
        "--state",
        type=cli_parser.states,
        metavar="S,T",
        help=f"only jobs in these states ({', '.join(SEEN_STATES)})",
    ),
    arg(
        "--limit",
        type=cli_parser.page_size,
        default=50,
        metavar="K",
        help="at most this many jobs (default: 50)",
    ),
    arg(
        "--offset",
        type=cli_parser.offset,
        default=0,
        metavar="O",
        help="skip this many first (default: 0)",
    ),
)
def _jobs(args: argparse.Namespace) -> int:
    connect(args)
    query = kickq.jobs(name=args.name, state=args.state)
    page = wait(query.list(limit=args.limit, offset=args.offset))
    if args.json:
        out.print_json([out.job_fields(job) for job in page])
    else:
        total = wait(query.count())
        out.show(views.jobs_view(page, args.offset, total, out.fitted_width()))
    return 0


@command("schedules", "the repeatable jobs, the next to tick first")
def _schedules(args: argparse.Namespace) -> int:
    connect(args)
    found = wait(kickq.schedules())
    if args.json:
        out.print_json(out.plain(found))
    else:
        out.show(views.schedules_view(found))
    return 0
