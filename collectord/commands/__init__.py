"""Control commands, one per module; each module's docstring is its wire spec.

``COMMANDS`` maps each ``protocol.Command`` to its handler. A handler gets the
daemon, the request (already checked against ``protocol.REQUESTS``) and where
to reply; it returns the reply's ``result`` map, or None when it will reply
later (``sync`` and ``stop`` wait for messages to arrive). It refuses a request
by raising ``protocol.CommandError`` with a code from ``protocol.ErrorCode``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..protocol import Command
from . import (
    bye,
    clock,
    dropped,
    hello,
    name,
    offset,
    restore,
    save_config,
    sent,
    status,
    stop,
    sync,
)

if TYPE_CHECKING:
    from ..daemon import Daemon, ReplyTo

Handler = Callable[["Daemon", Mapping[str, Any], "ReplyTo"], "dict[str, Any] | None"]

COMMANDS: dict[Command, Handler] = {
    Command.HELLO: hello.handle,
    Command.BYE: bye.handle,
    Command.DROPPED: dropped.handle,
    Command.SYNC: sync.handle,
    Command.SENT: sent.handle,
    Command.STOP: stop.handle,
    Command.STATUS: status.handle,
    Command.RESTORE: restore.handle,
    Command.SAVE_CONFIG: save_config.handle,
    Command.NAME: name.handle,
    Command.CLOCK: clock.handle,
    Command.OFFSET: offset.handle,
}
