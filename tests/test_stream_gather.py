"""Consecutive extends gathered into one block while the I/O thread has not
taken it: the rows, their order and the message boundaries (no sockets: a
stream publishing into a real ``Outbox``, as the client does under its lock)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from conftest import DaemonProcess

from collectord import Client, load_json
from collectord.outbox import Batch, Limits, Outbox
from collectord.stream import GATHER_BYTES, SLAB_BYTES, SPARE_BYTES, Stream

#: The module itself (``collectord.stream`` is also a name the package exports).
stream_module = importlib.import_module("collectord.stream")

COLUMNS = ["a", "b", "c"]


class Publisher:
    """The part of a client a stream publishes through, without its I/O thread:
    what the thread would take is what ``outbox.take()`` returns."""

    def __init__(self, max_message_bytes: int = 64 << 20) -> None:
        self.outbox = Outbox()
        self.seq = 0
        self.limits = Limits.of(max_message_bytes)

    def _check_open(self) -> None:
        pass

    def _max_block_rows(self, path: str, row_bytes: int) -> int:
        body = len(msgpack.packb({"path": path, "rows": 2**64 - 1}))
        return max(1, (self.limits.body - body) // row_bytes)

    def _publish_block(self, path: str, rows: np.ndarray[Any, Any]) -> int:
        self.seq += 1
        self.outbox.add_block(self.seq, msgpack.packb({"path": path, "rows": len(rows)}), rows)
        return self.seq

    def _grow_block(self, seq: int, path: str, rows: np.ndarray[Any, Any]) -> bool:
        body = msgpack.packb({"path": path, "rows": len(rows)})
        if len(body) + rows.nbytes > self.limits.body:
            return False
        return self.outbox.grow_block(seq, body, rows)


def make_stream(publisher: Publisher, path: str = "rig/t", dtype: str = "f8") -> Stream:
    return Stream(publisher, path, COLUMNS, np.dtype(dtype), None, 1.0)  # type: ignore[arg-type]


def blocks(batches: list[Batch]) -> list[tuple[int, str, int, np.ndarray[Any, Any]]]:
    """Each block message as (seq, path, rows in its body, its rows)."""
    found = []
    for batch in batches:
        assert batch.rows is not None and batch.count == 1
        body = msgpack.unpackb(bytes(batch.payload))
        found.append((batch.first, body["path"], body["rows"], np.array(batch.rows)))
    return found


def numbered(start: int, count: int) -> np.ndarray[Any, Any]:
    return np.arange(start * 3, (start + count) * 3, dtype=float).reshape(count, 3)


def test_extends_waiting_together_travel_as_one_block() -> None:
    publisher = Publisher()
    stream = make_stream(publisher)
    stream.extend(numbered(0, 5))
    stream.extend(numbered(5, 7))
    stream.extend(numbered(12, 1))
    ((seq, path, rows, values),) = blocks(publisher.outbox.take())
    assert (seq, path, rows) == (1, "rig/t", 13)
    assert np.array_equal(values, numbered(0, 13))
    assert stream.rows == 13 and publisher.seq == 1


def test_a_block_taken_by_the_io_thread_no_longer_grows() -> None:
    publisher = Publisher()
    stream = make_stream(publisher)
    stream.extend(numbered(0, 4))
    (taken,) = publisher.outbox.take()
    stream.extend(numbered(4, 4))
    stream.extend(numbered(8, 2))
    assert taken.rows is not None and np.array_equal(taken.rows, numbered(0, 4))
    assert msgpack.unpackb(bytes(taken.payload))["rows"] == 4
    ((seq, _, rows, values),) = blocks(publisher.outbox.take())
    assert (seq, rows) == (2, 6) and np.array_equal(values, numbered(4, 6))


def test_nothing_joins_a_block_past_a_later_message() -> None:
    """Appended rows, or another stream's block, sent after a block end it."""
    publisher = Publisher()
    stream, other = make_stream(publisher), make_stream(publisher, "rig/u")
    stream.extend(numbered(0, 2))
    stream.append([100.0, 101.0, 102.0])
    stream.extend(numbered(2, 2))  # the appended row goes first, then these
    other.extend(numbered(50, 1))
    stream.extend(numbered(4, 3))
    found = blocks(publisher.outbox.take())
    assert [(seq, path, rows) for seq, path, rows, _ in found] == [
        (1, "rig/t", 2),
        (2, "rig/t", 1),
        (3, "rig/t", 2),
        (4, "rig/u", 1),
        (5, "rig/t", 3),
    ]
    together = np.concatenate([values for _, path, _, values in found if path == "rig/t"])
    assert np.array_equal(together[:2], numbered(0, 2))
    assert together[2].tolist() == [100.0, 101.0, 102.0]
    assert np.array_equal(together[3:], numbered(2, 5))


