"""The running experiment's journal, made durable in the background, and the
confirmations that follow.

Every message admitted is appended to the journal before it is applied. The
journal is fsynced at least every ``journal_interval`` seconds, at once when a
client waits in ``sync``, and after every 16 MiB of stream data, in a
background thread (``flusher.py``) so that the loop keeps taking messages
meanwhile. Replies to ``sync`` (and hence what clients drop from their resend
buffers) only ever cover journaled messages: ``durable`` holds, per session,
the last sequence number on disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..flusher import Flush, Flusher
from ..journal import Journal, RecordType
from ..streamfiles import StreamFiles
from .control import ReplyTo

log = logging.getLogger("collectord")

#: Stream bytes written since the last flush that start one before
#: ``journal_interval`` is up: a burst is made durable while it arrives, not
#: all at once when a client waits for it.
STREAM_FLUSH_BYTES = 16 * 1024 * 1024
#: Deferred syncs kept per session; older ones are dropped (their client gave up).
MAX_PENDING_SYNCS = 64

Reply = Callable[[ReplyTo, dict[str, Any]], None]


class Durability:
    """One journal at a time; what of it is on disk; who waits for what."""

    def __init__(
        self,
        journal_interval: float,
        reply: Reply,
        put_back_lock: Callable[[], None] | None = None,
    ) -> None:
        self.interval = journal_interval
        self._reply = reply
        #: Called once files were put back (``putback.py``): the output
        #: folder's lock file went with them.
        self._put_back_lock = put_back_lock
        self.journal: Journal | None = None
        self.files: StreamFiles | None = None
        #: session -> last seq fsynced in the journal
        self.durable: dict[str, int] = {}
        self.pending_syncs: dict[str, list[tuple[int, ReplyTo]]] = {}
        #: Replies that wait for every record appended before them to be on
        #: disk (``bye``): (the flush that must finish, where, what).
        self.after_flush: list[tuple[int, ReplyTo, dict[str, Any]]] = []
        #: Flushes started, and the number of the last one finished well.
        self._started = 0
        self._finished = 0
        #: A failed journal write, shown in ``status`` until a flush succeeds.
        self.error: str | None = None
        self._flusher = Flusher()
        #: The journal waits for its BEGIN record (written by a save in its
        #: thread): until this says it is there, nothing is flushed.
        self._held_until: Callable[[], bool] | None = None
        self._flushed_at = time.monotonic()
        self._retry_at = 0.0  # after a failed flush, the next waits until then

    def record(self, kind: RecordType, **fields: Any) -> None:
        assert self.journal is not None
        self.journal.append({"t": kind.value, **fields})

    def switch(
        self,
        journal: Journal | None,
        files: StreamFiles | None,
        held_until: Callable[[], bool] | None = None,
    ) -> None:
        """From now on records go to ``journal`` and blocks to ``files``;
        with ``held_until``, none is written until it says so."""
        self.settle()
        self.journal, self.files, self._held_until = journal, files, held_until

    @property
    def held(self) -> bool:
        if self._held_until is not None and self._held_until():
            self._held_until = None
        return self._held_until is not None

    # -- confirming --------------------------------------------------------------

    def wait(self, session: str, seq: int, reply_to: ReplyTo) -> dict[str, Any] | None:
        """A ``sync``: the answer now, or None and answered once ``seq`` is durable."""
        received = self.durable.get(session, 0)
        if received >= seq:
            return {"received": received}
        waiting = self.pending_syncs.setdefault(session, [])
        waiting.append((seq, reply_to))
        del waiting[:-MAX_PENDING_SYNCS]
        return None

    def reply_when_durable(self, reply_to: ReplyTo, result: dict[str, Any]) -> None:
        """Reply once the records appended so far are on disk."""
        self.after_flush.append((self._started + 1, reply_to, result))

    def forget(self, session: str) -> None:
        self.pending_syncs.pop(session, None)

    def confirm(self, marks: dict[str, int]) -> None:
        """Sessions are durable up to ``marks``: answer the syncs that waited for it,
        and the replies that waited for a flush now finished."""
        self.durable.update(marks)
        ready = [entry for entry in self.after_flush if entry[0] <= self._finished]
        if ready:
            self.after_flush = [entry for entry in self.after_flush if entry[0] > self._finished]
            for _, reply_to, result in ready:
                self._reply(reply_to, result)
        for session, waiting in self.pending_syncs.items():
            durable = self.durable.get(session, 0)
            still = []
            for seq, reply_to in waiting:
                if durable >= seq:
                    self._reply(reply_to, {"received": durable})
                else:
                    still.append((seq, reply_to))
            waiting[:] = still

    # -- flushing ----------------------------------------------------------------

    def make_durable(self, received: dict[str, int]) -> None:
        """fsync everything now, in this thread; confirm ``received``."""
        assert self.journal is not None and not self.held
        self.settle()
        if self.files is not None:
            self.files.sync()  # block data first: the journal vouches for it
        self.journal.flush()
        self._in_place()
        self._flushed_at = time.monotonic()
        self._started += 1
        self._finished = self._started
        self.confirm(received)

    def poll(self, received: Callable[[], dict[str, int]]) -> None:
        """Take a finished background flush; start the next one when due."""
        done = self._flusher.finished()
        if done is not None:
            self._flushed(done)
        if self.journal is not None and not self._flusher.busy and self._due():
            self._flusher.start(self.journal, self.files, received())
            self._started += 1
            self._flushed_at = time.monotonic()

    @property
    def busy(self) -> bool:
        return self._flusher.busy

    def settle(self) -> None:
        """Wait for the background flush, if one runs: before files are closed."""
        done = self._flusher.wait()
        if done is not None:
            self._flushed(done)

    def close(self) -> str | None:
        """Make everything durable and close the journal and the stream files.

        Returns what failed (a full or failing disk as the daemon exits), else
        None; raises nothing, so that an exiting daemon still lets go of its
        files and its lock. Records that could not be written were never
        confirmed: their clients hold them and send them to the next daemon.
        Stream rows are synced first, and the journal is not written if they
        could not be: it must not vouch for rows that may not be on disk.
        """
        self.settle()
        self._flusher.close()
        failure = None
        try:
            if self.files is not None:
                self.files.sync()
            if self.journal is not None and not self.held:
                self.journal.flush()
        except OSError as exc:
            failure = (
                f"the journal's last records could not be written ({exc}); the "
                "messages they hold were not confirmed, so their clients send them "
                "again to the next daemon"
            )
            log.error("exiting: %s", failure)
        if self.files is not None:
            self.files.close()
        if self.journal is not None:
            self.journal.abandon()  # written above, or never to be: nothing confirmed it
        return failure

    def _flushed(self, flush: Flush) -> None:
        if flush.moved:  # a failed flush too: it may have failed on a folder taken away
            try:
                self._in_place()
            except OSError as exc:
                assert self.journal is not None
                self.journal.unsynced = True  # flush (and look) again, records or not
                flush.error = exc
        if flush.error is None:
            if self.error is not None:
                log.info("the journal is written again")
                self.error = None
            self._finished = self._started  # one flush runs at a time: this one
            self.confirm(flush.marks)
            return
        # A full or failing disk: nothing is confirmed until a later flush
        # succeeds, so clients keep (and resend) what they sent. The next try
        # waits for journal_interval, even if syncs wait.
        if self.error is None:
            log.error("cannot write the journal: %s; retrying", flush.error)
        self.error = f"journal write failed: {flush.error}"
        self._retry_at = time.monotonic() + self.interval

    def _in_place(self) -> None:
        """Put the stream files and the journal back at their paths if they were
        deleted or moved, and then the lock (``putback.py``); raise OSError if
        they cannot be. Nothing their records hold is confirmed before."""
        assert self.journal is not None
        put_back = self.files.put_back_moved() if self.files is not None else []
        if self.journal.moved():
            self.journal.put_back()
            put_back.append(self.journal.path)
        if not put_back:
            return
        log.error(
            "deleted or moved while in use, and written there again from the files held open: %s",
            ", ".join(map(str, put_back)),
        )
        if self._put_back_lock is not None:
            self._put_back_lock()

    def _due(self) -> bool:
        assert self.journal is not None
        if not self.journal.pending or time.monotonic() < self._retry_at or self.held:
            return False
        if any(self.pending_syncs.values()) or self.after_flush:
            return True
        if self.files is not None and self.files.unsynced >= STREAM_FLUSH_BYTES:
            return True
        return time.monotonic() - self._flushed_at >= self.interval
