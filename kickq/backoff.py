"""Exponential backoff with jitter, for `retry_interval`."""

from __future__ import annotations

import random
from collections.abc import Callable

from .errors import ConfigError


def backoff(
    base: float = 1.0, factor: float = 2.0, maximum: float = 3600.0, jitter: bool = True
) -> Callable[[int], float]:
    """A `retry_interval` function: retry n waits about base * factor**(n-1) seconds.

    With `jitter` ("full jitter") the wait is drawn uniformly from [0, that], so that jobs
    failing together do not all come back at the same instant. Never more than `maximum`.

        kickq.config(retry=True, retry_interval=kickq.backoff(base=2, maximum=600))
    """
    if base < 0 or maximum < 0 or factor < 1:
        raise ConfigError("backoff() needs base >= 0, maximum >= 0 and factor >= 1")

    def interval(retry_number: int) -> float:
        try:
            # float power: a huge retry number overflows at once instead of building a huge int
            ceiling = min(maximum, base * float(factor) ** max(retry_number - 1, 0))
        except OverflowError:
            ceiling = maximum if base else 0.0
        return random.uniform(0, ceiling) if jitter else ceiling

    return interval
