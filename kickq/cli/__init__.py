"""The `kickq` command line (also `python -m kickq`): `main` is the console script's entry point.

commands.py holds main() and the small commands; the others group what several commands share
(parser, output, views, reach) or one family of commands (worker, inspect, repair, dashboard).
"""

from kickq.cli.commands import main

__all__ = ["main"]
