"""A job's record stays a compact hash (a listpack) with realistic payloads, results, errors and
runs, and reads back whole: long values are cut into pieces of at most 64 bytes."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

import kickq
import kickq._engine.runtime
from kickq._model.json import dumps
from kickq._redis import lua
from kickq._redis.layout import MARK, PIECE, WHOLE_ABOVE, changes, gather, lay_out
from kickq._redis.record import encode
from support import job_key, wait_until

pytestmark = [pytest.mark.both_backends, pytest.mark.both_parsers]

PAYLOAD = {"user": 7, "path": "uploads/00000007.png", "sizes": [128, 256, 512], "note": "x" * 47}


def fields_of(client: Any, job_id: str) -> dict[str, str]:
    return dict(client.hgetall(job_key(job_id)))


def assert_compact(client: Any, job_id: str) -> None:
    key = job_key(job_id)
    assert client.object("encoding", key) == "listpack", fields_of(client, job_id)
    assert all(len(value.encode()) <= PIECE for value in fields_of(client, job_id).values())


def test_a_queued_job_with_a_119_byte_payload_is_a_listpack(r: Any) -> None:
    assert len(json.dumps(PAYLOAD, separators=(",", ":"))) == 119
    job = kickq.create("layout", PAYLOAD, meta={"trace": "t" * 100}).result(5)
    assert_compact(r, job.id)
    assert "data~1" in fields_of(r, job.id)
    back = kickq.get(job.id).result(5)
    assert back.data == PAYLOAD and back.meta == {"trace": "t" * 100}
    assert back.create_time == job.create_time


def test_a_finished_job_with_a_result_and_runs_is_a_listpack(r: Any) -> None:
    kickq.process("layout", lambda job, data: {"echo": data, "more": "y" * 80})
    job = kickq.create("layout", PAYLOAD).result(5)
    done = kickq.wait(job.id, timeout=10).result(15)
    assert done.result == {"echo": PAYLOAD, "more": "y" * 80}
    assert_compact(r, job.id)
    assert done.runs[0].state is kickq.State.SUCCESS


def test_unicode_data_is_cut_between_characters(r: Any) -> None:
    """Non-ASCII data and meta are cut into pieces and read back whole."""
    data = {"text": "ä€😀" * 40}
    job = kickq.create("layout", data, meta={"ключ": "ключ" * 30}).result(5)
    assert_compact(r, job.id)
    assert {"data~1", "meta~1"} <= set(fields_of(r, job.id))
    back = kickq.get(job.id).result(5)
    assert back.data == data and back.meta == {"ключ": "ключ" * 30}


def test_a_shorter_error_leaves_no_piece_of_the_longer_one(r: Any) -> None:
    """A run fails with a long error, the next with a short one: the old pieces are removed."""
    errors = iter(["E" * 200, "short"])

    def handler(job: kickq.Job, data: Any) -> None:
        raise RuntimeError(next(errors))

    kickq.process("layout", handler)
    job = kickq.create("layout", None, retry=True, retry_count=1, retry_interval=0).result(5)
    with pytest.raises(kickq.JobFailed) as failed:
        kickq.wait(job.id, timeout=10).result(15)
    assert failed.value.job.last_error is not None and "short" in failed.value.job.last_error
    wait_until(lambda: "last_error~1" not in fields_of(r, job.id), what="no stale piece")
    assert_compact(r, job.id)
    back = kickq.get(job.id).result(5)
    assert back.last_error == failed.value.job.last_error
    first_error = back.runs[0].error
    assert first_error is not None and first_error.endswith("E" * 100)


def test_pieces_that_do_not_follow_on_are_a_damaged_record(r: Any) -> None:
    job = kickq.create("layout", PAYLOAD).result(5)
    r.hset(job_key(job.id), "data~3", "x")
    with pytest.raises(kickq.KickqError, match="pieces of field 'data'"):
        kickq.get(job.id).result(5)


@pytest.mark.single_backend  # pure: never reaches Redis
def test_lay_out_and_gather_round_trip() -> None:
    record = {"name": "n", "data": "a" * 130, "meta": "é" * 70, "state": "queued"}
    fields = lay_out(record)
    assert set(fields) == {"name", "data", "data~1", "data~2", "meta", "meta~1", "meta~2", "state"}
    assert all(len(value.encode()) <= PIECE for value in fields.values())
    assert gather(fields) == record


@pytest.mark.single_backend  # pure: never reaches Redis
def test_a_value_over_2_kb_is_written_whole() -> None:
    """Past WHOLE_ABOVE bytes a value is one field; at it, still 64-byte pieces."""
    record = {"name": "n", "data": "a" * (WHOLE_ABOVE + 1), "result": "é" * (WHOLE_ABOVE // 2)}
    fields = lay_out(record)
    assert fields["data"] == record["data"] and "data~1" not in fields
    assert len([name for name in fields if name.startswith("result")]) == WHOLE_ABOVE // PIECE
    assert gather(fields) == record
    # a value that grows past it replaces its pieces with one field
    assert changes(lay_out({**record, "data": "a" * 100}), record, frozenset()) == {
        "data": record["data"],
        "data~1": None,
    }


@pytest.mark.parametrize("size", [WHOLE_ABOVE, WHOLE_ABOVE + 1])
def test_create_lays_data_out_as_the_transitions_do(r: Any, size: int) -> None:
    """create.lua cuts (or not) a job's data exactly as Python does, so that no later change
    of the job writes its data again."""
    data = "d" * (size - 2)  # its JSON text is `size` bytes
    job = kickq.create("layout", data).result(5)
    stored = fields_of(r, job.id)
    expected = lay_out({"data": json.dumps(data)})
    assert {name: value for name, value in stored.items() if name.startswith("data")} == expected


# every character JSON escapes, and characters beyond ASCII (escaped as \\uXXXX, and as a
# surrogate pair past U+FFFF)
ESCAPED = "".join(map(chr, range(0x20))) + '"\\/\x7f é€\u2028😀'


def json_of_size(size: int) -> str:
    """A JSON string of `size` bytes, as kickq encodes one (ASCII only), as full of escapes
    as it fits: escapes fall on both sides of the cuts between pieces."""
    text = ESCAPED * (size // len(ESCAPED) + 1)
    while len(json.dumps(text)) > size:
        text = text[: max(len(text) - max((len(json.dumps(text)) - size) // 6, 1), 0)]
    return json.dumps(text + "a" * (size - len(json.dumps(text))))


LUA_LAY_OUT = """
local fields = {}
for i = 1, #ARGV, 2 do lay_out(fields, ARGV[i], ARGV[i + 1]) end
return fields
"""


@pytest.mark.parametrize(
    "size",
    [
        2,
        PIECE - 1,
        PIECE,
        PIECE + 1,
        2 * PIECE,
        2 * PIECE + 1,
        WHOLE_ABOVE - 1,
        WHOLE_ABOVE,
        WHOLE_ABOVE + 1,
        5 * WHOLE_ABOVE,
    ],
)
def test_lua_lays_values_out_as_python_does(r: Any, size: int) -> None:
    """lib.lua's `lay_out` (create.lua's) writes the very fields `lay_out` here writes, for
    values of every length around the limits, escapes cut anywhere."""
    value = json_of_size(size)
    assert len(value) == size and value.isascii() and isinstance(json.loads(value), str)
    if size >= WHOLE_ABOVE:
        assert all(json.dumps(c)[1:-1] in value for c in ESCAPED)
    record = {"data": value, "unique_key": value[: size // 2 + 1]}
    script = lua.library_for(LUA_LAY_OUT) + LUA_LAY_OUT
    flat = r.eval(script, 0, *(item for pair in record.items() for item in pair))
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    assert list(fields.items()) == list(lay_out(record).items())
    assert gather(fields) == record
    assert ("data" + MARK + "1" in fields) == (PIECE < size <= WHOLE_ABOVE)


@pytest.mark.single_backend  # pure: never reaches Redis
def test_the_values_lua_cuts_are_ascii() -> None:
    """Lua cuts a new job's data and unique key byte by byte: kickq encodes both ASCII-only."""
    assert dumps({"ключ": ["é€😀", "\u2028"]}, "job data").isascii()
    assert encode("ключ 😀").isascii()


