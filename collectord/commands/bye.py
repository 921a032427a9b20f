"""``bye``: a client is closing; do not wait for it at the next stop.

Request fields: ``session`` (str). Reply ``result``: ``received`` (int, the
highest sequence number of this session the daemon has), once the bye is
in the journal on disk. A client sends ``bye`` only after ``sync`` has
confirmed everything it sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..daemon import Daemon, ReplyTo


def handle(daemon: Daemon, request: Mapping[str, Any], reply_to: ReplyTo) -> None:
    source = daemon.lifecycle.bye(request["session"])
    # Answered once the bye is on disk: a client that closes is not waited
    # for at a stop, after a crash of the daemon too.
    daemon.durability.reply_when_durable(reply_to, {"received": source.received if source else 0})
