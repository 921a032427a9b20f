"""``restore``: the last-config values under a node.

Request fields: ``node`` (str, a slash path such as "camera/settings"),
optionally ``session`` (str, the requester's: a refusal counts under it).
Reply ``result``: ``values`` (map: the last config's content at ``node``, an
empty map if there is none). Error ``invalid_path`` for a malformed node,
``not_a_group`` if the last config holds a single value at ``node``,
``bad_request`` if its values there cannot be sent (a file edited by hand
holding an integer beyond 64 bits, say).

The last config is the file as saved at the end of the last experiment (the
current experiment's parameters are not in it until it is saved), as with
stytra's ``restore_from_saved``. What is restored counts as in force in the
current experiment: it is in its metadata even if the process does not send
it again (README, "Which parameters an experiment holds").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import codec, jsonio
from ..errors import InvalidPathError, UnsupportedValueError
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
    # The last config in memory shares its values with the tree; what the
    # file holds (arrays as lists, tuples as lists, ...) is that read back.
    values = subtree(daemon.lifecycle.collector.last_config.get(), node)
    if isinstance(values, dict) and values:
        values = jsonio.loads(jsonio.dumps(values))
    if values is None:
        return {"values": {}}
    if not isinstance(values, dict):
        raise CommandError(
            ErrorCode.NOT_A_GROUP, f"the last config holds a single value at {request['node']!r}"
        )
    try:
        codec.pack(values)
    except UnsupportedValueError as exc:  # a file edited by hand: an int beyond 64 bits, say
        raise CommandError(
            ErrorCode.BAD_REQUEST,
            f"the last config's values under {request['node']!r} cannot be sent ({exc}); "
            f"was {daemon.lifecycle.last_config_file} edited by hand?",
        ) from None
    if values:
        session = request.get("session")
        daemon.lifecycle.restored(node, values, session if isinstance(session, str) else None)
    return {"values": values}
