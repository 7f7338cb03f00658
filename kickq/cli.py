"""The `kickq` command (also `python -m kickq`): argument parsing, the public API, printing.

Every command is one small function registered with `@command(name, help, arg(...), ...)`. A
command that talks to Redis calls `_connect(args)` first (its `--redis-url` and `--namespace`,
else KICKQ_REDIS_URL, else the embedded Redis), waits on each future with `_wait()`, prints a
table (`_cli_output`) or, with `--json`, JSON with the API's field names, and raises `Failure`
when it cannot do what was asked. `main()` turns every failure into one line on stderr: exit
status 2 for bad usage (argparse's errors, a bad option value), 1 for a failure (an unreachable
Redis, an unknown id, ...), never a traceback.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import attrs

import kickq

from . import _cli_output as out
from . import _cli_worker as worker_cli
from . import _embedded as embedded

PROG = "kickq"
EXIT_FAILURE = 1
EXIT_USAGE = 2
WAIT = 30.0  # seconds a command waits for Redis before it gives up
T = TypeVar("T")


class Failure(Exception):
    """The command could not do what was asked: one line on stderr, exit `status`."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2), as every failure is."""

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
    run: Callable[[argparse.Namespace], int]
    args: tuple[Arg, ...]
    connects: bool  # takes --redis-url and --namespace
    prints: bool  # takes --json


COMMANDS: list[Command] = []


def command(
    name: str, help: str, *args: Arg, connects: bool = True, prints: bool = True
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register a command: its function gets the parsed arguments and returns the exit status."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS.append(Command(name, help, run, args, connects, prints))
        return run

    return register


def _connection_options() -> _Parser:
    options = _Parser(add_help=False)
    options.add_argument(
        "--redis-url",
        metavar="URL",
        help="redis://, rediss:// or unix:// URL (default: $KICKQ_REDIS_URL, else the "
        "embedded Redis)",
    )
    options.add_argument("--namespace", help="the redis_namespace to use (default: kickq)")
    return options


def _output_options() -> _Parser:
    options = _Parser(add_help=False)
    options.add_argument("--json", action="store_true", help="print JSON, for scripts")
    return options


def parser() -> argparse.ArgumentParser:
    root = _Parser(prog=PROG, description="kickq: a Redis job queue that lives in your process.")
    root.add_argument("--version", action="version", version=f"kickq {kickq.__version__}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    connection, output = _connection_options(), _output_options()
    for cmd in COMMANDS:
        parents = [p for p, on in ((connection, cmd.connects), (output, cmd.prints)) if on]
        sub = commands.add_parser(cmd.name, help=cmd.help, description=cmd.help, parents=parents)
        for argument in cmd.args:
            sub.add_argument(*argument.flags, **argument.options)
        sub.set_defaults(run=cmd.run)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = parser().parse_args(argv)
    prog = f"{PROG} {args.command}"
    out.quiet_library_logs()
    try:
        return args.run(args)  # type: ignore[no-any-return]
    except Failure as exc:
        return _fail(prog, exc, exc.status)
    except kickq.ConfigError as exc:  # a bad --redis-url, --namespace or --names
        return _fail(prog, exc, EXIT_USAGE)
    except (kickq.KickqError, OSError) as exc:  # RedisUnavailable is a ConnectionError
        return _fail(prog, exc, EXIT_FAILURE)
    except KeyboardInterrupt:
        return 128 + 2
    except Exception as exc:  # one line, even for what nobody foresaw
        return _fail(prog, f"unexpected {type(exc).__name__}: {exc}", EXIT_FAILURE)
    finally:
        kickq.reset()  # stop the threads and close the connections a command opened


def _fail(prog: str, message: object, status: int) -> int:
    out.error_line(prog, message)
    return status


def _connect(args: argparse.Namespace) -> None:
    """Point kickq at the server and namespace the command line names, if it names them."""
    options = {"redis_url": args.redis_url, "redis_namespace": args.namespace}
    kickq.config({name: value for name, value in options.items() if value is not None})


def _wait(future: concurrent.futures.Future[T]) -> T:
    """The future's result, or a Failure when Redis gives no answer in WAIT seconds."""
    done, _ = concurrent.futures.wait([future], timeout=WAIT)
    if not done:
        raise Failure(f"no answer from Redis within {WAIT:g}s")
    return future.result()


# -- argument types --------------------------------------------------------------------------


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected job names separated by commas, not {text!r}")
    return names


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}")
    return value


# -- commands --------------------------------------------------------------------------------


@command(
    "worker",
    "run the processors a module registers with @kickq.processor",
    arg("module", metavar="MODULE", help="dotted module name, imported from the current directory"),
    arg("--names", type=_names, metavar="A,B", help="only the processors of these job names"),
    arg("--concurrency", type=_positive_int, metavar="N", help="concurrent_jobs of every worker"),
    arg(
        "--grace",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, how long running jobs may take to finish (default: 30)",
    ),
    arg(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log to stderr from this level on (default: INFO, a line per finished job)",
    ),
    prints=False,
)
def _worker(args: argparse.Namespace) -> int:
    worker_cli.configure_logging(args.log_level)
    try:
        found = worker_cli.import_processors(args.module)
    except worker_cli.ImportFailed as exc:
        raise Failure(str(exc), EXIT_USAGE if exc.usage else EXIT_FAILURE) from None
    if not found:
        raise Failure(f"{args.module} registers no processors (see @kickq.processor)", EXIT_USAGE)
    _connect(args)
    worker_cli.check_reachable()
    signals = worker_cli.Signals()
    signals.install()
    workers = kickq.start(args.names, concurrent_jobs=args.concurrency)
    return worker_cli.serve(workers, signals, args.grace)


@command("show", "print one job", arg("id", metavar="ID", help="the job's id"))
def _show(args: argparse.Namespace) -> int:
    _connect(args)
    job = _wait(kickq.get(args.id))
    if args.json:
        out.print_json(out.job_fields(job))
    else:
        out.print_job(job)
    return 0


@command("delete", "delete one job", arg("id", metavar="ID", help="the job's id"))
def _delete(args: argparse.Namespace) -> int:
    _connect(args)
    if not _wait(kickq.delete(args.id)):
        raise Failure(f"no job with id {args.id!r}")
    if args.json:
        out.print_json({"id": args.id, "deleted": True})
    else:
        print(f"deleted {args.id}")
    return 0


@command(
    "embedded",
    "manage this machine's embedded Redis (so it takes no --redis-url or --namespace)",
    arg(
        "action",
        choices=["status", "start", "stop", "path"],
        help="status: show it; start: start it if needed and print its URL; "
        "stop: shut it down (data stays on disk); path: print its data directory",
    ),
    connects=False,
)
def _embedded(args: argparse.Namespace) -> int:
    if args.action == "status":
        result: dict[str, Any] = embedded.status()
    elif args.action == "start":
        result = {"url": embedded.ensure_running()}
    elif args.action == "stop":
        result = {"stopped": embedded.stop()}
    else:
        result = {"path": str(embedded.data_dir())}
    if args.json:
        out.print_json(result)
    elif args.action == "status":
        for key, value in result.items():
            print(f"{key}: {'-' if value is None else value}")
    elif args.action == "stop":
        print("stopped" if result["stopped"] else "not running")
    else:
        print(*result.values())
    return 0
