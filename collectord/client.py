"""The Python client: what an acquisition process uses to publish.

::

    from collectord import Client

    with Client("camera") as client:
        settings = {"exposure": 5.0, "gain": 1.0, **client.restore("camera/settings")}
        client.set_params("camera/settings", settings)
        ...
        client.set_params("camera/settings", exposure=8.0)   # microseconds, never blocks
        client.add_data("camera/frames", 12000)

**Never blocking.** ``set_params`` and ``add_data`` check and encode the value
in the calling thread (so a bad value raises at the call that sent it), take a
sequence number and append the body to the batch being filled (``outbox.py``);
the I/O thread (``link.py``) does all the networking. They work before the daemon is up and
while it restarts: messages wait in the client until the daemon confirms them.

**Threads.** A ``Client`` may be shared between threads: every method is
thread-safe, and messages from different threads are ordered by the moment
their call took the client's lock. Blocking calls (``sync``, ``stop``,
``restore``, ``close``) wait only for their own answer.

**Lifecycle.** ``State.OPEN`` from construction; ``close()`` (or leaving the
``with`` block) moves to ``CLOSING``, delivers everything sent, says ``bye``
and ends in ``CLOSED``. Calls on a closing or closed client raise
``ClientClosedError``.
"""

from __future__ import annotations

import enum
import logging
import os
import platform
import secrets
import socket
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any

import msgpack
import numpy as np
import zmq

from . import __version__, codec
from . import config as config_module
from .errors import (
    ClientClosedError,
    CollectordError,
    DaemonTimeout,
    InvalidPathError,
    MessageTooLargeError,
    UnsupportedValueError,
)
from .link import Link, Request, Shared
from .paths import check_name, parse_path
from .protocol import Command, Kind
from .security import ClientSecurity
from .stream import Stream
from .streamfiles import STREAM_DTYPES, StreamError, StreamSpec

__all__ = ["Client", "State"]

log = logging.getLogger("collectord.client")

#: Messages a client keeps until the daemon confirms them; beyond, the oldest go.
DEFAULT_BUFFER = 1_000_000


