"""Big values: data, meta and results up to `max_value_bytes` are stored whole and run once;
larger ones are refused before anything is stored (data, meta, a unique key, a schedule's data)
or fail their run cleanly (a result); long error texts are cut; and a run's end that Redis
refuses for good ends the run as a failure once, never re-sent until the run is ghosted."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest

import kickq
import kickq._engine.runtime
from kickq._model.lifecycle import MAX_ERROR_CHARS
from support import all_keys, job_key, wait_until

pytestmark = [pytest.mark.both_backends, pytest.mark.both_parsers]

KB = 1024
MIB = 1024 * KB


def text(size: int) -> str:
    """A str whose JSON text is `size` bytes."""
    return "x" * (size - 2)


def job_keys(client: Any) -> list[str]:
    return [key for key in all_keys(client) if ":job:" in key]


def refused(future: kickq.KickqFuture[Any]) -> BaseException:
    error = future.exception(10)
    assert isinstance(error, kickq.SerializationError), repr(error)
    assert "max_value_bytes" in str(error)
    return error


def test_256_kb_data_and_meta_are_stored_whole_and_run_once(r: Any) -> None:
    """A job with 256 kB of data and of meta is saved in one field each (the hash stays a
    handful of fields), runs once, and its 300 kB result is its outcome."""
    data, meta = text(256 * KB), {"blob": text(256 * KB)}
    runs: list[str] = []

    def handler(job: kickq.Job, value: Any) -> str:
        runs.append(job.id)
        assert value == data and job.meta == meta
        return text(300 * KB)

    job = kickq.create("big", data, meta=meta).result(10)
    fields = r.hgetall(job_key(job.id))
    assert len(fields["data"]) == 256 * KB and "data~1" not in fields
    assert not [name for name in fields if "~" in name]
    assert kickq.get(job.id).result(10).data == data
    kickq.process("big", handler)
    done = kickq.wait(job.id, timeout=30).result(35)
    assert done.state is kickq.State.SUCCESS and done.result == text(300 * KB)
    assert [run.state for run in done.runs] == [kickq.State.SUCCESS]
    assert runs == [job.id]
    assert kickq.get(job.id).result(10).result == text(300 * KB)


def test_values_at_max_value_bytes_are_saved_one_byte_more_refused(r: Any) -> None:
    """Data, meta and a unique key of exactly max_value_bytes are saved; one byte more fails
    create() with SerializationError, and nothing is stored."""
    kickq.config(max_value_bytes=4 * KB)
    saved = kickq.create("edge", text(4 * KB), meta={"m": text(4 * KB - 6)}).result(10)
    assert kickq.get(saved.id).result(10).data == text(4 * KB)
    before = job_keys(r)
    refused(kickq.create("edge", text(4 * KB + 1)))
    refused(kickq.create("edge", None, meta={"m": text(4 * KB - 5)}))
    refused(kickq.create("edge", None, unique_key="k" * (4 * KB - 1)))
    assert job_keys(r) == before


def test_data_over_the_default_maximum_stores_nothing(r: Any) -> None:
    """The default maximum is 1 MiB: 1 MiB of data is saved, a byte more is refused."""
    assert kickq.config()["max_value_bytes"] == MIB
    refused(kickq.create("edge", text(MIB + 1)))
    assert job_keys(r) == []
    job = kickq.create("edge", text(MIB)).result(10)
    assert job_keys(r) == [job_key(job.id)]


def test_create_many_refuses_the_big_item_alone(r: Any) -> None:
    kickq.config(max_value_bytes=4 * KB)
    futures = kickq.create_many("edge", ["small", text(4 * KB + 1), "also small"])
    refused(futures[1])
    jobs = [futures[0].result(10), futures[2].result(10)]
    assert sorted(job_keys(r)) == sorted(job_key(job.id) for job in jobs)
    assert all(refused(f) for f in kickq.create_many("edge", [1, 2], meta={"m": text(5 * KB)}))
    assert len(job_keys(r)) == 2


def test_a_schedule_with_data_over_the_maximum_stores_nothing(r: Any) -> None:
    kickq.config(max_value_bytes=4 * KB)
    refused(kickq.schedule("edge", text(4 * KB + 1), every=60))
    refused(kickq.schedule("edge", None, every=60, meta={"m": text(4 * KB)}))
    assert all_keys(r) == []


def test_a_result_over_the_maximum_fails_its_run_once(r: Any) -> None:
    """A handler's result over max_value_bytes fails the run, saying so: one run, no ghost.
    The job's retry options apply to it as to any failure."""
    kickq.config(max_value_bytes=4 * KB)
    runs: list[int] = []

    def handler(job: kickq.Job, data: Any) -> str:
        runs.append(job.runs[-1].count)
        return text(4 * KB + 1)

    kickq.process("res", handler)
    job = kickq.create("res", None, process_timeout=60).result(10)
    with pytest.raises(kickq.JobFailed) as failed:
        kickq.wait(job.id, timeout=30).result(35)
    ended = failed.value.job
    assert ended.last_error is not None and "max_value_bytes" in ended.last_error
    assert [run.state for run in ended.runs] == [kickq.State.FAIL]
    assert runs == [1] and ended.result is None
    retried = kickq.create("res", None, retry=True, retry_count=1, retry_interval=0).result(10)
    with pytest.raises(kickq.JobFailed) as again:
        kickq.wait(retried.id, timeout=30).result(35)
    assert [run.state for run in again.value.job.runs] == [kickq.State.FAIL] * 2


