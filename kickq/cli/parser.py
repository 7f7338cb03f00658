"""The `kickq` command's parsing: the command registry, the common options, argument types.

A command registers itself with `@command(name, help, arg(...), ...)` (see `kickq.cli`);
`parser()` builds argparse's parser from the registry, giving each command `--redis-url` and
`--namespace` (unless it `connects=False`) and `--json` (unless it `prints=False`). A usage error
is one line on stderr and exit status 2, as every failure of the command is one line.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import attrs

from kickq._model.config import MAX_CONCURRENT_JOBS, MAX_DURATION
from kickq._model.errors import ConfigError
from kickq._model.job import State
from kickq._redis.connection import check_redis_url
from kickq._verbs.query import MAX_LIMIT, MAX_OFFSET
from kickq.cli import output as out

PROG = "kickq"
EXIT_FAILURE = 1
EXIT_USAGE = 2
ENV_NAMESPACE = "KICKQ_NAMESPACE"  # the default of --namespace
MAX_PROCESSES = 1024  # `kickq worker --processes`
Run = Callable[[argparse.Namespace], int]


class Failure(Exception):
    """The command could not do what was asked: one line on stderr, exit `status`."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2), as every failure is; and
    no option may be abbreviated: `--name` must never be read as `--namespace`."""

    def __init__(self, *args: Any, **options: Any) -> None:
        options["allow_abbrev"] = False
        super().__init__(*args, **options)

    def error(self, message: str) -> NoReturn:
        out.error_line(self.prog, f"{message} (see {self.prog} --help)")
        sys.exit(EXIT_USAGE)


@attrs.frozen
class Arg:
    flags: tuple[str, ...]
    options: dict[str, Any]


def arg(*flags: str, **options: Any) -> Arg:
    """One argument of a command, as `ArgumentParser.add_argument` takes it."""
    return Arg(flags, options)


@attrs.frozen
class Command:
    name: str
    help: str
    run: Run
    args: tuple[Arg, ...]
    connects: bool  # takes --redis-url and --namespace
    prints: bool  # takes --json
    epilog: str | None = None  # shown after the options by `kickq COMMAND --help`, as written


COMMANDS: list[Command] = []
# the order of `kickq --help`, the contract's; a command not named here comes after these
HELP_ORDER = (
    *("worker", "stats", "workers", "jobs", "show", "requeue", "delete", "pause", "resume"),
    *("schedules", "embedded", "dashboard"),
    *("create", "cancel", "promote", "purge", "unschedule", "limit"),
)


def _help_rank(cmd: Command) -> int:
    return HELP_ORDER.index(cmd.name) if cmd.name in HELP_ORDER else len(HELP_ORDER)


def command(
    name: str,
    help: str,
    *args: Arg,
    connects: bool = True,
    prints: bool = True,
    epilog: str | None = None,
) -> Callable[[Run], Run]:
    """Register a command: its function gets the parsed arguments and returns the exit status."""

    def register(run: Run) -> Run:
        COMMANDS.append(Command(name, help, run, args, connects, prints, epilog))
        return run

    return register


def _connection_options() -> _Parser:
    options = _Parser(add_help=False)
    options.add_argument(
        "--redis-url",
        type=redis_url,
        metavar="URL",
        help="redis://, rediss://, unix:// or redis+sentinel:// URL (default: "
        "$KICKQ_REDIS_URL, else the embedded Redis)",
    )
    options.add_argument(
        "--namespace",
        default=os.environ.get(ENV_NAMESPACE) or None,
        help=f"the redis_namespace to use (default: ${ENV_NAMESPACE}, else kickq)",
    )
    return options


def _output_options() -> _Parser:
    options = _Parser(add_help=False)
    options.add_argument("--json", action="store_true", help="print JSON, for scripts")
    return options


def parse(version: str, argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line parsed, or a usage error (exit 2) that names, for a misspelt command or
    option, the one meant: `kickq stat` says "did you mean 'stats'?"."""
    words = list(sys.argv[1:] if argv is None else argv)
    root = parser(version)
    subparsers = getattr(root, "commands", {})
    if words and not words[0].startswith("-") and words[0] not in subparsers:
        root.error(f"unknown command {words[0]!r}{_did_you_mean(words[0], list(subparsers))}")
    args, extra = root.parse_known_args(words)
    if extra:
        sub = subparsers[args.command]
        for word in extra:
            if word.startswith("-"):
                option = word.split("=", 1)[0]
                hint = _did_you_mean(option, list(sub._option_string_actions))
                if hint:
                    sub.error(f"unknown option {option!r}{hint}")
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _did_you_mean(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def parser(version: str) -> argparse.ArgumentParser:
    """The parser of every registered command (its `commands` attribute: theirs, by name)."""
    root = _Parser(prog=PROG, description="kickq: a Redis job queue that lives in your process.")
    root.add_argument("--version", action="version", version=f"kickq {version}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    connection, output = _connection_options(), _output_options()
    subparsers: dict[str, argparse.ArgumentParser] = {}
    for cmd in sorted(COMMANDS, key=_help_rank):
        parents = [p for p, on in ((connection, cmd.connects), (output, cmd.prints)) if on]
        sub = commands.add_parser(
            cmd.name,
            help=cmd.help,
            description=cmd.help,
            parents=parents,
            epilog=cmd.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for argument in cmd.args:
            sub.add_argument(*argument.flags, **argument.options)
        sub.set_defaults(run=cmd.run)
        subparsers[cmd.name] = sub
    root.commands = subparsers  # type: ignore[attr-defined]
    return root


# argument types: a bad value is a usage error, reported by argparse in one line


def names(text: str) -> list[str]:
    found = [name.strip() for name in text.split(",") if name.strip()]
    if not found:
        raise argparse.ArgumentTypeError(f"expected job names separated by commas, not {text!r}")
    return found


def whole(low: int, high: int) -> Callable[[str], int]:
    """The type of an option taking a whole number from `low` to `high`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # not a number, or too many digits for int() to read
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {low} to {high}, not {text!r}"
            )
        return value

    return parse


concurrency = whole(1, MAX_CONCURRENT_JOBS)
processes = whole(1, MAX_PROCESSES)
page_size = whole(1, MAX_LIMIT)
offset = whole(0, MAX_OFFSET)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_DURATION:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds from 0 to {MAX_DURATION:.0e}, not {text!r}".replace(
                "e+", "e"
            )
        )
    return value


def redis_url(text: str) -> str:
    """A Redis URL whose every part kickq can use (see kickq._redis.connection.check_redis_url)."""
    try:
        return check_redis_url("the URL", text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def states(text: str) -> list[str]:
    """Job states separated by commas, each one of kickq.State's values."""
    known = [state.value for state in State]
    found = names(text)
    unknown = [state for state in found if state not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown state {unknown[0]!r}; states are {', '.join(known)}"
        )
    return found


def interval(text: str) -> float:
    """Seconds between two refreshes: a tenth of a second at least, so a watch stays light."""
    value = seconds(text)
    if value < 0.1:
        raise argparse.ArgumentTypeError(f"expected at least 0.1 seconds, not {text!r}")
    return value


def port(text: str) -> int:
    """A TCP port to listen on; 0 lets the system pick a free one."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, not {text!r}")
    return value
