"""The option table, validation, the process-global settings and the cascade.

Options cascade per job: per-call options > job_flags[job name] > global config > defaults.
Validation turns every accepted spelling into one canonical value (durations become float
seconds) and raises ConfigError naming the option otherwise.
"""

from __future__ import annotations

import datetime
import difflib
import importlib.util
import re
import threading
import types
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from kickq._model import forks
from kickq._model.errors import ConfigError
from kickq._model.json import dumps

Check = Callable[[str, Any], Any]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


MAX_DURATION = 1e10
"""The longest duration, in seconds (about 317 years): any timer set with it stays a valid
datetime. Beyond it, adding the duration to the current time would overflow."""
MAX_RUN_COUNT = 1000
"""The most retries (or ghost re-runs) a job may have: every run is kept on the job's record,
which each change of the job reads and writes whole."""
MAX_CONCURRENT_JOBS = 10_000
"""The most runs one worker may hold at once: a plain handler takes a thread per run."""
DEFAULT_MAX_STUCK_THREADS = 10
"""How many handler threads of one worker may run on past their run's end before it stops
claiming (see `max_stuck_threads`)."""


def shown(value: Any) -> str:
    """A value for an error message: a huge int as its size (Python refuses to print an int of
    over 4,300 digits, and thousands of digits say nothing)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"{'-' if value < 0 else ''}a whole number of {value.bit_length()} bits"
    return repr(value)


def duration_range(least: float = 0, positive: bool = False) -> str:
    """The range of a duration as error messages name it."""
    top = f"{MAX_DURATION:.0e}".replace("e+", "e")
    if positive:
        return f"more than {least:g} and at most {top} seconds"
    return f"from {least:g} to {top} seconds"


def check_duration(name: str, value: Any, positive: bool = False, least: float = 0) -> float:
    """Seconds (or a timedelta) from `least` to MAX_DURATION; more than `least` when `positive`
    (a timeout: a run or wait given no time at all would fail before it starts)."""
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if not _is_number(value):
        raise ConfigError(f"{name} must be a number of seconds or a timedelta, not {value!r}")
    span = duration_range(least, positive)
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be a finite number, {span}, not {value!r}")
    if value < least or value > MAX_DURATION or (positive and value == least):
        raise ConfigError(f"{name} must be {span}, got {shown(value)}")
    return float(value)


def _timeout(name: str, value: Any) -> float:
    return check_duration(name, value, positive=True)


def _optional_duration(name: str, value: Any) -> float | None:
    return None if value is None else check_duration(name, value)


def _interval(name: str, value: Any) -> Any:
    """A duration, or (in config/job_flags only) a function of the retry number."""
    if callable(value) and not isinstance(value, datetime.timedelta):
        return value
    return check_duration(name, value)


def check_whole(name: str, value: Any, low: int, high: int | None = None) -> int:
    """A whole number from `low` to `high` (no bound when None); ConfigError naming both."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, not {value!r}")
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} must be a whole number {span}, got {shown(value)}")
    return value


def _count(name: str, value: Any) -> int:
    """Records written before counts were bounded are read with this: any count of 0 or more."""
    return check_whole(name, value, 0)


def _run_count(name: str, value: Any) -> int:
    return check_whole(name, value, 0, MAX_RUN_COUNT)


def _concurrent_jobs(name: str, value: Any) -> int:
    return check_whole(name, value, 1, MAX_CONCURRENT_JOBS)


def _stuck_threads(name: str, value: Any) -> int | None:
    """A whole number of threads from 1 to MAX_CONCURRENT_JOBS, or None for no cap."""
    return None if value is None else check_whole(name, value, 1, MAX_CONCURRENT_JOBS)


def _port(name: str, value: Any) -> int:
    """A TCP port, 1-65535."""
    return check_whole(name, value, 1, 65535)


MAX_VALUE_CEILING = 1024 * 1024
"""The largest `max_value_bytes`, and its default (1 MiB). A script moves a value through Lua at
about 1 ms a MiB each time (taken in, stored, published), and the end of a run publishes the
job's data, meta and result together: at 1 MiB that end holds Redis some 7-16 ms, at 2 MiB
some 25-40 ms (bench/big_values.py), too near the 50 ms a server should never be held."""


