"""``dropped``: a client lost messages it could not keep; do not wait for them.

Request fields: ``session`` (str), ``upto`` (int): the client's buffer of
unconfirmed messages overflowed, and it dropped every message up to ``upto``
that the daemon had not confirmed. The daemon records those it lacks as a lost
gap (named in ``status`` and in the metadata) and expects ``upto + 1`` next.
Reply ``result``: ``received`` (int, as in ``sync``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..daemon import Daemon, ReplyTo


def handle(daemon: Daemon, request: Mapping[str, Any], reply_to: ReplyTo) -> dict[str, Any]:
    daemon.dropped(request["session"], request["upto"])
    return {"received": daemon.durable.get(request["session"], 0)}
