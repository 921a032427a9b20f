"""The daemon's view of each client: who it is and where its sequence stands.

Every data message carries ``(session, seq)``: a client numbers its messages
1, 2, 3, ... within a session (one ``Client`` object's life). The daemon
applies them strictly in order. A number it has seen is a duplicate (a resend
that crossed an earlier copy) and is dropped. A number beyond the next one
means messages went missing in between: the message is dropped and the client
is asked to resend from the first missing one. A client that keeps what the
daemon has not confirmed says so in every header (``resends: true``); the
daemon waits for such a client to fill its gap (after a daemon restart the
client reconnects, introduces itself and resends), and gives up only if the gap
stays open for ``GAP_TIMEOUT``. For a client that cannot resend, a gap is
accepted as lost at once. Either way a lost gap is named in ``status`` and in
the saved metadata, never silent. Pure logic: no sockets.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import time
from typing import Any

from .clocks import ClockRecord, Sample

GAP_TIMEOUT = 30.0
MAX_REASONS = 10
MAX_GAPS = 100
#: A rejection's reason is cut to this many characters: it quotes what was
#: wrong, and a bad name or path may be as long as a message (64 MiB), kept in
#: ``status``, the metadata, the journal and the log.
MAX_REASON_CHARS = 1000


def brief(reason: str) -> str:
    """``reason`` in at most about ``MAX_REASON_CHARS``: its beginning and its
    end (which often says what was wrong with what it quotes), the middle cut."""
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    head, tail = MAX_REASON_CHARS * 2 // 3, MAX_REASON_CHARS // 3
    cut = len(reason) - head - tail
    return f"{reason[:head]} [... {cut} characters cut ...] {reason[-tail:]}"


class Admit(enum.Enum):
    NEW = "new"  # the next message: apply it
    DUPLICATE = "duplicate"  # already applied: drop it
    AHEAD = "ahead"  # a gap before it: drop it and ask for a resend


@dataclasses.dataclass
class Counts:
    """Messages of one source, over one experiment or the daemon's life."""

    messages: int = 0  # applied to the tree
    rejected: int = 0  # refused with a reason (bad shape, bad path, conflict)
    duplicates: int = 0
    out_of_order: int = 0  # arrived after a gap; dropped and asked again
    lost: int = 0  # gaps given up on

    def as_dict(self) -> dict[str, int]:
        # By hand: ``dataclasses.asdict`` deep-copies, and a status of 10,000
        # sources calls this twice for each.
        return {
            "messages": self.messages,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "lost": self.lost,
        }


