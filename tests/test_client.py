"""The client: never blocking, buffering until the daemon is there, lifecycle."""

from __future__ import annotations

import contextlib
import inspect
import logging
import multiprocessing
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import zmq
from conftest import saved_experiments, wait_for

from collectord import (
    Client,
    ClientClosedError,
    DaemonTimeout,
    State,
    TransportError,
    UnsupportedValueError,
    codec,
    load_json,
)
from collectord.client import _Connection
from collectord.link import CONTROL_QUEUE, Link
from collectord.protocol import Command


def test_publishing_before_the_daemon_starts_loses_nothing(make_daemon, ipc, figures) -> None:
    data, control = ipc("data"), ipc("control")
    with Client("early", data, control) as client:
        for index in range(1000):
            client.set_params("early/params", index=index)
        client.add_data("early/first", "published before the daemon existed")
        daemon = make_daemon(data=data, control=control)
        client.sync(timeout=60)
        saved = load_json(client.stop())
    assert saved["early"] == {
        "params": {"index": 999},
        "first": "published before the daemon existed",
    }
    (source,) = saved["collectord"]["sources"]
    assert source["messages"]["messages"] == 1001
    assert source["messages"]["lost"] == 0
    assert daemon.status()["rejected"] == 0
    figures(
        sent=1001,
        saved=source["messages"]["messages"],
        lost=source["messages"]["lost"],
        faults="client started before the daemon (slow joiner)",
    )


def test_publishing_does_not_wait_for_a_missing_daemon(ipc) -> None:
    client = Client("lonely", ipc("data"), ipc("control"))
    try:
        started = time.monotonic()
        for index in range(10_000):
            client.set_params("lonely/params", index=index)
        # Nothing listens: had any call waited on the network, this would take minutes.
        assert time.monotonic() - started < 60
        assert client.unconfirmed == 10_000
        with pytest.raises(DaemonTimeout, match=r"no answer to 'sync'.*collectord run"):
            client.sync(timeout=0.2)
    finally:
        with pytest.raises(DaemonTimeout):
            client.close(timeout=0.2)
    assert client.state is State.CLOSED


def test_a_wrong_data_endpoint_is_named_when_the_daemon_answers_requests(daemon, ipc) -> None:
    """The control endpoint is right and ``restore`` works, but the messages go
    where no daemon listens: the sync's error must not send the user looking
    for a daemon at the control endpoint."""
    client = Client("camera", ipc("nobody-listens"), daemon.control)
    try:
        assert client.restore("camera/settings") == {}
        client.set_params("camera/settings", exposure=1.0)
        with pytest.raises(DaemonTimeout, match=r"nothing has subscribed .*nobody-listens"):
            client.sync(timeout=0.5)
    finally:
        with pytest.raises(DaemonTimeout):
            client.close(timeout=0.2)


def test_calls_after_close_raise(daemon) -> None:
    client = Client("short", daemon.data, daemon.control)
    assert client.state is State.OPEN
    client.set_params("short/p", a=1)
    client.close()
    assert client.state is State.CLOSED
    with pytest.raises(ClientClosedError):
        client.set_params("short/p", a=2)
    with pytest.raises(ClientClosedError):
        client.sync()
    client.close()  # closing twice is harmless


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_client_whose_io_thread_stopped_refuses_calls_and_closes(daemon) -> None:
    """Once the I/O thread has ended, nothing can be sent: calls say so at
    once, and close() neither fails on the closed wake-up pipe (as CI saw
    once, with zmq.Again) nor waits for answers that cannot come."""
    ended = threading.Event()

    def clock() -> float:
        if ended.is_set():
            raise SystemExit  # as sys.exit() in a user's clock would: not an Exception
        return time.monotonic()

    client = Client("camera", daemon.data, daemon.control, clock=clock, clock_interval=0.01)
    client.set_params("camera/params", exposure=5)
    client.sync()
    ended.set()
    wait_for(lambda: client._link.finished.is_set(), what="the I/O thread to end")
    with pytest.raises(ClientClosedError, match="I/O thread stopped"):
        client.set_params("camera/params", exposure=6)
    with pytest.raises(ClientClosedError, match="I/O thread stopped"):
        client.stream("camera/frames", ["t"]).extend([[1.0]])
    client.close()  # everything it took was confirmed: nothing to report
    assert client.state is State.CLOSED
    saved = load_json(daemon.stop()["path"])
    assert saved["camera"]["params"] == {"exposure": 5}


