"""Streams on the client: rows batched into blocks, sent as raw buffers.

``client.stream(path, columns, dtype)`` declares a table once; ``append(row)``
copies one row into the current block (about a microsecond, no message), and
``extend(block)`` sends a 2-D array. A block goes out when it is full or, so
that a slow stream is not held back, when its first row is older than
``flush_interval`` (the client's I/O thread checks). Its rows travel as one
raw buffer frame, handed to ZeroMQ without copying, never element by element
through msgpack. Small blocks extended while the I/O thread is busy travel
together (``Stream._gather``): a message per 4 MiB, not per call. The
memory of those copies is reused once confirmed (``_Spares``): up to 64 MiB
of it stays with the process for its next extends.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .client import Client

#: Rows of one block when not given: about 64 KiB.
BLOCK_BYTES = 64 * 1024
#: Largest block ``extend`` puts into one message, in bytes.
MESSAGE_BYTES = 8 * 1024 * 1024
#: Memory that ``extend`` carves its copies from (see ``Stream._copy``).
SLAB_BYTES = 8 * 1024 * 1024
#: Largest message that blocks of consecutive ``extend`` calls are gathered
#: into while they wait for the client's I/O thread (see ``Stream._gather``).
GATHER_BYTES = 4 * 1024 * 1024
#: The huge page size of x86-64 and most arm64 kernels: slabs start on one.
HUGE_PAGE = 2 * 1024 * 1024
#: Filled slabs kept for the next ``extend`` calls of this process, in bytes
#: (see ``_Spares``).
SPARE_BYTES = 64 * 1024 * 1024


class Stream:
    """A declared table; thread-safe. Create it with ``Client.stream``."""

    def __init__(
        self,
        client: Client,
        path: str,
        columns: Sequence[str],
        dtype: np.dtype[Any],
        block_rows: int | None,
        flush_interval: float,
    ) -> None:
        self.path = path
        self.columns = list(columns)
        self.dtype = dtype
        #: Integer and bool columns hold a value exactly or refuse it (``_exact_row``).
        self._exact = dtype.kind in "biu"
        self.flush_interval = flush_interval
        row_bytes = dtype.itemsize * len(self.columns)
        self.block_rows = block_rows or max(1, BLOCK_BYTES // row_bytes)
        self._message_rows = max(1, MESSAGE_BYTES // row_bytes)
        self._client = client
        self._lock = threading.Lock()
        self._buffer = self._new_buffer()
        self._filled = 0
        self._first_at = 0.0
        self._slab = np.empty(0, np.uint8)  # where extend's copies go (see _copy)
        self._slab_memory: np.ndarray[Any, Any] | None = None  # what _slab is a view of
        self._slab_used = SLAB_BYTES
        #: The last block extend sent from the slab, while it may still grow:
        #: its sequence number and where its rows start and end in the slab.
        self._tail: tuple[int, int, int] | None = None
        self.rows = 0  # rows handed to the client so far

    def _new_buffer(self) -> np.ndarray[Any, Any]:
        return np.empty((self.block_rows, len(self.columns)), self.dtype)

    def append(self, row: Sequence[float] | np.ndarray[Any, Any]) -> None:
        """Add one row (one value per column). Never blocks on the network."""
        with self._lock:
            # Checked under the lock that close()'s flush takes after it changes
            # the state: a row is either refused here or flushed by close().
            self._client._check_open()
            if self._exact:
                self._exact_row(row)
            else:
                self._buffer[self._filled] = row
            if self._filled == 0:
                self._first_at = time.monotonic()
            self._filled += 1
            if self._filled == self.block_rows:
                self._send_buffer()

    def _exact_row(self, row: Any) -> None:
        """Copy ``row`` into the buffer, refusing it if a value changes on the
        way into an integer or bool column; call with the lock held.

        numpy casts silently: 300 becomes 44 in a uint8 column, 2.7 becomes 2,
        a NaN in an array the lowest int64. A frame counter in a uint16 stream
        would wrap after 65,535 frames and nobody would know. Comparing the
        stored row with the given one, as Python numbers, costs about a
        microsecond (two more for a row of floats as an array, which numpy
        warns of as it casts a NaN), and float columns (which round, by
        design) skip it.
        """
        try:
            if isinstance(row, np.ndarray) and row.dtype.kind in "fc":
                with np.errstate(invalid="ignore"):  # NaN warns as it is cast: refused below
                    self._buffer[self._filled] = row
            else:  # errstate costs more than the rest: only where numpy would warn
                self._buffer[self._filled] = row
        except (OverflowError, ValueError) as exc:  # a Python int out of range, a NaN
            raise self._not_copied(row, exc) from None
        given = row.ravel().tolist() if isinstance(row, np.ndarray) else row
        stored = self._buffer[self._filled].tolist()
        try:
            given = list(given)
        except TypeError:  # one value for every column, as numpy broadcasts it
            given = [given]
        if len(given) == 1:  # numpy broadcasts a single value too
            given *= len(stored)
        if given != stored:
            column = next(i for i, (a, b) in enumerate(zip(given, stored, strict=True)) if a != b)
            raise self._changed(column, given[column], stored[column])

    def _not_copied(self, row: Any, exc: Exception) -> ValueError:
        """The error for a row numpy refused to copy, naming the column where
        one value is to blame (numpy's own message names none)."""
        try:
            values = list(row)
        except TypeError:
            values = [row]
        if len(values) == len(self.columns):
            scratch = np.empty(1, self.dtype)
            for column, value in zip(self.columns, values, strict=True):
                try:
                    scratch[0] = value
                except (OverflowError, ValueError, TypeError):
                    return ValueError(
                        f"stream {self.path!r}: column {column!r} is {self.dtype}, "
                        f"which cannot hold {value!r}; nothing was added"
                    )
        return ValueError(f"stream {self.path!r} ({self.dtype}): {exc}; nothing was added")

    def _changed(self, column: int, given: Any, stored: Any) -> ValueError:
        return ValueError(
            f"stream {self.path!r}: column {self.columns[column]!r} is {self.dtype}, "
            f"which cannot hold {given!r} (it would be stored as {stored!r}); "
            "nothing was added"
        )

    def extend(self, block: np.ndarray[Any, Any] | Sequence[Sequence[float]]) -> None:
        """Add the rows of a 2-D block (rows x columns), after any appended rows.

        The rows are copied (into the stream's dtype) before this returns, so
        the caller may reuse ``block`` at once. Float columns round as numpy
        does; integer and bool columns refuse a block with a value they cannot
        hold exactly (``ValueError``, nothing added).
        """
        source = np.asarray(block)
        if source.ndim < 2:  # one row
            source = source.reshape(1, -1)
        if source.ndim != 2 or source.shape[1] != len(self.columns):
            raise ValueError(
                f"stream {self.path!r} takes blocks of {len(self.columns)} columns, "
                f"not shape {source.shape}"
            )
        checked = self._exact and not np.can_cast(source.dtype, self.dtype, "safe")
        with self._lock:
            try:
                if checked:  # a NaN cast to an int warns: it is refused instead
                    with np.errstate(invalid="ignore", over="ignore"):
                        array, at = self._copy(source)
                    self._exact_block(source, array, at)
                else:
                    array, at = self._copy(source)
            except OverflowError as exc:  # a Python int beyond 64 bits in a list
                raise ValueError(
                    f"stream {self.path!r} ({self.dtype}): {exc}; nothing was added"
                ) from None
            self._client._check_open()
            self._send_buffer()
            if at is not None and self._gather(array, at):
                return
            row_bytes = array.itemsize * array.shape[1]
            step = min(self._message_rows, self._client._max_block_rows(self.path, row_bytes))
            for start in range(0, len(array), step):
                part = array[start : start + step]
                seq = self._client._publish_block(self.path, part)
                self.rows += len(part)
                if at is not None:
                    begins = at + start * row_bytes
                    self._tail = (seq, begins, begins + part.nbytes)

    def _exact_block(
        self, source: np.ndarray[Any, Any], copy: np.ndarray[Any, Any], at: int | None
    ) -> None:
        """Refuse a block whose copy differs from it (see ``_exact_row``), giving
        back the slab space the copy took; call with the lock held."""
        with np.errstate(invalid="ignore"):  # comparing NaNs: they differ, as they should
            differ = copy != source
        if not differ.any():
            return
        if at is not None:
            self._slab_used = at
        row, column = (int(i) for i in np.argwhere(differ)[0])
        given = np.asarray(source[row, column]).item()  # an object array's too
        raise self._changed(column, given, copy[row, column].item())

    def _gather(self, array: np.ndarray[Any, Any], at: int) -> bool:
        """Send ``array`` (a copy at ``at`` in the slab) as more rows of the last
        block, if it directly follows that block's rows in the slab and the
        block still waits for the I/O thread; call with the lock held.

        A producer that extends faster than the I/O thread sends would
        otherwise pay, per block, a message on both sides: a Python round in
        the I/O thread, a journal record and a decoding in the daemon. Gathered
        up to ``GATHER_BYTES``, those costs are paid per 4 MiB instead,
        and the rows cost no extra copy: they are already side by side.
        """
        tail = self._tail
        if tail is None or tail[2] != at:
            return False
        seq, start, _ = tail
        end = at + array.nbytes
        if end - start > GATHER_BYTES:
            return False
        rows = self._slab[start:end].view(self.dtype).reshape(-1, len(self.columns))
        if not self._client._grow_block(seq, self.path, rows):
            return False
        self._tail = (seq, start, end)
        self.rows += len(array)
        return True

    def _copy(self, source: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], int | None]:
        """A private copy of ``source`` in the stream's dtype, and where it starts
        in the slab (None if not in one); call with the lock held.

        The copy must outlive the call (it is sent without copying and kept
        until the daemon confirms it), so each needs fresh memory, and fresh
        memory costs a page fault per 4 KiB page on first touch: about as much
        as the copy itself. Copies up to ``SLAB_BYTES / 4`` are carved from
        slabs of ``SLAB_BYTES`` instead, which numpy asks the kernel to back
        with huge pages; once the last block in a slab is confirmed, the slab
        is freed, or reused by a later one (``_Spares``).
        Copies follow each other without a gap, so that ``_gather`` can send
        consecutive ones as one block.
        """
        nbytes = source.shape[0] * source.shape[1] * self.dtype.itemsize
        if nbytes > SLAB_BYTES // 4:
            return np.array(source, dtype=self.dtype, order="C", copy=True), None
        if self._slab_used + nbytes > SLAB_BYTES:
            if self._slab_memory is not None:
                _spares.keep(self._slab_memory)
            self._slab_memory, self._slab = _new_slab()
            self._slab_used = 0
            self._tail = None  # its offsets were in the old slab
        start = self._slab_used
        copy = self._slab[start : start + nbytes].view(self.dtype).reshape(source.shape)
        copy[...] = source  # casts like np.array(source, dtype); if it raises, nothing is used
        self._slab_used += nbytes
        return copy, start

    def flush(self) -> None:
        """Send the rows appended so far now, without waiting for a full block."""
        with self._lock:
            self._send_buffer()

    def flush_if_due(self, now: float) -> float | None:
        """Send a partial block older than ``flush_interval``; return when the next is due."""
        with self._lock:
            if not self._filled:
                return None
            due = self._first_at + self.flush_interval
            if now < due:
                return due
            self._send_buffer()
            return None

    def _send_buffer(self) -> None:
        """Hand the filled rows to the client; call with the lock held."""
        if not self._filled:
            return
        rows = self._buffer[: self._filled]
        # A block of ``block_rows`` may be larger than the daemon accepts (its
        # limit is learnt at the hello): it goes as several.
        step = self._client._max_block_rows(self.path, rows.itemsize * rows.shape[1])
        sent = 0
        try:
            while sent < self._filled:
                part = rows[sent : sent + step]
                self._client._publish_block(self.path, part)  # may raise: the rest stays
                sent += len(part)
        finally:
            if sent:
                # The messages keep the buffer (zero copy, and for resending):
                # what is not sent yet moves to a new one.
                buffer = self._new_buffer()
                buffer[: self._filled - sent] = rows[sent:]
                self._buffer = buffer
                self.rows += sent
                self._filled -= sent

    def __repr__(self) -> str:
        return f"<Stream {self.path!r} {len(self.columns)} columns {self.dtype}>"


