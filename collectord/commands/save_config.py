"""``save_config``: write the last config now; the experiment goes on.

Request fields: optionally ``session`` (str, the requester's). Reply
``result``: ``last_config`` (str, the file written). The last config becomes
what a save would make it (the previous one with the current parameters
merged over it), and no experiment folder is written: a program that ran no
experiment but changed parameters (stytra's ``save_config_file``, at exit)
keeps them for its next start. Error ``save_failed`` if the file could not
be written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..protocol import CommandError, ErrorCode

if TYPE_CHECKING:
    from ..daemon import Daemon, ReplyTo


def handle(daemon: Daemon, request: Mapping[str, Any], reply_to: ReplyTo) -> dict[str, Any]:
    try:
        written = daemon.lifecycle.save_config()
    except OSError as exc:
        raise CommandError(ErrorCode.SAVE_FAILED, f"cannot write the last config: {exc}") from None
    return {"last_config": str(written)}
