"""Values on the wire: msgpack plus two extension types.

What a client may send, and how it travels:

=============================  ==============================================
Python value                   msgpack
=============================  ==============================================
None, bool, int, float, str    native (ints from -2**63 to 2**64-1)
bytes, bytearray, memoryview   bin
list, tuple                    array (a tuple arrives as a list)
dict with str keys             map (keys may not start with ``$``)
numpy array, numpy scalar      ext 1: the array in numpy's ``.npy`` format
datetime, date, time           ext 2: ISO 8601 text, UTF-8
numpy datetime64               ext 2: ISO 8601 text, UTF-8
pathlib paths                  str
=============================  ==============================================

The daemon also accepts msgpack's standard timestamp (ext -1), so clients in
other languages can send times natively; it becomes ISO 8601 text in UTC, to
the nanosecond (``timestamp_text``). Anything else (sets, objects, complex
numbers, object arrays) raises ``UnsupportedValueError`` at the call that tried
to send it, naming where in the value it sits: stytra's ``prepare_json`` wrote
``0`` for those, and the zeros were restored next session as if real.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import math
import os
import threading
from collections.abc import Container
from typing import Any

import msgpack
import numpy as np

from .errors import UnsupportedValueError
from .jsonio import datetime_text
from .paths import MAX_DEPTH, check_name, is_known_name

EXT_NDARRAY = 1
EXT_ISOTIME = 2

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

#: Deepest nesting of containers in a message body, the body map being level 0.
MAX_VALUE_DEPTH = 64
#: The level a value sits at in its body: ``{"path", "value": v}`` and
#: ``{"path", "values": {name: v}}``. Client and daemon count alike, so that a
#: value the client lets through is never refused by the daemon.
DATA_VALUE_DEPTH = 1
PARAM_VALUE_DEPTH = 2
#: Deepest nesting of what the daemon sends back of its own (a reply; a
#: journaled restore): a restore's values hold the groups of a path, and under
#: them parameter values, whose arrays came back as nested lists (numpy
#: arrays have at most 64 dimensions), inside a reply's map and its result.
DAEMON_DEPTH = 3 + MAX_DEPTH + MAX_VALUE_DEPTH + 64


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def _supported_dtype(dtype: np.dtype[Any]) -> bool:
    """Numbers, bools, text and datetime64: what JSON can hold faithfully.

    Not floats wider than 64 bits (``numpy.longdouble``): JSON numbers are
    doubles, and the metadata could not be written.
    """
    return (
        not dtype.hasobject
        and dtype.kind in "biufUSM"
        and not (dtype.kind == "f" and dtype.itemsize > 8)
    )


def _unwritable(array: np.ndarray[Any, Any], payload: int) -> str | None:
    """Why the elements of an array of a supported dtype have no text in the
    saved JSON, or None: text (``U``) holding what is not a Unicode character
    (a surrogate, or beyond U+10FFFF), or datetime64 values without a unit.
    Such an array, once accepted, would fail every save of its experiment.

    Nor more values that no byte carries than ``payload``, the bytes of its
    ``.npy`` form: zero-width elements (``S0``, ``U0``), or the empty lists
    of a shape with a 0 in it (``(10**12, 0)`` is 10**12 of them). Nothing
    else bounds how many a header of a hundred bytes may claim, and each is
    a value in the JSON.
    """
    shape = array.shape
    if 0 in shape:
        empty = math.prod(shape[: shape.index(0)])
    else:
        empty = array.size if array.dtype.itemsize == 0 else 0
    if empty > payload:
        return (
            f"{empty} empty values (shape {shape}), more than the {payload} bytes that carry them"
        )
    kind = array.dtype.kind
    if kind == "U" and array.size and array.dtype.itemsize:
        order = array.dtype.byteorder if array.dtype.byteorder in "<>" else "="
        codes = np.ascontiguousarray(array).reshape(-1).view(np.dtype(f"{order}u4"))
        if ((codes > 0x10FFFF) | ((codes >= 0xD800) & (codes <= 0xDFFF))).any():
            return "text that is not Unicode (a surrogate, or a code point beyond U+10FFFF)"
    if kind == "M" and np.datetime_data(array.dtype)[0] == "generic" and not np.isnat(array).all():
        return "datetime64 values without a unit"
    return None


def _refusal(obj: Any) -> str | None:
    """Why an object msgpack does not know natively cannot be sent, or None."""
    if isinstance(obj, np.ma.MaskedArray):
        return "numpy masked array (its mask would be lost: use .filled(np.nan))"
    if isinstance(obj, np.ndarray | np.generic):
        if not _supported_dtype(obj.dtype):
            return f"numpy dtype {obj.dtype}"
        array = np.asarray(obj)
        payload = array.nbytes if array.nbytes else len(_npy_bytes(array))
        unwritable = _unwritable(array, payload)
        return f"numpy array of {unwritable}" if unwritable else None
    if isinstance(obj, dt.datetime | dt.date | dt.time | os.PathLike):
        return None
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _default(obj: Any) -> Any:
    """msgpack's hook for types it does not know; raises TypeError otherwise."""
    refusal = _refusal(obj)
    if refusal:
        raise TypeError(refusal)
    if isinstance(obj, np.ndarray | np.generic):
        if obj.dtype.kind == "M" and obj.ndim == 0:
            return msgpack.ExtType(EXT_ISOTIME, datetime_text(obj).encode())
        return msgpack.ExtType(EXT_NDARRAY, _npy_bytes(np.asarray(obj)))
    if isinstance(obj, dt.datetime | dt.date | dt.time):
        return msgpack.ExtType(EXT_ISOTIME, obj.isoformat().encode())
    return os.fspath(obj)


