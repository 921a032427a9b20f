"""The life of an experiment, written once: begin, admit, stop and save, begin the next.

::

    open ──> begin ──> admit messages ──> stop: save ──> begin the next ──> ...
      │                   ▲
      └── a journal left by a crash: replay it, then resume it (``collectord run``)
          or save it as recovered and begin the next (``--no-resume``, ``collectord recover``)

Every way an experiment starts or ends goes through this module: the live
daemon, a daemon starting on a folder a crashed one left, ``collectord run
--no-resume`` and ``collectord recover``. Live messages and replayed journal
records go through the same ``receive``; a save from a stop, from a signal and
from a recovery is the same ``save``.

Two journal records and a mark make the boundaries safe against a crash at
any moment:

* BEGIN opens every experiment's journal. It carries the state the experiment
  inherits (parameters, sources with their last sequence numbers, streams), so
  a crash never costs a live client its streams or a false gap.
* STOP is journaled when the stop barrier has passed, before anything else of
  the save. A journal that ends with STOP is saved at the next start.
* ``saved``, a file in the experiment's staging folder, says its files are
  written: only deleting its journal and renaming the folder are left.

A save (``begin_save``, then a ``SaveJob``: the steps are in ``saving.py``)::

    0. STOP journaled; journal and stream files fsynced; the tree forked;
       the next experiment begun, its records held in memory   (this thread)
    1. the next experiment's BEGIN written; its records may go to disk
    2-5. stream files finished, metadata, parameter history and last
         config written
    6. marked saved
    7-8. journal deleted, folder renamed into place           (the job's thread)

The daemon takes messages for the next experiment from step 0 on, and answers
requests throughout. A crash before 1 leaves a journal ending in STOP, and a
successor without BEGIN, which goes (nothing of it was confirmed: clients
send it again); a crash before 6 leaves the journal ending in STOP besides
its successor. Either way the next start saves the stopped experiment from
its journal, then resumes the newest. From 6 on, a start only does what is
left of 7 and 8 (``_complete``). The stopped experiment is saved once, and
the next one holds what it inherited.

A step that fails (rather than a crash) is tried again by the saver until it
succeeds, the daemon going on meanwhile; nothing from 6 on fails a save
(a client told that its stop failed would stop again and save a second
experiment): what fails there is logged, and the next start does it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import errno
import logging
import os
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import codec, journal, store, system
from ..clocks import Sample
from ..collector import (
    Applied,
    Collector,
    RowsOnDisk,
    carried_fields,
    decode_header,
    message_count,
)
from ..errors import ConfigError, StorageError, UnreadableRecord
from ..experiment import Experiment, StopRequest, now
from ..faults import Fault, reached
from ..journal import JOURNAL_NAME, Journal, RecordType
from ..paths import check_file_name
from ..protocol import Kind, ProtocolViolation
from ..sources import Admit, Source, TooManySessions, brief
from ..store import LastConfig
from ..streamfiles import FILE_SUFFIXES, StreamFiles
from ..tree import gc_paused
from . import saving
from .answers import Answer, Answers
from .durability import Durability
from .history import HistoryLog
from .rejections import RejectionLog
from .reuse import LastSave
from .saving import SaveJob, Successor

log = logging.getLogger("collectord")

#: A long replay says how far it has got this often, in seconds.
REPLAY_PROGRESS_EVERY = 2.0
#: Write errors that room on the disk will cure: a block refused for one of
#: these is sent again by a resending client. Others (a file the daemon may
#: not create, say) would fail forever, so the block is rejected instead.
_NO_ROOM = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG") if hasattr(errno, name)
)

#: Message kinds whose journal records carry their receive time ("time"):
#: those that may hold parameters.
_WITH_PARAMS = frozenset((Kind.PARAMS.value, Kind.BATCH.value))

RECOVERED = StopRequest(
    by="collectord recover", reason="the daemon ended without saving this experiment"
)


class Start(enum.Enum):
    """What to do with an experiment a crashed daemon left unfinished."""

    RESUME = "resume"  # go on with it (``collectord run``)
    RECOVER = "recover"  # save it as recovered first (``--no-resume``, ``collectord recover``)


class Received(enum.Enum):
    """What ``receive`` did with a data message."""

    APPLIED = "applied"  # admitted (each of its messages applied or rejected)
    DUPLICATE = "duplicate"
    AHEAD = "ahead"  # a gap before it: dropped; ask its sender to resend
    UNREADABLE = "unreadable"  # no usable header: rejected, sender unknown
    NOT_RECEIVED = "not received"  # a block the disk had no room for: to be resent


@dataclasses.dataclass
class Opened:
    """What opening an output folder found and did, for the log and ``recover``."""

    saved: list[Path] = dataclasses.field(default_factory=list)
    resumed: str | None = None
    #: One line per damaged region or unreadable record, naming file and place.
    damage: list[str] = dataclasses.field(default_factory=list)


class Lifecycle:
    """The current experiment of one output folder, and every transition of it."""

    def __init__(
        self,
        output: Path,
        last_config_file: Path,
        stream_format: str,
        durability: Durability,
        required: Sequence[str] = (),
    ) -> None:
        self.output = output
        self.last_config_file = last_config_file
        self.stream_format = stream_format
        self.durability = durability
        self.collector = Collector(LastConfig({}), required)  # ``open`` names its file
        self.saved_count = 0
        self.last_saved: Path | None = None
        self.last_error: str | None = None
        #: While a journal is replayed nothing is journaled again.
        self._replaying = False
        #: The kinds of record the last replay applied (``_nothing_at_stake``).
        self._replayed_kinds: set[RecordType] = set()
        self._rejection_log = RejectionLog()
        #: (experiment, parameter messages applied) when save_config last wrote.
        self._config_saved: tuple[str, int] | None = None
        #: One writer of the last config at a time: ``save_config`` here, a
        #: save's step 5 in the saver's thread (``SaveJob.config_lock``).
        self._config_lock = threading.Lock()
        #: The save under way (begun, not yet finished), whose last config a
        #: ``save_config`` supersedes.
        self._saving: SaveJob | None = None
        #: What the last save made of its tree, for the next to take again.
        self._last_save = LastSave()
        #: The journal ends with STOP (the stop barrier passed): it must be saved.
        self._stop_journaled: _JournaledStop | None = None
        #: Stops saved, by their ids: a stop sent again gets its save (``answers.py``).
        self.answers = Answers()
        #: The running experiment's parameter history (``history.py``).
        self.history: HistoryLog | None = None
        #: A session may have connected or gone since ``check_required`` last
        #: looked, and why a name may have gone (the last cause given for it).
        self._presence_changed = False
        self._causes: dict[str, str] = {}

    # -- opening an output folder ----------------------------------------------------

    def open(self, start: Start) -> Opened:
        """Deal with whatever a previous daemon left, then hold a running experiment.

        Saves marked saved are completed. Experiments left unfinished
        are replayed from their journals: the older ones saved as recovered,
        the newest resumed (``RESUME``) or saved as recovered (``RECOVER``), in
        which case the next experiment begins inheriting its state. A journal
        whose last record is STOP is saved either way: its stop had passed.
        Raises ``StorageError`` if the folder cannot be written (what was
        done stays done: the next start goes on from there).
        """
        with gc_paused():
            try:
                return self._open(start)
            except OSError as exc:  # a full disk, a folder it may not write: said in a line
                raise StorageError(
                    f"cannot start on the output folder {self.output}: {exc}"
                ) from exc

    def _open(self, start: Start) -> Opened:
        opened = Opened()
        unfinished = self._finish_interrupted(opened)
        for run in unfinished[:-1]:
            older = self._sibling()
            older._reopen(run, opened, resumed=False)
            if older._stop_journaled is not None or not older._nothing_at_stake:
                opened.saved.append(older._save_journaled(begin_next=False))
                older.durability.close()
                self.answers.take(older.answers)
            else:  # nothing arrived in it, and a newer one carries the state on
                older.durability.close()
                _remove_unfinished(run)
        if unfinished:
            newest = unfinished[-1]
            self._reopen(newest, opened, resumed=start is Start.RESUME)
            if self._stop_journaled is not None or (start is Start.RECOVER and self.has_news):
                opened.saved.append(self._save_journaled(begin_next=True))
            elif self._nothing_at_stake:
                self._begin_instead_of(newest)
            else:
                opened.resumed = self.collector.experiment.run_id
        else:
            self.collector.last_config = LastConfig.reading(self.last_config_file)
            self._begin_first()
        self.durability.durable = self._received()
        return opened

    def _finish_interrupted(self, opened: Opened) -> list[Path]:
        """Complete saves that were marked saved; return the unfinished experiments.

        A journal with no whole record is a BEGIN that never came (the save
        before it had not written it, so its own journal still ends with
        STOP): its folder goes.
        """
        unfinished = []
        for run in store.staged_runs(self.output):
            path = run / JOURNAL_NAME
            if saving.is_saved(run) or not path.is_file():
                published = self._complete(run)
                if published is not None:
                    opened.saved.append(published)
            elif journal.first_record(path) is None and not journal.read(path).records:
                log.warning("%s: an experiment that never began; removed", run)
                shutil.rmtree(run)
            else:
                unfinished.append(run)
        return _in_succession(unfinished)

    def _sibling(self) -> Lifecycle:
        """A lifecycle for an older unfinished experiment, saved and then dropped."""
        durability = Durability(self.durability.interval, lambda *_: None)
        return Lifecycle(
            self.output,
            self.last_config_file,
            self.stream_format,
            durability,
            self.collector.required.names,
        )

    def _complete(self, staging: Path) -> Path | None:
        """Steps 7 and 8 of a save marked saved; the metadata path, if any."""
        try:
            (staging / JOURNAL_NAME).unlink(missing_ok=True)
            _remove_converted(staging)
            published = store.finish_publishing(self.output, staging)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Its metadata file damaged on disk, or a folder it may not change,
            # say: it waits where a person can look at it (marked saved: it is
            # never saved again), and the daemon goes on.
            self.last_error = (
                f"{staging} is saved but cannot be moved into place: {type(exc).__name__}: {exc}"
            )
            log.error("%s; it waits in staging", self.last_error)
            return None
        if published is not None:
            log.warning("completed the interrupted save of %s", published)
        return published

    def _reopen(self, staging: Path, opened: Opened, *, resumed: bool) -> None:
        """Replay ``staging``'s experiment and go on with it; the restart is recorded."""
        self.collector.last_config = LastConfig.reading(self.last_config_file)
        restart = self._replay(staging, opened)
        self._begin_history(staging)
        reached(Fault.OPEN_REPLAYED)
        restart["resumed" if resumed else "recovered"] = now().isoformat()
        self.collector.restarts.append(restart)
        self._record(RecordType.RESTART, restart=restart)  # a later restart keeps it
        if self._stop_journaled is None:
            # Its clients were connected to the daemon that died: a required
            # one counts again once it reconnects to this one.
            self.presence_changed(None, "the daemon restarted")
            self.check_required()
        self.durability.make_durable(self._received())

    def _save_journaled(self, *, begin_next: bool) -> Path:
        """Save a replayed experiment: as its journaled stop asked, or as recovered."""
        stop = self._stop_journaled
        result = self.save(
            stop.request if stop else RECOVERED,
            stop.unconfirmed if stop else [],
            stopped=stop.stopped if stop else None,
            begin_next=begin_next,
            stop_ids=stop.ids if stop else (),
        )
        return Path(result["path"])

    def _replay(self, staging: Path, opened: Opened) -> dict[str, Any]:
        """Rebuild the experiment in ``staging`` from its journal, and reopen it.

        A damaged record is skipped, not the rest: the damage is named in the
        log, in ``opened`` and in the restart entry returned, and the journal is
        kept aside and rewritten without it. Only a torn end is cut silently.
        """
        path = staging / JOURNAL_NAME
        scan = journal.read(path)
        problems = [
            f"{path}: {region.length} bytes at byte {region.offset} are damaged; skipped"
            for region in scan.damage
        ]
        self.collector.files = StreamFiles(staging, replaying=True)
        self._replaying = True
        self._replayed_kinds = set()
        began = False
        kept = []
        size = max(1, scan.intact)
        shown_at = time.monotonic()
        for index, record in enumerate(scan.records):
            if time.monotonic() - shown_at > REPLAY_PROGRESS_EVERY:
                shown_at = time.monotonic()
                log.info(
                    "replaying %s: %.0f%% (%d of %d records)",
                    path,
                    100 * scan.offsets[index] / size,
                    index,
                    len(scan.records),
                )
            where = f"{path}: record {index + 1} (byte {scan.offsets[index]})"
            try:
                kind = journal.check(record)
                self.replay_record(record, lost_before=bool(problems) or not began)
                began |= kind is RecordType.BEGIN
                self._replayed_kinds.add(kind)
            except (UnreadableRecord, codec.DecodeError, ProtocolViolation) as exc:
                problems.append(f"{where}: {exc}; skipped")
                continue
            except Exception as exc:  # a bug must cost one record, not the folder
                log.exception("%s: cannot replay", where)
                problems.append(f"{where}: cannot replay ({type(exc).__name__}: {exc}); skipped")
                continue
            kept.append(record)
        if not began:
            problems.append(f"{path}: no readable BEGIN record; the experiment starts empty")
            self.collector.experiment = _experiment_named(staging)
        self.collector.files.end_replay()
        self._replaying = False
        for source in self.collector.sources.by_session.values():
            # Until it reconnects to this daemon; one a stop found gone is gone.
            source.from_journal = source.reachable
        for problem in problems:
            log.error("%s", problem)
        opened.damage.extend(problems)
        restart: dict[str, Any] = {"journal_records": len(scan.records), "torn_tail": scan.torn}
        if problems:
            aside = _keep_aside(self.output, path)
            _rewrite(path, kept)
            restart["damage"] = {"problems": problems, "journal_kept_at": str(aside)}
            opened_journal = Journal(path)
        else:
            opened_journal = Journal.reopen(path, scan.intact)
        self.durability.switch(opened_journal, self.collector.files)
        log.warning(
            "replayed experiment %s from its journal (%d records%s%s)",
            self.collector.experiment.run_id,
            len(scan.records),
            ", torn tail cut" if scan.torn else "",
            f", {len(problems)} problem(s)" if problems else "",
        )
        return restart

    def replay_record(self, record: Mapping[str, Any], *, lost_before: bool = False) -> None:
        """Apply one journal record again, journaling nothing.

        ``record`` is not checked here (``journal.check`` does that): a field
        it lacks raises ``KeyError``. ``lost_before``: records before it may
        be lost to damage (see ``receive``).
        """
        collector = self.collector
        kind = RecordType(record["t"])
        replaying, self._replaying = self._replaying, True
        try:
            if kind is RecordType.BEGIN:
                collector.load_begin(record)
                self.answers.begun_after(record)
            elif kind is RecordType.MESSAGE:
                frames = list(record["frames"])
                if "raw" in record:  # a block: its rows are in the stream file
                    frames.append(RowsOnDisk(record["raw"], record.get("at")))
                refused = dict(record.get("refused", ()))
                self.receive(
                    frames,
                    0.0,
                    refused=refused,
                    lost_before=lost_before,
                    received=record.get("time", self._journal_time()),
                )
            elif kind is RecordType.HELLO:
                collector.hello(record["session"], record)
            elif kind is RecordType.BYE:
                collector.bye(record["session"])
            elif kind is RecordType.FIRST:
                collector.experiment.first_message = dt.datetime.fromisoformat(record["at"])
            elif kind is RecordType.SKIP:
                collector.sources.get(record["session"], record["name"]).skip_to(record["upto"])
            elif kind is RecordType.RESTART:
                collector.restarts.append(record["restart"])
            elif kind is RecordType.REJECT:
                collector.reject(record.get("session"), record["reason"])
            elif kind is RecordType.NAME:
                collector.experiment.name = record["name"]
            elif kind is RecordType.CLOCK:
                sample = Sample(record["at"], record["offset"], record["rtt"])
                collector.clock_sample(record["session"], sample)
            elif kind is RecordType.RESTORE:
                collector.restored(
                    tuple(record["node"]),
                    codec.unpack(record["values"], codec.DAEMON_DEPTH),
                    record.get("time", self._journal_time()),
                    record.get("session"),
                )
            elif kind is RecordType.REACH:
                found = collector.sources.by_session.get(record["session"])
                if found is not None:
                    found.reachable = record["reachable"]
            elif kind is RecordType.PRESENCE:
                at = dt.datetime.fromisoformat(record["at"])
                collector.required.mark(record["name"], record["missing"], at, record["cause"])
            elif kind is RecordType.STOP:
                for session in record.get("gone", ()):
                    found = collector.sources.by_session.get(session)
                    if found is not None:
                        found.reachable = False
            # A STOP followed by more records is a save that failed and was
            # gone on from; one that ends the journal is a save to finish.
            self._stop_journaled = _JournaledStop.of(record) if kind is RecordType.STOP else None
        finally:
            self._replaying = replaying

    def _journal_time(self) -> float:
        """The receive time of a record journaled before records carried one:
        the experiment's start, the one time such a journal knows for sure."""
        return self.collector.experiment.started.timestamp()

    # -- beginning ---------------------------------------------------------------------

    def _begin_first(self) -> None:
        """Begin an experiment with nothing before it in this folder's staging
        area: its BEGIN record carries the last config's nothing and the
        current (empty) state."""
        following = Experiment.begin()
        staging = store.staging_dir(self.output, following.run_id)
        opened = Journal(staging / JOURNAL_NAME)
        self.collector.required.begin(following.started)
        try:
            begin = self.collector.begin_record(following, None)
            carried = carried_fields(*self.collector.tree.carried())
            opened.write_first({**begin, **carried, **self.answers.begin_field()})
        except BaseException:
            opened.discard()
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.collector.experiment = following
        self.collector.attach_files(StreamFiles(staging))
        self.durability.switch(opened, self.collector.files)
        self._begin_history(staging)

    @property
    def _nothing_at_stake(self) -> bool:
        """The replayed experiment holds nothing a save would keep: only
        sessions coming and going and clock samples (which a daemon asked to
        exit does not save either), no record lost to damage."""
        collector = self.collector
        return (
            not self.has_news
            and collector.experiment.name is None
            and self._replayed_kinds <= _NOTHING_AT_STAKE
            and not any("damage" in restart for restart in collector.restarts)
        )

    def _begin_instead_of(self, empty: Path) -> None:
        """Begin an experiment now with the state of ``empty`` (replayed, the
        newest unfinished one, with nothing at stake), and remove ``empty``.

        A daemon that exits with nothing new to save leaves its running
        experiment's journal to carry the parameters, sessions and streams
        over. Resumed, that experiment would say it began when that daemon
        stopped (the evening before, for a rig started each morning), and
        carry a restart entry though nothing was at stake. Its successor
        begins as a save's would; a crash before ``empty`` is removed leaves
        two such experiments, and the next start removes the older
        (``_open``) and does this again with the newer.
        """
        collector = self.collector
        began = journal.first_record(empty / JOURNAL_NAME) or {}
        stale_journal, stale_files = self.durability.journal, collector.files
        following = Experiment.begin()
        staging = store.staging_dir(self.output, following.run_id)
        opened = Journal(staging / JOURNAL_NAME)
        collector.next_experiment(collector.last_config, following, collector.tree.fork())
        # Nothing arrived: the parameters are those ``empty`` began with, and
        # its packed tree is taken as it is (a million parameters take
        # seconds to pack again; older BEGIN records held them otherwise).
        carried = (
            {"carried": began["carried"]}
            if "carried" in began
            else carried_fields(*collector.tree.carried())
        )
        answered = self.answers.begin_field()  # as replayed from ``empty``
        try:
            begin = collector.begin_record(following, began.get("follows"))
            opened.write_first({**begin, **carried, **answered})
        except BaseException:
            opened.discard()
            shutil.rmtree(staging, ignore_errors=True)
            raise
        reached(Fault.OPEN_BEGUN_INSTEAD)
        collector.attach_files(StreamFiles(staging))
        self.durability.switch(opened, collector.files)
        if self.history is not None:
            self.history.close()
        if stale_files is not None:
            stale_files.close()
        if stale_journal is not None:
            stale_journal.close()
        _remove_unfinished(empty)
        self._begin_history(staging)
        log.info(
            "nothing had arrived in %s: began %s now, with its parameters, sessions and streams",
            empty.name,
            following.run_id,
        )

    def _begin_history(self, staging: Path, stopped: HistoryLog | None = None) -> None:
        """The running experiment's history log: its entries, and the
        parameters it began with, go to ``staging`` as they grow. Sessions the
        ``stopped`` experiment knew keep their names for the carried-in lines
        (the new experiment forgot those that are done)."""
        collector = self.collector
        known = stopped.names if stopped is not None else None

        def name_of(session: str) -> str | None:
            source = collector.sources.by_session.get(session)
            if source is not None:
                return source.name
            return known(session) if known is not None else None

        self.history = HistoryLog(
            staging,
            collector.history,
            collector.began,
            collector.experiment.started.timestamp(),
            name_of,
        )

    def _history_for_save(self) -> HistoryLog:
        """The stopped experiment's history log, for its save, with the names
        of its sessions as they are now (the next experiment forgets some)."""
        history = self.history
        assert history is not None
        sessions = self.collector.sources.by_session
        history.names = {session: s.name for session, s in sessions.items()}.get
        return history

    # -- admitting ---------------------------------------------------------------------

    def receive(
        self,
        frames: list[Any],
        at: float,
        *,
        refused: Mapping[int, str] | None = None,
        lost_before: bool = False,
        received: float | None = None,
    ) -> tuple[Received, Source | None]:
        """Admit one data message, live or replayed from the journal.

        Live, ``frames`` are as received and ``at`` the monotonic time; the
        message is journaled before it is applied. Replayed, a block's rows
        are a ``RowsOnDisk``, ``refused`` what the live daemon failed on, and
        ``lost_before`` says earlier records were lost to damage: a gap in a
        session's sequence is then accepted as lost, not waited for.
        ``received``: the wall-clock time it arrived, journaled with messages
        that may hold parameters (their history's ``time``); live, now.
        """
        try:
            header = decode_header(frames)
            source = self.collector.sources.get(header["session"], header["source"])
        except (codec.DecodeError, ProtocolViolation, TooManySessions) as exc:
            self.reject(None, f"data message: {exc}")
            return Received.UNREADABLE, None
        first = header["seq"]
        last = first + message_count(header) - 1
        if not self._replaying:
            source.heard = at
        verdict, seen = source.admit_range(first, last, at)
        if verdict is Admit.AHEAD:
            if not self._replaying and not source.give_up(at, header.get("resends", False)):
                source.dropped_out_of_order()
                return Received.AHEAD, source
            if self._replaying and not lost_before:
                return Received.AHEAD, source  # a record out of order: cannot happen
            self.skip(source, first - 1)
            verdict, seen = source.admit_range(first, last, at)
        if verdict is Admit.DUPLICATE:
            return Received.DUPLICATE, source
        if self.collector.experiment.first_message is None:
            self.collector.experiment.touch()
            assert self.collector.experiment.first_message is not None
            self._record(RecordType.FIRST, at=self.collector.experiment.first_message.isoformat())
        if header["kind"] == Kind.BLOCK.value and len(frames) == 3:
            return self._receive_block(source, header, frames, refused), source
        frames = [_as_bytes(frame) for frame in frames]
        if received is None:
            received = time.time()
        outcome = self.collector.apply_message(source, header, frames, seen, refused, received)
        if header["kind"] in _WITH_PARAMS:
            self._record_message(frames, outcome, time=received)
        else:
            self._record_message(frames, outcome)
        self._rejection_log.log(source.name, outcome.rejections)
        return Received.APPLIED, source

    def _receive_block(
        self,
        source: Source,
        header: Mapping[str, Any],
        frames: list[Any],
        refused: Mapping[int, str] | None,
    ) -> Received:
        """A block's rows go to its stream file; the journal keeps their length.

        If the disk has no room for the rows, a client that resends is made to
        send the block again later: the block is not counted as received, so
        it is not confirmed, and nothing is journaled. Otherwise (a client
        that cannot resend, or an error room will not cure) the block is
        rejected, and its record says so for replay.
        """
        first = header["seq"]
        try:
            outcome = self.collector.apply_message(source, header, frames, 0, refused)
        except OSError as exc:
            self.last_error = f"stream write failed: {exc}"
            if header.get("resends", False) and exc.errno in _NO_ROOM:
                log.warning(
                    "%s: cannot write block %d (%s); waiting for it again", source.name, first, exc
                )
                source.received = first - 1  # not received: the client resends it
                return Received.NOT_RECEIVED
            reason = f"seq {first}: the rows could not be written: {exc}"
            self.collector.refuse(source, reason)
            outcome = Applied([reason], [(0, reason)], [])
        else:
            if self.last_error is not None and self.last_error.startswith("stream write"):
                self.last_error = None
        fields = {"raw": len(frames[2])}
        if outcome.at:
            fields["at"] = outcome.at[0]
        self._record_message([_as_bytes(frames[0]), _as_bytes(frames[1])], outcome, **fields)
        self._rejection_log.log(source.name, outcome.rejections)
        return Received.APPLIED

    def _record_message(self, frames: list[Any], outcome: Applied, **fields: Any) -> None:
        if outcome.refused:
            fields["refused"] = [list(pair) for pair in outcome.refused]
        self._record(RecordType.MESSAGE, frames=frames, **fields)

    def _record(self, kind: RecordType, **fields: Any) -> None:
        if not self._replaying:
            self.durability.record(kind, **fields)

    def reject(self, session: str | None, reason: str) -> None:
        reason = brief(reason)
        target = self.collector.reject(session, reason)
        self._record(RecordType.REJECT, session=session, reason=reason)
        self._rejection_log.log(target.name, [reason])

    def skip(self, source: Source, last: int) -> None:
        """Accept that ``source``'s messages up to ``last`` are lost (named, counted)."""
        if not self._replaying:
            log.warning("%s: messages %d..%d are lost", source.name, source.received + 1, last)
        self._record(RecordType.SKIP, session=source.session, name=source.name, upto=last)
        source.skip_to(last)

    def hello(self, session: str, fields: Mapping[str, Any]) -> Source:
        source = self.collector.hello(session, fields)
        source.from_journal = False
        source.heard = time.monotonic()
        self.presence_changed(source.name, "")
        self._record(
            RecordType.HELLO,
            session=session,
            name=source.name,
            host=source.host,
            pid=source.pid,
            program=source.program,
            versions=source.versions,  # already text: the journal packs plain msgpack
        )
        if fields.get("confirmed", 0) > source.received:
            # A previous daemon confirmed more than this one holds (it had no
            # journal, or lost it): the difference is lost, and said so.
            self.skip(source, fields["confirmed"])
        return source

    def name(self, name: str) -> None:
        """A client named the current experiment (its folder and file names)."""
        self.collector.experiment.name = check_file_name(name, where="experiment name")
        self._record(RecordType.NAME, name=name)

    def clock_sample(self, source: Source, sample: Sample) -> None:
        """``source`` measured its clock: the sample goes to the current experiment."""
        self.collector.clock_sample(source.session, sample)
        self._record(RecordType.CLOCK, session=source.session, **sample._asdict())

    def save_config(self) -> Path:
        """Write the last config now, the experiment going on (stytra's
        ``save_config_file``): what a save would write there, no folder."""
        with self._config_lock:
            merged = self.collector.merged_config()
            store.write_last_config(self.last_config_file, merged)
            self.collector.last_config = LastConfig(merged)
            if self._saving is not None:
                # The tree's parameters include the stopped experiment's (they
                # carried over): the save must not write its older config over
                # this one, nor take it back as what ``restore`` answers.
                self._saving.superseded = merged
        self._config_saved = (
            self.collector.experiment.run_id,
            self.collector.applied[Kind.PARAMS],
        )
        return self.last_config_file

    def restored(
        self, node: tuple[str, ...], values: dict[str, Any], session: str | None = None
    ) -> None:
        """A process (``session``, if it said) restored ``values`` under ``node``:
        they are in force now."""
        received = time.time()
        self.collector.restored(node, values, received, session)
        self._record(
            RecordType.RESTORE,
            node=list(node),
            values=codec.pack(values),
            time=received,
            session=session,
        )

    def bye(self, session: str) -> Source | None:
        source = self.collector.bye(session)
        if source is not None:
            self.presence_changed(source.name, "said bye")
            self._record(RecordType.BYE, session=session)
            self.durability.forget(session)
        return source

    def reach(self, source: Source, reachable: bool, cause: str = "") -> None:
        """``source``'s control connection is there (True), or gone (False,
        for ``cause``). A change is journaled: a daemon restarted after a crash
        would otherwise take a process that had died for one reconnecting, wait
        for it at its first stop, and name it as unconfirmed."""
        if source.reachable == reachable:
            return
        source.reachable = reachable
        self.presence_changed(source.name, cause)
        self._record(RecordType.REACH, session=source.session, reachable=reachable)

    def presence_changed(self, name: str | None, cause: str) -> None:
        """A session of ``name`` (None: of any) may have connected or gone, for
        ``cause``; ``check_required`` looks at the next turn of the loop."""
        self._presence_changed = True
        if cause and name is not None:
            self._causes[name] = cause
        elif cause:
            self._causes.update(dict.fromkeys(self.collector.required.names, cause))

    def check_required(self) -> None:
        """If sessions may have connected or gone, see which required names
        have none connected: a name that went missing is logged at once and
        journaled (PRESENCE), as is one that came back.

        A walk of the sessions, only after something changed, and only with
        required names: a loop turn with nothing new costs one test.
        """
        if not self._presence_changed:
            return
        self._presence_changed = False
        causes, self._causes = self._causes, {}
        required = self.collector.required
        if not required.names:
            return
        at = now()
        for change in required.update(self.collector.connected_names(), at, causes):
            self._record(
                RecordType.PRESENCE,
                name=change.name,
                missing=change.missing,
                at=at.isoformat(),
                cause=change.cause if change.missing else "",
            )
            if self._replaying:
                continue
            if change.missing:
                log.warning(
                    "required source %s is missing since %s (%s)",
                    change.name,
                    at.isoformat(timespec="milliseconds"),
                    change.cause,
                )
            else:
                log.info(
                    "required source %s is connected at %s",
                    change.name,
                    at.isoformat(timespec="milliseconds"),
                )

    def _received(self) -> dict[str, int]:
        return {session: s.received for session, s in self.collector.sources.by_session.items()}

    def flush_when_due(self) -> None:
        self.durability.poll(self._received)

    # -- saving ------------------------------------------------------------------------

    def begin_save(
        self,
        request: StopRequest,
        unconfirmed: list[str],
        *,
        stopped: dt.datetime | None = None,
        begin_next: bool = True,
        stop_ids: Sequence[str] = (),
    ) -> SaveJob:
        """The daemon's part of a save: journal the stop, hand the stopped
        experiment to a ``SaveJob``, and (``begin_next``) go on with the next.

        The job then writes the files (``saving.py``), in the saver's thread
        or, from ``save``, in this one. Costs a fork of the tree's groups, not
        a walk of its values. Raises if the stop cannot be journaled; the
        experiment then goes on as it was.
        """
        self.check_required()  # the account says who was missing at the stop
        with gc_paused():
            collector = self.collector
            old = self.durability.journal
            assert old is not None
            journaled = self._stop_journaled
            if journaled is None:
                stopped = stopped or now()
                sources = collector.sources.by_session.values()
                gone = [source.session for source in sources if not source.reachable]
                self._record(
                    RecordType.STOP,
                    **dataclasses.asdict(request),
                    unconfirmed=unconfirmed,
                    stopped=stopped.isoformat(),
                    gone=gone,  # what the barrier found: a replay must not wait for them
                    ids=list(stop_ids),
                )
            else:
                request, unconfirmed = journaled.request, journaled.unconfirmed
                stopped, stop_ids = journaled.stopped, journaled.ids
            assert stopped is not None
            self.durability.make_durable(self._received())
            reached(Fault.SAVE_STOP_JOURNALED)
            streams = {path: dataclasses.replace(spec) for path, spec in collector.streams.items()}
            if collector.files is not None:
                collector.files.keep_specs(streams)  # the next experiment counts afresh
            job = SaveJob(
                experiment=collector.experiment,
                tree=collector.tree.fork(),
                history=self._history_for_save(),
                in_force=collector.in_force(),
                account=collector.account(request, unconfirmed, stopped),
                streams=streams,
                files=collector.files,
                journal=old,
                last_config=collector.last_config,
                last_config_file=self.last_config_file,
                output=self.output,
                stream_format=self.stream_format,
                successor=None,
                config_lock=self._config_lock,
                stop_ids=tuple(stop_ids),
                last_save=self._last_save,
            )
            self._saving = job
            self._stop_journaled = None
            if not begin_next:
                self.durability.switch(None, None)
                self.history = None
                return job
            following = Experiment.begin()
            successor = Journal(store.staging_dir(self.output, following.run_id) / JOURNAL_NAME)
            files = StreamFiles(successor.path.parent)
            try:
                collector.next_experiment(collector.last_config, following, job.tree)
                collector.attach_files(files)
            except Exception as exc:  # a bug: logged, and gone on from
                log.error("beginning %s: %r; it goes on", following.run_id, exc, exc_info=True)
                collector.experiment = following  # its journal's name, which a save uses
            # Taken after the sessions that are done were forgotten (new_run).
            begin = collector.begin_record(following, job.run_id)
            saving = Answer.of_save(job.experiment, job.account)
            answered = self.answers.begin_field(stop_ids, saving)
            job.successor = Successor(successor, {**begin, **answered})
            self._begin_history(successor.path.parent, job.history)
            # Whatever failed, blocks go to the next experiment's files (a stream
            # whose file is not open gets it with its first block).
            collector.files = files
            self.durability.switch(
                successor, collector.files, held_until=lambda: job.successor_written
            )
            return job

    def finish_save(self, job: SaveJob, result: Mapping[str, Any]) -> None:
        """A job's run is over and the experiment saved (``result``, what a
        stop's reply carries): take what it wrote."""
        self.answers.saved(job.stop_ids, Answer.of_save(job.experiment, job.account, result))
        if job.successor is not None and job.saved_config is not None:
            config = job.saved_config if job.superseded is None else job.superseded
            self.collector.last_config = LastConfig(config)
        self._saving = None
        self.saved_count += 1
        self.last_saved = job.path
        self.last_error = job.error
        log.info("saved %s", job.path)

    def save(
        self,
        request: StopRequest,
        unconfirmed: list[str],
        *,
        stopped: dt.datetime | None = None,
        begin_next: bool = True,
        stop_ids: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Save the current experiment now, in this thread: ``begin_save``, the
        job's steps, ``finish_save``. For a start (``open``) and for tests; the
        daemon's loop runs the job in the saver's thread instead."""
        job = self.begin_save(
            request, unconfirmed, stopped=stopped, begin_next=begin_next, stop_ids=stop_ids
        )
        with gc_paused():
            result = job.run()
        self.finish_save(job, result)
        return result

    @property
    def has_news(self) -> bool:
        """Something arrived since the experiment began (a save would not be empty)."""
        return self.collector.experiment.first_message is not None

    @property
    def worth_saving_at_exit(self) -> bool:
        """Whether a daemon asked to exit saves the experiment first: not if
        nothing arrived, nor if it holds only parameters that ``save_config``
        has written since (a program that saved its settings as it closed, and
        ran no experiment: they are in the last config, and the journal keeps
        them for the next start)."""
        collector = self.collector
        if not self.has_news:
            return False
        data = collector.applied[Kind.DATA] or collector.applied[Kind.BLOCK]
        params = (collector.experiment.run_id, collector.applied[Kind.PARAMS])
        return bool(data) or params != self._config_saved


@dataclasses.dataclass
class _JournaledStop:
    """A STOP record: the stop whose save was under way."""

    request: StopRequest
    unconfirmed: list[str]
    stopped: dt.datetime
    ids: list[str]  # of the stop requests that joined (``answers.py``)

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> _JournaledStop:
        request = StopRequest(
            by=record["by"], reason=record["reason"], host=record["host"], pid=record["pid"]
        )
        stopped = dt.datetime.fromisoformat(record["stopped"])
        ids = [str(stop_id) for stop_id in record.get("ids", ())]
        return cls(request, [str(name) for name in record["unconfirmed"]], stopped, ids)


def _in_succession(runs: list[Path]) -> list[Path]:
    """Unfinished experiments, oldest first: each after the one its BEGIN
    record ``follows``. Their names (run ids) begin with the local time they
    began at, which goes back at the end of summer time or when the clock is
    stepped: a successor may sort before the experiment it follows."""
    named = {run.name: run for run in runs}
    follows = {}
    for run in runs:
        begin = journal.first_record(run / JOURNAL_NAME) or {}
        before = begin.get("follows") if begin.get("t") == RecordType.BEGIN.value else None
        if isinstance(before, str) and before in named:
            follows[run.name] = before
    ordered: list[Path] = []
    placed: set[str] = set()

    def place(name: str) -> None:
        if name in placed:
            return
        placed.add(name)
        if name in follows:
            place(follows[name])
        ordered.append(named[name])

    for run in runs:
        place(run.name)
    return ordered


def _experiment_named(staging: Path) -> Experiment:
    """An experiment whose BEGIN record is lost: named after its folder."""
    try:
        started = dt.datetime.strptime(staging.name[:15], "%Y%m%dT%H%M%S").astimezone()
    except ValueError:
        started = dt.datetime.fromtimestamp(staging.stat().st_mtime).astimezone()
    return Experiment(run_id=staging.name, started=started)


def _remove_converted(staging: Path) -> None:
    """The ``.npy`` files a save kept for its journal, beside their converted copies."""
    for npy in (staging / "streams").rglob("*.npy"):
        if any(npy.with_suffix(suffix).exists() for suffix in FILE_SUFFIXES if suffix != ".npy"):
            npy.unlink()


#: Records of an unfinished experiment that a start may drop with it
#: (``Lifecycle._nothing_at_stake``).
_NOTHING_AT_STAKE = frozenset(
    {
        RecordType.BEGIN,
        RecordType.HELLO,
        RecordType.BYE,
        RecordType.REACH,
        RecordType.PRESENCE,
        RecordType.RESTART,
        RecordType.CLOCK,
    }
)


def _remove_unfinished(run: Path) -> None:
    """Delete an unfinished experiment's staging folder, its journal last: a
    crash midway leaves a journal for the next start to replay and remove
    again, never a folder without one (which reads as saved)."""
    for entry in run.iterdir():
        if entry.name == JOURNAL_NAME:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (run / JOURNAL_NAME).unlink(missing_ok=True)
    run.rmdir()


def _keep_aside(output: Path, path: Path) -> Path:
    """Copy a damaged journal where a person can look at it; return where."""
    folder = output / store.STATE_DIR / "damaged"
    folder.mkdir(parents=True, exist_ok=True)
    aside = folder / f"{path.parent.name}-{time.strftime('%Y%m%dT%H%M%S')}-journal"
    shutil.copyfile(path, aside)
    with open(aside, "rb+") as file:
        os.fsync(file.fileno())
    system.fsync_dir(folder)
    return aside


def _rewrite(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace a journal with ``records``, atomically."""
    store.atomic_write(path, b"".join(journal.encode(record) for record in records))


def _as_bytes(frame: Any) -> bytes:
    return frame if isinstance(frame, bytes) else frame.bytes


def recover(output: Path, last_config_file: Path, stream_format: str) -> Opened:
    """``collectord recover``: save what a crashed daemon left, as recovered.

    The same ``open`` a daemon starts with, without sockets: the newest
    experiment's successor is begun, inheriting its state, for the next
    ``collectord run`` to go on with.

    Refuses (``ConfigError``), creating nothing, a folder that is not there
    or that no daemon ever used (it has no ``.collectord``): a mistyped
    ``--output`` would otherwise be told there is nothing to recover, and
    get a lock and an empty experiment it never asked for.
    """
    _check_used_output(output)
    lock = store.OutputLock(output)
    lock.acquire()
    try:
        durability = Durability(0.0, lambda *_: None)
        try:
            return Lifecycle(output, last_config_file, stream_format, durability).open(
                Start.RECOVER
            )
        finally:
            durability.close()
    finally:
        lock.release()


def _check_used_output(output: Path) -> None:
    """Raise ``ConfigError`` unless ``output`` is a folder a daemon has used."""
    where = "give the daemon's output folder (--output, or storage.output in the configuration)"
    if not output.exists():
        raise ConfigError(f"there is no folder {output}: {where}")
    if not output.is_dir():
        raise ConfigError(f"{output} is not a folder: {where}")
    if not (output / store.STATE_DIR).is_dir():
        raise ConfigError(
            f"no collectord daemon has used {output} (it has no {store.STATE_DIR} folder), "
            f"so it holds nothing to recover: {where}"
        )
