"""Prometheus metrics of this kickq process (the extra: `pip install 'kickq[metrics]'`).

    import kickq.metrics
    kickq.metrics.register()            # into prometheus_client's global REGISTRY, or registry=...

exports:

- `kickq_jobs_total{name,outcome}`: a counter of the runs this process's workers ended, by what
  the run made of its job: `success`, `retry`, `ghost` (it overran process_timeout and will run
  again), `fail` (for good) or `queued` (a stopping worker handed the run back).
- `kickq_job_duration_seconds{name}`: a histogram of those runs' process times.
- `kickq_queue_depth{name,state}`: a gauge of the jobs of each name waiting or running, by
  state (queued, delayed, deferred, processing, retry, ghost), read from `kickq.stats()` when
  Prometheus scrapes, so for the whole namespace (every process): the work still to do, which
  a sum over the states gives (a deferred job, awaiting its parents, is work to do).
  `kickq_finished_jobs{name,state}` (success, fail) counts the finished jobs whose records are
  kept (until purge_timeout): records, not work, so in a gauge of their own.
  `kickq_oldest_queued_age_seconds{name}` and `kickq_paused{name}` come from the same read.
- `kickq_stats_up`: 1 if that read answered within STATS_TIMEOUT seconds, else 0 (and the four
  gauges above are left out of the scrape): a scrape never hangs on Redis.

The counter and the histogram hear of each run through kickq's observers of run ends (the same
place the `kickq.jobs` log line comes from), not through logs. `kickq worker --metrics-port`
registers them and serves them over HTTP. Importing kickq never imports prometheus_client; this
module does, and says what to install when it is missing.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Iterable

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # the extra is not installed
    raise ImportError(
        "kickq.metrics needs prometheus_client: pip install 'kickq[metrics]'"
    ) from exc

import kickq
from kickq._engine import run_ends

__all__ = ["STATS_TIMEOUT", "Metrics", "register"]

log = logging.getLogger("kickq.metrics")
STATS_TIMEOUT = 2.0  # seconds a scrape waits for kickq.stats()
FINISHED_STATES = frozenset({"success", "fail"})  # kickq_finished_jobs; the others: queue depth
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
"""Run times from milliseconds to half an hour (process_timeout may be that long)."""

_registered: dict[int, Metrics] = {}  # by id() of the registry
_registering = threading.Lock()


class _Stats:
    """The collector of the gauges read from `kickq.stats()` at scrape time. A read that has
    not answered yet is waited on again by the next scrape, never doubled: a slow Redis gets
    one read at a time from here however often Prometheus scrapes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: concurrent.futures.Future[dict[str, kickq.NameStats]] | None = None
        self._up = True

    def describe(self) -> Iterable[Metric]:
        """The metrics' names, so that registering does not read Redis."""
        return self._families()

    def collect(self) -> Iterable[Metric]:
        depth, finished, age, paused, up = self._families()
        found = self._read()
        up.add_metric([], 0 if found is None else 1)
        if found is None:
            return [up]
        for name in sorted(found):
            stats = found[name]
            for state, count in stats.counts.items():
                gauge = finished if state in FINISHED_STATES else depth
                gauge.add_metric([name, state], count)
            if stats.oldest_queued_age is not None:
                age.add_metric([name], stats.oldest_queued_age)
            paused.add_metric([name], 1 if stats.paused else 0)
        return [depth, finished, age, paused, up]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "kickq_queue_depth",
                "Jobs of a name waiting or running, by state (kickq.stats()).",
                labels=["name", "state"],
            ),
            GaugeMetricFamily(
                "kickq_finished_jobs",
                "Finished jobs of a name whose records are kept, by state (kickq.stats()).",
                labels=["name", "state"],
            ),
            GaugeMetricFamily(
                "kickq_oldest_queued_age_seconds",
                "How long the oldest queued job of a name has waited.",
                labels=["name"],
            ),
            GaugeMetricFamily("kickq_paused", "1 if the job name is paused.", labels=["name"]),
            GaugeMetricFamily(
                "kickq_stats_up", "1 if kickq.stats() answered in time for this scrape."
            ),
        )

    def _read(self) -> dict[str, kickq.NameStats] | None:
        with self._lock:
            if self._pending is None:
                self._pending = kickq.stats()
            pending = self._pending
        done, _ = concurrent.futures.wait([pending], timeout=STATS_TIMEOUT)
        if not done:
            self._failed(f"no answer within {STATS_TIMEOUT:g}s")
            return None
        with self._lock:
            if self._pending is pending:
                self._pending = None
        error = "the read was cancelled" if pending.cancelled() else pending.exception()
        if error is not None:
            self._failed(str(error))
            return None
        self._up = True
        return pending.result()

    def _failed(self, why: str) -> None:
        if self._up:  # once per outage, not once per scrape
            log.warning("metrics: kickq.stats() failed, queue depth left out (%s)", why)
        self._up = False


class Metrics:
    """What `register()` added to a registry; `unregister()` takes it out again."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.jobs = Counter(
            "kickq_jobs",
            "Runs ended by this process's workers, by outcome (success, retry, ghost, fail).",
            ["name", "outcome"],
            registry=None,
        )
        self.duration = Histogram(
            "kickq_job_duration_seconds",
            "Process time of the runs ended by this process's workers.",
            ["name"],
            buckets=BUCKETS,
            registry=None,
        )
        self.stats = _Stats()

    def observe(self, job: kickq.Job) -> None:
        """Count the run that just ended `job` (called by the workers, see _run_ends)."""
        self.jobs.labels(job.name, job.state.value).inc()
        run = job.runs[-1] if job.runs else None
        if run is not None and run.process_time is not None:
            self.duration.labels(job.name).observe(run.process_time)

    def unregister(self) -> None:
        """Stop counting and take the metrics out of the registry."""
        with _registering:
            run_ends.discard(self.observe)
            for collector in (self.jobs, self.duration, self.stats):
                self.registry.unregister(collector)
            _registered.pop(id(self.registry), None)


def register(registry: CollectorRegistry | None = None) -> Metrics:
    """Export kickq's metrics into `registry` (default: prometheus_client's REGISTRY, the one
    `start_http_server` serves). Registering again into the same registry returns the same
    Metrics; kickq.reset() leaves them registered and counting."""
    target = REGISTRY if registry is None else registry
    with _registering:
        found = _registered.get(id(target))
        if found is None:
            found = Metrics(target)
            _register_all(target, [found.jobs, found.duration, found.stats])
            _registered[id(target)] = found
            run_ends.add(found.observe)
    return found


def _register_all(registry: CollectorRegistry, collectors: list[Collector]) -> None:
    """Register every collector or none (a name taken already raises, as prometheus_client
    does, and leaves the registry as it was)."""
    done: list[Collector] = []
    try:
        for collector in collectors:
            registry.register(collector)
            done.append(collector)
    except BaseException:
        for collector in done:
            registry.unregister(collector)
        raise
