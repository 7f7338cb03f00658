"""`python -m kickq.dashboard [--host H] [--port P] [--allow-actions] [--redis-url U]
[--namespace N]`: the same as `kickq dashboard ...` (see kickq.cli)."""

from __future__ import annotations

import sys

from kickq.cli.commands import main

if __name__ == "__main__":
    sys.exit(main(["dashboard", *sys.argv[1:]]))