#: Types that need no further look: the common case of a parameter value.
_PLAIN = frozenset({float, bool, type(None)})


def _find_unsupported(value: Any, where: str, depth: int = 0) -> str | None:
    """Walk ``value`` and describe the first thing we refuse, or None."""
    if type(value) in _PLAIN:
        return None
    if depth > MAX_VALUE_DEPTH and isinstance(value, dict | list | tuple):
        return f"{where}: nested deeper than {MAX_VALUE_DEPTH} levels"
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"{where}: text is not valid Unicode (a lone surrogate)"
        return None
    if value is None or isinstance(value, bool | bytes | bytearray | memoryview):
        return None
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            return f"{where}: integer {value} does not fit in 64 bits"
        return None
    if isinstance(value, float):
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if (
                type(key) is str
                and type(item) in _PLAIN
                and key.isascii()
                and not key.startswith("$")
            ):
                continue
            if not isinstance(key, str):
                return f"{where}: dict key {key!r} is not a str but {type(key).__name__}"
            if key.startswith("$"):
                return f"{where}: dict key {key!r} starts with '$', kept for collectord's tags"
            if not key.isascii() and _find_unsupported(key, where):
                return f"{where}: dict key {key!r} is not valid Unicode (a lone surrogate)"
            found = _find_unsupported(item, f"{where}[{key!r}]", depth + 1)
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _find_unsupported(item, f"{where}[{index}]", depth + 1)
            if found:
                return found
        return None
    refusal = _refusal(value)
    return f"{where}: unsupported type {refusal}" if refusal else None


def check_value(value: Any, where: str = "value", depth: int = 0) -> None:
    """Raise ``UnsupportedValueError`` if ``value`` cannot be sent faithfully.

    msgpack alone would accept int dict keys and ``$``-keys and cannot say
    where in a nested value a bad type sits, so the client walks the value once.
    ``depth`` is the level the value sits at in its message body.
    """
    problem = _find_unsupported(value, where, depth)
    if problem:
        raise UnsupportedValueError(problem)


