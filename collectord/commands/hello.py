"""``hello``: a client introduces itself.

Request fields: ``name`` (str, the process's name, e.g. "camera"), ``session``
(str, ``[A-Za-z0-9_-]{1,64}``, unique per client object; also the routing id of
the client's DEALER socket, so the daemon can send it notices), ``host`` (str),
``pid`` (int), ``program`` (str), ``versions`` (map of str to str: the client's
library versions), and optionally ``confirmed`` (int, the highest sequence
number a daemon has confirmed to this session before; a daemon that knows less
about the session, having restarted, records the difference as a gap).

Reply ``result``: ``daemon`` (str, collectord's version), ``protocol`` (int),
``run_id`` (str, the current experiment), ``received`` (int, the highest
sequence number of this session the daemon holds in its journal: 0 for a new
session; after a reconnection, resend what follows it), ``max_message_bytes`` (int,
the largest message the daemon accepts: ZeroMQ drops the connection of a peer
that sends a bigger one, so a client must refuse such a message itself),
``stop_ids`` (true: a ``stop`` sent again with its ``stop_id`` gets the save
it made; a daemon without it, of an earlier version, would end another
experiment, so a client sends a stop again only where this is true).

A second hello for the same session updates the description; it does not
reset the sequence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import InvalidPathError
from ..protocol import PROTOCOL_VERSION, CommandError, ErrorCode
from ..sources import TooManySessions

if TYPE_CHECKING:
    from ..daemon import Daemon, ReplyTo


def handle(daemon: Daemon, request: Mapping[str, Any], reply_to: ReplyTo) -> dict[str, Any]:
    try:
        daemon.lifecycle.collector.sources.introduce(reply_to.envelope[0], request["session"])
        source = daemon.lifecycle.hello(request["session"], request)
    except (InvalidPathError, TooManySessions) as exc:
        raise CommandError(ErrorCode.BAD_REQUEST, str(exc)) from None
    return {
        "daemon": __version__,
        "protocol": PROTOCOL_VERSION,
        "run_id": daemon.lifecycle.collector.experiment.run_id,
        "received": daemon.durability.durable.get(source.session, 0),
        "max_message_bytes": daemon.config.max_message_bytes,
        "stop_ids": True,
    }
