"""Input that cannot travel through Redis fails alone, with the documented error, before it
joins a batch: deep data, non-str keys, names, ids and namespaces that are not UTF-8 text;
and two namespaces never share a key, even when one extends the other."""

from __future__ import annotations

import concurrent.futures
import os
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

import kickq
import kickq._engine.runtime
from kickq._model.json import MAX_DEPTH
from kickq._redis.keys import EVENTS, Keys
from support import all_keys

pytestmark = [pytest.mark.both_backends, pytest.mark.both_parsers]

LONE_SURROGATE = os.fsdecode(b"caf\xe9")  # 'caf\udce9': what os.fsdecode makes of Latin-1


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels - 1):
        value = [value]
    return [value]


def assert_fails(future: concurrent.futures.Future[Any], error: type[Exception]) -> Exception:
    exc = future.exception(10)
    assert isinstance(exc, error), repr(exc)
    return exc


def test_data_nested_5000_deep_fails_the_future_not_the_call(r: Any) -> None:
    """create() of data nested 5,000 deep returns a future failing with SerializationError."""
    future = kickq.create("deep", nested(5000))
    assert "256" in str(assert_fails(future, kickq.SerializationError))
    assert not [key for key in all_keys(r) if ":job:" in key]


def test_the_documented_nesting_depth_is_the_limit() -> None:
    """Data nested exactly MAX_DEPTH deep is saved and read back; one level more is refused,
    for data and for a handler's result alike."""
    assert MAX_DEPTH == 256
    job = kickq.create("deep", nested(MAX_DEPTH)).result(5)
    assert kickq.get(job.id).result(5).data == nested(MAX_DEPTH)
    assert_fails(kickq.create("deep", {"a": nested(MAX_DEPTH)}), kickq.SerializationError)
    kickq.process("deep", lambda job, data: [data])  # one level deeper than allowed
    with pytest.raises(kickq.JobFailed, match="256"):
        kickq.wait(job.id, timeout=5).result(10)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({1: "a", "1": "b"}, id="int-and-str-key"),
        pytest.param({1: "a"}, id="int-key"),
        pytest.param({"ok": [{None: 1}]}, id="nested-none-key"),
        pytest.param({(1, 2): "a"}, id="tuple-key"),
        pytest.param({True: "a"}, id="bool-key"),
    ],
)
def test_dict_keys_that_are_not_str_are_refused(r: Any, data: Any) -> None:
    """Data whose dicts have non-str keys would come back changed: SerializationError, and
    nothing stored."""
    assert_fails(kickq.create("keys", data), kickq.SerializationError)
    assert not [key for key in all_keys(r) if ":job:" in key]


@pytest.mark.single_backend  # pure: never reaches Redis
def test_a_circular_structure_is_refused() -> None:
    """Data that contains itself fails with SerializationError instead of hanging."""
    loop: list[Any] = []
    loop.append(loop)
    assert_fails(kickq.create("loop", loop), kickq.SerializationError)


def test_a_name_that_is_not_utf8_fails_alone_among_1000_creates(r: Any) -> None:
    """A name holding a lone surrogate fails its own future with ConfigError (a ValueError);
    the 1,000 creates batched around it are all saved."""
    futures = [kickq.create("fine", i) for i in range(500)]
    bad = kickq.create(LONE_SURROGATE, "x")
    futures += [kickq.create("fine", i) for i in range(500, 1000)]
    error = assert_fails(bad, kickq.ConfigError)
    assert isinstance(error, ValueError) and "UTF-8" in str(error)
    jobs = [future.result(10) for future in futures]
    assert sorted(job.data for job in jobs) == list(range(1000))
    assert sum(1 for key in all_keys(r) if ":job:" in key) == 1000
    others = [key for key in all_keys(r) if ":job:" not in key and "fine" not in key]
    assert [key for key in others if not key.endswith(":names")] == []
    assert kickq.jobs().count().result(5) == 1000 and set(kickq.stats().result(5)) == {"fine"}


@pytest.mark.single_backend  # pure: never reaches Redis
def test_names_and_namespaces_that_are_not_utf8_are_refused_everywhere() -> None:
    """process(), job_flags and redis_namespace refuse text that cannot be encoded as UTF-8."""
    with pytest.raises(kickq.ConfigError):
        kickq.process(LONE_SURROGATE, lambda job, data: None)
    with pytest.raises(kickq.ConfigError):
        kickq.config(job_flags={LONE_SURROGATE: {"retry": True}})
    with pytest.raises(kickq.ConfigError):
        kickq.config(redis_namespace=LONE_SURROGATE)
    with pytest.raises(kickq.ConfigError, match="must not contain"):
        kickq.config(redis_namespace="app{1}")


