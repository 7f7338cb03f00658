"""One adapter per queue library, each with the same little interface (see base.Peer).

Adapters are imported lazily by name, so a library that is missing or broken only makes its
own column "n/a (reason)".
"""

from __future__ import annotations

import importlib
from typing import Any

NAMES = ("kickq", "floor", "rq", "dramatiq", "huey", "arq")


def load(name: str) -> Any:
    """The Peer class of `name` (ImportError if the library cannot be imported)."""
    if name not in NAMES:
        raise ValueError(f"unknown peer {name!r}; peers are {', '.join(NAMES)}")
    module = importlib.import_module(f"peers.{name}_peer")
    return module.Peer
