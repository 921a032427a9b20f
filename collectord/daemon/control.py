"""The control endpoint: decode a request, look its command up, validate, execute, reply.

Commands live one per module in ``collectord/commands`` (their docstrings are
their wire specs); their request schemas are in ``protocol.REQUESTS``, shared
with the client. Every refusal becomes an error reply with a code from
``protocol.ErrorCode`` here, and is counted against the session that sent it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from .. import codec
from ..commands import COMMANDS
from ..protocol import (
    PROTOCOL_VERSION,
    REQUEST,
    REQUESTS,
    Command,
    CommandError,
    ErrorCode,
    ProtocolViolation,
    check_fields,
    reply_error,
    reply_ok,
)

if TYPE_CHECKING:
    from .loop import Daemon


class ReplyTo(NamedTuple):
    """Where a (possibly deferred) reply goes: the ROUTER envelope and request id."""

    envelope: list[bytes]
    request_id: int


def dispatch(daemon: Daemon, frames: list[bytes]) -> None:
    """Handle one request from the ROUTER socket; never raises on bad input."""
    envelope, payload = frames[:-1], frames[-1]
    request_id = 0
    session = None
    daemon.heard_from(envelope[0].decode("ascii", "replace"))
    try:
        request = check_fields(codec.unpack(payload), REQUEST, "request")
        request_id = request["id"]
        if isinstance(request.get("session"), str):
            session = request["session"]
        if request["v"] != PROTOCOL_VERSION:
            raise CommandError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"protocol version {request['v']} is not supported "
                f"(this daemon speaks {PROTOCOL_VERSION})",
            )
        try:
            command = Command(request["cmd"])
        except ValueError:
            raise CommandError(
                ErrorCode.UNKNOWN_COMMAND, f"unknown command {request['cmd']!r}"
            ) from None
        check_fields(request, REQUESTS[command], f"{command.value} request")
        reply_to = ReplyTo(envelope, request_id)
        result = COMMANDS[command](daemon, request, reply_to)
    except (codec.DecodeError, ProtocolViolation) as exc:
        _refuse(daemon, envelope, request_id, session, ErrorCode.BAD_REQUEST, str(exc))
    except CommandError as exc:
        _refuse(daemon, envelope, request_id, session, exc.code, str(exc))
    else:
        if result is not None:
            daemon.send(envelope, reply_ok(request_id, result))


def _refuse(
    daemon: Daemon,
    envelope: list[bytes],
    request_id: int,
    session: str | None,
    code: ErrorCode,
    message: str,
) -> None:
    daemon.lifecycle.reject(session, f"control request: {message}")
    daemon.send(envelope, reply_error(request_id, code, message))
