"""One-shot control requests, for the CLI and for scripts.

A fresh DEALER socket per request: the CLI runs one command and exits, so the
``Client`` machinery (I/O thread, buffering) would only get in the way.
"""

from __future__ import annotations

import secrets
from typing import Any

import zmq

from . import codec
from .errors import DaemonTimeout, RequestError, TransportError
from .protocol import PROTOCOL_VERSION, Command
from .security import ClientSecurity


def request(
    endpoint: str,
    command: Command,
    fields: dict[str, Any] | None = None,
    timeout: float = 5.0,
    security: ClientSecurity | None = None,
) -> dict[str, Any]:
    """Send one request to the daemon at ``endpoint``; return the reply's result.

    Raises ``DaemonTimeout`` if nothing answers within ``timeout`` seconds,
    ``RequestError`` if the daemon refuses, ``TransportError`` for a bad endpoint.
    """
    request_id = secrets.randbelow(2**31) + 1
    message = {"v": PROTOCOL_VERSION, "cmd": command.value, "id": request_id, **(fields or {})}
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if security is not None:
        security.apply(sock)
    try:
        sock.connect(endpoint)
        sock.send_multipart([b"", codec.pack(message)])
        if not sock.poll(int(timeout * 1000)):
            raise DaemonTimeout(
                f"no collectord daemon answered at {endpoint} within {timeout:g} s"
            )
        reply = codec.unpack(sock.recv_multipart()[-1], codec.DAEMON_DEPTH)
    except zmq.ZMQError as exc:
        raise TransportError(f"cannot reach {endpoint}: {exc}") from exc
    finally:
        sock.close()
        context.term()
    if not isinstance(reply, dict) or reply.get("id") != request_id:
        raise TransportError(f"unexpected answer from {endpoint}: {reply!r:.200}")
    if not reply.get("ok"):
        error = reply.get("error") or {}
        raise RequestError(str(error.get("code")), str(error.get("message")))
    result = reply.get("result")
    return result if isinstance(result, dict) else {}
