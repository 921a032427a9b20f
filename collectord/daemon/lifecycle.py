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

Two journal records make the boundaries safe against a crash at any moment:

* BEGIN opens every experiment's journal. It carries the state the experiment
  inherits (parameters, sources with their last sequence numbers, streams), so
  a crash never costs a live client its streams or a false gap, and
  ``follows``: the run id of the experiment whose save it completes.
* STOP is journaled when the stop barrier has passed, before any file is
  written. A journal that ends with STOP is saved at the next start.

A save, step by step (each step a fault point, ``faults.py``)::

    1. STOP journaled; journal and stream files fsynced
    2. stream files finished (and converted)        } in the experiment's
    3. metadata file written                        } staging folder
    4. last config replaced
    5. the next experiment's journal begun: BEGIN, follows = this run
    6. this experiment's journal deleted
    7. its staging folder renamed into place

A crash before 5 leaves a journal ending in STOP: the next start replays it
and saves it (steps 2 to 4 may run twice; each replaces what it wrote).
From 5 on the experiment is saved: a start finds the successor's BEGIN naming
it and only does what is left of 6 and 7 (``_complete``). Either way the
stopped experiment is saved once, and the next one holds what it inherited.

A step that fails (rather than a crash) is the same: before 5, the save
raises and the experiment goes on, to be saved by a later stop. From 5 on
nothing raises, since a client told its stop failed would stop again and save
a second experiment: the failure is logged, the next experiment goes on, and
the folder waits in staging until a later save or the next start does what
is left of 6 and 7 (``_put_in_place``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import errno
import gc
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import codec, journal, jsonio, store, system
from ..collector import Applied, Collector, RowsOnDisk, decode_header, message_count
from ..errors import UnreadableRecord
from ..experiment import Experiment, StopRequest, now
from ..faults import Fault, reached
from ..journal import JOURNAL_NAME, Journal, RecordType
from ..paths import check_name
from ..protocol import Kind, ProtocolViolation
from ..sources import Admit, Source
from ..streamfiles import FILE_SUFFIXES, StreamFiles
from .durability import Durability

log = logging.getLogger("collectord")

#: Rejections logged per message (a hostile batch can hold thousands; all count).
LOGGED_REJECTIONS = 3
#: Write errors that room on the disk will cure: a block refused for one of
#: these is sent again by a resending client. Others (a file the daemon may
#: not create, say) would fail forever, so the block is rejected instead.
_NO_ROOM = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG") if hasattr(errno, name)
)

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
    ) -> None:
        self.output = output
        self.last_config_file = last_config_file
        self.stream_format = stream_format
        self.durability = durability
        self.collector = Collector({})  # the last config is read by ``open``
        self.saved_count = 0
        self.last_saved: Path | None = None
        self.last_error: str | None = None
        #: While a journal is replayed nothing is journaled again.
        self._replaying = False
        #: The journal ends with STOP (the stop barrier passed): it must be saved.
        self._stop_journaled: _JournaledStop | None = None
        #: Staging folders of saved experiments whose steps 6 and 7 failed,
        #: oldest first: completed at a later save or the next start.
        self._held: list[Path] = []

    # -- opening an output folder ----------------------------------------------------

    def open(self, start: Start) -> Opened:
        """Deal with whatever a previous daemon left, then hold a running experiment.

        Saves that reached step 5 are completed. Experiments left unfinished
        are replayed from their journals: the older ones saved as recovered,
        the newest resumed (``RESUME``) or saved as recovered (``RECOVER``), in
        which case the next experiment begins inheriting its state. A journal
        whose last record is STOP is saved either way: its stop had passed.
        """
        with gc_paused():
            return self._open(start)

    def _open(self, start: Start) -> Opened:
        opened = Opened()
        unfinished = self._finish_interrupted(opened)
        for run in unfinished[:-1]:
            older = self._sibling()
            older._reopen(run, opened, resumed=False)
            if older.has_news or older._stop_journaled is not None:
                opened.saved.append(older._save_journaled(begin_next=False))
                older.durability.close()
            else:  # nothing arrived in it, and a newer one carries the state on
                older.durability.close()
                shutil.rmtree(run)
        if unfinished:
            self._reopen(unfinished[-1], opened, resumed=start is Start.RESUME)
            if self._stop_journaled is not None or (start is Start.RECOVER and self.has_news):
                opened.saved.append(self._save_journaled(begin_next=True))
            else:
                opened.resumed = self.collector.experiment.run_id
        else:
            self.collector.last_config = store.read_last_config(self.last_config_file)
            self._begin(Experiment.begin(), follows=None)
        self.durability.durable = self._received()
        return opened

    def _finish_interrupted(self, opened: Opened) -> list[Path]:
        """Complete saves that reached step 5; return the unfinished experiments.

        A journal with no whole record is a BEGIN cut short (the save before
        it had not reached step 5, so its own journal still ends with STOP):
        its folder goes.
        """
        runs = store.staged_runs(self.output)
        successors = {_follows(run) for run in runs}
        unfinished = []
        for run in runs:
            path = run / JOURNAL_NAME
            if run.name in successors or not path.is_file():
                published = self._complete(run)
                if published is not None:
                    opened.saved.append(published)
            elif journal.first_record(path) is None and not journal.read(path).records:
                log.warning("%s: an experiment that never began; removed", run)
                shutil.rmtree(run)
            else:
                unfinished.append(run)
        return unfinished

    def _sibling(self) -> Lifecycle:
        """A lifecycle for an older unfinished experiment, saved and then dropped."""
        durability = Durability(self.durability.interval, lambda *_: None)
        return Lifecycle(self.output, self.last_config_file, self.stream_format, durability)

    def _complete(self, staging: Path) -> Path | None:
        """Steps 6 and 7 of a save that got past step 5; the metadata path, if any."""
        (staging / JOURNAL_NAME).unlink(missing_ok=True)
        _remove_converted(staging)
        published = store.finish_publishing(self.output, staging)
        if published is not None:
            log.warning("completed the interrupted save of %s", published)
        return published

    def _reopen(self, staging: Path, opened: Opened, *, resumed: bool) -> None:
        """Replay ``staging``'s experiment and go on with it; the restart is recorded."""
        self.collector.last_config = store.read_last_config(self.last_config_file)
        restart = self._replay(staging, opened)
        reached(Fault.OPEN_REPLAYED)
        restart["resumed" if resumed else "recovered"] = now().isoformat()
        self.collector.restarts.append(restart)
        self._record(RecordType.RESTART, restart=restart)  # a later restart keeps it
        self.durability.make_durable(self._received())

    def _save_journaled(self, *, begin_next: bool) -> Path:
        """Save a replayed experiment: as its journaled stop asked, or as recovered."""
        stop = self._stop_journaled
        result = self.save(
            stop.request if stop else RECOVERED,
            stop.unconfirmed if stop else [],
            stopped=stop.stopped if stop else None,
            begin_next=begin_next,
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
        began = False
        kept = []
        for index, record in enumerate(scan.records):
            where = f"{path}: record {index + 1} (byte {scan.offsets[index]})"
            try:
                kind = journal.check(record)
                self.replay_record(record, lost_before=bool(problems) or not began)
                began |= kind is RecordType.BEGIN
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
            source.from_journal = True  # until it reconnects to this daemon
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
            elif kind is RecordType.MESSAGE:
                frames = list(record["frames"])
                if "raw" in record:  # a block: its rows are in the stream file
                    frames.append(RowsOnDisk(record["raw"], record.get("at")))
                refused = dict(record.get("refused", ()))
                self.receive(frames, 0.0, refused=refused, lost_before=lost_before)
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
            elif kind is RecordType.RESTORE:
                collector.tree.restored(tuple(record["node"]), codec.unpack(record["values"]))
            # A STOP followed by more records is a save that failed and was
            # gone on from; one that ends the journal is a save to finish.
            self._stop_journaled = _JournaledStop.of(record) if kind is RecordType.STOP else None
        finally:
            self._replaying = replaying

    # -- beginning ---------------------------------------------------------------------

    def _begin(self, following: Experiment, follows: str | None) -> Journal:
        """Write ``following``'s journal with its BEGIN record, fsynced; return it.

        The BEGIN record carries the current state, which ``following`` inherits.
        """
        staging = store.staging_dir(self.output, following.run_id)
        opened = Journal(staging / JOURNAL_NAME)
        try:
            opened.append(self.collector.begin_record(following, follows))
            opened.flush()
        except BaseException:
            opened.discard()
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if follows is None:  # the very first experiment of this folder
            self.collector.experiment = following
            self.collector.attach_files(StreamFiles(staging))
            self.durability.switch(opened, self.collector.files)
        return opened

    # -- admitting ---------------------------------------------------------------------

    def receive(
        self,
        frames: list[Any],
        at: float,
        *,
        refused: Mapping[int, str] | None = None,
        lost_before: bool = False,
    ) -> tuple[Received, Source | None]:
        """Admit one data message, live or replayed from the journal.

        Live, ``frames`` are as received and ``at`` the monotonic time; the
        message is journaled before it is applied. Replayed, a block's rows
        are a ``RowsOnDisk``, ``refused`` what the live daemon failed on, and
        ``lost_before`` says earlier records were lost to damage: a gap in a
        session's sequence is then accepted as lost, not waited for.
        """
        try:
            header = decode_header(frames)
        except (codec.DecodeError, ProtocolViolation) as exc:
            self.reject(None, f"data message: {exc}")
            return Received.UNREADABLE, None
        source = self.collector.sources.get(header["session"], header["source"])
        first = header["seq"]
        last = first + message_count(header) - 1
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
        outcome = self.collector.apply_message(source, header, frames, seen, refused)
        self._record_message(frames, outcome)
        _log_rejections(source, outcome.rejections)
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
        _log_rejections(source, outcome.rejections)
        return Received.APPLIED

    def _record_message(self, frames: list[Any], outcome: Applied, **fields: Any) -> None:
        if outcome.refused:
            fields["refused"] = [list(pair) for pair in outcome.refused]
        self._record(RecordType.MESSAGE, frames=frames, **fields)

    def _record(self, kind: RecordType, **fields: Any) -> None:
        if not self._replaying:
            self.durability.record(kind, **fields)

    def reject(self, session: str | None, reason: str) -> None:
        target = self.collector.reject(session, reason)
        self._record(RecordType.REJECT, session=session, reason=reason)
        log.warning("rejected from %s: %s", target.name, reason)

    def skip(self, source: Source, last: int) -> None:
        """Accept that ``source``'s messages up to ``last`` are lost (named, counted)."""
        if not self._replaying:
            log.warning("%s: messages %d..%d are lost", source.name, source.received + 1, last)
        self._record(RecordType.SKIP, session=source.session, name=source.name, upto=last)
        source.skip_to(last)

    def hello(self, session: str, fields: Mapping[str, Any]) -> Source:
        source = self.collector.hello(session, fields)
        source.from_journal = False
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
        self.collector.experiment.name = check_name(name, where="experiment name")
        self._record(RecordType.NAME, name=name)

    def save_config(self) -> Path:
        """Write the last config now, the experiment going on (stytra's
        ``save_config_file``): what a save would write there, no folder."""
        written = store.write_last_config(self.last_config_file, self.collector.merged_config())
        self.collector.last_config = jsonio.loads(written)
        return self.last_config_file

    def restored(self, node: tuple[str, ...], values: dict[str, Any]) -> None:
        """A process restored ``values`` under ``node``: they are in force now."""
        self.collector.tree.restored(node, values)
        self._record(RecordType.RESTORE, node=list(node), values=codec.pack(values))

    def bye(self, session: str) -> Source | None:
        source = self.collector.bye(session)
        if source is not None:
            self._record(RecordType.BYE, session=session)
            self.durability.forget(session)
        return source

    def _received(self) -> dict[str, int]:
        return {session: s.received for session, s in self.collector.sources.by_session.items()}

    def flush_when_due(self) -> None:
        self.durability.poll(self._received)

    # -- saving ------------------------------------------------------------------------

    def save(
        self,
        request: StopRequest,
        unconfirmed: list[str],
        *,
        stopped: dt.datetime | None = None,
        begin_next: bool = True,
    ) -> dict[str, Any]:
        """Save the current experiment (the steps in the module docstring).

        Returns what a ``stop`` reply carries. If a step before the next
        experiment begins fails, the experiment goes on as it was and the
        error is raised; a later stop tries again. From step 5 on the
        experiment is saved, and nothing raises: a client told that its stop
        failed would stop again, and save a second experiment. What fails
        then is logged and done later (``_put_in_place``, ``_go_on``).
        """
        with gc_paused():
            return self._save(request, unconfirmed, stopped, begin_next)

    def _save(
        self,
        request: StopRequest,
        unconfirmed: list[str],
        stopped: dt.datetime | None,
        begin_next: bool,
    ) -> dict[str, Any]:
        collector = self.collector
        old = self.durability.journal
        assert old is not None
        staging = old.path.parent
        if self._stop_journaled is None:
            stopped = stopped or now()
            self._record(
                RecordType.STOP,
                **dataclasses.asdict(request),
                unconfirmed=unconfirmed,
                stopped=stopped.isoformat(),
            )
        stopped = stopped or now()
        self.durability.make_durable(self._received())
        reached(Fault.SAVE_STOP_JOURNALED)
        following = Experiment.begin()
        try:
            collector.finish_streams(self.stream_format)
            reached(Fault.SAVE_STREAMS_FINISHED)
            metadata_file = store.write_metadata(
                staging,
                collector.experiment.folder_name,
                collector.metadata(request, unconfirmed, stopped),
            )
            reached(Fault.SAVE_METADATA_WRITTEN)
            config = collector.merged_config()
            store.write_last_config(self.last_config_file, config)
            # Keep in memory what the file holds (arrays as lists, ...):
            # restore() gives the same answer before and after a restart.
            config = jsonio.loads(jsonio.dumps(config))
            reached(Fault.SAVE_LAST_CONFIG_WRITTEN)
            successor = (
                self._begin(following, follows=collector.experiment.run_id) if begin_next else None
            )
            reached(Fault.SAVE_NEXT_BEGUN)
        except BaseException:
            collector.reopen_streams(staging)  # the experiment goes on, nothing lost
            self.durability.files = collector.files
            raise
        # Saved (without a successor, ``collectord recover``, once the journal
        # is deleted): from here on nothing raises.
        self.last_error = None
        run_id = collector.experiment.run_id
        path = self._put_in_place(staging, old, metadata_file, keep_journal=successor is None)
        log.info("saved %s", path)
        self._stop_journaled = None
        self.saved_count += 1
        self.last_saved = path
        if successor is None:
            self.durability.journal = self.durability.files = None
        else:
            self._go_on(config, following, successor)
        return {
            "run_id": run_id,
            "path": str(path),
            "last_config": str(self.last_config_file),
            "unconfirmed": unconfirmed,
        }

    def _put_in_place(
        self, staging: Path, old: Journal, metadata_file: Path, *, keep_journal: bool
    ) -> Path:
        """Steps 6 and 7 of a save past step 5; return where the metadata file is.

        A step that fails is logged, and the folder waits in staging (with
        what the failure left: its journal, converted ``.npy`` files) until
        ``_complete`` finishes it, at a later save (``_complete_held``) or the
        next start. A journal that cannot be deleted holds back the later
        saves' journals too: each experiment's successor names it in its BEGIN
        record, and were that successor's journal deleted first, the next
        start would find a journal ending in STOP that nothing names, and save
        that experiment a second time.

        ``keep_journal`` (no successor: ``collectord recover``): deleting the
        journal is what saves the experiment, so that failure still raises.
        """
        self._complete_held()
        waiting = [held for held in self._held if (held / JOURNAL_NAME).exists()]
        if waiting:
            try:
                old.close()
            except OSError as exc:
                log.error("could not close the journal of %s: %s", staging.name, exc)
            earlier = waiting[0].name
            return self._hold(staging, metadata_file, f"be completed before {earlier}")
        try:
            old.discard()
        except Exception as exc:
            if keep_journal:
                raise
            return self._hold(staging, metadata_file, f"delete its journal: {exc}")
        try:
            if self.collector.files is not None:
                self.collector.files.remove_converted()  # the journal no longer needs them
        except Exception as exc:
            return self._hold(staging, metadata_file, f"delete the .npy files converted: {exc}")
        reached(Fault.SAVE_JOURNAL_DISCARDED)
        try:
            experiment = self.collector.experiment
            published = store.publish(
                self.output, staging, experiment.named_after, experiment.folder_name
            )
        except Exception as exc:
            return self._hold(staging, metadata_file, f"move it into place: {exc}")
        reached(Fault.SAVE_PUBLISHED)
        return published / metadata_file.name

    def _hold(self, staging: Path, metadata_file: Path, failed: str) -> Path:
        """Keep a saved experiment in staging for ``_complete``; say so."""
        self.last_error = f"saved {staging.name}, but could not {failed}"
        log.error(
            "%s; it waits in staging, to be completed at the next save or start",
            self.last_error,
        )
        self._held.append(staging)
        return metadata_file

    def _complete_held(self) -> None:
        """Try again what failed of steps 6 and 7 of earlier saves, oldest first."""
        while self._held:
            try:
                self._complete(self._held[0])
            except Exception as exc:
                self.last_error = f"cannot complete the save of {self._held[0].name} yet: {exc}"
                log.error("%s", self.last_error)
                return
            self._held.pop(0)

    def _go_on(self, config: dict[str, Any], following: Experiment, successor: Journal) -> None:
        """The next experiment takes over, whatever fails: records go to its journal.

        A stream file that cannot be opened now is created with the stream's
        first block (``StreamFiles.write``), as after a full disk.
        """
        collector = self.collector
        self.durability.journal = successor
        files = StreamFiles(successor.path.parent)
        try:
            collector.next_experiment(config, following)
            collector.attach_files(files)
        except Exception as exc:  # a bug: logged with its traceback, and gone on from
            log.error("beginning %s: %r; it goes on", following.run_id, exc, exc_info=True)
            collector.experiment = following  # its journal's name, which a save uses
        collector.files = files
        self.durability.files = files

    @property
    def has_news(self) -> bool:
        """Something arrived since the experiment began (a save would not be empty)."""
        return self.collector.experiment.first_message is not None


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a whole tree is built or walked.

    A tree of a million parameters is millions of objects: each collection
    the allocations trigger walks them all, which made a restart's replay
    and a save several times slower. None of these structures holds a cycle.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _follows(staging: Path) -> str | None:
    """The run whose save the BEGIN record of ``staging``'s journal completes."""
    begin = journal.first_record(staging / JOURNAL_NAME)
    if begin is None or begin.get("t") != RecordType.BEGIN.value:
        return None
    follows = begin.get("follows")
    return follows if isinstance(follows, str) else None


@dataclasses.dataclass
class _JournaledStop:
    """A STOP record: the stop whose save was under way."""

    request: StopRequest
    unconfirmed: list[str]
    stopped: dt.datetime

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> _JournaledStop:
        request = StopRequest(
            by=record["by"], reason=record["reason"], host=record["host"], pid=record["pid"]
        )
        stopped = dt.datetime.fromisoformat(record["stopped"])
        return cls(request, [str(name) for name in record["unconfirmed"]], stopped)


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


def _log_rejections(source: Source, rejections: list[str]) -> None:
    """Log a message's rejections: a few lines, however many (all are counted)."""
    for rejection in rejections[:LOGGED_REJECTIONS]:
        log.warning("rejected from %s: %s", source.name, rejection)
    if len(rejections) > LOGGED_REJECTIONS:
        more = len(rejections) - LOGGED_REJECTIONS
        log.warning("rejected from %s: %d more in the same batch", source.name, more)


def _as_bytes(frame: Any) -> bytes:
    return frame if isinstance(frame, bytes) else frame.bytes


def recover(output: Path, last_config_file: Path, stream_format: str) -> Opened:
    """``collectord recover``: save what a crashed daemon left, as recovered.

    The same ``open`` a daemon starts with, without sockets: the newest
    experiment's successor is begun, inheriting its state, for the next
    ``collectord run`` to go on with.
    """
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