@dataclasses.dataclass
class Source:
    """One client session."""

    session: str
    name: str
    host: str = ""
    pid: int | None = None
    program: str = ""
    versions: dict[str, Any] = dataclasses.field(default_factory=dict)
    introduced: bool = False  # said hello: reachable for notices
    closed: bool = False  # said bye
    #: False once a notice found no DEALER (the process died without bye) or
    #: its control connection closed; true again when it makes a request or
    #: a notice reaches it. Journaled (REACH): a restarted daemon does not
    #: wait at a stop for a session the daemon before it had seen go.
    reachable: bool = True
    #: Known from a journal only: this daemon (restarted) has not heard from
    #: it yet. A stop waits for it, as it may be reconnecting, rather than
    #: counting it gone when a notice cannot reach it.
    from_journal: bool = False
    #: Said hello during the current experiment (a message counts in ``run``).
    present: bool = False
    received: int = 0  # every seq up to this one has been handled
    total: Counts = dataclasses.field(default_factory=Counts)
    run: Counts = dataclasses.field(default_factory=Counts)
    gaps: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    reasons: collections.deque[str] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=MAX_REASONS)
    )
    #: The same two, for the current experiment only (its metadata shows these).
    run_gaps: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    run_reasons: collections.deque[str] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=MAX_REASONS)
    )
    gap_since: float | None = None
    resend_asked_at: float | None = None
    #: When this daemon last heard from it (a message or a request), by
    #: ``time.monotonic()``; None: not since the daemon started.
    heard: float | None = None
    #: Its clock samples (clocks.py): since the daemon started, and in the
    #: current experiment (its metadata carries these).
    clock: ClockRecord = dataclasses.field(default_factory=ClockRecord)
    run_clock: ClockRecord = dataclasses.field(default_factory=ClockRecord)

    def admit(self, seq: int, now: float) -> Admit:
        """Decide what to do with message ``seq`` arriving at time ``now``."""
        return self.admit_range(seq, seq, now)[0]

    def admit_range(self, first: int, last: int, now: float) -> tuple[Admit, int]:
        """Decide about messages ``first..last`` (a batch) arriving at time ``now``.

        Returns the verdict and, for NEW, how many leading messages of the range
        were already handled (a resent batch may overlap what arrived before).
        """
        if last <= self.received:
            self.total.duplicates += last - first + 1
            self.run.duplicates += last - first + 1
            return Admit.DUPLICATE, 0
        if first <= self.received + 1:
            seen = self.received - first + 1
            self.total.duplicates += seen
            self.run.duplicates += seen
            self._advance(last)
            return Admit.NEW, seen
        if self.gap_since is None:
            self.gap_since = now
        return Admit.AHEAD, 0

    def give_up(self, now: float, resends: bool) -> bool:
        """Whether to stop waiting for the open gap and accept it as lost.

        ``resends``: the sender keeps unconfirmed messages and will fill the gap.
        """
        if not resends:
            return True
        return self.gap_since is not None and now - self.gap_since > GAP_TIMEOUT

    def dropped_out_of_order(self) -> None:
        self.total.out_of_order += 1
        self.run.out_of_order += 1

    def skip_to(self, last: int) -> None:
        """Accept that messages ``received+1 .. last`` are lost, and record it."""
        first = self.received + 1
        if last < first:
            return
        if len(self.gaps) < MAX_GAPS:
            self.gaps.append((first, last))
        if len(self.run_gaps) < MAX_GAPS:
            self.run_gaps.append((first, last))
        self.total.lost += last - first + 1
        self.run.lost += last - first + 1
        self.received = last
        self.gap_since = None
        self.resend_asked_at = None

    def _advance(self, seq: int) -> None:
        self.received = seq
        self.gap_since = None
        self.resend_asked_at = None

    def applied(self, count: int) -> None:
        self.total.messages += count
        self.run.messages += count

    def reject(self, reason: str) -> None:
        self.total.rejected += 1
        self.run.rejected += 1
        self.reasons.append(reason)
        self.run_reasons.append(reason)

    def clock_sample(self, sample: Sample) -> None:
        self.clock.add(sample)
        self.run_clock.add(sample)

    def new_run(self) -> None:
        self.run = Counts()
        self.present = False
        self.run_gaps = []
        self.run_reasons.clear()
        self.run_clock = ClockRecord()

    def snapshot(self) -> dict[str, Any]:
        """What a new experiment's journal must know of this session."""
        return {
            "session": self.session,
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "program": self.program,
            "versions": self.versions,
            "introduced": self.introduced,
            "received": self.received,
            "reachable": self.reachable,  # absent in journals before it was kept
        }

    @classmethod
    def from_snapshot(cls, fields: dict[str, Any]) -> Source:
        return cls(**fields)

    @property
    def connected(self) -> bool:
        return self.introduced and not self.closed and self.reachable

    def describe(self, run: bool) -> dict[str, Any]:
        """This source for the metadata (``run``: this experiment) or for status."""
        counts = self.run if run else self.total
        gaps = self.run_gaps if run else self.gaps
        reasons = self.run_reasons if run else self.reasons
        clock = self.run_clock if run else self.clock
        described = {
            "name": self.name,
            "session": self.session,
            "host": self.host,
            "pid": self.pid,
            "program": self.program,
            "versions": self.versions,
            "connected": self.connected,
            "last_seq": self.received,
            "messages": counts.as_dict(),
            "gaps": [list(gap) for gap in gaps],
            "recent_rejections": list(reasons),
            "last_heard": _wall_clock(self.heard),
        }
        if clock:
            # The samples go to the metadata only: status is polled often.
            described["clock"] = clock.describe(with_samples=run)
        if not run:
            described["experiment_messages"] = self.run.as_dict()
        return described


def _wall_clock(monotonic: float | None) -> str | None:
    """A ``time.monotonic()`` moment on the daemon's wall clock, ISO 8601."""
    if monotonic is None:
        return None
    seconds = time.time() - (time.monotonic() - monotonic)
    return dt.datetime.fromtimestamp(seconds, _local_zone(seconds)).isoformat()


_zone: tuple[int, dt.tzinfo | None] = (-1, None)


