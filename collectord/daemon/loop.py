"""The daemon: two sockets and a loop around the experiment's lifecycle.

Read ``serve`` top to bottom: poll both sockets, hand what arrived to the
lifecycle (data) or to the control endpoint (requests), make the journal
durable when due, turn signals into stops, save a stop whose barrier has
passed; repeat until asked to exit; tear down in ``finally``.

SIGTERM and SIGINT go through the same stop a client sends: the first waits
for the barrier, saves and exits; a second saves at once.
"""

from __future__ import annotations

import gc
import logging
import signal
import time
from typing import Any

import zmq

from .. import codec, store, system
from ..config import Config
from ..errors import TransportError
from ..experiment import StopRequest
from ..formats import check_available
from ..listening import taken_ipc_path
from ..protocol import ErrorCode, Notice, notice, reply_error, reply_ok
from ..security import ServerSecurity
from ..sources import Source
from .barrier import Barrier, PendingStop
from .connections import Connections
from .control import ReplyTo, dispatch
from .durability import Durability
from .history import WRITE_INTERVAL, HistoryLog, HistoryWriter
from .lifecycle import Lifecycle, Opened, Received, Start
from .saving import RETRY_INTERVAL, SaveJob, Saver

log = logging.getLogger("collectord")

#: How often the loop wakes up when idle, to notice signals and deadlines (ms).
IDLE_TICK_MS = 50
#: At most this many messages, or about this many bytes, are taken from one
#: socket before the loop looks at the rest (the other socket, the flusher).
DRAIN_BATCH = 1000
DRAIN_BYTES = 4 * 1024 * 1024
#: A gap is not asked about again sooner than this, in seconds.
RESEND_INTERVAL = 0.2
#: Freed memory the C allocator keeps per heap for the next blocks (see
#: ``system.keep_freed_memory``): a burst of blocks in flight.
KEEP_FREED_BYTES = 64 * 1024 * 1024
#: The open files a daemon asks the system for (``system.raise_open_file_limit``):
#: one per stream, and sockets, journals and the files of a save.
OPEN_FILES = 65536


