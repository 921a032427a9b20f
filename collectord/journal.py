"""The journal: every message the daemon accepts, on disk before it is confirmed.

One journal per experiment, at ``OUTPUT/.collectord/staging/<run id>/journal``.
It is a sequence of records, each::

    u32 little-endian  length of the payload
    u32 little-endian  CRC-32 of the payload
    payload            a msgpack map; "t" names the record type (RecordType)

Records are appended to an in-memory buffer and written with one ``write``
and one ``fsync`` per flush (``flusher.py`` says when, and does it in a
background thread). Replay reads records until the end of
the file or the first record that is short or fails its CRC: the torn tail a
``kill -9`` or power cut can leave. Everything before it is intact.
"""

from __future__ import annotations

import enum
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import msgpack

from . import system

JOURNAL_NAME = "journal"
_PREFIX = struct.Struct("<II")
#: A record longer than this is corruption, not data (messages are bounded far below).
MAX_RECORD = 1 << 31


class RecordType(str, enum.Enum):
    BEGIN = "begin"  # run id, start time, carried-over parameters, known sessions
    HELLO = "hello"  # a client introduced itself
    MESSAGE = "msg"  # an accepted data message, its frames as received ("refused": not applied)
    FIRST = "first"  # time of the experiment's first message
    SKIP = "skip"  # a gap given up as lost
    REJECT = "reject"  # a rejection not reproduced by replaying a message
    BYE = "bye"  # a client closed
    RESTART = "restart"  # the experiment was resumed after the daemon died


def encode(record: dict[str, Any]) -> bytes:
    payload = msgpack.packb(record, use_bin_type=True)
    return _PREFIX.pack(len(payload), zlib.crc32(payload)) + payload


def decode_all(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """Records in ``data``, and the length of its intact part (the rest is torn)."""
    records = []
    offset = 0
    while offset + _PREFIX.size <= len(data):
        length, crc = _PREFIX.unpack_from(data, offset)
        start = offset + _PREFIX.size
        end = start + length
        if length > MAX_RECORD or end > len(data):
            break
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            break
        try:
            record = msgpack.unpackb(payload, raw=False)
        except Exception:  # a payload with a matching CRC but bad msgpack: corrupt
            break
        if not isinstance(record, dict):
            break
        records.append(record)
        offset = end
    return records, offset


def read(path: Path) -> tuple[list[dict[str, Any]], int, bool]:
    """The intact records of the journal at ``path``, their length in bytes,
    and whether a torn tail follows them."""
    data = path.read_bytes()
    records, intact = decode_all(data)
    return records, intact, intact < len(data)


class Journal:
    """Appends records to one experiment's journal file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = system.open_binary(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size  # all of it written and fsynced
        self._buffer = bytearray()
        self.records = 0
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

    def close(self) -> None:
        self.flush()
        os.close(self._fd)

    def discard(self) -> None:
        """Close and delete: the experiment it covers is saved."""
        os.close(self._fd)
        self.path.unlink()
