"""Required sources: the processes an experiment needs, and when each was missing.

The configuration (``[sources] required``, or ``collectord run --require``)
names the processes an experiment needs, by the name each gives its client
(``Client("camera")``). A name is present while at least one session of that
name is connected (a restarted process opens a new session under the same
name), and missing otherwise.

``Required`` keeps, for the current experiment, every stretch of time each
name was missing (an ``Absence``: from, to, and why it began), starting with
the experiment itself for a name not connected then. The lifecycle tells it
what is connected whenever that may have changed, journals each change as a
PRESENCE record, and replays those records after a crash; the saved metadata
gets ``account``, ``status`` gets ``status``. A stop while a name is missing
still saves (losing data is worse): the account says which were missing at
the stop. Pure logic: no sockets, no journal.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

#: Absences listed per name and experiment; more are counted, and their
#: seconds added, but not listed (a process that flaps must not grow the
#: metadata without end).
MAX_LISTED = 100

#: Why a name is missing at the start (nothing of it has connected yet).
NOT_CONNECTED = "not connected"


@dataclasses.dataclass(eq=False)  # compared by identity
class Absence:
    """One stretch of time a required name had no connected session."""

    since: dt.datetime
    cause: str  # why it began: "not connected", "disconnected", "said bye", ...
    until: dt.datetime | None = None  # None: still missing

    def seconds(self, end: dt.datetime) -> float:
        """How long it lasted, counted up to ``end`` at most."""
        until = end if self.until is None else min(self.until, end)
        return max(0.0, (until - self.since).total_seconds())

    def describe(self, end: dt.datetime) -> dict[str, Any]:
        until = end if self.until is None else min(self.until, end)
        return {
            "from": self.since.isoformat(),
            "to": until.isoformat(),
            "cause": self.cause,
        }


@dataclasses.dataclass(frozen=True)
class Change:
    """A required name went missing (``missing``) or came back, at ``at``."""

    name: str
    missing: bool
    at: dt.datetime
    cause: str


class Required:
    """The required names, and this experiment's absences of each."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = tuple(names)
        #: Names missing now, and the absence under way.
        self.missing: dict[str, Absence] = {}
        #: Every absence of this experiment, by name, in order (at most ``MAX_LISTED``).
        self.absences: dict[str, list[Absence]] = {name: [] for name in self.names}
        #: Absences of this experiment per name, listed or not, and the
        #: seconds of those over and not listed.
        self.counts: dict[str, int] = dict.fromkeys(self.names, 0)
        self._unlisted_seconds: dict[str, float] = dict.fromkeys(self.names, 0.0)
        #: When each missing name went missing, across experiments (for ``status``).
        self._gone_since: dict[str, dt.datetime] = {}
        #: Before the first experiment nothing is connected.
        self._initial: dict[str, str] | None = dict.fromkeys(self.names, NOT_CONNECTED)

    def begin(self, started: dt.datetime, missing: Mapping[str, str] | None = None) -> None:
        """A new experiment began at ``started``; the names missing then
        (``missing``: name to cause, as a BEGIN record carries them; by default
        those missing now) are missing from its start."""
        if missing is None:
            if self._initial is not None:
                missing = self._initial
            else:
                missing = {name: absence.cause for name, absence in self.missing.items()}
        self._initial = None
        self.missing = {}
        self.absences = {name: [] for name in self.names}
        self.counts = dict.fromkeys(self.names, 0)
        self._unlisted_seconds = dict.fromkeys(self.names, 0.0)
        for name in self.names:
            if name in missing:
                self._open(name, started, str(missing[name]))
                self._gone_since.setdefault(name, started)
            else:
                self._gone_since.pop(name, None)

    def carried(self) -> dict[str, str]:
        """What a BEGIN record keeps of this: the names missing, and why."""
        return {name: absence.cause for name, absence in self.missing.items()}

    def update(
        self, connected: Iterable[str], at: dt.datetime, causes: Mapping[str, str]
    ) -> list[Change]:
        """Compare with the names that have a connected session now; return
        what changed. ``causes``: why a name may have gone (else "not connected")."""
        present = set(connected)
        changes = []
        for name in self.names:
            missing = name not in present
            if self.mark(name, missing, at, causes.get(name, NOT_CONNECTED)):
                changes.append(Change(name, missing, at, causes.get(name, NOT_CONNECTED)))
        return changes

    def mark(self, name: str, missing: bool, at: dt.datetime, cause: str) -> bool:
        """Record that ``name`` went missing or came back at ``at`` (live, or a
        replayed PRESENCE record); False if that changes nothing (or ``name``
        is not required)."""
        if name not in self.absences or missing == (name in self.missing):
            return False
        if missing:
            self._open(name, at, cause)
            self._gone_since[name] = at
        else:
            absence = self.missing.pop(name)
            absence.until = at
            if absence not in self.absences[name]:
                self._unlisted_seconds[name] += absence.seconds(at)
            self._gone_since.pop(name, None)
        return True

    def _open(self, name: str, since: dt.datetime, cause: str) -> None:
        absence = Absence(since, cause)
        self.missing[name] = absence
        self.counts[name] += 1
        if len(self.absences[name]) < MAX_LISTED:
            self.absences[name].append(absence)

    def status(self) -> list[dict[str, Any]]:
        """``missing`` in the status reply: each missing name, since when and why."""
        return [
            {
                "name": name,
                "since": self._gone_since.get(name, absence.since).isoformat(),
                "cause": absence.cause,
            }
            for name, absence in self._in_order()
        ]

    def _in_order(self) -> list[tuple[str, Absence]]:
        """The names missing now and their absences, in the order required."""
        return [(name, self.missing[name]) for name in self.names if name in self.missing]

    def account(self, stopped: dt.datetime) -> dict[str, Any]:
        """The saved metadata's part: ``required``, ``missing_at_stop``, and per
        name the experiment's absences (counted up to ``stopped``)."""
        if not self.names:
            return {}
        missing: dict[str, Any] = {}
        for name in self.names:
            listed = [a for a in self.absences[name] if a.since <= stopped]
            seconds = sum(a.seconds(stopped) for a in listed)
            current = self.missing.get(name)
            if current is not None and current not in listed and current.since <= stopped:
                seconds += current.seconds(stopped)  # under way, and beyond the list
            missing[name] = {
                "intervals": [a.describe(stopped) for a in listed],
                "count": self.counts[name],
                "seconds": round(seconds + self._unlisted_seconds[name], 3),
            }
        return {
            "required": list(self.names),
            "missing_at_stop": [
                name for name, absence in self._in_order() if absence.since <= stopped
            ],
            "missing": missing,
        }