class State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Client:
    """A connection from one process to the collectord daemon.

    ``name`` identifies the process in the saved metadata ("camera",
    "tracking"). ``data`` and ``control`` are the daemon's endpoints; when not
    given they come from ``config`` (a path, or None for $COLLECTORD_CONFIG or
    the built-in defaults), as do the CURVE keys (``[security]``) needed to
    reach a daemon on another machine. ``buffer`` bounds how many unconfirmed messages
    are kept for resending.
    """

    def __init__(
        self,
        name: str,
        data: str | None = None,
        control: str | None = None,
        *,
        config: str | os.PathLike[str] | None = None,
        buffer: int = DEFAULT_BUFFER,
    ) -> None:
        self.name = check_name(name, where="client name")
        settings = config_module.load(config)
        self.data_endpoint = data or settings.data
        self.control_endpoint = control or settings.control
        self.session = secrets.token_hex(8)
        self._state = State.OPEN
        self._shared = Shared()
        self._context: zmq.Context[Any] = zmq.Context()
        wake_address = f"inproc://collectord-wake-{self.session}"
        wake_rx = self._context.socket(zmq.PAIR)
        wake_rx.bind(wake_address)
        self._wake = self._context.socket(zmq.PAIR)
        self._wake.connect(wake_address)
        hello = {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "program": " ".join(sys.argv) or sys.executable,
            "versions": {
                "collectord": __version__,
                "python": platform.python_version(),
                "numpy": np.__version__,
                "pyzmq": zmq.__version__,
                "libzmq": zmq.zmq_version(),
                "msgpack": ".".join(map(str, msgpack.version)),
            },
        }
        self._link = Link(
            self._shared,
            wake_rx,
            self._context,
            data=self.data_endpoint,
            control=self.control_endpoint,
            session=self.session,
            hello=hello,
            buffer_limit=buffer,
            max_message_bytes=settings.max_message_bytes,
            security=ClientSecurity.from_config(settings),
        )
        self._link.start()
        self._link.ready.wait()
        if self._link.failure is not None:
            self._state = State.CLOSED
            self._wake.close()
            self._context.term()
            raise self._link.failure

    # -- publishing (never blocks) -------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    def set_params(
        self, node: str, values: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> int:
        """Merge parameter values into ``node``; they carry over to later experiments.

        ``client.set_params("camera/settings", {"exposure": 5.0}, gain=2)``.
        Returns the message's sequence number.
        """
        parse_path(node)
        if values is None:
            merged = kwargs
        elif kwargs or type(values) is not dict:
            merged = {**values, **kwargs}
        else:
            merged = values
        codec.check_params(merged, node)
        return self._publish(Kind.PARAMS, codec.pack({"path": node, "values": merged}))

    def add_data(self, path: str, value: Any) -> int:
        """Set static data at ``path`` for the current experiment (e.g. "stimulus/log").

        Returns the message's sequence number.
        """
        parse_path(path)
        codec.check_value(value, where=path, depth=codec.DATA_VALUE_DEPTH)
        return self._publish(Kind.DATA, codec.pack({"path": path, "value": value}))

    def stream(
        self,
        path: str,
        columns: Sequence[str],
        dtype: Any = "f8",
        *,
        units: Sequence[str] | None = None,
        block_rows: int | None = None,
        flush_interval: float = 0.05,
    ) -> Stream:
        """Declare a stream: a table of rows at ``path``, one ``dtype`` for all columns.

        ``stream.append(row)`` and ``stream.extend(block)`` add rows; they are
        batched into blocks of ``block_rows`` rows (default: about 64 KiB),
        sent when full or when ``flush_interval`` seconds old. At each stop,
        the daemon writes the stream's rows so far into a file beside the
        metadata, and the tree holds a descriptor of it at ``path``.
        """
        columns = list(columns)
        for column in columns:
            check_name(column, where=f"column name of {path!r}")
        resolved = np.dtype(dtype)
        if resolved.kind in "iuf":
            resolved = resolved.newbyteorder("<")  # the wire is little-endian
        if resolved.str not in STREAM_DTYPES:
            raise UnsupportedValueError(
                f"stream dtype {np.dtype(dtype)} is not a plain numeric dtype of 1 to 8 bytes"
            )
        declaration: dict[str, Any] = {"path": path, "columns": columns, "dtype": resolved.str}
        if units is not None:
            declaration["units"] = [str(unit) for unit in units]
        try:  # the daemon's own check, so that a bad declaration fails here
            StreamSpec.parse(parse_path(path), declaration, self.session, self.name)
        except StreamError as exc:
            raise InvalidPathError(f"stream {path!r}: {exc}") from None
        stream = Stream(self, path, columns, resolved, block_rows, flush_interval)
        with self._shared.lock:
            self._shared.streams.append(stream)
        self._publish(Kind.STREAM, codec.pack(declaration))
        return stream

    def _publish_block(self, path: str, rows: np.ndarray[Any, Any]) -> int:
        body = msgpack.packb({"path": path, "rows": len(rows)})
        # Rows appended before close() began are delivered while it closes.
        return self._publish(Kind.BLOCK, body, rows, closing_ok=True)

    def _max_block_rows(self, row_bytes: int) -> int:
        """Rows that fit in one message within the daemon's size limit."""
        return max(1, self._link.limits.body // row_bytes)

    def _check_open(self) -> None:
        if self._state is not State.OPEN:
            raise ClientClosedError(f"client {self.name!r} is {self._state.value}")

    def _flush_streams(self) -> None:
        for stream in list(self._shared.streams):
            stream.flush()

    def _publish(self, kind: Kind, body: bytes, raw: Any = None, closing_ok: bool = False) -> int:
        limits = self._link.limits
        size = len(body) if raw is None else len(body) + raw.nbytes
        if size > limits.body:
            raise MessageTooLargeError(
                f"the message is {size} bytes; the daemon accepts at most {limits.body}"
            )
        shared = self._shared
        with shared.lock:
            if self._state is not State.OPEN and not (closing_ok and self._state is State.CLOSING):
                raise ClientClosedError(f"client {self.name!r} is {self._state.value}")
            shared.seq += 1
            seq = shared.seq
            if raw is None:
                shared.outbox.add(seq, kind.value, body, limits.batch)
            else:
                shared.outbox.add_block(seq, body, raw)
            if shared.sleeping:
                self._wake_link()
        return seq

    def _wake_link(self) -> None:
        """Wake the I/O thread if it sleeps; call with the lock held."""
        if self._shared.sleeping:
            self._shared.sleeping = False
            self._wake.send(b"", zmq.NOBLOCK)

    # -- requests (block the caller, up to ``timeout``) ----------------------------

    def _request(self, command: Command, fields: dict[str, Any], timeout: float) -> dict[str, Any]:
        future: Future[dict[str, Any]] = Future()
        with self._shared.lock:
            if self._state is State.CLOSED:
                raise ClientClosedError(f"client {self.name!r} is closed")
            self._shared.requests.append(Request(command, fields, future))
            self._wake_link()
        try:
            return future.result(timeout)
        except FutureTimeout:
            raise DaemonTimeout(
                f"no answer to {command.value!r} from the daemon at {self.control_endpoint} "
                f"within {timeout} s: is `collectord run` running there?"
            ) from None

    def sync(self, timeout: float = 10.0) -> None:
        """Return once the daemon has journaled every message this client sent.

        Rows appended to streams are sent first.
        """
        if self._state is State.CLOSED:
            raise ClientClosedError(f"client {self.name!r} is closed")
        self._flush_streams()
        seq = self._shared.seq
        if self._link.acked >= seq:
            return  # the daemon already confirmed every message (journaled)
        self._request(Command.SYNC, {"session": self.session, "seq": seq}, timeout)

    def stop(self, reason: str = "", timeout: float = 30.0) -> str:
        """End the experiment; return the path of its saved metadata file.

        The daemon first waits for everything this client and every other
        connected client has sent (its stop barrier).
        """
        self._flush_streams()
        fields = {
            "reason": reason or f"stop() from {self.name}",
            "session": self.session,
            "seq": self._shared.seq,
        }
        return str(self._request(Command.STOP, fields, timeout)["path"])

    def restore(self, node: str, timeout: float = 10.0) -> dict[str, Any]:
        """The last config's values under ``node``; {} if it holds none."""
        parse_path(node)
        return dict(self._request(Command.RESTORE, {"node": node}, timeout)["values"])

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        """The daemon's status, as ``collectord status --json`` prints it."""
        return self._request(Command.STATUS, {}, timeout)

    @property
    def unconfirmed(self) -> int:
        """Messages sent but not yet confirmed by the daemon (approximate)."""
        with self._shared.lock:  # publishing threads append to the outbox
            waiting = len(self._shared.outbox)
        return len(self._link.unacked) + waiting

    @property
    def overflowed(self) -> int:
        """Messages dropped because more than ``buffer`` were unconfirmed."""
        return self._link.overflowed

    # -- closing -------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Deliver everything sent, say goodbye, and release the sockets.

        Raises ``DaemonTimeout`` if the daemon did not confirm delivery in
        ``timeout`` seconds; the client is closed all the same.
        """
        with self._shared.lock:
            if self._state is not State.OPEN:
                return
            self._state = State.CLOSING
        try:
            self.sync(timeout)
            try:
                # Best effort: without it the daemon only waits for this client at
                # its next stop for barrier_timeout; everything sent is delivered.
                self._request(Command.BYE, {"session": self.session}, min(timeout, 2.0))
            except DaemonTimeout:
                log.info("no answer to bye; closing anyway (all messages were confirmed)")
        finally:
            with self._shared.lock:
                self._shared.closing = True
                self._wake_link()
                self._state = State.CLOSED
            self._wake.close(linger=0)
            if self._link.finished.wait(timeout):
                self._context.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # Leaving on an error: that error is the one to see, not a timeout of
        # the close it caused.
        try:
            self.close()
        except CollectordError as failure:
            log.error("closing after %s: %s", type(exc).__name__, failure)

    def __repr__(self) -> str:
        return f"<Client {self.name!r} {self._state.value} session={self.session}>"
