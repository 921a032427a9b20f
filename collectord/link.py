"""The client's I/O thread: it alone touches the client's ZeroMQ sockets.

Publishing calls (``set_params``, ``add_data``) only append encoded bodies to
the open batch of ``Shared.outbox`` (``outbox.py``) and, if this thread is
asleep, wake it: they never wait for the network. This thread then

* waits for the daemon's subscription before publishing (XPUB), so no
  message is dropped by ZeroMQ's slow-joiner effect, and uses
  ``XPUB_NODROP``, so a full queue delays messages instead of dropping them;
* keeps every message until the daemon confirms it (``received`` in replies),
  resends on a ``resend`` notice, and after the daemon comes back (a new
  subscription) introduces itself again and resends what is unconfirmed;
* carries requests (``sync``, ``stop``, ``restore``, ``status``) on a DEALER
  socket whose routing id is the session, answers ``barrier`` notices;
* measures the client's clock against the daemon's (``clock`` exchanges in
  bursts, the best reported with ``offset``: ``clocks.Probe`` says when), so
  that publishing never waits for it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from . import codec
from .clocks import Probe
from .errors import (
    ClientClosedError,
    CollectordError,
    RequestError,
    TransportError,
    UnsupportedValueError,
)
from .outbox import Batch, Limits, Outbox, Unconfirmed
from .protocol import PROTOCOL_VERSION, Command, Kind, Notice
from .security import ClientSecurity

if TYPE_CHECKING:
    from .stream import Stream

log = logging.getLogger("collectord.client")

#: How often unconfirmed messages prompt a cheap "how far are you?" (seconds).
ACK_INTERVAL = 0.25
#: Seconds without progress on sent-but-unconfirmed messages before resending them
#: (a safety net: the daemon normally asks with a ``resend`` notice).
STALL_TIMEOUT = 2.0
#: Seconds before an unanswered hello is sent again.
HELLO_RETRY = 2.0
#: Requests the control socket queues for a daemon that is not there (its
#: high water mark); one more is not sent (``Link._send_request``).
CONTROL_QUEUE = 1000
#: The id of a request that could not be queued (see ``_send_request``);
#: request ids start at 1.
UNSENT = 0
#: Requests the link may resend after the daemon comes back: done twice, they
#: do what they did once (a bye the killed daemon never journaled is said again).
IDEMPOTENT = {Command.SYNC, Command.RESTORE, Command.STATUS, Command.BYE}
#: Seconds between two measurements of the client's clock, by default.
CLOCK_INTERVAL = 5.0


@dataclasses.dataclass(frozen=True)
class Clock:
    """The clock a client stamps its data with, and how often to measure it."""

    read: Callable[[], float]
    interval: float


@dataclasses.dataclass
class Request:
    """A caller's request; its caller waits on ``future``, and cancels it on
    giving up (``_Connection.answer``): a request not sent by then never is."""

    command: Command
    fields: dict[str, Any]
    future: Future[dict[str, Any]]

    def answer(self, result: dict[str, Any]) -> None:
        with contextlib.suppress(InvalidStateError):  # its caller gave up meanwhile
            self.future.set_result(result)

    def fail(self, error: BaseException) -> None:
        with contextlib.suppress(InvalidStateError):  # its caller gave up meanwhile
            self.future.set_exception(error)


class Shared:
    """State shared between caller threads and the link; guarded by ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seq = 0  # last sequence number handed out
        self.outbox = Outbox()
        self.requests: collections.deque[Request] = collections.deque()
        self.streams: list[Stream] = []  # their partial blocks are flushed on time
        self.sleeping = False  # the link is (about to be) blocked in poll
        self.closing = False  # no more messages will come; finish and exit
        self.stopped = False  # the link has ended: nothing more is sent or answered


