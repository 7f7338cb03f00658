"""Middleware: code that wraps every handler run of this process (timing, logging, fallbacks).

    .venv/bin/python examples/middleware.py

A middleware is `fn(job, call_next)`: `call_next()` runs the next middleware, then the handler,
and returns its result or raises its error; what the middleware returns (or raises) is the
run's outcome. The first one added is the outermost. An `async def` middleware wraps coroutine
handlers only, on kickq's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import kickq

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
log = logging.getLogger("example")

kickq.config(redis_namespace="middleware-example")


def timing(job: kickq.Job, call_next: Callable[[], Any]) -> Any:
    """Outermost (added first): times the whole run, whatever its outcome."""
    started = time.perf_counter()
    try:
        return call_next()
    finally:
        log.info("%s %s took %.3f s", job.name, job.id[:8], time.perf_counter() - started)


def fallback(job: kickq.Job, call_next: Callable[[], Any]) -> Any:
    """Turns a failed lookup into a default value: the run succeeds with it."""
    try:
        return call_next()
    except KeyError:
        return {"price": None, "note": "unknown item"}


async def tagged(job: kickq.Job, call_next: Callable[[], Any]) -> Any:
    """An async middleware: runs on kickq's loop, around coroutine handlers only."""
    result = await call_next()
    return {**result, "via": "async middleware"}


PRICES = {"apple": 3, "pear": 4}


def price(job: kickq.Job, data: dict[str, str]) -> dict[str, Any]:
    """A plain handler: fails with KeyError for an unknown item."""
    return {"price": PRICES[data["item"]]}


async def stock(job: kickq.Job, data: dict[str, str]) -> dict[str, Any]:
    """A coroutine handler."""
    await asyncio.sleep(0.01)  # stands for an HTTP call
    return {"in_stock": data["item"] in PRICES}


kickq.use(timing)
kickq.use(fallback)
kickq.use(tagged)
kickq.process("price", price)
kickq.process("stock", stock)

try:
    jobs = [
        kickq.create("price", {"item": "apple"}).result(10),
        kickq.create("price", {"item": "kiwi"}).result(10),
        kickq.create("stock", {"item": "pear"}).result(10),
    ]
    for job in jobs:
        done = kickq.wait(job.id, timeout=10).result()
        print(f"{done.name} {done.data['item']}: {done.state.value} -> {done.result}")
finally:
    kickq.reset()  # also removes the middleware
