"""Which control connections close, and whose they were.

ZeroMQ's ``ROUTER_NOTIFY`` would hand the ROUTER a message when a peer
connects or goes, but libzmq 4.3 has it only in its draft API, which pyzmq's
wheels are built without (setting it fails with EINVAL). The stable API says
enough: the socket's monitor reports every connection that closes, with its
file descriptor, and every message received says the descriptor it came in
on (``ZMQ_SRCFD``). So each request ties its routing id (a client's session)
to its connection, and a closed connection names the routing ids that came
in on it. A client killed with ``kill -9`` is known gone as soon as its
kernel closes the connection; one whose machine vanished, once the ROUTER's
heartbeat times out.

A descriptor is reused by the next connection accepted. The monitor reports
a closed connection before ZeroMQ can accept another on its descriptor, so
the events are read before a routing id is tied to a descriptor anew: a
close is never taken for that of the connection that came after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

log = logging.getLogger("collectord")


class Connections:
    """The control socket's connections, by descriptor; ``on_closed`` is
    called with the routing ids of each one that closes."""

    def __init__(self, control: zmq.Socket[Any], on_closed: Callable[[set[bytes]], None]) -> None:
        self._control = control
        self._on_closed = on_closed
        self.monitor: zmq.Socket[Any] = control.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._peers: dict[int, set[bytes]] = {}
        self._descriptor: dict[bytes, int] = {}

    def seen(self, peer: bytes, frame: zmq.Frame) -> None:
        """A message from ``peer`` came in ``frame``: tie it to its connection."""
        try:
            descriptor = int(frame.get(zmq.SRCFD))
        except zmq.ZMQError:  # a libzmq without it: closes go unnoticed
            return
        if self._descriptor.get(peer) == descriptor:
            return
        self.take_events()  # a close of this descriptor's last connection comes first
        old = self._descriptor.get(peer)
        if old is not None:
            self._peers[old].discard(peer)
            if not self._peers[old]:
                del self._peers[old]
        self._descriptor[peer] = descriptor
        self._peers.setdefault(descriptor, set()).add(peer)

    def take_events(self) -> None:
        """Read the monitor's events; report each closed connection's peers."""
        while True:
            try:
                frames = self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                event = parse_monitor_message(frames)
            except Exception:  # a malformed event must not stop the daemon
                log.exception("unreadable event from the control socket's monitor")
                continue
            if event["event"] != zmq.EVENT_DISCONNECTED:
                continue
            peers = self._peers.pop(int(event["value"]), set())
            for peer in peers:
                self._descriptor.pop(peer, None)
            if peers:
                self._on_closed(peers)

    def close(self) -> None:
        self._control.disable_monitor()
        self.monitor.close(linger=0)
