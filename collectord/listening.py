"""Whether something accepts connections at a tcp or ipc endpoint, asked of the system.

Two users need to know before ZeroMQ is involved. The stytra drop-in
(``autostart.py``) asks whether a daemon may be running: a refused TCP or
Unix connection answers at once, where a ZeroMQ request would wait for its
timeout. The daemon asks before it binds an ``ipc://`` path: ZeroMQ deletes
whatever file is at that path and binds anew, so a second daemon started
with the same endpoints would silently take them from a live one (clients
that reconnect would go to it), where a ``tcp://`` port in use is refused
by the system. A socket file nobody accepts on is what a killed daemon
left: binding over it is right.
"""

from __future__ import annotations

import socket

#: How long a connection attempt may take (loopback and Unix sockets answer at once).
CONNECT_TIMEOUT = 1.0


def accepts(endpoint: str) -> bool | None:
    """Whether anything accepts connections at a tcp or ipc endpoint; None: cannot tell
    (another transport, a name that does not resolve, no answer in time)."""
    transport, _, address = endpoint.partition("://")
    try:
        if transport == "ipc" and hasattr(socket, "AF_UNIX"):
            path = "\0" + address[1:] if address.startswith("@") else address
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(CONNECT_TIMEOUT)
                probe.connect(path)
            return True
        if transport == "tcp":
            host, _, port = address.rpartition(":")
            with socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT):
                return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except (OSError, ValueError):  # a timeout, a name that does not resolve
        return None
    return None


def taken_ipc_path(endpoint: str) -> bool:
    """An ``ipc://`` path (not Linux's abstract ``@name``) that something accepts on."""
    return (
        endpoint.startswith("ipc://")
        and not endpoint.startswith("ipc://@")
        and accepts(endpoint) is True
    )
