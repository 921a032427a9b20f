"""``restore``: the last-config values under a node.

Request fields: ``node`` (str, a slash path such as "camera/settings"),
optionally ``session`` (str, the requester's: a refusal counts under it).
Reply ``result``: ``values`` (map: the last config's content at ``node``, an
empty map if there is none). Error ``invalid_path`` for a malformed node,
``not_a_group`` if the last config holds a single value at ``node``.

The last config is the file as saved at the end of the last experiment (the
current experiment's parameters are not in it until it is saved), as with
stytra's ``restore_from_saved``. What is restored counts as in force in the
current experiment: it is in its metadata even if the process does not send
it again (README, "Which parameters an experiment holds").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidPathError
from ..paths import parse_path
from ..protocol import CommandError, ErrorCode
from ..tree import subtree

if TYPE_CHECKING:
    from ..daemon import Daemon, ReplyTo


def handle(daemon: Daemon, request: Mapping[str, Any], reply_to: ReplyTo) -> dict[str, Any]:
    try:
        node = parse_path(request["node"])
    except InvalidPathError as exc:
        raise CommandError(ErrorCode.INVALID_PATH, str(exc)) from None
    values = subtree(daemon.lifecycle.collector.last_config, node)
    if values is None:
        return {"values": {}}
    if not isinstance(values, dict):
        raise CommandError(
            ErrorCode.NOT_A_GROUP, f"the last config holds a single value at {request['node']!r}"
        )
    if values:
        session = request.get("session")
        daemon.lifecycle.restored(node, values, session if isinstance(session, str) else None)
    return {"values": values}
