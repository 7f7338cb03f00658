"""The Lua scripts as sent, each with the lib.lua parts and constants it uses; KEYS, ARGV by name.

A script (scripts/<name>.lua) is sent with what it uses of scripts/lib.lua put before it, as
BullMQ's includes do: a part of the library is one paragraph defining one local, and a script
gets a part when its code names that local (or a part it gets does). Before them come the
constants the Lua code shares with Python, written as `local NAME = value` from one table,
`CONSTANTS`, whose values are Python's own: no number, text or list is written in both
languages. The text is made once, when the script is registered: no call sends more. (An
error's line number in Redis counts the library's lines before the script's.)

Each script's KEYS and ARGV are declared once, by name, in a `Shape` (store.py and
schedule_store.py declare theirs), and the shape builds them: a call is made from keyword
arguments, so that no argument can land in another's place. The header of each script lists
the same names in the same order (tests/test_script_headers.py checks it):

    -- KEYS[1]  name: what it is
    -- ARGV[12]  n: the number of channels
    -- ARGV[13 .. 12+n]  channels: ...    (a `Counted` run: n, then n of them)
    -- ARGV[13+n]  fields: ...
    -- KEYS[7 ..]  queue, processing_index, limits, starts: ...    (an `Each` run, to the end)
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from importlib import resources
from typing import Any

import attrs
from redis.commands.core import Script

from kickq._model.config import MAX_DURATION
from kickq._model.job import STATES
from kickq._redis.keys import BAND, HANDOVER_LEASE_MS, PRIORITY_BANDS, SEEN_STATES
from kickq._redis.layout import MARK, PIECE, WHOLE_ABOVE

LuaValue = int | float | str | Sequence[str] | Collection[str]
CONSTANTS: Mapping[str, LuaValue] = {
    "PIECE": PIECE,
    "WHOLE_ABOVE": WHOLE_ABOVE,
    "MARK": MARK,
    "BAND": BAND,
    "PRIORITY_BANDS": PRIORITY_BANDS,
    "MAX_DURATION": MAX_DURATION,
    "STATES": STATES,  # a set (frozenset): name -> true
    "SEEN_STATES": SEEN_STATES,  # a list (tuple), in order
    "HANDOVER_LEASE_MS": HANDOVER_LEASE_MS,
}
"""What the Lua code shares with Python, by the name the scripts use: the one source of each."""

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEFINES = re.compile(r"^local (?:function )?([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)


def lua_literal(value: LuaValue) -> str:
    """`value` as a Lua expression: a number, a string, a list (a tuple) or a set (name ->
    true, from a frozenset or set)."""
    if isinstance(value, bool):
        raise TypeError("no boolean constant is needed")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"not a finite number: {value!r}")
        return repr(value)
    if isinstance(value, str):
        return _lua_string(value)
    if isinstance(value, tuple | list):
        return "{ " + ", ".join(_lua_string(item) for item in value) + " }"
    return "{ " + ", ".join(f"[{_lua_string(item)}] = true" for item in sorted(value)) + " }"


def _lua_string(text: str) -> str:
    if not text.isascii() or not text.isprintable():
        raise ValueError(f"a constant's text is printable ASCII: {text!r}")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _code(text: str) -> str:
    """Lua text without its comments (none of kickq's strings holds "--")."""
    return re.sub(r"--.*", "", text)


@functools.cache
def _parts() -> dict[str, str]:
    """The parts a script may be given, in the order they are put before it: the constants,
    then lib.lua's paragraphs after its first (its header), by the name each defines."""
    parts = {name: f"local {name} = {lua_literal(value)}\n" for name, value in CONSTANTS.items()}
    text = _read("lib")
    for paragraph in text.split("\n\n")[1:]:
        defined = _DEFINES.findall(paragraph)
        if len(defined) != 1 or defined[0] in parts:
            raise ValueError(f"lib.lua: a part defines one new local, not {defined}")
        parts[defined[0]] = paragraph.strip("\n") + "\n"
    return parts


def _read(name: str) -> str:
    scripts = resources.files("kickq._redis").joinpath("scripts")
    return scripts.joinpath(f"{name}.lua").read_text(encoding="utf-8")


def library_for(code: str) -> str:
    """The parts of the library (constants and lib.lua) that Lua `code` uses, in order."""
    parts = _parts()
    wanted: set[str] = set()
    words = set(_WORD.findall(_code(code)))
    while True:
        new = (words & parts.keys()) - wanted
        if not new:
            break
        wanted |= new
        for name in new:
            words |= set(_WORD.findall(_code(parts[name])))
    return "".join(text for name, text in parts.items() if name in wanted)


@functools.cache
def load_script(name: str) -> str:
    """The text Redis runs for scripts/<name>.lua: the library parts it uses, then it."""
    text = _read(name)
    return library_for(text) + text


# -- the KEYS and ARGV of each script ----------------------------------------------------


@attrs.frozen
class Counted:
    """A run of arguments after its count: n, then n items of `names` (one argument each), given
    as one flat sequence called `param`."""

    param: str
    names: tuple[str, ...]


@attrs.frozen
class Each:
    """A run of arguments to the end of the list: items of `names` (one argument each), given as
    one flat sequence called `param`."""

    param: str
    names: tuple[str, ...]


Entry = str | Counted | Each
SHAPES: dict[str, Shape] = {}
"""Every script's shape, by the script's name (filled as the modules declaring them load)."""


class Shape:
    """A script's KEYS and ARGV by name, in order: `keys(**named)` and `args(**named)` build
    the lists a call sends (keyword arguments only, every one required), `header` gives the
    lines the script's header comment must have, `key_at` and `arg_at` where one is sent."""

    def __init__(self, script: str, keys: Sequence[Entry], args: Sequence[Entry]) -> None:
        self.script = script
        self.key_entries = tuple(keys)
        self.arg_entries = tuple(args)
        self.keys: Callable[..., list[Any]] = _packer(f"{script}_keys", self.key_entries)
        self.args: Callable[..., list[Any]] = _packer(f"{script}_args", self.arg_entries)
        if script in SHAPES:
            raise ValueError(f"script {script} has a shape already")
        SHAPES[script] = self

    def register(self, client: Any) -> Script:
        """The script, registered with redis-py's `client`."""
        script: Script = client.register_script(load_script(self.script))
        return script

    def header(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """The KEYS and ARGV lines of the script's header: (KEYS or ARGV, place, names)."""
        return [("KEYS", *row) for row in _places(self.key_entries)] + [
            ("ARGV", *row) for row in _places(self.arg_entries)
        ]

    def key_at(self, name: str) -> int:
        """Where the key `name` is in the KEYS of a call (see `_index`)."""
        return _index(self.key_entries, name)

    def arg_at(self, name: str) -> int:
        """Where the argument `name` is in the ARGV of a call (see `_index`)."""
        return _index(self.arg_entries, name)


def _packer(function: str, entries: Sequence[Entry]) -> Callable[..., list[Any]]:
    """A function building the list `entries` declare from keyword arguments, every one
    required and no other taken (TypeError). Entries are single names, then at most one
    Counted run and the names after it, then at most one Each run."""
    kinds = "".join(
        "1" if isinstance(e, str) else "c" if isinstance(e, Counted) else "e" for e in entries
    )
    if not re.fullmatch(r"1*(c1*)?e?", kinds):
        raise ValueError(f"{function}: names, then one Counted run at most, then one Each run")
    params = [entry if isinstance(entry, str) else entry.param for entry in entries]
    if len(set(params)) != len(params):
        raise ValueError(f"{function}: the names must differ: {params}")
    counted = next((e for e in entries if isinstance(e, Counted)), None)
    last = entries[-1] if entries else None
    each = last.param if isinstance(last, Each) else None
    split = kinds.find("c") if counted else len(kinds.rstrip("e"))
    head = _getter(params[:split])
    tail = _getter(params[split + 1 : len(kinds.rstrip("e"))] if counted else [])
    width = len(counted.names) if counted else 1
    expected = len(params)

    def pack(**named: Any) -> list[Any]:
        if len(named) != expected:
            raise _misnamed(function, params, named)
        try:
            sent = [*head(named)]
            if counted is not None:
                run = named[counted.param]
                sent.append(len(run) // width)
                sent += run
                sent += tail(named)
            if each is not None:
                sent += named[each]
        except KeyError:
            raise _misnamed(function, params, named) from None
        return sent

    pack.__name__ = pack.__qualname__ = function
    return pack


def _getter(names: Sequence[str]) -> Callable[[Mapping[str, Any]], Sequence[Any]]:
    """A function giving the values of `names` in a mapping, in order (a tuple)."""
    if len(names) > 1:
        return operator.itemgetter(*names)
    if names:
        name = names[0]
        return lambda named: (named[name],)
    return lambda named: ()


def _misnamed(function: str, params: Sequence[str], named: Mapping[str, Any]) -> TypeError:
    missing = [name for name in params if name not in named]
    unknown = [name for name in named if name not in params]
    return TypeError(
        f"{function}() takes {', '.join(params)}: missing {missing}, unknown {unknown}"
    )


def _places(entries: Sequence[Entry]) -> list[tuple[str, tuple[str, ...]]]:
    """Each entry's place in the header's terms (1-based; "+n" past a Counted run, whose
    count is named n), with its names."""
    rows: list[tuple[str, tuple[str, ...]]] = []
    at, past = 1, ""  # the next place: at, plus what a Counted run before it took
    for entry in entries:
        if isinstance(entry, str):
            rows.append((f"{at}{past}", (entry,)))
            at += 1
        elif isinstance(entry, Counted):
            width = "n" if len(entry.names) == 1 else f"{len(entry.names)}n"
            rows.append((str(at), ("n",)))
            rows.append((f"{at + 1} .. {at}+{width}", entry.names))
            at, past = at + 1, f"+{width}"
        else:
            rows.append((f"{at}{past} ..", entry.names))
    return rows


def _index(entries: Sequence[Entry], name: str) -> int:
    """Where `name` (an entry's name, or a run's param: its first item) is in the list sent:
    from the start when no Counted run is before it, else from the end (negative) when only
    single entries follow it."""
    for i, entry in enumerate(entries):
        if entry == name or (not isinstance(entry, str) and entry.param == name):
            before, after = entries[:i], entries[i + 1 :]
            if all(isinstance(e, str) for e in before):
                return i + 1 if isinstance(entry, Counted) else i  # after its count
            if isinstance(entry, str) and all(isinstance(e, str) for e in after):
                return i - len(entries)
            raise ValueError(f"{name} has no fixed place")
    raise KeyError(name)
