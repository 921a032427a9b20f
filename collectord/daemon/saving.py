"""Writing a stopped experiment, in a thread of its own, while the daemon goes on.

A stop hands the lifecycle's stopped experiment to a ``SaveJob``: a fork of
the tree (copy-on-write: either side copies a group before it changes it,
``Tree.fork``), the account of its sources, its stream files and its
journal. The daemon's loop has already begun the next experiment, whose
journal waits for its BEGIN record: the job writes it first (the loop holds
the new journal's records in memory meanwhile, and confirms nothing), then
the experiment's files, then marks it saved. The steps, each a fault point
(``faults.py``)::

    1. the next experiment's BEGIN record, fsynced (the loop may now flush)
    2. stream files finished (and converted)        } in the experiment's
    3. metadata file written                        } staging folder
    4. parameter history written (``changes.py``)   }
    5. last config replaced
    6. the staging folder marked saved (``saved``, fsynced)
    7. the experiment's journal deleted
    8. its staging folder renamed into place

A step that fails is tried again from where it stopped (``Saver`` retries);
nothing before 6 counts as saved. The next start finishes whatever a crash
cut short (``lifecycle.py``): a journal that ends with STOP and no ``saved``
mark is saved from its journal, a marked folder only needs 7 and 8.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .. import jsonio, store, system
from ..changes import changes_path
from ..collector import carried_fields
from ..experiment import Experiment, metadata
from ..faults import Fault, reached
from ..journal import Journal
from ..store import LastConfig
from ..streamfiles import Finished, StreamFiles, StreamSpec
from ..tree import Exported, Tree, gc_paused, merge_config, with_value
from .history import HistoryLog
from .reuse import LastSave, Reuse

log = logging.getLogger("collectord")

#: The mark of a staging folder whose experiment is saved (step 6).
SAVED_MARK = "saved"
#: A failed save is tried again after this many seconds.
RETRY_INTERVAL = 5.0


@dataclasses.dataclass
class Successor:
    """The next experiment, begun before the stopped one is written."""

    journal: Journal  # created, empty: its BEGIN record comes first
    begin: dict[str, Any]  # the BEGIN record but for its tree
    written: bool = False


@dataclasses.dataclass
class SaveJob:
    """One stopped experiment, and how far its save got."""

    experiment: Experiment
    tree: Tree  # a fork: the daemon's own tree goes on with the next experiment
    history: HistoryLog  # its parameter history, written as it grew
    in_force: frozenset[str]  # sessions whose carried parameters are in its metadata
    account: dict[str, Any]  # its ``collectord`` section
    streams: dict[tuple[str, ...], StreamSpec]  # copies, with their rows at the stop
    files: StreamFiles | None
    journal: Journal
    last_config: LastConfig
    last_config_file: Path
    output: Path
    stream_format: str
    successor: Successor | None
    #: Held while the last config is written: ``Lifecycle.save_config`` writes it too.
    config_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    #: The ids of the stop requests that asked for it (``answers.py``).
    stop_ids: tuple[str, ...] = ()
    #: What a ``save_config`` since the stop wrote to the last config: this
    #: experiment's parameters and those set after it, over the same old config.
    superseded: dict[str, Any] | None = None
    #: Progress, for ``status``: the step under way and when the save began.
    step: str = "queued"
    began: float = dataclasses.field(default_factory=time.monotonic)
    #: Results of steps done, kept for a retry.
    kept: dict[tuple[str, ...], Finished] | None = None
    #: What the last save made of its tree, for this one to take again; this
    #: save's share of it (taken in the save's thread: one save at a time
    #: gets it); the tree as the files hold it (one walk for all three).
    last_save: LastSave = dataclasses.field(default_factory=LastSave)
    reuse: Reuse | None = None
    exported: Exported | None = None
    metadata_file: Path | None = None
    changes_file: Path | None = None
    saved_config: dict[str, Any] | None = None
    marked: bool = False
    path: Path | None = None

    #: What failed after the experiment was saved (it waits in staging), for ``status``.
    error: str | None = None

    @property
    def staging(self) -> Path:
        return self.journal.path.parent

    @property
    def run_id(self) -> str:
        return self.experiment.run_id

    @property
    def successor_written(self) -> bool:
        """The next experiment's BEGIN is on disk: its journal may be written."""
        return self.successor is None or self.successor.written

    def run(self) -> dict[str, Any]:
        """Do the steps not done yet; return what a ``stop`` reply carries."""
        if self.saved_config is None and self.reuse is None:
            self.reuse = self.last_save.begin()
        if self.successor is not None and not self.successor.written:
            self.step = "beginning the next experiment"
            self._write_begin(self.successor)
            reached(Fault.SAVE_NEXT_BEGUN)
        if self.kept is None:
            self.step = "finishing the stream files"
            self.kept = (
                self.files.finish(self.stream_format, self._converting)
                if self.files is not None
                else {}
            )
            reached(Fault.SAVE_STREAMS_FINISHED)
        if self.metadata_file is None:
            self.step = "writing the metadata"
            self.metadata_file = store.write_metadata(
                self.staging, self.experiment.folder_name, self._metadata(), self._memo()
            )
            reached(Fault.SAVE_METADATA_WRITTEN)
        if self.changes_file is None:
            self.step = "writing the parameter history"
            path = changes_path(self.metadata_file)
            self.history.finish(path)
            self.changes_file = path
            reached(Fault.SAVE_CHANGES_WRITTEN)
        if self.saved_config is None:
            self.step = "writing the last config"
            with self.config_lock:
                if self.superseded is None:
                    merged = merge_config(self.last_config.get(), self._exported().params)
                    store.write_last_config(self.last_config_file, merged, self._memo())
                else:  # the file holds a newer config already: keep it
                    merged = self.superseded
                # What restore() answers from now on (as the file holds it: the
                # restore command reads its node back through JSON).
                self.saved_config = merged
            reached(Fault.SAVE_LAST_CONFIG_WRITTEN)
        if self.reuse is not None:
            self.reuse.keep()
            self.reuse = None
        self.exported = None
        if not self.marked:
            self.step = "marking it saved"
            mark_saved(self.staging)
            self.marked = True
            reached(Fault.SAVE_MARKED)
        if self.path is None:
            self._publish()
        return {
            "run_id": self.experiment.run_id,
            "path": str(self.path),
            "last_config": str(self.last_config_file),
            "unconfirmed": list(self.account["unconfirmed"]),
            "missing": list(self.account.get("missing_at_stop", [])),
        }

    def _converting(self, what: str) -> None:
        self.step = f"finishing the stream files: {what}"

    def _exported(self) -> Exported:
        if self.exported is None:
            assert self.reuse is not None
            self.exported = self.reuse.export(self.tree, self.in_force.__contains__)
        return self.exported

    def _memo(self) -> jsonio.Memo:
        """The texts of maps the metadata and the last config share, and of
        groups the last save wrote."""
        assert self.reuse is not None
        return self.reuse.memo

    def _write_begin(self, successor: Successor) -> None:
        exported = self._exported()
        assert self.reuse is not None
        carried = carried_fields(exported.params, exported.owners, self.reuse.pack)
        record = {**successor.begin, **carried}
        successor.journal.write_first(record)
        successor.written = True

    def _metadata(self) -> dict[str, Any]:
        assert self.kept is not None
        tree = self._exported().metadata
        for path, spec in self.streams.items():
            kept = self.kept.get(path)
            if self.files is None:  # only counted (unit tests)
                descriptor = spec.descriptor(spec.file_name(), self.stream_format)
            elif kept is None:  # the file could not be created (logged), and has no rows
                descriptor = spec.descriptor(None, self.stream_format)
            else:
                descriptor = spec.descriptor(*kept)
            tree = with_value(tree, path, descriptor)
        return metadata(tree, self.account)

    def _publish(self) -> None:
        """Steps 7 and 8: the experiment is saved, so these never fail the save."""
        assert self.metadata_file is not None
        self.step = "moving it into place"
        try:
            self.journal.discard()
            if self.files is not None:
                self.files.remove_converted()  # the journal no longer needs the .npy
        except OSError as exc:
            self._waits(f"delete its journal or converted .npy files: {exc}")
            self.path = self.metadata_file  # not moved: the next start does both
            return
        reached(Fault.SAVE_JOURNAL_DISCARDED)
        experiment = self.experiment
        try:
            folder = store.publish(
                self.output, self.staging, experiment.named_after, experiment.folder_name
            )
            self.path = folder / self.metadata_file.name
            reached(Fault.SAVE_PUBLISHED)
        except OSError as exc:
            self._waits(f"move it into place: {exc}")
            self.path = self.metadata_file

    def _waits(self, failed: str) -> None:
        """Everything is on disk and marked saved; the next start (``Lifecycle.
        _complete``) does what is left. Logged and shown, never raised: a
        client told that its stop failed would stop again."""
        self.error = f"saved {self.run_id}, but could not {failed}"
        log.error("%s; it waits in staging, to be completed at the next start", self.error)