def test_a_gathered_block_stays_within_its_bounds() -> None:
    """At most ``GATHER_BYTES``; never across slabs; never past the daemon's limit."""
    publisher = Publisher()
    stream = make_stream(publisher)
    rows = 4096  # 96 KiB a block: 42 fit in a gathered block, 85 in a slab
    count = 2 * SLAB_BYTES // (rows * 24) + 3
    for index in range(count):
        stream.extend(numbered(index * rows, rows))
    found = blocks(publisher.outbox.take())
    sizes = [values.nbytes for _, _, _, values in found]
    assert max(sizes) <= GATHER_BYTES and sum(sizes) == count * rows * 24
    assert len(found) > count * rows * 24 / GATHER_BYTES
    assert np.array_equal(np.concatenate([v for *_, v in found]), numbered(0, count * rows))
    assert [body_rows for _, _, body_rows, _ in found] == [len(v) for *_, v in found]

    small = Publisher(max_message_bytes=64 * 1024)  # a daemon that takes 63 KiB bodies
    stream = make_stream(small)
    for index in range(6):
        stream.extend(numbered(index * 1000, 1000))  # 24 kB each: two fit
    found = blocks(small.outbox.take())
    assert [len(values) for *_, values in found] == [2000, 2000, 2000]
    assert all(values.nbytes <= small.limits.body for *_, values in found)


def test_blocks_larger_than_a_slab_quarter_go_alone() -> None:
    publisher = Publisher()
    stream = make_stream(publisher)
    big = SLAB_BYTES // 4 // 24 + 1
    stream.extend(numbered(0, big))
    stream.extend(numbered(big, 1))
    stream.extend(numbered(big + 1, big))
    found = blocks(publisher.outbox.take())
    assert [rows for _, _, rows, _ in found] == [big, 1, big]
    assert np.array_equal(np.concatenate([v for *_, v in found]), numbered(0, 2 * big + 1))


def test_gathered_blocks_of_odd_sizes_arrive_row_for_row(daemon: DaemonProcess) -> None:
    """Rows of 12 bytes in blocks of 1 to 37 rows, published as fast as the
    caller can: whatever was gathered, the file holds every row once, in order."""
    sizes = [1 + (index * 7) % 37 for index in range(3000)]
    values = np.arange(sum(sizes) * 3, dtype=np.float32).reshape(-1, 3)
    with Client("tracking", daemon.data, daemon.control) as client:
        stream = client.stream("tracking/odd", COLUMNS, "f4")
        start = 0
        for size in sizes:
            stream.extend(values[start : start + size])
            start += size
        path = Path(client.stop())
    descriptor = load_json(path)["tracking"]["odd"]
    table = np.load(path.parent / descriptor["file"])
    assert descriptor["rows"] == len(values) == len(table)
    for index, column in enumerate(COLUMNS):
        assert np.array_equal(table[column], values[:, index])


# -- spare slabs ------------------------------------------------------------------------
# A test that held a slab itself would keep it from being reused: they compare
# where the memory is instead.


def slab_rows() -> int:
    """Rows of three float64 that fill one slab in extends of 1000 rows."""
    return SLAB_BYTES // (1000 * 24) * 1000


def memory_at(stream: Stream) -> int:
    """Where the memory of the stream's current slab is."""
    assert stream._slab_memory is not None
    return int(stream._slab_memory.ctypes.data)


