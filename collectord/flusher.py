"""Making the journal and stream files durable without stalling the daemon.

An fsync takes milliseconds after a burst of stream data, and far longer on a
slow or busy disk. If the daemon's loop waited for it, ZeroMQ's receive queue
would fill meanwhile and publishers would have to hold their messages. So the
fsyncs run in one background thread, one flush at a time:

1. the loop starts a flush: it detaches the journal's buffered records, takes
   the stream files written since the last flush, and notes each session's
   ``received`` count at that moment;
2. the thread fsyncs those stream files, then writes the records to the
   journal and fsyncs it (block data first: the journal vouches for it);
3. the loop sees the flush done and confirms each session up to the count it
   noted: exactly the messages whose records that flush made durable. If the
   journal or a stream file is no longer at its path (deleted or moved: the
   thread asks, ``putback.py``), the loop first puts them back.

Records appended while a flush runs wait for the next one, so the journal
stays in order. A flush that fails (a full disk) confirms nothing; the
journal is cut back (``Journal.write_out``), its records go back in front of
the journal's buffer, its stream files count as unsynced again, and a later
flush retries.

Nothing here closes a file: the daemon ``wait``\\ s for the running flush
before it saves, closes or replaces the journal or a stream file.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future, ThreadPoolExecutor

from .journal import Journal
from .streamfiles import StreamFile, StreamFiles


@dataclasses.dataclass
class Flush:
    """One flush: what it writes, and what it confirms once done."""

    journal: Journal
    records: bytearray  # detached from the journal; after a failure, to write again
    streams: list[StreamFile]
    marks: dict[str, int]  # session -> received, when the flush started
    error: OSError | None = None
    #: The journal or a stream file is no longer at its path (deleted or
    #: moved): what it wrote is not durable until they are put back.
    moved: bool = False


def _run(flush: Flush) -> Flush:
    try:
        for stream in flush.streams:
            stream.fsync()
        flush.journal.write_out(flush.records)
    except OSError as exc:  # the folder of a file taken away, too: asked below
        flush.error = exc
    try:
        flush.moved = flush.journal.moved() or any(stream.moved() for stream in flush.streams)
    except OSError as exc:
        flush.error = flush.error or exc
    return flush


class Flusher:
    """Runs one ``Flush`` at a time in a background thread."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="collectord-fsync")
        self._running: Future[Flush] | None = None

    @property
    def busy(self) -> bool:
        return self._running is not None

    def start(self, journal: Journal, files: StreamFiles | None, marks: dict[str, int]) -> None:
        assert self._running is None, "one flush at a time"
        streams = files.take_dirty() if files is not None else []
        flush = Flush(journal, journal.detach(), streams, marks)
        self._running = self._executor.submit(_run, flush)

    def finished(self) -> Flush | None:
        """The running flush, if it has finished (without waiting)."""
        if self._running is None or not self._running.done():
            return None
        return self._take()

    def wait(self) -> Flush | None:
        """The running flush, once finished; None if none runs."""
        if self._running is None:
            return None
        return self._take()

    def _take(self) -> Flush:
        assert self._running is not None
        flush = self._running.result()
        self._running = None
        if flush.error is not None:
            flush.journal.reattach(flush.records)
            for stream in flush.streams:
                stream.dirty = True
        return flush

    def close(self) -> None:
        self._executor.shutdown(wait=True)
