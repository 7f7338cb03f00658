"""The Job model and its encodings, and the pure decisions of lifecycle.end_run (no Redis)."""

from __future__ import annotations

import datetime
import json
import random

import attrs
import pytest

from kickq._model import lifecycle
from kickq._model.job import Job, Run, State
from kickq._redis import record as record_module
from kickq._redis.record import (
    NEW_JOB_FIELDS,
    event_id,
    event_json,
    event_template,
    event_texts,
    from_event,
    from_record,
    new_jobs_event_texts,
    record_event_json,
    to_record,
)

UTC = datetime.timezone.utc
T0 = datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def interval(job: Job, retry_number: int) -> float:
    """A retry_interval of 10 seconds per retry number, so the number shows in the schedule."""
    return 10.0 * retry_number


def processing(**fields: object) -> Job:
    """A job in its first run, started at T0."""
    values: dict[str, object] = {
        "id": "j1",
        "name": "resize",
        "data": {"path": "a.png"},
        "state": State.PROCESSING,
        "create_time": T0,
        "update_time": T0,
        "runs": (Run(1, T0, None, State.PROCESSING),),
    }
    values.update(fields)
    return Job(**values)  # type: ignore[arg-type]


def next_run(job: Job, now: datetime.datetime) -> Job:
    """The job claimed again for its next run, as the claim script would leave it."""
    run = Run(len(job.runs) + 1, now, None, State.PROCESSING)
    return attrs.evolve(job, state=State.PROCESSING, update_time=now, runs=(*job.runs, run))


def finished_job() -> Job:
    """A job that failed once, then succeeded: every field set to something non-default."""
    return Job(
        id="abc123",
        name="resize",
        data={"path": "ä.png", "sizes": [1, 2.5, None, True], "nested": {"k": "v"}},
        state=State.SUCCESS,
        create_time=T0,
        update_time=at(12),
        finish_time=at(12),
        scheduled_for=None,
        delay=1.5,
        process_timeout=20.0,
        retry=True,
        retry_count=2,
        retry_interval=5.0,
        ghost_retry=False,
        ghost_count=0,
        ghost_interval=60.0,
        hotjob=True,
        hotjob_timeout=30.0,
        result={"w": 10, "h": [1, 2]},
        last_error="boom",
        runs=(
            Run(1, at(2), 1.25, State.FAIL, "boom"),
            Run(2, at(10), 2.0, State.SUCCESS),
        ),
    )


# -- the model -------------------------------------------------------------------------------


def test_job_is_frozen() -> None:
    """Assigning to a field of a Job (or a Run) raises instead of changing it."""
    job = finished_job()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        job.state = State.FAIL  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        job.runs[0].error = "other"  # type: ignore[misc]
    assert job.state is State.SUCCESS


def test_state_is_a_str_enum() -> None:
    """State members are str and compare equal to their lowercase names."""
    assert issubclass(State, str)
    assert State.SUCCESS == "success"
    assert State("fail") is State.FAIL
    assert [s.value for s in State] == [
        "new",
        "queued",
        "deferred",
        "delayed",
        "processing",
        "retry",
        "ghost",
        "success",
        "fail",
    ]
    assert json.dumps(State.QUEUED) == '"queued"'


@pytest.mark.parametrize(
    ("state", "complete", "success"),
    [
        (State.NEW, False, False),
        (State.QUEUED, False, False),
        (State.DELAYED, False, False),
        (State.PROCESSING, False, False),
        (State.RETRY, False, False),
        (State.GHOST, False, False),
        (State.SUCCESS, True, True),
        (State.FAIL, True, False),
    ],
)
def test_complete_and_success_follow_state(state: State, complete: bool, success: bool) -> None:
    """complete is True only for success/fail, success only for success."""
    job = Job(id="x", name="n", state=state)
    assert job.complete is complete
    assert job.success is success


def test_total_process_time_sums_finished_runs() -> None:
    """total_process_time is None without timed runs, else the sum of the runs' process times."""
    assert Job(id="x", name="n").total_process_time is None
    assert processing().total_process_time is None  # the run in progress has no time yet
    assert finished_job().total_process_time == pytest.approx(3.25)
    job = attrs.evolve(
        finished_job(), runs=(*finished_job().runs, Run(3, at(20), None, State.PROCESSING))
    )
    assert job.total_process_time == pytest.approx(3.25)


# -- encodings -------------------------------------------------------------------------------


def test_record_round_trip_with_runs() -> None:
    """A finished job with runs comes back equal from its Redis record."""
    job = finished_job()
    record = to_record(job)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in record.items())
    record.update({"version": "1", "run_count": "2"})
    assert from_record(record, job.id) == job


