"""One experiment's parameter history, written while the experiment runs.

The history of an experiment of a million parameters is a million lines
(``changes.py``), about one and a half seconds of CPU to write: at its stop
that would more than double a save (``docs/performance.md``). So the lines
are written as the history grows, by a thread of their own
(``HistoryWriter``), into the experiment's staging folder
(``changes.partial``), and a save only writes the last few and renames the
file into place (``HistoryLog.finish``).

The file in staging is not what makes the history safe: the journal is.
After a crash the journal's replay rebuilds the history, and the new
``HistoryLog`` of the experiment starts its file again from the first line.
A line is never written twice or left out: each log counts what it wrote,
and a write that fails is cut back to the last whole batch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from .. import putback, system
from ..changes import Run, encode_runs
from ..collector import Changed
from ..tree import Tree

log = logging.getLogger("collectord")

#: The history file of a running experiment, in its staging folder.
PARTIAL_NAME = "changes.partial"
#: How often the writer thread writes what arrived, in seconds.
WRITE_INTERVAL = 0.5
#: More entries than this in one interval: the daemon is busy taking a burst
#: of messages, and the writer waits for a quieter interval (or the save).
BUSY_ENTRIES = 1000
#: Unwritten entries the writer lets a burst leave, about 70 MB: past them it
#: writes even while the daemon is busy, so that a process publishing
#: parameters faster than that for good does not grow the daemon without end.
BACKLOG_ENTRIES = 200_000

#: The client's name for a session, or None if the daemon does not know it.
Names = Callable[[str], str | None]


class HistoryLog:
    """The history of one experiment: its entries (``Collector.history``,
    appended by the daemon's loop) and how much of it is written.

    Entries written are taken out of the list: a process that sets a
    parameter at 100 Hz through an eight-hour recording makes three million
    of them, about 340 bytes each, which the daemon would otherwise hold
    until the stop. The file holds them, and the journal.

    The first lines are the parameters the experiment began with (``began``,
    all of them, carried in at ``started``), then each entry as applied.
    ``advance`` and ``finish`` may run in different threads.
    """

    def __init__(
        self,
        staging: Path,
        entries: list[Changed],
        began: Tree,
        started: float,
        names: Names,
    ) -> None:
        self.entries = entries
        self.names = names
        self._began: Tree | None = began
        self._started = started
        self._partial = staging / PARTIAL_NAME
        self._file: IO[bytes] | None = None
        self._written = 0  # entries written, and taken out of ``entries``
        self._size = 0  # bytes of whole batches written
        self._done = False
        self._lock = threading.Lock()
        self._partial.unlink(missing_ok=True)  # a crashed daemon's: started again

    @property
    def arrived(self) -> int:
        """Entries so far, written or not."""
        return self._written + len(self.entries)

    def advance(self) -> None:
        """Write the entries that arrived since the last call, and fsync them
        (the writer thread): a save then has little left to write or to sync."""
        with self._lock:
            if not self._done:
                self._in_place()
                if self._write_pending():
                    assert self._file is not None
                    os.fsync(self._file.fileno())

    def finish(self, final: Path) -> None:
        """Write the rest, make it durable and rename it to ``final`` (a save's
        step). Raises if it cannot; a later call goes on from what was written."""
        with self._lock:
            if self._done:
                return
            self._in_place()
            self._write_pending()
            file = self._open()
            file.flush()
            os.fsync(file.fileno())
            file.close()
            self._file = None
            os.replace(self._partial, final)
            self._done = True
        system.fsync_dir(final.parent)

    def close(self) -> None:
        """Let the file go without finishing it (the daemon is exiting)."""
        with self._lock:
            self._done = True
            if self._file is not None:
                self._file.close()
                self._file = None

    def _in_place(self) -> None:
        """Put the file back if it was deleted or moved (``putback.py``): the lines
        written are no longer in memory."""
        file = self._file
        if file is None or not putback.moved(file.fileno(), self._partial):
            return
        log.error("%s was deleted or moved while in use; writing it there again", self._partial)
        file.flush()
        fd = putback.put_back(os.dup(file.fileno()), self._partial, os.O_RDWR)
        file.close()
        self._file = os.fdopen(fd, "r+b")
        self._file.seek(self._size)

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self._file = open(self._partial, "r+b" if self._size else "w+b")  # noqa: SIM115
            self._file.seek(self._size)
            self._file.truncate()
        return self._file

    def _write_pending(self) -> bool:
        """Write what is not written yet; whether there was anything."""
        end = len(self.entries)  # the loop may append meanwhile: after ``end``
        if self._began is None and end == 0:
            return False
        file = self._open()
        try:
            for chunk in encode_runs(self._runs(end)):
                file.write(chunk)
            file.flush()
        except BaseException:
            # Reopened at the last whole write, and truncated there. Closing
            # flushes what the failed write left buffered, and fails as it did:
            # the file is closed all the same.
            self._file = None
            with contextlib.suppress(OSError):
                file.close()
            raise
        self._began = None
        del self.entries[:end]
        self._written += end
        self._size = file.tell()
        return True

    def _runs(self, end: int) -> Iterator[Run]:
        """The runs of lines not written yet, up to entry ``end``."""
        names = self.names
        if self._began is not None:
            started = self._started
            for prefix, began, owner in self._began.parameter_runs():
                source = names(owner) if owner else None
                yield Run(started, source, owner, None, True, prefix, began)
        for index in range(end):
            entry = self.entries[index]
            received, session, seq, node = entry[:4]
            source = names(session) if session else None
            prefix = "/".join(node) + "/" if node else ""
            restored = seq is None  # not sent: a value restored from the last config
            values = {entry[4]: entry[5]} if len(entry) == 6 else entry[4]
            yield Run(received, source, session, seq, restored, prefix, values)


class Bursts:
    """Whether the daemon is taking a burst of parameter messages, seen from
    the writer's thread once an interval: writing then competes with the
    daemon's loop for the interpreter, and cut the rate a burst is taken at
    by a third to a half. What a burst leaves is written after it, or
    during it once ``BACKLOG_ENTRIES`` wait."""

    def __init__(self) -> None:
        self._history: HistoryLog | None = None
        self._count = 0

    def busy(self, history: HistoryLog) -> bool:
        """More than ``BUSY_ENTRIES`` entries since the last look; an
        experiment's entries start from none, so a new one that got that many
        in its first interval is busy too."""
        count = history.arrived
        before = self._count if history is self._history else 0
        self._history, self._count = history, count
        return count - before > BUSY_ENTRIES and len(history.entries) <= BACKLOG_ENTRIES


class HistoryWriter:
    """A thread writing the running experiment's history every ``interval``."""

    def __init__(self, current: Callable[[], HistoryLog | None], interval: float) -> None:
        self._current = current
        self._interval = interval
        self._failed: HistoryLog | None = None  # said once per experiment
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collectord-history", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join()

    def _run(self) -> None:
        bursts = Bursts()
        while not self._stop.wait(self._interval):
            history = self._current()
            if history is None or bursts.busy(history):
                continue
            try:
                history.advance()
            except Exception as exc:  # a full disk: the save writes it (and says so)
                if self._failed is not history:
                    self._failed = history
                    log.warning("writing the parameter history ahead failed: %r", exc)
