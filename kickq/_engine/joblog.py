"""One log line per finished run, on the logger "kickq.jobs", for any application to turn on.

Every worker of the process logs there each run whose end Redis took: the job's name, id, what
it became, how long the run took and, for a failure, its error. A success (or a run handed back
by a stopping worker: queued) is logged at INFO; a run that failed (or ghosted) and will run
again at WARNING; a job that fails for good at ERROR.
A run that raised carries its exception as `exc_info`, so that any handler (Sentry's logging
integration, a JSON formatter) sees its traceback. Successes show only if the application
configures logging at INFO (`kickq worker` does, to stderr). The line's parts also travel as
attributes of the LogRecord (`kickq_job`, `kickq_outcome`, `kickq_duration`), for JSON log
formatters.
"""

from __future__ import annotations

import logging

from kickq._model.job import Job, State

log = logging.getLogger("kickq.jobs")


def finished(job: Job, exception: BaseException | None = None) -> None:
    """Log the run that just ended `job`: its outcome is the state the job went to (success,
    retry, ghost, fail for good, or queued for a run handed back by a stopping worker);
    `exception` what the run raised, if it did."""
    state = job.state
    level = _ERROR if state is _FAIL else _WARNING if state is _RETRY or state is _GHOST else _INFO
    if not log.isEnabledFor(level):
        return
    run = job.runs[-1] if job.runs else None
    duration = None if run is None else run.process_time
    took = "-" if duration is None else f"{duration:.3f}s"
    error = "" if run is None or run.error is None else f": {_one_line(run.error)}"
    log.log(
        level,
        "%s %s %s in %s%s",
        job.name,
        job.id,
        job.state.value,
        took,
        error,
        exc_info=exception,
        extra={"kickq_job": job, "kickq_outcome": job.state.value, "kickq_duration": duration},
    )


_FAIL, _RETRY, _GHOST = State.FAIL, State.RETRY, State.GHOST
_INFO, _WARNING, _ERROR = logging.INFO, logging.WARNING, logging.ERROR


def _one_line(text: str, limit: int = 200) -> str:
    """An error as one short line: a log line per run, whatever the handler raised."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
