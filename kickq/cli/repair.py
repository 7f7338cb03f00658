"""The commands that change jobs: `kickq requeue`, `delete`, `pause`, `resume`.

`requeue` and `delete` act on one job (its ID) or, with `--name`, on the jobs of some names: as
`kickq.requeue(id)` / `kickq.jobs(name=..., state="fail").requeue()` and `kickq.delete(id)` /
`kickq.jobs(name=..., state=...).delete()` do. Deleting by name needs `--state` too, so that no
typing slip deletes every job of a name. Requeueing a job that has not failed for good is a
failure (exit 1), as is an unknown id.
"""

from __future__ import annotations

import argparse
import difflib

import kickq
from kickq._redis.keys import SEEN_STATES
from kickq._verbs.query import names
from kickq.cli import output as out
from kickq.cli import parser as cli_parser
from kickq.cli.parser import EXIT_USAGE, Failure, arg, command
from kickq.cli.reach import connect, job_id, repaired, wait


def _usage(args: argparse.Namespace, message: str) -> Failure:
    return Failure(f"{message} (see kickq {args.command} --help)", EXIT_USAGE)


def _id_or_names(args: argparse.Namespace) -> None:
    """Exactly one of ID and --name: a usage error otherwise."""
    if args.id is not None and args.name is not None:
        raise _usage(args, "give a job's ID or --name, not both")
    if args.id is None and args.name is None:
        raise _usage(args, "give a job's ID or --name")


NAME_OPTION = arg("--name", type=cli_parser.names, metavar="A,B", help="the jobs of these names")


@command(
    "requeue",
    "queue again a job that failed for good, or every such job of some names",
    arg("id", nargs="?", metavar="ID", help="the job's id (or its first digits)"),
    NAME_OPTION,
)
def _requeue(args: argparse.Namespace) -> int:
    _id_or_names(args)
    connect(args)
    if args.name is not None:
        count = wait(kickq.jobs(name=args.name, state="fail").requeue())
        if args.json:
            out.print_json({"name": args.name, "requeued": count})
        else:
            out.say(
                f"requeued {out.plural(count, 'job')} of {', '.join(args.name)} "
                "that had failed for good"
            )
        return 0
    job = repaired(kickq.requeue(job_id(args.id)))
    if args.json:
        out.print_json(out.job_fields(job))
    else:
        out.say(f"requeued {job.id} ({job.name})")
    return 0


@command(
    "delete",
    "delete one job, or the jobs of some names in some states",
    arg("id", nargs="?", metavar="ID", help="the job's id (or its first digits)"),
    NAME_OPTION,
    arg(
        "--state",
        type=cli_parser.states,
        metavar="S,T",
        help=f"with --name: the jobs in these states ({', '.join(SEEN_STATES)})",
    ),
)
def _delete(args: argparse.Namespace) -> int:
    _id_or_names(args)
    if args.id is not None and args.state is not None:
        raise _usage(args, "--state goes with --name, not with an ID")
    if args.name is not None and args.state is None:
        raise _usage(args, "--name needs --state: say which jobs to delete")
    connect(args)
    if args.name is not None:
        count = wait(kickq.jobs(name=args.name, state=args.state).delete())
        if args.json:
            out.print_json({"name": args.name, "state": args.state, "deleted": count})
        else:
            out.say(
                f"deleted {out.plural(count, 'job')} of {', '.join(args.name)} "
                f"({', '.join(args.state)})"
            )
        return 0
    found = job_id(args.id)
    if not wait(kickq.delete(found)):
        raise Failure(f"no job with id {found!r}")
    if args.json:
        out.print_json({"id": found, "deleted": True})
    else:
        out.say(f"deleted {found}")
    return 0


def _known(args: argparse.Namespace) -> None:
    """Refuse to pause a name that no job ever had, nor any schedule creates: a typo would
    otherwise be paused (and listed among the names) for good. --force pauses it anyway."""
    if args.force:
        return
    known = {*wait(names()), *(schedule.name for schedule in wait(kickq.schedules()))}
    if args.name in known:
        return
    close = difflib.get_close_matches(args.name, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise Failure(f"no job named {args.name!r}{hint} (--force pauses it all the same)")


def _switch(args: argparse.Namespace, paused: bool) -> int:
    connect(args)
    if paused:
        _known(args)
    verb = kickq.pause if paused else kickq.resume
    changed = wait(verb(args.name))
    if args.json:
        out.print_json({"name": args.name, "paused": paused, "changed": changed})
    elif paused:
        out.say(f"paused {args.name}" if changed else f"{args.name} was paused already")
    else:
        out.say(f"resumed {args.name}" if changed else f"{args.name} was not paused")
    return 0


@command(
    "pause",
    "start no new run of a job name in any process (running jobs finish)",
    arg("name", metavar="NAME", help="the job name"),
    arg("--force", action="store_true", help="pause it even if no job ever had that name"),
)
def _pause(args: argparse.Namespace) -> int:
    return _switch(args, paused=True)


@command(
    "resume",
    "let runs of a paused job name start again",
    arg("name", metavar="NAME", help="the job name"),
)
def _resume(args: argparse.Namespace) -> int:
    return _switch(args, paused=False)
