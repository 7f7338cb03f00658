"""One log line per finished run, on the logger "kickq.jobs", for any application to turn on.

Every worker of the process logs there, at INFO, each run whose end Redis took: the job's name,
id, what it became, how long the run took and, for a failure, its error. Nothing shows unless
the application configures logging at INFO (`kickq worker` does, to stderr): a library logger
is quiet by default. The line's parts also travel as attributes of the LogRecord
(`kickq_job`, `kickq_outcome`, `kickq_duration`), for JSON log formatters.
"""

from __future__ import annotations

import logging

from kickq._model.job import Job

log = logging.getLogger("kickq.jobs")


def finished(job: Job) -> None:
    """Log the run that just ended `job`: its outcome is the state the job went to (success,
    retry, ghost, fail for good, or queued for a run handed back by a stopping worker)."""
    if not log.isEnabledFor(logging.INFO):
        return
    run = job.runs[-1] if job.runs else None
    duration = None if run is None else run.process_time
    took = "-" if duration is None else f"{duration:.3f}s"
    error = "" if run is None or run.error is None else f": {_one_line(run.error)}"
    log.info(
        "%s %s %s in %s%s",
        job.name,
        job.id,
        job.state.value,
        took,
        error,
        extra={"kickq_job": job, "kickq_outcome": job.state.value, "kickq_duration": duration},
    )


def _one_line(text: str, limit: int = 200) -> str:
    """An error as one short line: a log line per run, whatever the handler raised."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
