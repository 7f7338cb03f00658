"""Each Lua script's header names its KEYS and ARGV as the Python that builds its calls does.

A script's header lists, one per line, `-- KEYS[<place>]  <names>: what it is` and the same for
ARGV; its `Shape` (kickq/_redis/lua.py, declared in store.py and schedule_store.py) lists the
names the calls are built from, in order. The two must agree, and every call kickq sends must
lay its arguments out as its shape says.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

import pytest
import redis

import kickq._redis.dependency_store
import kickq._redis.schedule_store
import kickq._redis.store
from kickq._model import clock, lifecycle
from kickq._redis import lua
from kickq._redis.runner import ScriptCall
from kickq._redis.stored import Damaged, StoredJob
from support import RedisServer

_SCRIPTS = resources.files("kickq._redis").joinpath("scripts")
SCRIPTS = sorted(
    entry.name[: -len(".lua")]
    for entry in _SCRIPTS.iterdir()
    if entry.name.endswith(".lua") and entry.name != "lib.lua"
)
_ENTRY = re.compile(r"-- (KEYS|ARGV)\[([^\]]+)\]  ([a-z_][a-z0-9_]*(?:, [a-z_][a-z0-9_]*)*): \S")
Row = tuple[str, str, tuple[str, ...]]


def header_of(text: str) -> list[Row]:
    """The KEYS and ARGV lines of the comment a script starts with: (KEYS or ARGV, place,
    names). A line that starts like one but is not in their shape fails the test."""
    rows: list[Row] = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        if line.startswith(("-- KEYS[", "-- ARGV[")):
            found = _ENTRY.match(line)
            assert found, f"a header line not in the shape `-- KEYS[n]  name: ...`: {line!r}"
            rows.append((found[1], found[2], tuple(found[3].split(", "))))
    return rows


def disagreements(text: str, shape: lua.Shape) -> list[str]:
    """How the header of a script's `text` and its shape differ (nothing when they agree)."""
    header, declared = header_of(text), shape.header()
    found = [
        f"line {i + 1}: the header says {said}, the shape {meant}"
        for i, (said, meant) in enumerate(zip(header, declared, strict=False))
        if said != meant
    ]
    if len(header) != len(declared):
        found.append(f"the header has {len(header)} lines, the shape {len(declared)}")
    return found


def test_every_script_has_a_shape() -> None:
    assert SCRIPTS and sorted(lua.SHAPES) == SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_header_names_what_the_builder_sends(name: str) -> None:
    assert disagreements(lua._read(name), lua.SHAPES[name]) == []


def test_a_header_and_a_builder_that_disagree_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    text = lua._read("transition")
    shape = lua.SHAPES["transition"]
    assert disagreements(text, shape) == []
    # two arguments swapped in the header
    swapped = text.replace("ARGV[1]  version:", "ARGV[1]  id:").replace(
        "ARGV[2]  id:", "ARGV[2]  version:"
    )
    assert len(disagreements(swapped, shape)) == 2
    # one argument missing from the header: every place after it is wrong, and the count
    lines = len(shape.header())
    missing = "\n".join(line for line in text.splitlines() if "  wake: " not in line)
    assert f"the header has {lines - 1} lines, the shape {lines}" in disagreements(missing, shape)
    # a builder that sends one more argument, or the same ones in another order
    monkeypatch.setattr(lua, "SHAPES", {})
    longer = lua.Shape("transition", shape.key_entries, (*shape.arg_entries, "more"))
    assert disagreements(text, longer) == [f"the header has {lines} lines, the shape {lines + 1}"]
    monkeypatch.setattr(lua, "SHAPES", {})
    keys = list(shape.key_entries)
    keys[1], keys[2] = keys[2], keys[1]
    assert len(disagreements(text, lua.Shape("transition", keys, shape.arg_entries))) == 2
    # a line that cannot be read
    with pytest.raises(AssertionError, match="not in the shape"):
        header_of(text.replace("-- KEYS[1]  job: ", "-- KEYS[1] the job: "))


