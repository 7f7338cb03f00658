"""`python -m kickq`: the `kickq` command (see kickq.cli.commands)."""

from __future__ import annotations

import sys

from kickq.cli.commands import main

if __name__ == "__main__":
    sys.exit(main())