def test_close_never_finds_the_wake_pipe_closed_by_an_io_thread_leaving(daemon) -> None:
    """The race behind CI's zmq.Again in close(): finish() sets ``closing``
    and then wakes the I/O thread, holding the client's lock. An I/O thread
    that is awake (its poll timed out, so it is still marked asleep) sees
    ``closing`` at once and leaves its loop; when it then closed its end of
    the wake-up pipe without taking that lock, close() could find that end
    closed, and its wake-up failed with zmq.Again (about one close in a
    thousand on a loaded machine; the thread had not failed).

    Here a trace function holds finish() just before its wake-up until the
    I/O thread has left its loop and then either waits for the lock (the
    fix: it closes nothing before finish() is done) or has ended; if it has
    ended, until this end of the pipe has learnt that the other is closed.
    """
    left_loop = threading.Event()
    source, first = inspect.getsourcelines(Link.run)
    lock_lines = {first + n for n, text in enumerate(source) if "with self.shared.lock" in text}

    def trace_io_thread(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code is Link._loop.__code__:

            def on_return(frame: FrameType, event: str, arg: Any) -> Any:
                if event == "return":
                    left_loop.set()
                return on_return

            return on_return
        return None

    def waits_for_the_lock(link: Link) -> bool:
        frame = sys._current_frames().get(link.ident or 0)
        in_run = frame is not None and frame.f_code is Link.run.__code__
        return in_run and frame is not None and frame.f_lineno in lock_lines

    def trace_close(frame: FrameType, event: str, arg: Any) -> Any:
        caller = frame.f_back
        if (
            event == "call"
            and frame.f_code is _Connection.wake_link.__code__
            and caller is not None
            and caller.f_code is _Connection.finish.__code__
        ):
            link, wake = client._link, client._conn.wake
            wait_for(left_loop.is_set, what="the I/O thread to see closing")
            wait_for(
                lambda: link.finished.is_set() or waits_for_the_lock(link),
                what="the I/O thread to end or to wait for the lock",
            )
            if link.finished.is_set():  # without the fix: let the closed end show
                wait_for(
                    lambda: not wake.getsockopt(zmq.EVENTS) & zmq.POLLOUT,
                    what="this end of the wake-up pipe to learn that the other is closed",
                )
        return None

    threading.settrace(trace_io_thread)  # for the threads started from now on
    try:
        client = Client("camera", daemon.data, daemon.control)
    finally:
        threading.settrace(None)  # type: ignore[arg-type]
    client.set_params("camera/params", exposure=5)
    client.sync()
    previous = sys.gettrace()  # a coverage tool's, if any
    sys.settrace(trace_close)
    try:
        client.close()
    finally:
        sys.settrace(previous)
    assert left_loop.is_set() and client.state is State.CLOSED
    saved = load_json(daemon.stop()["path"])
    assert saved["camera"]["params"] == {"exposure": 5}


def _use_in_a_fork(client: Client, answers: Any) -> None:
    """In a forked child: what the parent's client does there."""
    stream = client._shared.streams[0]
    for call in (
        lambda: client.set_params("child/params", x=1),
        lambda: stream.extend([[1.0]]),
        lambda: client.sync(timeout=5),
        lambda: client.close(timeout=5),
    ):
        began = time.monotonic()
        try:
            call()
            answers.put(("accepted", time.monotonic() - began))
        except ClientClosedError as exc:
            answers.put((str(exc), time.monotonic() - began))
        except Exception as exc:
            answers.put((repr(exc), time.monotonic() - began))


def test_a_client_used_in_a_forked_child_refuses_saying_why(daemon) -> None:
    """A forked child inherits the client but not its I/O thread: set_params
    was accepted there and its message silently never sent, sync() waited
    for its timeout and blamed the daemon ('is collectord run running
    there?'). The parent's messages all arrive."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs fork")
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    with Client("parent", daemon.data, daemon.control) as client:
        for index in range(200):
            client.set_params("parent/params", index=index)
        client.stream("parent/rows", ["x"]).extend([[1.0], [2.0]])
        child = context.Process(target=_use_in_a_fork, args=(client, answers))
        child.start()
        got = [answers.get(timeout=30) for _ in range(4)]
        child.join(30)
        for index in range(200, 400):
            client.set_params("parent/params", index=index)
        saved = load_json(client.stop())
    assert child.exitcode == 0
    for text, seconds in got:
        assert "fork" in text, text
        assert seconds < 2, (text, seconds)
    assert saved["parent"]["params"] == {"index": 399}
    assert "child" not in saved
    (source,) = [s for s in daemon.status()["sources"] if s["name"] == "parent"]
    assert source["messages"]["messages"] >= 400


def test_a_request_field_that_cannot_be_encoded_fails_that_call_only(daemon) -> None:
    """Requests are encoded by the I/O thread: a field it cannot encode (a
    stop reason that is not text) once ended that thread, and the call waited
    out its timeout. Now that call fails with the encoding error, at once, and
    the client goes on."""
    with Client("camera", daemon.data, daemon.control) as client:
        with pytest.raises(UnsupportedValueError):
            client.stop(reason=object(), timeout=10)  # type: ignore[arg-type]
        client.set_params("camera/params", exposure=5)
        saved = load_json(client.stop())
    assert saved["camera"]["params"] == {"exposure": 5}


def test_a_request_held_until_the_daemon_comes_that_cannot_be_encoded_fails_alone(
    make_daemon, ipc
) -> None:
    """A stop waits in the client while its control socket has no daemon;
    sent from there, a field it could not encode ended the I/O thread."""
    data, control = ipc("data"), ipc("control")
    with Client("camera", data, control) as client:
        outcome: list[BaseException] = []

        def stop() -> None:
            try:
                client.stop(reason=object(), timeout=60)  # type: ignore[arg-type]
            except BaseException as exc:  # the test looks at it
                outcome.append(exc)

        stopping = threading.Thread(target=stop)
        stopping.start()
        make_daemon(data=data, control=control)
        stopping.join(90)
        assert [type(exc) for exc in outcome] == [UnsupportedValueError]
        client.set_params("camera/params", exposure=5)
        saved = load_json(client.stop())
    assert saved["camera"]["params"] == {"exposure": 5}


def test_close_delivers_everything_sent(daemon) -> None:
    client = Client("burst", daemon.data, daemon.control)
    for index in range(5000):
        client.set_params("burst/params", index=index)
    client.close()
    source = daemon.status()["sources"][0]
    assert source["last_seq"] == 5000 and not source["connected"]


def test_kill9_and_restart_of_the_daemon_under_load(make_daemon, figures) -> None:
    """The journal keeps what was confirmed; the client resends the rest."""
    first = make_daemon()
    client = Client("steady", first.data, first.control)
    sent = 0
    stop_publishing = threading.Event()
    errors: list[BaseException] = []

    def publish() -> None:
        nonlocal sent
        try:
            while not stop_publishing.is_set():
                sent += 1
                client.set_params("steady/params", index=sent)
                time.sleep(0.001)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    worker = threading.Thread(target=publish)
    worker.start()
    try:
        wait_for(lambda: sent > 300, what="publishing to start")
        first.kill9()
        at_kill = sent
        make_daemon(data=first.data, control=first.control)
        wait_for(lambda: sent > at_kill + 300, what="publishing to go on")
    finally:
        stop_publishing.set()
        worker.join()
    assert not errors
    client.sync(timeout=60)
    saved = load_json(client.stop())
    client.close()
    assert saved["steady"]["params"] == {"index": sent}
    (source,) = saved["collectord"]["sources"]
    assert source["last_seq"] == sent
    # The new daemon resumed the experiment from the journal; the client resent
    # what had not been journaled. Nothing is lost, nothing applied twice.
    counts = source["messages"]
    figures(
        sent=sent,
        saved=counts["messages"],
        lost=counts["lost"],
        duplicates_dropped=counts["duplicates"],
        faults="kill -9 under load, restart",
    )
    assert counts["lost"] == 0 and source["gaps"] == []
    assert counts["messages"] == sent
    (restart,) = saved["collectord"]["restarts"]
    assert restart["journal_records"] > 0


def test_a_stop_that_timed_out_while_the_daemon_was_away_is_not_done_later(make_daemon) -> None:
    """A stop asked while the daemon was away went into the control socket's
    queue; its caller was told it timed out, and the daemon, once back, took
    it from the queue and ended the experiment all the same: one stop made
    two experiments, the first without what was sent after the timeout."""
    first = make_daemon()
    with Client("cam", first.data, first.control) as client:
        client.set_params("cam/settings", exposure=1.0)
        client.sync()
        first.kill9()
        wait_for(lambda: not client._link.connected, what="the client to see the daemon gone")
        with pytest.raises(DaemonTimeout):
            client.stop(timeout=0.5)
        make_daemon(data=first.data, control=first.control)  # resumes the experiment
        client.set_params("cam/settings", exposure=2.0)
        client.sync(timeout=30)
        path = Path(client.stop())
    (saved,) = saved_experiments(first.output)
    assert saved["_path"] == path
    assert saved["cam"]["settings"] == {"exposure": 2.0}


def test_an_overflowing_buffer_is_counted_and_reported(make_daemon, ipc, figures) -> None:
    data, control = ipc("data"), ipc("control")
    with Client("tiny", data, control, buffer=100) as client:
        for index in range(1000):
            client.add_data(f"tiny/m{index:03d}", index)
        wait_for(lambda: client.overflowed == 900, what="the buffer to overflow")
        make_daemon(data=data, control=control)
        client.sync(timeout=60)
        saved = load_json(client.stop())
    assert saved["tiny"] == {f"m{index:03d}": index for index in range(900, 1000)}
    (source,) = saved["collectord"]["sources"]
    assert source["messages"]["lost"] == 900 and source["gaps"] == [[1, 900]]
    assert source["messages"]["messages"] == 100
    figures(
        sent=1000,
        saved=100,
        lost=source["messages"]["lost"],
        client_overflowed=900,
        faults="no daemon while 1000 messages went into a 100-message buffer",
    )


def test_a_daemon_away_until_the_request_queue_is_full_never_stops_the_io_thread(
    make_daemon, ipc
) -> None:
    """Requests wait in the control socket's queue for a daemon that is not
    there. Once ``CONTROL_QUEUE`` of them waited, a blocking send stopped the
    I/O thread for as long as the daemon stayed away, and with it the bound
    on what the client buffers. Now the thread keeps further requests aside
    and goes on: it counts what overflows, and delivers the rest, and every
    request, when the daemon comes."""
    data, control = ipc("data"), ipc("control")
    with Client("scope", data, control, buffer=100) as client:
        # Requests whose callers do not give up (``status(timeout=...)`` would
        # cancel them): they fill the queue, and one more waits beside it.
        waiting = [client._conn.submit(Command.STATUS, {}) for _ in range(CONTROL_QUEUE + 1)]
        with pytest.raises(DaemonTimeout):
            client.status(timeout=0.01)
        for index in range(300):
            client.set_params("scope/params", index=index)
        # A stop its caller gave up on is dropped, not sent when the daemon comes.
        with pytest.raises(DaemonTimeout):
            client.stop(timeout=0.01)
        wait_for(lambda: client.overflowed == 200, what="the buffer to overflow")
        daemon = make_daemon(data=data, control=control)
        client.sync(timeout=60)
        assert all(future.result(timeout=60)["sources"] for future in waiting)
        path = Path(client.stop())
    assert [m["_path"] for m in saved_experiments(daemon.output)] == [path]
    saved = load_json(path)
    assert saved["scope"] == {"params": {"index": 299}}
    (source,) = saved["collectord"]["sources"]
    assert source["messages"]["messages"] == 100 and source["messages"]["lost"] == 200


@contextlib.contextmanager
def hello_answered_with(**reply: Any) -> Iterator[tuple[Client, int]]:
    """A client whose hello a bare ROUTER socket, standing for a daemon of
    another version, answers with ``reply``; yields it and the port."""
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        client = Client("scope", "tcp://127.0.0.1:1", f"tcp://127.0.0.1:{port}")
        identity, _, body = router.recv_multipart()
        hello = codec.unpack(body)
        assert hello["cmd"] == "hello"
        router.send_multipart([identity, b"", codec.pack({"v": 1, "id": hello["id"], **reply})])
        yield client, port
    finally:
        router.close()


def test_a_refused_hello_is_logged(caplog) -> None:
    """A daemon that refuses the client's hello (another protocol version,
    on a rig whose PCs run different releases) delivers nothing of it: the
    client says so in its log, naming the daemon's reason."""
    error = {"code": "bad_request", "message": "protocol 99 is not spoken"}
    with (
        caplog.at_level(logging.ERROR, logger="collectord"),
        hello_answered_with(ok=False, error=error) as (client, port),
    ):
        wait_for(
            lambda: any("refused this client's hello" in r.message for r in caplog.records),
            what="the refusal in the log",
        )
        client.close(timeout=0.1)
    (record,) = [r for r in caplog.records if "refused" in r.message]
    assert "protocol 99 is not spoken" in record.message and str(port) in record.message


