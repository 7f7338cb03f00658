"""The two wire encodings of a Job: its Redis record (a hash) and its event message (JSON).

The record is a Redis hash of strings. The fields the Lua scripts read or write (`name`,
`state`, `version`, `run_count`, `reply_to`...) hold raw text; every other field holds a JSON
value, so None, strings and numbers round-trip exactly. Finished runs are kept one per field
(`run:<count>`); the run in progress is `run_count` + `run_start`, so claiming a job writes no
JSON. A field at its default is left out (`OPTIONAL_FIELDS`).

The event message is the job as one JSON object, published on pub/sub by the scripts that
change it (see `event_texts`: each of its fields by name, with its JSON text) and read back by
`from_event`. Both are assembled from the record's field texts, so nothing is encoded twice.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
from collections.abc import Collection, Mapping
from typing import Any

from kickq._model import clock, config
from kickq._model.job import OPTION_FIELDS, TIME_FIELDS, Job, Run, State
from kickq._model.json import dumps

_encode_str = json.encoder.encode_basestring_ascii


def encode(value: Any) -> str:
    """JSON text of one of the record's scalars (None, bool, int, float, str), fast."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind is int or (kind is float and value == value and abs(value) != float("inf")):
        return repr(value)
    return dumps(value, "a job field")


DEPENDENCY_FIELDS = ("parents", "parent_results", "awaiting", "after_failed")
"""The fields of a job created with `after=`: a record without them has no parents."""

# an option missing from a record (left out at its default, or written before the option
# existed) reads as its default
DEFAULT_TEXTS = {name: encode(config.OPTIONS[name].default) for name in OPTION_FIELDS}
OPTIONAL_FIELDS = frozenset(
    {
        *TIME_FIELDS,
        *OPTION_FIELDS,
        "result",
        "last_error",
        "meta",
        "unique_key",
        "budget_start",
        "reply_to",
        *DEPENDENCY_FIELDS,
    }
)
"""The fields `to_record` leaves out at their default."""


def _run_json(run: Run) -> str:
    """A finished run's JSON; its traceback only when it has one, so that a run without one
    (a success, a ghost) costs nothing more."""
    head = (
        f'{{"count":{run.count},"start_time":{encode(clock.to_iso(run.start_time))},'
        f'"process_time":{encode(run.process_time)},"state":"{run.state.value}","error":'
    )
    if run.error is None:
        return head + "null}"
    if run.traceback is None:
        return f"{head}{encode(run.error)}}}"
    return f'{head}{encode(run.error)},"traceback":{encode(run.traceback)}}}'


def _time(name: str, value: Any) -> datetime.datetime | None:
    """A time as the record keeps it (µs since the epoch) or as events carry it (ISO-8601)."""
    if value is None:
        return None
    if type(value) is int:
        return clock.from_us(value)
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a time: {value!r}")
    moment = datetime.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{name} has no time zone: {value!r}")
    return moment


def _optional_text(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} is not text: {value!r}")
    return value


def _whole(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} is not a whole number: {value!r}")
    return value


# A counter the scripts keep as text (version, run_count): decimal digits alone, no sign, no
# leading zero, at most 15 digits (exact in a Lua number). transition.lua fences a change by
# comparing the version's text, so only one text may stand for each number; claim.lua checks
# them alike (see `counter` there).
_COUNTER = re.compile(r"0|[1-9][0-9]{0,14}")


def counter(record: Mapping[str, str], name: str) -> int:
    """A counter field of a record, which must be there and hold a whole number."""
    text = record.get(name)
    if text is None:
        raise ValueError(f"the record has no {name}")
    if not _COUNTER.fullmatch(text):
        raise ValueError(f"{name} is not a whole number: {text!r}")
    return int(text)


def version_of(record: Mapping[str, str]) -> int:
    """The record's version: bumped by every transition, compared by the next one. Every
    record has one (create.lua writes 1): a record without one is damaged."""
    return counter(record, "version")


def _run_from_dict(value: Any) -> Run:
    if not isinstance(value, dict):
        raise ValueError(f"a run is not an object: {value!r}")
    process_time = value.get("process_time")
    if process_time is not None:
        process_time = config.check_duration("a run's process_time", process_time)
    return Run(
        count=_whole("a run's count", value["count"]),
        start_time=_time("a run's start_time", value.get("start_time")),
        process_time=process_time,
        state=State(value["state"]),
        error=_optional_text("a run's error", value.get("error")),
        traceback=_optional_text("a run's traceback", value.get("traceback")),
    )


