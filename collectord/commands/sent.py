"""``sent``: a client's answer to a ``barrier`` notice.

Request fields: ``session`` (str), ``seq`` (int, the last sequence number the
client has handed to its data socket), ``barrier`` (int, copied from the
notice). Reply ``result``: empty map. The pending stop waits until the daemon
has received ``seq`` from this session.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..daemon import Daemon, ReplyTo


def handle(daemon: Daemon, request: Mapping[str, Any], reply_to: ReplyTo) -> dict[str, Any]:
    daemon.barrier.report(request["session"], request["barrier"], request["seq"])
    return {}