def check_params(values: dict[str, Any], node: str) -> None:
    """Check parameter names and values for ``node`` in one pass.

    ``set_params`` runs this on every call: a known name with a float, bool or
    None value costs a set lookup and a type test; anything else gets the full
    checks of ``check_name`` and ``check_value``.
    """
    for key, item in values.items():
        if type(item) in _PLAIN and is_known_name(key):
            continue
        check_name(key, where=lambda: f"parameter name under {node!r}")
        problem = _find_unsupported(item, f"{node}[{key!r}]", PARAM_VALUE_DEPTH)
        if problem:
            raise UnsupportedValueError(problem)


def make_packer() -> msgpack.Packer:
    """A packer for values; one per thread (msgpack packers are not thread-safe)."""
    return msgpack.Packer(default=_default, use_bin_type=True, datetime=False)


_packers = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's packer, made at its first use."""
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = make_packer()
    return packer


def pack(obj: Any) -> bytes:
    """Pack ``obj``; the caller has already run ``check_value`` on user values.

    One packer per thread, reused: msgpack's packers are not thread-safe, and
    making one per call costs more than the packing of a small message.
    """
    packer = _packer()
    try:
        return packer.pack(obj)
    except (TypeError, ValueError, OverflowError) as exc:
        packer.reset()
        raise UnsupportedValueError(f"cannot encode: {exc}") from exc


#: Packed maps by ``id``, with the map itself (which keeps the id its own):
#: ``pack_reusing``'s pieces.
Pieces = dict[int, tuple[dict[str, Any], bytes]]


def pack_reusing(obj: Any, last: Pieces, whole: Container[int], made: Pieces) -> bytes:
    """``pack(obj)``, taking the bytes of the maps in ``last`` as they are.

    msgpack is written front to back with no lengths but the counts in
    headers, so a map packed on its own is the same bytes as inside a bigger
    value. The maps whose ids are in ``whole`` are packed whole, or taken
    from ``last``, and go into ``made`` with their bytes, for the next call
    to take; other maps are walked, and so is ``obj`` if it is a list. Only
    maps that nothing changes any more may be in ``whole``.

    The value's depth, far below msgpack's limit of 511 (``DAEMON_DEPTH``),
    is not checked again by the pieces' walk.
    """
    packer = _packer()
    parts: list[bytes] = []
    try:
        if type(obj) is list:
            parts.append(packer.pack_array_header(len(obj)))
            for item in obj:
                _pack_parts(item, last, whole, made, packer, parts)
        else:
            _pack_parts(obj, last, whole, made, packer, parts)
    except (TypeError, ValueError, OverflowError) as exc:
        packer.reset()
        raise UnsupportedValueError(f"cannot encode: {exc}") from exc
    return b"".join(parts)


def _pack_parts(
    obj: Any,
    last: Pieces,
    whole: Container[int],
    made: Pieces,
    packer: msgpack.Packer,
    parts: list[bytes],
) -> None:
    if type(obj) is dict:
        key = id(obj)
        if key in whole:
            known = last.get(key)
            packed = known[1] if known is not None else packer.pack(obj)
            made[key] = (obj, packed)
            parts.append(packed)
            return
        parts.append(packer.pack_map_header(len(obj)))
        for name, value in obj.items():
            parts.append(packer.pack(name))
            _pack_parts(value, last, whole, made, packer, parts)
    else:
        parts.append(packer.pack(obj))


class DecodeError(ValueError):
    """A frame is not a well-formed collectord value."""


