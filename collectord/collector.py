"""The collected state and every change to it, for the live daemon and for replay.

``Collector`` owns the tree, the sources, the current experiment and the last
config. The daemon calls its methods as messages arrive; ``replay`` calls the
same methods for the records of a journal, so a recovered or resumed
experiment is rebuilt by exactly the code that built it the first time.
Each method that changes the state returns the journal record describing the
change (or the daemon builds it from the same arguments); nothing here touches
sockets or the journal file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from . import __version__, codec, experiment
from .errors import InvalidPathError
from .experiment import Experiment, StopRequest
from .journal import RecordType
from .paths import check_name, parse_path
from .protocol import BODIES, HEADER, PROTOCOL_VERSION, Kind, ProtocolViolation, check_fields
from .sources import Admit, Source, Sources
from .tree import Tree, TreeConflict, merge_config


def decode_header(frames: list[bytes]) -> dict[str, Any]:
    """The checked header of a data message; raises DecodeError or ProtocolViolation."""
    header = check_fields(codec.unpack(frames[0]), HEADER, "header")
    if header["v"] != PROTOCOL_VERSION:
        raise ProtocolViolation(f"protocol version {header['v']} is not supported")
    try:
        check_name(header["source"], where="source name")
    except InvalidPathError as exc:
        raise ProtocolViolation(str(exc)) from None
    return dict(header)


class Collector:
    def __init__(self, last_config: dict[str, Any]) -> None:
        self.tree = Tree()
        self.sources = Sources()
        self.experiment = Experiment.begin()
        self.last_config = last_config
        #: How this experiment came back after the daemon died: resumed or recovered.
        self.restarts: list[dict[str, Any]] = []

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
        source.closed = False
        return source

    def bye(self, session: str) -> Source | None:
        source = self.sources.by_session.get(session)
        if source is not None:
            source.closed = True
        return source

    def apply(self, source: Source, header: Mapping[str, Any], frames: list[bytes]) -> str | None:
        """Apply an admitted message to the tree; return why it was rejected, if it was."""
        try:
            self._apply(header["kind"], frames)
        except (codec.DecodeError, ProtocolViolation, InvalidPathError, TreeConflict) as exc:
            reason = f"seq {header['seq']}: {exc}"
            source.reject(reason)
            return reason
        source.applied()
        return None

    def _apply(self, kind_name: str, frames: list[bytes]) -> None:
        try:
            kind = Kind(kind_name)
        except ValueError:
            raise ProtocolViolation(f"unknown message kind {kind_name!r}") from None
        if len(frames) != 2:
            raise ProtocolViolation(f"a {kind.value} message has 2 frames, not {len(frames)}")
        body = check_fields(codec.unpack(frames[1]), BODIES[kind], f"{kind.value} body")
        path = parse_path(body["path"])
        if kind is Kind.PARAMS:
            self.tree.merge_params(path, body["values"])
        else:
            self.tree.set_data(path, body["value"])

    def reject(self, session: str | None, reason: str) -> Source:
        source = self.sources.by_session.get(session) if session else None
        target = source or self.sources.unidentified
        target.reject(reason)
        return target

    # -- experiments -------------------------------------------------------------------

    def metadata(self, stop: StopRequest, unconfirmed: list[str]) -> dict[str, Any]:
        account = experiment.provenance(
            self.experiment, self.sources, stop, experiment.now(), unconfirmed, __version__
        )
        if self.restarts:
            account["restarts"] = self.restarts
        return experiment.metadata(self.tree.to_dict(), account)

    def merged_config(self) -> dict[str, Any]:
        return merge_config(self.last_config, self.tree.params())

    def next_experiment(self, config: dict[str, Any]) -> None:
        """The experiment was saved with ``config`` as last config: begin the next."""
        self.last_config = config
        self.tree.clear_data()
        self.sources.new_run()
        self.experiment = Experiment.begin()
        self.restarts = []

    def begin_record(self) -> dict[str, Any]:
        """The journal's first record: all a replay needs that no message carries.

        Parameters are packed with the value codec (they may hold arrays).
        """
        params, empty_groups = self.tree.param_leaves()
        return {
            "t": RecordType.BEGIN.value,
            "run_id": self.experiment.run_id,
            "started": self.experiment.started.isoformat(),
            "params": codec.pack([[list(path), value] for path, value in params]),
            "groups": [list(path) for path in empty_groups],
            "sources": [s.snapshot() for s in self.sources.by_session.values()],
        }

    # -- replay ------------------------------------------------------------------------

    def replay(self, records: Iterable[dict[str, Any]]) -> int:
        """Rebuild an experiment from its journal's records; return how many."""
        count = 0
        for record in records:
            count += 1
            kind = RecordType(record["t"])
            if kind is RecordType.BEGIN:
                self._replay_begin(record)
            elif kind is RecordType.HELLO:
                self.hello(record["session"], record)
            elif kind is RecordType.BYE:
                self.bye(record["session"])
            elif kind is RecordType.FIRST:
                self.experiment.first_message = dt.datetime.fromisoformat(record["at"])
            elif kind is RecordType.SKIP:
                self.sources.get(record["session"], record["name"]).skip_to(record["upto"])
            elif kind is RecordType.REJECT:
                self.reject(record.get("session"), record["reason"])
            elif kind is RecordType.MESSAGE:
                frames = record["frames"]
                header = decode_header(frames)
                source = self.sources.get(header["session"], header["source"])
                if source.admit(header["seq"], 0.0) is Admit.NEW:
                    self.apply(source, header, frames)
        return count

    def _replay_begin(self, record: dict[str, Any]) -> None:
        self.experiment = Experiment(
            run_id=record["run_id"], started=dt.datetime.fromisoformat(record["started"])
        )
        self.tree = Tree()
        for path in record["groups"]:
            self.tree.merge_params(tuple(path), {})
        for path, value in codec.unpack(record["params"]):
            self.tree.merge_params(tuple(path[:-1]), {path[-1]: value})
        self.sources = Sources()
        for snapshot in record["sources"]:
            source = Source.from_snapshot(snapshot)
            self.sources.by_session[source.session] = source