def test_record_round_trip_of_a_waiting_job() -> None:
    """A job waiting for a retry keeps its scheduled time, last error and failed run."""
    job = attrs.evolve(
        finished_job(),
        state=State.RETRY,
        finish_time=None,
        scheduled_for=at(60),
        result=None,
        runs=(Run(1, at(2), 1.25, State.FAIL, "boom"),),
    )
    record = {**to_record(job), "version": "3", "run_count": "1"}
    back = from_record(record, job.id)
    assert back == job
    assert back.scheduled_for == at(60)
    assert back.scheduled_for.utcoffset() == datetime.timedelta(0)


def second_run_in_progress() -> Job:
    """A job whose first run failed, claimed again at at(40)."""
    return next_run(
        attrs.evolve(
            finished_job(),
            state=State.RETRY,
            finish_time=None,
            result=None,
            runs=(Run(1, at(2), 1.25, State.FAIL, "boom"),),
        ),
        at(40),
    )


def test_record_of_a_processing_job_rebuilds_the_run_in_progress() -> None:
    """The run in progress is rebuilt from run_count and run_start, as the claim script writes."""
    job = second_run_in_progress()
    record = to_record(job)
    assert "run:2" not in record
    record.update({"version": "4", "run_count": "2", "run_start": json.dumps(at(40).isoformat())})
    back = from_record(record, job.id)
    assert back == job
    assert back.runs[-1] == Run(2, at(40), None, State.PROCESSING)


COUNTER_DAMAGE = [
    pytest.param({"version": None}, id="version-missing"),
    pytest.param({"version": "01"}, id="version-leading-zero"),
    pytest.param({"version": "-1"}, id="version-negative"),
    pytest.param({"version": "+4"}, id="version-plus"),
    pytest.param({"version": " 4"}, id="version-space"),
    pytest.param({"version": "1_0"}, id="version-underscore"),
    pytest.param({"version": "1" * 16}, id="version-past-a-lua-number"),
    pytest.param({"run_count": "-1"}, id="run_count-negative"),
    pytest.param({"run_count": "0"}, id="run_count-zero-while-processing"),
    pytest.param({"run_count": None}, id="run_count-missing-while-processing"),
    pytest.param({"budget_start": "-1"}, id="budget_start-negative"),
    pytest.param({"run:1": '{"count": -1, "state": "fail"}'}, id="run-count-negative"),
]


@pytest.mark.parametrize("changes", COUNTER_DAMAGE)
def test_a_record_whose_counters_are_not_whole_numbers_is_refused(
    changes: dict[str, str | None],
) -> None:
    """The version and run_count are required (a running job's run_count 1 or more) and must
    be written as the scripts write them: digits, no sign, no leading zero (transition.lua
    compares the version as text, so "01" would never match 1). Counters inside the record
    (budget_start, a run's count) are never negative."""
    job = second_run_in_progress()
    record = to_record(job)
    record.update({"version": "4", "run_count": "2", "run_start": json.dumps(at(40).isoformat())})
    assert from_record(record, job.id) == job
    for field, value in changes.items():
        if value is None:
            del record[field]
        else:
            record[field] = value
    with pytest.raises(ValueError):
        from_record(record, job.id)


def event_of(job: Job) -> str:
    """The event a transition publishes for `job`."""
    return record_event_json({**to_record(job), "id": job.id}, job.total_process_time)


def test_event_round_trip() -> None:
    """The event JSON carries every field with ISO-8601 UTC-offset times and decodes back."""
    job = finished_job()
    event = json.loads(event_of(job))
    assert event["id"] == job.id
    assert event["queue"] == job.name == event["name"]
    assert event["state"] == "success"
    assert event["complete"] is True and event["success"] is True
    assert event["total_process_time"] == pytest.approx(3.25)
    assert event["create_time"] == "2024-05-01T12:00:00.123456+00:00"
    assert event["finish_time"].endswith("+00:00")
    assert event["runs"][0] == {
        "count": 1,
        "start_time": "2024-05-01T12:00:02.123456+00:00",
        "process_time": 1.25,
        "state": "fail",
        "error": "boom",
    }
    assert "hotjob_future" not in event

    text = event_of(job)
    assert json.loads(text) == event
    back = from_event(text)
    assert back == job
    assert back.create_time is not None
    assert back.create_time.utcoffset() == datetime.timedelta(0)
    assert from_event(text.encode()) == job


