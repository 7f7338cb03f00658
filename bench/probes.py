"""What a process costs, read from inside it: CPU time, context switches, pub/sub messages.

Used by counts.py, loop_lag.py and names.py, in the benchmark process and in their worker
subprocesses (which report `usage()` as one JSON line when asked).

- CPU: `time.process_time()`, every thread of the process, those already ended included.
- Context switches: `getrusage(RUSAGE_SELF)`, every thread too. (`/proc/<pid>/status` would
  count the main thread's alone, which in a kickq process mostly sleeps.)
- Per thread: `/proc/self/task/<tid>/schedstat` (CPU ns) and `.../status` (switches), named
  after the Python thread of that native id; threads that ended are not in it.
- Pub/sub messages: kickq's listener reads every message of the process; `count_messages()`
  wraps its reply handler (no change to kickq itself). A tree without that listener shows
  None.
"""

from __future__ import annotations

import re
import resource
import threading
import time
from pathlib import Path
from typing import Any

_messages = [0, 0]  # messages; every reply pushed (subscribe/unsubscribe confirmations too)
_counting = [False]


def count_messages() -> bool:
    """Count the pub/sub messages kickq's listener receives in this process (call once, after
    importing kickq, before its engine starts). False if this kickq has no such listener."""
    if _counting[0]:
        return True
    try:
        from kickq._redis.listener import Listener
    except ImportError:
        return False
    handle = getattr(Listener, "_handle", None)
    if handle is None:
        return False

    def counted(self: Any, reply: Any) -> None:
        if isinstance(reply, list) and reply:
            _messages[1] += 1
            if reply[0] in ("message", b"message"):
                _messages[0] += 1
        handle(self, reply)

    Listener._handle = counted  # type: ignore[method-assign]
    _counting[0] = True
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _thread_label(name: str) -> str:
    """Pool threads (kickq-run-3, Thread-7 (...)) summed under one label."""
    return re.sub(r"[-_ ]?\d+( \(.*\))?$", "", name) or name


def threads() -> dict[str, dict[str, float]]:
    """CPU seconds, seconds spent runnable but waiting for a core (the OS's run queue: other
    processes), and voluntary switches of each live thread, summed per thread label."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    out: dict[str, dict[str, float]] = {}
    for task in Path("/proc/self/task").iterdir():
        tid = int(task.name)
        sched = _read(task / "schedstat").split()
        if not sched:
            continue
        vcsw = 0
        for line in _read(task / "status").splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                vcsw = int(line.split()[1])
        label = _thread_label(names.get(tid, f"native-{tid}"))
        entry = out.setdefault(label, {"cpu": 0.0, "rq": 0.0, "vcsw": 0, "threads": 0})
        entry["cpu"] += int(sched[0]) / 1e9
        entry["rq"] += int(sched[1]) / 1e9
        entry["vcsw"] += vcsw
        entry["threads"] += 1
    return out


def usage() -> dict[str, Any]:
    """A sample of this process's costs so far; subtract two with `delta`."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu": time.process_time(),
        "vcsw": ru.ru_nvcsw,
        "ivcsw": ru.ru_nivcsw,
        "messages": _messages[0] if _counting[0] else None,
        "pushes": _messages[1] if _counting[0] else None,
        "threads": threads(),
    }


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """after - before, per field (threads per label; a thread that ended shows nothing)."""
    out: dict[str, Any] = {}
    for key in ("cpu", "vcsw", "ivcsw", "messages", "pushes"):
        if before.get(key) is None or after.get(key) is None:
            out[key] = None
        else:
            out[key] = after[key] - before[key]
    per_thread = {}
    for label, now in after["threads"].items():
        then = before["threads"].get(label, {"cpu": 0.0, "rq": 0.0, "vcsw": 0})
        per_thread[label] = {
            "cpu": now["cpu"] - then["cpu"],
            "rq": now.get("rq", 0.0) - then.get("rq", 0.0),
            "vcsw": now["vcsw"] - then["vcsw"],
        }
    out["threads"] = per_thread
    return out


# -- Redis side -------------------------------------------------------------------------------


def redis_sample(client: Any) -> dict[str, Any]:
    """INFO commandstats (calls and usec per command) and the server's CPU seconds."""
    stats = client.info("commandstats")
    commands = {
        name.removeprefix("cmdstat_"): (int(value["calls"]), int(value["usec"]))
        for name, value in stats.items()
        if isinstance(value, dict)
    }
    cpu = client.info("cpu")
    return {
        "commands": commands,
        "cpu": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
    }


# what the measuring client sends itself: left out of every count
OWN = frozenset({"info", "ping", "hello", "client|setinfo", "client|setname", "flushall"})
SCRIPTS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")


def redis_delta(
    before: dict[str, Any], after: dict[str, Any], own: dict[str, int] | None = None
) -> dict[str, Any]:
    """Commands run between two samples (inside scripts included), by command, less `OWN`
    and less `own` ({command: calls} the measurement sent itself); script calls and their
    usec; the server's CPU seconds."""
    own = own or {}
    calls: dict[str, int] = {}
    usec: dict[str, int] = {}
    for name, (n, us) in after["commands"].items():
        n0, us0 = before["commands"].get(name, (0, 0))
        d = n - n0 - own.get(name, 0)
        if name in OWN or d <= 0:
            continue
        calls[name] = d
        usec[name] = us - us0
    script_calls = sum(calls.get(s, 0) for s in SCRIPTS)
    script_usec = sum(usec.get(s, 0) for s in SCRIPTS)
    return {
        "commands": sum(calls.values()),
        "by_command": dict(sorted(calls.items(), key=lambda kv: (-kv[1], kv[0]))),
        "script_calls": script_calls,
        "script_usec": script_usec,
        "server_cpu": after["cpu"] - before["cpu"],
    }


def describe(info: dict[str, Any]) -> str:
    """Which kickq ran, from common.snapshot_kickq(): "commit[+uncommitted] (where)"."""
    dirty = "+uncommitted" if info.get("uncommitted_changes") else ""
    return f"{info.get('commit', '?')}{dirty} ({info['source']})"
