"""``restore``: the values in force under a node, to take up its parameters.

Request fields: ``node`` (str, a slash path such as "camera/settings"),
optionally ``session`` (str, the requester's: a refusal counts under it).
Reply ``result``: ``values`` (map: each parameter under ``node`` as set in
the current experiment, else as the last config holds it, else as carried
in; an empty map if there is none). Error ``invalid_path`` for a malformed
node, ``not_a_group`` if a single value is at ``node``, ``bad_request`` if
the values there cannot be sent (a file edited by hand holding an integer
beyond 64 bits, say).

A process that starts takes up its parameters where the last experiment
left them, as with stytra's ``restore_from_saved``; but a parameter set since
(by another process, or by this one before it crashed) is answered as set:
what a second stytra window restores must not put back the last config's
value over one the first window changed. What is restored counts as in force
in the current experiment, with the values answered: it is in its metadata
even if the process does not send it again (README, "Which parameters an
experiment holds").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import codec, jsonio
from ..errors import InvalidPathError, UnsupportedValueError
from ..paths import parse_path
from ..protocol import CommandError, ErrorCode
from ..tree import merge_config, subtree

if TYPE_CHECKING:
    from ..daemon import Daemon, ReplyTo


def handle(daemon: Daemon, request: Mapping[str, Any], reply_to: ReplyTo) -> dict[str, Any]:
    try:
        node = parse_path(request["node"])
    except InvalidPathError as exc:
        raise CommandError(ErrorCode.INVALID_PATH, str(exc)) from None
    collector = daemon.lifecycle.collector
    fresh, carried = collector.tree.held(node)
    values = in_force(fresh, subtree(collector.last_config.get(), node), carried)
    # The last config in memory shares its values with the tree; what the
    # file holds (arrays as lists, tuples as lists, ...) is that read back,
    # and the tree's values are answered as the file would hold them.
    if isinstance(values, dict) and values:
        values = jsonio.loads(jsonio.dumps(values))
    if values is None:
        return {"values": {}}
    if not isinstance(values, dict):
        raise CommandError(
            ErrorCode.NOT_A_GROUP,
            f"a single value, not a group of parameters, is at {request['node']!r}",
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


def in_force(fresh: Any, saved: Any, carried: Any) -> Any:
    """Each parameter's value: as set in this experiment (``fresh``), else as
    the last config holds it (``saved``), else as carried in; each part a
    nested dict, a single value or None. Where their shapes differ, the
    later wins whole."""
    answer: Any = None
    for part in (carried, saved, fresh):
        if part is None or (isinstance(part, dict) and not part):
            continue
        if isinstance(part, dict) and isinstance(answer, dict):
            answer = merge_config(answer, part)
        else:
            answer = part
    return answer