def test_hotjob_future_is_not_part_of_equality_or_encodings() -> None:
    """hotjob_future is not stored: it is neither compared nor written to record or event."""
    from concurrent.futures import Future

    job = attrs.evolve(finished_job(), hotjob_future=Future())
    assert job == finished_job()
    assert "hotjob_future" not in to_record(job)
    assert "hotjob_future" not in json.loads(event_of(job))


EVENT_KEYS = [
    "id",
    "name",
    "queue",
    "data",
    "state",
    "complete",
    "success",
    "create_time",
    "update_time",
    "finish_time",
    "scheduled_for",
    "total_process_time",
    "delay",
    "process_timeout",
    "retry",
    "retry_count",
    "retry_interval",
    "ghost_retry",
    "ghost_count",
    "ghost_interval",
    "hotjob",
    "hotjob_timeout",
    "priority",
    "meta",
    "unique_key",
    "budget_start",
    "result",
    "last_error",
    "runs",
]
"""The event's fields in the order every event has always listed them (consumers may rely on it;
the id first, see `event_id`)."""


def distinct_job() -> Job:
    """A job whose every field holds a value of its own: no two fields (but the booleans) have
    the same JSON, so a value placed under another field's name shows."""
    return Job(
        id="id-1",
        name="name-2",
        data={"data": 3},
        state=State.FAIL,
        create_time=at(4),
        update_time=at(5),
        finish_time=at(6),
        scheduled_for=at(7),
        delay=8.5,
        process_timeout=9.5,
        retry=True,
        retry_count=10,
        retry_interval=11.5,
        ghost_retry=False,
        ghost_count=12,
        ghost_interval=13.5,
        hotjob=True,
        hotjob_timeout=14.5,
        priority=2,
        meta={"meta": 15},
        unique_key="key-16",
        result={"result": 17},
        last_error="error-18",
        budget_start=1,
        runs=(
            Run(1, at(19), 20.5, State.FAIL, "run-error-21", "run-traceback-21"),
            Run(2, at(22), 23.5, State.FAIL),
        ),
    )


def as_json(value: object) -> object:
    """A Job's attribute as the event carries it."""
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, State):
        return value.value
    if isinstance(value, tuple):
        return [as_json(item) for item in value]
    if isinstance(value, Run):  # a run without a traceback carries none
        fields = {name: as_json(getattr(value, name)) for name in attrs.fields_dict(Run)}
        return {name: text for name, text in fields.items() if name != "traceback" or text}
    return value


def test_every_event_field_holds_the_value_of_its_name() -> None:
    """The event of a job whose fields all differ carries, under each name, the job's value of
    that name (queue: its name), in the order events have always had."""
    job = distinct_job()
    event = json.loads(event_of(job))
    plain = [json.dumps(value) for name, value in event.items() if name != "queue"]
    plain = [text for text in plain if text not in ("true", "false")]
    assert len(set(plain)) == len(plain)  # the test's power: no two values alike
    assert list(event) == EVENT_KEYS
    expected = {name: as_json(getattr(job, "name" if name == "queue" else name)) for name in event}
    assert event == expected
    assert from_event(json.dumps(event)) == job


def test_event_fields_are_placed_by_name_in_any_order() -> None:
    """The message is assembled from a mapping of field name -> JSON text: in whatever order
    the mapping lists the fields, each value lands under its own name, also in a template
    whose per-job fields are filled in by name."""
    job = distinct_job()
    record = {**to_record(job), "id": job.id}
    texts = event_texts(record, job.total_process_time)
    reference = json.loads(event_of(job))
    shuffled = list(texts.items())
    random.Random(22).shuffle(shuffled)
    for order in (shuffled, list(reversed(texts.items()))):
        assert json.loads(event_json(dict(order))) == reference
        template = event_template(dict(order), NEW_JOB_FIELDS)
        assert template[1::2] == [name for name, _ in order if name in NEW_JOB_FIELDS]
        filled = "".join(texts[part] if at % 2 else part for at, part in enumerate(template))
        assert json.loads(filled) == reference


def create_lua_message(texts: list[str], job_id: str, data: str, unique_key: str) -> str:
    """A job's event message as scripts/create.lua glues it from the four texts."""
    head, middle, before_key, tail = texts
    return head + '"' + job_id + '"' + middle + data + before_key + unique_key + tail


def test_a_new_jobs_event_is_cut_at_the_fields_create_lua_fills_in() -> None:
    """create.lua gets the event of new jobs as the four texts around their id, data and unique
    key, which it glues in that order: with a job's texts, it is that job's event."""
    job = distinct_job()
    record = to_record(job)
    shared = {name: text for name, text in record.items() if name not in NEW_JOB_FIELDS}
    texts = new_jobs_event_texts(shared)
    message = create_lua_message(texts, job.id, record["data"], record["unique_key"])
    assert message == record_event_json({**record, "id": job.id}, None)
    with pytest.raises(KeyError):
        event_template(event_texts({**record, "id": job.id}, None), ["no_such_field"])


