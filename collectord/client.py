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

**Exit.** A process that ends without ``close()`` (stytra never closes its
collector; short scripts rarely do) would lose whatever the I/O thread had
not yet delivered: that thread is a daemon thread, so the interpreter does not
wait for it, and must not (a thread the interpreter waits for is waited for
*before* exit handlers run, so a client nobody closes would hang the exit).
Instead, as ``logging.shutdown`` flushes handlers, one ``atexit`` handler
closes every client of the process still open, each waiting at most its
``exit_timeout`` (``EXIT_TIMEOUT`` by default) for the daemon to confirm what
it holds, all of them at once, and logs what could not be delivered. The
handler holds each open client's connection (``_Connection``: its queue, I/O
thread and sockets), never the ``Client``: a client dropped while open is
still garbage collected, and what it published is still delivered at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import logging
import math
import os
import platform
import secrets
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any

import msgpack
import numpy as np
import zmq

from . import __version__, codec, system
from . import config as config_module
from .errors import (
    ClientClosedError,
    CollectordError,
    DaemonTimeout,
    InvalidPathError,
    MessageTooLargeError,
    UnsupportedValueError,
)
from .link import CLOCK_INTERVAL, Clock, Link, Request, Shared
from .paths import check_file_name, check_name, parse_path
from .protocol import Command, Kind
from .security import ClientSecurity
from .stream import Stream
from .streamfiles import STREAM_DTYPES, StreamError, StreamSpec

__all__ = ["Client", "State"]

log = logging.getLogger("collectord.client")

#: Messages a client keeps until the daemon confirms them; beyond, the oldest go.
DEFAULT_BUFFER = 1_000_000

