"""A benchmark worker process: `python bench/worker.py PEER URL CONCURRENCY MODE`.

Imports `peers.<PEER>_peer`, lets it connect (`worker_prepare`), prints "ready", waits for "go"
on stdin, then runs the peer's worker loop in the main thread (RQ and Huey install signal
handlers, which only the main thread may do). End of stdin ends the process at once: the
benchmark kills its workers between runs, it never needs them to shut down gracefully.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _exit_on_eof() -> None:
    for _line in sys.stdin:
        pass
    os._exit(0)


def main() -> None:
    peer, url, concurrency, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    logging.basicConfig(level=logging.WARNING)
    module = importlib.import_module(f"peers.{peer}_peer")
    run = module.worker_prepare(url, concurrency, mode)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        os._exit(0)
    threading.Thread(target=_exit_on_eof, daemon=True).start()
    run()
    os._exit(0)


if __name__ == "__main__":
    main()