class Daemon:
    """One collector: its lifecycle, its stop barrier and its two sockets."""

    def __init__(self, config: Config, *, start: Start = Start.RESUME) -> None:
        self.config = config
        # Refuse an unsafe or impossible configuration before touching the output folder.
        self.security = ServerSecurity.from_config(config)
        check_available(config.stream_format)
        self.lock = store.OutputLock(config.output_dir)
        self.lock.acquire()
        self.durability = Durability(config.journal_interval, self.reply, self.lock.put_back)
        self.lifecycle = Lifecycle(
            config.output_dir,
            config.last_config_file,
            config.stream_format,
            self.durability,
            config.required,
        )
        try:
            self.opened: Opened = self.lifecycle.open(start)
        except BaseException:
            self.durability.close()
            self.lock.release()
            raise
        # What the start built (a big tree, perhaps) lives as long as the
        # daemon: keep the collector from walking it again and again.
        gc.freeze()
        self.barrier = Barrier(config.barrier_timeout)
        self.saver = Saver()
        self.history_writer = HistoryWriter(self._history_to_write, WRITE_INTERVAL)
        #: The stop whose save runs: its replies wait for it.
        self._stopping: PendingStop | None = None
        #: A signal came while a save ran: exit once it is done.
        self._exit_after_save = False
        self.started_at = time.monotonic()
        self.endpoints: dict[str, str] = {}
        self._signals: list[int] = []
        self._signals_taken = 0
        self._running = False
        #: What could not be made durable as the daemon exited (``Durability.close``).
        self.exit_error: str | None = None
        self._context: zmq.Context[Any] | None = None
        self._data: zmq.Socket[Any] | None = None
        self._control: zmq.Socket[Any] | None = None
        self._connections: Connections | None = None

    # -- the loop ----------------------------------------------------------------

    def serve(self) -> None:
        """Run until a stop with exit (a signal) completes."""
        if self._data is None:
            self.bind()
        assert self._data is not None and self._control is not None
        assert self._connections is not None
        poller = zmq.Poller()
        poller.register(self._data, zmq.POLLIN)
        poller.register(self._control, zmq.POLLIN)
        poller.register(self._connections.monitor, zmq.POLLIN)
        self._running = True
        self.history_writer.start()
        try:
            while self._running:
                # A running flush is looked at every millisecond: syncs wait for it.
                busy = self.durability.busy
                waiting = self.barrier.pending or self.saver.busy
                timeout = 1 if busy else 10 if waiting else IDLE_TICK_MS
                ready = dict(poller.poll(timeout))
                if self._data in ready:
                    self._drain(self._data, self.on_data, copy=False)
                if self._control in ready:
                    self._drain(self._control, self.on_control, copy=False)
                # Closes after the requests: one a client sent just before it
                # died (a clock exchange) is in the queue when its close is
                # reported, and taken after the close it made the session
                # reachable again, for good. (``Connections.seen`` reads the
                # closes before it ties a routing id to a descriptor anew.)
                self._connections.take_events()
                self.lifecycle.check_required()
                self.lifecycle.flush_when_due()
                self._take_signals()
                self._save_when_ready()
        finally:
            self._teardown()

    def _history_to_write(self) -> HistoryLog | None:
        """The running experiment's history, for the writer thread; none while
        a save runs, which it would only slow down (the next experiment's
        first lines, all the parameters it began with, can wait for it)."""
        return None if self.saver.busy else self.lifecycle.history

    def _teardown(self) -> None:
        self._close_sockets()
        self.saver.wait()  # a save under way is finished (or fails) first
        finished = self.saver.finished()
        if finished is not None:
            job, outcome = finished
            if not isinstance(outcome, BaseException):
                self.lifecycle.finish_save(job, outcome)
        self.saver.close()
        self.history_writer.close()
        if self.lifecycle.history is not None:
            self.lifecycle.history.close()  # the journal keeps it for the next start
        self.exit_error = self.durability.close()
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
                self.lifecycle.reject(None, f"internal error: {type(exc).__name__}: {exc}")

    # -- what arrives -------------------------------------------------------------

    def on_data(self, frames: list[Any]) -> None:
        """One message from the data socket (ZeroMQ frames: a block's rows are
        written to their file straight from ZeroMQ's buffer)."""
        received, source = self.lifecycle.receive(frames, time.monotonic())
        if received is Received.AHEAD and source is not None:
            self.ask_resend(source)

    def on_control(self, frames: list[zmq.Frame]) -> None:
        """One request from the control socket; its connection is noted first
        (``connections.py``)."""
        if self._connections is not None:
            self._connections.seen(frames[0].bytes, frames[0])
        dispatch(self, [frame.bytes for frame in frames])

    def heard_from(self, session: str) -> None:
        """A request came from ``session``'s DEALER (its routing id): it is there."""
        source = self.lifecycle.collector.sources.by_session.get(session)
        if source is not None:
            source.heard = time.monotonic()
            if source.from_journal:
                self.lifecycle.presence_changed(source.name, "")
                source.from_journal = False
            self.lifecycle.reach(source, True)

    def on_closed(self, peers: set[bytes]) -> None:
        """Control connections closed: the sessions that came in on them are
        not connected (until they are heard from again)."""
        sources = self.lifecycle.collector.sources
        for peer in peers:
            for session in {peer.decode("ascii", "replace"), *sources.of_peer(peer)}:
                source = sources.by_session.get(session)
                if source is None or not source.connected:
                    continue
                log.info("%s (%s) disconnected", source.name, session)
                self.lifecycle.reach(source, False, "disconnected")

    def ask_resend(self, source: Source) -> None:
        """Ask ``source`` to resend from its first missing message, now and then."""
        now = time.monotonic()
        if source.resend_asked_at is not None and now - source.resend_asked_at < RESEND_INTERVAL:
            return
        message = notice(Notice.RESEND, session=source.session, **{"from": source.received + 1})
        if self.notify(source.session, message):
            source.resend_asked_at = now

    # -- stopping -----------------------------------------------------------------

    def request_stop(
        self,
        request: StopRequest,
        reply_to: ReplyTo | None = None,
        *,
        exit_after: bool = False,
        known: tuple[str, int] | None = None,
        stop_id: str | None = None,
    ) -> None:
        """Start (or join) a stop; it is saved once its barrier passes.

        A stop sent again (``stop_id``) gets the save it made, or joins it if
        it is under way, and ends no other experiment (``answers.py``).
        """
        if stop_id is not None and reply_to is not None and self._answer_again(stop_id, reply_to):
            return
        sources = self.lifecycle.collector.sources
        self.barrier.request(
            request,
            sources,
            self.notify,
            reply_to,
            exit_after=exit_after,
            known=known,
            stop_id=stop_id,
        )

    def _answer_again(self, stop_id: str, reply_to: ReplyTo) -> bool:
        """Answer a stop sent again, if it was saved or its save is under way."""
        stopping = self._stopping
        if stopping is not None and stop_id in stopping.ids:
            stopping.replies.append(reply_to)
            return True
        lifecycle = self.lifecycle
        try:
            result = lifecycle.answers.result(
                stop_id, lifecycle.output, lifecycle.last_config_file
            )
        except LookupError as exc:
            error = reply_error(reply_to.request_id, ErrorCode.SAVED_NOT_FOUND, str(exc))
            self.send(reply_to.envelope, error)
            return True
        if result is None:
            return False
        log.info("stop %r was saved as %s: answered again", stop_id, result["run_id"])
        self.reply(reply_to, dict(result))
        return True

    def _take_signals(self) -> None:
        while self._signals:
            name = signal.Signals(self._signals.pop(0)).name
            self._signals_taken += 1
            if self._signals_taken == 1:
                if self.barrier.pending is not None:
                    log.info("%s: exiting once the pending stop is saved", name)
                    self.barrier.pending.exit_after = True
                elif self.saver.busy:
                    log.info("%s: exiting once the save under way is done", name)
                    self._exit_after_save = True
                elif not self.lifecycle.worth_saving_at_exit:
                    # Nothing to save. The journal stays: it carries the parameters
                    # and streams over to the daemon that starts next.
                    log.info("%s: nothing new to save since the last save; exiting", name)
                    self._running = False
                else:
                    log.info("%s: saving the experiment, then exiting", name)
                    self.request_stop(StopRequest(by="signal", reason=name), exit_after=True)
            elif self.barrier.pending is not None:
                log.warning("%s again: saving now without waiting for the barrier", name)
                self.barrier.hurry()
            elif self.saver.busy:
                log.warning("%s again: exiting; the journal keeps what is not saved", name)
                self._running = False

    def _save_when_ready(self) -> None:
        """Take a finished save; start the next once its barrier has passed.

        One save at a time: a stop that becomes ready meanwhile waits for the
        running one (its experiment's messages go on arriving, into it).
        """
        finished = self.saver.finished()
        if finished is not None:
            self._saved(*finished)
        self.saver.retry()
        if self.saver.busy:
            return
        ready = self.barrier.ready(self.lifecycle.collector.sources, self.notify)
        if ready is None:
            return
        stop, unconfirmed = ready
        if unconfirmed:
            log.warning("saving without confirmation from %s", ", ".join(unconfirmed))
        try:
            job = self.lifecycle.begin_save(stop.request, unconfirmed, stop_ids=stop.ids)
        except Exception as exc:  # the stop cannot be journaled: a full disk, say
            if not isinstance(exc, OSError):  # a bug: its traceback is wanted
                log.exception("save failed")
            self._failed(stop, ErrorCode.STOP_FAILED, exc)
            return
        self._stopping = stop
        self.saver.start(job)

    def _saved(self, job: SaveJob, outcome: dict[str, Any] | BaseException) -> None:
        if isinstance(outcome, BaseException):
            # The saver tries again until it succeeds; the daemon goes on. The
            # stop stays: one sent again joins the save tried again, and is
            # answered when a try succeeds (the first failure alone is replied).
            log.error("save of %s failed: %r; trying again", job.run_id, outcome)
            stopping = self._stopping
            if stopping is not None and not stopping.failed:
                stopping.failed = True
                self._failed(stopping, ErrorCode.SAVE_FAILED, outcome)
                stopping.replies.clear()
            return
        stop, self._stopping = self._stopping, None
        self.lifecycle.finish_save(job, outcome)
        if stop is not None:
            for reply_to in stop.replies:
                self.reply(reply_to, outcome)
            if stop.exit_after:
                self._running = False
        if self._exit_after_save:
            self._running = False

    def _failed(self, stop: PendingStop, code: ErrorCode, exc: BaseException) -> None:
        """Tell ``stop``'s callers it failed, and whether it ended the experiment:
        one that did (``SAVE_FAILED``) is saved by a later try, and a new stop
        would end the next experiment too; one that did not (``STOP_FAILED``)
        left the experiment going, for a later stop to save."""
        if code is ErrorCode.SAVE_FAILED:
            error = (
                f"save failed: {type(exc).__name__}: {exc}; the experiment has ended and is "
                f"kept in its journal, and the save is tried again every "
                f"{RETRY_INTERVAL:g} s: do not stop again (that would end the next "
                f"experiment too), see `last_saved` in status"
            )
        else:
            error = (
                f"the stop could not begin: {type(exc).__name__}: {exc}; nothing ended, the "
                f"experiment goes on: stop again once this is mended"
            )
        self.lifecycle.last_error = error
        log.error("%s", error)
        for reply_to in stop.replies:
            self.send(reply_to.envelope, reply_error(reply_to.request_id, code, error))
        if stop.exit_after:
            # Asked to exit (a signal): the journal holds everything, and the
            # next start saves it (it ends with STOP) or resumes it.
            log.error("exiting without saving; the journal keeps the experiment")
            self._running = False

    # -- sockets ------------------------------------------------------------------

    def bind(self) -> dict[str, str]:
        """Bind both sockets; return the endpoints actually bound (port ``*`` resolved).

        An ``ipc://`` path another process accepts on is refused as a ``tcp://``
        port in use is: ZeroMQ would delete its socket file and take it over
        (``listening.py``).
        """
        for endpoint in (self.config.data, self.config.control):
            if taken_ipc_path(endpoint):
                raise TransportError(
                    f"cannot bind {endpoint}: another process (a collectord daemon?) "
                    "listens there; choose other endpoints, or stop that process"
                )
        security = self.security
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
        # A peer whose machine vanished (no close from its kernel) is noticed
        # too, and its connection closed: ``connections.py`` hears of it.
        control.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        control.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
        self._connections = Connections(control, self.on_closed)
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
        if self._connections is not None:
            self._connections.close()
            self._connections = None
        for sock in (self._data, self._control):
            if sock is not None:
                sock.close()
        if self.security is not None:
            self.security.stop()
        if self._context is not None:
            self._context.term()
        self._data = self._control = self._context = None

    def set_up_process(self) -> None:
        """What a daemon that has its process to itself sets for it: SIGTERM and
        SIGINT become stop requests (see the module docstring), and more below."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda number, _frame: self._signals.append(number))
        # A file size limit (ulimit -f) must fail a write, which the daemon
        # survives like a full disk, not kill the daemon.
        system.ignore_file_size_signal()
        # Blocks arrive in buffers of a megabyte or more: keep freed ones for
        # the next rather than fault in fresh pages for every burst.
        system.keep_freed_memory(KEEP_FREED_BYTES)
        # Every stream keeps a file open, and streams outlive an experiment.
        system.raise_open_file_limit(OPEN_FILES)

    def reply(self, reply_to: ReplyTo, result: dict[str, Any]) -> None:
        self.send(reply_to.envelope, reply_ok(reply_to.request_id, result))

    def notify(self, session: str, message: dict[str, Any]) -> bool:
        """Send a notice to ``session``'s DEALER; False if it could not be sent.

        A session with no DEALER connected (its process died without ``bye``)
        is shown as not connected until it is heard from again.
        """
        error = self.send([session.encode(), b""], message)
        source = self.lifecycle.collector.sources.by_session.get(session)
        if source is not None:
            if error is None:
                self.lifecycle.reach(source, True)
            elif error == zmq.EHOSTUNREACH and source.reachable and not source.from_journal:
                log.info("%s (%s) cannot be reached: not connected", source.name, session)
                self.lifecycle.reach(source, False, "a notice could not reach it")
        return error is None

    def send(self, envelope: list[bytes], message: dict[str, Any]) -> int | None:
        """Send without blocking; the errno if ZeroMQ refused, else None."""
        assert self._control is not None
        try:
            self._control.send_multipart([*envelope, codec.pack(message)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone (ROUTER_MANDATORY) or its queue is full
            log.debug("could not send to %r: %s", envelope[:1], exc)
            return exc.errno
        return None