class _Spares:
    """Slabs that streams have filled, kept for the next ``extend`` calls.

    Fresh memory costs a page fault and the kernel's zeroing of every page on
    first touch, more than the copy into it (about 20 ms of CPU per 100 MB
    here). A process that extends in bursts (a trial's frames, then ``sync``)
    would pay that for every burst; instead the last ``SPARE_BYTES`` of
    slabs filled stay here, and a new slab is one of them whose every block
    is gone: confirmed and dropped by the client, and released by ZeroMQ.
    What is still sent or kept for a resend holds a view of its slab, and so
    a reference to the memory: a slab is reused only once nothing but this
    list refers to it (``sys.getrefcount``, counted the way an unused one was
    at import). An older slab is dropped from the list, and freed once its
    last block is.
    """

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self._slabs: deque[np.ndarray[Any, Any]] = deque()
        self._limit = limit // (SLAB_BYTES + HUGE_PAGE)

    def keep(self, memory: np.ndarray[Any, Any]) -> None:
        with self._lock:
            self._slabs.append(memory)
            while len(self._slabs) > self._limit:
                self._slabs.popleft()

    def take(self) -> np.ndarray[Any, Any] | None:
        """A kept slab that nothing else refers to any more, or None."""
        with self._lock:
            for index in range(len(self._slabs)):
                if _references(self._slabs, index) <= _UNUSED:
                    memory = self._slabs[index]
                    del self._slabs[index]
                    return memory
        return None


def _references(slabs: deque[np.ndarray[Any, Any]], index: int) -> int:
    return sys.getrefcount(slabs[index])


#: What ``_references`` counts for a slab that only the list refers to.
_UNUSED = _references(deque([np.empty(0, np.uint8)]), 0)
_spares = _Spares(SPARE_BYTES)


def _new_slab() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``SLAB_BYTES`` starting on a huge page boundary, and the memory it is a
    view of: a spare one (see ``_Spares``), or fresh.

    numpy asks for huge pages for large arrays, but the kernel can only use
    them for whole aligned 2 MiB ranges: an 8 MiB array that starts anywhere
    else keeps 2 MiB in 4 KiB pages, a page fault each (about 6,000 per
    100 MB extended, against about 60 when aligned). The unused head and tail
    of the allocation are never touched, so they cost address space only.
    """
    memory = _spares.take()
    if memory is None:
        memory = _fresh_memory(SLAB_BYTES + HUGE_PAGE)
    skip = -memory.ctypes.data % HUGE_PAGE
    return memory, memory[skip : skip + SLAB_BYTES]


def _fresh_memory(nbytes: int) -> np.ndarray[Any, Any]:
    return np.empty(nbytes, np.uint8)
