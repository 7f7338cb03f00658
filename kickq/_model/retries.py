"""How long a failed job waits before its next run: `retry_interval`, and `backoff()` for it.

A job carries its retry interval as a number; one set as a function (such as `backoff()`)
cannot travel through Redis, so it is looked up in the configuration of the process that runs
the job, when the run fails.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from kickq._model.config import settings
from kickq._model.errors import ConfigError
from kickq._model.job import Job


def interval_for(job: Job, retry_number: int) -> float:
    """Seconds before retry `retry_number`: the job's own number, else this process's config."""
    if job.retry_interval is not None:
        return job.retry_interval
    configured: Any = settings.cascade(job.name, {})["retry_interval"]
    if callable(configured):
        return max(float(configured(retry_number)), 0.0)
    return float(configured)


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