def _local_zone(seconds: float) -> dt.tzinfo | None:
    """The local time zone at ``seconds``, looked up once a minute: a status
    with 10,000 sources would otherwise look it up 10,000 times."""
    global _zone
    minute = int(seconds // 60)
    if _zone[0] != minute:
        _zone = (minute, dt.datetime.fromtimestamp(seconds).astimezone().tzinfo)
    return _zone[1]


#: Where rejections go when a message is too broken to name its sender.
UNIDENTIFIED = "(unidentified)"


#: Sessions the daemon holds at most. A peer that invents session ids (broken
#: or hostile) must not grow the daemon without end: a new session beyond
#: this is refused, and counted as unidentified.
MAX_SESSIONS = 10_000
#: Sessions one control connection may introduce (a client's DEALER carries
#: one: its routing id is its session).
MAX_SESSIONS_PER_PEER = 64
#: Forgotten sessions whose last sequence number is remembered, so that one
#: coming back after a long absence shows no false gap.
MAX_REMEMBERED = 100_000


class TooManySessions(ValueError):
    """A new session beyond what the daemon holds; the text says which bound."""


class Sources:
    """All sessions the daemon holds, by session id, and what it has forgotten.

    A session is forgotten once the experiment it last took part in is saved,
    if it said ``bye``, or is gone (a notice could not reach it) and the daemon
    awaits nothing of it (no open gap). Its counts go on in ``forgotten``.
    """

    def __init__(self) -> None:
        self.by_session: dict[str, Source] = {}
        self.unidentified = Source(session="-", name=UNIDENTIFIED)
        #: Totals of the sessions forgotten, over the daemon's life.
        self.forgotten = Counts()
        self.forgotten_sessions = 0
        self._remembered: collections.OrderedDict[str, int] = collections.OrderedDict()
        #: Sessions introduced by each control connection (routing id), and back.
        self._by_peer: dict[bytes, set[str]] = {}
        self._peer_of: dict[str, bytes] = {}

    def get(self, session: str, name: str) -> Source:
        """The source for ``session``, created on first sight (hello or data).

        Raises ``TooManySessions`` for a new one beyond ``MAX_SESSIONS``.
        """
        source = self.by_session.get(session)
        if source is None:
            if len(self.by_session) >= MAX_SESSIONS:
                raise TooManySessions(
                    f"session {session!r} is new, and the daemon holds {MAX_SESSIONS} already"
                )
            source = self.by_session[session] = Source(session=session, name=name)
            source.received = self._remembered.pop(session, 0)
        return source

    def remembered(self) -> dict[str, int]:
        """The last sequence number of each forgotten session remembered, for
        a BEGIN record: a replay must take one that comes back as the live
        daemon did."""
        return dict(self._remembered)

    def remember(self, received: dict[str, int]) -> None:
        """Take what ``remembered`` gave (a replayed BEGIN record)."""
        self._remembered.update(received)

    def introduce(self, peer: bytes, session: str) -> None:
        """``peer`` (a control connection) introduces ``session``; raises
        ``TooManySessions`` beyond ``MAX_SESSIONS_PER_PEER`` of its own."""
        mine = self._by_peer.setdefault(peer, set())
        if session not in mine and len(mine) >= MAX_SESSIONS_PER_PEER:
            raise TooManySessions(
                f"one connection may introduce at most {MAX_SESSIONS_PER_PEER} sessions"
            )
        mine.add(session)
        self._peer_of[session] = peer

    def of_peer(self, peer: bytes) -> set[str]:
        """The sessions control connection ``peer`` (a routing id) introduced."""
        return self._by_peer.get(peer, set())

    def open_sessions(self) -> list[Source]:
        """Sessions that said hello and not bye, reachable or not."""
        return [s for s in self.by_session.values() if s.introduced and not s.closed]

    def active_in_run(self) -> list[Source]:
        """Sources that took part in the current experiment: heard from during
        it, or still connected. Their carried-over parameters are in force in
        it (tree.py)."""
        return [
            s for s in self.by_session.values() if s.present or s.connected or s.run != Counts()
        ]

    def new_run(self) -> None:
        """Reset the per-experiment counts; forget the sessions that are done."""
        kept = {}
        for session, source in self.by_session.items():
            gone = not source.reachable and not source.from_journal and source.gap_since is None
            if source.closed or gone:
                self._forget(source)
            else:
                kept[session] = source
        self.by_session = kept
        for source in kept.values():
            source.new_run()
        self.unidentified.new_run()

    def _forget(self, source: Source) -> None:
        self.forgotten_sessions += 1
        for field in dataclasses.fields(Counts):
            total = getattr(self.forgotten, field.name) + getattr(source.total, field.name)
            setattr(self.forgotten, field.name, total)
        self._remembered[source.session] = source.received
        while len(self._remembered) > MAX_REMEMBERED:
            self._remembered.popitem(last=False)
        peer = self._peer_of.pop(source.session, None)
        if peer is not None:
            self._by_peer[peer].discard(source.session)
            if not self._by_peer[peer]:
                del self._by_peer[peer]