#: Seconds a client still open when the interpreter exits waits for the daemon
#: to confirm what it holds, unless it was made with ``exit_timeout``. Read at
#: exit, so ``collectord.client.EXIT_TIMEOUT = 30`` anywhere before then
#: applies to every client of the process (the stytra drop-in's too). 5 s is
#: ample for a daemon that is there (confirming a burst takes milliseconds)
#: and covers the client's own recovery from a daemon restarting (a hello is
#: retried after 2 s, an unconfirmed send after 2 s), yet a script run without
#: a daemon ends within seconds instead of appearing to hang.
EXIT_TIMEOUT = 5.0
#: At most this long of a client's exit wait goes to saying ``bye``, once its
#: messages are confirmed (without it the daemon's next stop waits for a
#: client that is gone, for ``barrier_timeout``).
BYE_TIMEOUT = 2.0


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
    are kept for resending. ``exit_timeout`` bounds how long a client still
    open when the interpreter exits waits for the daemon to confirm what it
    holds (None: ``EXIT_TIMEOUT`` as it is at exit; 0: not at all); what is
    not confirmed by then is logged as lost.

    ``clock`` is the clock this process stamps its data with (seconds, a
    float; ``time.time`` by default): a camera process that stamps frames
    with the camera's hardware clock passes a function reading it. The
    client measures that clock's offset from the daemon's at connection and
    every ``clock_interval`` seconds (0: only at connection), in its I/O
    thread, and the daemon records the measurements in the metadata; a
    stream's ``time_column`` is then mapped onto the daemon's clock with
    ``collectord.to_daemon_time``. The clock is read from the I/O thread: it
    must be thread-safe and quick.
    """

    def __init__(
        self,
        name: str,
        data: str | None = None,
        control: str | None = None,
        *,
        config: str | os.PathLike[str] | None = None,
        buffer: int = DEFAULT_BUFFER,
        exit_timeout: float | None = None,
        clock: Callable[[], float] = time.time,
        clock_interval: float = CLOCK_INTERVAL,
    ) -> None:
        self.name = check_name(name, where="client name")
        if exit_timeout is not None and not (0 <= exit_timeout < math.inf):
            raise ValueError(f"exit_timeout must be seconds >= 0, not {exit_timeout!r}")
        if not callable(clock):
            raise TypeError(f"clock must be a function returning seconds, not {clock!r}")
        if not (0 <= clock_interval < math.inf):
            raise ValueError(f"clock_interval must be seconds >= 0, not {clock_interval!r}")
        settings = config_module.load(config)
        self.data_endpoint = data or settings.data
        self.control_endpoint = control or settings.control
        self.session = secrets.token_hex(8)
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
            clock=Clock(clock, clock_interval),
        )
        self._conn = _Connection(
            self.name,
            self.session,
            self.control_endpoint,
            self._shared,
            self._link,
            self._wake,
            self._context,
            exit_timeout,
        )
        self._link.start()
        self._link.ready.wait()
        if self._link.failure is not None:
            self._conn.state = State.CLOSED
            self._wake.close()
            self._context.term()
            raise self._link.failure
        _track(self._conn)

    # -- publishing (never blocks) -------------------------------------------------

    @property
    def state(self) -> State:
        return self._conn.state

    @property
    def exit_timeout(self) -> float | None:
        """Seconds this client waits at interpreter exit if still open (None: ``EXIT_TIMEOUT``)."""
        return self._conn.exit_timeout

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
        time_column: str | None = None,
    ) -> Stream:
        """Declare a stream: a table of rows at ``path``, one ``dtype`` for all columns.

        ``stream.append(row)`` and ``stream.extend(block)`` add rows; they are
        batched into blocks of ``block_rows`` rows (default: about 64 KiB),
        sent when full or when ``flush_interval`` seconds old (finite). At each stop,
        the daemon writes the stream's rows so far into a file beside the
        metadata, and the tree holds a descriptor of it at ``path``.

        ``time_column`` names the column that holds each row's time, on this
        client's ``clock``: the descriptor then names that clock, and
        ``collectord.to_daemon_time`` maps the column onto the daemon's clock.
        """
        if not (0 <= flush_interval < math.inf):
            # Checked here: the I/O thread computes its wait from it, and an
            # infinite one (meant as "only full blocks") ended that thread.
            raise ValueError(f"flush_interval must be seconds >= 0, not {flush_interval!r}")
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
        if time_column is not None:
            declaration["time_column"] = time_column
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

    def _grow_block(self, seq: int, path: str, rows: np.ndarray[Any, Any]) -> bool:
        """Send ``rows`` as block ``seq`` (whose rows they begin with) if that
        block is still waiting for the I/O thread; False if it is not, or if
        the grown block would be larger than the daemon accepts."""
        body = msgpack.packb({"path": path, "rows": len(rows)})
        if len(body) + rows.nbytes > self._link.limits.body:
            return False
        with self._shared.lock:
            state = self._conn.state
            if state is not State.OPEN and state is not State.CLOSING:
                raise ClientClosedError(f"client {self.name!r} is {state.value}")
            self._conn.check_link()
            return self._shared.outbox.grow_block(seq, body, rows)

    def _max_block_rows(self, path: str, row_bytes: int) -> int:
        """Rows of ``path`` that fit in one message within the daemon's size
        limit, beside the block's body (the path and the count of rows)."""
        body = len(msgpack.packb({"path": path, "rows": 2**64 - 1}))
        return max(1, (self._link.limits.body - body) // row_bytes)

    def _check_open(self) -> None:
        state = self._conn.state
        if state is not State.OPEN:
            raise ClientClosedError(f"client {self.name!r} is {state.value}")

    def _publish(self, kind: Kind, body: bytes, raw: Any = None, closing_ok: bool = False) -> int:
        limits = self._link.limits
        size = len(body) if raw is None else len(body) + raw.nbytes
        if size > limits.body:
            raise MessageTooLargeError(
                f"the message is {size} bytes; the daemon accepts at most {limits.body}"
            )
        shared = self._shared
        conn = self._conn
        with shared.lock:
            state = conn.state
            if state is not State.OPEN and not (closing_ok and state is State.CLOSING):
                raise ClientClosedError(f"client {self.name!r} is {state.value}")
            conn.check_link()
            shared.seq += 1
            seq = shared.seq
            if raw is None:
                shared.outbox.add(seq, kind.value, body, limits.batch)
            else:
                shared.outbox.add_block(seq, body, raw)
            if shared.sleeping:
                conn.wake_link()
        return seq

    # -- requests (block the caller, up to ``timeout``) ----------------------------

    def _request(self, command: Command, fields: dict[str, Any], timeout: float) -> dict[str, Any]:
        return self._conn.request(command, fields, timeout)

    def sync(self, timeout: float = 10.0) -> None:
        """Return once the daemon has journaled every message this client sent.

        Rows appended to streams are sent first.
        """
        self._conn.sync(timeout)

    def stop(self, reason: str = "", timeout: float = 30.0) -> str:
        """End the experiment; return the path of its saved metadata file.

        The daemon first waits for everything this client and every other
        connected client has sent (its stop barrier). A stop while a required
        source (``collectord run --require``) is missing saves all the same,
        and logs a warning naming it.

        If the daemon dies before it answers and comes back within
        ``timeout`` (restarted by hand or by a supervisor), the stop is sent
        again under the id it was given, and returns the experiment it saved
        (or, if it died before the stop was journaled, the one it saves now).
        """
        self._conn.flush_streams()
        fields = {
            "reason": reason or f"stop() from {self.name}",
            "session": self.session,
            "seq": self._shared.seq,
            # Sent again, with this id, if the daemon dies before answering: a
            # restarted daemon that saved it answers with that save.
            "stop_id": secrets.token_hex(8),
        }
        result = self._request(Command.STOP, fields, timeout)
        if result.get("missing"):
            log.warning(
                "saved while required source(s) were missing: %s", ", ".join(result["missing"])
            )
        return str(result["path"])

    def restore(self, node: str, timeout: float = 10.0) -> dict[str, Any]:
        """The values under ``node`` to take up: each parameter as set in this
        experiment (by any process, or by this one before it restarted), else
        as the last config holds it; {} if there are none. They count as in
        force in the experiment, with these values."""
        parse_path(node)
        fields = {"node": node, "session": self.session}
        return dict(self._request(Command.RESTORE, fields, timeout)["values"])

    def save_config(self, timeout: float = 10.0) -> str:
        """Write the last config now, without ending the experiment; return its path.

        Parameters this client sent are delivered first (the daemon applies
        a client's messages in order), so the file holds them.
        """
        self.sync(timeout)
        fields = {"session": self.session}
        return str(self._request(Command.SAVE_CONFIG, fields, timeout)["last_config"])

    def name_experiment(self, name: str, timeout: float = 10.0) -> None:
        """Name the current experiment: its folder becomes ``YYMMDD/NAME``.

        ``name`` follows the path rules for one name (no ``/``, ``..`` ...).
        """
        check_file_name(name, where="experiment name")
        self._request(Command.NAME, {"name": name, "session": self.session}, timeout)

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        """The daemon's status, as ``collectord status --json`` prints it."""
        return self._request(Command.STATUS, {}, timeout)

    @property
    def unconfirmed(self) -> int:
        """Messages sent but not yet confirmed by the daemon (approximate)."""
        return self._conn.unconfirmed()

    @property
    def overflowed(self) -> int:
        """Messages dropped because more than ``buffer`` were unconfirmed."""
        return self._link.overflowed

    # -- closing -------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Deliver everything sent, say goodbye, and release the sockets.

        Raises ``DaemonTimeout`` if the daemon did not confirm delivery in
        ``timeout`` seconds; the client is closed all the same. A client still
        open when the interpreter exits is closed then (see ``exit_timeout``).
        """
        self._conn.close(timeout)

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
        return f"<Client {self.name!r} {self._conn.state.value} session={self.session}>"


class _Connection:
    """A client's delivery machinery, without the ``Client``: what exit handling holds.

    It has everything that delivering and closing need (the queue shared with
    the I/O thread, the thread, the sockets, the lifecycle state), so that
    ``Client.close()`` and the exit handler run the same steps, and so that the
    exit handler never holds a ``Client``: a client dropped while open is
    collected as before (its I/O thread already kept all of this alive), and
    what it published is still delivered at exit.
    """

    def __init__(
        self,
        name: str,
        session: str,
        control_endpoint: str,
        shared: Shared,
        link: Link,
        wake: zmq.Socket[Any],
        context: zmq.Context[Any],
        exit_timeout: float | None,
    ) -> None:
        self.name = name
        self.session = session
        self.control_endpoint = control_endpoint
        self.shared = shared
        self.link = link
        self.wake = wake
        self.context = context
        self.exit_timeout = exit_timeout
        self.state = State.OPEN  # changed with shared.lock held
        #: A forked child inherits this object but not the I/O thread behind it.
        self.pid = os.getpid()

    # -- requests --------------------------------------------------------------------

    def check_link(self) -> None:
        """Refuse to queue what nobody would send; call with the lock held."""
        if self.shared.stopped:
            raise ClientClosedError(
                f"client {self.name!r} cannot reach the daemon any more: its I/O thread "
                f"stopped ({self.link.failure or 'see the log'})"
            )

    def wake_link(self) -> None:
        """Wake the I/O thread if it sleeps; call with the lock held."""
        if self.shared.sleeping:
            self.shared.sleeping = False
            # zmq.Again: the I/O thread has stopped and closed its end of the
            # pipe, and there is nobody to wake.
            with contextlib.suppress(zmq.Again):
                self.wake.send(b"", zmq.NOBLOCK)

    def submit(self, command: Command, fields: dict[str, Any]) -> Future[dict[str, Any]]:
        """Hand a request to the I/O thread; its answer completes the future."""
        future: Future[dict[str, Any]] = Future()
        with self.shared.lock:
            if self.state is State.CLOSED:
                raise ClientClosedError(f"client {self.name!r} is closed")
            self.check_link()
            self.shared.requests.append(Request(command, fields, future))
            self.wake_link()
        return future

    def request(self, command: Command, fields: dict[str, Any], timeout: float) -> dict[str, Any]:
        return self.answer(self.submit(command, fields), command, timeout)

    def answer(
        self, future: Future[dict[str, Any]], command: Command, timeout: float
    ) -> dict[str, Any]:
        """The answer to a request, or ``DaemonTimeout`` if none came in time.

        Giving up cancels the request: if it still waits to be sent (a daemon
        long away, ``Link._take_requests``), it never is, so that a ``stop``
        its caller was told timed out does not stop an experiment later.
        """
        try:
            return future.result(timeout)
        except FutureTimeout:
            if not future.cancel():  # answered meanwhile
                return future.result(0)
            if self.link.subscribed:
                hint = "is `collectord run` running there?"
            else:  # the daemon may answer requests, yet never see this client's messages
                hint = (
                    f"nothing has subscribed to this client's messages at "
                    f"{self.link.data_endpoint} either: is `collectord run` running, "
                    "with that data endpoint (its --data)?"
                )
            raise DaemonTimeout(
                f"no answer to {command.value!r} from the daemon at {self.control_endpoint} "
                f"within {timeout} s: {hint}"
            ) from None

    def flush_streams(self) -> None:
        for stream in list(self.shared.streams):
            stream.flush()

    def sync_future(self) -> Future[dict[str, Any]] | None:
        """Send the streams' rows and ask for a sync: None if all is confirmed already."""
        if self.state is State.CLOSED:
            raise ClientClosedError(f"client {self.name!r} is closed")
        self.flush_streams()
        seq = self.shared.seq
        if self.link.acked >= seq:
            return None  # the daemon already confirmed every message (journaled)
        return self.submit(Command.SYNC, {"session": self.session, "seq": seq})

    def sync(self, timeout: float) -> None:
        future = self.sync_future()
        if future is not None:
            self.answer(future, Command.SYNC, timeout)

    def unconfirmed(self) -> int:
        with self.shared.lock:  # publishing threads append to the outbox
            waiting = len(self.shared.outbox)
        return len(self.link.unacked) + waiting

    # -- closing -----------------------------------------------------------------------

    def begin_close(self) -> bool:
        """OPEN to CLOSING: no more publishing (stream rows excepted). False if not open."""
        with self.shared.lock:
            if self.state is not State.OPEN:
                return False
            self.state = State.CLOSING
        return True

    def finish(self, timeout: float) -> None:
        """Stop the I/O thread and release the sockets; whatever is unconfirmed stays lost."""
        if self.pid != os.getpid():
            # A forked child's copy: the thread and the sockets are its parent's.
            self.state = State.CLOSED
            _untrack(self)
            return
        with self.shared.lock:
            self.shared.closing = True
            self.wake_link()
            self.state = State.CLOSED
        _untrack(self)
        self.wake.close(linger=0)
        if self.link.finished.wait(timeout):
            self.context.term()

    def close(self, timeout: float) -> None:
        """``Client.close``: deliver, say bye, finish."""
        if not self.begin_close():
            return
        try:
            self.sync(timeout)
            try:
                # Best effort: without it the daemon only waits for this client at
                # its next stop for barrier_timeout; everything sent is delivered.
                self.request(Command.BYE, {"session": self.session}, min(timeout, BYE_TIMEOUT))
            except (DaemonTimeout, ClientClosedError):
                log.info("no answer to bye; closing anyway (all messages were confirmed)")
        finally:
            self.finish(timeout)

    def exit_wait(self) -> float:
        """Seconds to wait at exit: the client's ``exit_timeout``, or ``EXIT_TIMEOUT`` now."""
        return EXIT_TIMEOUT if self.exit_timeout is None else self.exit_timeout


# -- closing at interpreter exit -------------------------------------------------------
#
# The model is logging's: one handler registered with atexit at import, which
# closes what is still open. It runs after the main thread has ended (and after
# every non-daemon thread has been joined) but while daemon threads, among them
# every client's I/O thread and every mirror's thread, still run; they are
# stopped abruptly only after the exit handlers. It starts no thread: at exit,
# Python 3.12 and later may refuse to start one.

#: Seconds the exit handler gives an I/O thread to stop once told to.
_FINISH_TIMEOUT = 1.0

_exit_lock = threading.Lock()
#: Connections of this process's clients not yet closed (their Client may be gone).
_open: set[_Connection] = set()
#: Objects closed at exit before the clients deliver, held weakly (``close_first_at_exit``).
_close_first: weakref.WeakSet[Any] = weakref.WeakSet()


def _track(connection: _Connection) -> None:
    with _exit_lock:
        _open.add(connection)


def _untrack(connection: _Connection) -> None:
    with _exit_lock:
        _open.discard(connection)


def _forked() -> None:
    """In a forked child: its parent's clients have no I/O thread here, and a
    lock held by a thread of the parent at the fork would never be released.
    Their calls now refuse, saying why, instead of queueing messages that
    nobody sends (or waiting for that lock for ever)."""
    global _exit_lock
    _exit_lock = threading.Lock()
    for connection in _open:
        connection.shared.lock = threading.Lock()
        for stream in connection.shared.streams:
            stream._lock = threading.Lock()
        connection.shared.stopped = True
        connection.link.failure = ClientClosedError(
            f"it was made in process {connection.pid}, and this process is a fork of it: "
            "a client is not fork-safe, make one in this process"
        )


system.after_fork_in_child(_forked)


def close_first_at_exit(closer: Any) -> None:
    """Have ``closer.close()`` run at interpreter exit before the clients deliver.

    For what publishes through a client (``TreeMirror``): its last changes
    must be handed to the client before the client's messages are delivered
    and the client closed. ``closer`` is held weakly: being registered never
    keeps it alive.
    """
    with _exit_lock:
        _close_first.add(closer)


def _close_at_exit() -> None:
    """Deliver what every client of this process still open holds, then close them.

    Every client waits at most its ``exit_timeout`` (``EXIT_TIMEOUT``), all at
    once: every sync is asked for before any answer is awaited, so the exit
    takes at most the longest timeout, not their sum. What a client could not
    deliver is logged: its messages are lost when the process ends.
    """
    with _exit_lock:
        closers = list(_close_first)
    for closer in closers:
        try:
            closer.close()
        except Exception:
            log.exception("could not close %r at exit", closer)
    with _exit_lock:
        # A forked child inherits its parent's connections but not their threads.
        connections = [c for c in _open if c.pid == os.getpid()]
    started = time.monotonic()
    closing: list[tuple[_Connection, Future[dict[str, Any]] | None, float]] = []
    for connection in connections:
        if not connection.begin_close():
            continue  # being closed by another thread
        deadline = started + connection.exit_wait()
        if connection.link.finished.is_set():  # its I/O thread failed: nobody to wait for
            stopped = connection.link.failure or ClientClosedError("its I/O thread stopped")
            future: Future[dict[str, Any]] | None = _failed(stopped)
        else:
            try:
                future = connection.sync_future()
            except CollectordError as exc:  # a stream's rows could not be queued
                future = _failed(exc)
        closing.append((connection, future, deadline))
    failures: dict[_Connection, str] = {}
    try:
        byes: list[tuple[_Connection, Future[dict[str, Any]], float]] = []
        for connection, future, deadline in closing:
            failure = _outcome(future, deadline)
            if failure is None:
                bye = connection.submit(Command.BYE, {"session": connection.session})
                byes.append((connection, bye, min(deadline, time.monotonic() + BYE_TIMEOUT)))
            else:
                failures[connection] = failure
        for _connection, bye, deadline in byes:
            _outcome(bye, deadline)  # best effort, as in close()
    except KeyboardInterrupt:
        log.warning("collectord: exit interrupted; not waiting for the daemon any longer")
        for connection, _future, _deadline in closing:
            failures.setdefault(connection, "the exit was interrupted")
    finally:
        for connection, _future, _deadline in closing:
            connection.finish(_FINISH_TIMEOUT)
        # Counted once the I/O threads have stopped: nothing moves any more.
        for connection, failure in failures.items():
            _report(connection, failure)


def _failed(exc: BaseException) -> Future[dict[str, Any]]:
    future: Future[dict[str, Any]] = Future()
    future.set_exception(exc)
    return future


def _outcome(future: Future[dict[str, Any]] | None, deadline: float) -> str | None:
    """Wait for ``future`` until ``deadline``: None if it succeeded, else why not."""
    if future is None:
        return None
    try:
        future.result(max(0.0, deadline - time.monotonic()))
    except FutureTimeout:
        return "timeout"
    except Exception as exc:  # the I/O thread failed, or the daemon refused
        return str(exc) or type(exc).__name__
    return None


def _report(connection: _Connection, failure: str) -> None:
    """Log how many of ``connection``'s messages the daemon never confirmed."""
    lost = connection.unconfirmed()
    if not lost:
        return  # confirmed after all, by the time we looked
    if failure == "timeout":
        failure = (
            f"the daemon at {connection.control_endpoint} did not confirm them within "
            f"{connection.exit_wait():g} s of exit (Client(exit_timeout=...) or "
            "collectord.client.EXIT_TIMEOUT waits longer)"
        )
    dropped = connection.link.overflowed
    earlier = f"; {dropped} more were dropped earlier, the buffer being full" if dropped else ""
    log.error(
        "collectord client %r: %d message%s not delivered: %s%s",
        connection.name,
        lost,
        "" if lost == 1 else "s",
        failure,
        earlier,
    )


atexit.register(_close_at_exit)
