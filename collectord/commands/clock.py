"""``clock``: one exchange of timestamps, to measure a client's clock offset.

Request fields: ``t1`` (float, the client's clock as it sends, in seconds),
optionally ``session`` (str, the requester's). Reply ``result``: ``t2``
(float, the daemon's clock, ``time.time()``, as it takes the request) and
``t3`` (float, the daemon's clock as it replies). The client reads its clock
again as the reply arrives (``t4``); ``clocks.measure`` makes the offset and
the round trip of the four. Nothing is recorded: the client reports the best
exchange of a burst with ``offset``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..daemon import Daemon, ReplyTo


def handle(daemon: Daemon, request: Mapping[str, Any], reply_to: ReplyTo) -> dict[str, Any]:
    received = time.time()
    # The reply is sent as soon as this returns: t3 is taken last.
    return {"t2": received, "t3": time.time()}
