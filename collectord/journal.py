"""The journal: every message the daemon accepts, on disk before it is confirmed.

One journal per experiment, at ``OUTPUT/.collectord/staging/<run id>/journal``.
It is a sequence of records, each::

    u32 little-endian  length of the payload
    u32 little-endian  CRC-32 of the payload
    payload            a msgpack map; "t" names the record type (RecordType)

Records are appended to an in-memory buffer and written with one ``write``
and one ``fsync`` per flush (``flusher.py`` says when, and does it in a
background thread).

Reading (``scan``) tells two kinds of bad bytes apart. Only the end of a
journal can be torn: a ``kill -9`` or a power cut in the middle of a write
leaves part of the last records, and nothing after them. Bad bytes before a
good record are damage (a flipped bit, a block of the disk lost): losing
every record after them would turn one bad byte into a lost experiment, so
the scan skips them, looking byte by byte for the next place where a whole
valid record starts (its length fits, its CRC matches, its payload is a map
with a str "t"). ``Journal.reopen`` cuts a torn tail off; damage stays, between
good records. A record is trusted on its CRC alone, so a record's payload
that holds another whole encoded record (a client could send one as data)
shows it as a record of its own if the bytes before it are damaged.

The records' fields are checked by ``check``, against ``SCHEMA``: a scan
only says that a record is what was written, not that this version can
replay it.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import struct
import types
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack

from . import putback, system
from .errors import UnreadableRecord

JOURNAL_NAME = "journal"
_PREFIX = struct.Struct("<II")
#: A record longer than this is corruption, not data (messages are bounded far below).
MAX_RECORD = 1 << 31
#: Where a record's payload may start: a msgpack map header (fixmap of 1 to 15
#: entries, map16, map32; an empty map has no "t").
_MAP_HEADER = re.compile(rb"[\x81-\x8f\xde\xdf]")


class RecordType(str, enum.Enum):
    BEGIN = "begin"  # run id, start time, carried-over parameters, known sessions
    HELLO = "hello"  # a client introduced itself
    MESSAGE = "msg"  # an accepted data message, its frames as received ("refused": not applied)
    FIRST = "first"  # time of the experiment's first message
    SKIP = "skip"  # a gap given up as lost
    REJECT = "reject"  # a rejection not reproduced by replaying a message
    BYE = "bye"  # a client closed
    RESTART = "restart"  # the experiment was resumed after the daemon died
    STOP = "stop"  # the stop barrier passed: a journal ending with this is saved
    RESTORE = "restore"  # a process restored a node from the last config
    NAME = "name"  # a client named the experiment
    PRESENCE = "presence"  # a required source went missing or came back
    CLOCK = "clock"  # a client's clock sample (clocks.py)
    REACH = "reach"  # a session's control connection went, or it was heard from again


@dataclasses.dataclass(frozen=True)
class Field:
    """The types a record's field may have, as msgpack decodes them, and
    whether it may be absent."""

    types: tuple[type, ...]
    optional: bool = False


_STR = Field((str,))
_INT = Field((int,))

#: The fields each record type needs, from where it is written (``Daemon._record``
#: calls, ``Collector.begin_record``) and read (``Collector.replay``). Fields not
#: named here are allowed: a newer version may add some.
SCHEMA: dict[RecordType, dict[str, Field]] = {
    RecordType.BEGIN: {
        "run_id": _STR,
        "started": _STR,  # ISO 8601
        # the carried parameters (Tree.carried: [values, owners]), packed
        # with the value codec
        "carried": Field((bytes,), optional=True),
        # before "carried": the tree with [value, owner] per parameter, and
        # before that [path, value] per parameter and the empty groups' paths
        "tree": Field((bytes,), optional=True),
        "params": Field((bytes,), optional=True),
        "groups": Field((list,), optional=True),
        "sources": Field((list,)),  # Source snapshots
        # forgotten sessions' last sequence numbers (absent before this field existed)
        "remembered": Field((dict,), optional=True),
        "streams": Field((list,), optional=True),  # StreamSpec snapshots; replay defaults to none
        # the run whose save this BEGIN completes (absent before this field existed)
        "follows": Field((str, types.NoneType), optional=True),
        # required sources missing at the start, name to why (required.py)
        "missing": Field((dict,), optional=True),
        # the stops the daemon knew, by id: each run saved and where its folder
        # was to go (daemon/answers.py); absent while no stop had an id
        "answered": Field((list,), optional=True),
    },
    RecordType.HELLO: {
        "session": _STR,
        "name": _STR,
        "host": _STR,
        "pid": _INT,
        "program": _STR,
        "versions": Field((dict,)),
    },
    RecordType.MESSAGE: {
        "frames": Field((list,)),  # header and body; a block's without its rows
        "raw": Field((int,), optional=True),  # a block: the length of its rows
        "refused": Field((list,), optional=True),  # [index, reason] of messages not applied
        "at": Field((int,), optional=True),  # a block: the row its rows start at in the file
        # params or batch: when it arrived (time.time()), for the parameter history;
        # absent before the history was kept (replay then takes the experiment's start)
        "time": Field((float,), optional=True),
    },
    RecordType.FIRST: {"at": _STR},  # ISO 8601
    RecordType.SKIP: {"session": _STR, "name": _STR, "upto": _INT},
    RecordType.REJECT: {"session": Field((str, types.NoneType), optional=True), "reason": _STR},
    RecordType.BYE: {"session": _STR},
    RecordType.RESTART: {"restart": Field((dict,))},
    RecordType.NAME: {"name": _STR},
    RecordType.REACH: {"session": _STR, "reachable": Field((bool,))},
    RecordType.PRESENCE: {
        "name": _STR,  # the required source's name
        "missing": Field((bool,)),  # True: it went missing; False: it came back
        "at": _STR,  # ISO 8601
        "cause": _STR,  # why it went missing ("disconnected", "said bye", ...)
    },
    RecordType.CLOCK: {  # a clocks.Sample of the session's clock
        "session": _STR,
        "at": Field((float,)),
        "offset": Field((float,)),
        "rtt": Field((float,)),
    },
    RecordType.RESTORE: {
        "node": Field((list,)),  # the node's path, as names
        "values": Field((bytes,)),  # what was restored, packed with the value codec
        "time": Field((float,), optional=True),  # when (absent: as for MESSAGE)
        "session": Field((str, types.NoneType), optional=True),  # who asked, if said
    },
    RecordType.STOP: {  # a StopRequest's fields, and what the save writes of the stop
        "by": _STR,
        "reason": _STR,
        "host": _STR,
        "pid": Field((int, types.NoneType)),
        "unconfirmed": Field((list,)),
        "stopped": _STR,  # ISO 8601
        "gone": Field((list,), optional=True),  # sessions the stop found gone
        "ids": Field((list,), optional=True),  # the stop requests' ids (daemon/answers.py)
    },
}

_TYPE_NAMES = {
    str: "str",
    int: "int",
    bool: "bool",
    float: "float",
    bytes: "bin",
    list: "array",
    dict: "map",
    types.NoneType: "nil",
}


def _type_name(kind: type) -> str:
    return _TYPE_NAMES.get(kind, kind.__name__)


def check(record: Mapping[str, Any]) -> RecordType:
    """The type of ``record``, once its fields are those its type needs.

    Raises ``UnreadableRecord``, naming the record type and what is wrong, for
    a record with no type, a type this version does not know, or a missing or
    mistyped field. ``bool`` is not an int here, although Python says it is.
    """
    name = record.get("t")
    if not isinstance(name, str):
        raise UnreadableRecord(f"journal record has no type: 't' is {name!r}")
    try:
        kind = RecordType(name)
    except ValueError:
        known = ", ".join(repr(t.value) for t in RecordType)
        raise UnreadableRecord(
            f"unknown journal record type {name!r}: written by a newer version of "
            f"collectord? This one reads {known}"
        ) from None
    for field, spec in SCHEMA[kind].items():
        if field not in record:
            if spec.optional:
                continue
            raise UnreadableRecord(f"journal record {name!r} lacks field {field!r}")
        value = record[field]
        if not isinstance(value, spec.types) or (
            isinstance(value, bool) and bool not in spec.types
        ):
            expected = " or ".join(_type_name(t) for t in spec.types)
            raise UnreadableRecord(
                f"journal record {name!r}: field {field!r} must be {expected}, "
                f"not {_type_name(type(value))}"
            )
    return kind


def encode(record: dict[str, Any]) -> bytes:
    payload = msgpack.packb(record, use_bin_type=True)
    return _PREFIX.pack(len(payload), zlib.crc32(payload)) + payload


@dataclasses.dataclass(frozen=True)
class Damage:
    """Bytes skipped before a good record: ``length`` of them from ``offset``."""

    offset: int
    length: int


@dataclasses.dataclass
class Scan:
    """What a journal holds: its good records, and where its bad bytes are."""

    records: list[dict[str, Any]]
    #: Where each record starts in the journal, to name it in messages.
    offsets: list[int]
    #: Where the last good record ends: the journal continues from here.
    intact: int
    #: Bytes follow the last good record: a torn tail.
    torn: bool
    #: Regions skipped before the last good record, in order.
    damage: list[Damage]


def scan(data: bytes) -> Scan:
    """The records in ``data``, skipping damage; see the module docstring."""
    view = memoryview(data)
    spans = _SpanCrc(view)
    result = Scan(records=[], offsets=[], intact=0, torn=False, damage=[])
    offset = 0
    while offset < len(data):
        found = _record_at(view, offset)
        if found is None:
            resync = _next_record(data, spans, offset + 1)
            if resync is None:
                break
            result.damage.append(Damage(offset, resync - offset))
            offset = resync
            continue
        record, end = found
        result.records.append(record)
        result.offsets.append(offset)
        offset = result.intact = end
    result.torn = result.intact < len(data)
    return result


def _record_at(view: memoryview, offset: int) -> tuple[dict[str, Any], int] | None:
    """The valid record at ``offset`` and where it ends, or None."""
    start = offset + _PREFIX.size
    if start > len(view):
        return None
    length, crc = _PREFIX.unpack_from(view, offset)
    end = start + length
    if length > MAX_RECORD or end > len(view):
        return None
    payload = view[start:end]
    if zlib.crc32(payload) != crc:
        return None
    try:
        record = msgpack.unpackb(payload, raw=False)
    except Exception:  # a payload with a matching CRC but bad msgpack: corrupt
        return None
    if not isinstance(record, dict) or not isinstance(record.get("t"), str):
        return None
    return record, end


def _next_record(data: bytes, spans: _SpanCrc, start: int) -> int | None:
    """The first offset from ``start`` where a valid record starts, or None.

    Most offsets cost no CRC: the regular expression finds the payloads'
    possible first bytes, and the length must fit in what is left. The rest
    are checked by ``spans``, whose cost does not grow with the length:
    lengths read from damaged bytes can be tens of MB, and so would be the
    CRC of each such candidate.
    """
    # Measured once (Python 3.11, 2 shared cores), one flipped byte near the
    # start of a journal: 50 MB of 200,000 small records, 1.0-1.25 s with the
    # damage or without; 50 MB of 1 MB records of random bytes, damage in the
    # second, 7.3 s with a plain CRC per candidate, 0.2 s with ``spans``
    # (0.04 s undamaged); 100 MB of 10 MB records, damage in the first, 4.1 s
    # (0.11 s undamaged), mostly the ``_multiply`` of ``_shift``.
    for match in _MAP_HEADER.finditer(data, start + _PREFIX.size):
        payload = match.start()
        offset = payload - _PREFIX.size
        length, crc = _PREFIX.unpack_from(data, offset)
        if length > len(data) - payload or length > MAX_RECORD:
            continue
        if spans.crc(payload, payload + length) != crc:
            continue
        if _record_at(spans.view, offset) is not None:
            return offset
    return None


# -- CRC-32 of a span of a journal, in time independent of its length -------------------

#: The CRC-32 polynomial, bits reversed as zlib uses them: the bit for x^0 is 1 << 31.
_POLY = 0xEDB88320


def _multiply(a: int, b: int) -> int:
    """``a`` times ``b`` modulo the CRC-32 polynomial (zlib's ``multmodp``); a != 0."""
    m = 1 << 31
    product = 0
    while True:
        if a & m:
            product ^= b
            if not a & (m - 1):
                return product
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _powers() -> list[int]:
    """x to the power 2**k modulo the polynomial, for k up to 40."""
    powers = [1 << 30]  # x
    for _ in range(40):
        powers.append(_multiply(powers[-1], powers[-1]))
    return powers


_X_2K = _powers()


def _shift(crc: int, length: int) -> int:
    """``crc`` times x^(8 * length): the CRC of A + B is ``_shift(crc(A), len(B)) ^ crc(B)``
    (zlib's ``crc32_combine``)."""
    power = 1 << 31  # x^0
    k = 3  # 8 * length = length << 3
    while length:
        if length & 1:
            power = _multiply(_X_2K[k], power)
        length >>= 1
        k += 1
    return _multiply(power, crc)


class _SpanCrc:
    """The CRC-32 of any span of a buffer, at a cost that does not grow with its length.

    The CRC of the span ``[start, end)`` is the CRC of the prefix ending at
    ``end`` xor that of the prefix ending at ``start`` shifted by the span's
    length. Prefix CRCs come from checkpoints every ``STEP`` bytes, computed
    (one pass over the buffer) when a long span is first asked for.
    """

    STEP = 1 << 16
    #: Spans up to this long cost less with ``zlib.crc32`` itself.
    DIRECT = 1 << 18

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self._checkpoints: list[int] = []

    def crc(self, start: int, end: int) -> int:
        if end - start <= self.DIRECT:
            return zlib.crc32(self.view[start:end])
        return self._prefix(end) ^ _shift(self._prefix(start), end - start)

    def _prefix(self, end: int) -> int:
        if not self._checkpoints:
            crc = 0
            self._checkpoints.append(crc)
            for start in range(0, len(self.view), self.STEP):
                crc = zlib.crc32(self.view[start : start + self.STEP], crc)
                self._checkpoints.append(crc)
        index, rest = divmod(end, self.STEP)
        return zlib.crc32(self.view[end - rest : end], self._checkpoints[index])


def first_record(path: Path) -> dict[str, Any] | None:
    """The first record of the journal at ``path`` if it is whole, else None;
    reads no further than that record."""
    try:
        with open(path, "rb") as file:
            prefix = file.read(_PREFIX.size)
            if len(prefix) < _PREFIX.size:
                return None
            length, _ = _PREFIX.unpack(prefix)
            if length > MAX_RECORD:
                return None
            data = prefix + file.read(length)
    except FileNotFoundError:
        return None
    found = _record_at(memoryview(data), 0)
    return found[0] if found is not None else None


def read(path: Path) -> Scan:
    """Scan the journal at ``path``."""
    return scan(path.read_bytes())


#: How a journal is opened: readable too, to be put back if it is deleted (``putback.py``).
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_APPEND


class Journal:
    """Appends records to one experiment's journal file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = system.open_binary(path, _FLAGS, 0o644)
        self._size = os.fstat(self._fd).st_size  # all of it written and fsynced
        self._buffer = bytearray()
        self.records = 0
        #: ``write_first`` wrote its record (its folders' fsyncs may have failed).
        self._first_written = False
        #: Records reached the file but are not known to be on disk, and could
        #: not be cut off again: the next flush must fsync even if none waits.
        self.unsynced = False

    @classmethod
    def reopen(cls, path: Path, intact: int) -> Journal:
        """Continue a journal after replay, cutting off its torn tail first."""
        os.truncate(path, intact)
        return cls(path)

    def append(self, record: dict[str, Any]) -> None:
        self._buffer += encode(record)
        self.records += 1

    @property
    def pending(self) -> bool:
        return bool(self._buffer) or self.unsynced

    def flush(self) -> None:
        """Write what is buffered and fsync it."""
        self.write_out(self._buffer)

    def detach(self) -> bytearray:
        """Take the buffered records, for ``write_out`` in another thread; records
        appended from now on go to a new buffer."""
        taken, self._buffer = self._buffer, bytearray()
        return taken

    def reattach(self, unwritten: bytearray) -> None:
        """Put back what a failed ``write_out`` of detached records left, in front
        of the records appended since."""
        self._buffer[:0] = unwritten

    def write_out(self, records: bytearray) -> None:
        """Append ``records`` to the file and fsync them, or raise and leave
        the file as it was, with ``records`` whole for a retry.

        A write cut part-way (a full disk) or a failed fsync cuts the file
        back to its size before the call. The retry then writes every record
        once, and writes again pages that a failed fsync may have dropped
        (Linux reports such a loss once, and a later fsync succeeds). If the
        file cannot be cut back, what reached it is removed from ``records``
        instead, so that nothing is written twice, and ``unsynced`` is set.

        Touches only the file, ``unsynced`` and its size, not this object's
        buffer: safe to call from another thread on detached records.
        """
        start = self._size
        offset = 0
        try:
            with memoryview(records) as view:
                while offset < len(view):
                    with view[offset:] as rest:
                        offset += os.write(self._fd, rest)
            os.fsync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                del records[:offset]
                self._size = start + offset
                self.unsynced = True
            raise
        self._size = start + len(records)
        records.clear()
        self.unsynced = False

    def moved(self) -> bool:
        """The file is no longer at its path: deleted or moved (``putback.py``)."""
        return putback.moved(self._fd, self.path)

    def put_back(self) -> None:
        """Write the journal at its path again, from the file still open."""
        self._fd = putback.put_back(self._fd, self.path, _FLAGS)

    def close(self) -> None:
        self.flush()
        os.close(self._fd)

    def write_first(self, record: dict[str, Any]) -> None:
        """Write the first record (a BEGIN) and fsync it; from another thread
        too, while records appended meanwhile wait in the buffer.

        A try that wrote the record but failed at a folder's fsync (EIO, no
        file descriptor left) is completed by the next, which writes only
        what is left: the record is on disk once.
        """
        if not self._first_written:
            assert self._size == 0, "the first record comes first"
            self.write_out(bytearray(encode(record)))
            self._first_written = True
        if self.moved():  # its folder taken away meanwhile (``putback.py``)
            self.put_back()
        # The file and its experiment's folder are new: their names must
        # outlast a power cut too, once the experiment before may be deleted.
        system.fsync_dir(self.path.parent)
        system.fsync_dir(self.path.parent.parent)

    def abandon(self) -> None:
        """Close without writing what is buffered: its BEGIN never came, or the
        disk refused it, so nothing of it was confirmed (the clients still hold it)."""
        os.close(self._fd)

    def discard(self) -> None:
        """Close and delete (if it is still there): the experiment it covers is saved."""
        os.close(self._fd)
        self.path.unlink(missing_ok=True)
