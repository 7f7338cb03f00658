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
    prints=False,
)
def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM, then exit 0; a port in use is a failure (exit 1)."""
    try:
        from kickq import dashboard
    except ImportError as exc:
        raise Failure(str(exc)) from None
    worker_cli.configure_logging("INFO")  # the line saying where it listens, uvicorn's own
    dashboard.serve(
        args.host,
        args.port,
        args.allow_actions,
        redis_url=args.redis_url,
        namespace=args.namespace,
    )
    return 0
