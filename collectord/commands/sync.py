"""``sync``: reply once every message of a session up to ``seq`` is journaled.

Request fields: ``session`` (str), ``seq`` (int). Reply ``result``:
``received`` (int, the highest sequence number of the session that the daemon
has applied and written to its journal on disk, at least ``seq``). The reply is
deferred until then; the client decides how long to wait. A client may forget
the messages up to ``received``: they survive a crash of the daemon. ``seq`` 0
replies at once, which makes ``sync`` a cheap way to ask how far the daemon has
got.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..daemon import Daemon, ReplyTo


def handle(daemon: Daemon, request: Mapping[str, Any], reply_to: ReplyTo) -> dict[str, Any] | None:
    return daemon.durability.wait(request["session"], request["seq"], reply_to)