def test_ids_kickq_cannot_have_made_never_reach_redis_keys_or_the_listener(r: Any) -> None:
    """get, wait and delete with an id that is not UTF-8 text (or not an id kickq makes) fail
    alone with JobNotFound (delete: False), and pub/sub keeps working afterwards."""
    for bad_id in (LONE_SURROGATE, "x" * 33, "job:1", "ABCDEF" + "0" * 26):
        with pytest.raises(kickq.JobNotFound):
            kickq.wait(bad_id).result(10)
        with pytest.raises(kickq.JobNotFound):
            kickq.get(bad_id).result(10)
        assert kickq.delete(bad_id).result(10) is False
    kickq.process("after", lambda job, data: data)
    first = kickq.create("after", "before the kill", hotjob=True).result(5)
    assert first.hotjob_future is not None and first.hotjob_future.result(10)
    kill_pubsub(r)  # the listener reconnects and subscribes again, with no error
    job = kickq.create("after", "ok", hotjob=True).result(5)
    assert job.hotjob_future is not None
    assert job.hotjob_future.result(10).result == "ok"


def kill_pubsub(r: Any) -> None:
    if isinstance(r, redis.RedisCluster):
        for node in r.get_primaries():
            r.get_redis_connection(node).execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    else:
        r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")


# -- namespaces -------------------------------------------------------------------------------


def test_a_namespace_extending_another_shares_no_key(r: Any) -> None:
    """Namespaces "app" and "app:queue": a job named "scheduled" in "app" and delayed jobs in
    "app:queue" (whose scheduled set was once the same key) both work, on disjoint keys."""
    kickq.config(redis_namespace="app")
    plain = kickq.create("scheduled", "in app").result(5)
    app_keys = set(all_keys(r))
    kickq.config(redis_namespace="app:queue")
    delayed = kickq.create("x", "in app:queue", delay=0.2).result(5)
    kickq.process("x", lambda job, data: data)
    assert kickq.wait(delayed.id, timeout=5).result(10).result == "in app:queue"
    assert app_keys <= set(all_keys(r))  # app's keys untouched
    kickq.config(redis_namespace="app")
    kickq.process("scheduled", lambda job, data: data)
    assert kickq.wait(plain.id, timeout=5).result(10).result == "in app"


SEGMENT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="{}"), max_size=6
)
NAME = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=8)
HEX_ID = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)


def every_key(keys: Keys, names: list[str], ids: list[str]) -> set[str]:
    found = {keys.scheduled, keys.processing, keys.finished}
    found |= {keys.queue(name) for name in names}
    found |= {keys.limits(name) for name in names} | {keys.starts(name) for name in names}
    found |= {keys.job(job_id) for job_id in ids} | {keys.damaged(job_id) for job_id in ids}
    return found


def every_channel(keys: Keys, names: list[str], ids: list[str]) -> set[str]:
    found = {keys.event(event) for event in EVENTS} | {keys.cancel}
    found |= {keys.wake(name) for name in names} | {keys.done(job_id) for job_id in ids}
    return found


@pytest.mark.single_backend
@settings(max_examples=300, deadline=None)
@given(
    base=SEGMENT.filter(bool),
    extension=st.lists(SEGMENT, min_size=1, max_size=3),
    partitioned=st.booleans(),
    names=st.lists(NAME, min_size=1, max_size=4),
    ids=st.lists(HEX_ID, max_size=3),
)
def test_no_two_namespaces_share_a_key_or_a_channel(
    base: str, extension: list[str], partitioned: bool, names: list[str], ids: list[str]
) -> None:
    """For any namespace and any namespace extending it with ':...', and any job names and
    ids, the keys and channels of the two are disjoint (on a single node and on a cluster)."""
    longer = ":".join([base, *extension])
    first, second = (Keys(base, 0), Keys(longer, 0)) if partitioned else (Keys(base), Keys(longer))
    # names may be anything: pick the worst, the other namespace's own words among them
    hostile = [*names, "scheduled", *(f"{seg}:scheduled" for seg in extension), "x}:queue:{y"]
    assert not every_key(first, hostile, ids) & every_key(second, hostile, ids)
    assert not every_channel(first, hostile, ids) & every_channel(second, hostile, ids)


def test_any_unicode_name_data_and_meta_round_trip(r: Any) -> None:
    """Names, data and meta with accents, characters beyond the BMP and NUL come back exactly,
    from get(), from a handler and in the stored record."""
    name = "naïve-😀-名前\x00x"
    job = kickq.create(name, {"k": "😀\x00"}, meta={"m": "é😀"}).result(5)
    stored = kickq.get(job.id).result(5)
    assert (stored.name, stored.data, stored.meta) == (name, {"k": "😀\x00"}, {"m": "é😀"})
    kickq.process(name, lambda job, data: [job.name, data])
    assert kickq.wait(job.id, timeout=5).result(10).result == [name, {"k": "😀\x00"}]
    many = kickq.create_many(name, ["ü", "😀"])
    assert [future.result(5).data for future in many] == ["ü", "😀"]
