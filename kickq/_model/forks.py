"""What a child of `os.fork()` does first: kickq's one `os.register_at_fork` hook, which runs the
hooks of the modules that keep process state, in the order of ORDER.

A child has only the thread that forked: a lock another parent thread held at the fork stays
held for ever, and the parent's engine, workers and sockets are not the child's. So each module
that keeps such state registers a hook (`in_child`) that gives the child state of its own. They
run lowest layer first, as the modules import one another, so that a hook finds the modules
below its own fresh already (the settings' lock new before the engine is put out of reach). A
hook that raises is logged, and the others still run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

log = logging.getLogger("kickq")

Hook = Callable[[], None]

ORDER = (
    "kickq._model.config",  # the settings' lock, new
    "kickq._model.ids",  # job ids reseeded: parent and child never draw the same
    "kickq._redis.embedded",  # the lock of the embedded server's announcement, new
    "kickq._engine.middleware",  # the middleware's lock, new
    "kickq._engine.runtime",  # the parent's engine put out of reach, untouched; its lock new
    "kickq._verbs.processors",  # the parent's workers forgotten; the registry's lock new
)
"""The modules whose hooks run after a fork, in this order; one hook each."""

_hooks: dict[str, Hook] = {}


def in_child(hook: Hook) -> Hook:
    """Run `hook` in every child forked from now on, in its module's place in ORDER. A module
    that registers again (reloaded) replaces its hook."""
    module = hook.__module__
    if module not in ORDER:
        raise ValueError(f"{module} has no place in kickq._model.forks.ORDER")
    _hooks[module] = hook
    return hook


def hooks() -> list[Hook]:
    """The registered hooks, in the order they run."""
    return [_hooks[module] for module in ORDER if module in _hooks]


def _after_fork_in_child() -> None:
    for hook in hooks():
        try:
            hook()
        except Exception:
            log.exception("kickq's hook %s failed in a forked child", hook.__qualname__)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
