"""``stop``: end the current experiment and save it.

Request fields: ``reason`` (str, free text recorded in the metadata), and
optionally ``session`` (str) with ``seq`` (int): the requester's own last
sequence number, so its own messages are waited for without waiting for its
answer to the barrier notice (the notice is sent to it all the same); and
``stop_id`` (str, at most ``MAX_STOP_ID`` characters), the requester's name
for this stop: a stop sent again with an id the daemon saved (before or
after a restart) is answered with that save, and one whose save is under
way joins it, instead of ending another experiment (``daemon/answers.py``).

The daemon sends a ``barrier`` notice to every connected client, waits until
it has received everything they report (at most ``barrier_timeout``), then
writes the metadata and the last config and begins a new experiment. A stop
requested while one is pending joins it. The reply is deferred until saved.

Reply ``result``: ``run_id`` (str, the experiment saved), ``path`` (str, its
metadata file), ``last_config`` (str), ``unconfirmed`` (array of str, clients
that did not confirm in time). Error ``save_failed`` if the files could not
be written: the experiment has ended, and the daemon tries its save again
(a new stop would end the next experiment too); ``stop_failed`` if the stop
could not begin (not journaled): nothing ended, and a later stop saves it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..experiment import StopRequest
from ..protocol import CommandError, ErrorCode

if TYPE_CHECKING:
    from ..daemon import Daemon, ReplyTo

#: A stop id is a name, not a payload: the daemon keeps the last 64.
MAX_STOP_ID = 128


def handle(daemon: Daemon, request: Mapping[str, Any], reply_to: ReplyTo) -> None:
    stop_id = request.get("stop_id")
    if stop_id is not None and not 0 < len(stop_id) <= MAX_STOP_ID:
        raise CommandError(
            ErrorCode.BAD_REQUEST,
            f"stop_id must have 1 to {MAX_STOP_ID} characters, not {len(stop_id)}",
        )
    session = request.get("session")
    sources = daemon.lifecycle.collector.sources
    source = sources.by_session.get(session) if session else None
    who = StopRequest(
        by=source.name if source else "control request",
        reason=request["reason"],
        host=source.host if source else "",
        pid=source.pid if source else None,
    )
    known = (source.session, request["seq"]) if source is not None and "seq" in request else None
    daemon.request_stop(who, reply_to, known=known, stop_id=stop_id)
    return None