def test_the_places_of_runs_read_as_the_scripts_use_them() -> None:
    rows = lua.SHAPES["stats"].header()
    assert rows[-3:] == [
        ("ARGV", "3", ("n",)),
        ("ARGV", "4 .. 3+2n", ("before", "after")),
        ("ARGV", "4+2n ..", ("name",)),
    ]
    transition = lua.SHAPES["transition"]
    assert transition.arg_at("version") == 0
    assert transition.arg_at("again") == -1
    assert lua.SHAPES["claim"].arg_at("names") == 9
    assert transition.arg_at("channels") == 12  # after its count
    assert transition.arg_at("fields") == -3
    with pytest.raises(ValueError, match="no fixed place"):
        lua.SHAPES["create"].arg_at("shared")  # between two runs
    with pytest.raises(KeyError):
        transition.arg_at("nothing")


def test_a_call_is_built_from_every_name_and_no_other() -> None:
    pause = lua.SHAPES["pause"]
    assert pause.args(action="pause", name="n", wake="w") == ["pause", "n", "w"]
    with pytest.raises(TypeError):
        pause.args(action="pause", name="n")
    with pytest.raises(TypeError):
        pause.args(action="pause", name="n", wake="w", more="x")
    with pytest.raises(TypeError):
        pause.args("pause", "n", "w")  # by name only


def test_the_library_gives_each_script_what_it_uses() -> None:
    claim = lua.load_script("claim")
    assert "local MAX_DURATION = " in claim and "local function announce(" in claim
    assert "local function wrong_type(" in claim  # used by a part it uses
    assert "local function lay_out(" not in claim
    due = lua.load_script("due")
    assert due == lua._read("due")  # uses nothing of it
    # no script defines a local of the library's again
    parts = set(lua._parts())
    for name in SCRIPTS:
        defined = re.findall(r"^\s*local (?:function )?([A-Za-z_]\w*)", lua._read(name), re.M)
        assert not parts & set(defined), name


def test_constants_are_written_as_lua_reads_them() -> None:
    assert lua.lua_literal(64) == "64"
    assert lua.lua_literal(1e10) == "10000000000.0"
    assert lua.lua_literal("it's") == "'it\\'s'"
    assert lua.lua_literal(("a", "b")) == "{ 'a', 'b' }"
    assert lua.lua_literal(frozenset({"b", "a"})) == "{ ['a'] = true, ['b'] = true }"
    with pytest.raises(ValueError):
        lua.lua_literal("é")
    with pytest.raises(ValueError):
        lua.lua_literal(float("inf"))


# -- what kickq sends ------------------------------------------------------------------------


