"""The stop barrier: a stop waits until every connected client's messages are in.

Every open session is sent a ``barrier`` notice and answers (``sent``) with
the last sequence number it has sent; the experiment is saved once all of
them have been received, or when ``barrier_timeout`` expires, naming in the
metadata the clients that had not confirmed.

Whom to wait for: a session whose notice cannot be delivered is gone (its
process died without ``bye``), unless it is known only from the journal of a
restarted daemon: its client may be reconnecting right now. Such a session is
sent the notice again until it answers or the barrier times out; if it does
not answer, it is named as unconfirmed and counted as gone from then on. A
session whose connection closes while the stop waits (its process died after
the notice reached it: ``connections.py``) is not waited for either; it is
named as unconfirmed if what it reported, or anything at all, is not in.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from ..experiment import StopRequest
from ..protocol import Notice, notice
from ..sources import Sources
from .control import ReplyTo

#: A notice that could not be delivered is tried again this often, in seconds.
RETRY_INTERVAL = 0.05

Notify = Callable[[str, dict[str, Any]], bool]


@dataclasses.dataclass
class PendingStop:
    request: StopRequest
    barrier: int
    deadline: float
    replies: list[ReplyTo] = dataclasses.field(default_factory=list)
    #: session -> the last seq it reported (None: not yet)
    waiting: dict[str, int | None] = dataclasses.field(default_factory=dict)
    #: sessions whose notice has not reached them yet
    unnotified: set[str] = dataclasses.field(default_factory=set)
    retry_at: float = 0.0
    exit_after: bool = False
    #: The ids of the stop requests that joined (``answers.py``).
    ids: list[str] = dataclasses.field(default_factory=list)
    #: Its save failed once: the replies waiting then were told so, and
    #: those that join later wait for the try that succeeds.
    failed: bool = False


class Barrier:
    """At most one pending stop; stops requested meanwhile join it."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.pending: PendingStop | None = None
        self._counter = 0

    def request(
        self,
        request: StopRequest,
        sources: Sources,
        notify: Notify,
        reply_to: ReplyTo | None = None,
        *,
        exit_after: bool = False,
        known: tuple[str, int] | None = None,
        stop_id: str | None = None,
    ) -> PendingStop:
        """Start (or join) a stop: ask every open session for its last seq."""
        if self.pending is None:
            self._counter += 1
            stop = PendingStop(request, self._counter, time.monotonic() + self.timeout)
            for source in sources.open_sessions():
                stop.waiting[source.session] = None
                if source.from_journal:
                    stop.unnotified.add(source.session)
            self.pending = stop
            self._notify(sources, notify, everyone=True)
        stop = self.pending
        if reply_to is not None:
            stop.replies.append(reply_to)
        if known is not None:
            stop.waiting[known[0]] = known[1]
            stop.unnotified.discard(known[0])
        stop.exit_after |= exit_after
        if stop_id is not None and stop_id not in stop.ids:
            stop.ids.append(stop_id)
        return stop

    def report(self, session: str, barrier: int, seq: int) -> None:
        """A client's answer to the notice of barrier ``barrier``."""
        stop = self.pending
        if stop is not None and stop.barrier == barrier:
            stop.waiting[session] = seq
            stop.unnotified.discard(session)

    def hurry(self) -> None:
        """Save at once (a second signal), and exit afterwards."""
        if self.pending is not None:
            self.pending.exit_after = True
            self.pending.deadline = 0.0

    def ready(self, sources: Sources, notify: Notify) -> tuple[PendingStop, list[str]] | None:
        """The pending stop and its unconfirmed sessions, once it may be saved."""
        stop = self.pending
        if stop is None:
            return None
        self._notify(sources, notify, everyone=False)
        unconfirmed = []
        for session, seq in stop.waiting.items():
            source = sources.by_session.get(session)
            if source is None or source.closed:
                continue
            if seq is None or source.received < seq:
                unconfirmed.append(source)
        # Only those that may still answer hold the stop: a live connection,
        # or one that may be coming back to a restarted daemon.
        holding = any(source.reachable or source.from_journal for source in unconfirmed)
        if holding and time.monotonic() < stop.deadline:
            return None
        self.pending = None
        for source in unconfirmed:
            if source.from_journal:  # never came back: gone, as a failed notice says
                source.from_journal = False
                source.reachable = False
        return stop, [f"{source.name} ({source.session})" for source in unconfirmed]

    def _notify(self, sources: Sources, notify: Notify, *, everyone: bool) -> None:
        """Send the notice to those it has not reached (to everyone at first).

        A session that cannot be reached is dropped from the wait, unless it is
        known only from the journal: that one is tried again until the deadline.
        """
        stop = self.pending
        assert stop is not None
        now = time.monotonic()
        if not everyone and (not stop.unnotified or now < stop.retry_at):
            return
        stop.retry_at = now + RETRY_INTERVAL
        targets = list(stop.waiting) if everyone else list(stop.unnotified)
        message = notice(Notice.BARRIER, barrier=stop.barrier)
        for session in targets:
            if stop.waiting.get(session) is not None:
                continue  # already answered (the stop request carried it)
            if notify(session, message):
                stop.unnotified.discard(session)
                continue
            source = sources.by_session.get(session)
            if source is None or not source.from_journal:
                stop.waiting.pop(session, None)
                stop.unnotified.discard(session)
            else:
                stop.unnotified.add(session)