class Link(threading.Thread):
    def __init__(
        self,
        shared: Shared,
        wake: zmq.Socket[Any],
        context: zmq.Context[Any],
        *,
        data: str,
        control: str,
        session: str,
        hello: dict[str, Any],
        buffer_limit: int,
        max_message_bytes: int,
        security: ClientSecurity | None,
        clock: Clock,
    ) -> None:
        super().__init__(name=f"collectord-link-{hello['name']}", daemon=True)
        self.shared = shared
        self.security = security
        self.limits = Limits.of(max_message_bytes)
        self.wake = wake
        self.context = context
        self.data_endpoint = data
        self.control_endpoint = control
        self.session = session
        self.hello_fields = hello
        self._header = {
            "v": PROTOCOL_VERSION,
            "source": hello["name"],
            "session": session,
            "resends": True,  # this client keeps unconfirmed messages
        }
        self.ready = threading.Event()
        self.failure: Exception | None = None
        self.unacked = Unconfirmed(buffer_limit)
        self.sent = 0  # highest seq handed to the data socket
        self.acked = 0  # highest seq the daemon confirmed
        self.overflowed = 0  # messages dropped because the buffer was full
        self.dropped_upto = 0  # the newest of them
        self._dropped_reported = 0
        self.subscribed = False
        self.introduced = False  # hello answered since the last subscription
        #: The daemon's hello said a stop sent again gets its save (``_repeatable``).
        self.stop_ids = False
        #: The control socket has a connection to the daemon (its monitor says).
        self.connected = False
        self.finished = threading.Event()
        self._ids = itertools.count(1)
        self._pending: dict[int, Request] = {}
        #: Callers' requests the control socket's full queue did not take yet.
        self._unsent: collections.deque[Request] = collections.deque()
        self._hello_id: int | None = None
        self._hello_at = 0.0
        self._ack_id: int | None = None
        self._ack_at = 0.0
        self._stalled_since: float | None = None
        self._next_stream_flush: float | None = None
        self._busy = False  # had messages to move in the last round
        self.clock = clock
        self.probe = Probe(clock.interval)
        self._clock_id: int | None = None

    # -- lifecycle ---------------------------------------------------------------

    def run(self) -> None:
        pub = self.context.socket(zmq.XPUB)
        dealer = self.context.socket(zmq.DEALER)
        monitor: zmq.Socket[Any] | None = None
        try:
            pub.setsockopt(zmq.XPUB_NODROP, 1)
            # A connecting socket keeps its pipe across reconnections, so without
            # VERBOSE a restarted daemon's subscription would be filtered out as
            # a duplicate and we would never learn that it came back.
            pub.setsockopt(zmq.XPUB_VERBOSE, 1)
            pub.setsockopt(zmq.SNDHWM, 10_000)
            dealer.setsockopt(zmq.SNDHWM, CONTROL_QUEUE)
            dealer.setsockopt(zmq.ROUTING_ID, self.session.encode())
            for sock in (pub, dealer):
                if self.security is not None:
                    self.security.apply(sock)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
                sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
            monitor = dealer.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
            pub.connect(self.data_endpoint)
            dealer.connect(self.control_endpoint)
        except zmq.ZMQError as exc:
            self.failure = TransportError(
                f"cannot connect to {self.data_endpoint} / {self.control_endpoint}: {exc}"
            )
            for sock in (pub, dealer, self.wake, monitor):
                if sock is not None:
                    sock.close(linger=0)  # or the client's context.term() would wait forever
            self.ready.set()
            self.finished.set()
            return
        self.pub, self.dealer, self.monitor = pub, dealer, monitor
        self.ready.set()
        try:
            self._loop()
        except Exception as exc:  # a bug here must not hang callers forever
            log.exception("collectord client link failed")
            self.failure = exc
        finally:
            # Under the lock: from now on requests are refused, not queued; and
            # finish(), which sets ``closing`` and then wakes this thread holding
            # the lock, cannot find this end of the wake-up pipe closed by a
            # thread that saw ``closing`` first (close() failed on it with
            # zmq.Again, about once in a thousand closes on a loaded machine).
            with self.shared.lock:
                self.shared.stopped = True
                unanswered = [*self._pending.values(), *self._unsent, *self.shared.requests]
                self.shared.requests.clear()
            for request in unanswered:
                request.fail(
                    self.failure or ClientClosedError("the client closed before an answer")
                )
            dealer.disable_monitor()
            monitor.close(linger=0)
            pub.close()
            dealer.close()
            self.wake.close()
            self.finished.set()

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.wake, zmq.POLLIN)
        poller.register(self.pub, zmq.POLLIN)
        poller.register(self.dealer, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        self._send_hello()
        while True:
            ready = dict(poller.poll(self._timeout()))
            if self.wake in ready:
                while self._recv(self.wake) is not None:
                    pass
            if self.pub in ready:
                self._on_subscription()
            if self.dealer in ready:
                self._on_control()
            if self.monitor in ready:
                self._on_control_events()
            self._take_requests()
            self._flush_due_streams()
            self._pump()
            self._ask_progress()
            self._retry_hello()
            self._measure_clock()
            if self._done():
                return

    def _timeout(self) -> int:
        shared = self.shared
        if self._busy:
            # Just had work: stay awake a moment without asking for wake-ups, so
            # a publishing burst costs the caller no socket send per message.
            self._busy = False
            return 0 if shared.outbox or shared.requests else 1
        shared.sleeping = True
        if shared.outbox or shared.requests:
            shared.sleeping = False
            return 0
        if self.subscribed and self.introduced and self._backlog():
            return 1  # the data socket was full: try again soon
        timeout = 50 if self.unacked or self._pending or self._unsent else 200
        if self._next_stream_flush is not None:
            wait = int((self._next_stream_flush - time.monotonic()) * 1000) + 1
            timeout = max(0, min(timeout, wait))
        return timeout

    def _flush_due_streams(self) -> None:
        """Send partial stream blocks that have waited ``flush_interval``."""
        now = time.monotonic()
        due = [at for at in self._flush_streams(now) if at is not None]
        self._next_stream_flush = min(due) if due else None

    def _flush_streams(self, now: float | None) -> list[float | None]:
        """Flush each stream's partial block (all, or those due at ``now``).

        A stream that cannot send (its client is closing) keeps its rows; this
        thread must not die of it.
        """
        next_due: list[float | None] = []
        for stream in list(self.shared.streams):
            try:
                if now is None:
                    stream.flush()
                else:
                    next_due.append(stream.flush_if_due(now))
            except CollectordError as exc:
                log.error("could not send rows of %s: %s", stream.path, exc)
        return next_due

    def _done(self) -> bool:
        # close() has already synced and said bye (or given up): nothing is left
        # to wait for, and requests still pending fail in run()'s finally.
        return self.shared.closing

    @staticmethod
    def _recv(sock: zmq.Socket[Any]) -> list[bytes] | None:
        try:
            return sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None

    # -- data --------------------------------------------------------------------

    def _backlog(self) -> bool:
        return self.unacked.newest > self.sent

    def _on_subscription(self) -> None:
        while (frames := self._recv(self.pub)) is not None:
            event = frames[0][:1]
            if event == b"\x01":
                log.debug("daemon subscribed")
                self.subscribed = True
                # A new subscription: the daemon (re)started. Introduce ourselves
                # to it, even if a hello to an earlier one went unanswered.
                self.introduced = False
                self._send_hello()
            elif event == b"\x00":
                log.debug("daemon unsubscribed")
                self.subscribed = False
                self.introduced = False

    def _pump(self) -> None:
        """Move new messages to the unconfirmed buffer; send what the daemon lacks."""
        shared = self.shared
        if shared.outbox:
            self._busy = True
            with shared.lock:
                taken = shared.outbox.take()
            self.unacked.extend(taken)
        dropped, upto = self.unacked.trim()
        if dropped:
            if self.overflowed == 0:
                log.warning(
                    "more than %d messages unconfirmed: dropping the oldest", self.unacked.limit
                )
            self.overflowed += dropped
            self.dropped_upto = upto
        if not (self.subscribed and self.introduced):
            return
        if self.dropped_upto > max(self._dropped_reported, self.acked):
            # Tell the daemon not to wait for what we no longer have.
            fields = {"session": self.session, "upto": self.dropped_upto}
            if self._send_request(Command.DROPPED, fields) != UNSENT:
                self._dropped_reported = self.dropped_upto
        for batch in list(self.unacked.after(self.sent)):
            # A batch partly sent (a resend from its middle) goes whole: the daemon
            # drops the messages it already has.
            for frames, zero_copy in self._frames(batch):
                try:
                    self.pub.send_multipart(frames, zmq.NOBLOCK, copy=not zero_copy)
                except zmq.Again:
                    return
            self.sent = batch.last

    def _frames(self, batch: Batch) -> Iterator[tuple[list[Any], bool]]:
        """The ZeroMQ messages that carry ``batch``, and whether to send them
        without copying (a block's rows: the buffer is handed over)."""
        if batch.rows is not None:
            header = codec.pack({**self._header, "kind": Kind.BLOCK.value, "seq": batch.first})
            if batch.size + len(header) > self.limits.message:
                # Queued before the daemon told us its limit. Sent whole, it would
                # make ZeroMQ drop the connection, again at every resend; sent as
                # its header alone, the daemon rejects it and counts it.
                log.error("block %d is larger than the daemon accepts; dropped", batch.first)
                yield [header], False
            else:
                yield [header, batch.payload, batch.rows], True
            return
        limits = self.limits
        # Batched before the daemon told us a smaller limit: split, and what
        # cannot fit alone goes without its body, for the daemon to reject.
        pieces = [batch] if limits.fits(batch) else batch.split(limits.batch)
        for piece in pieces:
            payload = piece.payload if limits.fits(piece) else b""
            header = codec.pack(
                {
                    **self._header,
                    "kind": Kind.BATCH.value,
                    "seq": piece.first,
                    "kinds": piece.kinds,
                }
            )
            yield [header, payload], False

    def _check_stall(self) -> None:
        """Resend if what we sent has stayed unconfirmed for ``STALL_TIMEOUT``."""
        if self.sent <= self.acked:
            self._stalled_since = None
            return
        now = time.monotonic()
        if self._stalled_since is None:
            self._stalled_since = now
        elif now - self._stalled_since > STALL_TIMEOUT:
            log.debug("no progress since message %d: resending", self.acked)
            self.sent = self.acked
            self._stalled_since = None

    def _confirmed(self, received: int) -> None:
        if received > self.acked:
            self.acked = received
            self._stalled_since = None
        self.unacked.confirm(self.acked)
        if self.sent < self.acked:
            self.sent = self.acked

    def _ask_progress(self) -> None:
        """While messages are unconfirmed, ask now and then how far the daemon is."""
        if not self.unacked or self._ack_id is not None or not self.introduced:
            return
        now = time.monotonic()
        if now - self._ack_at < ACK_INTERVAL:
            return
        self._ack_at = now
        asked = self._send_request(Command.SYNC, {"session": self.session, "seq": 0})
        self._ack_id = None if asked == UNSENT else asked

    # -- control -------------------------------------------------------------------

    def _send_request(self, command: Command, fields: dict[str, Any]) -> int:
        """Queue a request for the daemon; its id, or ``UNSENT``.

        The control socket queues what it cannot deliver yet, up to
        ``CONTROL_QUEUE`` messages, and a daemon away long enough lets the
        queue fill. A blocking send would then stop this thread, and with it
        the bound on what publishing may buffer; so a request that does not
        fit is not sent, and each caller says what that means for it.
        """
        request_id = next(self._ids)
        message = {"v": PROTOCOL_VERSION, "cmd": command.value, "id": request_id, **fields}
        try:
            self.dealer.send_multipart([b"", codec.pack(message)], zmq.NOBLOCK)
        except zmq.Again:
            return UNSENT
        return request_id

    def _send_hello(self) -> None:
        fields = {**self.hello_fields, "session": self.session, "confirmed": self.acked}
        self._hello_id = self._send_request(Command.HELLO, fields)  # UNSENT: retried
        self._hello_at = time.monotonic()

    def _retry_hello(self) -> None:
        """A hello the daemon never answered (it died first) is sent again.

        Only while subscribed: without a daemon there is nobody to answer,
        and the daemon's subscription, when it comes, brings a hello anyway.
        """
        if (
            self.subscribed
            and not self.introduced
            and self._hello_id is not None
            and time.monotonic() - self._hello_at > HELLO_RETRY
        ):
            self._send_hello()

    def _measure_clock(self) -> None:
        """Send the next ``clock`` exchange if one is due (``clocks.Probe``)."""
        if not self.introduced or not self.probe.want(time.monotonic()):
            return
        t1 = self._read_clock()
        if t1 is None:
            return
        fields = {"t1": t1, "session": self.session}
        self._clock_id = self._send_request(Command.CLOCK, fields)
        self.probe.sent(t1, time.monotonic())

    def _read_clock(self) -> float | None:
        """The client's clock; None, and no more measuring, if it fails."""
        try:
            value = float(self.clock.read())
        except Exception as exc:  # the user's clock must not end this thread
            log.error("reading the clock failed (%r): its offset is not measured", exc)
            self.probe.refused()
            return None
        if not math.isfinite(value):
            log.error("the clock read %r: its offset is not measured", value)
            self.probe.refused()
            return None
        return value

    def _on_clock_reply(self, message: dict[str, Any]) -> None:
        t4 = self._read_clock()
        self._clock_id = None
        result = message.get("result") if message.get("ok") else None
        if not isinstance(result, dict):
            error = message.get("error") or {}
            log.info("the daemon does not measure clocks: %s", error.get("message", error))
            self.probe.refused()
            return
        t2, t3 = result.get("t2"), result.get("t3")
        if t4 is None or not isinstance(t2, float) or not isinstance(t3, float):
            return
        if not self.introduced:
            # The daemon went away meanwhile: a new one would not know this
            # session before its hello. The next hello begins a new burst.
            return
        sample = self.probe.replied(t2, t3, t4, time.monotonic())
        if sample is not None:
            # Not awaited: a report lost with a dying daemon is one sample fewer.
            self._send_request(Command.OFFSET, {"session": self.session, **sample._asdict()})

    def _take_requests(self) -> None:
        """Send the callers' requests, in order: first those that wait for room
        in the control socket's queue (``_send_request``), or for the daemon
        to answer our hello (``_may_send``). A request whose caller gave up
        before it was sent is dropped."""
        while self._unsent:
            request = self._unsent[0]
            if not request.future.cancelled():
                if not self._may_send(request):
                    break
                request_id = self._send_caller_request(request)
                if request_id == UNSENT:
                    break
                if request_id is not None:
                    self._pending[request_id] = request
            self._unsent.popleft()
        while self.shared.requests:
            request = self.shared.requests.popleft()
            if request.future.cancelled():
                continue
            if self._unsent or not self._may_send(request):  # not before those that wait
                self._hold(request)
                continue
            request_id = self._send_caller_request(request)
            if request_id is not None:
                self._await(request_id, request)

    def _send_caller_request(self, request: Request) -> int | None:
        """``_send_request`` of a caller's request; None if it failed instead.

        A field the caller passed cannot be encoded (``stop(reason=...)`` of
        another type than text): that call fails, not this thread, which
        would have left it and every later call unanswered.
        """
        try:
            return self._send_request(request.command, request.fields)
        except UnsupportedValueError as exc:
            request.fail(exc)
            return None

    def _may_send(self, request: Request) -> bool:
        """Whether ``request`` may go to the control socket now.

        What the socket takes while it has no connection to the daemon waits
        in its queue and goes to the daemon when it comes, whether or not its
        caller still waits: a ``stop`` whose caller was told it timed out
        would end an experiment then. So a request that does something if
        done (not ``IDEMPOTENT``) waits here instead until the socket is
        connected, and a caller that gives up withdraws it.
        """
        return self.connected or request.command in IDEMPOTENT

    def _on_control_events(self) -> None:
        """The control socket's monitor: whether it is connected to the daemon.

        A reconnection of the control socket alone (its heartbeat timed out on
        a slow network, the data socket's connection held) loses the replies
        sent meanwhile: the daemon, the same one, is sent again what may be
        (a restarted one is, once it answers our hello).
        """
        while (frames := self._recv(self.monitor)) is not None:
            try:
                event = parse_monitor_message(frames)["event"]
            except Exception:  # a malformed event must not end this thread
                log.exception("unreadable event from the control socket's monitor")
                continue
            if event == zmq.EVENT_CONNECTED:
                if not self.connected and self.introduced:
                    self._resend_pending()
                self.connected = True
            elif event == zmq.EVENT_DISCONNECTED:
                self.connected = False

    def _await(self, request_id: int, request: Request) -> None:
        """Wait for the answer to ``request``, or for room to send it."""
        if request_id == UNSENT:
            self._hold(request)
        else:
            self._pending[request_id] = request

    def _hold(self, request: Request) -> None:
        """Keep ``request`` until the control socket's queue has room. What is
        kept is bounded by the callers still waiting: the requests of those
        that gave up are dropped as the list grows."""
        self._unsent.append(request)
        if len(self._unsent) > CONTROL_QUEUE:
            self._unsent = collections.deque(r for r in self._unsent if not r.future.cancelled())

    def _on_control(self) -> None:
        while (frames := self._recv(self.dealer)) is not None:
            try:
                message = codec.unpack(frames[-1], codec.DAEMON_DEPTH)
            except codec.DecodeError as exc:
                log.error("unreadable message from the daemon: %s", exc)
                continue
            if not isinstance(message, dict):
                continue
            try:
                if "notice" in message:
                    self._on_notice(message)
                else:
                    self._on_reply(message)
            except (TypeError, ValueError) as exc:
                # A field of a type this client does not expect (a daemon of
                # another version): the message is skipped, not this thread's end.
                log.error(
                    "a message from the daemon at %s could not be used (%s): %.200r",
                    self.control_endpoint,
                    exc,
                    message,
                )

    def _on_notice(self, message: dict[str, Any]) -> None:
        kind = message.get("notice")
        if kind == Notice.BARRIER.value:
            self._flush_streams(None)
            self._pump()
            fields = {
                "session": self.session,
                "seq": self.shared.seq,
                "barrier": message.get("barrier", 0),
            }
            self._send_request(Command.SENT, fields)
        elif kind == Notice.RESEND.value:
            resend_from = message.get("from")
            if isinstance(resend_from, int) and resend_from - 1 < self.sent:
                self.sent = max(resend_from - 1, self.acked)

    def _on_reply(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        if request_id is not None and request_id == self._clock_id:
            self._on_clock_reply(message)
            return
        result = message.get("result") if message.get("ok") else None
        if request_id == self._hello_id:
            self._hello_id = None
            if isinstance(result, dict):
                self._confirmed(int(result.get("received", 0)))
                # Whatever we sent before this introduction may have died with the
                # previous daemon: send everything unconfirmed again (duplicates
                # are dropped by the daemon).
                self.sent = self.acked
                self._dropped_reported = 0  # a restarted daemon may not know
                self.limits = Limits.of(int(result.get("max_message_bytes", self.limits.message)))
                self.stop_ids = result.get("stop_ids") is True
                self.introduced = True
                self._resend_pending()
                self._clock_id = None
                self.probe.restart(time.monotonic())
            else:
                error = message.get("error") or {}
                log.error(
                    "the daemon at %s refused this client's hello (%s): what it publishes "
                    "is not delivered until the daemon restarts",
                    self.control_endpoint,
                    error.get("message", error),
                )
            return
        if request_id == self._ack_id:
            self._ack_id = None
            if isinstance(result, dict):
                self._confirmed(int(result.get("received", 0)))
                self._check_stall()
            return
        request = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if request is None:
            return
        if message.get("ok") and isinstance(result, dict):
            if request.command is Command.SYNC:
                self._confirmed(int(result.get("received", 0)))
            request.answer(result)
        else:
            error = message.get("error") or {}
            request.fail(
                RequestError(str(error.get("code", "unknown")), str(error.get("message", "")))
            )

    def _repeatable(self, request: Request) -> bool:
        """Whether a daemon that came back may be sent ``request`` again: it is
        ``IDEMPOTENT``, or a stop with an id and the daemon's hello said it
        answers those with the save they made (``daemon/answers.py``; one of
        an earlier version would end another experiment)."""
        if request.command in IDEMPOTENT:
            return True
        return request.command is Command.STOP and self.stop_ids and "stop_id" in request.fields

    def _resend_pending(self) -> None:
        """After a (re)introduction, repeat requests a restarted daemon never saw."""
        for request_id, request in list(self._pending.items()):
            if self._repeatable(request):
                del self._pending[request_id]
                if not request.future.cancelled():
                    self._await(self._send_request(request.command, request.fields), request)
        self._ack_id = None
