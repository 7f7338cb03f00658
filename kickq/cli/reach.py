"""How a `kickq` command reaches Redis: the server and namespace it names, and bounded waits.

Every command module uses these two, so that each one connects and gives up the same way: a
command waits on a future for at most WAIT seconds, then fails in one line rather than hang.
"""

from __future__ import annotations

import argparse
import concurrent.futures
from typing import TypeVar

import kickq
from kickq._redis.keys import is_job_id
from kickq._verbs.query import ids_starting
from kickq.cli.parser import Failure

WAIT = 30.0  # seconds a command waits for Redis before it gives up
T = TypeVar("T")


def connect(args: argparse.Namespace) -> None:
    """Point kickq at the server and namespace the command line names, if it names them."""
    options = {"redis_url": args.redis_url, "redis_namespace": args.namespace}
    kickq.config({name: value for name, value in options.items() if value is not None})


def wait(future: concurrent.futures.Future[T]) -> T:
    """The future's result, or a Failure when Redis gives no answer in WAIT seconds."""
    done, _ = concurrent.futures.wait([future], timeout=WAIT)
    if not done:
        raise Failure(f"no answer from Redis within {WAIT:g}s")
    return future.result()


def repaired(future: concurrent.futures.Future[T]) -> T:
    """The outcome of a repair of one job (requeue, promote): a job in a state the verb
    refuses (ValueError) is a failure of the command, not a usage error."""
    try:
        return wait(future)
    except kickq.ConfigError:
        raise
    except ValueError as exc:
        raise Failure(str(exc)) from None


SHOWN_CANDIDATES = 5  # ids an ambiguous prefix lists


def job_id(text: str) -> str:
    """The id a command was given, or the one id that starts with it: examples and tables
    show ids cut to 8 digits. A whole id, or a prefix no job has, is passed on as it is (the
    API then says there is no such job); a prefix several ids share is a failure naming some."""
    if is_job_id(text):
        return text
    found = wait(ids_starting(text.lower(), SHOWN_CANDIDATES))
    if len(found) == 1:
        return found[0]
    if found:
        more = ", ..." if len(found) == SHOWN_CANDIDATES else ""
        raise Failure(f"{text!r} is the start of several job ids: {', '.join(found)}{more}")
    return text
