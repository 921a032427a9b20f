"""``dropped``: a client lost messages it could not keep; do not wait for them.

Request fields: ``session`` (str), ``upto`` (int): the client's buffer of
unconfirmed messages overflowed, and it dropped every message up to ``upto``
that the daemon had not confirmed. The daemon records those it lacks as a lost
gap (named in ``status`` and in the metadata) and expects ``upto + 1`` next.
Reply ``result``: ``received`` (int, as in ``sync``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..daemon import Daemon, ReplyTo

log = logging.getLogger("collectord")


def handle(daemon: Daemon, request: Mapping[str, Any], reply_to: ReplyTo) -> dict[str, Any]:
    session, upto = request["session"], request["upto"]
    source = daemon.lifecycle.collector.sources.by_session.get(session)
    if source is not None and upto > source.received:
        log.warning("%s dropped unconfirmed messages (its buffer overflowed)", source.name)
        daemon.lifecycle.skip(source, upto)
        # What followed the dropped messages may have been refused as out of
        # order while we waited for them: ask for it again.
        daemon.ask_resend(source)
    return {"received": daemon.durability.durable.get(session, 0)}