def test_a_long_reply_channel_is_never_cut(r: Any, target: Any) -> None:
    """A hotjob's record names its creator's reply channel, which the scripts publish on:
    however long the namespace makes it, it is one field, and deleting the job tells the
    creator at once (not at its hotjob_timeout)."""
    kickq.config(redis_namespace="a-namespace-long-enough-to-cut-a-channel")
    job = kickq.create("layout", 1, hotjob=True, hotjob_timeout=60).result(5)
    fields = fields_of(r, job.id)
    assert len(fields["reply_to"]) > PIECE and "reply_to~1" not in fields
    kickq.delete(job.id).result(5)
    assert job.hotjob_future is not None
    assert isinstance(job.hotjob_future.exception(timeout=10), kickq.JobNotFound)


@pytest.mark.single_backend  # pure: never reaches Redis
def test_changes_remove_what_the_new_record_no_longer_has() -> None:
    stored = lay_out({"name": "n", "data": "1", "last_error": "e" * 100, "result": "2"})
    written = changes(stored, {"name": "n", "data": "1", "last_error": "ok"}, frozenset({"result"}))
    assert written == {"last_error": "ok", "last_error~1": None, "result": None}


def test_the_run_deadline_comes_from_the_record_or_the_default_left_out(r: Any) -> None:
    """process_timeout is left out at its default (10 s) and written otherwise; the claim
    script sets the run's deadline from either. A run that ended leaves no run_start."""
    release = threading.Event()
    kickq.process("layout", lambda job, data: release.wait(10) and data, concurrent_jobs=2)
    default = kickq.create("layout", 1).result(5)
    custom = kickq.create("layout", 2, process_timeout=60).result(5)
    assert "process_timeout" not in fields_of(r, default.id)
    assert fields_of(r, custom.id)["process_timeout"] == "60.0"
    processing = kickq._engine.runtime.get().store.keys_of(default.id).processing
    wait_until(lambda: r.zcard(processing) == 2, what="both runs started")
    started = {
        job_id: int(fields_of(r, job_id)["run_start"]) // 1000 for job_id in (default.id, custom.id)
    }
    # the deadline is now in ms, the start now in µs: one millisecond apart at most
    assert abs(r.zscore(processing, default.id) - started[default.id] - 10_000) <= 1
    assert abs(r.zscore(processing, custom.id) - started[custom.id] - 60_000) <= 1
    release.set()
    for job in (default, custom):
        kickq.wait(job.id, timeout=10).result(15)
        assert "run_start" not in fields_of(r, job.id)
        assert kickq.get(job.id).result(5).runs[0].start_time is not None
