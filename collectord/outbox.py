"""Messages on their way to the daemon, in the units they travel in.

A client keeps every message until the daemon confirms it (``link.py``).
Kept one by one, each message would cost a Python object here, a ZeroMQ frame
on the wire and a decoder call in the daemon. Instead the publishing call
appends its encoded body to the open ``Batch`` (a ``bytearray``), and the I/O
thread takes whole batches: one header, one payload frame, one entry in the
resend buffer for up to ``BATCH_MESSAGES`` messages. A stream block travels
alone, with its rows as a third, zero-copy frame.

Messages are still counted one by one: the resend buffer's bound, the
confirmations and the overflow cut batches at exact message boundaries
(``Batch.ends``). Pure logic, no sockets.
"""

from __future__ import annotations

import array
import collections
from collections.abc import Iterator
from typing import Any, NamedTuple

#: Most messages, and payload bytes, in one batch (the daemon takes up to
#: ``protocol.MAX_BATCH`` messages).
BATCH_MESSAGES = 512
BATCH_BYTES = 256 * 1024
#: Bytes one kind name takes at most in a batch header's ``kinds`` list.
KIND_BYTES = 8
#: Room kept for a header (and ZeroMQ's framing) within the daemon's size limit.
HEADER_ALLOWANCE = 1024

BLOCK = "block"


class Limits(NamedTuple):
    """Sizes that follow from the daemon's ``max_message_bytes``, computed once
    (the publishing call reads them every time)."""

    message: int  # the daemon's limit for one ZeroMQ message
    body: int  # the largest body (rows included) of one message
    batch: int  # payload bytes a batch may hold, with room for its header and kinds

    @classmethod
    def of(cls, max_message_bytes: int) -> Limits:
        body = max_message_bytes - HEADER_ALLOWANCE
        return cls(max_message_bytes, body, min(BATCH_BYTES, body - KIND_BYTES * BATCH_MESSAGES))

    def fits(self, batch: Batch) -> bool:
        """Whether ``batch`` may go as one message: one message up to ``body``
        bytes (its header lists one kind), several up to ``batch``."""
        return len(batch.payload) <= (self.body if batch.count == 1 else self.batch)


class Batch:
    """Consecutive messages of one session: ``kinds[i]`` is message ``first + i``,
    its body ``payload[ends[i-1]:ends[i]]``. A block is a batch of one whose
    ``rows`` hold the raw rows."""

    __slots__ = ("ends", "first", "kinds", "payload", "rows")

    def __init__(self, first: int, kind: str, body: bytes, rows: Any = None) -> None:
        self.first = first
        self.kinds = [kind]
        self.payload = bytearray(body)
        self.ends = array.array("Q", [len(body)])
        self.rows = rows

    @property
    def count(self) -> int:
        return len(self.kinds)

    @property
    def last(self) -> int:
        return self.first + len(self.kinds) - 1

    @property
    def size(self) -> int:
        """Bytes on the wire, header aside."""
        return len(self.payload) + (self.rows.nbytes if self.rows is not None else 0)

    def takes(self, body: bytes, budget: int) -> bool:
        """Whether ``body`` may join this batch within ``budget`` payload bytes."""
        return (
            self.rows is None
            and len(self.kinds) < BATCH_MESSAGES
            and len(self.payload) + len(body) <= budget
        )

    def add(self, kind: str, body: bytes) -> None:
        self.kinds.append(kind)
        self.payload += body
        self.ends.append(len(self.payload))

    def drop_first(self, count: int) -> None:
        """Forget the first ``count`` messages (fewer than all of them)."""
        assert 0 < count < len(self.kinds)
        cut = self.ends[count - 1]
        del self.payload[:cut]
        self.ends = array.array("Q", (end - cut for end in self.ends[count:]))
        del self.kinds[:count]
        self.first += count

    def split(self, budget: int) -> list[Batch]:
        """This batch as batches of at most ``budget`` payload bytes each (a body
        larger than that alone in its own)."""
        pieces: list[Batch] = []
        start = 0
        for index, end in enumerate(self.ends):
            body = bytes(self.payload[start:end])
            if pieces and pieces[-1].takes(body, budget):
                pieces[-1].add(self.kinds[index], body)
            else:
                pieces.append(Batch(self.first + index, self.kinds[index], body))
            start = end
        return pieces