def test_a_long_error_text_is_cut(r: Any) -> None:
    """An exception's message of 1 MB is kept as its first MAX_ERROR_CHARS characters and a
    note of how many were cut, in the run and in last_error."""

    def handler(job: kickq.Job, data: Any) -> None:
        raise RuntimeError("E" * 1_000_000)

    kickq.process("err", handler)
    job = kickq.create("err").result(10)
    with pytest.raises(kickq.JobFailed):
        kickq.wait(job.id, timeout=30).result(35)
    back = kickq.get(job.id).result(10)
    assert back.last_error == back.runs[0].error
    assert back.last_error is not None
    text = "RuntimeError: " + "E" * 1_000_000
    assert back.last_error.startswith(text[:MAX_ERROR_CHARS])
    assert back.last_error.endswith(f"[{len(text) - MAX_ERROR_CHARS} more characters cut]")


def test_a_record_in_64_byte_pieces_is_read_and_rewritten_whole(r: Any) -> None:
    """A record whose 600 kB of data is in 9,600 pieces of 64 bytes (the older layout, which
    an older kickq could not write past 256 kB) runs, and its end leaves the data in one
    field, the 9,599 other pieces removed."""
    data = text(600 * KB)
    job = kickq.create("old", data, process_timeout=60).result(10)
    key, stored = job_key(job.id), json.dumps(data)
    pieces = {f"data~{n}" if n else "data": stored[n * 64 : n * 64 + 64] for n in range(9600)}
    pipe = r.pipeline(transaction=False)
    for start in range(0, 9600, 500):
        pipe.hset(key, mapping=dict(list(pieces.items())[start : start + 500]))
    pipe.execute()
    assert r.hlen(key) > 9600
    kickq.process("old", lambda job, value: len(value))
    done = kickq.wait(job.id, timeout=30).result(35)
    assert done.result == len(data) and done.data == data
    fields = r.hgetall(key)
    assert fields["data"] == stored and not [name for name in fields if name.startswith("data~")]


def minutes_key(name: str) -> str:
    return kickq._engine.runtime.get().store.keys_of_name(name).minutes(name)


def refusals(caplog: pytest.LogCaptureFixture, job_id: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.ERROR
        and "Redis refused" in record.getMessage()
        and job_id in record.getMessage()
    ]


def test_an_end_redis_refuses_fails_the_run_once_instead(
    r: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis refuses a run's success for good (a key of the wrong type): the run ends as a
    failure saying why, once and logged, then retried as the job's options say; it is never
    sent again until the run is ghosted."""
    caplog.set_level(logging.ERROR, logger="kickq")
    release = threading.Event()
    kickq.process("refused", lambda job, data: release.wait(30) and "done")
    job = kickq.create("refused", None, process_timeout=60, retry=True, retry_interval=3600).result(
        10
    )
    wait_until(lambda: kickq.get(job.id).result(5).state is kickq.State.PROCESSING)
    r.set(minutes_key("refused"), "not a hash")  # read by the end of a run that completes
    release.set()
    wait_until(lambda: kickq.get(job.id).result(5).state is kickq.State.RETRY, what="retry")
    back = kickq.get(job.id).result(5)
    assert back.last_error is not None and "Redis refused the end of this run" in back.last_error
    assert "not a hash" in back.last_error
    assert [run.state for run in back.runs] == [kickq.State.FAIL]
    assert len(refusals(caplog, job.id)) == 1


def test_an_end_refused_twice_is_given_up_once(r: Any, caplog: pytest.LogCaptureFixture) -> None:
    """When Redis refuses the failure that replaced a refused end too, the worker logs it and
    leaves the run to its deadline: it does not send it again, and goes on with other jobs."""
    caplog.set_level(logging.ERROR, logger="kickq")
    release = threading.Event()
    kickq.process(["stuck", "fine"], lambda job, data: release.wait(30) and "done")
    job = kickq.create("stuck", None, process_timeout=60).result(10)
    wait_until(lambda: kickq.get(job.id).result(5).state is kickq.State.PROCESSING)
    r.set(minutes_key("stuck"), "not a hash")
    release.set()
    wait_until(lambda: len(refusals(caplog, job.id)) == 2, what="both refusals logged")
    later = kickq.create("fine").result(10)
    assert kickq.wait(later.id, timeout=30).result(35).state is kickq.State.SUCCESS
    messages = refusals(caplog, job.id)
    assert len(messages) == 2 and "too" in messages[1]
    assert kickq.get(job.id).result(5).state is kickq.State.PROCESSING