def _value_bytes(name: str, value: Any) -> int:
    size = _count(name, value)
    if not 1024 <= size <= MAX_VALUE_CEILING:
        raise ConfigError(
            f"{name} must be a whole number of bytes from 1024 to {MAX_VALUE_CEILING}, "
            f"got {value!r}"
        )
    return size


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, not {value!r}")
    return value


def _tracing(name: str, value: Any) -> bool:
    """True needs opentelemetry-api (the `otel` extra): found, not imported, so that the model
    stays free of it; kickq/_engine/tracing.py imports it once tracing is on."""
    on = _bool(name, value)
    if on:
        try:
            found = importlib.util.find_spec("opentelemetry.trace")
        except (ImportError, ValueError):  # a parent package missing or blocked
            found = None
        if found is None:
            raise ConfigError(f"{name}=True needs opentelemetry-api: pip install 'kickq[otel]'")
    return on


def check_text(what: str, value: str, error: type[Exception] = ConfigError) -> str:
    """A str Redis can store as UTF-8: lone surrogates (as os.fsdecode makes) cannot be."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise error(f"{what} cannot be encoded as UTF-8: {value!r}") from None
    return value


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string, not {value!r}")
    return check_text(name, value)


def _namespace(name: str, value: Any) -> str:
    """No braces: they would read as a Redis Cluster hash tag, and the key schema (_keys.py)
    relies on their absence to keep namespaces apart."""
    namespace = _str(name, value)
    if "{" in namespace or "}" in namespace:
        raise ConfigError(f"{name} must not contain '{{' or '}}', got {value!r}")
    return namespace


def _optional_str(name: str, value: Any) -> str | None:
    return None if value is None else _str(name, value)


def _redis_url(name: str, value: Any) -> str | None:
    url = _optional_str(name, value)
    return None if url is None else check_url_parts(name, url)


def check_url_parts(name: str, url: str) -> str:
    """A Redis URL whose scheme, host, port and database path redis-py would not silently
    ignore or fail on later (a database that is not a number, a port out of range): ConfigError
    naming the part, and the URL without its password. Its query is redis-py's to read: the
    check of a URL in full, which kickq.config() makes, is _redis.connection.check_redis_url."""
    if url.startswith(SENTINEL_SCHEME):
        sentinel_parts(name, url)
        return url
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"{name} must start with redis://, rediss://, unix:// or {SENTINEL_SCHEME}, "
            f"not {redacted(url)!r}"
        )
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # a bracket left open around an IPv6 address
        raise ConfigError(f"{name} {redacted(url)!r} cannot be read: {exc}") from None
    where = f"{name} {redacted(url)!r}"
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(f"{where} names no socket path (unix:///path/to/redis.sock)")
    else:
        port_text = _port_text(parts.netloc)
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port_text and port == 0:
            raise ConfigError(
                f"{where}: its port {port_text!r} is not a whole number from 1 to 65535"
            )
        db = urllib.parse.unquote(parts.path)[1:]
        if db and not re.fullmatch("[0-9]+", db):
            raise ConfigError(
                f"{where}: its database {db!r} (the path) is not a whole number, as in "
                "redis://host:6379/0"
            )
    return url


SENTINEL_SCHEME = "redis+sentinel://"
SENTINEL_PORT = 26379
_SENTINEL_EXAMPLE = "redis+sentinel://sentinel-a:26379,sentinel-b:26379/mymaster/0"


@attrs.frozen
class SentinelUrl:
    """What a redis+sentinel:// URL says: the sentinels to ask, the master's name, and the
    database, user and password (the master's) to use on it; `query` is redis-py's to read."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    username: str | None
    password: str | None
    query: str


def sentinel_parts(name: str, url: str) -> SentinelUrl:
    """The parts of `redis+sentinel://[user:password@]host[:port],host[:port]/master[/db]`
    (a sentinel's port is 26379 when not given), or ConfigError naming the part that is wrong
    (the URL shown without its password)."""
    where = f"{name} {redacted(url)!r}"
    rest = url[len(SENTINEL_SCHEME) :]
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(secret) if colon else None
    sentinels = tuple(_sentinel_address(where, part) for part in hosts.split(","))
    segments = path.split("/") if path else []
    if not segments or not segments[0]:
        raise ConfigError(
            f"{where} names no master: the path is the name the sentinels know the master by, "
            f"as in {_SENTINEL_EXAMPLE}"
        )
    if len(segments) > 2:
        raise ConfigError(f"{where}: its path is /master or /master/db, as in {_SENTINEL_EXAMPLE}")
    master = urllib.parse.unquote(segments[0])
    db_text = urllib.parse.unquote(segments[1]) if len(segments) == 2 else ""
    if db_text and not re.fullmatch("[0-9]+", db_text):
        raise ConfigError(
            f"{where}: its database {db_text!r} (after the master's name) is not a whole "
            f"number, as in {_SENTINEL_EXAMPLE}"
        )
    return SentinelUrl(sentinels, master, int(db_text or 0), username, password, query)


def _sentinel_address(where: str, text: str) -> tuple[str, int]:
    if text.startswith("["):  # an IPv6 address: [::1]:26379
        host, bracket, after = text[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ConfigError(f"{where}: the sentinel address {text!r} cannot be read")
        port_text = after[1:]
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ConfigError(
            f"{where}: a sentinel address is empty; list them as host:port separated by commas, "
            f"as in {_SENTINEL_EXAMPLE}"
        )
    if not port_text:
        return host, SENTINEL_PORT
    if not re.fullmatch("[0-9]{1,5}", port_text) or not 1 <= int(port_text) <= 65535:
        raise ConfigError(
            f"{where}: the port {port_text!r} of sentinel {host!r} is not a whole number "
            "from 1 to 65535"
        )
    return host, int(port_text)


def redacted(url: str) -> str:
    """The URL without its user and password, for error messages."""
    scheme, _, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{tail}"


def _port_text(netloc: str) -> str:
    """What stands where a URL's port goes ("" when none)."""
    host = netloc.rpartition("@")[2]
    after = host.rpartition("]")[2] if host.startswith("[") else host
    return after.partition(":")[2]


def _optional_dict(name: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a dict or None, not {value!r}")
    return dict(value)


def _redis_options(name: str, value: Any) -> dict[str, Any] | None:
    """Keyword arguments for the redis client, and `cluster` (a bool) and `sentinel_kwargs` (a
    dict, the sentinels' connection options) which kickq reads."""
    options = _optional_dict(name, value)
    if options is not None and not isinstance(options.get("cluster", False), bool):
        raise ConfigError(f"{name}['cluster'] must be True or False, not {options['cluster']!r}")
    if options is not None and not isinstance(options.get("sentinel_kwargs", {}), Mapping):
        raise ConfigError(
            f"{name}['sentinel_kwargs'] (the sentinels' connection options) must be a dict, "
            f"not {options['sentinel_kwargs']!r}"
        )
    return options


def _job_flags(name: str, value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a dict of {{job_name: {{option: value}}}}")
    flags: dict[str, dict[str, Any]] = {}
    for job_name, options in value.items():
        check_job_name(job_name, error=ConfigError)
        if not isinstance(options, Mapping):
            raise ConfigError(f"{name}[{job_name!r}] must be a dict of per-job options")
        flags[job_name] = validate(options, PER_JOB, where=f"{name}[{job_name!r}]")
    return flags


def _priority(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        raise ConfigError(f"{name} must be a whole number from 0 to 9, not {shown(value)}")
    return value


def _at(name: str, value: Any) -> datetime.datetime:
    if not isinstance(value, datetime.datetime):
        raise ConfigError(f"{name} must be a datetime, not {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigError(
            f"{name} must be an aware datetime (with a tzinfo, e.g. timezone.utc): {value!r}"
        )
    return value


def _optional_at(name: str, value: Any) -> datetime.datetime | None:
    return None if value is None else _at(name, value)


def _optional_callable(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise ConfigError(f"{name} must be callable, not {value!r}")
    return value


def _optional_meta(name: str, value: Any) -> dict[str, Any]:
    return {} if value is None else _meta(name, value)


def _meta(name: str, value: Any) -> dict[str, Any]:
    """A dict of JSON values with str keys, small enough to travel with every event."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a dict with str keys, not {value!r}")
    meta = dict(value)
    try:
        dumps(meta, name)
    except TypeError as exc:  # SerializationError: reported as the option it is
        raise ConfigError(str(exc)) from None
    return meta


@attrs.frozen
class Option:
    """An option: its default, the check of a value given, and (when it differs) the check of a
    value read back from a record, which may have been written before a bound was added."""

    default: Any
    check: Check
    per_job: bool = False
    stored: Check | None = None

    def read(self, name: str, value: Any) -> Any:
        return (self.stored or self.check)(name, value)


OPTIONS: dict[str, Option] = {
    "redis_url": Option(None, _redis_url),
    "redis_host": Option("127.0.0.1", _str),
    "redis_port": Option(6379, _port),
    "redis_password": Option(None, _optional_str),
    "redis_options": Option(None, _redis_options),
    "redis_namespace": Option("kickq", _namespace),
    "purge_timeout": Option(86400.0, _timeout),
    "max_value_bytes": Option(MAX_VALUE_CEILING, _value_bytes),
    "max_stuck_threads": Option(DEFAULT_MAX_STUCK_THREADS, _stuck_threads),
    "process_timeout": Option(10.0, _timeout, per_job=True, stored=check_duration),
    "delay": Option(None, _optional_duration, per_job=True),
    "ghost_retry": Option(True, _bool, per_job=True),
    "ghost_count": Option(1, _run_count, per_job=True, stored=_count),
    "ghost_interval": Option(1800.0, check_duration, per_job=True),
    "hotjob": Option(False, _bool, per_job=True),
    "hotjob_timeout": Option(10.0, _timeout, per_job=True, stored=check_duration),
    "retry": Option(False, _bool, per_job=True),
    "retry_count": Option(3, _run_count, per_job=True, stored=_count),
    "retry_interval": Option(1800.0, _interval, per_job=True),
    "priority": Option(5, _priority, per_job=True),
    "unique": Option(False, _bool, per_job=True),
    "job_flags": Option({}, _job_flags),
    "tracing": Option(False, _tracing),
}
PER_JOB = {name: option for name, option in OPTIONS.items() if option.per_job}
MAX_PARENTS = 1000
"""The most parents one job may have (`after=`)."""


def _after(name: str, value: Any) -> tuple[str, ...] | None:
    """The parents' ids, from ids or Jobs (anything with a str `id`), in order, each once.
    Whether each names a job of the namespace is the create's to find out (JobNotFound)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be a list of job ids or Jobs, not {value!r}")
    ids: dict[str, None] = {}
    for item in value:
        job_id = item if isinstance(item, str) else getattr(item, "id", None)
        if not isinstance(job_id, str) or not job_id:
            raise ConfigError(f"{name} holds {item!r}, which is neither a job id nor a Job")
        ids[job_id] = None
    if not 1 <= len(ids) <= MAX_PARENTS:
        raise ConfigError(f"{name} must name 1 to {MAX_PARENTS} jobs, not {len(ids)}")
    return tuple(ids)


AFTER_FAILED = ("fail", "run")


def _after_failed(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if value not in AFTER_FAILED:
        raise ConfigError(f'{name} must be "fail" or "run", not {value!r}')
    return str(value)


CALL_ONLY: dict[str, Option] = {
    "at": Option(None, _optional_at),
    "meta": Option({}, _optional_meta),
    "unique_key": Option(None, _optional_str),
    "after": Option(None, _after),
    "after_failed": Option(None, _after_failed),
    "on_progress": Option(None, _optional_callable),
}
"""Options of one create() call only: config() and job_flags refuse them. None means not given."""
PER_CALL = {**PER_JOB, **CALL_ONLY}
CONNECTION_OPTIONS = frozenset(name for name in OPTIONS if name.startswith("redis_"))
PROCESS_OPTIONS = {"concurrent_jobs": Option(1, _concurrent_jobs)}


def check_job_name(name: object, error: type[Exception] = TypeError) -> str:
    """A job name is a non-empty str: it becomes part of Redis keys and channels."""
    if not isinstance(name, str):
        raise error(f"a job name must be a str, not {type(name).__name__}: {name!r}")
    if not name:
        raise ConfigError("a job name must not be empty")
    return check_text("a job name", name)


def _unknown(name: str, table: Mapping[str, Option], where: str) -> ConfigError:
    message = f"unknown option {name!r}" + (f" in {where}" if where else "")
    if name in CALL_ONLY:
        return ConfigError(
            f"{name!r} is an option of one create() call and cannot be set in {where or 'config()'}"
        )
    if name in OPTIONS and name not in table:
        kind = "a per-job option" if OPTIONS[name].per_job else "not a per-job option"
        return ConfigError(f"{name!r} is {kind} and cannot be set in {where}")
    close = difflib.get_close_matches(name, list(table), n=1)
    if close:
        message += f"; did you mean {close[0]!r}?"
    return ConfigError(message)


def validate(
    options: Mapping[str, Any], table: Mapping[str, Option], where: str = "", stored: bool = False
) -> dict[str, Any]:
    """Check every option against `table`; return their canonical values. `stored`: the
    options were read back from Redis (see Option.stored)."""
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if not isinstance(name, str):
            raise ConfigError(f"option names are strings, not {name!r}")
        option = table.get(name)
        if option is None:
            raise _unknown(name, table, where)
        checked[name] = option.read(name, value) if stored else option.check(name, value)
    return checked


class Settings:
    """The process-global configuration: copy-on-read, replaced whole under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = self._defaults()
        self._explicit: set[str] = set()

    def _renew_lock(self) -> None:
        """After fork(), in the child: a parent thread may have held the lock at the fork."""
        self._lock = threading.Lock()

    @staticmethod
    def _defaults() -> dict[str, Any]:
        return {name: option.default for name, option in OPTIONS.items()}

    def update(self, options: Mapping[str, Any], table: Mapping[str, Option] = OPTIONS) -> set[str]:
        """Validate and apply; returns the names whose value changed. `table` is OPTIONS, or
        OPTIONS with stricter checks: kickq.config() passes _redis.connection.CONFIG_OPTIONS,
        whose redis_url is also read as redis-py reads it."""
        checked = validate(options, table)
        with self._lock:
            changed = {name for name, value in checked.items() if self._values[name] != value}
            changed |= set(checked) - self._explicit
            self._values = {**self._values, **checked}
            self._explicit |= set(checked)
        return changed

    def reset(self) -> None:
        with self._lock:
            self._values = self._defaults()
            self._explicit = set()

    @property
    def explicit(self) -> set[str]:
        """The options set by the user since the last reset (even to their default value)."""
        return set(self._explicit)

    def get(self, name: str) -> Any:
        return self._values[name]

    def snapshot(self) -> Mapping[str, Any]:
        values = self._values
        frozen = dict(values)
        if values["redis_options"] is not None:
            frozen["redis_options"] = types.MappingProxyType(dict(values["redis_options"]))
        frozen["job_flags"] = types.MappingProxyType(
            {job: types.MappingProxyType(dict(flags)) for job, flags in values["job_flags"].items()}
        )
        return types.MappingProxyType(frozen)

    def cascade(self, job_name: str, per_call: Mapping[str, Any]) -> dict[str, Any]:
        """The effective per-job options of one job: per-call > job_flags > global > defaults."""
        values = self._values
        effective = {name: values[name] for name in PER_JOB}
        effective.update(values["job_flags"].get(job_name, {}))
        effective.update(per_call)
        return effective


settings = Settings()


def purge_timeout() -> float:
    """Seconds a finished job's record is kept: this process's setting when it finishes one."""
    return float(settings.get("purge_timeout"))


def max_value_bytes() -> int:
    """The longest JSON text of a job's data, meta, unique key or result that this process
    stores: its setting when it creates the job, or ends the run."""
    return int(settings.get("max_value_bytes"))


def max_stuck_threads() -> int | None:
    """The handler threads of one worker that may run on past their run's end (stuck in C,
    or catching TimeLimitExceeded) before it stops claiming jobs; None: no cap."""
    value: int | None = settings.get("max_stuck_threads")
    return value


forks.in_child(settings._renew_lock)
