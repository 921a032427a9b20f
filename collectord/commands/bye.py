"""``bye``: a client is closing; do not wait for it at the next stop.

Request fields: ``session`` (str). Reply ``result``: ``received`` (int, the
highest sequence number of this session the daemon has). A client sends
``bye`` only after ``sync`` has confirmed everything it sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..daemon import Daemon, ReplyTo


def handle(daemon: Daemon, request: Mapping[str, Any], reply_to: ReplyTo) -> dict[str, Any]:
    source = daemon.lifecycle.bye(request["session"])
    return {"received": source.received if source else 0}
