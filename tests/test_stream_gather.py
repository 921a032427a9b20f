"""Consecutive extends gathered into one block while the I/O thread has not
taken it: the rows, their order and the message boundaries (no sockets: a
stream publishing into a real ``Outbox``, as the client does under its lock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import numpy as np
from conftest import DaemonProcess

from collectord import Client, load_json
from collectord.outbox import Batch, Limits, Outbox
from collectord.stream import GATHER_BYTES, SLAB_BYTES, Stream

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

    def _max_block_rows(self, row_bytes: int) -> int:
        return max(1, self.limits.body // row_bytes)

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