class _Refused:
    """An ext value the daemon refuses, left in place by the decoder.

    Raising from msgpack's ``ext_hook`` would abandon the rest of a batch's
    payload; a marker lets the decoder go on, and ``check_decoded`` then
    rejects only the message that holds it.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EXT_NDARRAY:
        try:
            array = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:  # numpy raises several types for bad headers
            return _Refused(f"ext {EXT_NDARRAY} is not a valid .npy array: {exc}")
        if not _supported_dtype(array.dtype):
            return _Refused(f"arrays of dtype {array.dtype} are not accepted")
        unwritable = _unwritable(array, len(data))
        if unwritable:
            return _Refused(f"arrays of {unwritable} are not accepted")
        return array
    if code == EXT_ISOTIME:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return _Refused(f"ext {EXT_ISOTIME} is not UTF-8 text")
    return _Refused(f"unknown msgpack ext type {code}")


_UNPACK_OPTIONS: dict[str, Any] = {
    "raw": False,
    "strict_map_key": True,
    # msgpack.Timestamp, which has the nanoseconds (a datetime would drop them)
    "timestamp": 0,
    "ext_hook": _ext_hook,
}

#: The seconds since 1970 of the first and last instants of ISO 8601's
#: four-digit years, 0001-01-01T00:00:00 and 9999-12-31T23:59:59 (UTC).
TIMESTAMP_FIRST_SECOND = -62_135_596_800
TIMESTAMP_LAST_SECOND = 253_402_300_799
_EPOCH = dt.datetime(1970, 1, 1)


def timestamp_text(stamp: msgpack.Timestamp) -> str:
    """A msgpack timestamp as ISO 8601 text in UTC, to the nanosecond.

    Always ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnn+00:00``: nine digits of fraction,
    zeros included, so that nothing is lost and every such time has one form.
    A timestamp outside the years 0001 to 9999 (the 96-bit form reaches
    further) has no such text and is refused.
    """
    seconds, nanoseconds = stamp.seconds, stamp.nanoseconds
    if not TIMESTAMP_FIRST_SECOND <= seconds <= TIMESTAMP_LAST_SECOND:
        raise DecodeError(
            f"msgpack timestamp of {seconds} s since 1970 is outside the years 0001 to 9999"
        )
    moment = _EPOCH + dt.timedelta(seconds=seconds)
    return f"{moment.isoformat()}.{nanoseconds:09d}+00:00"


def _msgpack_type(value: Any) -> str:
    """The msgpack type a decoded value came as, for a reason a client can act on."""
    for types, name in _MSGPACK_TYPES:
        if isinstance(value, types):
            return name
    return "ext"


_MSGPACK_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (type(None), "nil"),
    (bool, "bool"),
    (int, "int"),
    (float, "float"),
    (str, "str"),
    (bytes, "bin"),
    (list, "array"),
    (dict, "map"),
)


def _bad_key(key: Any) -> str:
    return f"map keys must be str, not {_msgpack_type(key)}"


def _map_of_pairs(pairs: list[tuple[Any, Any]]) -> Any:
    """A map decoded as its pairs: a dict if every key is text, else a refusal.

    Only used once msgpack has refused a map key (``strict_map_key``, which
    keeps keys whose hashes an attacker can choose out of dicts): the frame is
    decoded again this way, so that the key costs only the message holding it,
    with a reason that says what the protocol forbids.
    """
    for key, _ in pairs:
        if type(key) is not str:
            return _Refused(_bad_key(key))
    return dict(pairs)


_PAIRS_OPTIONS: dict[str, Any] = {
    **_UNPACK_OPTIONS,
    "strict_map_key": False,
    "object_pairs_hook": _map_of_pairs,
}


def unpack(frame: bytes, nesting: int = MAX_VALUE_DEPTH) -> Any:
    """Decode and check one frame sent by an untrusted peer.

    Timestamps (ext -1) become ISO 8601 text, like ext 2, so that every time
    ends up the same way in the JSON (``timestamp_text``). Size is bounded
    before we get here, by ZeroMQ's maximum message size on the daemon's
    sockets; msgpack bounds container lengths by the frame's length.
    ``nesting``: the deepest nesting accepted (``DAEMON_DEPTH`` for what the
    daemon sends back).
    """
    try:
        obj = msgpack.unpackb(frame, **_UNPACK_OPTIONS)
    except Exception as exc:  # msgpack raises many types on garbage
        try:  # valid msgpack with a map key of another type than str?
            obj = msgpack.unpackb(frame, **_PAIRS_OPTIONS)
        except Exception:
            raise DecodeError(f"not valid msgpack: {type(exc).__name__}: {exc}") from exc
    return check_decoded(obj, MAX_VALUE_DEPTH - nesting)


def unpack_own(frame: bytes) -> Any:
    """Decode what the daemon packed itself (its journal, checked by CRC).

    Values in it were checked when they arrived; what holds them may nest
    them deeper than a message may (the tree of a BEGIN record), so no depth
    is checked here.
    """
    return msgpack.unpackb(frame, **_UNPACK_OPTIONS)


def unpack_many(payload: bytes, count: int) -> list[Any]:
    """Split a batch's payload into exactly ``count`` values, not yet checked.

    Raises ``DecodeError`` if the payload is not ``count`` msgpack values back
    to back. Each value still needs ``check_decoded`` (or an equivalent check):
    a bad value costs only its own message, a payload that cannot be split
    costs the whole batch.
    """
    try:
        return _split(payload, count, _UNPACK_OPTIONS)
    except DecodeError as exc:
        try:  # valid msgpack with a map key of another type than str?
            return _split(payload, count, _PAIRS_OPTIONS)
        except DecodeError:
            raise exc from None


def _split(payload: bytes, count: int, options: dict[str, Any]) -> list[Any]:
    unpacker = msgpack.Unpacker(max_buffer_size=max(1, len(payload)), **options)
    unpacker.feed(payload)
    try:
        values = list(itertools.islice(unpacker, count))
    except Exception as exc:  # msgpack raises many types on garbage
        raise DecodeError(f"not valid msgpack: {type(exc).__name__}: {exc}") from exc
    if len(values) < count:
        raise DecodeError(f"it holds {len(values)} complete values, not {count}")
    extra = len(payload) - unpacker.tell()
    if extra:
        raise DecodeError(f"{extra} bytes follow its {count} values")
    return values


def check_decoded(obj: Any, depth: int = 0) -> Any:
    """Refuse what the client would have refused; turn timestamps into text.

    ``depth``: the level ``obj`` sits at (see ``unpack``'s ``nesting``)."""
    if type(obj) in _CHECKED:
        return _check_decoded(obj, depth)
    return obj


def _check_decoded(obj: Any, depth: int) -> Any:
    """``check_decoded`` at nesting ``depth``.

    Runs on every message the daemon receives, hence ``type() is`` tests.
    """
    if depth > MAX_VALUE_DEPTH:
        raise DecodeError(f"value nested deeper than {MAX_VALUE_DEPTH} levels")
    kind = type(obj)
    if kind is dict:
        for key, item in obj.items():
            if type(key) is not str:
                raise DecodeError(_bad_key(key))
            if key[:1] == "$":
                raise DecodeError(f"map key {key!r} starts with '$', kept for collectord's tags")
            if type(item) in _CHECKED:
                obj[key] = _check_decoded(item, depth + 1)
        return obj
    if kind is list:
        for index, item in enumerate(obj):
            if type(item) in _CHECKED:
                obj[index] = _check_decoded(item, depth + 1)
        return obj
    if kind is msgpack.Timestamp:
        return timestamp_text(obj)
    if kind is _Refused:
        raise DecodeError(obj.reason)
    return obj


def check_decoded_params(values: dict[str, Any]) -> dict[str, Any]:
    """``check_decoded`` for the values of a params body, whose keys the tree checks
    as parameter names (text, not starting with ``$``): the common case of flat
    numbers costs one type test per value."""
    for key, item in values.items():
        if type(item) in _CHECKED:
            values[key] = _check_decoded(item, PARAM_VALUE_DEPTH)
    return values


#: Decoded types that need a look: containers, msgpack timestamps, refusals.
_CHECKED = frozenset({dict, list, msgpack.Timestamp, _Refused})