@pytest.fixture
def spares(monkeypatch: pytest.MonkeyPatch) -> None:
    """No spare slabs from other tests."""
    monkeypatch.setattr(stream_module, "_spares", stream_module._Spares(SPARE_BYTES))


@pytest.mark.usefixtures("spares")
def test_a_slab_is_reused_once_nothing_refers_to_its_blocks() -> None:
    publisher = Publisher()
    stream = make_stream(publisher)
    for start in range(0, slab_rows() + 1000, 1000):  # a slab filled, a second begun
        stream.extend(numbered(start, 1000))
    second = memory_at(stream)
    published = blocks(publisher.outbox.take())  # copies: the messages themselves are gone
    for start in range(slab_rows() + 1000, 2 * slab_rows() + 1000, 1000):  # a third begun
        stream.extend(numbered(start, 1000))
    # Its blocks still wait to be sent: the second slab is not reused.
    assert memory_at(stream) != second
    for start in range(2 * slab_rows() + 1000, 3 * slab_rows() + 1000, 1000):
        stream.extend(numbered(start, 1000))
    published += blocks(publisher.outbox.take())
    rows = np.concatenate([values for *_, values in published])
    assert np.array_equal(rows, numbered(0, 3 * slab_rows() + 1000))


@pytest.mark.usefixtures("spares")
def test_the_first_slab_comes_back_for_the_third(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh: list[int] = []

    def allocate(nbytes: int) -> np.ndarray[Any, Any]:
        fresh.append(nbytes)
        return np.empty(nbytes, np.uint8)

    monkeypatch.setattr(stream_module, "_fresh_memory", allocate)
    publisher = Publisher()
    stream = make_stream(publisher)
    stream.extend(numbered(0, 1000))
    first = memory_at(stream)
    for start in range(1000, slab_rows() + 1000, 1000):  # the second slab begins
        stream.extend(numbered(start, 1000))
    assert memory_at(stream) != first and len(fresh) == 2
    publisher.outbox.take()  # the first slab's blocks are confirmed and dropped
    for start in range(slab_rows() + 1000, 2 * slab_rows() + 1000, 1000):
        stream.extend(numbered(start, 1000))  # the third begins with one block
    assert memory_at(stream) == first and len(fresh) == 2
    # Past the third slab's first block, the first slab's second block.
    past = stream._slab[24_000:48_000].view(np.float64).reshape(1000, 3)
    assert np.array_equal(past, numbered(1000, 1000))


@pytest.mark.usefixtures("spares")
def test_a_slab_with_a_block_still_unconfirmed_is_never_written_over() -> None:
    """The client keeps what the daemon has not confirmed, to resend it: its
    slab holds rows that must not change, however many slabs come after."""
    publisher = Publisher()
    stream = make_stream(publisher)
    stream.extend(numbered(0, 1000))
    (kept,) = publisher.outbox.take()  # unconfirmed: the message and its rows live on
    held = memory_at(stream)
    for _ in range(4 * SPARE_BYTES // SLAB_BYTES):
        for start in range(0, slab_rows(), 1000):
            stream.extend(numbered(start + 1000, 1000))
        publisher.outbox.take()  # confirmed at once
        assert memory_at(stream) != held
    assert kept.rows is not None and np.array_equal(kept.rows, numbered(0, 1000))


def test_spare_slabs_are_bounded_and_taken_only_when_free() -> None:
    spares = stream_module._Spares(2 * (SLAB_BYTES + stream_module.HUGE_PAGE))
    memories = [np.empty(16, np.uint8) for _ in range(3)]
    at = [memory.ctypes.data for memory in memories]
    view = memories[1][4:8]  # a block of the second is still out
    for memory in memories:
        spares.keep(memory)
    del memory, memories
    taken = spares.take()
    assert taken is not None and taken.ctypes.data == at[2]  # the first was dropped
    assert spares.take() is None
    del view
    again = spares.take()
    assert again is not None and again.ctypes.data == at[1]
