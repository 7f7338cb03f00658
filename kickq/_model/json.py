"""JSON, the only way values travel through Redis: what may be encoded, and the encoding.

Job data, results and `meta` are JSON values: `None`, `bool`, `int`, `float` (finite), `str`,
and lists, tuples and dicts of them, dicts with `str` keys, nested at most MAX_DEPTH deep.
"""

from __future__ import annotations

import json
from typing import Any

from kickq._model.errors import SerializationError

MAX_DEPTH = 256
"""The deepest nesting of lists and dicts a job's data or result may have: deeper values
could not be read back by every process (Python's parser stops near 1,000 levels, less in a
thread with a smaller stack or a lower recursion limit)."""
_CONTAINERS = (dict, list, tuple)


def _check_shape(value: Any, what: str) -> None:
    """Refuse what JSON would silently change, or not every reader could decode: dict keys
    that are not str ({1: "a"} would come back as {"1": "a"}, and {1: "a", "1": "b"} with a
    key twice), and nesting deeper than MAX_DEPTH. Iterative, so no depth can overflow it."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SerializationError(
                f"{what} nests lists and dicts more than {MAX_DEPTH} levels deep"
            )
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise SerializationError(
                        f"{what} is not JSON-serialisable: dict keys must be str, not "
                        f"{type(key).__name__} ({key!r})"
                    )
            children: Any = item.values()
        else:
            children = item
        stack.extend((child, depth + 1) for child in children if isinstance(child, _CONTAINERS))


def dumps(value: Any, what: str) -> str:
    """JSON text of a value that must travel through Redis, or SerializationError."""
    if value is None:
        return "null"
    if isinstance(value, _CONTAINERS):
        _check_shape(value, what)
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"{what} is not JSON-serialisable: {exc}") from None


def check_size(text: str, what: str, most: int) -> str:
    """`text`, the JSON of a value (ASCII: a character is a byte), or SerializationError when it
    is longer than `most` bytes (the `max_value_bytes` option)."""
    if len(text) > most:
        raise SerializationError(
            f"{what} is {len(text)} bytes of JSON, over max_value_bytes ({most}): store it "
            "elsewhere and pass a reference"
        )
    return text