def names_sent(entries: Sequence[lua.Entry], sent: Sequence[Any]) -> list[str]:
    """The name of each item of `sent`, read as `entries` lay them out (a Counted run by the
    count sent before it); fails when `sent` does not fit them."""
    names: list[str] = []
    at = 0
    for entry in entries:
        if isinstance(entry, str):
            names.append(entry)
            at += 1
        elif isinstance(entry, lua.Counted):
            count = int(sent[at])
            names += ["n", *(entry.names * count)]
            at += 1 + count * len(entry.names)
        else:
            rest = len(sent) - at
            assert rest % len(entry.names) == 0, (entry, sent)
            names += list(entry.names) * (rest // len(entry.names))
            at = len(sent)
    assert at == len(sent), (entries, sent)
    return names


@pytest.fixture
def recorded(redis_server: RedisServer) -> Iterator[tuple[kickq._redis.store.Store, list[Any]]]:
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    store = kickq._redis.store.Store(client, "headers")
    sent: list[ScriptCall] = []
    run_batch = store.run_batch

    def recording(calls: Sequence[ScriptCall]) -> list[Any]:
        sent.extend(calls)
        return run_batch(calls)

    store.run_batch = recording  # type: ignore[method-assign]
    yield store, sent
    client.close()


def test_every_call_kickq_sends_fits_its_shape(
    recorded: tuple[kickq._redis.store.Store, list[ScriptCall]],
) -> None:
    store, sent = recorded
    schedules = kickq._redis.schedule_store.ScheduleStore(store)
    now = clock.now()
    made = [
        lifecycle.create(store.new_id("h"), "h", {"n": n}, {"delay": delay}, now, key)
        for n, (delay, key) in enumerate([(None, None), (None, "k"), (30, None)])
    ]
    for change in made:
        assert store.run(store.create_call([change], [f'{{"n":{made.index(change)}}}'])) == [1]
    store.run(store.settle_call([made[0].job.id, store.new_id("h")]))
    claim = store.claim_call(["h"], 2, "w", "token")
    claimed = store.parse_claimed(store.run(claim))
    assert len(claimed) == 2 and isinstance(claimed[0], StoredJob)
    store.run(store.reclaim_call(claim))
    change = lifecycle.end_run(claimed[0].job, lifecycle.Succeeded(1), now, lambda j, n: 0.0)
    assert change is not None
    assert store.run(store.progress_call(claimed[1].job.id, 1, "1", "{}", "progress:x:1")) == 1
    store.run(store.sent_again(store.transition_call(change, claimed[0], 60.0, ("also",))))
    store.run(store.pause_call("h", "pause"))
    store.run(store.limit_call("h", (5, 1.0), 2))
    store.run(store.stats_call(["h"], clock.to_ms(now) // 60_000))
    store.pending(["h"], clock.to_ms(now))
    store.due(clock.to_ms(now), 10)
    store.purge(clock.to_ms(now), 10)
    store.unlist([(made[2].job.id, "scheduled")])
    store.quarantine(Damaged(made[1].job.id, {}, "why"))
    store.delete(made[2].job.id)
    schedules.save("s", '{"spec":"x"}', "x", 5)
    schedules.due(10, 10)
    store.run(schedules.advance_call("s", 5, 10, "x"))
    schedules.remove("s")
    dependencies = kickq._redis.dependency_store.DependencyStore(store)
    parent = made[0].job.id
    adopting = dependencies.adopt_calls(store.new_id("h"), [parent])
    store.run_all(adopting)
    dependencies.take([f"end:{parent}", f"link:{parent}"], clock.to_ms(now), 1000)
    store.run_all(dependencies.done_calls({f"end:{parent}": ["c"], f"link:{parent}": []}))

    by_sha = {hashlib.sha1(lua.load_script(name).encode()).hexdigest(): name for name in SCRIPTS}
    seen = set()
    for script, keys, args in sent:
        name = by_sha[script.sha]
        seen.add(name)
        shape = lua.SHAPES[name]
        names_sent(shape.key_entries, keys)
        names_sent(shape.arg_entries, args)
    assert seen == set(SCRIPTS)
    assert names_sent(lua.SHAPES["create"].arg_entries, sent[0][2])[-4:] == [
        "id",
        "data",
        "unique_key",
        "lock",
    ]


def test_a_call_that_does_not_fit_its_shape_is_found() -> None:
    shape = lua.SHAPES["settle"]
    assert names_sent(shape.arg_entries, [1, 2, "a", "b"]) == ["now_ms", "fence_ms", "id", "id"]
    transition = lua.SHAPES["transition"].arg_entries
    fitting = [*range(11), 2, "c1", "c2", "fields", "", ""]
    assert names_sent(transition, fitting)[11:14] == ["n", "channels", "channels"]
    with pytest.raises(AssertionError):
        names_sent(transition, [*fitting, "one more"])
    with pytest.raises(AssertionError):
        names_sent(lua.SHAPES["claim"].key_entries, ["k"] * 7)  # 6, then four per name
