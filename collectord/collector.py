"""The collected state and every change to it, for the live daemon and for replay.

``Collector`` owns the tree, the sources, the current experiment and the last
config. The lifecycle (``daemon/lifecycle.py``) calls its methods as messages
arrive, and calls the same methods again for the records of a journal it
replays, so a recovered or resumed experiment is rebuilt by exactly the code
that built it the first time. Nothing here touches sockets or the journal file.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from . import __version__, codec, experiment, jsonio
from .clocks import Sample
from .errors import InvalidPathError
from .experiment import Experiment, StopRequest
from .journal import RecordType
from .paths import Path as TreePath
from .paths import check_name, join_path, parse_path
from .protocol import (
    BATCHABLE,
    BODIES,
    FRAMES,
    HEADER,
    MAX_BATCH,
    MAX_COUNTER,
    PROTOCOL_VERSION,
    Kind,
    ProtocolViolation,
    check_fields,
)
from .required import Required
from .sources import Source, Sources, brief
from .store import LastConfig
from .streamfiles import StreamError, StreamFiles, StreamSpec
from .tree import Tree, TreeConflict, merge_config

log = logging.getLogger("collectord")


#: One parameter message of the history, a plain tuple made on the hot path:
#: (received: seconds since the epoch on the daemon's clock, session, seq
#: (None: restored from the last config), node, then ``name, value`` for a
#: message of one parameter (the commonest: no map kept for it), else the
#: message's map of values merged at ``node``).
Changed = (
    tuple[float, str | None, int | None, TreePath, str, Any]
    | tuple[float, str | None, int | None, TreePath, Mapping[str, Any]]
)


class Applied(NamedTuple):
    """What ``Collector.apply_message`` did with a message's messages."""

    rejections: list[str]  # the reasons, each counted on its source
    refused: list[tuple[int, str]]  # (index in the message, reason): journal these
    #: For a block: the row its rows start at in the stream's file. Journaled,
    #: so that a replay that lost an earlier block's record (a damaged journal)
    #: still knows where these rows are.
    at: list[int]


def decode_header(frames: list[bytes]) -> dict[str, Any]:
    """The checked header of a data message; raises DecodeError or ProtocolViolation."""
    header = check_fields(codec.unpack(frames[0]), HEADER, "header")
    if header["v"] != PROTOCOL_VERSION:
        raise ProtocolViolation(f"protocol version {header['v']} is not supported")
    try:
        check_name(header["source"], where="source name")
    except InvalidPathError as exc:
        raise ProtocolViolation(str(exc)) from None
    if header["kind"] == Kind.BATCH.value:
        kinds = header.get("kinds")
        if (
            not isinstance(kinds, list)
            or not kinds
            or not all(type(kind) is str and kind in _BATCHABLE_NAMES for kind in kinds)
        ):
            raise ProtocolViolation(
                "a batch needs 'kinds': one of params, data, stream per message"
            )
        if len(frames) != 2:
            raise ProtocolViolation(f"a batch has 2 frames, not {len(frames)}")
        if len(kinds) > min(MAX_BATCH, len(frames[1])):
            raise ProtocolViolation(
                f"a batch holds at most {MAX_BATCH} messages, each of one byte or more"
            )
    if header["seq"] == 0 or header["seq"] + message_count(header) - 1 > MAX_COUNTER:
        raise ProtocolViolation("sequence numbers run from 1 to 2**64 - 1")
    return dict(header)


_BATCHABLE_NAMES = frozenset(kind.value for kind in BATCHABLE)
#: Kinds by name, for the message path (cheaper than calling the Enum).
_KINDS = {kind.value: kind for kind in Kind if kind is not Kind.BATCH}
#: What makes one message rejected (and counted) rather than the daemon fail.
_REFUSALS = (codec.DecodeError, ProtocolViolation, InvalidPathError, TreeConflict, StreamError)


