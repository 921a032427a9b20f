"""``offset``: a client reports a measurement of its clock, for the metadata.

Request fields: ``session`` (str, said hello), ``at`` (float, the daemon's
clock when it was measured: the middle of the exchange's ``t2`` and ``t3``),
``offset`` (float, seconds to add to the client's clock to get the daemon's),
``rtt`` (float, the exchange's round trip, 0 or more). Reply ``result``:
empty. The sample is journaled and belongs to the current experiment: its
metadata lists the source's samples and their summary (``clock`` in
``protocol.SOURCE``). Error ``bad_request`` for a session that has not said
hello, or a value that is not finite or a negative ``rtt``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..clocks import check_sample
from ..protocol import CommandError, ErrorCode

if TYPE_CHECKING:
    from ..daemon import Daemon, ReplyTo


def handle(daemon: Daemon, request: Mapping[str, Any], reply_to: ReplyTo) -> dict[str, Any]:
    session = request["session"]
    source = daemon.lifecycle.collector.sources.by_session.get(session)
    if source is None or not source.introduced:
        raise CommandError(ErrorCode.BAD_REQUEST, f"session {session!r} has not said hello")
    try:
        sample = check_sample(request["at"], request["offset"], request["rtt"])
    except ValueError as exc:
        raise CommandError(ErrorCode.BAD_REQUEST, f"clock sample: {exc}") from None
    daemon.lifecycle.clock_sample(source, sample)
    return {}
