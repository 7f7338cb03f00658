"""Command line: `python -m kickq embedded status|start|stop|path`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import _embedded as embedded
from ._errors import RedisUnavailable


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse exits with 2 on bad usage)."""
    parser = argparse.ArgumentParser(prog="python -m kickq", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    emb = commands.add_parser("embedded", help="manage the embedded Redis")
    emb.add_argument(
        "action",
        choices=["status", "start", "stop", "path"],
        help="status: show it; start: start it if needed and print its URL; "
        "stop: shut it down (data stays on disk); path: print its data directory",
    )
    args = parser.parse_args(argv)

    try:
        if args.action == "status":
            for key, value in embedded.status().items():
                print(f"{key}: {'-' if value is None else value}")
        elif args.action == "start":
            print(embedded.ensure_running())
        elif args.action == "stop":
            print("stopped" if embedded.stop() else "not running")
        else:
            print(embedded.data_dir())
    except (RedisUnavailable, TimeoutError) as exc:
        print(f"kickq: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