class Outbox:
    """What callers have published and the I/O thread has not taken yet.

    Guarded by the client's lock: callers ``add``, the I/O thread ``take``\\ s.
    """

    def __init__(self) -> None:
        self.closed: collections.deque[Batch] = collections.deque()
        self.open: Batch | None = None  # the batch callers are filling

    def add(self, seq: int, kind: str, body: bytes, budget: int) -> None:
        batch = self.open
        # Batch.takes and Batch.add, written out: this runs in every publishing
        # call. The open batch is never a block.
        if (
            batch is not None
            and len(batch.kinds) < BATCH_MESSAGES
            and len(batch.payload) + len(body) <= budget
        ):
            batch.kinds.append(kind)
            batch.payload += body
            batch.ends.append(len(batch.payload))
            return
        if batch is not None:
            self.closed.append(batch)
        self.open = Batch(seq, kind, body)

    def add_block(self, seq: int, body: bytes, rows: Any) -> None:
        if self.open is not None:
            self.closed.append(self.open)
            self.open = None
        self.closed.append(Batch(seq, BLOCK, body, rows))

    def grow_block(self, seq: int, body: bytes, rows: Any) -> bool:
        """Make block ``seq`` carry ``rows`` (its rows and more) instead, with
        ``body`` as its body; False if it can no longer change.

        It can while it is the last message published and the I/O thread has
        not taken it: nothing has been sent of it, and nothing after it.
        """
        if self.open is not None or not self.closed:
            return False
        last = self.closed[-1]
        if last.first != seq or last.rows is None:
            return False
        last.payload = bytearray(body)
        last.ends[0] = len(body)
        last.rows = rows
        return True

    def take(self) -> list[Batch]:
        """Everything published so far, in order; the open batch is closed."""
        if self.open is not None:
            self.closed.append(self.open)
            self.open = None
        taken = list(self.closed)
        self.closed.clear()
        return taken

    def __bool__(self) -> bool:
        return self.open is not None or bool(self.closed)

    def __len__(self) -> int:
        """Messages waiting (approximate while callers publish)."""
        waiting = sum(batch.count for batch in self.closed)
        return waiting + (self.open.count if self.open is not None else 0)


class Unconfirmed:
    """Messages handed to the I/O thread and not yet confirmed by the daemon, oldest
    first; at most ``limit`` of them, counted one by one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.batches: collections.deque[Batch] = collections.deque()
        self.count = 0

    def extend(self, batches: list[Batch]) -> None:
        self.batches.extend(batches)
        self.count += sum(batch.count for batch in batches)

    def confirm(self, upto: int) -> None:
        """Forget every message up to sequence number ``upto``."""
        batches = self.batches
        while batches and batches[0].last <= upto:
            self.count -= batches.popleft().count
        if batches and batches[0].first <= upto:
            self.count -= upto - batches[0].first + 1
            batches[0].drop_first(upto - batches[0].first + 1)

    def trim(self) -> tuple[int, int]:
        """Drop the oldest messages beyond ``limit``; return how many, and the
        sequence number of the newest dropped (0 if none)."""
        dropped, upto = 0, 0
        batches = self.batches
        while self.count > self.limit:
            excess = self.count - self.limit
            front = batches[0]
            if front.count <= excess:
                batches.popleft()
                taken, upto = front.count, front.last
            else:
                front.drop_first(excess)
                taken, upto = excess, front.first - 1
            self.count -= taken
            dropped += taken
        return dropped, upto

    def after(self, sent: int) -> Iterator[Batch]:
        """The batches holding messages after ``sent``, in order."""
        batches = self.batches
        start = len(batches)
        while start and batches[start - 1].last > sent:  # the unsent are at the end
            start -= 1
        for index in range(start, len(batches)):
            yield batches[index]

    @property
    def newest(self) -> int:
        """The newest sequence number held (0 if none)."""
        return self.batches[-1].last if self.batches else 0

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0
