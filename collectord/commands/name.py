"""``name``: name the current experiment.

Request fields: ``name`` (str, a name under the path rules, e.g. stytra's
session id ``241124_103000``), optionally ``session`` (str, the requester's).
Reply ``result``: empty. The experiment's folder is then
``OUTPUT/YYMMDD/NAME/`` (``NAME_1`` if taken) and its metadata file
``NAME_metadata.json``, instead of the time of its first message. The last
name given before the stop counts; the next experiment has none until it is
named. Error ``invalid_path`` if the name breaks the path rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidPathError
from ..protocol import CommandError, ErrorCode

if TYPE_CHECKING:
    from ..daemon import Daemon, ReplyTo


def handle(daemon: Daemon, request: Mapping[str, Any], reply_to: ReplyTo) -> dict[str, Any]:
    try:
        daemon.lifecycle.name(request["name"])
    except InvalidPathError as exc:
        raise CommandError(ErrorCode.INVALID_PATH, str(exc)) from None
    return {}