def _option_texts(job: Job, before: Job | None, known: Mapping[str, str]) -> dict[str, str]:
    """The texts of the job's options not at their default; those `before` had too (the same
    objects) taken from its record `known`."""
    texts = {}
    for name in OPTION_FIELDS:
        value = getattr(job, name)
        if before is not None and value is getattr(before, name):
            if name in known:
                texts[name] = known[name]
            continue
        text = encode(value)
        if text != DEFAULT_TEXTS[name]:
            texts[name] = text
    return texts


def _set_values(
    job: Job, before: Job | None = None, known: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The texts of the job's result, last error, meta and unique key, those that are set;
    those `before` had too (the same objects) taken from its record `known`."""
    texts = {}
    for name, encoder in _SET_VALUES:
        value = getattr(job, name)
        if value is None or (name == "meta" and not value):
            continue
        if before is not None and known and value is getattr(before, name) and name in known:
            texts[name] = known[name]
        else:
            texts[name] = encoder(value)
    return texts


_SET_VALUES: tuple[tuple[str, Any], ...] = (
    ("result", lambda value: dumps(value, "the handler's result")),
    ("last_error", encode),
    ("meta", lambda value: dumps(value, "meta")),
    ("unique_key", encode),
)


def to_record(
    job: Job,
    data_json: str | None = None,
    like: tuple[Job, Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """Every field of the record except the run in progress, ready for HSET. The record stays
    small: the id is the key's; times are µs since the epoch; a field at its default (an option
    at the option table's, a time or result not set, no meta) is left out, and `from_record`
    reads it back as that default. `like`: the job this one was changed from, with its record:
    the texts of the values it kept (the very same objects) are taken from there, not encoded
    again."""
    record = {"name": job.name, "state": job.state.value}
    record["data"] = data_json if data_json is not None else dumps(job.data, "job data")
    for name in TIME_FIELDS:
        moment = getattr(job, name)
        if moment is not None:
            record[name] = str(clock.to_us(moment))
    before, texts = like if like is not None else (None, {})
    record.update(_option_texts(job, before, texts))
    record.update(_set_values(job, before, texts))
    kept = {id(run) for run in before.runs} if before is not None else set()
    for run in job.runs:
        if run.state is not State.PROCESSING:
            field = f"run:{run.count}"
            known = texts.get(field) if id(run) in kept else None
            record[field] = known if known is not None else _run_json(run)
    if job.budget_start:  # only a requeued job has one
        record["budget_start"] = str(job.budget_start)
    if job.reply_to is not None:  # only a hotjob has one
        record["reply_to"] = job.reply_to
    if job.parents:  # only a job created with after=
        record.update(_dependency_texts(job, before, texts))
    return record


def _dependency_texts(job: Job, before: Job | None, known: Mapping[str, str]) -> dict[str, str]:
    """The texts of a job created with after=; the results kept from `before` (the same
    object: up to a thousand parents' results) taken from its record `known`."""
    results = known.get("parent_results")
    if before is None or job.parent_results is not before.parent_results or results is None:
        results = dumps(job.parent_results, "parent results")
    texts = {"parents": dumps(list(job.parents), "parents"), "parent_results": results}
    if job.awaiting:
        texts["awaiting"] = dumps(list(job.awaiting), "awaiting")
    if job.after_failed != "fail":
        texts["after_failed"] = encode(job.after_failed)
    return texts


def _check_text(record: Mapping[str, str]) -> None:
    for name, value in record.items():
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"field {name!r} holds bytes that are not UTF-8") from None


JSON_FIELDS = (
    "data",
    "progress",
    "result",
    "last_error",
    "meta",
    "unique_key",
    "budget_start",
    *TIME_FIELDS,
    *OPTION_FIELDS,
    *DEPENDENCY_FIELDS,
)
_NULLABLE_OPTIONS = frozenset({"delay", "retry_interval"})  # None: decided by the worker's config


def _runs_of(record: Mapping[str, str]) -> list[str]:
    """The finished runs' JSON texts, in order: run:1, run:2, ... (each run writes its own when
    it ends, so they follow on; looked up by name, not by scanning every field)."""
    runs: list[str] = []
    while (text := record.get(f"run:{len(runs) + 1}")) is not None:
        runs.append(text)
    return runs


def _json_fields(record: Mapping[str, str]) -> dict[str, Any]:
    """The JSON fields, parsed in one go as one array of the field texts. A field whose text
    is not exactly one JSON value changes the count or the syntax, and is caught."""
    present = [name for name in JSON_FIELDS if name in record]
    values = json.loads("[" + ",".join(record[name] for name in present) + "]")
    if len(values) != len(present):
        raise ValueError("a field does not hold exactly one JSON value")
    return dict(zip(present, values, strict=True))


def from_record(record: Mapping[str, str], job_id: str) -> Job:
    """Rebuild job `job_id` from its hash (the id is the key's, not a field), checking every
    field: a damaged record raises (ValueError, KeyError, TypeError,
    RecursionError...); it never yields a Job that would fail later."""
    _check_text(record)
    if "data" not in record:
        raise KeyError("data")
    runs = [_run_from_dict(run) for run in json.loads("[" + ",".join(_runs_of(record)) + "]")]
    version_of(record)
    # a new job has none; every claim writes it
    run_count = counter(record, "run_count") if "run_count" in record else 0
    if record["state"] == State.PROCESSING.value:
        if run_count == 0:
            raise ValueError("the record is processing, but its run_count is not 1 or more")
        start = _time("run_start", json.loads(record.get("run_start", "null")))
        runs.append(Run(run_count, start, None, State.PROCESSING))
    values = _json_fields(record)
    if "reply_to" in record:  # raw text, as the scripts that publish on it read it
        values["reply_to"] = record["reply_to"]
    return _job(job_id, record["name"], record["state"], runs, values)


def _job(job_id: Any, name: Any, state: Any, runs: list[Run], values: dict[str, Any]) -> Job:
    """A Job from decoded values, each checked: the options against the option table (the
    checks `config()` makes, but for bounds added since a record may have been written), the
    times, the texts."""
    for text, what in ((job_id, "id"), (name, "name")):
        if not isinstance(text, str) or not text:
            raise ValueError(f"the job's {what} is not a non-empty str: {text!r}")
    for option in OPTION_FIELDS:
        if option in values and not (option in _NULLABLE_OPTIONS and values[option] is None):
            values[option] = config.OPTIONS[option].read(option, values[option])
    for field in TIME_FIELDS:
        values[field] = _time(field, values.get(field))
    values["last_error"] = _optional_text("last_error", values.get("last_error"))
    values["unique_key"] = _optional_text("unique_key", values.get("unique_key"))
    if "meta" in values:
        values["meta"] = config.CALL_ONLY["meta"].check("meta", values["meta"])
    if "budget_start" in values:
        values["budget_start"] = _whole("budget_start", values["budget_start"])
    if "parents" in values:
        _check_dependencies(values)
    return Job(id=job_id, name=name, state=State(state), runs=tuple(runs), **values)


def _ids(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{name} is not a list of job ids: {value!r}")
    return tuple(value)


def _check_dependencies(values: dict[str, Any]) -> None:
    values["parents"] = _ids("parents", values["parents"])
    values["awaiting"] = _ids("awaiting", values.get("awaiting", []))
    results = values.get("parent_results", {})
    if not isinstance(results, dict):
        raise ValueError(f"parent_results is not an object: {results!r}")
    values["parent_results"] = results
    if values.setdefault("after_failed", "fail") not in config.AFTER_FAILED:
        raise ValueError(f"after_failed is not fail or run: {values['after_failed']!r}")


# -- the event message -----------------------------------------------------------------------


_DEFAULT_OPTIONS = tuple(DEFAULT_TEXTS.items())


def event_texts(record: Mapping[str, str], total_process_time: float | None) -> dict[str, str]:
    """Each field of the event message of the job whose record (with its "id") is `record`,
    by name, with its JSON text, in the order the message lists them (the id first: see
    `event_id`). Taken from the record's field texts: nothing is decoded or encoded again."""
    get = record.get
    name = encode(record["name"])
    state = record["state"]
    texts = {
        "id": encode(record["id"]),
        "name": name,
        "queue": name,
        "data": get("data", "null"),
        "state": encode(state),
        "complete": "true" if state == "success" or state == "fail" else "false",
        "success": "true" if state == "success" else "false",
    }
    for field in TIME_FIELDS:
        text = get(field)  # µs since the epoch; ISO-8601 JSON in older records
        texts[field] = "null" if text is None else _iso_json(text) if text.isdigit() else text
    texts["total_process_time"] = encode(total_process_time)
    for field, default in _DEFAULT_OPTIONS:
        texts[field] = get(field) or default
    texts["meta"] = get("meta", "{}")
    texts["unique_key"] = get("unique_key", "null")
    texts["budget_start"] = get("budget_start", "0")
    texts["result"] = get("result", "null")
    texts["last_error"] = get("last_error", "null")
    progress = get("progress")  # only scripts/progress.lua writes it; most jobs never do
    if progress is not None:
        texts["progress"] = progress
    texts["runs"] = "[" + ",".join(_runs_of(record)) + "]"
    if "parents" in record:  # only a job created with after=
        for field in DEPENDENCY_FIELDS:
            if field in record:
                texts[field] = record[field]
    return texts


def event_json(texts: Mapping[str, str]) -> str:
    """The event message holding `texts` (field name -> JSON text): each text under its name.
    The names are plain identifiers: none needs escaping."""
    return '{"' + ',"'.join(map('":'.join, texts.items())) + "}"  # '"name":text', joined


def record_event_json(record: Mapping[str, str], total_process_time: float | None) -> str:
    """The event message of the job whose record (with its "id") is `record`."""
    return event_json(event_texts(record, total_process_time))


NEW_JOB_FIELDS = ("id", "data", "unique_key")
"""The fields of a new job's event message that scripts/create.lua fills in for each job of a
batch (the jobs share every other field), in the order it glues them in: the message must list
them in this order (see `new_jobs_event_texts`)."""
# in an event template, around the name of each field left to fill in: JSON text never holds
# it (a control character is escaped in a string, and allowed nowhere else), so no text of a job
# can be taken for a slot
_SLOT = "\x00"
_NEW_JOB_ORDER = list(NEW_JOB_FIELDS)


def event_template(texts: Mapping[str, str], slots: Collection[str]) -> list[str]:
    """`event_json(texts)` with the value of each field of `slots` left to be filled in by
    name: texts alternating with the names of the fields whose values go between them, in the
    order of the message, [text, name, text, ... name, text]."""
    marked = dict(texts)
    for name in slots:
        if name not in marked:
            raise KeyError(f"the event has no field {name!r} to fill in")
        marked[name] = f"{_SLOT}{name}{_SLOT}"
    return event_json(marked).split(_SLOT)


def new_jobs_event_texts(shared: Mapping[str, str]) -> list[str]:
    """The event message of new jobs whose records share the fields `shared`, as the four texts
    around their id, data and unique key, which create.lua puts between them in that order
    (`NEW_JOB_FIELDS`): the message must list them so, or this raises rather than let
    create.lua publish a value under another field's name."""
    template = event_template(event_texts({**shared, "id": ""}, None), NEW_JOB_FIELDS)
    if template[1::2] != _NEW_JOB_ORDER:
        raise RuntimeError(
            f"the event lists {template[1::2]}; create.lua glues in {_NEW_JOB_ORDER} in that order"
        )
    return template[::2]


@functools.lru_cache(maxsize=256)  # a new job's create and update times are one moment
def _iso_json(text: str) -> str:
    """A time as the record keeps it (µs since the epoch) as events carry it: ISO-8601 JSON."""
    return f'"{clock.from_us(int(text)).isoformat()}"'


def from_event(text: str | bytes) -> Job:
    """Rebuild a Job from an event's JSON, checking every field as `from_record` does."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"an event is a JSON object, not {type(value).__name__}")
    fields = {name: value[name] for name in JSON_FIELDS if name in value}
    runs = value.get("runs", [])
    if not isinstance(runs, list):
        raise ValueError(f"runs is not a list: {runs!r}")
    return _job(
        value["id"], value["name"], value["state"], [_run_from_dict(r) for r in runs], fields
    )


_EVENT_ID = re.compile(r'\{"id":"([^"]*)"')


def event_id(text: str) -> str:
    """The id of the job an event message is about, "" if none can be found; also for a
    message that does not decode, one assembled from a damaged record's texts: its id comes
    first (see `event_texts`)."""
    try:
        value = json.loads(text)
    except ValueError:
        found = _EVENT_ID.match(text)
        return found.group(1) if found else ""
    job_id = value.get("id") if isinstance(value, dict) else None
    return job_id if isinstance(job_id, str) else ""