def test_an_event_listing_the_new_job_fields_in_another_order_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Were the event to list a job's id, data and unique key in another order than create.lua
    glues them in, no create would send it: each value would land under another name."""
    original = record_module.event_texts

    def reordered(record: dict[str, str], total_process_time: float | None) -> dict[str, str]:
        texts = original(record, total_process_time)
        return {"data": texts.pop("data"), **texts}

    monkeypatch.setattr(record_module, "event_texts", reordered)
    shared = {name: text for name, text in to_record(distinct_job()).items() if name != "data"}
    with pytest.raises(RuntimeError, match=r"create\.lua"):
        new_jobs_event_texts(shared)


def test_event_id_is_found_even_in_a_message_that_does_not_decode() -> None:
    """A message assembled from a damaged record (a field text that is not JSON) still names
    its job: the id comes first."""
    job = distinct_job()
    record = {**to_record(job), "id": job.id}
    assert event_id(record_event_json(record, None)) == job.id
    broken = record_event_json({**record, "data": "{not json"}, None)
    with pytest.raises(ValueError):
        json.loads(broken)
    assert event_id(broken) == job.id
    assert event_id("not an event") == "" and event_id('["id"]') == ""


# -- lifecycle.end_run -----------------------------------------------------------------------


def test_failure_with_retries_left_is_retried_after_the_interval() -> None:
    """A failed run with retries left makes the job RETRY, scheduled at now + retry interval."""
    job = processing(retry=True, retry_count=2)
    change = lifecycle.end_run(job, lifecycle.Failed("boom"), at(3), interval)
    assert change is not None
    done = change.job
    assert done.state is State.RETRY
    assert done.scheduled_for == at(3 + 10)
    assert done.last_error == "boom"
    assert done.runs == (Run(1, T0, 3.0, State.FAIL, "boom"),)
    assert done.finish_time is None and not done.complete and not change.finished
    assert change.events == ("fail",)

    second = lifecycle.end_run(next_run(done, at(20)), lifecycle.Failed("again"), at(21), interval)
    assert second is not None
    assert second.job.state is State.RETRY
    assert second.job.scheduled_for == at(21 + 20)  # the interval of retry number 2


def test_failure_with_retries_exhausted_fails_for_good() -> None:
    """Once retry_count failures have been retried, the next failure ends the job as FAIL."""
    job = processing(retry=True, retry_count=1)
    first = lifecycle.end_run(job, lifecycle.Failed("one"), at(1), interval)
    assert first is not None and first.job.state is State.RETRY
    last = lifecycle.end_run(next_run(first.job, at(11)), lifecycle.Failed("two"), at(12), interval)
    assert last is not None
    done = last.job
    assert done.state is State.FAIL
    assert done.complete and not done.success and last.finished
    assert done.finish_time == at(12)
    assert done.scheduled_for is None
    assert done.last_error == "two"
    assert [(run.count, run.state) for run in done.runs] == [(1, State.FAIL), (2, State.FAIL)]
    assert last.events == ("fail",)


def test_failure_without_retry_fails_at_once() -> None:
    """With retry off, the first failure ends the job as FAIL."""
    change = lifecycle.end_run(processing(retry=False), lifecycle.Failed("x"), at(1), interval)
    assert change is not None
    assert change.job.state is State.FAIL
    assert change.job.complete
    assert change.job.runs[-1].state is State.FAIL


def test_ghost_with_ghosts_left_is_rerun_after_the_ghost_interval() -> None:
    """An overrun run with ghosts left makes the job GHOST, scheduled at now + ghost_interval."""
    job = processing(ghost_retry=True, ghost_count=1, ghost_interval=60.0, process_timeout=2.0)
    change = lifecycle.end_run(job, lifecycle.Ghosted(), at(2), interval)
    assert change is not None
    done = change.job
    assert done.state is State.GHOST
    assert done.scheduled_for == at(2 + 60)
    assert not done.complete
    assert done.runs[-1].state is State.GHOST
    assert done.runs[-1].process_time == 2.0
    assert done.last_error is not None and done.last_error == done.runs[-1].error
    assert change.events == ("fail",)


def test_ghost_without_ghost_retry_fails() -> None:
    """With ghost_retry off, a ghosted run ends the job as FAIL whose last run says ghost."""
    change = lifecycle.end_run(processing(ghost_retry=False), lifecycle.Ghosted(), at(5), interval)
    assert change is not None
    assert change.job.state is State.FAIL
    assert change.job.complete
    assert change.job.runs[-1].state is State.GHOST


def test_ghosts_exhausted_fails() -> None:
    """After ghost_count re-runs, the next ghost ends the job as FAIL."""
    job = processing(ghost_count=1)
    first = lifecycle.end_run(job, lifecycle.Ghosted(), at(1), interval)
    assert first is not None and first.job.state is State.GHOST
    last = lifecycle.end_run(next_run(first.job, at(2)), lifecycle.Ghosted(), at(3), interval)
    assert last is not None
    assert last.job.state is State.FAIL
    assert last.job.runs[-1].state is State.GHOST


def test_success_records_the_result() -> None:
    """A successful run makes the job SUCCESS with the handler's result and a finish time."""
    change = lifecycle.end_run(processing(), lifecycle.Succeeded({"w": 10}), at(1.5), interval)
    assert change is not None
    done = change.job
    assert done.state is State.SUCCESS
    assert done.success and done.complete
    assert done.result == {"w": 10}
    assert done.finish_time == at(1.5)
    assert done.runs == (Run(1, T0, 1.5, State.SUCCESS),)
    assert done.total_process_time == 1.5
    assert change.events == ("success",)


