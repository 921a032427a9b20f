"""The tree as JSON, losing nothing; and back.

JSON has no bytes, NaN or infinity. Instead of writing invalid JSON (bare
``NaN`` tokens, as Python's ``json`` does by default) or losing the value
(stytra wrote ``0``), collectord writes a tagged object, which any JSON reader
accepts and ``collectord.load_json`` turns back into the value:

==========================  ==========================================
value                       JSON
==========================  ==========================================
bytes                       ``{"$bytes": "<base64, RFC 4648>"}``
float NaN, +inf, -inf       ``{"$float": "nan"}``, ``"inf"``, ``"-inf"``
numpy array                 nested lists (tagged elements where needed)
numpy datetime64 array      nested lists of ISO 8601 strings
datetimes                   ISO 8601 strings (already text on the wire)
==========================  ==========================================

Clients cannot send dict keys that start with ``$``, so a tag is never
mistaken for data.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

BYTES_TAG = "$bytes"
FLOAT_TAG = "$float"

_FLOAT_NAMES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _float(value: float) -> Any:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return {FLOAT_TAG: "nan"}
    return {FLOAT_TAG: "inf" if value > 0 else "-inf"}


def datetime_text(value: np.ndarray[Any, Any] | np.generic[Any]) -> Any:
    """numpy's ISO 8601 text of datetime64 values (a str, or nested lists of
    them), read in their byte order: ``datetime_as_string`` reads a big-endian
    array as if it were the machine's order."""
    if not value.dtype.isnative:
        value = value.astype(value.dtype.newbyteorder("="))
    return np.datetime_as_string(value).tolist()


def to_json(value: Any) -> Any:
    """Return ``value`` made of JSON types only, tagging what JSON lacks."""
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return {BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.ndarray | np.generic):
        if value.dtype.kind == "M":
            return datetime_text(value)
        return to_json(value.tolist())
    return value


def from_json(value: Any) -> Any:
    """Undo the tags of ``to_json`` (used as a ``json`` object hook).

    A ``$bytes`` tag that is not base64 (edited by hand) raises
    ``ValueError`` (``binascii.Error``), as a file that is not JSON does:
    base64 would otherwise skip what is not its alphabet (``"!!"`` gives
    ``b""``) and the file would be read as holding other bytes.
    """
    if isinstance(value, dict) and len(value) == 1:
        if BYTES_TAG in value and isinstance(value[BYTES_TAG], str):
            return base64.b64decode(value[BYTES_TAG], validate=True)
        if FLOAT_TAG in value and value[FLOAT_TAG] in _FLOAT_NAMES:
            return _FLOAT_NAMES[value[FLOAT_TAG]]
    return value


def _tagged(value: Any) -> Any:
    """``json``'s hook for what it cannot write itself: ``to_json`` of it."""
    if isinstance(value, bytes | bytearray | memoryview | np.ndarray | np.generic):
        return to_json(value)
    raise TypeError(f"{type(value).__name__} is not a tree value")


#: Texts of maps already encoded, by ``id``, with the map itself (which keeps
#: the id its own): ``dumps``' ``memo``.
Memo = dict[int, tuple[Any, str]]


def dumps(tree: dict[str, Any], memo: Memo | None = None) -> bytes:
    """Serialize a tree as strict JSON, keys sorted as stytra does.

    ``json`` writes the tree in C, calling back only for bytes and numpy
    values; a non-finite float anywhere makes it refuse (``allow_nan``), and
    only then is the whole tree tagged in Python first. The result is the
    same either way (``tests/test_jsonio.py``); the first way is several
    times faster on a big tree.

    ``memo``, shared by several calls, encodes a map that they share once: a
    save writes the same groups of parameters in the metadata and in the
    last config. No map may change between the calls.
    """
    try:
        text = _in_pieces(tree, _tagged, 0, memo)
    except ValueError:
        text = _in_pieces(to_json(tree), None, 0, None)
    return (text + "\n").encode("utf-8")


#: Maps this close to the top are written an entry at a time; maps further
#: down, whole, unless they have more entries than ``_PIECE``: then in batches.
_TOP = 2
_PIECE = 256


def _in_pieces(value: Any, default: Any, depth: int, memo: Memo | None) -> str:
    """``json.dumps(value, sort_keys=True)``, written in pieces of a few hundred
    values at most.

    ``json`` writes in C without letting other threads run: one call on a
    tree of a million values held the daemon's loop for a second while a
    save ran in its own thread. Small calls let it run in between. The text is
    the same as one call's (``tests/test_jsonio.py``).
    """

    def encode(piece: Any) -> str:
        return json.dumps(piece, allow_nan=False, sort_keys=True, default=default)

    if type(value) is not dict or not value or (depth >= _TOP and len(value) <= _PIECE):
        return encode(value)
    parts: list[str] = []
    batch: dict[str, Any] = {}
    for key in sorted(value):
        if not isinstance(key, str):
            raise TypeError(f"keys must be str, not {type(key).__name__}")
        item = value[key]
        if depth < _TOP and type(item) is dict and item:
            if batch:
                parts.append(encode(batch)[1:-1])
                batch = {}
            parts.append(f"{encode(key)}: {_remembered(item, default, depth + 1, memo)}")
            continue
        batch[key] = item
        if len(batch) == _PIECE:
            parts.append(encode(batch)[1:-1])
            batch = {}
    if batch:
        parts.append(encode(batch)[1:-1])
    return "{" + ", ".join(parts) + "}"


def _remembered(value: dict[str, Any], default: Any, depth: int, memo: Memo | None) -> str:
    """``_in_pieces`` of a map, taken from ``memo`` if it was encoded before."""
    if memo is None:
        return _in_pieces(value, default, depth, None)
    known = memo.get(id(value))
    if known is not None:
        return known[1]
    text = _in_pieces(value, default, depth, memo)
    memo[id(value)] = (value, text)
    return text


def same(a: Any, b: Any) -> bool:
    """Whether two values are written alike: a value and what it reads back
    as (an array and its list, a tuple and its list) are."""
    return dumps({"": a}) == dumps({"": b})


def loads(data: bytes | str) -> Any:
    return json.loads(data, object_hook=from_json)


def load_json(path: str | Path) -> Any:
    """Read a metadata or last-config file written by collectord.

    Tagged bytes and non-finite floats come back as ``bytes`` and ``float``.
    """
    with open(path, "rb") as file:
        return loads(file.read())
