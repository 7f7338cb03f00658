"""How a job's record is laid out in its Redis hash so that the hash stays compact.

Redis keeps a small hash as one listpack, a few bytes a field, as long as no field or value is
longer than `hash-max-listpack-value` (64 bytes by default); one longer value turns the whole
hash into a hashtable several times the size. So a value longer than `PIECE` bytes (job data, a
result, a run, an error) is written as pieces, each a listpack entry: `data`, `data~1`,
`data~2`... `gather` joins them again. The fields the Lua scripts read are short and never cut.
create.lua cuts a new job's data the same way (`lay_out` in scripts/lib.lua, from PIECE,
WHOLE_ABOVE and MARK: see lua.py), so that both write the same fields.

A value longer than `WHOLE_ABOVE` bytes is written whole, as one field, and the hash is then a
hashtable: measured (bench/big_values.py), past 4 kB one field costs less memory than its
pieces even while they would keep the hash a listpack, and far less once their count passes
`hash-max-listpack-entries` (128 in the redis.conf Redis ships), when each piece becomes an
entry of a hashtable; the scripts also move one argument rather than one per piece.
"""

from __future__ import annotations

from collections.abc import Mapping

PIECE = 64
"""The longest value written as one field: Redis's default hash-max-listpack-value."""
WHOLE_ABOVE = 32 * PIECE
"""The longest value cut into pieces (2 kB): a longer one is written whole (see above)."""
MARK = "~"
"""Between a field's name and the number of one of its pieces after the first."""
_WHOLE = frozenset(
    {"name", "state", "version", "process_timeout", "unique_lock", "reply_to", "progress"}
)
"""Read by the Lua scripts: never cut, however long (a unique lock names a key, a reply_to a
channel, which the scripts publish on); and `progress`, which scripts/progress.lua alone
writes, in one HSET, while a run's end writes the other fields from the record its claim read.
The other fields they read (run_count, update_time, claim) are a few digits long."""


def lay_out(record: Mapping[str, str]) -> dict[str, str]:
    """The hash fields holding `record`: a long value cut into pieces."""
    fields: dict[str, str] = {}
    for name, value in record.items():
        if name in _WHOLE or _fits(value) or _too_long_to_cut(value):
            fields[name] = value
        else:
            for number, piece in enumerate(_pieces(value)):
                fields[f"{name}{MARK}{number}" if number else name] = piece
    return fields


def _fits(value: str) -> bool:
    if len(value) <= PIECE // 4:  # even four bytes a character
        return True
    return len(value) <= PIECE if value.isascii() else len(value.encode("utf-8")) <= PIECE


def _too_long_to_cut(value: str) -> bool:
    if len(value) > WHOLE_ABOVE:  # at least a byte a character
        return True
    return not value.isascii() and len(value.encode("utf-8")) > WHOLE_ABOVE


def _pieces(value: str) -> list[str]:
    """`value` cut into texts of at most PIECE bytes of UTF-8, never inside a character.

    kickq encodes every value it cuts as JSON with only ASCII characters (json.dumps's
    ensure_ascii, `encode`), so a byte is a character; Lua's `lay_out`, which cuts only values
    encoded so (a new job's data and unique key), counts on it. Here a text may also come from
    a record another writer left with other characters, kept as it was read: it is cut
    between characters."""
    if value.isascii():
        return [value[at : at + PIECE] for at in range(0, len(value), PIECE)]
    raw = value.encode("utf-8")
    pieces: list[str] = []
    at = 0
    while at < len(raw):
        stop = min(at + PIECE, len(raw))
        for _ in range(3):  # a character has at most three continuation bytes (0b10xxxxxx)
            if stop < len(raw) and 0x80 <= raw[stop] < 0xC0:
                stop -= 1
        pieces.append(raw[at:stop].decode("utf-8"))
        at = stop
    return pieces


def gather(fields: Mapping[str, str]) -> Mapping[str, str]:
    """The record that the hash `fields` holds: the pieces of each long value joined. Pieces
    that do not follow on from a first one raise ValueError (a damaged record)."""
    cut = [name for name in fields if MARK in name]
    if not cut:
        return fields
    record = {name: value for name, value in fields.items() if MARK not in name}
    counts: dict[str, int] = {}
    for name in cut:
        base = name.partition(MARK)[0]
        counts[base] = counts.get(base, 0) + 1
    for base, count in counts.items():
        parts = [record.get(base)]
        parts += [fields.get(f"{base}{MARK}{number}") for number in range(1, count + 1)]
        texts = [part for part in parts if part is not None]
        if len(texts) != len(parts):
            raise ValueError(f"the pieces of field {base!r} do not follow on")
        record[base] = "".join(texts)
    return record


def changes(
    stored: Mapping[str, str], record: Mapping[str, str], optional: frozenset[str]
) -> dict[str, str | None]:
    """What to write so that the hash `stored` comes to hold `record`: each field to set
    where they differ, and None for each field to remove: a piece the new value no longer
    has, or an `optional` field (one the encoding leaves out at its default) `record` lacks."""
    fields = lay_out(record)
    written: dict[str, str | None] = {
        name: value for name, value in fields.items() if stored.get(name) != value
    }
    for name in stored:
        if name not in fields and (MARK in name or name in optional):
            written[name] = None
    return written
