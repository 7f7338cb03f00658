"""The `kickq dashboard` command: serve kickq.dashboard, the web page (the extra
kickq[dashboard]). Only this command imports it, so the rest of the command line, like kickq
itself, never imports Starlette; without the extra it fails with one line saying what to install.
"""

from __future__ import annotations

import argparse

from kickq.cli import worker as worker_cli
from kickq.cli.parser import Failure, arg, command, port


@command(
    "dashboard",
    "serve the web dashboard (needs the extra: pip install 'kickq[dashboard]')",
    arg("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)"),
    arg(
        "--port",
        type=port,
        default=8765,
        help="the port to listen on (default: 8765; 0: any free port)",
    ),
    arg(
        "--allow-actions",
        action="store_true",
        help="offer requeue, delete, pause and resume (default: read-only)",
    ),
    arg(
        "--metrics-port",
        type=port,
        metavar="PORT",
        help="also serve Prometheus metrics at http://HOST:PORT/metrics (needs kickq[metrics])",
    ),
    arg(
        "--metrics-host",
        metavar="HOST",
        help="the address --metrics-port listens on (default: 127.0.0.1; 0.0.0.0: every one)",
    ),
    prints=False,
)
def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM, then exit 0; a port in use is a failure (exit 1). With
    --metrics-port, Prometheus metrics alongside, as `kickq worker --metrics-port` serves them
    (the gauges of the whole namespace; the run counters stay empty: it runs no jobs)."""
    try:
        from kickq import dashboard
    except ImportError as exc:
        raise Failure(str(exc)) from None
    worker_cli.configure_logging("INFO")  # the line saying where it listens, uvicorn's own
    worker_cli.serve_metrics(args.metrics_host, args.metrics_port)  # as kickq worker does
    dashboard.serve(
        args.host,
        args.port,
        args.allow_actions,
        redis_url=args.redis_url,
        namespace=args.namespace,
    )
    return 0
