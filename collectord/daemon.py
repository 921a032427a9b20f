"""The collector daemon: sockets, the main loop, the journal, and stopping.

Read ``serve`` top to bottom: poll both sockets, handle what arrived, make the
journal durable when someone waits for it, turn signals into stop requests,
move a pending stop forward; repeat until asked to exit; tear down in
``finally``. Control commands live one per module in ``collectord/commands``.

Durability: every message admitted is appended to the experiment's journal
before it is applied. The journal is fsynced at least every
``journal_interval`` seconds, at once when a client waits in ``sync``, and
after every 16 MiB of stream data, in a background thread (``flusher.py``) so
that the loop keeps taking messages meanwhile; replies to ``sync`` (and hence
what clients drop from their resend buffers) only ever cover journaled
messages. After a crash, a restarted daemon resumes
the experiment from its journal, or ``collectord recover`` saves it.

A stop is a barrier: every connected client is asked (notice ``barrier``) for
the last sequence number it has sent, and the experiment is saved once all of
them have been received, or when ``barrier_timeout`` expires (the clients that
had not confirmed are named in the metadata). SIGTERM and SIGINT go through the
same stop (the first waits for the barrier, a second saves at once), then the
daemon exits with status 0.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import zmq

from . import __version__, codec, experiment, journal, store
from .collector import Applied, Collector, decode_header, message_count
from .errors import TransportError
from .experiment import StopRequest
from .flusher import Flush, Flusher
from .formats import check_available
from .journal import Journal, RecordType
from .protocol import (
    PROTOCOL_VERSION,
    REQUEST,
    REQUESTS,
    Command,
    CommandError,
    ErrorCode,
    Kind,
    Notice,
    ProtocolViolation,
    check_fields,
    notice,
    reply_error,
    reply_ok,
)
from .saving import save_experiment
from .security import ServerSecurity
from .sources import Admit, Source
from .streamfiles import StreamFiles

log = logging.getLogger("collectord")

#: How often the loop wakes up when idle, to notice signals and deadlines.
IDLE_TICK_MS = 50
#: At most this many messages, or about this many bytes, are taken from one
#: socket before the loop looks at the rest (the other socket, the flusher).
DRAIN_BATCH = 1000
DRAIN_BYTES = 4 * 1024 * 1024
#: A gap is not asked about again sooner than this, in seconds.
RESEND_INTERVAL = 0.2
#: Rejections logged per message (a hostile batch can hold thousands; all count).
LOGGED_REJECTIONS = 3
#: Write errors that room on the disk will cure: a block refused for one of
#: these is sent again by a resending client. Others (a file the daemon may
#: not create, say) would fail forever, so the block is rejected instead.
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: Stream bytes written since the last flush that start one before
#: ``journal_interval`` is up: a burst is made durable while it arrives, not
#: all at once when a client waits for it.
STREAM_FLUSH_BYTES = 16 * 1024 * 1024


class ReplyTo(NamedTuple):
    """Where a (possibly deferred) reply goes: the ROUTER envelope and request id."""

    envelope: list[bytes]
    request_id: int


@dataclasses.dataclass
class PendingStop:
    request: StopRequest
    replies: list[ReplyTo]
    deadline: float
    barrier: int
    waiting: dict[str, int | None]  # session -> last seq it reported (None: not yet)
    exit_after: bool = False


class Daemon:
    """One collector: its state, journal, and two sockets."""

    def __init__(self, config: Any, *, resume: bool = True) -> None:
        self.config = config
        # Refuse an unsafe or impossible configuration before touching the output folder.
        self._security = ServerSecurity.from_config(config)
        check_available(config.stream_format)
        self.output: Path = config.output_dir
        self.lock = store.OutputLock(self.output)
        self.lock.acquire()
        self.collector = Collector(store.read_last_config(config.last_config_file))
        self.journal: Journal | None = None
        self.last_saved: Path | None = None
        self.last_error: str | None = None
        self.saved_count = 0
        self.started_at = time.monotonic()
        self.endpoints: dict[str, str] = {}
        self.pending_syncs: dict[str, list[tuple[int, ReplyTo]]] = {}
        self.durable: dict[str, int] = {}  # session -> last seq fsynced in the journal
        self.stop: PendingStop | None = None
        self._barrier_counter = 0
        self._signals: list[int] = []
        self._signals_taken = 0
        self._running = False
        self._flushed_at = time.monotonic()
        self._flusher = Flusher()
        self._retry_at = 0.0  # after a failed flush, the next waits until then
        self._context: zmq.Context[Any] | None = None
        self._data: zmq.Socket[Any] | None = None
        self._control: zmq.Socket[Any] | None = None
        self._open_journal(resume)

    # -- journal ----------------------------------------------------------------

    def _open_journal(self, resume: bool) -> None:
        """Deal with what a previous daemon left, then open this experiment's journal."""
        from .recovery import recover_staged

        staged = store.staged_runs(self.output)
        resumable = staged[-1] if resume and staged and _has_journal(staged[-1]) else None
        recovered = recover_staged(
            self.output, self.config.last_config_file, self.config.stream_format, skip=resumable
        )
        for path in recovered:
            log.warning("recovered an unfinished experiment into %s", path)
        self.collector.last_config = store.read_last_config(self.config.last_config_file)
        if resumable is not None:
            records, intact, torn = journal.read(resumable / journal.JOURNAL_NAME)
            self.collector.files = StreamFiles(resumable, replaying=True)
            count = self.collector.replay(records)
            self.collector.files.end_replay()
            restart = {
                "resumed": experiment.now().isoformat(),
                "journal_records": count,
                "torn_tail": torn,
            }
            self.collector.restarts.append(restart)
            self.journal = Journal.reopen(resumable / journal.JOURNAL_NAME, intact)
            self._record(RecordType.RESTART, restart=restart)  # a later resume keeps it
            self.journal.flush()
            log.warning(
                "resumed experiment %s from its journal (%d records%s)",
                self.collector.experiment.run_id,
                count,
                ", torn tail cut" if torn else "",
            )
        else:
            self._start_journal()
        self.durable = {s.session: s.received for s in self.collector.sources.by_session.values()}

    def _start_journal(self) -> None:
        run = store.staging_dir(self.output, self.collector.experiment.run_id)
        self.journal = Journal(run / journal.JOURNAL_NAME)
        # BEGIN first: whatever happens next, the carried-over state is on disk.
        self.journal.append(self.collector.begin_record())
        self.journal.flush()
        self.collector.attach_files(StreamFiles(run))

    def _record(self, kind: RecordType, **fields: Any) -> None:
        assert self.journal is not None
        self.journal.append({"t": kind.value, **fields})

    def _make_durable(self) -> None:
        """fsync the journal now; everything applied so far is confirmed."""
        assert self.journal is not None
        self._settle()
        if self.collector.files is not None:
            self.collector.files.sync()  # block data first: the journal vouches for it
        self.journal.flush()
        self._flushed_at = time.monotonic()
        self._confirm(self._received())

    def _received(self) -> dict[str, int]:
        return {session: s.received for session, s in self.collector.sources.by_session.items()}

    def _confirm(self, marks: dict[str, int]) -> None:
        """Sessions are durable up to ``marks``: answer the syncs that waited for it."""
        self.durable.update(marks)
        for session in list(self.pending_syncs):
            self._release_syncs(session)

    def _flush(self) -> None:
        """Take a finished background flush; start the next one when due (flusher.py)."""
        done = self._flusher.finished()
        if done is not None:
            self._flushed(done)
        if not self._flusher.busy and self._flush_due():
            assert self.journal is not None
            self._flusher.start(self.journal, self.collector.files, self._received())
            self._flushed_at = time.monotonic()

    def _settle(self) -> None:
        """Wait for the background flush, if one runs: before files are closed."""
        done = self._flusher.wait()
        if done is not None:
            self._flushed(done)

    def _flushed(self, flush: Flush) -> None:
        if flush.error is None:
            if self.last_error is not None and self.last_error.startswith("journal"):
                log.info("the journal is written again")
                self.last_error = None
            self._confirm(flush.marks)
            return
        # A full or failing disk: nothing is confirmed until a later flush
        # succeeds, so clients keep (and resend) what they sent. The next try
        # waits for journal_interval, even if syncs wait.
        if self.last_error is None or "journal" not in self.last_error:
            log.error("cannot write the journal: %s; retrying", flush.error)
        self.last_error = f"journal write failed: {flush.error}"
        self._retry_at = time.monotonic() + self.config.journal_interval

    def _flush_due(self) -> bool:
        assert self.journal is not None
        if not self.journal.pending or time.monotonic() < self._retry_at:
            return False
        if any(self.pending_syncs.values()):
            return True
        files = self.collector.files
        if files is not None and files.unsynced >= STREAM_FLUSH_BYTES:
            return True
        return time.monotonic() - self._flushed_at >= self.config.journal_interval

    # -- sockets ---------------------------------------------------------------

    def bind(self) -> dict[str, str]:
        """Bind both sockets; return the endpoints actually bound (port ``*`` resolved)."""
        security = self._security
        context = self._context = zmq.Context()
        if security is not None:
            security.start(context)
        data = self._data = context.socket(zmq.SUB)
        control = self._control = context.socket(zmq.ROUTER)
        for sock in (data, control):
            sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)
            sock.setsockopt(zmq.LINGER, 1000)
            if security is not None:
                security.apply(sock)
        data.setsockopt(zmq.RCVHWM, self.config.receive_queue)
        data.setsockopt(zmq.SUBSCRIBE, b"")
        # Notices to a client that is gone must fail loudly, not vanish.
        control.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            data.bind(self.config.data)
            control.bind(self.config.control)
        except zmq.ZMQError as exc:
            self._close_sockets()
            raise TransportError(
                f"cannot bind {self.config.data} / {self.config.control}: {exc}"
            ) from exc
        self.endpoints = {
            "data": data.getsockopt_string(zmq.LAST_ENDPOINT),
            "control": control.getsockopt_string(zmq.LAST_ENDPOINT),
        }
        return self.endpoints

    def _close_sockets(self) -> None:
        for sock in (self._data, self._control):
            if sock is not None:
                sock.close()
        if self._security is not None:
            self._security.stop()
        if self._context is not None:
            self._context.term()
        self._data = self._control = self._context = None

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT become stop requests; see the module docstring."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda number, _frame: self._signals.append(number))
        if hasattr(signal, "SIGXFSZ"):
            # A file size limit (ulimit -f) must fail a write, which the daemon
            # survives like a full disk, not kill the daemon.
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    # -- the loop ----------------------------------------------------------------

    def serve(self) -> None:
        """Run until a stop with exit (a signal) completes."""
        if self._data is None:
            self.bind()
        assert self._data is not None and self._control is not None
        poller = zmq.Poller()
        poller.register(self._data, zmq.POLLIN)
        poller.register(self._control, zmq.POLLIN)
        self._running = True
        try:
            while self._running:
                # A running flush is looked at every millisecond: syncs wait for it.
                timeout = 1 if self._flusher.busy else 10 if self.stop else IDLE_TICK_MS
                ready = dict(poller.poll(timeout))
                if self._data in ready:
                    self._drain(self._data, self.on_data, copy=False)
                if self._control in ready:
                    self._drain(self._control, self.on_control)
                self._flush()
                self._take_signals()
                self._advance_stop()
        finally:
            self._teardown()

    def _teardown(self) -> None:
        self._close_sockets()
        self._settle()
        self._flusher.close()
        if self.collector.files is not None:
            self.collector.files.sync()
            self.collector.files.close()
        if self.journal is not None:
            self.journal.close()
        self.lock.release()

    def _drain(self, sock: zmq.Socket[Any], handle: Any, copy: bool = True) -> None:
        size = 0
        for _ in range(DRAIN_BATCH):
            if size > DRAIN_BYTES:
                return
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=copy)
            except zmq.Again:
                return
            size += sum(len(frame) for frame in frames)
            try:
                handle(frames)
            except Exception as exc:  # a bug must cost one message, not the daemon
                log.exception("internal error while handling a message")
                self.collector.reject(None, f"internal error: {type(exc).__name__}: {exc}")

    def _take_signals(self) -> None:
        while self._signals:
            name = signal.Signals(self._signals.pop(0)).name
            self._signals_taken += 1
            if self._signals_taken == 1:
                if self.stop is not None:
                    log.info("%s: exiting once the pending stop is saved", name)
                    self.stop.exit_after = True
                    continue
                if self.collector.experiment.first_message is None:
                    # Nothing to save. The journal stays: it carries the parameters
                    # and streams over to the daemon that starts next.
                    log.info("%s: nothing new since the last save; exiting", name)
                    self._running = False
                    continue
                log.info("%s: saving the experiment, then exiting", name)
                self.request_stop(StopRequest(by="signal", reason=name), exit_after=True)
            elif self.stop is not None:
                log.warning("%s again: saving now without waiting for the barrier", name)
                self.stop.exit_after = True
                self.stop.deadline = 0.0

    # -- data ----------------------------------------------------------------------

    def on_data(self, received: list[Any]) -> None:
        """Handle one message from the data socket; never raises on bad input.

        Frames come as ZeroMQ ``Frame`` objects (or bytes). Only a block's rows
        stay one: they go to the stream file straight from ZeroMQ's buffer.
        """
        if len(received) == 3:
            frames = [_as_bytes(received[0]), _as_bytes(received[1]), received[2]]
        else:
            frames = [_as_bytes(frame) for frame in received]
        try:
            header = decode_header(frames)
        except (codec.DecodeError, ProtocolViolation) as exc:
            self.reject(None, f"data message: {exc}")
            return
        source = self.collector.sources.get(header["session"], header["source"])
        first = header["seq"]
        last = first + message_count(header) - 1
        now = time.monotonic()
        verdict, seen = source.admit_range(first, last, now)
        if verdict is Admit.AHEAD:
            if not source.give_up(now, header.get("resends", False)):
                source.dropped_out_of_order()
                self._ask_resend(source)
                return
            self._skip(source, first - 1)
            verdict, seen = source.admit_range(first, last, now)
        if verdict is Admit.DUPLICATE:
            return
        if self.collector.experiment.first_message is None:
            self.collector.experiment.touch()
            assert self.collector.experiment.first_message is not None
            self._record(RecordType.FIRST, at=self.collector.experiment.first_message.isoformat())
        if header["kind"] == Kind.BLOCK.value and len(frames) == 3:
            self._apply_block(source, header, frames)
            return
        frames = [_as_bytes(frame) for frame in frames]
        outcome = self.collector.apply_message(source, header, frames, seen)
        self._record_message(frames, outcome)
        self._log_rejections(source, outcome.rejections)

    def _apply_block(self, source: Source, header: Mapping[str, Any], frames: list[Any]) -> None:
        """A block's rows go to its stream file; the journal keeps their length.

        If the disk has no room for the rows, a client that resends is made to
        send the block again later: the block is not counted as received, so
        it is not confirmed, and nothing is journaled. Otherwise (a client
        that cannot resend, or an error room will not cure) the block is
        rejected, and its record says so for replay.
        """
        first = header["seq"]
        try:
            outcome = self.collector.apply_message(source, header, frames, 0)
        except OSError as exc:
            self.last_error = f"stream write failed: {exc}"
            if header.get("resends", False) and exc.errno in _NO_ROOM:
                log.warning(
                    "%s: cannot write block %d (%s); waiting for it again", source.name, first, exc
                )
                source.received = first - 1  # not received: the client resends it
                return
            reason = f"seq {first}: the rows could not be written: {exc}"
            self.collector.refuse(source, reason)
            outcome = Applied([reason], [(0, reason)])
        else:
            if self.last_error is not None and self.last_error.startswith("stream write"):
                self.last_error = None
        self._record_message(frames[:2], outcome, raw=len(frames[2]))
        self._log_rejections(source, outcome.rejections)

    def _record_message(self, frames: list[Any], outcome: Applied, **fields: Any) -> None:
        if outcome.refused:
            fields["refused"] = [list(pair) for pair in outcome.refused]
        self._record(RecordType.MESSAGE, frames=frames, **fields)

    @staticmethod
    def _log_rejections(source: Source, rejections: list[str]) -> None:
        """Log a message's rejections: a few lines, however many (all are counted)."""
        for rejection in rejections[:LOGGED_REJECTIONS]:
            log.warning("rejected from %s: %s", source.name, rejection)
        if len(rejections) > LOGGED_REJECTIONS:
            more = len(rejections) - LOGGED_REJECTIONS
            log.warning("rejected from %s: %d more in the same batch", source.name, more)

    def _skip(self, source: Source, last: int) -> None:
        log.warning("%s: messages %d..%d are lost", source.name, source.received + 1, last)
        self._record(RecordType.SKIP, session=source.session, name=source.name, upto=last)
        source.skip_to(last)

    def reject(self, session: str | None, reason: str) -> None:
        target = self.collector.reject(session, reason)
        self._record(RecordType.REJECT, session=session, reason=reason)
        log.warning("rejected from %s: %s", target.name, reason)

    def _ask_resend(self, source: Source) -> None:
        """Ask ``source`` to resend from its first missing message, now and then."""
        now = time.monotonic()
        if source.resend_asked_at is not None and now - source.resend_asked_at < RESEND_INTERVAL:
            return
        message = notice(Notice.RESEND, session=source.session, **{"from": source.received + 1})
        if self.send_notice(source.session, message):
            source.resend_asked_at = now

    def _release_syncs(self, session: str) -> None:
        waiting = self.pending_syncs.get(session)
        if not waiting:
            return
        durable = self.durable.get(session, 0)
        still = []
        for seq, reply_to in waiting:
            if durable >= seq:
                self.reply(reply_to, {"received": durable})
            else:
                still.append((seq, reply_to))
        self.pending_syncs[session] = still

    # -- control -------------------------------------------------------------------

    def on_control(self, frames: list[bytes]) -> None:
        """Handle one request: decode, look up, validate, execute, reply."""
        from .commands import COMMANDS

        envelope, payload = frames[:-1], frames[-1]
        request_id = 0
        session = None
        sender = self.collector.sources.by_session.get(envelope[0].decode("ascii", "replace"))
        if sender is not None:
            sender.reachable = True  # its DEALER (routing id = session) is there
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
            result = COMMANDS[command](self, request, reply_to)
        except (codec.DecodeError, ProtocolViolation) as exc:
            self._refuse(envelope, request_id, session, ErrorCode.BAD_REQUEST, str(exc))
        except CommandError as exc:
            self._refuse(envelope, request_id, session, exc.code, str(exc))
        else:
            if result is not None:
                self.reply(reply_to, result)

    def _refuse(
        self,
        envelope: list[bytes],
        request_id: int,
        session: str | None,
        code: ErrorCode,
        message: str,
    ) -> None:
        self.reject(session, f"control request: {message}")
        self._send(envelope, reply_error(request_id, code, message))

    def hello(self, session: str, fields: Mapping[str, Any]) -> Source:
        source = self.collector.hello(session, fields)
        self._record(
            RecordType.HELLO,
            session=session,
            name=source.name,
            host=source.host,
            pid=source.pid,
            program=source.program,
            versions=source.versions,  # already text: the journal packs plain msgpack
        )
        if fields.get("confirmed", 0) > source.received:
            # A previous daemon confirmed more than this one holds (it had no
            # journal, or lost it): the difference is lost, and said so.
            self._skip(source, fields["confirmed"])
        return source

    def dropped(self, session: str, upto: int) -> None:
        source = self.collector.sources.by_session.get(session)
        if source is not None and upto > source.received:
            log.warning("%s dropped unconfirmed messages (its buffer overflowed)", source.name)
            self._skip(source, upto)
            # What followed the dropped messages may have been refused as out of
            # order while we waited for them: ask for it again.
            self._ask_resend(source)

    def bye(self, session: str) -> Source | None:
        source = self.collector.bye(session)
        if source is not None:
            self._record(RecordType.BYE, session=session)
            self.pending_syncs.pop(session, None)
        return source

    def reply(self, reply_to: ReplyTo, result: Mapping[str, Any]) -> None:
        self._send(reply_to.envelope, reply_ok(reply_to.request_id, result))

    def reply_failure(self, reply_to: ReplyTo, code: ErrorCode, message: str) -> None:
        self._send(reply_to.envelope, reply_error(reply_to.request_id, code, message))

    def send_notice(self, session: str, message: dict[str, Any]) -> bool:
        """Send a notice to ``session``'s DEALER; False if it could not be sent.

        A session with no DEALER connected (its process died without ``bye``)
        is shown as not connected until it is heard from again.
        """
        error = self._send([session.encode(), b""], message)
        source = self.collector.sources.by_session.get(session)
        if source is not None:
            if error is None:
                source.reachable = True
            elif error == zmq.EHOSTUNREACH and source.reachable:
                log.info("%s (%s) cannot be reached: not connected", source.name, session)
                source.reachable = False
        return error is None

    def _send(self, envelope: list[bytes], message: dict[str, Any]) -> int | None:
        """Send without blocking; the errno if ZeroMQ refused, else None."""
        assert self._control is not None
        try:
            self._control.send_multipart([*envelope, codec.pack(message)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone (ROUTER_MANDATORY) or its queue is full
            log.debug("could not send to %r: %s", envelope[:1], exc)
            return exc.errno
        return None

    # -- stop ------------------------------------------------------------------------

    def request_stop(
        self,
        request: StopRequest,
        reply_to: ReplyTo | None = None,
        *,
        exit_after: bool = False,
        known: tuple[str, int] | None = None,
    ) -> None:
        """Start (or join) a stop: ask every connected client for its last seq."""
        if self.stop is None:
            self._barrier_counter += 1
            waiting: dict[str, int | None] = {}
            # Sessions found unreachable before are tried again: a DEALER that
            # reconnected takes the notice, a gone one fails at once.
            for source in self.collector.sources.open_sessions():
                message = notice(Notice.BARRIER, barrier=self._barrier_counter)
                if self.send_notice(source.session, message):
                    waiting[source.session] = None
            self.stop = PendingStop(
                request=request,
                replies=[],
                deadline=time.monotonic() + self.config.barrier_timeout,
                barrier=self._barrier_counter,
                waiting=waiting,
            )
        if reply_to is not None:
            self.stop.replies.append(reply_to)
        if known is not None:
            self.stop.waiting[known[0]] = known[1]
        self.stop.exit_after |= exit_after

    def barrier_report(self, session: str, barrier: int, seq: int) -> None:
        if self.stop is not None and self.stop.barrier == barrier:
            self.stop.waiting[session] = seq

    def _advance_stop(self) -> None:
        stop = self.stop
        if stop is None:
            return
        unconfirmed = []
        for session, seq in stop.waiting.items():
            source = self.collector.sources.by_session.get(session)
            if source is None or source.closed:
                continue
            if seq is None or source.received < seq:
                unconfirmed.append(source)
        if unconfirmed and time.monotonic() < stop.deadline:
            return
        self.stop = None
        names = [f"{s.name} ({s.session})" for s in unconfirmed]
        if names:
            log.warning("saving without confirmation from %s", ", ".join(names))
        try:
            result = self.save(stop.request, names)
        except Exception as exc:  # disk full, permissions, or a bug: keep the data
            log.exception("save failed")
            self.last_error = f"save failed: {type(exc).__name__}: {exc}"
            log.error("%s; the experiment stays in memory and in its journal", self.last_error)
            for reply_to in stop.replies:
                self.reply_failure(reply_to, ErrorCode.SAVE_FAILED, self.last_error)
            if stop.exit_after:
                # Asked to exit (a signal): the journal holds everything, and the
                # next start resumes the experiment or `collectord recover` saves it.
                log.error("exiting without saving; the journal keeps the experiment")
                self._running = False
            return
        for reply_to in stop.replies:
            self.reply(reply_to, result)
        if stop.exit_after:
            self._running = False

    def save(self, request: StopRequest, unconfirmed: list[str]) -> dict[str, Any]:
        """Write the experiment and the last config; begin the next (saving.py)."""
        assert self.journal is not None
        self._make_durable()
        result = save_experiment(
            self.collector,
            self.output,
            self.config.last_config_file,
            self.journal,
            request,
            unconfirmed,
            self.config.stream_format,
        )
        self.journal = None
        log.info("saved %s", result["path"])
        self.last_saved = Path(result["path"])
        self.last_error = None
        self.saved_count += 1
        self._start_journal()
        return result

    # -- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        sources = list(self.collector.sources.by_session.values())
        unidentified = self.collector.sources.unidentified
        current = self.collector.experiment
        return {
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "uptime": round(time.monotonic() - self.started_at, 3),
            "endpoints": self.endpoints,
            "curve": self._security is not None,
            "output": str(self.output),
            "last_config": str(self.config.last_config_file),
            "run_id": current.run_id,
            "run_started": current.started.isoformat(),
            "restarts": self.collector.restarts,
            "stop_pending": self.stop is not None,
            "saved_experiments": self.saved_count,
            "last_saved": str(self.last_saved) if self.last_saved else None,
            "last_error": self.last_error,
            "sources": [source.describe(run=False) for source in sources],
            "unidentified": {
                "rejected": unidentified.total.rejected,
                "recent_rejections": list(unidentified.reasons),
            },
            "rejected": unidentified.total.rejected
            + sum(source.total.rejected for source in sources),
        }


def _as_bytes(frame: bytes | zmq.Frame) -> bytes:
    return frame if isinstance(frame, bytes) else frame.bytes


def _has_journal(staging: Path) -> bool:
    return (staging / journal.JOURNAL_NAME).is_file()