def test_end_run_ignores_a_job_that_is_not_processing() -> None:
    """end_run decides nothing for a job that has no run in progress."""
    queued = Job(id="x", name="n", state=State.QUEUED, create_time=T0)
    assert lifecycle.end_run(queued, lifecycle.Failed("x"), at(1), interval) is None


@pytest.mark.parametrize(
    "outcomes",
    [
        (lifecycle.Failed("f"), lifecycle.Ghosted(), lifecycle.Succeeded(1)),
        (lifecycle.Ghosted(), lifecycle.Failed("f"), lifecycle.Succeeded(1)),
    ],
    ids=["fail-then-ghost", "ghost-then-fail"],
)
def test_failures_and_ghosts_are_counted_separately(
    outcomes: tuple[lifecycle.Outcome, ...],
) -> None:
    """With retry_count=1 and ghost_count=1 a job can fail once and ghost once and still run."""
    job = processing(retry=True, retry_count=1, ghost_retry=True, ghost_count=1)
    now = 0.0
    for outcome in outcomes[:-1]:
        now += 1
        change = lifecycle.end_run(job, outcome, at(now), interval)
        assert change is not None
        assert not change.job.complete, f"{outcome} ended the job: {change.job.state}"
        now += 100
        job = next_run(change.job, at(now))
    final = lifecycle.end_run(job, outcomes[-1], at(now + 1), interval)
    assert final is not None
    assert final.job.state is State.SUCCESS
    assert [run.count for run in final.job.runs] == [1, 2, 3]


def test_a_second_failure_after_a_ghost_fails_for_good() -> None:
    """Ghosts do not use up retries, but failures beyond retry_count still end the job."""
    job = processing(retry=True, retry_count=1, ghost_count=1)
    states = []
    for n, outcome in enumerate(
        [lifecycle.Failed("a"), lifecycle.Ghosted(), lifecycle.Failed("b")], start=1
    ):
        change = lifecycle.end_run(job, outcome, at(n * 100), interval)
        assert change is not None
        states.append(change.job.state)
        job = next_run(change.job, at(n * 100 + 50)) if not change.job.complete else change.job
    assert states == [State.RETRY, State.GHOST, State.FAIL]
    assert job.last_error == "b"


@pytest.mark.parametrize(
    ("returned", "expected"),
    [(1e300, 1e10), (float("inf"), 1e10), (float("nan"), 0.0), (-5.0, 0.0)],
    ids=["huge", "inf", "nan", "negative"],
)
def test_absurd_retry_interval_from_a_function_is_clamped(returned: float, expected: float) -> None:
    """A retry_interval function returning a huge, negative or NaN wait still schedules a retry."""
    job = processing(retry=True, retry_count=1)
    change = lifecycle.end_run(job, lifecycle.Failed("x"), at(1), lambda job, n: returned)
    assert change is not None
    assert change.job.state is State.RETRY
    assert change.job.scheduled_for == at(1 + expected)


def test_an_event_without_runs_reads_as_a_job_with_none() -> None:
    """An event that leaves `runs` out (a minimal message) is a job with no runs, not an
    error."""
    job = from_event(json.dumps({"id": "a" * 32, "name": "n", "state": "queued"}))
    assert job.runs == () and job.state is State.QUEUED