def message_count(header: Mapping[str, Any]) -> int:
    """How many sequence numbers a checked message uses (a batch: one per body)."""
    kinds = header.get("kinds") if header["kind"] == Kind.BATCH.value else None
    return len(kinds) if kinds else 1


class Collector:
    def __init__(self, last_config: LastConfig, required: Sequence[str] = ()) -> None:
        #: Declared streams by path; like parameters they outlive an experiment,
        #: until their session says bye (``next_experiment``).
        self.streams: dict[TreePath, StreamSpec] = {}
        #: Where blocks are written (None: only counted, as in unit tests).
        self.files: StreamFiles | None = None
        self.tree = Tree()
        self.sources = Sources()
        self.experiment = Experiment.begin()
        self.last_config = last_config
        #: How this experiment came back after the daemon died: resumed or recovered.
        self.restarts: list[dict[str, Any]] = []
        #: Messages applied in this experiment, by kind.
        self.applied: collections.Counter[Kind] = collections.Counter()
        #: The processes the experiment needs, and when each was missing.
        self.required = Required(required)
        #: The parameter history of this experiment: one ``Changed`` per
        #: parameter message applied (a tuple append: the message path stays
        #: cheap; a save writes it out a leaf a line, ``changes.py``).
        self.history: list[Changed] = []
        #: The tree as this experiment began: its parameters are the values
        #: carried in (groups copied, leaves shared with the tree it forks).
        self.began = Tree()

    # -- changes (each one the journal can replay) ----------------------------------

    def hello(self, session: str, fields: Mapping[str, Any]) -> Source:
        name = check_name(fields["name"], where="client name")
        source = self.sources.get(session, name)
        source.name = name
        source.host = fields["host"]
        source.pid = fields["pid"]
        source.program = fields["program"]
        source.versions = {str(k): str(v) for k, v in fields["versions"].items()}
        source.introduced = True
        source.present = True
        source.closed = False
        source.reachable = True
        return source

    def bye(self, session: str) -> Source | None:
        source = self.sources.by_session.get(session)
        if source is not None:
            source.closed = True
        return source

    def clock_sample(self, session: str, sample: Sample) -> None:
        """A clock sample of ``session`` (ignored if the session is unknown: a
        replayed journal whose HELLO was lost to damage)."""
        source = self.sources.by_session.get(session)
        if source is not None:
            source.clock_sample(sample)

    def apply_message(
        self,
        source: Source,
        header: Mapping[str, Any],
        frames: list[Any],
        seen: int,
        refused: Mapping[int, str] | None = None,
        received: float = 0.0,
    ) -> Applied:
        """Apply an admitted message, or a batch's messages after the first ``seen``.

        Each message is applied or rejected on its own (counted on ``source``).
        A message that fails for the daemon's own reasons (a full disk, a bug)
        is rejected and listed in ``Applied.refused``, for its journal record:
        a replay passes those back as ``refused`` instead of trying again, so
        it counts what the live daemon counted. ``received``: when the daemon
        received it (``time.time()``, journaled), for the parameter history.
        A block's rows that cannot be
        written raise ``OSError`` instead, for the daemon to decide
        (``Daemon._apply_block``).
        """
        kind_name = header["kind"]
        first = header["seq"]
        refused = refused or {}
        outcome = Applied([], [], [])
        if kind_name != Kind.BATCH.value:
            try:
                kind = _KINDS.get(kind_name)
                if kind is None:
                    raise ProtocolViolation(f"unknown message kind {kind_name!r}")
                if len(frames) != FRAMES[kind]:
                    raise ProtocolViolation(
                        f"a {kind.value} message has {FRAMES[kind]} frames, not {len(frames)}"
                    )
                body = codec.unpack(frames[1])
            except _REFUSALS as exc:
                outcome.rejections.append(self._refuse(source, first, exc))
                return outcome
            self._apply_one(source, kind, body, frames[2:], first, 0, refused, outcome, received)
            return outcome
        kinds = header["kinds"]
        try:
            bodies = codec.unpack_many(frames[1], len(kinds))
        except codec.DecodeError as exc:
            problem = ProtocolViolation(f"the batch's payload: {exc}")
            for index in range(seen, len(kinds)):
                outcome.rejections.append(self._refuse(source, first + index, problem))
            return outcome
        for index in range(seen, len(kinds)):
            kind = _KINDS[kinds[index]]
            self._apply_one(
                source, kind, bodies[index], (), first + index, index, refused, outcome, received
            )
        return outcome

    def _apply_one(
        self,
        source: Source,
        kind: Kind,
        body: Any,
        raw: Sequence[Any],
        seq: int,
        index: int,
        refused: Mapping[int, str],
        outcome: Applied,
        received: float,
    ) -> None:
        if index in refused:
            self.refuse(source, refused[index])
            outcome.rejections.append(refused[index])
            return
        try:
            self._apply(source, kind, body, raw, outcome, seq, received)
            self.applied[kind] += 1
        except _REFUSALS as exc:
            outcome.rejections.append(self._refuse(source, seq, exc))
            return
        except OSError as exc:
            if kind is Kind.BLOCK:
                raise
            self._failed(source, seq, index, f"could not be applied: {exc!r}", outcome)
            return
        except Exception as exc:  # a bug must cost one message, the same way in a replay
            log.exception("internal error while applying message %d", seq)
            self._failed(source, seq, index, f"internal error: {exc!r}", outcome)
            return
        source.applied(1)

    def _failed(self, source: Source, seq: int, index: int, why: str, outcome: Applied) -> None:
        """The daemon failed on a message, not the message: reject it, and list it
        in ``outcome.refused`` for the journal."""
        reason = f"seq {seq}: {why}"
        self.refuse(source, reason)
        outcome.rejections.append(reason)
        outcome.refused.append((index, reason))

    def _refuse(self, source: Source, seq: int, problem: Exception) -> str:
        reason = brief(f"seq {seq}: {problem}")
        self.refuse(source, reason)
        return reason

    @staticmethod
    def refuse(source: Source, reason: str) -> None:
        """Count an admitted message as rejected, for ``reason``.

        Also called by the daemon for a block whose rows could not be written;
        its journal record then carries ``refused``, for replay.
        """
        source.reject(reason)

    def _apply(
        self,
        source: Source,
        kind: Kind,
        body: Any,
        raw: Sequence[Any],
        outcome: Applied,
        seq: int,
        received: float,
    ) -> None:
        """Apply one decoded (not yet checked) body to the tree, or raise why not."""
        if (
            kind is Kind.PARAMS
            and type(body) is dict
            and len(body) == 2
            and type(body.get("path")) is str
            and type(body.get("values")) is dict
        ):
            # The commonest message, checked without the generic schema walk:
            # the tree checks every key as a parameter name.
            values = codec.check_decoded_params(body["values"])
            node = parse_path(body["path"])
            self.tree.merge_params(node, values, source.session)
            self._changed(received, source.session, seq, node, values)
            return
        body = check_fields(codec.check_decoded(body), BODIES[kind], f"{kind.value} body")
        path = parse_path(body["path"])
        if kind is Kind.PARAMS:
            self.tree.merge_params(path, body["values"], source.session)
            self._changed(received, source.session, seq, path, body["values"])
        elif kind is Kind.DATA:
            self.tree.set_data(path, body["value"])
        elif kind is Kind.STREAM:
            self._declare(StreamSpec.parse(path, dict(body), source.session, source.name))
        else:
            outcome.at.append(self._block(source, path, body["rows"], raw[0]))

    def _declare(self, spec: StreamSpec) -> None:
        existing = self.streams.get(spec.path)
        if existing is not None:
            if not existing.same_layout(spec):
                raise StreamError(
                    f"a stream with other columns, units or time column is already declared at "
                    f"{join_path(spec.path)!r}"
                )
            # The same stream again: a reconnection, or a restarted process taking over.
            existing.session, existing.source = spec.session, spec.source
            return
        folded = spec.file_name().casefold()
        for other in self.streams.values():
            if other.file_name().casefold() == folded:
                raise StreamError(
                    f"stream {join_path(spec.path)!r} would share its file with the stream "
                    f"{join_path(other.path)!r} where file names ignore case (Windows, macOS)"
                )
        self.tree.set_data(spec.path, spec.descriptor(spec.file_name(), "npy"))
        self.streams[spec.path] = spec
        if self.files is not None:
            self.files.open(spec)  # on a full disk, the file comes with the first block

    def _block(self, source: Source, path: TreePath, rows: int, raw: Any) -> int:
        """Append a block's rows; return the row they start at."""
        spec = self.streams.get(path)
        if spec is None:
            raise StreamError(f"no stream is declared at {join_path(path)!r}")
        if spec.session != source.session:
            raise StreamError(f"the stream at {join_path(path)!r} belongs to {spec.source}")
        if rows < 1 or len(raw) != rows * spec.row_bytes:
            raise StreamError(
                f"a block of {rows} rows of {spec.row_bytes} bytes cannot be {len(raw)} bytes"
            )
        if isinstance(raw, RowsOnDisk) and raw.at is not None:
            # Replayed: the rows are in the file at ``at``. Rows before it whose
            # record was lost to damage are in the file too, and are kept.
            spec.rows = max(spec.rows, raw.at)
        at = spec.rows
        if self.files is not None:
            self.files.write(spec, raw)
        spec.rows += rows
        return at

    def _changed(
        self,
        received: float,
        session: str | None,
        seq: int,
        node: TreePath,
        values: Mapping[str, Any],
    ) -> None:
        """Keep a parameter message for the history: a tuple (``Changed``)."""
        if len(values) == 1:
            for name, value in values.items():
                self.history.append((received, session, seq, node, name, value))
        elif values:
            self.history.append((received, session, seq, node, values))

    def restored(
        self, node: TreePath, values: Mapping[str, Any], received: float, session: str | None
    ) -> None:
        """A process (``session``, if it said) restored ``values`` under ``node``
        (``restore``'s answer): in force now; those the tree lacked or held
        otherwise are history."""
        for path, value in self.tree.restored(node, values, jsonio.same):
            self.history.append((received, session, None, path[:-1], path[-1], value))

    def reject(self, session: str | None, reason: str) -> Source:
        source = self.sources.by_session.get(session) if session else None
        target = source or self.sources.unidentified
        target.reject(reason)
        return target

    # -- experiments -------------------------------------------------------------------

    def attach_files(self, files: StreamFiles) -> None:
        """Write blocks into ``files`` from now on; open a file for every stream."""
        self.files = files
        for spec in self.streams.values():
            files.open(spec)

    def account(
        self, stop: StopRequest, unconfirmed: list[str], stopped: dt.datetime
    ) -> dict[str, Any]:
        """collectord's own account of the current experiment, for its metadata."""
        account = experiment.provenance(
            self.experiment, self.sources, stop, stopped, unconfirmed, __version__
        )
        if self.restarts:
            account["restarts"] = self.restarts
        account.update(self.required.account(stopped))
        return account

    def connected_names(self) -> set[str]:
        """The names with a session connected to this daemon: one known only
        from a journal (the daemon restarted) counts once it reconnects."""
        return {
            source.name
            for source in self.sources.by_session.values()
            if source.connected and not source.from_journal
        }

    def in_force(self) -> frozenset[str]:
        """Sessions whose carried-over parameters are in force in the current
        experiment: those that took part in it (tree.py)."""
        return frozenset(source.session for source in self.sources.active_in_run())

    def merged_config(self) -> dict[str, Any]:
        return merge_config(self.last_config.get(), self.tree.params())

    def next_experiment(self, config: LastConfig, following: Experiment, began: Tree) -> None:
        """The experiment was saved with ``config`` as last config: ``following``
        begins, with the parameters of ``began`` (a fork of the tree at the stop)."""
        self.last_config = config
        self.began = began
        self.history = []
        self.tree.next_experiment()
        # A stream whose session said bye can get no more rows (a block must
        # come from the session the stream belongs to, and a session that said
        # bye is forgotten now): it ends with this experiment, rather than
        # leaving an empty file and an open one in every later experiment
        # (a process that declares a stream per trial). A stream whose
        # process is gone without bye stays: it may come back and go on.
        closed = {source.session for source in self.sources.by_session.values() if source.closed}
        self.streams = {
            path: spec for path, spec in self.streams.items() if spec.session not in closed
        }
        for spec in self.streams.values():
            spec.rows = 0
            self.tree.set_data(spec.path, spec.descriptor(spec.file_name(), "npy"))
        self.sources.new_run()
        self.required.begin(following.started)
        self.experiment = following
        self.restarts = []
        self.applied = collections.Counter()

    def begin_record(self, following: Experiment, follows: str | None) -> dict[str, Any]:
        """The first record of ``following``'s journal: all a replay needs that no
        message carries, taken from this state (which ``following`` inherits),
        but for its ``carried``: ``Tree.carried``, packed with the value codec
        (``carried_fields``; a save adds it in its own thread, from a fork of
        the tree).

        ``follows`` names the experiment stopped before it, for the reader.
        """
        return {
            "t": RecordType.BEGIN.value,
            "run_id": following.run_id,
            "started": following.started.isoformat(),
            "follows": follows,
            "sources": [s.snapshot() for s in self.sources.by_session.values() if not s.closed],
            # Sessions forgotten, with their last sequence number: one that
            # comes back goes on from it (``Sources.get``), in a replay too.
            "remembered": self.sources.remembered(),
            "streams": [spec.snapshot() for spec in self.streams.values()],
            "missing": self.required.carried(),
        }

    def load_begin(self, record: Mapping[str, Any]) -> None:
        """Take the state a BEGIN record carries (``begin_record`` wrote it)."""
        self.experiment = Experiment(
            run_id=record["run_id"], started=dt.datetime.fromisoformat(record["started"])
        )
        self.required.begin(self.experiment.started, record.get("missing", {}))
        if "carried" in record:
            values, owners = codec.unpack_own(record["carried"])
            self.tree = Tree.from_carried(values, owners)
        elif "tree" in record:
            self.tree = Tree.from_pairs(codec.unpack_own(record["tree"]))
        else:  # written before BEGIN held the tree whole: one [path, value] per parameter
            self.tree = Tree()
            for path in record["groups"]:
                self.tree.merge_params(tuple(path), {}, carried=True)
            for path, value in codec.unpack(record["params"]):
                self.tree.merge_params(tuple(path[:-1]), {path[-1]: value}, carried=True)
        self.began = self.tree.fork()
        self.history = []
        self.sources = Sources()
        self.sources.remember(record.get("remembered", {}))
        for snapshot in record["sources"]:
            source = Source.from_snapshot(snapshot)
            self.sources.by_session[source.session] = source
        self.streams = {}
        for snapshot in record.get("streams", []):
            spec = StreamSpec.from_snapshot(snapshot)
            self.streams[spec.path] = spec
            self.tree.set_data(spec.path, spec.descriptor(spec.file_name(), "npy"))
            if self.files is not None:
                self.files.open(spec)


def carried_fields(
    params: dict[str, Any], owners: dict[str, Any], pack: Callable[[Any], bytes] = codec.pack
) -> dict[str, bytes]:
    """A BEGIN record's ``carried``: ``Tree.carried``, packed (by ``pack``: a
    save's reuses the last save's bytes, ``daemon/reuse.py``)."""
    return {"carried": pack([params, owners])}


class RowsOnDisk:
    """Stands in for a block's rows during replay: they are in the stream file
    already; only their length, and where they start (``at``, if journaled), count."""

    def __init__(self, length: int, at: int | None) -> None:
        self.length = length
        self.at = at

    def __len__(self) -> int:
        return self.length
