"""The `kickq` command (also `python -m kickq`): a small function per command, and main().

Every command is one function registered with `@command(name, help, arg(...), ...)` (see
`_cli_parser`, which builds the parser; `_cli_output` prints; `_cli_worker` runs workers; the
inspect and repair commands live in `_cli_inspect` and `_cli_repair`). A command that talks to
Redis calls `_connect(args)` first (its `--redis-url` and `--namespace`, else KICKQ_REDIS_URL,
else the embedded Redis; see `_cli_redis`), waits on each future with `_wait()`, prints a
table (`_cli_output`) or, with `--json`, JSON with the API's field names, and raises `Failure`
when it cannot do what was asked. `main()` turns every failure into one line on stderr: exit
status 2 for bad usage (argparse's errors, a bad option value), 1 for a failure (an unreachable
Redis, an unknown id, ...), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

import kickq
from kickq._redis import embedded
from kickq.cli import dashboard as dashboard_cli
from kickq.cli import inspect as inspect_cli
from kickq.cli import logs, reload, runwatch, supervisor
from kickq.cli import output as out
from kickq.cli import parser as cli_parser
from kickq.cli import repair as repair_cli
from kickq.cli import verbs as verbs_cli
from kickq.cli import worker as worker_cli
from kickq.cli.parser import EXIT_FAILURE, EXIT_USAGE, PROG, Failure, arg, command
from kickq.cli.reach import connect as _connect
from kickq.cli.reach import job_id
from kickq.cli.reach import wait as _wait

EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE's number (signal.SIGPIPE: not on Windows)
# imported for the commands they register
COMMAND_MODULES = (inspect_cli, repair_cli, verbs_cli, dashboard_cli)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status. Output piped into a reader that stops
    early (`kickq jobs --json | head`) ends the command quietly with status 141 (128 +
    SIGPIPE, as a shell reports a process that signal ended), as Python's documentation on
    SIGPIPE recommends: no error line, no traceback at exit."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # whatever stdout still buffers would fail again at exit: send it nowhere
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    args = cli_parser.parse(kickq.__version__, argv)
    prog = f"{PROG} {args.command}"
    out.quiet_library_logs()
    try:
        return args.run(args)  # type: ignore[no-any-return]
    except BrokenPipeError:
        raise  # see main()
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


_WORKER_NOTES = (
    """On SIGINT or SIGTERM it stops fetching, lets running jobs finish for up to --grace
    seconds and hands back those still running (queued again at once). --burst stops on its own
    once no job of its names is queued, due now, or processing in any process (a job delayed
    until later is not waited for).""",
    f"""--processes N: a supervisor runs N worker processes (`kickq worker` with the same
    options), starts again one that dies (at once if it ran {supervisor.STABLE:g}s, else after
    {supervisor.BACKOFF_FIRST:g}s, doubling up to {supervisor.BACKOFF_MAX:g}s), kills (SIGKILL)
    and replaces one with a run --stuck-margin seconds past its process_timeout (that job is a
    ghost: it runs again as ghost_retry says), and passes SIGINT/SIGTERM on to them. --reload:
    one worker process, started again when a .py file under the current directory changes
    (checked every second); for development.""",
    """exit status: 0 stopped by a signal, every running job finished or handed back (with
    --burst: also once the work is done); 1 Redis unreachable at start, or a run Redis did not
    take back (it becomes a ghost); 2 bad usage; 128+N on a second signal N (130, 143).""",
)
WORKER_EPILOG = "\n\n".join(
    textwrap.fill(" ".join(note.split()), 79, break_on_hyphens=False) for note in _WORKER_NOTES
)

# -- commands --------------------------------------------------------------------------------


@command(
    "worker",
    "run the processors a module registers with @kickq.processor",
    arg("module", metavar="MODULE", help="dotted module name, imported from the current directory"),
    arg(
        "--names",
        type=cli_parser.names,
        metavar="A,B",
        help="only the processors of these job names",
    ),
    arg(
        "--concurrency",
        type=cli_parser.concurrency,
        metavar="N",
        help="concurrent_jobs of every worker",
    ),
    arg(
        "--grace",
        type=cli_parser.seconds,
        default=30.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, how long running jobs may take to finish (default: 30)",
    ),
    arg(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log from this level on (default: INFO, a line per finished job; where the app "
        "configured logging, its levels unless this is given)",
    ),
    arg(
        "--log-format",
        choices=logs.FORMATS,
        default="text",
        help="how kickq logs to stderr when the app configures no logging: text (default) or "
        "json (one object per line)",
    ),
    arg(
        "--no-log-config",
        action="store_true",
        help="configure no logging at all (the app, or Python's defaults, decide)",
    ),
    arg(
        "--metrics-port",
        type=cli_parser.port,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (needs kickq[metrics])",
    ),
    arg(
        "--metrics-host",
        metavar="HOST",
        help="the address --metrics-port listens on (default: 127.0.0.1; 0.0.0.0: every one)",
    ),
    arg(
        "--burst",
        action="store_true",
        help="exit 0 once no job of its names is queued, due or processing (jobs delayed until "
        "later are not waited for)",
    ),
    arg(
        "--processes",
        type=cli_parser.processes,
        metavar="N",
        help="run N worker processes under a supervisor that restarts one that dies or is "
        "stuck past its process_timeout",
    ),
    arg(
        "--stuck-margin",
        type=cli_parser.seconds,
        metavar="SECONDS",
        help=f"with --processes or --reload, kill (and replace) a worker process whose run is "
        f"still going this long past its process_timeout (default: {supervisor.STUCK_MARGIN:g})",
    ),
    arg(
        "--reload",
        action="store_true",
        help="for development: restart the worker when a .py file under the current directory "
        "changes",
    ),
    prints=False,
    epilog=WORKER_EPILOG,
)
def _worker(args: argparse.Namespace) -> int:
    if args.processes is not None or args.reload:
        return _supervise(args)
    if args.stuck_margin is not None:
        raise Failure("--stuck-margin goes with --processes or --reload", EXIT_USAGE)
    try:
        with logs.around_import(args.log_level, args.log_format, not args.no_log_config):
            found = worker_cli.import_processors(args.module)
    except worker_cli.ImportFailed as exc:
        raise Failure(str(exc), EXIT_USAGE if exc.usage else EXIT_FAILURE) from None
    if not found:
        raise Failure(f"{args.module} registers no processors (see @kickq.processor)", EXIT_USAGE)
    worker_cli.serve_metrics(args.metrics_host, args.metrics_port)
    _connect(args)
    worker_cli.check_reachable()
    supervised = runwatch.Supervised.take()
    if supervised.cell:  # a child of `--processes`/`--reload`: tell the supervisor of its runs
        runwatch.install(supervised.cell, [processor.handler for processor in found])
    signals = worker_cli.Signals(worker_cli.SUPERVISED_ECHO if supervised.cell else 0.0)
    signals.install()
    workers = kickq.start(args.names, concurrent_jobs=args.concurrency)
    return worker_cli.serve(workers, signals, args.grace, args.burst, supervised.orphaned)


def _supervise(args: argparse.Namespace) -> int:
    """`kickq worker --processes N` or `--reload`: children run the workers (supervisor.py)."""
    if args.reload and args.processes is not None:
        raise Failure(
            "--reload runs one worker process: it does not go with --processes", EXIT_USAGE
        )
    if args.reload and args.burst:
        raise Failure(
            "--reload restarts the worker on changes: it does not go with --burst", EXIT_USAGE
        )
    if args.processes is not None and args.metrics_port is not None:
        raise Failure(
            "--metrics-port does not go with --processes (one port per process)", EXIT_USAGE
        )
    if not args.no_log_config:
        logs.configure(args.log_level, args.log_format)
    _connect(args)
    worker_cli.check_reachable()
    env = dict(os.environ)
    if args.redis_url is not None:  # not on the children's command lines: it may hold a password
        env["KICKQ_REDIS_URL"] = args.redis_url
    if args.namespace is not None:
        env[cli_parser.ENV_NAMESPACE] = args.namespace
    command = [sys.executable, "-m", "kickq", "worker", *supervisor.worker_options(args)]
    margin = supervisor.STUCK_MARGIN if args.stuck_margin is None else args.stuck_margin
    watcher = reload.Watcher(os.getcwd()) if args.reload else None
    boss = supervisor.Supervisor(
        command,
        args.processes or 1,
        env=env,
        grace=args.grace,
        burst=args.burst,
        margin=margin,
        watcher=watcher,
    )
    boss.install()
    return boss.run()


@command(
    "show", "print one job", arg("id", metavar="ID", help="the job's id (or its first digits)")
)
def _show(args: argparse.Namespace) -> int:
    _connect(args)
    job = _wait(kickq.get(job_id(args.id)))
    if args.json:
        out.print_json(out.job_fields(job))
    else:
        out.print_job(job)
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