def mark_saved(staging: Path) -> None:
    """Step 6: from here on the experiment in ``staging`` counts as saved."""
    mark = staging / SAVED_MARK
    fd = system.open_binary(mark, os.O_WRONLY | os.O_CREAT)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    system.fsync_dir(staging)


def is_saved(staging: Path) -> bool:
    return (staging / SAVED_MARK).exists()


def _run(job: SaveJob) -> dict[str, Any]:
    with gc_paused():  # a big tree's walks allocate millions of objects
        return job.run()


class Saver:
    """Runs one ``SaveJob`` at a time in a background thread; retries a failed one."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="collectord-save")
        self._running: Future[dict[str, Any]] | None = None
        self.job: SaveJob | None = None
        self.retry_at = 0.0

    @property
    def busy(self) -> bool:
        """A save is under way or waits to be tried again."""
        return self.job is not None

    def start(self, job: SaveJob) -> None:
        assert self.job is None, "one save at a time"
        self.job = job
        self._running = self._executor.submit(_run, job)

    def finished(self) -> tuple[SaveJob, dict[str, Any] | BaseException] | None:
        """The job and its result (or its error) once its run is over; a failed
        job stays, to be tried again by ``retry``."""
        if self._running is None or not self._running.done():
            return None
        job, running = self.job, self._running
        assert job is not None
        self._running = None
        error = running.exception()
        if error is not None:
            job.step = f"failed: {error}; to be tried again"
            self.retry_at = time.monotonic() + RETRY_INTERVAL
            return job, error
        self.job = None
        return job, running.result()

    def retry(self) -> None:
        """Try a failed job again once its interval is over."""
        if self.job is not None and self._running is None and time.monotonic() >= self.retry_at:
            self._running = self._executor.submit(_run, self.job)

    def wait(self) -> None:
        """Wait for the running job's current try."""
        if self._running is not None:
            self._running.exception()

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def describe(job: SaveJob) -> dict[str, Any]:
    """A save under way, for ``status``: which experiment, the step, for how long."""
    return {
        "run_id": job.experiment.run_id,
        "step": job.step,
        "seconds": round(time.monotonic() - job.began, 3),
    }
