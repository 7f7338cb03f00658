"""How the command line logs: kickq configures logging only where nothing else has.

`kickq worker` imports the application's module, which may set logging up itself (a JSON
handler, Sentry's integration, dictConfig): kickq then leaves the root logger's handlers and
levels as the application made them, and its records (loggers under "kickq") reach them. Only
when nothing configured the root logger, neither before kickq started nor while the module was
imported, does kickq add its own stderr handler (`--log-format text` or `json`). While the module
is imported, kickq's own loggers write through a handler of their own on the "kickq" logger (so
an import that fails is still logged, and a `logging.basicConfig()` in the module still takes
effect); it is removed once the import is done. `--no-log-config` configures nothing at all.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import sys
from collections.abc import Iterator

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DEFAULT_LEVEL = "INFO"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, and exc_info
    (the formatted traceback) and stack_info when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        entry: dict[str, str] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def handler(log_format: str) -> logging.Handler:
    """A stderr handler writing `log_format` ("text" or "json")."""
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    return stream


def configure(level: str | None, log_format: str = "text") -> None:
    """Log to stderr from `level` on, unless the root logger already has handlers: then only an
    explicit `level` applies, to kickq's loggers."""
    root = logging.root
    if root.handlers:
        if level is not None:
            logging.getLogger("kickq").setLevel(level)
        return
    root.addHandler(handler(log_format))
    root.setLevel(level or DEFAULT_LEVEL)


@contextlib.contextmanager
def around_import(level: str | None, log_format: str, enabled: bool = True) -> Iterator[None]:
    """Logging while the application's module is imported, configured (or not) afterwards as
    `configure` says, the application's own set-up of the import counting as configured."""
    if not enabled:
        yield
        return
    kickq_log = logging.getLogger("kickq")
    if logging.root.handlers:  # configured before kickq started: left as it is
        configure(level, log_format)
        yield
        return
    previous, provisional = kickq_log.level, handler(log_format)
    kickq_log.setLevel(level or DEFAULT_LEVEL)
    kickq_log.addHandler(provisional)
    try:
        yield
    finally:
        kickq_log.removeHandler(provisional)
        if kickq_log.level == logging.getLevelName(level or DEFAULT_LEVEL):
            kickq_log.setLevel(previous)  # unless the module set kickq's level itself
        configure(level, log_format)