def test_a_reply_of_an_unexpected_shape_does_not_end_the_io_thread(caplog) -> None:
    """A daemon that answers with a field of another type (here a hello's
    ``received`` as text) once ended the client's I/O thread, and from then
    on every call raised. The reply is now logged and skipped."""
    with (
        caplog.at_level(logging.ERROR, logger="collectord"),
        hello_answered_with(ok=True, result={"received": "lots"}) as (client, port),
    ):
        wait_for(
            lambda: any("could not be used" in r.message for r in caplog.records),
            what="the reply to be logged",
        )
        client.set_params("scope/params", gain=2)  # raised ClientClosedError
        assert not client._link.finished.is_set()
        with pytest.raises(DaemonTimeout):  # nobody confirms it here
            client.close(timeout=0.1)
    (record,) = [r for r in caplog.records if "could not be used" in r.message]
    assert "lots" in record.message and str(port) in record.message


def test_a_bad_endpoint_fails_at_once() -> None:
    with pytest.raises(TransportError, match="bogus"):
        Client("camera", "bogus://x", "tcp://127.0.0.1:1")


def test_exit_timeout_is_checked_at_once(ipc) -> None:
    with pytest.raises(ValueError, match="exit_timeout"):
        Client("early", ipc("data"), ipc("control"), exit_timeout=-1)
    client = Client("early", ipc("data"), ipc("control"), exit_timeout=0)
    assert client.exit_timeout == 0
    client.close(timeout=0.1)  # nothing sent: nothing to wait for
